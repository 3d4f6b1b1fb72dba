"""Splitting ratings for evaluation: random or per-user holdout, K folds, cross-validation."""

from numbers import Integral, Real

import numpy as np

from ._validation import check_coo, check_random_state

__all__ = ["KFold", "cross_validate", "train_test_split"]


def _triplets(X, shape):
    coo = check_coo(X, shape, duplicates="raise")
    return coo.rows, coo.cols, coo.values, coo.shape


def _take(rows, cols, values, mask):
    return rows[mask], cols[mask], values[mask]


def train_test_split(
    X, test_size=0.1, *, by="entry", last_n=None, order=None, shape=None, random_state=None
):
    """Split observed entries into train and test triplets.

    Parameters
    ----------
    X : array_like, scipy.sparse matrix, or (rows, cols, values) tuple
        The observations, as accepted by ``fit``.
    test_size : float in (0, 1), default=0.1
        Fraction of entries (``by="entry"``) or of each user's entries
        (``by="user"``, rounded down, keeping at least one for training) held out.
    by : {"entry", "user"}, default="entry"
        Hold out random entries, or a fraction of every user's entries.
    last_n : int, optional
        With ``by="user"``: hold out each user's last ``last_n`` entries by
        ``order`` instead of a random fraction (users keep at least one entry).
    order : array_like, shape (nnz,), optional
        Sort key for ``last_n`` (e.g. timestamps), aligned with the triplets.
    shape : tuple, optional
        As in ``fit``, for triplets.
    random_state : None, int, or Generator

    Returns
    -------
    train, test : tuples (rows, cols, values)
        Fit with ``model.fit(train, shape=...)``; both use the input's ids.
    """
    rows, cols, values, _ = _triplets(X, shape)
    nnz = rows.size
    if not (isinstance(test_size, Real) and 0 < test_size < 1):
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}.")
    rng = check_random_state(random_state)
    if by == "entry":
        if last_n is not None:
            raise ValueError("last_n needs by='user'.")
        is_test = np.zeros(nnz, dtype=bool)
        is_test[rng.permutation(nnz)[: int(round(test_size * nnz))]] = True
    elif by == "user":
        if last_n is not None:
            if order is None:
                raise ValueError("last_n needs order= (e.g. timestamps) to define 'last'.")
            order = np.asarray(order)
            if order.shape != (nnz,):
                raise ValueError(f"order must have one key per entry ({nnz}); got {order.shape}.")
            if isinstance(last_n, bool) or not isinstance(last_n, Integral) or last_n < 1:
                raise ValueError(f"last_n must be a positive integer, got {last_n!r}.")
            key = order
        else:
            key = rng.random(nnz)
        # Rank each user's entries: by key within user (last = largest key).
        sort = np.lexsort((key, rows))
        user_sorted = rows[sort]
        starts = np.searchsorted(user_sorted, user_sorted, side="left")
        ends = np.searchsorted(user_sorted, user_sorted, side="right")
        counts = ends - starts
        rank_from_end = ends - 1 - np.arange(nnz)
        if last_n is not None:
            held = np.minimum(last_n, counts - 1)
        else:
            held = np.floor(test_size * counts).astype(np.int64)
            held = np.minimum(held, counts - 1)
        is_test = np.zeros(nnz, dtype=bool)
        is_test[sort] = rank_from_end < held
    else:
        raise ValueError(f"by must be 'entry' or 'user', got {by!r}.")
    return _take(rows, cols, values, ~is_test), _take(rows, cols, values, is_test)


class KFold:
    """K-fold cross-validation over observed entries.

    Parameters
    ----------
    n_splits : int, default=5
    shuffle : bool, default=True
        Shuffle entries before cutting folds (entries in input order otherwise).
    random_state : None, int, or Generator
    """

    def __init__(self, n_splits=5, shuffle=True, random_state=None):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def split(self, X, shape=None):
        """Yield ``(train, test)`` triplet tuples, each entry in exactly one test fold."""
        if (
            isinstance(self.n_splits, bool)
            or not isinstance(self.n_splits, Integral)
            or (self.n_splits < 2)
        ):
            raise ValueError(f"n_splits must be an integer >= 2, got {self.n_splits!r}.")
        rows, cols, values, _ = _triplets(X, shape)
        if rows.size < self.n_splits:
            raise ValueError(f"Cannot cut {rows.size} entries into {self.n_splits} folds.")
        positions = np.arange(rows.size)
        if self.shuffle:
            positions = check_random_state(self.random_state).permutation(rows.size)
        for fold in np.array_split(positions, self.n_splits):
            is_test = np.zeros(rows.size, dtype=bool)
            is_test[fold] = True
            yield _take(rows, cols, values, ~is_test), _take(rows, cols, values, is_test)


def cross_validate(model, X, metrics, cv=5, shape=None):
    """Fit a fresh copy of ``model`` on each training fold and score its test fold.

    Parameters
    ----------
    model : MatrixFactorization
        Its hyperparameters are copied (``get_params``); ``model`` itself is not fitted.
    X : array_like, scipy.sparse matrix, or (rows, cols, values) tuple
    metrics : dict of name -> callable(fitted_model, test_triplets) -> float
        For instance ``{"rmse": lambda m, t: fastmf.metrics.rmse(t[2], m.predict(t[0], t[1]))}``
        or ``{"ndcg": lambda m, t: fastmf.metrics.ndcg_at_k(m, t, k=10)}``.
    cv : int or KFold, default=5
    shape : tuple, optional
        The full (n_users, n_items); defaults to the input's.

    Returns
    -------
    dict of name -> ndarray of shape (n_splits,)
    """
    rows, cols, values, full_shape = _triplets(X, shape)
    splitter = KFold(cv, random_state=0) if isinstance(cv, Integral) else cv
    scores = {name: [] for name in metrics}
    for train, test in splitter.split((rows, cols, values), full_shape):
        fitted = type(model)(**model.get_params()).fit(train, shape=full_shape)
        for name, metric in metrics.items():
            scores[name].append(metric(fitted, test))
    return {name: np.asarray(values_) for name, values_ in scores.items()}
