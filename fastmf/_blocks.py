"""The block layout that every fit trains on: grid, relabeling, storage order, schedule.

Users and items are relabeled by a seeded random permutation (so that every
block gets a fair share of popular users and items), cut into ``grid`` stripes
each, and the ratings are stored once per fit in block order: block
``(bu, bi)`` holds the ratings of user stripe ``bu`` and item stripe ``bi``,
contiguously. Within a block the entries are first sorted by (user, item),
which canonicalizes the input (any format or entry order gives the same
layout) and exposes duplicate pairs, then shuffled with a per-block seed.

An epoch visits the grid in ``grid`` strata; a stratum holds one block of each
user stripe and each item stripe, so its blocks can run in parallel without
races or locks. Each epoch draws a new order of strata and a new pairing of
stripes (O(grid) random numbers instead of a permutation of all ratings).
Because a block is always run start to end by a single thread, the result is
the same for any number of threads.
"""

import math
from dataclasses import dataclass

import numpy as np

from ._jit import kernel

# A block's factor rows should stay in a core's L2 cache while it runs: the
# rows of one user stripe plus one item stripe are kept under this budget
# (half of a typical 1 MiB L2, leaving room for the streamed ratings).
CACHE_BUDGET_BYTES = 512 * 1024
# ...but a block must have enough ratings to amortize its start-up.
MIN_RATINGS_PER_BLOCK = 2048
# Below this many blocks per stratum, threads would idle waiting for stragglers.
MIN_PARALLEL_GRID = 16

_DUPLICATE_CODES = {"raise": 0, "sum": 1, "last": 2}


@dataclass(frozen=True)
class BlockLayout:
    """Ratings stored in block order, with relabeled ids.

    Attributes
    ----------
    rows, cols : ndarray of int32 (int64 for huge dimensions), shape (nnz,)
        Internal (relabeled) user and item ids.
    values : ndarray of float32, shape (nnz,)
    block_offsets : ndarray of int64, shape (grid * grid + 1,)
        Block ``bu * grid + bi`` holds entries ``block_offsets[b]:block_offsets[b + 1]``.
    grid : int
    user_perm, item_perm : ndarray of int64
        Internal id -> original id (``user_perm[u_internal] = u_original``).
    user_counts, item_counts : ndarray of float64
        Ratings per internal user / item.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    block_offsets: np.ndarray
    grid: int
    user_perm: np.ndarray
    item_perm: np.ndarray
    user_counts: np.ndarray
    item_counts: np.ndarray

    @property
    def nnz(self):
        """Number of stored ratings."""
        return self.rows.shape[0]


def choose_grid(n_users, n_items, nnz, k):
    """Pick the number of stripes per side from the data size and the rank.

    Depends only on the data and ``k``, never on the thread count, so that the
    schedule (and the result) is the same on 1 or many threads.
    """
    by_cache = math.ceil((n_users + n_items) * k * 4 / CACHE_BUDGET_BYTES)
    largest = max(1, math.isqrt(nnz // MIN_RATINGS_PER_BLOCK))
    return max(1, min(largest, max(by_cache, MIN_PARALLEL_GRID)))


def arrange(coo, grid, rng, duplicates="raise"):
    """Store checked COO data in block order; one copy of the triplets.

    Parameters
    ----------
    coo : fastmf._validation.Coo
        Checked triplets, any order, possibly with duplicate pairs.
    grid : int
        Stripes per side.
    rng : numpy.random.Generator
        Draws the relabeling and the per-block shuffle seeds.
    duplicates : {"raise", "sum", "last"}

    Returns
    -------
    BlockLayout

    Raises
    ------
    ValueError
        On a duplicate (row, col) pair when ``duplicates="raise"``.
    """
    m, n = coo.shape
    user_perm = rng.permutation(m)
    item_perm = rng.permutation(n)
    user_new = inverse_permutation(user_perm)
    item_new = inverse_permutation(item_perm)
    n_blocks = grid * grid

    counts = np.zeros(n_blocks, dtype=np.int64)
    _count_blocks(coo.rows, coo.cols, user_new, item_new, grid, m, n, counts)
    offsets = np.zeros(n_blocks + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    index_dtype = np.int32 if max(m, n) <= np.iinfo(np.int32).max else np.int64
    rows = np.empty(coo.nnz, dtype=index_dtype)
    cols = np.empty(coo.nnz, dtype=index_dtype)
    values = np.empty(coo.nnz, dtype=np.float32)
    _scatter_blocks(coo.rows, coo.cols, coo.values, user_new, item_new, grid, m, n,
                    offsets[:-1].copy(), rows, cols, values)

    seeds = rng.integers(0, np.iinfo(np.int64).max, size=n_blocks, dtype=np.int64)
    lengths = np.empty(n_blocks, dtype=np.int64)
    duplicate_info = np.zeros(3, dtype=np.int64)  # count, first user, first item (internal)
    _canonicalize_blocks(rows, cols, values, offsets, n, seeds, _DUPLICATE_CODES[duplicates],
                         lengths, duplicate_info)
    n_duplicates = int(duplicate_info[0])
    if n_duplicates:
        if duplicates == "raise":
            first = (int(user_perm[duplicate_info[1]]), int(item_perm[duplicate_info[2]]))
            raise ValueError(
                f"The input gives {n_duplicates} (row, col) pair(s) more than once, e.g. "
                f"{first}. Remove the duplicates, or pass duplicates='sum' or "
                "duplicates='last'."
            )
        keep = np.concatenate([np.arange(offsets[b], offsets[b] + lengths[b])
                               for b in range(n_blocks)])
        rows, cols, values = rows[keep], cols[keep], values[keep]
        offsets = np.zeros(n_blocks + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if not np.isfinite(values).all():
            raise ValueError(
                "Summing duplicate entries overflowed float32; rescale the values or use "
                "duplicates='last'."
            )
    return BlockLayout(
        rows, cols, values, offsets, grid, user_perm, item_perm,
        np.bincount(rows, minlength=m).astype(np.float64),
        np.bincount(cols, minlength=n).astype(np.float64),
    )


def epoch_schedule(grid, rng):
    """Draw one epoch's block schedule: int64 array (grid strata, grid slots).

    Stratum ``s`` runs blocks ``(b, columns[(b + strata[s]) % grid])`` for every
    user stripe ``b``: every block exactly once per epoch, no two blocks of a
    stratum in the same user or item stripe.
    """
    strata = rng.permutation(grid)
    columns = rng.permutation(grid)
    slots = np.arange(grid)
    return (slots[None, :] * grid + columns[(slots[None, :] + strata[:, None]) % grid]).astype(
        np.int64
    )


def inverse_permutation(permutation):
    """Return the inverse of a permutation array (int64)."""
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.shape[0])
    return inverse


@kernel
def _stripe(index, grid, size):
    return (np.int64(index) * grid) // size


@kernel
def _count_blocks(rows, cols, user_new, item_new, grid, m, n, counts):
    """Count the ratings of each block into ``counts`` (int64, shape (grid * grid,))."""
    for idx in range(rows.shape[0]):
        bu = _stripe(user_new[rows[idx]], grid, m)
        bi = _stripe(item_new[cols[idx]], grid, n)
        counts[bu * grid + bi] += 1


@kernel
def _scatter_blocks(rows, cols, values, user_new, item_new, grid, m, n, cursor,
                    out_rows, out_cols, out_values):
    """Copy every rating to its block, relabeled, keeping input order within a block.

    ``cursor`` (int64, shape (grid * grid,)) starts at each block's offset and
    is advanced in place; ``out_*`` are filled in place.
    """
    for idx in range(rows.shape[0]):
        u = user_new[rows[idx]]
        i = item_new[cols[idx]]
        block = _stripe(u, grid, m) * grid + _stripe(i, grid, n)
        position = cursor[block]
        out_rows[position] = u
        out_cols[position] = i
        out_values[position] = values[idx]
        cursor[block] = position + 1


@kernel
def _splitmix64(state):
    """Advance a splitmix64 generator: return ``(new_state, random uint64)``."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@kernel
