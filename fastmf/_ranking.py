"""Top-n selection in one compiled pass: recommendation without an m x n matrix."""

import numpy as np

from . import _kernels
from ._jit import numba_threads

_NO_SEEN = np.zeros(1, dtype=np.int64)


def best_items(query_factors, queries, item_factors, n, item_bias=None, offsets=None, seen=None,
               n_threads=1):  # fmt: skip
    """Top ``n`` items for every query by ``(p . q + item_bias) + offset``, in one compiled pass.

    ``query_factors[queries]`` are the queries' rows; the pass
    (:func:`fastmf._kernels.score_top_n`) scores a group of 4 queries against
    a tile of items at a time, adds ``item_bias`` (per item) and ``offsets``
    (per query), drops the CSR ``seen`` items of each query (``(indptr,
    items)``, indexed by the query id) and selects, best first, ties to the
    smaller id, padding with id -1 and score -inf. No BLAS and no score matrix:
    the queries are split among ``n_threads`` of numba's threads, and each
    query's result is the same bits in any batch and on any thread count.

    Returns
    -------
    ids : ndarray of int64, shape (len(queries), n)
    scores : ndarray of float32, shape (len(queries), n)
    """
    ids = np.empty((queries.size, n), dtype=np.int64)
    scores = np.empty((queries.size, n), dtype=np.float32)
    if n == 0 or queries.size == 0:
        return ids, scores
    n_items = item_factors.shape[0]
    if item_bias is None:
        item_bias = np.zeros(n_items, dtype=np.float32)
    if offsets is None:
        offsets = np.zeros(queries.size, dtype=np.float32)
    indptr, items = seen if seen is not None else (_NO_SEEN, _NO_SEEN)
    arguments = (
        np.ascontiguousarray(query_factors, dtype=np.float32),
        np.ascontiguousarray(queries, dtype=np.int64),
        np.ascontiguousarray(item_factors.T, dtype=np.float32),
        np.ascontiguousarray(item_bias, dtype=np.float32),
        np.ascontiguousarray(offsets, dtype=np.float32),
        indptr,
        items,
        seen is not None,
        ids,
        scores,
    )
    # A batch of one chunk runs serially without asking for numba's thread pool
    # (starting it would make forked children of this process fall back to one thread).
    wanted = n_threads if queries.size > _kernels.CHUNK_QUERIES else 1
    with numba_threads(wanted) as threads:
        if threads > 1:
            _kernels.score_top_n_parallel(*arguments)
        else:
            _kernels.score_top_n(*arguments)
    return ids, scores


def best_neighbours(unit, n, n_threads=1):
    """Top ``n`` other rows of every row of ``unit`` by dot product, scoring each pair once.

    The pass (:func:`fastmf._kernels.neighbours_top_n`) scores each pair of
    tiles of rows once and offers the scores to both tiles' rows: half the
    multiply-adds of :func:`best_items` over all rows, with the same result
    bits (a row itself excluded, best first, ties to the smaller id). On
    several threads each worker keeps its own lists (``threads x n_rows x n``
    more memory) that are merged at the end.

    Returns
    -------
    ids : ndarray of int64, shape (n_rows, n)
    scores : ndarray of float32, shape (n_rows, n)
    """
    n_rows = unit.shape[0]
    ids = np.empty((n_rows, n), dtype=np.int64)
    scores = np.empty((n_rows, n), dtype=np.float32)
    unit = np.ascontiguousarray(unit, dtype=np.float32)
    unit_t = np.ascontiguousarray(unit.T)
    tiles = -(-n_rows // _kernels.SCORE_TILE)
    pair_a, pair_b = (np.ascontiguousarray(side, dtype=np.int64) for side in np.triu_indices(tiles))
    with numba_threads(n_threads if tiles > 1 else 1) as threads:
        if threads > 1:
            bounds = np.linspace(0, pair_a.size, threads + 1).round().astype(np.int64)
            worker_ids = np.empty((threads, n_rows, n), dtype=np.int64)
            worker_scores = np.empty((threads, n_rows, n), dtype=np.float32)
            worker_floors = np.empty((threads, n_rows), dtype=np.float32)
            _kernels.neighbours_top_n_parallel(
                unit, unit_t, pair_a, pair_b, bounds, worker_ids, worker_scores, worker_floors,
                ids, scores,
            )  # fmt: skip
        else:
            _kernels.neighbours_top_n(unit, unit_t, pair_a, pair_b, ids, scores)
    return ids, scores
