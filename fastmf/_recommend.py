"""What a fitted model does with users and items: recommend, find neighbours, fold in."""

from numbers import Integral

import numpy as np

from ._jit import resolve_threads
from ._ranking import best_items
from ._validation import check_index, check_pairs, repeated_pairs
from .similarity import cosine_similarity, top_similar


class RecommenderMixin:
    """Methods of a fitted :class:`fastmf.MatrixFactorization` that use its factors.

    They need ``user_factors_``, ``item_factors_``, ``user_bias_``,
    ``item_bias_``, ``global_mean_``, ``seen_indptr_``/``seen_items_`` and
    ``_check_is_fitted``, ``_check_input``, ``_loss`` from the model class.
    """

    # --------------------------------------------------------- recommendation
    def recommend(self, users, n=10, exclude_seen=True, items=None, *, by_index=False):
        """Recommend the ``n`` highest-scoring items for one user or a batch.

        Scoring, biases, the exclusion of seen items and the top-``n``
        selection run in one compiled pass (4 users against 256 items at a
        time, the users split among ``n_threads`` threads), so no (users x
        items) matrix is ever held, and a user's result is the same bits in
        any batch and on any thread count (``items`` restricts the pass to
        those items).

        Parameters
        ----------
        users : int, str or array_like
            One user id, or a 1-D batch of them: raw ids for a model fitted on
            a :class:`fastmf.Dataset`, else indices.
        n : int, default=10
        exclude_seen : bool, default=True
            Leave out the items each user rated in training (remembered by
            ``fit`` and saved with the model).
        items : array_like, optional
            Only recommend among these item ids (raw ids or indices, as ``users``).
        by_index : bool, default=False
            Take and return indices (0..n-1) even for a model fitted on a
            Dataset.

        Returns
        -------
        ids : ndarray
            Item ids of the kind given (raw ids or int64 indices). Shape (n,)
            for one user, (len(users), n) for a batch; best first, ties to the
            smaller index. ``n`` is capped at the number of candidate
            items (0 for ``items=[]``); users with fewer than ``n`` unseen
            candidates are padded with id -1 (-1 or "" for raw ids: the score
            is -inf there).
        scores : ndarray of float32
            The matching scores (as :meth:`decision_function`), padded with -inf.
        """
        self._check_is_fitted()
        n = _check_n(n)
        single = np.ndim(users) == 0
        user_ids = self._to_index(np.atleast_1d(np.asarray(users)), "user", by_index)
        if user_ids.ndim != 1:
            raise ValueError(
                f"users must be an id or a 1-D array of ids; got shape {user_ids.shape}."
            )
        user_ids, _, _ = check_pairs(
            user_ids, np.zeros_like(user_ids, dtype=np.int64), (self.n_users_, self.n_items_)
        )
        item_factors, item_bias = self.item_factors_, self.item_bias_
        seen = (self.seen_indptr_, self.seen_items_) if exclude_seen else None
        query_factors, queries = self.user_factors_, user_ids
        if items is not None:
            items = self._to_index(np.asarray(items), "item", by_index)
            candidates = np.unique(
                check_pairs(
                    np.zeros(np.size(items), dtype=np.int64), items, (self.n_users_, self.n_items_)
                )[1]
            )
            item_factors, item_bias = self.item_factors_[candidates], self.item_bias_[candidates]
            # The pass then sees only the candidates: the queries' own rows, and
            # their seen items as positions among the candidates.
            seen = self._seen_candidates(user_ids, candidates) if exclude_seen else None
            query_factors = self.user_factors_[user_ids]
            queries = np.arange(user_ids.size, dtype=np.int64)
        ids, scores = best_items(
            query_factors,
            queries,
            item_factors,
            min(n, item_factors.shape[0]),  # never more slots than candidate items
            item_bias=item_bias,
            offsets=(self.user_bias_[user_ids] + np.float32(self.global_mean_)).astype(np.float32),
            seen=seen,
            n_threads=self._serving_threads(),
        )
        if items is not None:
            ids = np.where(ids >= 0, candidates[np.maximum(ids, 0)], -1)
        ids = self._to_raw(ids, "item", by_index)
        return (ids[0], scores[0]) if single else (ids, scores)

    def _seen_candidates(self, user_ids, candidates):
        """Each queried user's training items as positions in ``candidates`` (CSR per query)."""
        position = np.full(self.n_items_, -1, dtype=np.int64)
        position[candidates] = np.arange(candidates.size)
        starts = self.seen_indptr_[user_ids]
        lengths = self.seen_indptr_[user_ids + 1] - starts
        first = np.cumsum(lengths) - lengths  # where each query's items start in the gather
        gathered = np.arange(lengths.sum()) + np.repeat(starts - first, lengths)
        mapped = position[self.seen_items_[gathered]]
        kept = mapped >= 0
        owner = np.repeat(np.arange(user_ids.size), lengths)[kept]
        indptr = np.zeros(user_ids.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=user_ids.size), out=indptr[1:])
        return indptr, mapped[kept]

    def _serving_threads(self):
        """Threads for recommend and similar_*: the model's ``n_threads`` (None = all cores)."""
        return resolve_threads(getattr(self, "n_threads", 1))

    # ------------------------------------------------------------ id kinds
    def _id_map(self, what, by_index):
        """Return the raw-id map of ``what`` ("user" or "item"), or None for indices."""
        if by_index:
            return None
        return getattr(self, f"{what}_map_", None)

    def _to_index(self, ids, what, by_index):
        """Map the ids a caller gave (raw or indices) to indices, naming unknown raw ids."""
        id_map = self._id_map(what, by_index)
        if id_map is None:
            return ids
        try:
            return id_map.to_index(ids)
        except (TypeError, ValueError) as error:
            raise type(error)(
                f"{what}s: {error} This model takes raw ids (it was fitted on a Dataset); "
                "pass by_index=True to give indices."
            ) from None

    def _to_raw(self, indices, what, by_index):
        """Map indices to the caller's kind of id; -1 (padding) becomes -1 or ""."""
        id_map = self._id_map(what, by_index)
        if id_map is None:
            return indices
        raw = id_map.ids_[np.maximum(indices, 0)]
        padding = "" if id_map.ids_.dtype.kind == "U" else -1
        return np.where(indices >= 0, raw, np.array(padding, dtype=raw.dtype))

    # ------------------------------------------------------ new users and data
    def fold_in(self, X, n_iter=20, *, by_index=False):
        """Compute factors for new users from their ratings, item factors fixed.

        No refit: each new user's factor row (and bias) solves its own part
        of the training objective with the items' factors and biases held
        fixed — in closed form (ridge regression) for the squared loss, by
        ``n_iter`` Newton steps for the logistic loss.

        Parameters
        ----------
        X : (rows, cols, values) tuple, sparse matrix or dense array
            One row per new user (row ids 0..n_new-1) over the model's items.
            For a model fitted on a :class:`fastmf.Dataset` give triplets whose
            ``cols`` are raw item ids (unless ``by_index``).
        n_iter : int, default=20
            Newton steps (logistic loss only).
        by_index : bool, default=False
            Item ids are indices even for a model fitted on a Dataset.

        Returns
        -------
        user_factors : ndarray of float32, shape (n_new, k)
        user_bias : ndarray of float32, shape (n_new,)
            Zeros for a model without biases. Users with no ratings get zeros.
        """
        self._check_is_fitted()
        coo = self._fold_in_input(X, by_index)
        n_new, k = coo.shape[0], self.user_factors_.shape[1]
        use_bias = bool(self.get_params()["biases"])
        l2 = float(self.get_params()["l2"])
        design = self.item_factors_.astype(np.float64)
        if use_bias:
            design = np.hstack([design, np.ones((design.shape[0], 1))])
        offset = self.item_bias_.astype(np.float64) + self.global_mean_
        solution = np.zeros((n_new, design.shape[1]))
        order = np.argsort(coo.rows, kind="stable")
        bounds = np.searchsorted(coo.rows[order], np.arange(n_new + 1))
        for user in range(n_new):
            entries = order[bounds[user] : bounds[user + 1]]
            if entries.size == 0:
                continue
            Z = design[coo.cols[entries]]
            target = coo.values[entries].astype(np.float64)
            base = offset[coo.cols[entries]]
            ridge = l2 * entries.size * np.eye(Z.shape[1])  # per-observation penalty
            solution[user] = self._loss.fold_in(Z, target, base, ridge, n_iter)
        factors = np.ascontiguousarray(solution[:, :k], dtype=np.float32)
        bias = solution[:, k].astype(np.float32) if use_bias else np.zeros(n_new, np.float32)
        return factors, bias

    def _fold_in_input(self, X, by_index, shown="values"):
        """``fold_in``'s checked COO of new users over the model's items (raw item ids mapped)."""
        if self._id_map("item", by_index) is not None:
            if not (isinstance(X, tuple) and len(X) == 3):
                raise TypeError(
                    "This model takes raw item ids (it was fitted on a Dataset): pass "
                    f"fold_in((new_user_rows, raw_item_ids, {shown})), or by_index=True."
                )
            X = (X[0], self._to_index(np.asarray(X[1]), "item", False), X[2])
        coo = self._check_input(X, None, "raise")
        if coo.shape[1] > self.n_items_:
            raise ValueError(
                f"item id {coo.shape[1] - 1} is out of range: the model has {self.n_items_} items."
            )
        _check_no_duplicate_pairs(coo)
        return coo

    # ------------------------------------------------------------- similarity
    def user_similarity(self):
        """Cosine similarity between all users: ndarray of float32, shape (n_users, n_users)."""
        self._check_is_fitted()
        return cosine_similarity(self.user_factors_)

    def item_similarity(self):
        """Cosine similarity between all items: ndarray of float32, shape (n_items, n_items)."""
        self._check_is_fitted()
        return cosine_similarity(self.item_factors_)

    def similar_items(self, items, n=10, *, by_index=False):
        """Return the ``n`` items whose factors are most cosine-similar to each given item.

        Parameters
        ----------
        items : int, str or array_like
            One item id, or a 1-D batch of them (raw ids for a model fitted on
            a :class:`fastmf.Dataset`, else indices).
        n : int, default=10
            Capped at ``n_items_ - 1``; an item is never its own neighbour.
        by_index : bool, default=False
            Take and return indices even for a model fitted on a Dataset.

        Returns
        -------
        ids : ndarray, shape (n,) for one item, (len(items), n) for a batch
            Item ids of the kind given, most similar first (ties: smaller index first).
        scores : ndarray of float32, same shape
            Cosine similarities (0 against an all-zero factor row).
        """
        self._check_is_fitted()
        return self._similar(self.item_factors_, items, n, "item", by_index)

    def similar_users(self, users, n=10, *, by_index=False):
        """Return the ``n`` users whose factors are most cosine-similar to each given user.

        Parameters
        ----------
        users : int, str or array_like
            One user id, or a 1-D batch of them (raw ids for a model fitted on
            a :class:`fastmf.Dataset`, else indices).
        n : int, default=10
            Capped at ``n_users_ - 1``; a user is never its own neighbour.
        by_index : bool, default=False
            Take and return indices even for a model fitted on a Dataset.

        Returns
        -------
        ids : ndarray of int64, shape (n,) or (len(users), n)
        scores : ndarray of float32, same shape
        """
        self._check_is_fitted()
        return self._similar(self.user_factors_, users, n, "user", by_index)

    def _similar(self, factors, query, n, what, by_index):
        n = min(_check_n(n), factors.shape[0] - 1)
        single = np.ndim(query) == 0
        if self._id_map(what, by_index) is not None:
            query = self._to_index(np.atleast_1d(np.asarray(query)), what, by_index)
            query = query[0] if single else query
        if isinstance(query, np.ndarray) and single:
            query = query.item()  # a 0-d array, as predict accepts
        if single:
            ids = np.array([check_index(query, factors.shape[0], what)])
        else:
            ids = np.asarray(query)
            if ids.ndim != 1:
                raise ValueError(f"{what}s must be an id or a 1-D array of ids.")
            ids = np.array(
                [check_index(i, factors.shape[0], what) for i in ids.tolist()], dtype=np.int64
            )
        similar, scores = top_similar(factors, ids, n, single, self._serving_threads())
        return self._to_raw(similar, what, by_index), scores


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    return int(n)


def _check_no_duplicate_pairs(coo):
    """Raise ValueError naming a (user, item) pair given twice (fold_in solves per pair)."""
    count, first, _ = repeated_pairs(coo.rows, coo.cols, coo.shape[1])
    if count:
        raise ValueError(
            f"The new users' data gives {count} (user, item) pair(s) more than once, e.g. "
            f"({coo.rows[first]}, {coo.cols[first]}). Keep one rating per pair (sum or take the "
            "last one)."
        )
