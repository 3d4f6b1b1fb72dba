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


def top_similar(factors, index, n):
    """Return the ``n`` rows most cosine-similar to row ``index``, excluding itself.

    Costs one matrix-vector product: no (rows x rows) matrix is built.

    Parameters
    ----------
    factors : ndarray of float32, shape (n_rows, k)
    index : int, a valid row
    n : int, at least 1; capped at ``n_rows - 1``

    Returns
    -------
    ids : ndarray of int64, shape (min(n, n_rows - 1),)
        Most similar first; ties broken by the smaller id.
    scores : ndarray of float32, same shape
    """
    n = min(n, factors.shape[0] - 1)
    norms = np.linalg.norm(factors, axis=1)
    scores = factors @ factors[index]
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(norms > 0, scores / (norms * norms[index]), 0.0).astype(np.float32)
    if norms[index] == 0:
        scores[:] = 0.0
    scores[index] = -np.inf
    if n <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    candidates = np.argpartition(-scores, n - 1)[:n] if n < scores.shape[0] else np.arange(n)
    # argpartition is not stable: widen to every row tied with the n-th score
    # so the tie-break by id below is exact.
    threshold = scores[candidates].min()
    candidates = np.flatnonzero(scores >= threshold)
    ranked = candidates[np.lexsort((candidates, -scores[candidates]))][:n]
    return ranked.astype(np.int64), scores[ranked]


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
