"""The block layout that every fit trains on: grid, relabeling, storage order, schedule.

Users and items are relabeled by a seeded random permutation (so that every
block gets a fair share of popular users and items), cut into ``grid`` stripes
each, and the ratings are stored once per fit in block order: block
``(bu, bi)`` holds the ratings of user stripe ``bu`` and item stripe ``bi``,
contiguously. Within a block the entries are first sorted by (user, item),
which canonicalizes the input (any format or entry order gives the same
layout) and exposes duplicate pairs; then the items within each user's run
are shuffled with a per-block seed, and two (squared loss) or four (logistic
loss) parts of the block are interleaved (users' runs alternate, so the CPU
overlaps independent dependency chains). Users thus come in a random
(relabeled) but fixed order and a user's factor row is loaded once per block,
which is the "partial random" order of FPSGD (Zhuang et al., 2013): it
converges like a full shuffle and keeps the cache hot.

An epoch visits the grid in ``grid`` strata; a stratum holds one block of each
user stripe and each item stripe, so its blocks can run in parallel without
races or locks. Each epoch draws a new order of strata and a new pairing of
stripes (O(grid) random numbers instead of a permutation of all ratings).
Because a block is always run start to end by a single thread, the result is
the same for any number of threads.
"""

import math
from dataclasses import dataclass

import numba
import numpy as np

from . import _layout_numpy
from ._jit import inline_kernel, kernel, parallel_kernel

# Within a block the ratings of one user are stored together, so a user's
# factor row is fetched once per block; the block's item rows are hit at
# random and should stay cached. Their size (n_items / grid * k * 4 bytes) is
# kept under this budget: about a core's L2 plus its share of L3 on current
# x86 servers. (Measured on the 2-core dev machine, 10M ratings: grid 8 beat
# 4, 6, 12, 16, 32 and 54 at k=32 and k=128.)
ITEM_STRIPE_BUDGET_BYTES = 2 * 1024 * 1024
# At least this many blocks per stratum, so that up to 8 threads have work
# and 2 or 4 threads get equal shares.
MIN_GRID = 8
# ...but a block must have enough ratings to amortize its start-up.
MIN_RATINGS_PER_BLOCK = 2048
# A block's sort runs over ranges of its users of about this many ratings
# (at most MAX_CANONICAL_CUTS per block): their scratch arrays then fit in
# L2. Same bits for any cut; 9M ratings in 64 blocks, cut in 16-64:
# 1.2-1.25 times the speed of sorting whole blocks, 1 and 2 threads.
CANONICAL_CUT_RATINGS = 8192
MAX_CANONICAL_CUTS = 64
# The layout stores each block as ``ways`` parts taken in turn (the loss's
# ``interleave``, see fastmf._losses), so that consecutive entries rarely share
# a user or an item and the CPU overlaps independent update chains. Any value
# gives the same results for a given layout; only the speed differs.
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
    seeds : ndarray of int64, shape (grid * grid,)
        Each block's seed (its shuffle; the sampled losses' negatives).
    weights : ndarray of float32, shape (nnz,), or None
        Each stored entry's sample weight, in storage order (None: all ones).
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
    seeds: np.ndarray
    weights: np.ndarray = None

    @property
    def nnz(self):
        """Number of stored ratings."""
        return self.rows.shape[0]

    def value_sums(self):
        """Each block's sum of values (float64), in block order."""
        offsets = self.block_offsets
        return np.array(
            [
                block_value_sum(self.values[offsets[b] : offsets[b + 1]])
                for b in range(offsets.shape[0] - 1)
            ],
            dtype=np.float64,
        )

    def subtract(self, value):
        """Subtract ``value`` (float32) from every stored value, in place."""
        np.subtract(self.values, value, out=self.values)

    def seen_items_csr(self, parallel=False):
        """See :func:`seen_items_csr`."""
        return seen_items_csr(self, parallel)


def block_value_sum(values):
    """Sum one block's values in float64.

    Every layout (local or on a cluster) sums its blocks with this one call,
    so that the global mean and checkpoint fingerprints get the same bits.
    """
    return float(np.sum(values, dtype=np.float64))


