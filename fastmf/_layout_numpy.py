"""Plain-numpy twins of the layout kernels in :mod:`fastmf._blocks`, for small fits.

A fit's first call compiles every kernel it runs, and the layout kernels were
most of that: about 3 s of a 5 s first fit on the 2-core dev machine, for data
that numpy arranges in milliseconds. Below :data:`SMALL_LAYOUT_RATINGS` the
layout is therefore built here, with whole-array numpy operations that need no
compiler. Each function gives exactly the bits of its kernel twin (the tests
check both on the same inputs), so a model does not depend on which path built
its layout.
"""

import numpy as np

# Layouts with fewer ratings than this are built with numpy: the kernels'
# compile time (~3 s) would be most of such a fit's first call.
SMALL_LAYOUT_RATINGS = 100_000
# The within-user shuffle below runs one vectorized step per position of the
# longest (block, user) run; past this length the compiled kernel is quicker.
MAX_RUN_LENGTH = 4096

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def stripes(ids, grid, size):
    """Stripe of each id (int64), as in ``fastmf._blocks._scatter``."""
    return (ids.astype(np.int64) * grid) // size


def splitmix64_draws(seeds, counters):
    """Draw number ``counters`` (1-based) of splitmix64 generators started at ``seeds``.

    The generator's state after ``d`` steps is ``seed + d * golden`` (mod 2**64),
    so any draw can be computed directly, for many generators at once.
    """
    z = seeds.astype(np.uint64) + counters.astype(np.uint64) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def canonicalize_blocks(rows, cols, values, offsets, seeds, policy, ways, shuffle=True):
    """Numpy twin of ``fastmf._blocks.canonicalize_blocks`` (same arguments, same bits).

    ``policy`` is the duplicates code (0 count, 1 sum, 2 last). Updates the
    arrays in place and returns the int64 (n_blocks, 4) results, or None
    (nothing changed) when a (block, user) run is longer than
    :data:`MAX_RUN_LENGTH`, where the kernel should be used instead.
    """
    n_blocks = offsets.shape[0] - 1
    results = np.zeros((n_blocks, 4), dtype=np.int64)
    size = int(offsets[-1] - offsets[0])
    if size == 0:
        return results
    base = int(offsets[0])
    block = np.repeat(np.arange(n_blocks, dtype=np.int64), np.diff(offsets))
    span = slice(base, base + size)
    # Stable: input order is kept within a (block, user, item) group, so that
    # "last" means the last one given and sums run in input order.
    order = np.lexsort((cols[span], rows[span], block))
    block_rows, block_cols = rows[span][order], cols[span][order]
    block_values = values[span][order]

    same = (block_rows[1:] == block_rows[:-1]) & (block_cols[1:] == block_cols[:-1])
    same &= block[1:] == block[:-1]
    duplicate = np.concatenate(([False], same))
    if duplicate.any():
        at = np.flatnonzero(duplicate)
        duplicate_blocks, first = np.unique(block[at], return_index=True)
        results[:, 1] = np.bincount(block[at], minlength=n_blocks)
        results[duplicate_blocks, 2] = block_rows[at[first]]
        results[duplicate_blocks, 3] = block_cols[at[first]]
        if policy != 0:
            block_values = _merge_duplicates(block_values, duplicate, policy)
        keep = ~duplicate
        block, block_rows, block_cols = block[keep], block_rows[keep], block_cols[keep]
        block_values = block_values[keep]
    kept = np.bincount(block, minlength=n_blocks).astype(np.int64)
    results[:, 0] = kept
    starts = offsets[:-1] - base  # kept entries are written at their block's start
    kept_starts = np.zeros(n_blocks, dtype=np.int64)
    np.cumsum(kept[:-1], out=kept_starts[1:])

    if shuffle and not _shuffle_runs(block, block_rows, block_cols, block_values, seeds):
        return None
    source = _interleave_sources(block, kept, kept_starts, ways)
    target = starts[block] + (np.arange(block.shape[0]) - kept_starts[block]) + base
    rows[target] = block_rows[source]
    cols[target] = block_cols[source]
    values[target] = block_values[source]
    return results


