"""The fit template and everything a fitted model does, written once for all models."""

import copy
import dataclasses
import inspect
import math
import warnings
from numbers import Integral, Real

import numpy as np

from . import _driver, _kernels, _losses
from ._backend import LocalBackend
from ._blocks import choose_grid, inverse_permutation, relabeled_by_user
from ._jit import numba_threads, resolve_threads
from ._persistence import register_model_class, save_model
from ._recommend import RecommenderMixin
from ._state import TrainingState, normal_factors
from ._stopping import StoppingRules
from ._validation import (
    check_coo,
    check_factor_memory,
    check_pairs,
    check_random_state,
    check_sample_weight,
)
from .exceptions import ConvergenceWarning, NotFittedError
from .ids import Dataset, IdMap, _as_id_array

LEARNING_RATES = ("constant", "adagrad")
MONITORS = ("running", "exact")


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

    _loss = None  # a fastmf._losses.Loss, named by each model class
    # lr=None takes the learning-rate schedule's entry here (None: lr is required);
    # a pair is (lr for k <= 64, lr for larger k).
    _default_lr = {"constant": 0.005, "adagrad": (0.15, 0.1)}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_model_class(cls)  # so that fastmf.load finds it by name

    def __init__(
        self,
        k=32,
        lr=None,
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
        monitor="running",
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
        self.monitor = monitor

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

        if p["learning_rate"] not in LEARNING_RATES:
            raise ValueError(
                f"{name}: learning_rate must be one of {LEARNING_RATES}, got "
                f"{p['learning_rate']!r}."
            )
        number("k", 1, True, integer=True)
        if p["lr"] is None and self._default_lr is not None:
            p["lr"] = self._default_lr.get(p["learning_rate"])
            if isinstance(p["lr"], tuple):
                p["lr"] = p["lr"][0] if p["k"] <= 64 else p["lr"][1]
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
        if not isinstance(p["biases"], (bool, np.bool_)):
            raise TypeError(f"{name}: biases must be True or False, got {p['biases']!r}.")
        # A model without this parameter (ImplicitMF: sampled losses have no
        # exact objective to compute) always monitors the running loss.
        p["monitor"] = p.get("monitor", "running")
        if p["monitor"] not in MONITORS:
            raise ValueError(f"{name}: monitor must be one of {MONITORS}, got {p['monitor']!r}.")
        if not isinstance(p["verbose"], (Integral, bool)):
            raise TypeError(f"{name}: verbose must be an int or bool, got {p['verbose']!r}.")
        return p

    # ---------------------------------------------------------------- fitting
    def fit(
        self,
        X,
        y=None,
        *,
        sample_weight=None,
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
        sample_weight : array_like of shape (n_entries,), optional
            A non-negative weight per observed entry, in the order of ``X``'s
            entries (the triplets; ``X.tocoo()``'s stored entries for a sparse
            matrix; row-major non-zeros for a dense one; a Dataset's ratings).
            It scales the entry's data loss and its gradient (not the L2
            penalty); the objective, ``loss_curve_`` and the global mean
            ``global_mean_`` are weighted too, the validation metric is not.
            Not with sharded Dask input, nor with ``duplicates="sum"`` (whose
            weight a merged entry should take is ambiguous); with ``"last"``
            the last entry's weight is kept.
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
        backend = self._backend(client, params)
        X, X_val, shape, maps = _unpack_dataset(X, X_val, shape)
        data = backend.open(X, self._check_input, shape, duplicates)
        weights = None
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, data, duplicates)
        val = None if X_val is None else self._check_input(X_val, data.shape, "last")
        check_factor_memory(data.shape, params["k"])
        rng = check_random_state(params["random_state"])
        m, n = data.shape
        threads = resolve_threads(params["n_threads"])
        user_factors = normal_factors(rng, m, params["k"], params["init_scale"], threads)
        item_factors = normal_factors(rng, n, params["k"], params["init_scale"], threads)
        self._train(
            data,
            duplicates,
            (user_factors, item_factors),
            rng,
            params,
            backend,
            drawn=True,
            val=val,
            weights=weights,
            callback=callback,
            checkpoint=checkpoint,
            resume=resume,
        )
        self.user_map_, self.item_map_ = maps
        return self

    def _backend(self, client, params):
        """Return the backend that runs the epochs: here, or on the Dask ``client``'s cluster.

        The one place where the estimator knows that a distributed backend exists.
        """
        if client is None:
            return LocalBackend(params["n_threads"])
        from .dask import DaskBackend

        report = None
        if params["verbose"] >= 2:

            def report(stratum, strata, seconds):
                print(f"  sub-epoch {stratum}/{strata} done ({seconds:.2f} s)", flush=True)

        return DaskBackend(client, params["n_threads"], report)

    def _check_input(self, X, shape, duplicates):
        """Validate ``X`` into :class:`~fastmf._validation.Coo` with values this loss accepts."""
        self._check_loss()
        if duplicates == "sum" and self._loss.binary:
            raise ValueError(
                f"{type(self).__name__}: duplicates='sum' would add labels together; use "
                "'raise' or 'last'."
            )
        coo = check_coo(self._encode_input(X), shape, duplicates=duplicates)
        values = self._loss.check_values(self._decode_values(coo.values))
        return type(coo)(coo.rows, coo.cols, values, coo.shape)

    def _encode_input(self, X):
        """Check the input's form for this model's value encoding (none by default)."""
        return X

    def _decode_values(self, values):
        """Turn checked input values into the loss's values (unchanged by default)."""
        return values

    def _sampling(self, params):
        """Return how a sampled loss draws negatives (a ``NegativeSampling``); None here."""
        return None

    def _check_loss(self):
        if self._loss is None:
            raise TypeError(
                "MatrixFactorization is a base class; fit RealValueMF or BinaryMF instead."
            )

    def _train(
        self, data, duplicates, factors, rng, params, backend, val=None, warm=None, weights=None,
        drawn=False, **run,
    ):  # fmt: skip
        """Arrange the data in blocks, train on ``backend``, and commit the fitted state.

        ``factors``, the user and item factors (float32, C-contiguous, original
        id order), are taken over: training reorders and updates them in place
        (``drawn``: i.i.d. random rows, used as they are in the internal order).
        ``warm`` (partial_fit) holds the global mean, biases and seen items
        that a warm start keeps; ``weights`` (float32, one per entry of
        ``data``) are sample weights; ``run`` (``callback``, ``checkpoint``,
        ``resume``) goes to :func:`fastmf._driver.train`.
        """
        loss = self._loss
        if weights is not None and loss.sampled:  # an interaction's weight is its value
            data = type(data)(data.rows, data.cols, data.values * weights, data.shape)
            weights = None
        m, n = data.shape
        grid = params["grid"] or choose_grid(m, n, data.nnz, params["k"])
        # More stripes than users, items or sqrt(ratings) only adds empty blocks.
        grid = min(grid, m, n, max(1, math.isqrt(data.nnz)))
        # Small fits run on one thread: compile time and thread start-up would
        # outweigh their epochs (the same bits either way).
        wanted = params["n_threads"] if data.nnz >= _losses.SMALL_FIT_RATINGS else 1
        with numba_threads(wanted) as threads:
            backend.n_threads = threads  # fewer where more would be unsafe (fastmf._jit)
            weight_rng = copy.deepcopy(rng) if weights is not None else None
            layout = backend.arrange(data, grid, rng, duplicates, loss.interleave, loss.shuffle)
            if weights is not None:
                layout = _with_weights(
                    layout, data, weights, backend, grid, weight_rng, duplicates, loss
                )
            value_scale = _value_scale(data)
            del data  # the layout is the copy of the ratings kept while training
            global_mean = 0.0
            if params["biases"] and loss.centred:
                # The model is r = mean + b_u + b_i + p.q: train on centred values
                # (the layout is fit's own copy, so in place is safe). Summed
                # block by block, so that a fit whose blocks live on a cluster
                # gets the same bits.
                if warm is not None:
                    global_mean = warm["global_mean"]
                elif layout.weights is not None:  # the weighted mean (weights are in memory)
                    global_mean = float(
                        np.dot(layout.values.astype(np.float64), layout.weights)
                        / np.sum(layout.weights, dtype=np.float64)
                    )
                else:
                    global_mean = float(np.sum(layout.value_sums())) / layout.nnz
                layout.subtract(np.float32(global_mean))
            state = TrainingState.start(
                layout,
                *factors,
                biases=params["biases"],
                adagrad=params["learning_rate"] == "adagrad",
                warm_biases=None if warm is None else (warm["user_bias"], warm["item_bias"]),
                drawn=drawn,
            )
            validation = None
            if val is not None and loss.sampled:
                validation = _ranking_validation(val, layout)
            elif val is not None:  # in internal ids, on the centred scale
                validation = _driver.Validation(
                    *relabeled_by_user(
                        val.rows,
                        val.cols,
                        val.values,
                        inverse_permutation(layout.user_perm),
                        inverse_permutation(layout.item_perm),
                        global_mean,
                    ),
                    loss,
                    parallel=threads > 1,
                )
            backend.start(layout, loss, state, self._sampling(params))
            stopping = StoppingRules(
                params["tol"],
                params["n_iter_no_change"],
                params["patience"],
                val is not None,
                maximize=validation is not None and validation.greater_is_better,
            )
            _driver.train(
                type(self).__name__,
                layout,
                state,
                backend,
                stopping,
                rng,
                params,
                validation=validation,
                value_scale=value_scale,
                **run,
            )
            # Still on the fit's threads: the index is built stripe by stripe in parallel.
            seen_indptr, seen_items = layout.seen_items_csr(parallel=threads > 1)
        converged = len(stopping.loss_curve) < params["n_epochs"] or stopping.stopped
        if params["tol"] is not None and not converged:
            warnings.warn(
                f"{type(self).__name__} stopped at n_epochs={params['n_epochs']} before "
                f"converging (the objective still improved by a relative tol={params['tol']:g} "
                f"within the last {params['n_iter_no_change']} epochs). Increase n_epochs or "
                "lr, or set tol=None to run a fixed number of epochs.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if warm is not None:
            seen_indptr, seen_items = _merge_seen(warm["seen"], (seen_indptr, seen_items), m, n)
        # Commit the fitted state only now, so that a failed fit changes nothing.
        self.__dict__.update(
            **state.fitted(layout),
            global_mean_=global_mean,
            loss_curve_=np.asarray(stopping.loss_curve, dtype=np.float64),
            val_curve_=None if val is None else np.asarray(stopping.val_curve, dtype=np.float64),
            best_epoch_=stopping.best_epoch,
            n_iter_=len(stopping.loss_curve),
            n_users_=m,
            n_items_=n,
            seen_indptr_=seen_indptr,
            seen_items_=seen_items,
        )
        return self

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

    def decision_function(self, rows, cols, unknown="raise", *, by_index=False):
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
        by_index : bool, default=False
            Take indices (0..n-1) even for a model fitted on a Dataset.

        Returns
        -------
        ndarray of float32 with the broadcast shape of ``rows`` and ``cols``
        """
        self._check_is_fitted()
        if unknown not in ("raise", "nan", "mean"):
            raise ValueError(f"unknown must be 'raise', 'nan' or 'mean', got {unknown!r}.")
        shape = (self.n_users_, self.n_items_)
        if getattr(self, "user_map_", None) is not None and not by_index:
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
    def partial_fit(self, X, *, sample_weight=None, shape=None, duplicates="raise"):
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
        X, sample_weight, shape, duplicates
            As in :meth:`fit`. For a model fitted on a :class:`fastmf.Dataset`,
            ``X`` is a Dataset or ``(raw user ids, raw item ids, values)``
            (no ``shape``): new raw ids join the model's maps.

        Returns
        -------
        self
        """
        if not hasattr(self, "user_factors_"):
            return self.fit(X, sample_weight=sample_weight, shape=shape, duplicates=duplicates)
        params = self._validated_params()
        if params["k"] != self.user_factors_.shape[1]:
            raise ValueError(
                f"k changed since fit ({self.user_factors_.shape[1]} -> {params['k']})."
            )
        if getattr(self, "user_map_", None) is not None:
            return self._partial_fit_raw(X, shape, duplicates, params, sample_weight)
        if shape is None:
            coo = self._check_input(X, None, duplicates)
            shape = (max(coo.shape[0], self.n_users_), max(coo.shape[1], self.n_items_))
        coo = self._check_input(X, shape, duplicates)
        weights = None
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, coo, duplicates)
        m, n = coo.shape
        if m < self.n_users_ or n < self.n_items_:
            raise ValueError(
                f"shape {coo.shape} is smaller than the fitted ({self.n_users_}, {self.n_items_})."
            )
        rng = check_random_state(params["random_state"])

        def grown(old, rows):
            extra = normal_factors(rng, rows - old.shape[0], old.shape[1], params["init_scale"])
            return np.ascontiguousarray(np.vstack([old, extra]), dtype=np.float32)

        def grown_bias(old, size):
            return np.concatenate([old, np.zeros(size - old.size, dtype=np.float32)])

        return self._train_warm(
            coo,
            duplicates,
            (grown(self.user_factors_, m), grown(self.item_factors_, n)),
            (grown_bias(self.user_bias_, m), grown_bias(self.item_bias_, n)),
            (self.seen_indptr_, self.seen_items_),
            rng,
            params,
            weights,
        )

    def _train_warm(self, coo, duplicates, factors, biases, seen, rng, params, weights=None):
        """Train on ``coo`` from the given state (original id order); the global mean is kept."""
        warm = {
            "global_mean": self.global_mean_,
            "user_bias": biases[0],
            "item_bias": biases[1],
            "seen": seen,
        }
        backend = LocalBackend(params["n_threads"])
        self._train(coo, duplicates, factors, rng, params, backend, warm=warm, weights=weights)
        return self

    def _partial_fit_raw(self, X, shape, duplicates, params, sample_weight=None):
        """:meth:`partial_fit` of a model fitted on raw ids: the maps grow, rows move."""
        if shape is not None:
            raise TypeError("This model was fitted on a Dataset: its shape follows its ids.")
        if isinstance(X, Dataset):
            users, items = X.user_map.ids_[X.rows], X.item_map.ids_[X.cols]
            values = X.values
        elif isinstance(X, tuple) and len(X) == 3:
            users, items, values = X
        else:
            raise TypeError(
                "This model was fitted on a Dataset: pass partial_fit a Dataset or "
                "(raw user ids, raw item ids, values)."
            )
        k = self.user_factors_.shape[1]
        maps, rows, positions = [], [], []
        for old, raw in ((self.user_map_, users), (self.item_map_, items)):
            old.to_index(raw, unknown="missing")  # a TypeError if the kind of id differs
            grown = IdMap(np.concatenate([old.ids_, _as_id_array(raw, "ids")]))
            maps.append(grown)
            rows.append(grown.to_index(raw))
            # Both maps are sorted, so old rows keep their order: a monotonic move.
            positions.append(grown.to_index(old.ids_))
        shape = (len(maps[0]), len(maps[1]))
        coo = self._check_input((rows[0], rows[1], values), shape, duplicates)
        weights = None
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, coo, duplicates)
        check_factor_memory(shape, k)
        rng = check_random_state(params["random_state"])
        factors, biases = [], []
        for old_factors, old_bias, where, size in (
            (self.user_factors_, self.user_bias_, positions[0], shape[0]),
            (self.item_factors_, self.item_bias_, positions[1], shape[1]),
        ):
            placed = normal_factors(rng, size, k, params["init_scale"])
            placed[where] = old_factors
            bias = np.zeros(size, dtype=np.float32)
            bias[where] = old_bias
            factors.append(placed)
            biases.append(bias)
        counts = np.zeros(shape[0], dtype=np.int64)
        counts[positions[0]] = np.diff(self.seen_indptr_)
        indptr = np.zeros(shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        seen = positions[1][self.seen_items_].astype(np.int32)
        self._train_warm(
            coo, duplicates, tuple(factors), tuple(biases), (indptr, seen), rng, params, weights
        )
        self.user_map_, self.item_map_ = maps
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


def _value_scale(data):
    """Return the largest magnitude among in-memory training values (None if sharded)."""
    values = getattr(data, "values", None)
    if not isinstance(values, np.ndarray) or values.size == 0:
        return None
    return max(float(values.max()), -float(values.min()))


def _with_weights(layout, data, weights, backend, grid, rng, duplicates, loss):
    """Return ``layout`` with the sample weights in its storage order.

    The weights are laid out by the same code, from a copy of the random
    generator as it was before the ratings' layout: the storage order depends
    only on the (user, item) pairs and those draws, so each weight lands where
    its rating did (at the cost of a transient second copy of the pairs).
    """
    weighted = type(data)(data.rows, data.cols, weights, data.shape)
    placed = backend.arrange(weighted, grid, rng, duplicates, loss.interleave, loss.shuffle)
    if not (np.array_equal(placed.rows, layout.rows) and np.array_equal(placed.cols, layout.cols)):
        raise AssertionError("the sample weights were not stored in the ratings' order")
    return dataclasses.replace(layout, weights=placed.values)


# Validation of a sampled loss ranks the items of at most this many held-out
# users (a fixed sample), so that it costs a small fraction of an epoch.
VALIDATION_USERS = 2000


def _ranking_validation(val, layout):
    """Held-out interactions ``val`` as a :class:`fastmf._driver.RankingValidation`.

    Internal ids; the users are a sample of at most ``VALIDATION_USERS``,
    drawn from the layout's own seeds so that the fit's random stream is
    the same with or without validation.
    """
    rows = inverse_permutation(layout.user_perm)[val.rows]
    cols = inverse_permutation(layout.item_perm)[val.cols]
    users = np.unique(rows)
    if users.size > VALIDATION_USERS:
        sample_rng = np.random.default_rng(int(layout.seeds[0]))
        users = np.sort(sample_rng.choice(users, VALIDATION_USERS, replace=False))
    keep = np.isin(rows, users)
    rows, cols = rows[keep], cols[keep]
    order = np.lexsort((cols, rows))
    truth_items = cols[order].astype(np.int64)
    truth_indptr = np.append(np.searchsorted(rows[order], users), truth_items.size)
    m = layout.user_perm.shape[0]
    seen_order = np.argsort(layout.rows, kind="stable")
    seen_items = layout.cols[seen_order].astype(np.int64)
    seen_indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(layout.rows, minlength=m), out=seen_indptr[1:])
    return _driver.RankingValidation(
        users.astype(np.int64), truth_indptr, truth_items, seen_indptr, seen_items
    )


def _unpack_dataset(X, X_val, shape):
    """Return ``(X, X_val, shape, (user_map, item_map))`` with a :class:`Dataset` as triplets.

    A validation Dataset is mapped through the training maps (same raw ids,
    the training indices). Other input passes through, with no maps.
    """
    if not isinstance(X, Dataset):
        return X, X_val, shape, (None, None)
    if isinstance(X_val, Dataset):
        X_val = (
            X.user_map.to_index(X_val.user_map.to_raw(X_val.rows)),
            X.item_map.to_index(X_val.item_map.to_raw(X_val.cols)),
            X_val.values,
        )
    return X.triplets, X_val, X.shape, (X.user_map, X.item_map)


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