def choose_grid(n_users, n_items, nnz, k):
    """Pick the number of stripes per side from the data size and the rank.

    Depends only on the data and ``k``, never on the thread count, so that the
    schedule (and the result) is the same on 1 or many threads.
    """
    by_cache = math.ceil(n_items * k * 4 / ITEM_STRIPE_BUDGET_BYTES)
    largest = max(1, math.isqrt(nnz // MIN_RATINGS_PER_BLOCK))
    return max(1, min(largest, max(by_cache, MIN_GRID)))


def duplicates_code(duplicates):
    """Return the kernels' code for a duplicates policy ("raise", "sum" or "last")."""
    return _DUPLICATE_CODES[duplicates]


def draw_relabeling(rng, shape, grid):
    """Draw a layout's randomness: the user and item relabelings and the per-block seeds.

    Every layout (in memory, or built on a cluster) draws them with this one
    call, in this order, so that both get the same bits from the same ``rng``.

    Returns
    -------
    user_perm, item_perm : ndarray of int64
        Internal id -> original id.
    seeds : ndarray of int64, shape (grid * grid,)
        The seed of each block's shuffle, in block order.
    """
    m, n = shape
    user_perm = rng.permutation(m)
    item_perm = rng.permutation(n)
    seeds = rng.integers(0, np.iinfo(np.int64).max, size=grid * grid, dtype=np.int64)
    return user_perm, item_perm, seeds


def index_dtype(shape):
    """Return the integer type of internal ids: int32 unless a dimension needs int64."""
    return np.int32 if max(shape) <= np.iinfo(np.int32).max else np.int64


def arrange(coo, grid, rng, duplicates="raise", parallel=False, ways=2, shuffle=True):
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
    parallel : bool, default=False
        Sort the blocks on numba's thread pool (same result).
    ways : int, default=2
        Parts per block taken in turn (``loss.interleave`` for the loss that
        will train on the layout).
    shuffle : bool, default=True
        Shuffle each user's items within a block; False keeps them sorted
        (``loss.shuffle``: the sampled losses search a user's run).

    Returns
    -------
    BlockLayout

    Raises
    ------
    ValueError
        On a duplicate (row, col) pair when ``duplicates="raise"``.
    """
    m, n = coo.shape
    user_perm, item_perm, seeds = draw_relabeling(rng, coo.shape, grid)
    user_new = inverse_permutation(user_perm)
    item_new = inverse_permutation(item_perm)
    n_blocks = grid * grid

    sub_offsets = None
    if coo.nnz < _layout_numpy.SMALL_LAYOUT_RATINGS:
        rows, cols, values, offsets = _layout_numpy.scatter_blocks(
            coo.rows,
            coo.cols,
            coo.values,
            user_new,
            item_new,
            grid,
            coo.shape,
            index_dtype(coo.shape),
        )
    else:
        rows, cols, values, offsets, sub_offsets = _scatter(coo, user_new, item_new, grid, parallel)
    results = canonicalize_blocks(
        rows, cols, values, offsets, seeds, duplicates, ways, parallel=parallel, shuffle=shuffle,
        sub_offsets=sub_offsets,
    )  # fmt: skip
    n_duplicates = int(results[:, 1].sum())
    if n_duplicates:
        if duplicates == "raise":
            first_block = int(np.flatnonzero(results[:, 1])[0])
            _, _, user, item = results[first_block]
            raise duplicates_error(n_duplicates, user_perm[user], item_perm[item])
        lengths = results[:, 0]
        keep = np.concatenate(
            [np.arange(offsets[b], offsets[b] + lengths[b]) for b in range(n_blocks)]
        )
        rows, cols, values = rows[keep], cols[keep], values[keep]
        offsets = np.zeros(n_blocks + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if not np.isfinite(values).all():
            raise ValueError(
                "Summing duplicate entries overflowed float32; rescale the values or use "
                "duplicates='last'."
            )
    return BlockLayout(
        rows,
        cols,
        values,
        offsets,
        grid,
        user_perm,
        item_perm,
        *count_both_ids(rows, cols, offsets, grid, (m, n), parallel),
        seeds,
    )


def _scatter(coo, user_new, item_new, grid, parallel=False, cut_ratings=None):
    """Relabel the ratings and group them by block, keeping input order within a block.

    Each block is further cut into ``cuts`` ranges of ascending users (finer
    user stripes: ``u * grid * cuts // m``, nested in the block's stripe),
    about ``cut_ratings`` (default :data:`CANONICAL_CUT_RATINGS`) each, so that the block's sort
    (:func:`canonicalize_blocks`) scatters within cached ranges. ``parallel``
    splits the input into one contiguous chunk per thread; chunk ``c`` writes
    its ratings of a range after those of the chunks before it, so the result
    is the serial one, bit for bit. Returns ``(rows, cols, values, offsets,
    sub_offsets)``: ``offsets`` delimit the blocks, ``sub_offsets`` the ranges.
    """
    m, n = coo.shape
    n_blocks = grid * grid
    cut_ratings = cut_ratings or CANONICAL_CUT_RATINGS
    # Cuts beyond one user per range would only add empty ranges.
    cuts = max(1, min(coo.nnz // (n_blocks * cut_ratings), MAX_CANONICAL_CUTS, m // grid))
    # Each id's range key, looked up per rating (range bu * grid + bi, cut s:
    # (bu * grid + bi) * cuts + s): an int64 division per rating (two per
    # pass) was most of these passes' time.
    fine = (user_new * (grid * cuts)) // m
    user_offset = ((fine // cuts) * (grid * cuts) + fine % cuts).astype(np.int32)
    item_stripe = ((item_new * grid) // n * cuts).astype(np.int32)
    n_chunks = numba.get_num_threads() if parallel else 1
    bounds = np.linspace(0, coo.nnz, n_chunks + 1).astype(np.int64)
    counts = np.zeros((n_chunks, n_blocks * cuts), dtype=np.int64)
    (_count_blocks_parallel if parallel else _count_blocks)(
        coo.rows, coo.cols, user_offset, item_stripe, bounds, counts
    )
    sub_offsets = np.zeros(n_blocks * cuts + 1, dtype=np.int64)
    np.cumsum(counts.sum(axis=0), out=sub_offsets[1:])
    # Chunk c's first slot in range r: after the chunks before it.
    cursor = sub_offsets[:-1] + np.cumsum(counts, axis=0) - counts
    dtype = index_dtype(coo.shape)
    rows = np.empty(coo.nnz, dtype=dtype)
    cols = np.empty(coo.nnz, dtype=dtype)
    values = np.empty(coo.nnz, dtype=np.float32)
    (_scatter_blocks_parallel if parallel else _scatter_blocks)(
        coo.rows, coo.cols, coo.values, user_new.astype(dtype), item_new.astype(dtype),
        user_offset, item_stripe, bounds, cursor, rows, cols, values,
    )  # fmt: skip
    return rows, cols, values, np.ascontiguousarray(sub_offsets[::cuts]), sub_offsets


def count_both_ids(rows, cols, offsets, grid, shape, parallel=False):
    """Return ``(user_counts, item_counts)`` of a layout in block order, as float64.

    ``parallel``: by stripes on numba's threads. User stripe ``bu`` is one
    range of the storage and item stripe ``bi`` the blocks ``(bu, bi)``; each
    touches only its own ids, so no two threads count the same id (exact
    integer counts, the same bits).
    """
    if not parallel or rows.shape[0] < _layout_numpy.SMALL_LAYOUT_RATINGS:
        return count_ids(rows, shape[0]), count_ids(cols, shape[1])
    user_counts = np.zeros(shape[0], dtype=np.float64)
    item_counts = np.zeros(shape[1], dtype=np.float64)
    _count_by_stripe(rows, cols, offsets, grid, user_counts, item_counts)
    return user_counts, item_counts


@parallel_kernel
def _count_by_stripe(rows, cols, offsets, grid, user_counts, item_counts):
    """Kernel of :func:`count_both_ids`: task ``t < grid`` counts user stripe ``t``, else items."""
    for task in numba.prange(2 * grid):
        if task < grid:
            for idx in range(offsets[task * grid], offsets[(task + 1) * grid]):
                user_counts[rows[idx]] += 1.0
        else:
            stripe = task - grid
            for bu in range(grid):
                block = bu * grid + stripe
                for idx in range(offsets[block], offsets[block + 1]):
                    item_counts[cols[idx]] += 1.0


def count_ids(ids, size):
    """Return how often each id in range(size) occurs, as float64."""
    if ids.shape[0] < _layout_numpy.SMALL_LAYOUT_RATINGS:
        return np.bincount(ids, minlength=size).astype(np.float64)
    return _count_ids(ids, size)


def duplicates_error(count, user, item):
    """Return the error for ``duplicates="raise"``, naming one repeated pair (original ids)."""
    return ValueError(
        f"The input gives {count} (row, col) pair(s) more than once, e.g. "
        f"({int(user)}, {int(item)}). Remove the duplicates, or pass duplicates='sum' or "
        "duplicates='last'."
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


# Mixes the epoch number into each block's seed (splitmix64's increment).
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def epoch_streams(seeds, epoch):
    """Each block's random stream for a sampled loss in epoch ``epoch``: uint64, block order.

    Depends only on the layout's seeds and the epoch number, so a resumed fit
    (or a cluster) draws the same negatives.
    """
    return seeds.astype(np.uint64) ^ np.uint64((epoch * _GOLDEN_GAMMA) % 2**64)


def stripe_bounds(size, grid):
    """First index of each of the ``grid`` stripes of ``range(size)``, and ``size``.

    Index ``i`` is in stripe ``i * grid // size``, as in :func:`_scatter`.
    """
    return [(b * size + grid - 1) // grid for b in range(grid)] + [size]


def inverse_permutation(permutation):
    """Return the inverse of a permutation array (int64)."""
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.shape[0])
    return inverse


def permute_rows(factors, source):
    """Reorder the rows of ``factors`` in place: row ``r`` becomes old row ``source[r]``.

    ``factors``: float32 (n_rows, k); ``source``: int64 permutation of
    range(n_rows). Large matrices are permuted along the permutation's cycles
    with one spare row, so no second factor matrix is allocated; small ones
    through a copy, which needs no compiling.
    """
    if factors.size < _SMALL_PERMUTE_VALUES:
        factors[:] = factors[source]
    else:
        _permute_rows(factors, source)


# Factor matrices below this many values are permuted through a copy (at most
# 16 MB), which spares a first fit the kernel's compile time.
_SMALL_PERMUTE_VALUES = 4 * 1024 * 1024


@kernel
def _permute_rows(factors, source):
    """Kernel of :func:`permute_rows`: follows the cycles with one spare row."""
    # Rows are copied element by element: a whole-row assignment would compile
    # numba's shape-mismatch error path (string formatting), 2+ s of every
    # first fit's compile time.
    n_rows, k = factors.shape
    done = np.zeros(n_rows, dtype=np.bool_)
    spare = np.empty(k, dtype=factors.dtype)
    for start in range(n_rows):
        if done[start]:
            continue
        for f in range(k):
            spare[f] = factors[start, f]
        row = start
        while True:
            done[row] = True
            nxt = source[row]
            if nxt == start:
                for f in range(k):
                    factors[row, f] = spare[f]
                break
            for f in range(k):
                factors[row, f] = factors[nxt, f]
            row = nxt


def seen_items_csr(layout, parallel=False):
    """Return the training interactions as CSR (original ids), reusing the layout's memory.

    Returns ``(indptr, items)``: ``items[indptr[u]:indptr[u + 1]]`` are the
    items user ``u`` rated (int32, in storage order). ``items`` is
    written over ``layout.values`` (no longer needed after training), so
    remembering what each user rated costs no extra copy of the ratings.
    ``parallel`` scatters the user stripes on numba's threads: each stripe's
    entries are one range of the storage, so the result is the same bits.
    """
    m = layout.user_perm.shape[0]
    counts = np.empty(m, dtype=np.int64)
    counts[layout.user_perm] = layout.user_counts.astype(np.int64)
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    items = layout.values.view(np.int32)
    if layout.nnz < _layout_numpy.SMALL_LAYOUT_RATINGS:
        users = layout.user_perm[layout.rows]
        items[:] = layout.item_perm[layout.cols][np.argsort(users, kind="stable")]
    else:
        # Block bu * grid + bi is stored in block order, so user stripe bu is one range.
        stripe_offsets = np.ascontiguousarray(layout.block_offsets[:: layout.grid])
        scatter = _scatter_csr_parallel if parallel else _scatter_csr
        scatter(
            layout.rows,
            layout.cols,
            layout.user_perm,
            layout.item_perm,
            stripe_offsets,
            indptr[:-1].copy(),
            items,
        )
    return indptr, items


@inline_kernel
def _scatter_range(rows, cols, user_perm, item_perm, start, end, cursor, out_items):
    for idx in range(start, end):
        user = user_perm[rows[idx]]
        out_items[cursor[user]] = item_perm[cols[idx]]
        cursor[user] += 1


@kernel
def _scatter_csr(rows, cols, user_perm, item_perm, stripe_offsets, cursor, out_items):
    """Place each rating's original item id in its original user's row, in place."""
    _scatter_range(rows, cols, user_perm, item_perm, 0, rows.shape[0], cursor, out_items)


@parallel_kernel
def _scatter_csr_parallel(rows, cols, user_perm, item_perm, stripe_offsets, cursor, out_items):
    """:func:`_scatter_csr`, user stripes in parallel (no two share a user: the same bits)."""
    for stripe in numba.prange(stripe_offsets.shape[0] - 1):
        _scatter_range(rows, cols, user_perm, item_perm, stripe_offsets[stripe],
                       stripe_offsets[stripe + 1], cursor, out_items)  # fmt: skip


def relabeled_by_user(rows, cols, values, user_new, item_new, shift):
    """Return held-out triplets in internal ids, stably sorted by user, values minus ``shift``.

    ``rows``, ``cols``: original ids (checked); ``user_new``, ``item_new``:
    original -> internal id. Returns ``(rows, cols, values)`` with ids in
    :func:`index_dtype` of the shape and float32 ``values - shift``: the
    bits of relabeling, a stable argsort and gathering, in two passes.
    """
    dtype = index_dtype((user_new.shape[0], item_new.shape[0]))
    shift = np.float32(shift)
    if rows.shape[0] < _layout_numpy.SMALL_LAYOUT_RATINGS:
        internal_rows = user_new[rows]
        order = np.argsort(internal_rows, kind="stable")
        return (
            internal_rows[order].astype(dtype),
            item_new[cols[order]].astype(dtype),
            values[order] - shift,
        )
    out_rows = np.empty(rows.shape[0], dtype=dtype)
    out_cols = np.empty(rows.shape[0], dtype=dtype)
    out_values = np.empty(rows.shape[0], dtype=np.float32)
    _relabel_by_user(rows, cols, values, user_new, item_new, shift, out_rows, out_cols, out_values)
    return out_rows, out_cols, out_values


@kernel
def _relabel_by_user(rows, cols, values, user_new, item_new, shift, out_rows, out_cols,
                     out_values):  # fmt: skip
    """Kernel of :func:`relabeled_by_user`: a counting sort by internal user."""
    starts = np.zeros(user_new.shape[0] + 1, dtype=np.int64)
    for idx in range(rows.shape[0]):
        starts[user_new[rows[idx]] + 1] += 1
    for user in range(1, starts.shape[0]):
        starts[user] += starts[user - 1]
    for idx in range(rows.shape[0]):
        user = user_new[rows[idx]]
        slot = starts[user]
        out_rows[slot] = user
        out_cols[slot] = item_new[cols[idx]]
        out_values[slot] = values[idx] - shift
        starts[user] = slot + 1


@kernel
def _count_ids(ids, size):
    """Return how often each id in range(size) occurs, as float64.

    ``np.bincount`` would first cast int32 ids to int64: a transient copy as
    large as the ids themselves.
    """
    counts = np.zeros(size, dtype=np.float64)
    for idx in range(ids.shape[0]):
        counts[ids[idx]] += 1.0
    return counts


@kernel
def _count_chunk(rows, cols, user_offset, item_stripe, lo, hi, counts):
    """Count the ratings ``lo:hi`` of each block into ``counts`` (int64, (grid * grid,)).

    A rating's range is ``user_offset[u] + item_stripe[i]`` for original
    user ``u`` and item ``i`` (see :func:`_scatter`).
    """
    for idx in range(lo, hi):
        counts[user_offset[rows[idx]] + item_stripe[cols[idx]]] += 1


@kernel
def _count_blocks(rows, cols, user_offset, item_stripe, bounds, counts):
    """Count each chunk's ratings per block: ``counts[c]`` for ``bounds[c]:bounds[c + 1]``."""
    for chunk in range(bounds.shape[0] - 1):
        _count_chunk(
            rows, cols, user_offset, item_stripe, bounds[chunk], bounds[chunk + 1], counts[chunk]
        )


@parallel_kernel
def _count_blocks_parallel(rows, cols, user_offset, item_stripe, bounds, counts):
    """:func:`_count_blocks`, chunks in parallel."""
    for chunk in numba.prange(bounds.shape[0] - 1):
        _count_chunk(
            rows, cols, user_offset, item_stripe, bounds[chunk], bounds[chunk + 1], counts[chunk]
        )


@kernel
def _scatter_chunk(
    rows, cols, values, user_new, item_new, user_offset, item_stripe, lo, hi, cursor,
    out_rows, out_cols, out_values,
):  # fmt: skip
    """Copy ratings ``lo:hi`` to their blocks, relabeled, in input order.

    ``cursor`` (int64, (grid * grid,)) starts at this chunk's first slot in
    each block and is advanced in place; ``out_*`` are filled in place.
    """
    for idx in range(lo, hi):
        user = rows[idx]
        item = cols[idx]
        block = user_offset[user] + item_stripe[item]
        position = cursor[block]
        out_rows[position] = user_new[user]
        out_cols[position] = item_new[item]
        out_values[position] = values[idx]
        cursor[block] = position + 1


@kernel
def _scatter_blocks(
    rows, cols, values, user_new, item_new, user_offset, item_stripe, bounds, cursor,
    out_rows, out_cols, out_values,
):  # fmt: skip
    """Scatter each chunk ``bounds[c]:bounds[c + 1]`` from its ``cursor[c]``."""
    for chunk in range(bounds.shape[0] - 1):
        _scatter_chunk(
            rows, cols, values, user_new, item_new, user_offset, item_stripe,
            bounds[chunk], bounds[chunk + 1], cursor[chunk], out_rows, out_cols, out_values,
        )  # fmt: skip


@parallel_kernel
def _scatter_blocks_parallel(
    rows, cols, values, user_new, item_new, user_offset, item_stripe, bounds, cursor,
    out_rows, out_cols, out_values,
):  # fmt: skip
    """:func:`_scatter_blocks`, chunks in parallel (disjoint slots: the same result)."""
    for chunk in numba.prange(bounds.shape[0] - 1):
        _scatter_chunk(
            rows, cols, values, user_new, item_new, user_offset, item_stripe,
            bounds[chunk], bounds[chunk + 1], cursor[chunk], out_rows, out_cols, out_values,
        )  # fmt: skip


@kernel
def splitmix64(state):
    """Advance a splitmix64 generator: return ``(new_state, random uint64)``."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@kernel
def _canonicalize_block(rows, cols, values, sub_offsets, seed, policy, ways, shuffle, out):
    """Sort one block by (user, item), resolve duplicates, shuffle items within user runs.

    The block is ``sub_offsets[0]:sub_offsets[-1]``, cut into sub-blocks of
    ascending, disjoint user ranges (:func:`_scatter`'s finer user stripes;
    one sub-block is the whole block). Each sub-block is radix sorted into
    the block's scratch arrays (stable counting sorts by item, positions
    only, then by user: O(size + items + users)), where each user's run is
    compacted over its duplicates and shuffled; one pass then writes the
    block back in interleaved order (:func:`_interleave_starts`). The
    sub-blocks come in user order and the shuffle's generator runs on from
    one to the next, so the result does not depend on how the block is cut;
    a cut only keeps each sort's scatters in a smaller (cached) range.
    ``policy``: 0 only counts duplicates (the caller raises), 1 sums them,
    2 keeps the last one given. With ``shuffle`` false, each user's run
    stays sorted by item (the sampled losses search it). The block keeps its
    first ``out[0]`` entries (fewer than its size only when duplicates were
    merged); ``out[1:4]`` receives the duplicate count and the (internal)
    user and item of the first one. Arrays are updated in place.
    """
    start = sub_offsets[0]
    size = sub_offsets[sub_offsets.shape[0] - 1] - start
    if size == 0:
        out[0] = 0
        return
    largest = 0
    for s in range(sub_offsets.shape[0] - 1):
        largest = max(largest, sub_offsets[s + 1] - sub_offsets[s])
    by_item = np.empty(largest, dtype=np.int64)
    sorted_cols = np.empty(size, dtype=cols.dtype)
    sorted_values = np.empty(size, dtype=np.float64)
    # Entries are compacted in the scratch arrays (kept <= t, so nothing
    # unread is overwritten); kept_users[r] is the user of compacted entry r.
    kept_users = np.empty(size, dtype=rows.dtype)
    state = np.uint64(seed)
    kept = np.int64(0)
    duplicates = 0
    for s in range(sub_offsets.shape[0] - 1):
        first_entry = sub_offsets[s]
        end = sub_offsets[s + 1]
        if first_entry == end:
            continue
        lowest = rows[first_entry]
        highest = rows[first_entry]
        lowest_item = cols[first_entry]
        highest_item = cols[first_entry]
        for t in range(first_entry, end):
            lowest = min(lowest, rows[t])
            highest = max(highest, rows[t])
            lowest_item = min(lowest_item, cols[t])
            highest_item = max(highest_item, cols[t])
        # Radix sort, least significant key first: a stable counting sort by
        # item (positions only), then a stable counting sort by user in that
        # order. Both keep the input order among equal keys ("last" means
        # last given).
        item_starts = np.zeros(highest_item - lowest_item + 2, dtype=np.int64)
        for t in range(first_entry, end):
            item_starts[cols[t] - lowest_item + 1] += 1
        for r in range(1, item_starts.shape[0]):
            item_starts[r] += item_starts[r - 1]
        for t in range(first_entry, end):
            slot = item_starts[cols[t] - lowest_item]
            by_item[slot] = t
            item_starts[cols[t] - lowest_item] = slot + 1
        # Runs are placed after what the earlier sub-blocks kept.
        run_starts = np.zeros(highest - lowest + 2, dtype=np.int64)
        run_starts[0] = kept
        for t in range(first_entry, end):
            run_starts[rows[t] - lowest + 1] += 1
        for r in range(1, run_starts.shape[0]):
            run_starts[r] += run_starts[r - 1]
        cursor = run_starts[:-1].copy()
        for q in range(end - first_entry):
            t = by_item[q]
            slot = cursor[rows[t] - lowest]
            sorted_cols[slot] = cols[t]
            sorted_values[slot] = values[t]
            cursor[rows[t] - lowest] = slot + 1
        for r in range(run_starts.shape[0] - 1):
            run_start = run_starts[r]
            run_end = run_starts[r + 1]
            if run_start == run_end:
                continue
            first = kept
            for t in range(run_start, run_end):
                # Sorted, so a duplicate repeats the item of the last entry kept.
                if t > run_start and sorted_cols[t] == sorted_cols[kept - 1]:
                    if duplicates == 0:
                        out[2] = lowest + r
                        out[3] = sorted_cols[t]
                    duplicates += 1
                    if policy == 1:
                        sorted_values[kept - 1] += sorted_values[t]
                    elif policy == 2:
                        sorted_values[kept - 1] = sorted_values[t]
                    continue
                sorted_cols[kept] = sorted_cols[t]
                sorted_values[kept] = sorted_values[t]
                kept_users[kept] = lowest + r
                kept += 1
            # A user's ratings stay together (its factor row is then loaded
            # once per block); the order of its items is shuffled with the
            # block's seed.
            if not shuffle:
                continue
            for t in range(kept - 1, first, -1):
                state, draw = splitmix64(state)
                j = first + np.int64(draw % np.uint64(t - first + 1))
                sorted_cols[t], sorted_cols[j] = sorted_cols[j], sorted_cols[t]
                sorted_values[t], sorted_values[j] = sorted_values[j], sorted_values[t]
    # Part w's j-th entry goes to position j * ways + w (loops, no division).
    part_start = _interleave_starts(kept, ways)
    for w in range(ways):
        part_end = part_start[w + 1] if w + 1 < ways else kept
        target = start + w
        for source in range(part_start[w], part_end):
            rows[target] = kept_users[source]
            cols[target] = sorted_cols[source]
            values[target] = np.float32(sorted_values[source])
            target += ways
    out[0] = kept
    out[1] = duplicates


@kernel
def _interleave_starts(size, ways):
    """Where each of the ``ways`` parts of ``size`` entries starts (int64, (ways,)).

    The block is cut into ``ways`` parts that are then taken in turn: entry
    ``t`` of the result is entry ``t // ways`` of part ``t % ways``. Within a
    user's run every update depends on the previous one (the same factor
    row), so the kernel waits on its latency: dot product, then the update.
    Alternating runs from different parts of the block gives the CPU
    independent chains to overlap (see ``Loss.interleave``). Each user's
    factor row is still fetched once per block.
    """
    part_start = np.zeros(ways, dtype=np.int64)
    for w in range(1, ways):
        part_start[w] = part_start[w - 1] + (size - (w - 1) + ways - 1) // ways
    return part_start


def canonicalize_blocks(
    rows, cols, values, offsets, seeds, duplicates, ways, parallel=False, shuffle=True,
    sub_offsets=None,
):  # fmt: skip
    """Sort, deduplicate, shuffle and interleave each block in place (see the module docstring).

    ``offsets`` (int64, n_blocks + 1) delimit the blocks; ``seeds`` (int64)
    seed each block's shuffle (``shuffle=False`` keeps each user's items
    sorted). ``sub_offsets`` (int64, n_blocks * cuts + 1), when given, cut
    every block into ``cuts`` ranges of ascending users (:func:`_scatter`);
    the result is the same bits, sooner. Returns int64 (n_blocks, 4): per
    block, the entries kept (at the block's start), the duplicates found,
    and the (internal) user and item of the first duplicate. Small serial
    layouts are built with :mod:`fastmf._layout_numpy` (no compile time,
    the same bits).
    """
    policy = duplicates_code(duplicates)
    n_blocks = offsets.shape[0] - 1
    if not parallel and offsets[-1] - offsets[0] < _layout_numpy.SMALL_LAYOUT_RATINGS:
        results = _layout_numpy.canonicalize_blocks(
            rows, cols, values, offsets, seeds, policy, ways, shuffle
        )
        if results is not None:
            return results
    if sub_offsets is None:
        sub_offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    cuts = (sub_offsets.shape[0] - 1) // max(n_blocks, 1)
    results = np.zeros((n_blocks, 4), dtype=np.int64)
    canonicalize = _canonicalize_parallel if parallel else _canonicalize_serial
    canonicalize(rows, cols, values, sub_offsets, cuts, seeds, policy, ways, shuffle, results)
    return results


@kernel
def _canonicalize_serial(rows, cols, values, sub_offsets, cuts, seeds, policy, ways, shuffle,
                         results):  # fmt: skip
    """Run :func:`_canonicalize_block` on every block; ``results`` is int64 (n_blocks, 4)."""
    for block in range(results.shape[0]):
        _canonicalize_block(
            rows,
            cols,
            values,
            sub_offsets[block * cuts : (block + 1) * cuts + 1],
            seeds[block],
            policy,
            ways,
            shuffle,
            results[block],
        )


@parallel_kernel
def _canonicalize_parallel(rows, cols, values, sub_offsets, cuts, seeds, policy, ways, shuffle,
                           results):  # fmt: skip
    """Like :func:`_canonicalize_serial`, blocks in parallel (same result)."""
    for block in numba.prange(results.shape[0]):
        _canonicalize_block(
            rows,
            cols,
            values,
            sub_offsets[block * cuts : (block + 1) * cuts + 1],
            seeds[block],
            policy,
            ways,
            shuffle,
            results[block],
        )