def _canonicalize_blocks(rows, cols, values, offsets, n_items, seeds, policy, lengths,
                         duplicate_info):
    """Sort each block by (user, item), resolve duplicates, then shuffle it with its seed.

    ``policy``: 0 counts duplicates (the caller raises), 1 sums them, 2 keeps
    the last one given. Block ``b`` keeps its first ``lengths[b]`` entries
    (fewer than before only when duplicates were merged). ``duplicate_info``
    receives (count, internal user, internal item) of the first duplicate.
    Arrays are updated in place.
    """
    for block in range(offsets.shape[0] - 1):
        start = offsets[block]
        size = offsets[block + 1] - start
        if size == 0:
            lengths[block] = 0
            continue
        keys = np.empty(size, dtype=np.int64)
        for t in range(size):
            keys[t] = np.int64(rows[start + t]) * n_items + cols[start + t]
        order = np.argsort(keys, kind="mergesort")  # stable: "last" means last given
        sorted_rows = rows[start:start + size][order]
        sorted_cols = cols[start:start + size][order]
        sorted_values = values[start:start + size][order].astype(np.float64)
        kept = 0
        for t in range(size):
            if t > 0 and keys[order[t]] == keys[order[t - 1]]:
                if duplicate_info[0] == 0:
                    duplicate_info[1] = sorted_rows[t]
                    duplicate_info[2] = sorted_cols[t]
                duplicate_info[0] += 1
                if policy == 1:
                    sorted_values[kept - 1] += sorted_values[t]
                elif policy == 2:
                    sorted_values[kept - 1] = sorted_values[t]
                continue
            sorted_rows[kept] = sorted_rows[t]
            sorted_cols[kept] = sorted_cols[t]
            sorted_values[kept] = sorted_values[t]
            kept += 1
        # Fisher-Yates shuffle, seeded per block.
        state = np.uint64(seeds[block])
        for t in range(kept - 1, 0, -1):
            state, draw = _splitmix64(state)
            j = np.int64(draw % np.uint64(t + 1))
            sorted_rows[t], sorted_rows[j] = sorted_rows[j], sorted_rows[t]
            sorted_cols[t], sorted_cols[j] = sorted_cols[j], sorted_cols[t]
            sorted_values[t], sorted_values[j] = sorted_values[j], sorted_values[t]
        for t in range(kept):
            rows[start + t] = sorted_rows[t]
            cols[start + t] = sorted_cols[t]
            values[start + t] = np.float32(sorted_values[t])
        lengths[block] = kept
