"""What a fitted model does with users and items: recommend, find neighbours, fold in."""

from numbers import Integral

import numpy as np

from ._ranking import recommend_block_size, top_n
from ._validation import check_index, check_pairs
from .similarity import cosine_similarity, top_similar


class RecommenderMixin:
    """Methods of a fitted :class:`fastmf.MatrixFactorization` that use its factors.

    They need ``user_factors_``, ``item_factors_``, ``user_bias_``,
    ``item_bias_``, ``global_mean_``, ``seen_indptr_``/``seen_items_`` and
    ``_check_is_fitted``, ``_check_input``, ``_loss`` from the model class.
    """

    # --------------------------------------------------------- recommendation
    def recommend(self, users, n=10, exclude_seen=True, items=None):
        """Recommend the ``n`` highest-scoring items for one user or a batch.

        Scores are computed a block of users at a time (one matrix product
        with the item factors, multi-threaded by BLAS) followed by a partial
        sort, so no (users x items) matrix is ever held whole.

        Parameters
        ----------
        users : int or array_like of int
            One user id, or a 1-D batch of them.
        n : int, default=10
        exclude_seen : bool, default=True
            Leave out the items each user rated in training (remembered by
            ``fit`` and saved with the model).
        items : array_like of int, optional
            Only recommend among these item ids.

        Returns
        -------
        ids : ndarray of int64
            Shape (n,) for one user, (len(users), n) for a batch; best first,
            ties to the smaller id. Users with fewer than ``n`` candidates are
            padded with id -1.
        scores : ndarray of float32
            The matching scores (as :meth:`decision_function`), padded with -inf.
        """
        self._check_is_fitted()
        n = _check_n(n)
        single = np.ndim(users) == 0
        user_ids = np.atleast_1d(np.asarray(users))
        if user_ids.ndim != 1:
            raise ValueError(
                f"users must be an id or a 1-D array of ids; got shape {user_ids.shape}."
            )
        user_ids, _, _ = check_pairs(
            user_ids, np.zeros_like(user_ids, dtype=np.int64), (self.n_users_, self.n_items_)
        )
        if items is None:
            candidates = None
            item_factors, item_bias = self.item_factors_, self.item_bias_
        else:
            candidates = np.unique(
                check_pairs(
                    np.zeros(np.size(items), dtype=np.int64), items, (self.n_users_, self.n_items_)
                )[1]
            )
            item_factors, item_bias = self.item_factors_[candidates], self.item_bias_[candidates]
        ids = np.empty((user_ids.size, n), dtype=np.int64)
        scores = np.empty((user_ids.size, n), dtype=np.float32)
        step = recommend_block_size(item_factors.shape[0])
        for start in range(0, user_ids.size, step):
            block_users = user_ids[start : start + step]
            block = self.user_factors_[block_users] @ item_factors.T
            block += item_bias[None, :]
            block += (self.user_bias_[block_users] + np.float32(self.global_mean_))[:, None]
            if exclude_seen:
                self._mask_seen(block, block_users, candidates)
            block_ids, block_scores = top_n(block, n)
            if candidates is not None:
                block_ids = np.where(block_ids >= 0, candidates[np.maximum(block_ids, 0)], -1)
            ids[start : start + step] = block_ids
            scores[start : start + step] = block_scores
        return (ids[0], scores[0]) if single else (ids, scores)

    def _mask_seen(self, block, block_users, candidates):
        """Set the scores of items each user rated in training to -inf, in place.

        ``block`` columns are all items, or the sorted ``candidates`` ids.
        """
        for row, user in enumerate(block_users):
            seen = self.seen_items_[self.seen_indptr_[user] : self.seen_indptr_[user + 1]]
            if candidates is not None:
                seen = np.flatnonzero(np.isin(candidates, seen, assume_unique=True))
            block[row, seen] = -np.inf

    # ------------------------------------------------------ new users and data
    def fold_in(self, X, n_iter=20):
        """Compute factors for new users from their ratings, item factors fixed.

        No refit: each new user's factor row (and bias) solves its own part
        of the training objective with the items' factors and biases held
        fixed — in closed form (ridge regression) for the squared loss, by
        ``n_iter`` Newton steps for the logistic loss.

        Parameters
        ----------
        X : (rows, cols, values) tuple, sparse matrix or dense array
            One row per new user (row ids 0..n_new-1) over the model's items.
        n_iter : int, default=20
            Newton steps (logistic loss only).

        Returns
        -------
        user_factors : ndarray of float32, shape (n_new, k)
        user_bias : ndarray of float32, shape (n_new,)
            Zeros for a model without biases. Users with no ratings get zeros.
        """
        self._check_is_fitted()
        coo = self._check_input(X, None, "raise")
        if coo.shape[1] > self.n_items_:
            raise ValueError(
                f"item id {coo.shape[1] - 1} is out of range: the model has {self.n_items_} items."
            )
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

    # ------------------------------------------------------------- similarity
    def user_similarity(self):
        """Cosine similarity between all users: ndarray of float32, shape (n_users, n_users)."""
        self._check_is_fitted()
        return cosine_similarity(self.user_factors_)

    def item_similarity(self):
        """Cosine similarity between all items: ndarray of float32, shape (n_items, n_items)."""
        self._check_is_fitted()
        return cosine_similarity(self.item_factors_)

    def similar_items(self, items, n=10):
        """Return the ``n`` items whose factors are most cosine-similar to each given item.

        Parameters
        ----------
        items : int or array_like of int
            One item id, or a 1-D batch of them.
        n : int, default=10
            Capped at ``n_items_ - 1``; an item is never its own neighbour.

        Returns
        -------
        ids : ndarray of int64, shape (n,) for one item, (len(items), n) for a batch
            Most similar first (ties: smaller id first).
        scores : ndarray of float32, same shape
            Cosine similarities (0 against an all-zero factor row).
        """
        self._check_is_fitted()
        return self._similar(self.item_factors_, items, n, "item")

    def similar_users(self, users, n=10):
        """Return the ``n`` users whose factors are most cosine-similar to each given user.

        Parameters
        ----------
        users : int or array_like of int
            One user id, or a 1-D batch of them.
        n : int, default=10
            Capped at ``n_users_ - 1``; a user is never its own neighbour.

        Returns
        -------
        ids : ndarray of int64, shape (n,) or (len(users), n)
        scores : ndarray of float32, same shape
        """
        self._check_is_fitted()
        return self._similar(self.user_factors_, users, n, "user")

    def _similar(self, factors, query, n, what):
        n = min(_check_n(n), factors.shape[0] - 1)
        single = np.ndim(query) == 0
        if single:
            ids = np.array([check_index(query, factors.shape[0], what)])
        else:
            ids = np.asarray(query)
            if ids.ndim != 1:
                raise ValueError(f"{what}s must be an id or a 1-D array of ids.")
            ids = np.array(
                [check_index(i, factors.shape[0], what) for i in ids.tolist()], dtype=np.int64
            )
        return top_similar(factors, ids, n, single)


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    return int(n)
