"""The models: which loss each one trains, its defaults, and its predictions."""

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from ._backend import LocalBackend
from ._base import MatrixFactorization
from ._losses import LOGISTIC, SQUARED
from ._state import uniform_factors
from ._validation import check_binary_labels, check_random_state


class RealValueMF(MatrixFactorization):
    r"""Matrix factorization of real-valued ratings with the squared loss.

    Minimizes, over the observed entries :math:`\Omega`,

    .. math::

        L(P, Q) = \frac{1}{|\Omega|} \sum_{(u,i) \in \Omega}
            \Big[\tfrac12 \big(r_{ui} - p_u^\top q_i\big)^2
            + \tfrac{\lambda}{2}\big(\lVert p_u\rVert^2 + \lVert q_i\rVert^2\big)\Big]

    by SGD. For one entry with error :math:`e = r_{ui} - p_u^\top q_i` the step
    is :math:`p_u \mathrel{+}= \eta(e\,q_i - \lambda p_u)`,
    :math:`q_i \mathrel{+}= \eta(e\,p_u - \lambda q_i)`, both from the old values.

    Parameters
    ----------
    k : int, default=32
        Number of latent factors (the rank).
    lr : float or None, default=None
        SGD learning rate :math:`\eta`; None picks the default of
        ``learning_rate``: 0.005 for ``"constant"``; for ``"adagrad"`` 0.15
        when ``k <= 64``, else 0.1 (LIBMF's). On the 9M-rating bench set, epochs
        to LIBMF's 20-iteration RMSE with lr 0.1 / 0.125 / 0.15 / 0.2: 10 / 8 /
        7 / 7 at k=32; with 0.075 / 0.087 / 0.1 / 0.15: 7 / 7 / 6 / 8 at k=128,
        where 0.15 also levels off higher (bench/README.md).
    l2 : float, default=0.08
        L2 regularization weight :math:`\lambda`. The defaults were tuned on
        MovieLens 100K (held-out RMSE 0.888 at k=32 on a 90/10 split; README).
        There they are still improving slowly when ``n_epochs`` runs out (a
        ConvergenceWarning), and that cap is part of the tuning: trained on to
        convergence, the same settings overfit (0.905, after about 240
        epochs). To train longer safely, pass ``X_val`` so that early stopping
        keeps the best epoch.
    n_epochs : int, default=100
        Maximum number of passes over the observed entries.
    tol : float or None, default=1e-4
        Convergence threshold: an epoch "improves" when it lowers the best
        objective so far by a relative amount ``(L_best - L) / |L_best|`` of at
        least ``tol``. Training stops after ``n_iter_no_change`` consecutive
        epochs without improvement. ``None`` runs exactly ``n_epochs`` epochs. A
        run that hits ``n_epochs`` first warns with
        :class:`fastmf.exceptions.ConvergenceWarning`.
    n_iter_no_change : int, default=3
        Epochs without improvement before stopping; more than one, because SGD
        makes the objective fluctuate near the optimum.
    learning_rate : {"constant", "adagrad"}, default="constant"
        ``"constant"`` steps by ``lr`` (the notebook's SGD). ``"adagrad"``
        adapts the step of every factor row to ``lr / sqrt(G)``, where ``G``
        starts at 1 and, after each update of the row, adds that update's mean
        squared gradient (LIBMF's AdaGrad, step size from ``G`` before the
        update); it takes a larger ``lr`` (the default ``lr=None`` picks one)
        and is less sensitive to its exact value. It is the fast path for
        large data: on 9M ratings it reaches LIBMF's quality in about half
        of LIBMF's training time (README); on MovieLens 100K the constant
        step's defaults generalize better (RMSE 0.888 against 0.907).
    biases : bool, default=True
        Learn a global mean ``mu`` (the mean training rating; squared loss
        only) and user and item biases, scoring ``mu + b_u + b_i + p_u . q_i``.
        The penalty then includes ``l2 / 2 * (b_u**2 + b_i**2)`` per entry.
        On by default because they lowered the held-out RMSE on MovieLens 100K
        and on synthetic data (README); ``biases=False`` is the notebook's
        model, ``p_u . q_i`` alone.
    patience : int, default=5
        With ``fit(..., X_val=...)``: stop after this many epochs without a
        new best validation loss, and keep the best epoch's factors.
    init_scale : float, default=0.1
        Initial factors are drawn from N(0, init_scale**2 / k), so initial
        scores have a spread of about ``init_scale**2`` whatever ``k`` is.
    random_state : None, int, numpy.random.Generator or RandomState, default=None
        Seeds the initial factors and the per-epoch visiting orders. ``None``
        draws the seed from numpy's global generator (``np.random.seed`` then
        makes runs repeatable).
    n_threads : int or None, default=None
        Threads used for training; None or 0 uses all of numba's threads
        (all cores unless ``NUMBA_NUM_THREADS`` says otherwise), larger values
        are capped there. The result is bit-for-bit the same for any value.
        ``n_threads=1`` never starts numba's thread pool, and neither do fits
        of fewer than 100,000 ratings (they run on one thread). Where more
        threads would be unsafe (a child forked after a GNU OpenMP pool
        started; concurrent fits on numba's workqueue layer) the fit runs on
        one thread with a ``SerialFallbackWarning``.
    grid : int or None, default=None
        Stripes per side of the block grid (``grid**2`` blocks, ``grid``
        strata per epoch). None picks it from the data size and ``k`` so that a
        block's factor rows fit in a core's L2 cache; it never depends on the
        thread count. Changing it changes the visiting order, hence the result.
        A given value is capped at ``min(n_users, n_items, sqrt(n_ratings))``
        (more stripes would only add empty blocks).
    verbose : int, default=0
        0 is silent (for embedding); 1 shows a tqdm progress bar when tqdm is
        installed (the ``progress`` extra), else one line per epoch; 2 prints
        one line per epoch (objective, validation loss, ratings/s).
    monitor : {"running", "exact"}, default="running"
        What ``loss_curve_``, ``tol`` and the divergence check watch.
        ``"running"``: each epoch's mean data loss with every entry's loss
        taken just before its own SGD step (as LIBMF reports it; no extra
        pass), plus the penalty of the factors at the end of the epoch. It
        describes a model that moves during the epoch, so it runs slightly
        above the exact objective of the epoch's final factors.
        ``"exact"``: the objective L of the factors after each epoch (and
        before the first), from one more pass over the entries per epoch (for
        the logistic loss, about as long as the epoch itself).

    Attributes
    ----------
    user_factors_ : ndarray of float32, shape (n_users, k)
    item_factors_ : ndarray of float32, shape (n_items, k)
    user_bias_, item_bias_ : ndarray of float32, shapes (n_users,), (n_items,)
        Zeros when ``biases=False``.
    global_mean_ : float
        The mean training rating with biases, else 0.
    loss_curve_ : ndarray of float64, shape (n_iter_,)
        The objective L of each epoch: the running estimate or the exact
        value after the epoch (see ``monitor``).
    val_curve_ : ndarray of float64, shape (n_iter_,), or None
        Validation RMSE after each epoch when ``X_val`` was given.
    best_epoch_ : int or None
        The epoch whose factors were kept, when ``X_val`` was given.
    n_iter_ : int
        Number of epochs run.
    n_users_, n_items_ : int
        The shape of the fitted matrix.
    P, Q : ndarray
        Read-only views of ``user_factors_`` and ``item_factors_``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmf import RealValueMF
    >>> R = np.array([[5, 3, 0], [4, 0, 1], [0, 1, 5]])
    >>> model = RealValueMF(k=2, lr=0.05, l2=0.01, n_epochs=500, tol=None, random_state=0)
    >>> model.fit(R).predict([0, 1], [0, 2]).round().tolist()
    [5.0, 1.0]
    """

    _loss = SQUARED

    def predict(self, rows, cols, unknown="raise", *, by_index=False):
        """Predict the rating of each (user, item) pair: ``mu + b_u + b_i + p_u . q_i``.

        Parameters
        ----------
        rows, cols : array_like
            User and item ids (raw ids after a fit on a Dataset), broadcast.
        unknown : {"raise", "nan", "mean"}, default="raise"
            Policy for ids not seen in training; see :meth:`decision_function`.
        by_index : bool, default=False
            Take indices even for a model fitted on a Dataset.

        Returns
        -------
        ndarray of float32 with the broadcast shape of ``rows`` and ``cols``
        """
        return self.decision_function(rows, cols, unknown=unknown, by_index=by_index)


