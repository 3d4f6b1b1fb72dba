"""Cosine similarity between embeddings, and top-n neighbours without an n x n matrix."""

import numpy as np
import scipy.sparse as sp

__all__ = ["cosine_similarity"]


def cosine_similarity(A, B=None):
    """Cosine similarity between the rows of ``A`` and the rows of ``B``.

    Matches :func:`sklearn.metrics.pairwise.cosine_similarity`: a row of zeros
    has similarity 0 with everything (not NaN), float32 input gives float32
    output, and anything else gives float64.

    Parameters
    ----------
    A : array_like or scipy.sparse matrix of shape (n_a, d)
    B : array_like or scipy.sparse matrix of shape (n_b, d), optional
        Defaults to ``A``.

    Returns
    -------
    ndarray of shape (n_a, n_b)
        ``S[i, j] = A[i] . B[j] / (|A[i]| |B[j]|)``, or 0 where either norm is 0.
    """
    A_unit = _unit_rows(A, "A")
    B_unit = A_unit if B is None else _unit_rows(B, "B")
    if A_unit.shape[1] != B_unit.shape[1]:
        raise ValueError(
            f"A and B must have the same number of columns; got {A_unit.shape[1]} "
            f"and {B_unit.shape[1]}."
        )
    out = A_unit @ B_unit.T
    if sp.issparse(out):
        out = out.toarray()
    return np.asarray(out)


# Above this n the all-pairs pass's per-worker lists (threads x rows x n) cost
# more memory than the halved arithmetic is worth; such batches score each query.
ALL_PAIRS_MAX_N = 100


def top_similar(factors, ids, n, single=False, n_threads=1):
    """Return, for each row in ``ids``, the ``n`` most cosine-similar other rows.

    One compiled pass scores each query's unit row against all unit rows and
    keeps the best ``n`` (:func:`fastmf._ranking.best_items`, a row never
    being its own neighbour): no (rows x rows) matrix is built. A batch of at
    least half the rows (and ``n <= 100``) instead takes every row's
    neighbours from one pass that scores each pair of rows once
    (:func:`fastmf._ranking.best_neighbours`); the result is the same bits.

    Parameters
    ----------
    factors : ndarray of float32, shape (n_rows, k)
    ids : ndarray of int64, shape (n_queries,), valid rows
    n : int, at least 0 and at most ``n_rows - 1``
    single : bool
        Return 1-D arrays for a single query.
    n_threads : int, default=1
        numba threads to split the queries among.

    Returns
    -------
    ids : ndarray of int64, shape (n_queries, n) (or (n,))
        Most similar first; ties broken by the smaller id.
    scores : ndarray of float32, same shape
    """
    from ._ranking import best_items, best_neighbours

    unit = np.ascontiguousarray(_unit_rows(factors, "factors"), dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if 0 < n <= ALL_PAIRS_MAX_N and 2 * ids.size >= unit.shape[0]:
        # Half the rows or more: every row's neighbours, each pair scored once,
        # cost no more than scoring the queries alone (the same bits).
        all_ids, all_scores = best_neighbours(unit, n, n_threads)
        out_ids, out_scores = all_ids[ids], all_scores[ids]
    else:
        rows = np.arange(unit.shape[0], dtype=np.int64)
        itself = (np.arange(unit.shape[0] + 1, dtype=np.int64), rows)  # each row excludes itself
        out_ids, out_scores = best_items(unit, ids, unit, n, seen=itself, n_threads=n_threads)
    return (out_ids[0], out_scores[0]) if single else (out_ids, out_scores)


def _unit_rows(X, name):
    if sp.issparse(X):
        X = sp.csr_array(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers; got dtype {X.dtype}.")
        if X.dtype != np.float32:
            X = X.astype(np.float64)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.diags_array(scale.astype(X.dtype)) @ X
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D; got shape {X.shape}.")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {X.dtype}.")
    if X.dtype != np.float32:
        X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
