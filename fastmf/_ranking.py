"""Top-n selection over blocks of scores: recommendation without an m x n matrix."""

import numpy as np

# Users scored per block: BLOCK_USERS x n_items float32 scores at a time
# (256 x 1M items = 1 GiB would be too much, so the block shrinks with n_items).
_BLOCK_BYTES = 64 * 2**20


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
    """Users per scoring block, so that one block of scores stays under 64 MiB."""
    return max(1, min(1024, _BLOCK_BYTES // (4 * max(n_items, 1))))
