"""The training driver: the epoch loop, one plain function for every backend.

:func:`train` runs epochs on a backend (:mod:`fastmf._backend`) until a
stopping rule (:class:`fastmf._stopping.StoppingRules`) or ``n_epochs``. It
owns the objective, divergence, validation, callbacks, checkpoints and
progress output; it never asks which backend it runs on.
"""

import time

import numpy as np

from . import _checkpoint, _kernels
from ._blocks import epoch_schedule
from ._losses import SMALL_FIT_RATINGS
from ._ranking import best_items
from .exceptions import DivergenceError


class Validation:
    """Validation entries in the layout's internal ids, on the training scale.

    The entries are kept sorted by user, so that scoring them reads the user
    factors in order, and scored in chunks of ``CHUNK`` by the loss's
    objective kernel (the score, the loss and its sum in one pass, chunks on
    numba's threads when ``parallel``); the chunks are added in order, so the
    metric has the same bits for any thread count.

    Parameters
    ----------
    rows, cols : ndarray of int32 or int64
        Internal ids, sorted by user (:func:`fastmf._blocks.relabeled_by_user`),
        in the layout's id type (:func:`fastmf._blocks.index_dtype`): the pass
        after every epoch then reads half as many bytes of ids.
    values : ndarray of float32
        Already centred like the training values.
    loss : fastmf._losses.Loss
        Whose validation metric is reported.
    parallel : bool, default=False
    """

    greater_is_better = False
    CHUNK = 2**16

    def __init__(self, rows, cols, values, loss, parallel=False):
        self.rows, self.cols, self.values = rows, cols, values
        self.loss = loss
        count = rows.shape[0]
        self.offsets = np.append(np.arange(0, count, self.CHUNK), count).astype(np.int64)
        self.sums = np.zeros(self.offsets.shape[0] - 1)
        self.kernel = _kernels.objective_parallel if parallel else _kernels.objective_serial

    def score(self, state):
        """Return the validation metric of ``state`` (a float; lower is better)."""
        # The large fits' kernel set (for any number of held-out ratings).
        kernels = self.loss.kernels_for(SMALL_FIT_RATINGS, state.user_factors.shape[1])
        self.kernel(
            kernels, self.rows, self.cols, self.values, self.offsets,
            state.user_factors, state.item_factors, state.user_bias, state.item_bias, self.sums,
        )  # fmt: skip
        return self.loss.validation_metric(self.sums.sum(), self.rows.shape[0])


class RankingValidation:
    """Held-out interactions ranked after each epoch: NDCG@k (higher is better).

    For each validation user, every item it did not interact with in training
    is scored (``p_u . q_i + b_i``), the top ``k`` taken (ties to the smaller
    internal id), and the held-out items are the relevant ones, as
    :func:`fastmf.metrics.ndcg_at_k` does.

    Parameters
    ----------
    users : ndarray of int64
        Validation users (internal ids), sorted.
    truth_indptr, truth_items : ndarray of int64
        Held-out items (internal ids) of ``users[r]``, CSR: from
        ``truth_indptr[r]`` to ``truth_indptr[r + 1]``.
    seen_indptr, seen_items : ndarray of int64
        Training items of every internal user (CSR over all users).
    k : int
    """

    greater_is_better = True

    def __init__(self, users, truth_indptr, truth_items, seen_indptr, seen_items, k=10):
        self.users, self.k = users, k
        self.truth_indptr, self.truth_items = truth_indptr, truth_items
        self.seen_indptr, self.seen_items = seen_indptr, seen_items
        self.discounts = 1.0 / np.log2(np.arange(k) + 2.0)

    def score(self, state):
        """Return the mean NDCG@k over the validation users (a float)."""
        k = min(self.k, state.item_factors.shape[0])
        # The serving pass (serial: the fit already holds numba's threads).
        top, _ = best_items(
            state.user_factors,
            self.users,
            state.item_factors,
            k,
            item_bias=state.item_bias,
            seen=(self.seen_indptr, self.seen_items),
        )
        total = 0.0
        for r in range(self.users.shape[0]):
            truth = self.truth_items[self.truth_indptr[r] : self.truth_indptr[r + 1]]
            hits = np.isin(top[r], truth)
            ideal = self.discounts[: min(truth.shape[0], k)].sum()
            total += float((hits * self.discounts[:k]).sum() / ideal)
        return total / self.users.shape[0]


# Training values above this magnitude make a divergence the data's fault, not lr's.
LARGE_VALUES = 1e6


