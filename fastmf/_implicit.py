"""ImplicitMF: matrix factorization of positive-only interactions (clicks, plays, purchases)."""

from numbers import Integral, Real

import numpy as np

from ._base import MatrixFactorization
from ._losses import BPR, SAMPLED_LOGISTIC, NegativeSampling, weighted_logistic_solution

LOSSES = {"bpr": BPR, "logistic": SAMPLED_LOGISTIC}
NEGATIVE_SAMPLING = ("uniform", "popularity")
# fold_in pairs each BPR positive with this many sampled unobserved items.
FOLD_IN_NEGATIVES = 256


class ImplicitMF(MatrixFactorization):
    r"""Matrix factorization of implicit feedback: interactions observed, no negatives.

    ``fit(X)`` takes the observed interactions only (a user clicked, played or
    bought an item); their values, if any, are confidence weights (counts,
    play time; all ones if absent). Every unobserved pair is a possible
    negative: each epoch, for every interaction ``(u, i)`` with weight
    :math:`c_{ui}`, the kernels draw ``n_negatives`` items :math:`j` that
    ``u`` has not interacted with and take one SGD step on

    - ``loss="bpr"`` (Bayesian personalized ranking, Rendle et al. 2009):
      :math:`-c_{ui} \log \sigma(s_{ui} - s_{uj})`, with
      :math:`s_{ui} = p_u^\top q_i + b_i`;
    - ``loss="logistic"`` (pointwise, as in word2vec and logistic MF):
      :math:`c_{ui} \log(1 + e^{-s_{ui}}) + w \sum_j \log(1 + e^{s_{uj}})`,
      with :math:`s_{ui} = b_u + b_i + p_u^\top q_i` and ``w = negative_weight``;

    plus :math:`\tfrac{\lambda}{2}` times the squared norms of the rows it
    moves. Negatives come from the item stripe of the block being trained
    (:mod:`fastmf._blocks`: a block covers a random ``1/grid`` of the items),
    so no thread writes an item row another thread is using, and from the
    block's own seeded stream, so results are bit-for-bit the same for any
    number of threads. A negative is redrawn when it hits one of the user's
    own items (up to 8 times). Memory is the interactions and the factors:
    negatives are never materialized.

    Parameters
    ----------
    k : int, default=32
        Number of latent factors.
    loss : {"logistic", "bpr"}, default="logistic"
        The defaults (``"logistic"``, AdaGrad, ``lr=0.2``, ``l2=0.02``, four
        negatives, 30 epochs) were chosen on MovieLens 100K (ratings >= 4 as
        interactions, 20% of each user's held out) and checked on generated
        data with group structure: there they rank better than BPR and than
        implicit's ALS, BPR and logistic MF (README; bench/README.md has the
        search).
    lr : float, default=0.2
        SGD learning rate (the AdaGrad base rate by default). Smaller rates
        (0.05) rank as well on MovieLens 100K after 50 epochs, but start with
        several epochs stuck at the popularity ranking on larger data.
    l2 : float, default=0.02
        L2 regularization weight, applied to the rows each step moves.
    n_epochs : int, default=30
        Passes over the interactions.
    n_negatives : int, default=4
        Negatives drawn per interaction and epoch.
    negative_weight : float, default=1.0
        Weight ``w`` of each negative's loss (``loss="logistic"`` only).
    negative_sampling : {"uniform", "popularity"}, default="uniform"
        ``"uniform"`` draws negatives uniformly from the items; ``"popularity"``
        in proportion to their interactions (a random interaction's item, as
        implicit's BPR does), which pushes popular items down.
    tol : float or None, default=None
        Convergence threshold on the objective (see :class:`RealValueMF`);
        None (the default) runs ``n_epochs`` epochs or until early stopping:
        the sampled objective is noisy.
    n_iter_no_change : int, default=3
    learning_rate : {"constant", "adagrad"}, default="adagrad"
        As in :class:`RealValueMF`; AdaGrad ranked better than a constant
        step at every setting tried on MovieLens 100K.
    biases : bool, default=True
        Learn item biases (and user biases for the logistic loss; they cancel
        in BPR). A user's bias never changes the ranking of its items.
    patience : int, default=5
        With ``fit(..., X_val=...)``: stop after this many epochs without a
        new best validation NDCG@10, and keep the best epoch's factors.
    init_scale : float, default=0.5
        Initial factors are drawn from N(0, init_scale**2 / k). Small factors
        keep the held-out ranking at the item biases' popularity ranking for
        the first epochs (about eight from 0.1 with ``lr=0.05`` on MovieLens
        100K, long enough to end a fit early with ``X_val`` and
        ``patience=5``).
    random_state, n_threads, grid, verbose
        As in :class:`RealValueMF`.

    Attributes
    ----------
    user_factors_, item_factors_, user_bias_, item_bias_
        As in :class:`RealValueMF`; ``global_mean_`` is 0.
    loss_curve_ : ndarray of float64, shape (n_iter_,)
        After each epoch: the data loss summed during that epoch's pass
        (each term taken just before its step, as LIBMF reports it) plus
        ``l2 / 2`` times each row's squared norm weighted by its number of
        interactions, divided by the number of interactions. It is a noisy
        estimate (fresh negatives every epoch), not the exact objective.
    val_curve_ : ndarray of float64, or None
        With ``X_val`` (held-out interactions): NDCG@10 after each epoch over
        at most 2,000 of its users (a fixed sample), items seen in training
        excluded. Higher is better.
    best_epoch_, n_iter_, n_users_, n_items_, P, Q
        As in :class:`RealValueMF`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmf import ImplicitMF
    >>> users = np.repeat(np.arange(40), 5)
    >>> items = (users % 4) * 5 + np.tile(np.arange(5), 40)  # four groups of five items
    >>> model = ImplicitMF(k=4, n_epochs=60, random_state=0).fit((users, items))
    >>> seen = set(items[users == 0]); ids, _ = model.recommend(0, n=3)
    >>> bool(set(ids.tolist()) & seen)  # training items are excluded
    False
    """

    _default_lr = None  # lr is always given (its default is 0.2)

    def __init__(
        self,
        k=32,
        loss="logistic",
        lr=0.2,
        l2=0.02,
        n_epochs=30,
        n_negatives=4,
        negative_weight=1.0,
        negative_sampling="uniform",
        tol=None,
        n_iter_no_change=3,
        learning_rate="adagrad",
        biases=True,
        patience=5,
        init_scale=0.5,
        random_state=None,
        n_threads=None,
        grid=None,
        verbose=0,
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
        )
        self.loss = loss
        self.n_negatives = n_negatives
        self.negative_weight = negative_weight
        self.negative_sampling = negative_sampling

    @property
    def _loss(self):
        if self.loss not in LOSSES:
            raise ValueError(
                f"ImplicitMF: loss must be one of {sorted(LOSSES)}, got {self.loss!r}."
            )
        return LOSSES[self.loss]

    def _validated_params(self):
        p = super()._validated_params()
        self._loss  # noqa: B018 (checks the loss name)
        n_negatives = p["n_negatives"]
        if isinstance(n_negatives, bool) or not isinstance(n_negatives, Integral):
            raise TypeError(f"ImplicitMF: n_negatives must be an integer, got {n_negatives!r}.")
        if not 1 <= n_negatives <= 1000:
            raise ValueError(f"ImplicitMF: n_negatives must be in 1..1000, got {n_negatives!r}.")
        weight = p["negative_weight"]
        if isinstance(weight, bool) or not isinstance(weight, Real) or not np.isfinite(weight):
            raise TypeError(f"ImplicitMF: negative_weight must be a finite number, got {weight!r}.")
        if weight <= 0:
            raise ValueError(f"ImplicitMF: negative_weight must be > 0, got {weight!r}.")
        if p["negative_sampling"] not in NEGATIVE_SAMPLING:
            raise ValueError(
                f"ImplicitMF: negative_sampling must be one of {NEGATIVE_SAMPLING}, got "
                f"{p['negative_sampling']!r}."
            )
        return p

    def _sampling(self, params):
        return NegativeSampling(
            params["n_negatives"],
            params["negative_weight"],
            params["negative_sampling"] == "popularity",
        )

    def _encode_input(self, X):
        """Interactions without values, ``(users, items)``, get weight 1 each."""
        if isinstance(X, tuple) and len(X) == 2:
            users = np.asarray(X[0])
            return (X[0], X[1], np.ones(users.shape, dtype=np.float32))
        if isinstance(X, tuple) and len(X) == 3 and X[2] is None:
            return (X[0], X[1], np.ones(np.shape(X[0]), dtype=np.float32))
        return X

    def predict(self, rows, cols, unknown="raise", *, by_index=False):
        """Score each (user, item) pair: ``p_u . q_i + b_i`` (+ ``b_u`` for the logistic loss).

        Higher means more likely to interact; only the order among a user's
        items is meaningful for BPR. Parameters are those of
        :meth:`decision_function`.

        Returns
        -------
        ndarray of float32 with the broadcast shape of ``rows`` and ``cols``
        """
        return self.decision_function(rows, cols, unknown=unknown, by_index=by_index)

    def fold_in(self, X, n_iter=20, *, by_index=False):
        """Compute factors for new users from their interactions, item factors fixed.

        Each new user's row solves the user's part of the training objective
        in expectation over the negatives, by ``n_iter`` Newton steps: for the
        logistic loss, every item the user did not interact with is a negative
        of weight ``n_negatives * negative_weight / n_unobserved`` per
        interaction (the exact expectation of the sampled loss); for BPR, each
        interaction is paired with the same 256 unobserved items drawn with a
        fixed seed (all of them when fewer), weighted to ``n_negatives``.

        Parameters
        ----------
        X : (rows, cols) or (rows, cols, values) tuple, or sparse matrix
            One row per new user (0..n_new-1) over the model's items; values
            are confidence weights (ones if absent). Raw item ids for a model
            fitted on a :class:`fastmf.Dataset` (unless ``by_index``).
        n_iter : int, default=20
        by_index : bool, default=False

        Returns
        -------
        user_factors : ndarray of float32, shape (n_new, k)
        user_bias : ndarray of float32, shape (n_new,)
            Zeros for BPR and without biases. Users with no interactions get zeros.
        """
        self._check_is_fitted()
        if isinstance(X, tuple) and len(X) == 2:
            X = (X[0], X[1], None)
        coo = self._fold_in_input(X, by_index, shown="[values]")
        params = self.get_params()
        n_new, k = coo.shape[0], self.user_factors_.shape[1]
        bpr = self._loss is BPR
        use_bias = bool(params["biases"]) and not bpr
        l2 = float(params["l2"])
        n_negatives, weight = int(params["n_negatives"]), float(params["negative_weight"])
        items = self.item_factors_.astype(np.float64)
        item_bias = self.item_bias_.astype(np.float64)
        if use_bias:
            items = np.hstack([items, np.ones((items.shape[0], 1))])
        solution = np.zeros((n_new, items.shape[1]))
        order = np.argsort(coo.rows, kind="stable")
        bounds = np.searchsorted(coo.rows[order], np.arange(n_new + 1))
        for user in range(n_new):
            entries = order[bounds[user] : bounds[user + 1]]
            if entries.size == 0:
                continue
            positives = coo.cols[entries]
            confidence = coo.values[entries].astype(np.float64)
            unobserved = np.setdiff1d(np.arange(self.n_items_), positives)
            if unobserved.size == 0:
                continue
            if bpr:
                rng = np.random.default_rng(0)
                sample = unobserved
                if sample.size > FOLD_IN_NEGATIVES:
                    sample = rng.choice(unobserved, FOLD_IN_NEGATIVES, replace=False)
                design = (items[positives][:, None, :] - items[sample][None, :, :]).reshape(-1, k)
                offset = (item_bias[positives][:, None] - item_bias[sample][None, :]).ravel()
                pair_weight = np.repeat(confidence * n_negatives / sample.size, sample.size)
                target = np.ones(design.shape[0])
                ridge = l2 * entries.size * n_negatives * np.eye(k)
            else:
                design = np.vstack([items[positives], items[unobserved]])
                offset = np.concatenate([item_bias[positives], item_bias[unobserved]])
                target = np.concatenate([np.ones(entries.size), -np.ones(unobserved.size)])
                negative = n_negatives * weight * entries.size / unobserved.size
                pair_weight = np.concatenate([confidence, np.full(unobserved.size, negative)])
                ridge = l2 * entries.size * (1 + n_negatives) * np.eye(design.shape[1])
            solution[user] = weighted_logistic_solution(
                design, target, pair_weight, offset, ridge, n_iter
            )
        factors = np.ascontiguousarray(solution[:, :k], dtype=np.float32)
        bias = solution[:, k].astype(np.float32) if use_bias else np.zeros(n_new, np.float32)
        return factors, bias