class BinaryMF(MatrixFactorization):
    r"""Matrix factorization of binary responses with the logistic loss.

    Observed responses are :math:`y_{ui} \in \{-1, +1\}`. Minimizes

    .. math::

        L(P, Q) = \frac{1}{|\Omega|} \sum_{(u,i) \in \Omega}
            \Big[\log\big(1 + e^{-y_{ui}\, p_u^\top q_i}\big)
            + \tfrac{\lambda}{2}\big(\lVert p_u\rVert^2 + \lVert q_i\rVert^2\big)\Big]

    by SGD, and models :math:`P(y_{ui} = +1) = \sigma(p_u^\top q_i)`. For one
    entry with :math:`g = y_{ui}\,\sigma(-y_{ui}\, p_u^\top q_i)` the step is
    :math:`p_u \mathrel{+}= \eta(g\,q_i - \lambda p_u)`,
    :math:`q_i \mathrel{+}= \eta(g\,p_u - \lambda q_i)`, both from the old values.

    Parameters
    ----------
    k : int, default=32
        Number of latent factors (the rank).
    lr : float or None, default=None
        SGD learning rate :math:`\eta`; None picks the default of
        ``learning_rate``. ``"constant"``: 0.02, chosen on three data sets
        (README): held-out AUC 0.791 on MovieLens 100K at k=32, against 0.787
        with the earlier lr=0.05, and higher than 0.05's on both synthetic
        sets. On MovieLens 100K the defaults use the whole ``n_epochs`` budget
        (a ConvergenceWarning), as RealValueMF's do. ``"adagrad"``: 0.2; on
        the 9M-rating bench set it reached LIBMF's 20-iteration log loss in
        6 epochs at k=32 (0.1, LIBMF's own: 14) and 4 at k=128 (0.1: 8), and
        converged lower (0.4691 against 0.4737 after 30 epochs).
    l2 : float, default=0.05
        L2 regularization weight :math:`\lambda`.
    n_epochs : int, default=100
        Maximum number of passes over the observed entries.
    tol : float or None, default=1e-4
        Convergence threshold, as in :class:`RealValueMF`; ``None`` runs
        exactly ``n_epochs`` epochs.
    n_iter_no_change : int, default=3
        Epochs without a relative improvement of ``tol`` before stopping.
    learning_rate : {"constant", "adagrad"}, default="constant"
        As in :class:`RealValueMF`.
    biases : bool, default=True
        Learn user and item logit offsets, scoring ``b_u + b_i + p_u . q_i``
        (no global term: it would be absorbed by the offsets). On by default
        because they raised the held-out AUC on MovieLens 100K and on synthetic
        data (README); ``biases=False`` is the notebook's model.
    patience : int, default=5
        Early-stopping patience with ``fit(..., X_val=...)``, as in :class:`RealValueMF`.
    init_scale : float, default=0.5
        Initial factors are drawn from N(0, init_scale**2 / k). It is larger
        than RealValueMF's because with near-zero factors the logistic
        gradient is near zero too, and training would start on a plateau.
    random_state : None, int, numpy.random.Generator or RandomState, default=None
        Seeds the initial factors and the per-epoch visiting orders.
    n_threads : int or None, default=None
        Threads used for training; None or 0 uses all of numba's threads
        (all cores unless ``NUMBA_NUM_THREADS`` says otherwise), larger values
        are capped there. The result is bit-for-bit the same for any value.
        ``n_threads=1`` never starts numba's thread pool, and neither do fits
        of fewer than 100,000 ratings (they run on one thread). Where more
        threads would be unsafe (a child forked after a GNU OpenMP pool
        started; concurrent fits on numba's workqueue layer) the fit runs on
        one thread with a ``SerialFallbackWarning``.
    grid : int or None, default=None
        Stripes per side of the block grid (``grid**2`` blocks, ``grid``
        strata per epoch). None picks it from the data size and ``k`` so that a
        block's factor rows fit in a core's L2 cache; it never depends on the
        thread count. Changing it changes the visiting order, hence the result.
        A given value is capped at ``min(n_users, n_items, sqrt(n_ratings))``
        (more stripes would only add empty blocks).
    verbose : int, default=0
        0 is silent (for embedding); 1 shows a tqdm progress bar when tqdm is
        installed (the ``progress`` extra), else one line per epoch; 2 prints
        one line per epoch (objective, validation loss, ratings/s).
    labels : {"pm1", "01"}, default="pm1"
        How responses are encoded: ``"pm1"`` takes exactly -1 and +1 (in a
        dense matrix 0 marks a missing entry, as in the reference notebook);
        ``"01"`` takes exactly 0 and 1 from a sparse matrix or triplets, where
        0 is a negative response. Predictions use the same encoding.
    monitor : {"running", "exact"}, default="running"
        As in :class:`RealValueMF` (the running loss costs the logistic pass
        one log per eight entries; the exact objective, one more pass).

    Attributes
    ----------
    user_factors_ : ndarray of float32, shape (n_users, k)
    item_factors_ : ndarray of float32, shape (n_items, k)
    user_bias_, item_bias_ : ndarray of float32
        Logit offsets; zeros when ``biases=False``.
    global_mean_ : float
        Always 0 for BinaryMF.
    loss_curve_ : ndarray of float64, shape (n_iter_,)
        The objective L of each epoch: the running estimate or the exact
        value after the epoch (see ``monitor``).
    val_curve_ : ndarray of float64, shape (n_iter_,), or None
        Validation mean log loss after each epoch when ``X_val`` was given.
    best_epoch_ : int or None
    n_iter_ : int
    n_users_, n_items_ : int
    P, Q : ndarray
        Read-only views of ``user_factors_`` and ``item_factors_``.
    """

    _loss = LOGISTIC
    _default_lr = {"constant": 0.02, "adagrad": 0.2}

    def __init__(
        self,
        k=32,
        lr=None,
        l2=0.05,
        n_epochs=100,
        tol=1e-4,
        n_iter_no_change=3,
        learning_rate="constant",
        biases=True,
        patience=5,
        init_scale=0.5,
        random_state=None,
        n_threads=None,
        grid=None,
        verbose=0,
        labels="pm1",
        monitor="running",
    ):
        super().__init__(
            k=k,
            lr=lr,
            l2=l2,
            n_epochs=n_epochs,
            tol=tol,
            n_iter_no_change=n_iter_no_change,
            learning_rate=learning_rate,
            biases=biases,
            patience=patience,
            init_scale=init_scale,
            random_state=random_state,
            n_threads=n_threads,
            grid=grid,
            verbose=verbose,
            monitor=monitor,
        )
        self.labels = labels

    def _encode_input(self, X):
        if self.labels not in ("pm1", "01"):
            raise ValueError(f"BinaryMF: labels must be 'pm1' or '01', got {self.labels!r}.")
        if self.labels == "01" and not (isinstance(X, tuple) or sp.issparse(X)):
            raise ValueError(
                "BinaryMF: labels='01' needs a sparse matrix or (rows, cols, values) input, "
                "because in a dense matrix 0 means 'missing'. Use -1/+1 in a dense matrix."
            )
        return X

    def _decode_values(self, values):
        return check_binary_labels(values, self.labels)

    def predict_proba(self, rows, cols, unknown="raise", *, by_index=False):
        """Probability of a positive response, ``sigmoid(b_u + b_i + p_u . q_i)``, per pair.

        Parameters
        ----------
        rows, cols : array_like
            User and item ids (raw ids after a fit on a Dataset), broadcast.
        unknown : {"raise", "nan", "mean"}, default="raise"
            Policy for ids not seen in training; see :meth:`decision_function`.
        by_index : bool, default=False
            Take indices even for a model fitted on a Dataset.

        Returns
        -------
        ndarray of float32 with the broadcast shape of ``rows`` and ``cols``
            ``P(y = +1)`` (one column, not scikit-learn's two).
        """
        return expit(self.decision_function(rows, cols, unknown=unknown, by_index=by_index))

    def predict(self, rows, cols, unknown="raise", *, by_index=False):
        """Predict the response of each pair: the positive label where P(+1) >= 0.5.

        ``unknown`` is "raise" or "mean" (see :meth:`decision_function`); a
        label cannot be NaN. ``by_index`` as in :meth:`decision_function`.

        Returns
        -------
        ndarray of int8 with the broadcast shape of ``rows`` and ``cols``
            Labels in the encoding given by ``labels`` (-1/+1 or 0/1).
        """
        if unknown == "nan":
            raise ValueError("BinaryMF.predict returns labels: use unknown='raise' or 'mean'.")
        negative = -1 if self.labels == "pm1" else 0
        scores = self.decision_function(rows, cols, unknown=unknown, by_index=by_index)
        return np.where(scores >= 0, 1, negative).astype(np.int8)


