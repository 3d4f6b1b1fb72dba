"""When training stops, and what it keeps: the stopping rules of a fit.

:class:`StoppingRules` owns the loss and validation curves, the convergence
rule (``tol`` / ``n_iter_no_change``), validation patience with the best
epoch's parameters, and checkpoints: everything a resumed fit needs to
continue bit for bit.
"""

import numpy as np

from . import _checkpoint


class StoppingRules:
    """The stopping rules of one fit, and their progress so far.

    Parameters
    ----------
    tol : float or None
        Stop when the objective has not improved on its best value by this
        relative amount for ``n_iter_no_change`` epochs; None disables it.
    n_iter_no_change : int
    patience : int
        With validation: stop after this many epochs without a new best
        validation value.
    validating : bool
        Whether each epoch has a validation value.
    maximize : bool, default=False
        Higher validation values are better (a ranking metric), not lower.
    """

    def __init__(self, tol, n_iter_no_change, patience, validating, maximize=False):
        self.tol, self.n_iter_no_change = tol, n_iter_no_change
        self.patience, self.validating, self.maximize = patience, validating, maximize
        self.loss_curve, self.val_curve = [], []
        self.best = None  # best objective so far (the initial one, if any, to begin with)
        self.best_val = -np.inf if maximize else np.inf
        self.best_epoch, self.best_state = None, None
        self.epochs_without_improvement = 0
        self.stopped = False  # a rule (or the callback) ended training

    def start(self, objective):
        """Record the objective before the first epoch (None: there is none)."""
        self.best = objective

    @property
    def next_epoch(self):
        """The number of the next epoch to run (1 for a fresh fit)."""
        return len(self.loss_curve) + 1

    def record(self, epoch, objective, val_loss, state):
        """Record one epoch's objective and validation value; return the relative decrease.

        A new best validation value keeps a copy of ``state``'s parameters.
        The decrease is measured against the best objective so far (SGD makes
        the objective noisy near the optimum); the first epoch of a fit with
        no initial objective has an infinite decrease.
        """
        self.loss_curve.append(objective)
        if self.validating:
            self.val_curve.append(val_loss)
            if (val_loss > self.best_val) if self.maximize else (val_loss < self.best_val):
                self.best_val, self.best_epoch = val_loss, epoch
                self.best_state = state.copy_parameters(into=self.best_state)
        if self.best is None:
            return np.inf
        return (self.best - objective) / abs(self.best) if self.best != 0 else 0.0

    def should_stop(self, epoch, objective, decrease, requested):
        """Apply the rules after epoch ``epoch``; ``requested``: the callback asked to stop."""
        stop = requested
        if self.validating and epoch - self.best_epoch >= self.patience:
            stop = True
        if self.tol is not None and decrease < self.tol:
            self.epochs_without_improvement += 1
            stop = stop or self.epochs_without_improvement >= self.n_iter_no_change
        else:
            self.epochs_without_improvement = 0
        self.best = objective if self.best is None else min(self.best, objective)
        self.stopped = stop
        return stop

    def restore_best(self, state):
        """Put the best validation epoch's parameters back into ``state`` (if validating)."""
        if self.best_state is not None:
            state.restore_parameters(self.best_state)

    # ----------------------------------------------------------- checkpoints
    def _progress(self):
        return {
            "loss_curve": self.loss_curve,
            "val_curve": self.val_curve,
            "best": self.best,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def save_checkpoint(self, path, fingerprint, state, rng):
        """Write the state after a completed epoch, these rules' progress and ``rng``."""
        arrays = dict(zip(state.NAMES, state.arrays()))
        for name, array in zip(state.PARAMETERS, self.best_state or ()):
            arrays["best_" + name] = array
        _checkpoint.save(path, fingerprint, arrays, self._progress(), rng)

    def resume(self, path, fingerprint, state, rng):
        """Restore a checkpoint into ``state`` (in place), these rules and ``rng``."""
        arrays, progress = _checkpoint.load(path, fingerprint, rng)
        for name, array in zip(state.NAMES, state.arrays()):
            if array is not None:
                np.copyto(array, arrays[name])
        for name, value in progress.items():
            setattr(self, name, value)
        if "best_user_factors" in arrays:
            self.best_state = [arrays.get("best_" + name) for name in state.PARAMETERS]
