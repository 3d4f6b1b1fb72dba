"""The fit template and everything a fitted model does, written once for all models."""

import inspect
import time
import warnings
from numbers import Integral, Real

import numpy as np

from . import _checkpoint, _kernels
from ._blocks import (
    INTERLEAVE,
    arrange,
    choose_grid,
    epoch_schedule,
    inverse_permutation,
    permute_rows,
    stripe_bounds,
)
from ._jit import numba_threads, resolve_threads
from ._persistence import save_model
from ._recommend import RecommenderMixin
from ._validation import check_coo, check_duplicates_policy, check_pairs
from .exceptions import ConvergenceWarning, DivergenceError, NotFittedError
from .ids import Dataset

_LOSS_CODES = {"squared": _kernels.SQUARED, "logistic": _kernels.LOGISTIC}
LEARNING_RATES = ("constant", "adagrad")


def check_random_state(random_state):
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    ``None`` draws a seed from numpy's global generator (so ``np.random.seed``
    makes the run repeatable, as in the reference notebook); an int seeds a new
    generator; a ``Generator`` is used as is (and advanced); a ``RandomState``
    is advanced to draw a seed.
    """
    if random_state is None:
        return np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))  # noqa: NPY002
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**63 - 1, dtype=np.int64))
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be non-negative, got {random_state}.")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int, a numpy Generator or a RandomState; "
        f"got {random_state!r}."
    )


class MatrixFactorization(RecommenderMixin):
    r"""Base class of fastmf's models: factorize a sparse matrix as R ~ P Q^T.

    Subclasses choose the per-entry loss; this class owns fitting (validation,
    initialization, the epoch loop, convergence and divergence checks),
    prediction and similarity. Use :class:`fastmf.RealValueMF` or
    :class:`fastmf.BinaryMF`.

    Every model minimizes, over the set :math:`\Omega` of observed entries,

    .. math::

        L(P, Q) = \frac{1}{|\Omega|} \sum_{(u,i) \in \Omega}
            \Big[\ell(r_{ui}, p_u^\top q_i)
            + \tfrac{\lambda}{2}\big(\lVert p_u\rVert^2 + \lVert q_i\rVert^2\big)\Big]

    by SGD: each epoch visits every observed entry once, in a fresh random
    order, and takes the step :math:`\theta \leftarrow \theta - \eta\,\nabla f_{ui}`
    on the bracketed term :math:`f_{ui}`, which is an unbiased stochastic
    gradient of :math:`L`. Users and items with more observations are thus
    regularized more, as in LIBMF and Surprise.
    """

    _loss = None

    def __init__(
        self,
        k=32,
        lr=0.005,
        l2=0.08,
        n_epochs=100,
        tol=1e-4,
        n_iter_no_change=3,
        learning_rate="constant",
        biases=True,
        patience=5,
        init_scale=0.1,
        random_state=None,
        n_threads=None,
        grid=None,
        verbose=0,
    ):
        self.k = k
        self.lr = lr
        self.l2 = l2
        self.n_epochs = n_epochs
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.learning_rate = learning_rate
        self.biases = biases
        self.patience = patience
        self.init_scale = init_scale
        self.random_state = random_state
        self.n_threads = n_threads
        self.grid = grid
        self.verbose = verbose

    # ----------------------------------------------------------- parameters
    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(p.name for p in signature.parameters.values() if p.name != "self")

    def get_params(self, deep=True):
        """Return the hyperparameters as a dict (scikit-learn estimator API).

        Parameters
        ----------
        deep : bool, default=True
            Ignored: fastmf models hold no sub-estimators.

        Returns
        -------
        dict
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set hyperparameters (scikit-learn estimator API); returns ``self``.

        Values are stored unchanged and checked by the next ``fit``.
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; valid parameters "
                    f"are {valid}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            if not (value is default or (type(value) is type(default) and value == default)):
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def _validated_params(self):
        """Check the hyperparameters without changing them; return them in a dict."""
        p = self.get_params()
        name = type(self).__name__

        def number(key, low, low_ok, integer=False):
            value = p[key]
            kind = Integral if integer else Real
            if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
                what = "an integer" if integer else "a finite number"
                raise TypeError(f"{name}: {key} must be {what}, got {value!r}.")
            if value < low or (value == low and not low_ok):
                bound = f">= {low}" if low_ok else f"> {low}"
                raise ValueError(f"{name}: {key} must be {bound}, got {value!r}.")

        number("k", 1, True, integer=True)
        number("lr", 0, False)
        number("l2", 0, True)
        number("n_epochs", 1, True, integer=True)
        number("n_iter_no_change", 1, True, integer=True)
        number("patience", 1, True, integer=True)
        number("init_scale", 0, False)
        if p["tol"] is not None:
            number("tol", 0, True)
        try:
            p["n_threads"] = resolve_threads(p["n_threads"])
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        if p["grid"] is not None:
            number("grid", 1, True, integer=True)
        if p["learning_rate"] not in LEARNING_RATES:
            raise ValueError(
                f"{name}: learning_rate must be one of {LEARNING_RATES}, got "
                f"{p['learning_rate']!r}."
            )
        if not isinstance(p["biases"], (bool, np.bool_)):
            raise TypeError(f"{name}: biases must be True or False, got {p['biases']!r}.")
        if not isinstance(p["verbose"], (Integral, bool)):
            raise TypeError(f"{name}: verbose must be an int or bool, got {p['verbose']!r}.")
        return p

    # ---------------------------------------------------------------- fitting
    def fit(
        self,
        X,
        y=None,
        *,
        X_val=None,
        callback=None,
        shape=None,
        duplicates="raise",
        client=None,
        checkpoint=None,
        resume=None,
    ):
        """Factorize ``X``; returns ``self``.

        Parameters
        ----------
        X : array_like of shape (n_users, n_items), scipy.sparse matrix/array, tuple, or Dataset
            The observations: a dense array whose non-zero entries are observed
            (0 means missing, as in the reference notebook); any scipy.sparse
            matrix or array, whose stored entries are observed (explicit zeros
            included); a ``(rows, cols, values)`` tuple of 1-D arrays; or a
            :class:`fastmf.ids.Dataset` of raw ids, after which ``predict``
            takes raw ids (the maps are kept in ``user_map_``, ``item_map_``).
        y : None
            Ignored; present for scikit-learn pipeline compatibility.
        X_val : same forms as ``X``, optional
            Validation entries (ids within the training shape). Their error
            (RMSE for the squared loss, mean log loss for the logistic) is
            recorded after every epoch in ``val_curve_``; training stops after
            ``patience`` epochs without a new best, and the factors of the best
            epoch (``best_epoch_``) are restored.
        callback : callable, optional
            Called after every epoch as ``callback(info)`` with a dict holding
            ``epoch``, ``loss`` (the objective), ``val_loss`` (or None) and
            ``seconds``; returning ``False`` stops training there.
        shape : tuple (n_users, n_items), optional
            Only for triplets; defaults to one more than the largest ids.
        duplicates : {"raise", "sum", "last"}, default="raise"
            Policy for a (row, col) pair that appears more than once.
        client : distributed.Client, optional
            Run the epochs on this Dask cluster (see :mod:`fastmf.dask`); the
            factors are bit-for-bit those of a local fit with the same
            ``random_state`` and ``grid``.
        checkpoint : str or path-like, optional
            Save the training state here after every completed epoch (``.npz``).
        resume : str or path-like, optional
            Continue an interrupted fit from this checkpoint: give the same data
            and hyperparameters (``n_epochs`` may grow); the result is bit-for-bit
            that of an uninterrupted fit.

        Returns
        -------
        self

        Raises
        ------
        TypeError, ValueError
            Invalid hyperparameters or input, with the reason and the fix.
        DivergenceError
            The objective or the factors became non-finite; the model keeps
            the state it had before this call.
        """
        params = self._validated_params()
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}.")
        maps = (None, None)
        shards = None
        if client is not None:
            from .dask import as_shards

            shards = as_shards(X)
        if shards is not None:  # the ratings stay on the workers
            from .dask import open_shards

            check_duplicates_policy(duplicates)
            coo = open_shards(client, shards, self, shape, duplicates)
        elif isinstance(X, Dataset):
            maps, shape = (X.user_map, X.item_map), X.shape
            if isinstance(X_val, Dataset):  # same raw ids, the training maps' indices
                X_val = (
                    X.user_map.to_index(X_val.user_map.to_raw(X_val.rows)),
                    X.item_map.to_index(X_val.item_map.to_raw(X_val.cols)),
                    X_val.values,
                )
            X = X.triplets
        if shards is None:
            coo = self._check_input(X, shape, duplicates)
        val = None if X_val is None else self._check_input(X_val, coo.shape, "last")
        rng = check_random_state(params["random_state"])
        m, n = coo.shape
        k = params["k"]
        std = float(params["init_scale"]) / float(np.sqrt(k))
        user_factors = rng.standard_normal((m, k), dtype=np.float32)
        user_factors *= np.float32(std)
        item_factors = rng.standard_normal((n, k), dtype=np.float32)
        item_factors *= np.float32(std)
        self._fit_coo(
            coo,
            duplicates,
            user_factors,
            item_factors,
            rng,
            params,
            val=val,
            callback=callback,
            client=client,
            checkpoint=checkpoint,
            resume=resume,
        )
        self.user_map_, self.item_map_ = maps
        return self

    def _check_input(self, X, shape, duplicates):
        """Validate ``X`` into :class:`~fastmf._validation.Coo`; subclasses check values."""
        return check_coo(X, shape, duplicates=duplicates)

    def _fit_coo(
        self,
        coo,
        duplicates,
        user_factors,
        item_factors,
        rng,
        params,
        val=None,
        callback=None,
        warm=None,
        client=None,
        checkpoint=None,
        resume=None,
    ):
        """Arrange the data in blocks, train, and commit the fitted state.

        ``user_factors`` and ``item_factors`` (float32, C-contiguous, original id
        order) are taken over: training reorders and updates them in place.
        """
        if self._loss not in _LOSS_CODES:
            raise TypeError(
                "MatrixFactorization is a base class; fit RealValueMF or BinaryMF instead."
            )
        threads = params["n_threads"]
        m, n = coo.shape
        grid = params["grid"] or choose_grid(m, n, coo.nnz, params["k"])
        ways = INTERLEAVE[_LOSS_CODES[self._loss]]
        with numba_threads(threads):
            if getattr(coo, "remote", False):  # shards on a Dask cluster: blocks built there
                layout = coo.arrange(grid, rng, duplicates, ways)
            else:
                layout = arrange(coo, grid, rng, duplicates, parallel=threads > 1, ways=ways)
            del coo  # the layout is the one copy of the ratings kept while training
            # Squared loss with biases models r = mean + b_u + b_i + p.q: train on
            # centered values (the layout is fit's own copy, so in place is safe).
            global_mean = 0.0
            if params["biases"] and self._loss == "squared":
                # Summed block by block, so that a fit whose blocks live on a
                # cluster gets the same bits.
                global_mean = (
                    float(np.sum(layout.value_sums())) / layout.nnz
                    if warm is None
                    else warm["global_mean"]
                )
                layout.subtract(np.float32(global_mean))
            # Internal (relabeled) order: the rows of one stripe are contiguous in memory.
            permute_rows(user_factors, layout.user_perm)
            permute_rows(item_factors, layout.item_perm)
            user_bias = item_bias = None
            if params["biases"]:
                if warm is None:
                    user_bias = np.zeros(m, dtype=np.float32)
                    item_bias = np.zeros(n, dtype=np.float32)
                else:
                    user_bias = warm["user_bias"][layout.user_perm]
                    item_bias = warm["item_bias"][layout.item_perm]
            if val is not None:  # in internal ids, on the centered scale
                val = (
                    inverse_permutation(layout.user_perm)[val.rows],
                    inverse_permutation(layout.item_perm)[val.cols],
                    val.values - np.float32(global_mean),
                )
            runner = None
            if client is not None:
                from .dask import DaskEpochs

                report = None
                if params["verbose"] >= 2:

                    def report(stratum, strata, seconds):
                        print(f"  sub-epoch {stratum}/{strata} done ({seconds:.2f} s)", flush=True)

                runner = DaskEpochs(client, layout, _LOSS_CODES[self._loss], report)
            history = self._run_epochs(
                layout,
                user_factors,
                item_factors,
                user_bias,
                item_bias,
                rng,
                params,
                val,
                callback,
                runner,
                checkpoint,
                resume,
            )
            loss_curve, val_curve, best_epoch, converged = history
        if params["tol"] is not None and not converged:
            warnings.warn(
                f"{type(self).__name__} stopped at n_epochs={params['n_epochs']} before "
                f"converging (the objective still improved by a relative tol={params['tol']:g} "
                f"within the last {params['n_iter_no_change']} epochs). Increase n_epochs or "
                "lr, or set tol=None to run a fixed number of epochs.",
                ConvergenceWarning,
                stacklevel=3,
            )
        seen_indptr, seen_items = layout.seen_items_csr()
        if warm is not None:
            seen_indptr, seen_items = _merge_seen(warm["seen"], (seen_indptr, seen_items), m, n)
        # Commit the fitted state only now, so that a failed fit changes nothing.
        user_new = inverse_permutation(layout.user_perm)
        item_new = inverse_permutation(layout.item_perm)
        permute_rows(user_factors, user_new)
        permute_rows(item_factors, item_new)
        self.__dict__.update(
            user_factors_=user_factors,
            item_factors_=item_factors,
            user_bias_=user_bias[user_new] if params["biases"] else np.zeros(m, np.float32),
            item_bias_=item_bias[item_new] if params["biases"] else np.zeros(n, np.float32),
            global_mean_=global_mean,
            loss_curve_=np.asarray(loss_curve, dtype=np.float64),
            val_curve_=np.asarray(val_curve, dtype=np.float64) if val is not None else None,
            best_epoch_=best_epoch,
            n_iter_=len(loss_curve),
            n_users_=m,
            n_items_=n,
            seen_indptr_=seen_indptr,
            seen_items_=seen_items,
        )
        return self

    def _run_epochs(
        self,
        layout,
        user_factors,
        item_factors,
        user_bias,
        item_bias,
        rng,
        params,
        val,
        callback,
        runner=None,
        checkpoint=None,
        resume=None,
    ):
        """Run SGD epochs until a stopping rule or ``n_epochs``.

        One kernel call per epoch; this loop owns the objective, convergence,
        validation and early stopping, divergence, callbacks and progress
        output. Factors and biases (None when the model has none) are updated
        in place (with validation: left at the best epoch's values).

        Returns
        -------
        loss_curve, val_curve : lists of float
        best_epoch : int or None
            The epoch with the best validation loss (None without validation).
        stopped : bool
            True when a stopping rule ended training before ``n_epochs``.
        """
        loss = _LOSS_CODES[self._loss]
        lr = np.float32(params["lr"])
        l2 = np.float32(params["l2"])
        tol, n_epochs = params["tol"], params["n_epochs"]
        if params["n_threads"] > 1:
            sgd_epoch, data_objective = _kernels.sgd_epoch_parallel, _kernels.objective_parallel
        else:
            sgd_epoch, data_objective = _kernels.sgd_epoch_serial, _kernels.objective_serial
        arrays = (layout.rows, layout.cols, layout.values, layout.block_offsets)
        block_loss = np.zeros(layout.grid**2, dtype=np.float64)
        use_bias = user_bias is not None
        user_acc = item_acc = None
        if params["learning_rate"] == "adagrad":
            # Accumulators start at 1, as in LIBMF, so the first steps are at most lr.
            user_acc = np.ones(user_factors.shape[0], dtype=np.float32)
            item_acc = np.ones(item_factors.shape[0], dtype=np.float32)
        state = (user_factors, item_factors, user_bias, item_bias)
        user_bounds = stripe_bounds(user_factors.shape[0], layout.grid)
        item_bounds = stripe_bounds(item_factors.shape[0], layout.grid)

        def objective():
            """Return the objective and whether the state is finite (None: check here)."""
            if runner is not None:  # computed where the state lives
                penalty, finite = runner.objective(block_loss)
            else:
                data_objective(loss, *arrays, *state, block_loss)
                penalty, finite = 0.0, None
                # Stripe by stripe, in the order the cluster's stripes are added up.
                for factors, counts, bounds in (
                    (user_factors, layout.user_counts, user_bounds),
                    (item_factors, layout.item_counts, item_bounds),
                    (user_bias, layout.user_counts, user_bounds),
                    (item_bias, layout.item_counts, item_bounds),
                ):
                    if factors is None:
                        continue
                    matrix = factors if factors.ndim == 2 else factors[:, None]
                    for lo, hi in zip(bounds[:-1], bounds[1:]):
                        penalty += _kernels.weighted_squared_norms(matrix[lo:hi], counts[lo:hi])
            # Blocks are added in a fixed order: same bits for any thread count.
            return (block_loss.sum() + 0.5 * float(l2) * penalty) / layout.nnz, finite

        def validation_loss():
            scores = np.empty(val[0].shape[0], dtype=np.float32)
            _kernels.predict_coo(val[0], val[1], user_factors, item_factors, scores)
            if use_bias:
                scores += user_bias[val[0]] + item_bias[val[1]]
            if loss == _kernels.SQUARED:
                return float(np.sqrt(np.mean((val[2] - scores.astype(np.float64)) ** 2)))
            return float(np.mean(np.logaddexp(0.0, -val[2] * scores.astype(np.float64))))

        bar = _progress_bar(params["verbose"], n_epochs, type(self).__name__)
        try:
            loss_curve, val_curve = [], []
            epochs_without_improvement = 0
            all_state = (*state, user_acc, item_acc)
            if runner is not None:
                runner.push(state, user_acc, item_acc)
            best, _ = objective()
            best_val, best_epoch, best_state = np.inf, None, None
            first_epoch = 1
            if checkpoint is not None or resume is not None:
                print_ = _checkpoint.fingerprint(layout, params)
            if resume is not None:
                progress = _checkpoint.load(resume, print_, all_state, rng)
                loss_curve, val_curve = progress["loss_curve"], progress["val_curve"]
                best, best_val = progress["best"], progress["best_val"]
                best_epoch = progress["best_epoch"]
                epochs_without_improvement = progress["epochs_without_improvement"]
                best_state = progress.get("_best_state")
                first_epoch = len(loss_curve) + 1
                if runner is not None:
                    runner.push(state, user_acc, item_acc)
            for epoch in range(first_epoch, n_epochs + 1):
                schedule = epoch_schedule(layout.grid, rng)
                start = time.perf_counter()
                if runner is None:
                    sgd_epoch(loss, *arrays, schedule, *state, user_acc, item_acc, lr, l2)
                else:  # the same schedule, block by block on a cluster
                    runner(schedule, lr, l2)
                seconds = time.perf_counter() - start
                current, finite = objective()
                if finite is None:
                    finite = all(np.isfinite(array).all() for array in state if array is not None)
                if runner is not None and (val is not None or checkpoint is not None):
                    runner.pull(state, user_acc, item_acc)  # the client needs the factors
                if not (np.isfinite(current) and finite):
                    raise DivergenceError(
                        f"{type(self).__name__} diverged in epoch {epoch}: the objective became "
                        f"{current} (lr={params['lr']!r}). Use a smaller learning rate, e.g. "
                        f"lr={params['lr'] / 10:g}, or a larger l2. The model was not changed."
                    )
                loss_curve.append(current)
                val_loss = None
                if val is not None:
                    val_loss = validation_loss()
                    val_curve.append(val_loss)
                    if val_loss < best_val:
                        best_val, best_epoch = val_loss, epoch
                        best_state = [None if a is None else a.copy() for a in state]
                # SGD makes the objective noisy near the optimum, so progress is
                # measured against the best value so far, over several epochs.
                decrease = (best - current) / abs(best) if best != 0 else 0.0
                rate = layout.nnz / max(seconds, 1e-9) / 1e6
                if bar is not None:
                    bar.update(1)
                    shown = {} if val_loss is None else {"validation": f"{val_loss:.5g}"}
                    bar.set_postfix(objective=f"{current:.5g}", **shown, refresh=False)
                elif params["verbose"]:
                    shown = "" if val_loss is None else f"  validation {val_loss:.6g}"
                    print(
                        f"epoch {epoch:>4}/{n_epochs}  objective {current:.6g}{shown}  "
                        f"rel. decrease {decrease:+.2e}  {rate:.1f}M ratings/s",
                        flush=True,
                    )
                stop = False
                if callback is not None:
                    info = {
                        "epoch": epoch,
                        "loss": current,
                        "val_loss": val_loss,
                        "seconds": seconds,
                    }
                    stop = callback(info) is False
                if val is not None and epoch - best_epoch >= params["patience"]:
                    stop = True
                if tol is not None and decrease < tol:
                    epochs_without_improvement += 1
                    stop = stop or epochs_without_improvement >= params["n_iter_no_change"]
                else:
                    epochs_without_improvement = 0
                best = min(best, current)
                if checkpoint is not None:
                    _checkpoint.save(
                        checkpoint,
                        print_,
                        all_state,
                        {
                            "loss_curve": loss_curve,
                            "val_curve": val_curve,
                            "best": best,
                            "best_val": best_val,
                            "best_epoch": best_epoch,
                            "epochs_without_improvement": epochs_without_improvement,
                            "_best_state": best_state,
                        },
                        rng,
                    )
                if stop:
                    break
            if runner is not None:
                runner.pull(state, user_acc, item_acc)
            if best_state is not None:
                for array, saved in zip(state, best_state):
                    if array is not None:
                        np.copyto(array, saved)
            return loss_curve, val_curve, best_epoch, len(loss_curve) < n_epochs or stop
        finally:
            if bar is not None:
                bar.close()

    # ------------------------------------------------------------- prediction
    def _check_is_fitted(self):
        if not hasattr(self, "user_factors_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "training data before using this method."
            )

    @property
    def P(self):
        """User factors, read-only (the reference notebook's name for ``user_factors_``)."""
        return self._read_only("user_factors_")

    @property
    def Q(self):
        """Item factors, read-only (the reference notebook's name for ``item_factors_``)."""
        return self._read_only("item_factors_")

    def _read_only(self, name):
        self._check_is_fitted()
        view = getattr(self, name).view()
        view.flags.writeable = False
        return view

    def decision_function(self, rows, cols, unknown="raise"):
        """Score ``mean + b_u + b_i + p_u . q_i`` for each (user, item) pair, without P Q^T.

        With ``biases=False`` the mean and biases are 0.

        Parameters
        ----------
        rows, cols : array_like
            User and item ids, broadcast against each other: indices, or raw
            ids when the model was fitted on a :class:`fastmf.ids.Dataset`.
        unknown : {"raise", "nan", "mean"}, default="raise"
            For a user or item not seen in training (an unknown raw id, or an
            index beyond the fitted shape): raise a ValueError naming it,
            score NaN, or score what is known without it — the global mean
            plus the bias of whichever of the pair is known.

        Returns
        -------
        ndarray of float32 with the broadcast shape of ``rows`` and ``cols``
        """
        self._check_is_fitted()
        if unknown not in ("raise", "nan", "mean"):
            raise ValueError(f"unknown must be 'raise', 'nan' or 'mean', got {unknown!r}.")
        shape = (self.n_users_, self.n_items_)
        if getattr(self, "user_map_", None) is not None:
            policy = "raise" if unknown == "raise" else "missing"
            try:
                rows = self.user_map_.to_index(rows, unknown=policy)
                cols = self.item_map_.to_index(cols, unknown=policy)
            except ValueError as error:
                raise ValueError(
                    f"{error} Pass unknown='nan' or unknown='mean' to score them anyway."
                ) from None
            rows, cols = np.broadcast_arrays(rows, cols)
            out_shape = rows.shape
            flat_rows, flat_cols = rows.ravel(), cols.ravel()
        elif unknown == "raise":
            flat_rows, flat_cols, out_shape = check_pairs(rows, cols, shape)
        else:
            flat_rows, flat_cols, out_shape = check_pairs(rows, cols, (np.inf, np.inf))
            flat_rows = np.where(flat_rows < shape[0], flat_rows, -1)
            flat_cols = np.where(flat_cols < shape[1], flat_cols, -1)
        known_user, known_item = flat_rows >= 0, flat_cols >= 0
        both = known_user & known_item
        out = np.full(flat_rows.shape[0], np.nan, dtype=np.float32)
        scores = np.empty(int(both.sum()), dtype=np.float32)
        _kernels.predict_coo(
            np.ascontiguousarray(flat_rows[both]),
            np.ascontiguousarray(flat_cols[both]),
            self.user_factors_,
            self.item_factors_,
            scores,
        )
        out[both] = scores
        if unknown == "mean":
            out[~both] = 0.0
        user_part = np.where(known_user, self.user_bias_[np.maximum(flat_rows, 0)], 0)
        item_part = np.where(known_item, self.item_bias_[np.maximum(flat_cols, 0)], 0)
        out += user_part + item_part + np.float32(self.global_mean_)
        return out.reshape(out_shape)

    # ------------------------------------------------------ new data
    def partial_fit(self, X, *, shape=None, duplicates="raise"):
        """Continue training on new ratings, growing the model for new ids.

        A warm start: the current factors (and biases) are the initial values,
        rows for user or item ids beyond the fitted shape are added with fresh
        random factors, and ``n_epochs`` epochs (or fewer, by ``tol``) run on
        ``X`` alone. This is not the same as refitting on all data: the old
        ratings are not revisited, so the model drifts toward the new ones.
        The global mean of a model with biases is kept. An unfitted model is
        simply fitted.

        Parameters
        ----------
        X, shape, duplicates
            As in :meth:`fit` (indices only; not a Dataset).

        Returns
        -------
        self
        """
        if not hasattr(self, "user_factors_"):
            return self.fit(X, shape=shape, duplicates=duplicates)
        if getattr(self, "user_map_", None) is not None:
            raise TypeError("partial_fit takes indices; this model was fitted on raw ids.")
        params = self._validated_params()
        if params["k"] != self.user_factors_.shape[1]:
            raise ValueError(
                f"k changed since fit ({self.user_factors_.shape[1]} -> {params['k']})."
            )
        if shape is None:
            coo = self._check_input(X, None, duplicates)
            shape = (max(coo.shape[0], self.n_users_), max(coo.shape[1], self.n_items_))
        coo = self._check_input(X, shape, duplicates)
        m, n = coo.shape
        if m < self.n_users_ or n < self.n_items_:
            raise ValueError(
                f"shape {coo.shape} is smaller than the fitted ({self.n_users_}, {self.n_items_})."
            )
        rng = check_random_state(params["random_state"])
        std = np.float32(float(params["init_scale"]) / float(np.sqrt(params["k"])))

        def grown(old, rows):
            extra = rng.standard_normal((rows - old.shape[0], old.shape[1]), dtype=np.float32)
            return np.ascontiguousarray(np.vstack([old, extra * std]), dtype=np.float32)

        def grown_bias(old, size):
            return np.concatenate([old, np.zeros(size - old.size, dtype=np.float32)])

        warm = {
            "global_mean": self.global_mean_,
            "user_bias": grown_bias(self.user_bias_, m),
            "item_bias": grown_bias(self.item_bias_, n),
            "seen": (self.seen_indptr_, self.seen_items_),
        }
        self._fit_coo(
            coo,
            duplicates,
            grown(self.user_factors_, m),
            grown(self.item_factors_, n),
            rng,
            params,
            warm=warm,
        )
        return self

    # ------------------------------------------------------------ persistence
    def save(self, path):
        """Save the fitted model to ``path`` as a versioned ``.npz`` file.

        The file holds the hyperparameters (as JSON), factors, biases, the
        loss curve and the shape; no pickled objects, so :func:`fastmf.load`
        never runs code from a file. A ``random_state`` given as a Generator
        or RandomState is saved as None.

        Parameters
        ----------
        path : str or path-like
        """
        save_model(self, path)


def _progress_bar(verbose, n_epochs, name):
    """Return a tqdm bar over epochs when ``verbose == 1`` and tqdm is installed, else None.

    ``verbose >= 2`` (or no tqdm) prints one line per epoch instead; 0 is silent.
    """
    if verbose != 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=n_epochs, desc=name, unit="epoch")


def _merge_seen(old, new, m, n):
    """Union of two seen-items CSR indexes (the old one may have fewer users)."""
    import scipy.sparse as sp

    old_indptr, old_items = old
    old_indptr = np.concatenate([old_indptr, np.full(m + 1 - old_indptr.size, old_indptr[-1])])
    matrices = [
        sp.csr_array((np.ones(items.size, dtype=np.int8), items, indptr), shape=(m, n))
        for indptr, items in ((old_indptr, old_items), new)
    ]
    union = (matrices[0] + matrices[1]).tocsr()
    union.sort_indices()
    return union.indptr.astype(np.int64), union.indices.astype(np.int32)
