"""Top-n selection over blocks of scores: recommendation without an m x n matrix."""

import numpy as np

from . import _kernels

# Users scored per block: a block of float32 scores (users x n_items) of at
# most this size. Side by side (bench/test_bench_serving.py, 50k users x 20k
# items, k=32, 1 thread), 8 MiB blocks recommended 1.25x as fast as 64 MiB ones,
# whose products wrote their scores to memory and read them back; 2 MiB blocks
# were slower again (per-block overheads).
_BLOCK_BYTES = 8 * 2**20


def top_n(scores, n):
    """Return per-row top ``n`` (ids, scores) of a 2-D score block, best first.

    ``-inf`` marks excluded entries; rows with fewer than ``n`` candidates are
    padded with id -1 and score -inf. Ties go to the smaller id.
    """
    rows, width = scores.shape
    ids = np.full((rows, n), -1, dtype=np.int64)
    best = np.full((rows, n), -np.inf, dtype=np.float32)
    if width == 0:
        return ids, best
    take = min(n, width)
    candidates = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    for r in range(rows):
        row = scores[r]
        # argpartition is not stable: widen to every entry tied with the cut-off.
        threshold = row[candidates[r]].min()
        pool = np.flatnonzero(row >= threshold) if np.isfinite(threshold) else candidates[r]
        pool = pool[np.isfinite(row[pool])]
        order = np.lexsort((pool, -row[pool]))[:take]
        chosen = pool[order]
        ids[r, : chosen.size] = chosen
        best[r, : chosen.size] = row[chosen]
    return ids, best


def recommend_block_size(n_items):
    """Users per scoring block, so that one block of scores stays under 8 MiB."""
    return max(1, min(1024, _BLOCK_BYTES // (4 * max(n_items, 1))))


_NO_SEEN = np.zeros(1, dtype=np.int64)


def best_of_blocks(queries, n, score_block, n_candidates, item_bias=None, offsets=None,
                   seen=None):  # fmt: skip
    """Top ``n`` candidates for every query, one block of queries at a time.

    ``score_block(block_queries)`` returns the float32 score block (queries x
    all candidates; it is overwritten). The compiled pass adds ``item_bias``
    (per candidate) and ``offsets`` (per query), drops the CSR ``seen``
    candidates of each query (``(indptr, items)``, indexed by the query id)
    and selects, best first, ties to the smaller id, padding with id -1 and
    score -inf. The selection runs on the calling thread (the products use
    BLAS's threads; numba's threads beside them made 2-thread runs slower).

    Returns
    -------
    ids : ndarray of int64, shape (len(queries), n)
    scores : ndarray of float32, shape (len(queries), n)
    """
    ids = np.empty((queries.size, n), dtype=np.int64)
    scores = np.empty((queries.size, n), dtype=np.float32)
    if n == 0 or queries.size == 0:
        return ids, scores
    if item_bias is None:
        item_bias = np.zeros(n_candidates, dtype=np.float32)
    if offsets is None:
        offsets = np.zeros(queries.size, dtype=np.float32)
    indptr, items = seen if seen is not None else (_NO_SEEN, _NO_SEEN)
    step = recommend_block_size(n_candidates)
    for start in range(0, queries.size, step):
        block_queries = queries[start : start + step]
        _kernels.select_top_n(
            score_block(block_queries),
            item_bias,
            offsets[start : start + step],
            block_queries,
            indptr,
            items,
            seen is not None,
            ids[start : start + step],
            scores[start : start + step],
        )
    return ids, scores