def train(
    name,
    layout,
    state,
    backend,
    stopping,
    rng,
    params,
    validation=None,
    callback=None,
    checkpoint=None,
    resume=None,
    value_scale=None,
):
    """Run SGD epochs on ``backend`` until a stopping rule or ``params["n_epochs"]``.

    Parameters
    ----------
    name : str
        The model's name, for messages.
    layout : BlockLayout-like
        Has ``grid``, ``nnz`` and what :func:`fastmf._checkpoint.fingerprint` reads.
    state : fastmf._state.TrainingState
        Updated in place; at the end it holds the trained (or, with
        validation, the best epoch's) parameters.
    backend
        Started on ``layout`` and ``state`` (see :mod:`fastmf._backend`).
    stopping : fastmf._stopping.StoppingRules
        Receives the curves and the reason to stop.
    rng : numpy.random.Generator
        Draws each epoch's schedule.
    params : dict
        Validated hyperparameters (``lr``, ``l2``, ``n_epochs``, ``verbose``,
        ``monitor``). With ``monitor="running"`` each epoch's objective is
        the data loss its pass summed (each entry's before its step) plus the
        penalty of the factors at the epoch's end, and there is no objective
        before the first epoch; with ``"exact"``, the objective of the factors
        after each epoch (and before the first), from one more pass.
    validation : Validation, optional
    callback : callable, optional
        ``callback(info)`` after every epoch; ``False`` stops training.
    checkpoint, resume : path-like, optional
        Write a checkpoint after every epoch; continue from one.
    value_scale : float, optional
        The largest magnitude among the training values: when a run diverges
        on data this large, the error names the data instead of ``lr``.

    Raises
    ------
    DivergenceError
        The objective or the state became non-finite.
    """
    lr, l2 = np.float32(params["lr"]), np.float32(params["l2"])
    n_epochs = params["n_epochs"]
    exact = params["monitor"] == "exact"

    def objective():
        block_loss, penalty, finite = backend.objective(exact)
        # Blocks are added in a fixed order: same bits for any thread count or backend.
        return (block_loss.sum() + 0.5 * float(l2) * penalty) / layout.nnz, finite

    progress = _Progress(params["verbose"], n_epochs, name)
    try:
        stopping.start(objective()[0] if exact else None)
        if checkpoint is not None or resume is not None:
            fingerprint = _checkpoint.fingerprint(layout, params)
        if resume is not None:
            stopping.resume(resume, fingerprint, state, rng)
            backend.push()
        for epoch in range(stopping.next_epoch, n_epochs + 1):
            schedule = epoch_schedule(layout.grid, rng)
            start = time.perf_counter()
            backend.epoch(schedule, lr, l2, epoch)
            seconds = time.perf_counter() - start
            current, finite = objective()
            if validation is not None or checkpoint is not None:
                backend.pull()  # the driver needs the state itself
            if not (np.isfinite(current) and finite):
                if value_scale is not None and value_scale > LARGE_VALUES:
                    raise DivergenceError(
                        f"{name} diverged in epoch {epoch}: the objective became {current}. "
                        f"The data is the likely cause: its values reach {value_scale:.3g} in "
                        "magnitude, too large for float32 SGD. Rescale them (e.g. divide by "
                        "their standard deviation) before fitting. The model was not changed."
                    )
                raise DivergenceError(
                    f"{name} diverged in epoch {epoch}: the objective became {current} "
                    f"(lr={params['lr']!r}). Use a smaller learning rate, e.g. "
                    f"lr={params['lr'] / 10:g}, or a larger l2. The model was not changed."
                )
            val_loss = None if validation is None else validation.score(state)
            decrease = stopping.record(epoch, current, val_loss, state)
            progress.show(epoch, current, val_loss, decrease, layout.nnz / max(seconds, 1e-9))
            requested = False
            if callback is not None:
                info = {"epoch": epoch, "loss": current, "val_loss": val_loss, "seconds": seconds}
                requested = callback(info) is False
            stop = stopping.should_stop(epoch, current, decrease, requested)
            if checkpoint is not None:
                stopping.save_checkpoint(checkpoint, fingerprint, state, rng)
            if stop:
                break
        backend.pull()
        stopping.restore_best(state)
    finally:
        progress.close()


class _Progress:
    """Per-epoch progress: a tqdm bar (``verbose == 1`` with tqdm installed) or lines.

    ``verbose >= 2`` (or 1 without tqdm) prints one line per epoch; 0 is silent.
    """

    def __init__(self, verbose, n_epochs, name):
        self.verbose, self.n_epochs, self.bar = verbose, n_epochs, None
        if verbose == 1:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=n_epochs, desc=name, unit="epoch")

    def show(self, epoch, objective, val_loss, decrease, rate):
        if self.bar is not None:
            self.bar.update(1)
            shown = {} if val_loss is None else {"validation": f"{val_loss:.5g}"}
            self.bar.set_postfix(objective=f"{objective:.5g}", **shown, refresh=False)
        elif self.verbose:
            shown = "" if val_loss is None else f"  validation {val_loss:.6g}"
            print(
                f"epoch {epoch:>4}/{self.n_epochs}  objective {objective:.6g}{shown}  "
                f"rel. decrease {decrease:+.2e}  {rate / 1e6:.1f}M ratings/s",
                flush=True,
            )

    def close(self):
        if self.bar is not None:
            self.bar.close()
