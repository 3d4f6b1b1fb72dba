"""Evaluation metrics for predictions on held-out entries."""

import numpy as np

__all__ = [
    "log_loss",
    "mae",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "rmse",
    "roc_auc",
]


def _pair(y_true, y_pred):
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length; got {y_true.size} and {y_pred.size}."
        )
    if y_true.size == 0:
        raise ValueError("y_true and y_pred are empty.")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("y_true and y_pred must be finite.")
    return y_true, y_pred


def rmse(y_true, y_pred):
    """Root mean squared error."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def mae(y_true, y_pred):
    """Mean absolute error."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def _binary(y_true):
    positive = y_true > 0
    if not np.all((y_true == 1) | (y_true == 0) | (y_true == -1)):
        raise ValueError("y_true must hold binary labels: -1/+1 or 0/1.")
    return positive


def log_loss(y_true, proba, eps=1e-15):
    """Mean negative log-likelihood of binary labels under ``P(y = +1) = proba``.

    Parameters
    ----------
    y_true : array_like, labels in {-1, +1} or {0, 1}
    proba : array_like, probabilities of the positive label
    eps : float, default=1e-15
        Probabilities are clipped to ``[eps, 1 - eps]``.

    Returns
    -------
    float
    """
    y_true, proba = _pair(y_true, proba)
    positive = _binary(y_true)
    proba = np.clip(proba, eps, 1 - eps)
    return float(-np.mean(np.where(positive, np.log(proba), np.log1p(-proba))))


def roc_auc(y_true, scores):
    """Area under the ROC curve: the chance a random positive outscores a random negative.

    Ties count one half (the Mann-Whitney U statistic).

    Parameters
    ----------
    y_true : array_like, labels in {-1, +1} or {0, 1}
    scores : array_like, any monotone score (logits or probabilities)

    Returns
    -------
    float
    """
    y_true, scores = _pair(y_true, scores)
    positive = _binary(y_true)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative label.")
    from scipy.stats import rankdata  # imported here: scipy.stats costs ~0.4 s at import

    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ----------------------------------------------------------- ranking metrics
def _ranking_hits(model, X_test, k, exclude_seen, threshold):
    """Recommend ``k`` items to every test user; return (hits, n_relevant) per user."""
    from ._validation import check_coo

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    coo = check_coo(_as_indices(model, X_test), (model.n_users_, model.n_items_), duplicates="last")
    relevant = coo.values >= threshold if threshold is not None else np.ones(coo.nnz, bool)
    rows, cols = coo.rows[relevant], coo.cols[relevant]
    if rows.size == 0:
        raise ValueError("X_test has no relevant interactions to rank.")
    users, n_relevant = np.unique(rows, return_counts=True)
    # Indices in and out, also for a model fitted on a Dataset (mapped above).
    by_index = {"by_index": True} if getattr(model, "user_map_", None) is not None else {}
    ids, _ = model.recommend(users, n=k, exclude_seen=exclude_seen, **by_index)
    order = np.argsort(rows, kind="stable")
    starts = np.searchsorted(rows[order], users)
    hits = np.zeros(ids.shape, dtype=bool)
    for row, (start, count) in enumerate(zip(starts, n_relevant)):
        hits[row] = np.isin(ids[row], cols[order[start : start + count]])
    return hits, n_relevant


def _as_indices(model, X_test):
    """Return ``X_test`` as index triplets; a model fitted on a Dataset takes raw ids."""
    from .ids import Dataset

    user_map = getattr(model, "user_map_", None)
    if isinstance(X_test, Dataset):
        if user_map is None:
            raise TypeError("This model was fitted on indices: pass X_test as index triplets.")
        users, items = X_test.user_map.ids_[X_test.rows], X_test.item_map.ids_[X_test.cols]
        values = X_test.values
    elif user_map is not None:
        if not (isinstance(X_test, tuple) and len(X_test) == 3):
            raise TypeError(
                "This model was fitted on a Dataset: pass X_test as a Dataset or as "
                "(raw user ids, raw item ids, values)."
            )
        users, items, values = X_test
    else:
        return X_test
    return model.user_map_.to_index(users), model.item_map_.to_index(items), values


def precision_at_k(model, X_test, k=10, exclude_seen=True, threshold=None):
    """Mean over test users of (relevant items among the top ``k``) / ``k``.

    Parameters
    ----------
    model : fitted MatrixFactorization
    X_test : (rows, cols, values) tuple, sparse matrix, or Dataset
        Held-out interactions; each user's relevant items are its entries
        (with ``values >= threshold`` when a threshold is given). Raw ids (a
        Dataset or raw-id triplets) for a model fitted on a Dataset.
    k : int, default=10
    exclude_seen : bool, default=True
        Rank only items the user did not rate in training.
    threshold : float, optional
        Minimum value of a relevant interaction (e.g. 4 stars, or 1 for +1 labels).

    Returns
    -------
    float
    """
    hits, _ = _ranking_hits(model, X_test, k, exclude_seen, threshold)
    return float(hits.sum(axis=1).mean() / k)


def recall_at_k(model, X_test, k=10, exclude_seen=True, threshold=None):
    """Mean over test users of (relevant items among the top ``k``) / (relevant items).

    Parameters are those of :func:`precision_at_k`.
    """
    hits, n_relevant = _ranking_hits(model, X_test, k, exclude_seen, threshold)
    return float((hits.sum(axis=1) / n_relevant).mean())


def ndcg_at_k(model, X_test, k=10, exclude_seen=True, threshold=None):
    """Mean normalized discounted cumulative gain of the top ``k``, binary relevance.

    ``DCG = sum_j hit_j / log2(j + 2)`` over ranks ``j = 0..k-1``, divided by
    the DCG of a perfect list of ``min(k, relevant)`` hits. Parameters are
    those of :func:`precision_at_k`.
    """
    hits, n_relevant = _ranking_hits(model, X_test, k, exclude_seen, threshold)
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    return float(((hits * discounts).sum(axis=1) / ideal).mean())


def map_at_k(model, X_test, k=10, exclude_seen=True, threshold=None):
    """Mean average precision of the top ``k``.

    Per user: the sum of precision@j over the ranks j that hold a relevant
    item, divided by ``min(k, relevant)``. Parameters are those of
    :func:`precision_at_k`.
    """
    hits, n_relevant = _ranking_hits(model, X_test, k, exclude_seen, threshold)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return float(((precision_at * hits).sum(axis=1) / np.minimum(n_relevant, k)).mean())