def _merge_duplicates(values, duplicate, policy):
    """Give each group's first entry the group's sum (policy 1) or last value (policy 2).

    Sums are taken one by one in float64, in input order, as the kernel does:
    numpy's own reductions sum pairwise, which can round differently.
    """
    merged = values.copy()
    heads = np.flatnonzero(~duplicate)
    ends = np.append(heads[1:], values.shape[0])
    for head, end in zip(heads[ends - heads > 1].tolist(), ends[ends - heads > 1].tolist()):
        if policy == 2:
            merged[head] = values[end - 1]
            continue
        total = float(values[head])
        for t in range(head + 1, end):
            total += float(values[t])
        merged[head] = np.float32(total)
    return merged


def _shuffle_runs(block, rows, cols, values, seeds):
    """Shuffle the items of every (block, user) run in place, as the kernel does.

    The kernel runs a Fisher-Yates shuffle per run, from the run's last
    position down, with one splitmix64 stream per block that continues from
    run to run. Every draw is computed up front; then step ``s`` of every run
    is applied at once (runs are disjoint). Returns False, having changed
    nothing, when a run is longer than :data:`MAX_RUN_LENGTH`.
    """
    n = block.shape[0]
    head = np.ones(n, dtype=bool)
    head[1:] = (block[1:] != block[:-1]) | (rows[1:] != rows[:-1])
    run_start = np.flatnonzero(head)
    run_length = np.diff(np.append(run_start, n))
    if run_length.max() > MAX_RUN_LENGTH:
        return False
    run_of = np.repeat(np.arange(run_start.shape[0]), run_length)
    # Draws used before each run within its block: (length - 1) per earlier run.
    draws = run_length - 1
    before = np.cumsum(draws) - draws
    run_block = block[run_start]
    block_first_run = np.searchsorted(run_block, run_block)
    before -= before[block_first_run]

    position = np.flatnonzero(~head)  # the second to last positions of each run
    run = run_of[position]
    step = run_start[run] + run_length[run] - 1 - position
    draw = splitmix64_draws(seeds[block[position]], before[run] + step + 1)
    partner = run_start[run] + (draw % (run_length[run] - step).astype(np.uint64)).astype(np.int64)

    by_step = np.argsort(step, kind="stable")
    bounds = np.searchsorted(step[by_step], np.arange(step.max() + 2 if step.size else 1))
    for s in range(bounds.shape[0] - 1):
        pick = by_step[bounds[s] : bounds[s + 1]]
        here, there = position[pick], partner[pick]
        for array in (cols, values):
            taken = array[here]
            array[here] = array[there]
            array[there] = taken
    return True


def _interleave_sources(block, kept, kept_starts, ways):
    """Source of each entry in the order of ``fastmf._blocks._interleave_starts`` (per block)."""
    parts = np.zeros((kept.shape[0], ways), dtype=np.int64)
    for w in range(1, ways):
        parts[:, w] = parts[:, w - 1] + (kept - (w - 1) + ways - 1) // ways
    local = np.arange(block.shape[0]) - kept_starts[block]
    return kept_starts[block] + parts[block, local % ways] + local // ways


def scatter_blocks(rows, cols, values, user_new, item_new, grid, shape, index_dtype):
    """Numpy twin of ``_count_blocks`` + ``_scatter_blocks``: relabel, group by block.

    Returns ``(rows, cols, values, offsets)`` with input order kept within a block.
    """
    m, n = shape
    users = user_new[rows]
    items = item_new[cols]
    block = stripes(users, grid, m) * grid + stripes(items, grid, n)
    order = np.argsort(block, kind="stable")
    offsets = np.zeros(grid * grid + 1, dtype=np.int64)
    np.cumsum(np.bincount(block, minlength=grid * grid), out=offsets[1:])
    return (
        users[order].astype(index_dtype),
        items[order].astype(index_dtype),
        values[order].astype(np.float32),
        offsets,
    )