def mf(R, k, n_epoch=5000, lr=0.0003, l2=0.04, random_state=None, tol=None):
    r"""Factorize ``R ~ P Q^T`` by per-entry SGD, like the reference notebook's ``mf``.

    A drop-in, compiled version of the notebook function: same arguments and
    defaults, same uniform [0, 1) initialization drawn from numpy's global
    generator when ``random_state`` is None, same step. The notebook's step is
    ``p_u += lr * (2 e q_i - l2/2 p_u)``, the SGD step of
    ``e**2 + l2/4 (|p_u|^2 + |q_i|^2)``; this function runs
    :class:`RealValueMF` with ``lr' = 2 lr`` and ``l2' = l2 / 4``, which takes
    exactly that step (from the old values of both rows) in a shuffled order.

    Parameters
    ----------
    R : array_like of shape (m, n), scipy.sparse matrix, or (rows, cols, values) tuple
        Ratings; in a dense array 0 means missing.
    k : int
        Number of latent factors.
    n_epoch : int, default=5000
        Number of epochs.
    lr : float, default=0.0003
        Learning rate in the notebook's parametrization.
    l2 : float, default=0.04
        Regularization weight in the notebook's parametrization.
    random_state : None, int, Generator or RandomState, default=None
        Seed for the initial factors and visiting orders.
    tol : float or None, default=None
        As in :class:`RealValueMF`; ``None`` runs all ``n_epoch`` epochs.

    Returns
    -------
    P : ndarray of float32, shape (m, k)
    Q : ndarray of float32, shape (n, k)
    """
    model = RealValueMF(
        k=k,
        lr=2 * lr,
        l2=l2 / 4,
        n_epochs=n_epoch,
        tol=tol,
        biases=False,  # the notebook's model has none
        random_state=random_state,
        # The notebook's tolerance is on the loss of the factors after an epoch.
        monitor="running" if tol is None else "exact",
    )
    params = model._validated_params()
    coo = model._check_input(R, None, "raise")
    m, n = coo.shape
    rng = check_random_state(random_state)
    # As in the notebook, np.random.seed(...) before a call without random_state repeats it.
    user_factors = uniform_factors(rng, m, k, use_global_numpy=random_state is None)
    item_factors = uniform_factors(rng, n, k, use_global_numpy=random_state is None)
    backend = LocalBackend(params["n_threads"])
    model._train(coo, "raise", (user_factors, item_factors), rng, params, backend)
    return model.user_factors_, model.item_factors_
