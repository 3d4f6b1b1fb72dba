"""Compiled kernels: the arithmetic over COO entries, and nothing else.

Every function here takes contiguous numpy arrays and scalars only (no Python
objects) and trusts its inputs: indices were range-checked and values checked
finite by :mod:`fastmf._validation` before any kernel runs, because numba does
no bounds checking.

Conventions for every kernel:

- ``rows``, ``cols``: int32 or int64, shape (nnz,), the COO coordinates.
- ``values``: float32, shape (nnz,); ratings, or labels in {-1, +1}.
- ``start``, ``end``: the half-open range of entries one block kernel visits,
  in storage order.
- ``block_offsets``: int64, shape (n_blocks + 1,); block ``b`` holds entries
  ``block_offsets[b]:block_offsets[b + 1]``.
- ``schedule``: int64, shape (n_strata, n_slots); ``schedule[s]`` lists the
  blocks of stratum ``s``, which share no user and no item, so they may run
  in parallel. Strata run one after another.
- ``user_factors``: float32, shape (n_users, k), C-contiguous.
- ``item_factors``: float32, shape (n_items, k), C-contiguous.
- ``lr``, ``l2``: float32 scalars (float32 keeps the inner loops in single
  precision; a float64 scalar would promote them).
- ``weights``: float32, shape (nnz,), each entry's sample weight (it scales
  the entry's data loss and its gradient, not the L2 penalty), or None (all
  ones: a compile-time fact, so unweighted fits run the same code as before).
- ``loss``: a :class:`fastmf._losses.KernelSet` (one loss's block kernels), a
  compile-time choice (see :class:`fastmf._jit.CompileTimeChoice`): the epoch
  and objective kernels run its block kernels (:func:`sgd_block`,
  :func:`block_loss`) and compile no other loss's code.

The SGD epoch kernels (each entry's loss, before its step) and the objective
kernels (the loss of the current state) sum float32 loss terms per block in
float64 into ``out`` (float64, shape (n_blocks,)); the caller adds the blocks
up in a fixed order, so the result does not depend on how many threads ran.
"""

import math

import numba
import numpy as np
from numba.extending import overload

from ._blocks import splitmix64
from ._jit import (
    ChoiceType,
    chosen,
    inline_kernel,
    kernel,
    opaque,
    parallel_kernel,
    prefetch,
    row_dot_and_norms,
    row_step,
)


def row_length(factors, kernels):
    """Return the factors per row the block kernels of ``kernels`` (a ``KernelSet``) work on.

    Callable from kernels only. A kernel set with a fixed ``row_width``
    (:meth:`fastmf._losses.Loss.kernels_for`) makes it a compile-time
    constant: LLVM then unrolls the loops over a row into straight-line
    vector code, with no trip counts, remainders or overlap checks to
    compute per rating. Otherwise (``None``: a direct call) it is
    ``factors.shape[1]``, read at run time.
    """
    raise NotImplementedError("row_length is called from compiled kernels only")


@overload(row_length, inline="always")
def _row_length_for(factors, kernels):
    width = chosen(kernels).row_width if isinstance(kernels, ChoiceType) else None
    if width is None:
        return lambda factors, kernels: factors.shape[1]
    return lambda factors, kernels: width


@inline_kernel
def _dot(user_factors, u, item_factors, i, k):
    """Return ``user_factors[u] @ item_factors[i]`` as float32 (rows of ``k`` factors)."""
    if k <= _FUSED_NORMS_MAX_K:
        # Where k is a compile-time constant LLVM unrolls this loop into one
        # chain of scalar additions (it does not reassociate a reduction it
        # has unrolled); the intrinsic stays in vectors. The norms it also
        # computes are unused here, and LLVM drops them.
        return row_dot_and_norms(user_factors, u, item_factors, i, k)[0]
    acc = np.float32(0.0)
    for f in range(k):
        acc += user_factors[u, f] * item_factors[i, f]
    return acc


# Up to this many factors AdaGrad's three sums (and the constant step's dot
# product, see _dot) come from row_dot_and_norms (fastmf._jit), whose
# reductions cost less than LLVM's four accumulators per sum. Side by side
# (10M ratings, squared, one thread, k=32, three runs) its AdaGrad epoch took
# 0.88-0.96 of the time of the loop below (a later, quieter run: 0.92 by
# median, equal by minimum; bench/README.md, session 16); at k=128 it took
# 1.1 times as long, so longer rows keep the loop.
_FUSED_NORMS_MAX_K = 32


@inline_kernel
def _dot_and_norms(user_factors, u, item_factors, i, k):
    """Return ``(p_u . q_i, |p_u|^2, |q_i|^2)`` as float32, in one pass over the rows."""
    if k <= _FUSED_NORMS_MAX_K:
        return row_dot_and_norms(user_factors, u, item_factors, i, k)
    dot = np.float32(0.0)
    user_norm = np.float32(0.0)
    item_norm = np.float32(0.0)
    for f in range(k):
        p = user_factors[u, f]
        q = item_factors[i, f]
        dot += p * q
        user_norm += p * p
        item_norm += q * q
    return dot, user_norm, item_norm


@inline_kernel
def _score_and_norms(user_factors, u, item_factors, i, user_bias, item_bias, user_acc, k):
    """Return ``(score, norms)`` of one entry; ``norms`` is what AdaGrad's step needs.

    With accumulators (``user_acc`` not None, a compile-time fact) ``norms``
    is :func:`_dot_and_norms` of the rows, taken in the loop that computes
    the score; with ``user_acc=None`` it is zeros and the score is
    :func:`_score`'s, so the constant-step kernels compute what they did
    before.
    """
    if user_acc is not None:
        norms = _dot_and_norms(user_factors, u, item_factors, i, k)
        score = norms[0]
        if user_bias is not None:
            score += user_bias[u] + item_bias[i]
        return score, norms
    zero = np.float32(0.0)
    return _score(user_factors, u, item_factors, i, user_bias, item_bias, k), (zero, zero, zero)


@inline_kernel
def _squared_gradient_norm(g, l2, dot, own_norm, other_norm):
    """Return ``|g * q - l2 * p|^2`` from ``p . q``, ``|p|^2`` (own) and ``|q|^2`` (other).

    Expanding the square, ``g^2 |q|^2 - 2 g l2 (p . q) + l2^2 |p|^2``, clamped
    at 0 against rounding, needs no sum over the row's coordinates: the
    norms come from the loop that computed the score. Side by side at k=32
    (biases, one thread) this made the AdaGrad epoch 0.76-0.80 of the
    constant step's speed, against 0.71-0.76 summing the squared gradients
    in the update loop.
    """
    value = g * g * other_norm - np.float32(2.0) * g * l2 * dot + l2 * l2 * own_norm
    return max(value, np.float32(0.0))


@inline_kernel
def _adagrad_step_size(lr, accumulator):
    """Return AdaGrad's step size ``lr / sqrt(accumulator)`` (float32).

    :func:`opaque` keeps it one value. Without it, fast-math moves the
    division into the loop over the row's coordinates wherever the step size
    has one use (no biases): a division per vector, where one suffices. Side
    by side at k=32 without biases, the AdaGrad epoch ran at 0.645 of the
    constant step's speed without the fence and 0.672 with it.
    """
    return opaque(lr / np.float32(math.sqrt(accumulator)))


@inline_kernel
def _sgd_step(
    user_factors,
    u,
    item_factors,
    i,
    gradient_scale,
    norms,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    k,
):
    """Apply one SGD step to rows ``u`` and ``i`` (and their biases) in place.

    ``gradient_scale`` ``g`` is minus the derivative of the entry's data loss
    with respect to its score. Both rows move from their old values:
    ``p_u += lr_u * (g * q_i - l2 * p_u)``, ``q_i += lr_i * (g * p_u - l2 * q_i)``,
    and with biases ``b_u += lr_u * (g - l2 * b_u)``, likewise ``b_i``.
    With accumulators (LIBMF's AdaGrad, one per row: ``user_acc[u]``,
    ``item_acc[i]``, float32, starting at 1) the step sizes are
    ``lr / sqrt(acc)`` from the accumulator as it was before this step, which
    then adds this step's mean squared gradient over the row's coordinates;
    otherwise both are ``lr``. ``norms`` is ``(p_u . q_i, |p_u|^2, |q_i|^2)``
    of the old rows (:func:`_score_and_norms`), from which the squared
    gradients follow without a sum in the update loop
    (:func:`_squared_gradient_norm`); it is unused without accumulators.

    Taking the step size from the accumulator before this step (as LIBMF
    does) keeps the square root and the division off the chain of dependent
    updates of a user's row (the earlier form, which added the gradient
    first, needed two loops and ran at 0.46-0.56 of a constant step's speed).
    """
    lr_user = lr
    lr_item = lr
    if user_acc is not None:
        lr_user = _adagrad_step_size(lr, user_acc[u])
        lr_item = _adagrad_step_size(lr, item_acc[i])
    sq_user = np.float32(0.0)
    sq_item = np.float32(0.0)
    if user_acc is not None:
        dot, user_norm, item_norm = norms
        sq_user = _squared_gradient_norm(gradient_scale, l2, dot, user_norm, item_norm)
        sq_item = _squared_gradient_norm(gradient_scale, l2, dot, item_norm, user_norm)
    if user_bias is not None:
        b_user = user_bias[u]
        b_item = item_bias[i]
        grad_user = gradient_scale - l2 * b_user
        grad_item = gradient_scale - l2 * b_item
        user_bias[u] = b_user + lr_user * grad_user
        item_bias[i] = b_item + lr_item * grad_item
        sq_user += grad_user * grad_user
        sq_item += grad_item * grad_item
    # In LLVM vectors (fastmf._jit): written as a loop, the update was
    # unrolled into scalar code at k=16 when k is a compile-time constant.
    row_step(user_factors, u, item_factors, i, k, gradient_scale, l2, lr_user, lr_item)
    if user_acc is not None:
        # A multiplication by the reciprocal: a division here would lengthen
        # the chain from one step of a row to the next.
        per_coord = np.float32(1.0) / np.float32(k + 1 if user_bias is not None else k)
        user_acc[u] += sq_user * per_coord
        item_acc[i] += sq_item * per_coord


@inline_kernel
def _score(user_factors, u, item_factors, i, user_bias, item_bias, k):
    """Return ``p_u . q_i`` (+ ``b_u + b_i`` when biases are given) as float32."""
    score = _dot(user_factors, u, item_factors, i, k)
    if user_bias is not None:
        score += user_bias[u] + item_bias[i]
    return score


@inline_kernel
def _sigmoid_of_negative(x):
    """Return ``sigmoid(-x) = 1 / (1 + exp(x))`` in float32, branch-free.

    Stable in IEEE arithmetic without a case split: for large ``x``,
    ``exp(x)`` overflows to inf and the result is 0 (the true value is below
    float32's smallest normal number); for very negative ``x`` it is 1; in
    between the relative error is float32's. No branch means no mispredicted
    jumps on the unpredictable sign of the margin.
    """
    return np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(x)))


@kernel
def _softplus(x):
    """Return ``log(1 + exp(x))`` in float32 without overflow."""
    z = np.float32(math.log1p(math.exp(-abs(x))))
    if x > 0:
        return x + z
    return z


# ---------------------------------------------------------------- SGD passes
# The SGD kernels return the data loss of their entries, each entry's taken
# from the score its step uses (before the step, as LIBMF does): the training
# curve costs a few operations per rating instead of a second pass. The
# objective kernels further below compute the exact objective of a state, for
# ``objective="exact"``.
# Shared arguments of the SGD kernels, after the entries and factors:
# user_bias (n_users,), item_bias (n_items,): float32 biases to learn, or None;
# user_acc (n_users,), item_acc (n_items,): float32 AdaGrad accumulators, used
# for AdaGrad, or None for a constant step; lr, l2: float32. A None argument is
# a compile-time fact to numba: each combination compiles separately and the
# unused code is pruned from the inner loop, not branched over. The block
# kernels take the KernelSet they run as last (``kernels``; None in a direct
# call), for its row width (row_length).

# Entries handled as one group by the logistic SGD kernel. The block layout
# for the logistic loss stores ratings from LANES different parts of a block in
# turn (its Loss.interleave, fastmf._losses), so the entries of a group rarely share a
# user or an item.
LANES = 4
# The logistic kernel asks for the user factor rows of the entries this far
# ahead (in entries; 64 groups). Its layout walks four regions of the user
# factors at once, which the hardware prefetcher follows less well than the
# two of the squared loss's layout. Measured side by side at k=32 (one epoch,
# one thread): without it, 0.68-0.74 of the squared loss's speed; with it,
# 0.73-0.83 at 128 and 256 entries ahead, no gain at 32. The squared kernel,
# on its two-part layout, gained nothing beyond noise from it (1.01-1.04).
PREFETCH_AHEAD = 256
# float32 values per 64-byte cache line.
_LINE = 16


@inline_kernel
def _entry_gradient(
    logistic, user_factors, u, item_factors, i, value, user_bias, item_bias, user_acc, k
):
    """Return ``(g, term, norms)`` of one entry; ``g`` is minus the loss's derivative by the score.

    Squared loss: ``g = value - s`` and ``term`` is the loss ``0.5 * g**2``;
    logistic loss (``value`` in {-1, +1}, margin ``m = value * s``): ``g =
    value * sigmoid(-m)`` and ``term`` is the likelihood ``sigmoid(m)``, whose
    minus log is the loss (see :func:`_add_term`). ``term`` is float64 and
    comes from the score the step uses: the pass sums each entry's loss
    before its step, as LIBMF does. ``norms`` is :func:`_score_and_norms`'s,
    for :func:`_sgd_step` (zeros unless ``user_acc``).
    """
    score, norms = _score_and_norms(
        user_factors, u, item_factors, i, user_bias, item_bias, user_acc, k
    )
    gradient, term = _gradient_of_score(logistic, value, score)
    return gradient, term, norms


@inline_kernel
def _gradient_of_score(logistic, value, score):
    """Return :func:`_entry_gradient`'s ``(g, term)`` from the entry's ``value`` and ``score``."""
    if logistic:
        sigmoid, likelihood = _sigmoids(value * score)
        return value * sigmoid, max(likelihood, _LIKELIHOOD_FLOOR)
    error = value - score
    return error, 0.5 * np.float64(error) * np.float64(error)


@inline_kernel
def _sigmoids(margin):
    """Return ``(sigmoid(-m), sigmoid(m))`` of a margin ``m``: float32, and float64.

    ``sigmoid(m)`` is accurate for either sign: ``1 - sigmoid(-m)`` when
    ``m >= 0``, ``exp(m) * sigmoid(-m)`` when ``m < 0``. A select, not a
    branch: the CPU cannot predict the margin's sign.
    """
    growth = np.float32(math.exp(margin))
    sigmoid = np.float32(1.0) / (np.float32(1.0) + growth)  # sigmoid(-m)
    sigmoid64 = np.float64(sigmoid)
    below = np.float64(growth) * sigmoid64
    return sigmoid, 1.0 - sigmoid64 if margin >= np.float32(0.0) else below


# The logistic pass multiplies LOG_EVERY likelihoods before it takes one log:
# a log per rating made the pass 1.6 times as long. Each likelihood is at least
# the floor (float32's smallest normal number: a margin below -87, where the
# loss is capped at 87.3), so a product of 8 stays a normal float64 (> 1e-304).
LOG_EVERY = 8
_LIKELIHOOD_FLOOR = 2.0**-126
# The objective kernels and the one-at-a-time SGD loop ask for the item row
# this many entries ahead: their entries read the item rows in random order.
# Side by side at k=32, one thread, the objective pass (1M ratings) took
# 0.65-0.81 of its time without the hint, at 4 to 32 entries ahead, and the
# squared epoch (10M ratings, 24 alternating rounds, two copies each) 0.85-0.87
# with a constant step and 0.90-0.91 with AdaGrad (two threads: 0.87-0.91).
_ITEM_PREFETCH_AHEAD = 8
# Below this margin the objective kernels take the logistic loss as -margin;
# above it, a product of LOG_EVERY likelihoods stays above 1e-278.
_EXACT_MARGIN = np.float32(-80.0)


@inline_kernel
def _add_term(logistic, total, product, term, weights, t, position):
    """Add entry ``t``'s loss ``term`` to the running ``(total, product)``; return them.

    Squared: ``total += w * term``. Logistic: ``term`` is a likelihood;
    unweighted, it joins ``product``, which is folded into ``total`` as
    ``-log(product)`` after every ``LOG_EVERY``-th entry of the block
    (``position``: the entry's place in its block), so that the sum is the
    same whichever loop visits the entries; weighted, ``total -= w *
    log(term)``.
    """
    if not logistic:
        return total + _weighted_loss(term, weights, t), product
    if weights is not None:
        return total - np.float64(weights[t]) * math.log(term), product
    product *= term
    if position % LOG_EVERY == LOG_EVERY - 1:
        return total - math.log(product), 1.0
    return total, product


@inline_kernel
def _weighted(gradient, weights, t):
    """Return ``gradient`` scaled by entry ``t``'s sample weight (unchanged without weights)."""
    if weights is None:
        return gradient
    return gradient * weights[t]


@inline_kernel
def _weighted_loss(loss, weights, t):
    """Return ``loss`` (float64) scaled by entry ``t``'s sample weight."""
    if weights is None:
        return loss
    return loss * np.float64(weights[t])


@inline_kernel
def _prefetch_row(factors, row, k):
    """Start loading every cache line of ``factors[row]`` (``k`` floats)."""
    for f in range(0, k, _LINE):
        prefetch(factors, row, f)


@kernel
def _fresh_gradient(logistic, value, score):
    """:func:`_gradient_of_score`, compiled out of line for the grouped loop's rare recomputation.

    The sigmoid's exp and log, inlined there three more times, made the
    logistic kernel take about twice as long to compile, for a path that
    3-5% of groups take. The score and the norms are recomputed inline
    (:func:`_group_step`).
    """
    return _gradient_of_score(logistic, value, score)


@inline_kernel
def _group_step(
    stale,
    logistic,
    user_factors,
    u,
    item_factors,
    i,
    value,
    gradient,
    term,
    norms,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    weights,
    t,
    k,
):
    """Apply a grouped entry's step, recomputing its ``gradient`` first if it is ``stale``.

    Returns the entry's loss term (:func:`_entry_gradient`): ``term``, or the
    recomputed one. Out-of-line code here costs the hot path: computing the
    score and the norms in an out-of-line function (or the whole step) made
    the grouped epoch 2.6-3 times as slow, though only 3-5% of groups take
    this branch. The kernel now takes about twice as long to compile (about
    5 s more per signature at k=32; see bench/README.md, session 13).
    """
    if stale:
        score, norms = _score_and_norms(
            user_factors, u, item_factors, i, user_bias, item_bias, user_acc, k
        )
        fresh, term = _fresh_gradient(logistic, value, score)
        gradient = _weighted(fresh, weights, t)
    _sgd_step(
        user_factors, u, item_factors, i, gradient, norms, user_bias, item_bias, user_acc,
        item_acc, lr, l2, k,
    )  # fmt: skip
    return term


@inline_kernel
def _sgd_one_at_a_time(
    logistic,
    rows,
    cols,
    values,
    start,
    end,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    weights,
    block_start,
    total,
    product,
    k,
):
    """One SGD step per entry of ``start:end``, in storage order, each right after its gradient.

    Returns the block's data loss: the running ``(total, product)`` of the
    entries before ``start`` (of the block that starts at ``block_start``),
    with each entry's loss added before its step (:func:`_add_term`).
    """
    for t in range(start, end):
        # Unsigned indices: numba wraps negative signed ones around (a select
        # and the array's length per use); the ids are checked before any
        # kernel runs. Same bits, about 60 fewer instructions per rating.
        entry = np.uint64(t)
        u = np.uint64(rows[entry])
        i = np.uint64(cols[entry])
        if t + _ITEM_PREFETCH_AHEAD < end:
            _prefetch_row(item_factors, cols[np.uint64(t + _ITEM_PREFETCH_AHEAD)], k)
        gradient, term, norms = _entry_gradient(
            logistic, user_factors, u, item_factors, i, values[entry], user_bias, item_bias,
            user_acc, k,
        )  # fmt: skip
        gradient = _weighted(gradient, weights, t)
        total, product = _add_term(logistic, total, product, term, weights, t, t - block_start)
        _sgd_step(
            user_factors,
            u,
            item_factors,
            i,
            gradient,
            norms,
            user_bias,
            item_bias,
            user_acc,
            item_acc,
            lr,
            l2,
            k,
        )
    if logistic:
        return total - math.log(product)
    return total


@inline_kernel
def _sgd_grouped(
    logistic,
    rows,
    cols,
    values,
    start,
    end,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    weights,
    k,
):
    """Apply one SGD step per entry of ``start:end``, exactly as one at a time in storage order.

    Entries go in groups of ``LANES`` (4, written out by hand: numba has no
    unrolling directive). All four gradients are computed first, from the
    factors as they are at the start of the group, then the four steps are
    applied in order, while the user rows ``PREFETCH_AHEAD`` entries ahead
    are requested. The four score computations are independent, so the
    CPU overlaps them; one at a time, each waits for the previous entry's
    update (the same user, in the layout's order), and for the logistic loss
    the exp in the sigmoid made that chain the bottleneck. When two entries
    of a group share a user or an item (about 3% of groups on the bench data),
    the later gradients are recomputed after the earlier steps, so the result
    is bit for bit that of the one-at-a-time loop (a kernel test checks it),
    and so is the returned data loss (each entry's added before its step, in
    storage order).

    Only the logistic kernel uses it. The squared loss's chain is short: in
    side-by-side runs (k=32, one and two threads) the grouped squared epoch,
    which needs the four-part layout, was 3-15% slower than stepping one at a
    time on the two-part layout.
    """
    total = 0.0
    product = 1.0
    idx = start
    while idx + LANES <= end:
        if idx + PREFETCH_AHEAD + LANES <= end:
            for lane in range(LANES):
                _prefetch_row(user_factors, rows[idx + PREFETCH_AHEAD + lane], k)
        u0, u1, u2, u3 = rows[idx], rows[idx + 1], rows[idx + 2], rows[idx + 3]
        i0, i1, i2, i3 = cols[idx], cols[idx + 1], cols[idx + 2], cols[idx + 3]
        y0, y1, y2, y3 = values[idx], values[idx + 1], values[idx + 2], values[idx + 3]
        g0, term0, norms0 = _entry_gradient(
            logistic, user_factors, u0, item_factors, i0, y0, user_bias, item_bias, user_acc, k
        )
        g1, term1, norms1 = _entry_gradient(
            logistic, user_factors, u1, item_factors, i1, y1, user_bias, item_bias, user_acc, k
        )
        g2, term2, norms2 = _entry_gradient(
            logistic, user_factors, u2, item_factors, i2, y2, user_bias, item_bias, user_acc, k
        )
        g3, term3, norms3 = _entry_gradient(
            logistic, user_factors, u3, item_factors, i3, y3, user_bias, item_bias, user_acc, k
        )
        g0 = _weighted(g0, weights, idx)
        g1 = _weighted(g1, weights, idx + 1)
        g2 = _weighted(g2, weights, idx + 2)
        g3 = _weighted(g3, weights, idx + 3)
        position = idx - start
        total, product = _add_term(logistic, total, product, term0, weights, idx, position)
        # Bitwise | keeps this one test branch-free.
        shared = ((u0 == u1) | (u0 == u2) | (u0 == u3) | (u1 == u2) | (u1 == u3) | (u2 == u3)) | (
            (i0 == i1) | (i0 == i2) | (i0 == i3) | (i1 == i2) | (i1 == i3) | (i2 == i3)
        )
        _sgd_step(
            user_factors, u0, item_factors, i0, g0, norms0, user_bias, item_bias, user_acc,
            item_acc, lr, l2, k,
        )  # fmt: skip
        term1 = _group_step(
            shared, logistic, user_factors, u1, item_factors, i1, y1, g1, term1, norms1,
            user_bias, item_bias, user_acc, item_acc, lr, l2, weights, idx + 1, k,
        )  # fmt: skip
        total, product = _add_term(logistic, total, product, term1, weights, idx + 1, position + 1)
        term2 = _group_step(
            shared, logistic, user_factors, u2, item_factors, i2, y2, g2, term2, norms2,
            user_bias, item_bias, user_acc, item_acc, lr, l2, weights, idx + 2, k,
        )  # fmt: skip
        total, product = _add_term(logistic, total, product, term2, weights, idx + 2, position + 2)
        term3 = _group_step(
            shared, logistic, user_factors, u3, item_factors, i3, y3, g3, term3, norms3,
            user_bias, item_bias, user_acc, item_acc, lr, l2, weights, idx + 3, k,
        )  # fmt: skip
        total, product = _add_term(logistic, total, product, term3, weights, idx + 3, position + 3)
        idx += LANES
    return _sgd_one_at_a_time(
        logistic, rows, cols, values, idx, end, user_factors, item_factors,
        user_bias, item_bias, user_acc, item_acc, lr, l2, weights, start, total, product, k,
    )  # fmt: skip


@kernel
def sgd_block_squared(
    rows,
    cols,
    values,
    start,
    end,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    weights=None,
    kernels=None,
):
    """Run SGD on the squared loss over entries ``start:end``, in storage order.

    Per entry ``(u, i, r)`` with error ``e = r - s`` (``s`` the score), applies the
    stochastic gradient step of ``0.5 * e**2 + 0.5 * l2 * (|p_u|^2 + |q_i|^2
    [+ b_u^2 + b_i^2])``. Updates factors, biases and accumulators in place and
    returns the data loss ``sum 0.5 * w * e**2``, each entry's before its step.
    """
    return _sgd_one_at_a_time(
        False, rows, cols, values, start, end, user_factors, item_factors,
        user_bias, item_bias, user_acc, item_acc, lr, l2, weights, start, 0.0, 1.0,
        row_length(user_factors, kernels),
    )  # fmt: skip


@kernel
def sgd_block_logistic(
    rows,
    cols,
    values,
    start,
    end,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    weights=None,
    kernels=None,
):
    """Run SGD on the logistic loss over entries ``start:end``, in storage order.

    Per entry ``(u, i, y)`` with ``y`` in {-1, +1} and score ``s``, applies the
    stochastic gradient step of ``log(1 + exp(-y * s)) + 0.5 * l2 * (...)``;
    the data-loss derivative is ``-y * sigmoid(-y * s)``. Updates factors,
    biases and accumulators in place and returns the data loss ``sum w *
    log(1 + exp(-y * s))``, each entry's before its step.
    """
    return _sgd_grouped(
        True,
        rows,
        cols,
        values,
        start,
        end,
        user_factors,
        item_factors,
        user_bias,
        item_bias,
        user_acc,
        item_acc,
        lr,
        l2,
        weights,
        row_length(user_factors, kernels),
    )


@kernel
def sgd_block_logistic_one_at_a_time(
    rows,
    cols,
    values,
    start,
    end,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    weights=None,
    kernels=None,
):
    """Like :func:`sgd_block_logistic` (the same bits), one entry at a time.

    Slower per epoch, but it compiles in a fraction of the grouped kernel's
    time: small fits use it (see :meth:`fastmf._losses.Loss.kernels_for`).
    """
    return _sgd_one_at_a_time(
        True, rows, cols, values, start, end, user_factors, item_factors,
        user_bias, item_bias, user_acc, item_acc, lr, l2, weights, start, 0.0, 1.0,
        row_length(user_factors, kernels),
    )  # fmt: skip


def sgd_block(
    loss, rows, cols, values, start, end, user_factors, item_factors,
    user_bias, item_bias, user_acc, item_acc, lr, l2, weights,
):  # fmt: skip
    """Run the SGD block kernel of ``loss``, a :class:`fastmf._losses.KernelSet`.

    Callable from kernels only. ``loss`` is a compile-time choice: the calling
    kernel compiles that kernel set's code and no other. Returns the block's
    data loss, summed before each step (float64).
    """
    raise NotImplementedError("sgd_block is called from compiled kernels only")


@overload(sgd_block, inline="always")
def _sgd_block_for(
    loss, rows, cols, values, start, end, user_factors, item_factors,
    user_bias, item_bias, user_acc, item_acc, lr, l2, weights,
):  # fmt: skip
    block_kernel = chosen(loss).sgd_block

    def run(
        loss, rows, cols, values, start, end, user_factors, item_factors,
        user_bias, item_bias, user_acc, item_acc, lr, l2, weights,
    ):  # fmt: skip
        return block_kernel(
            rows, cols, values, start, end, user_factors, item_factors,
            user_bias, item_bias, user_acc, item_acc, lr, l2, weights, loss,
        )  # fmt: skip

    return run


def block_loss(loss, rows, cols, values, start, end, user_factors, item_factors, user_bias,
               item_bias, weights):  # fmt: skip
    """Return the data loss over entries ``start:end`` of ``loss``, a ``KernelSet``.

    Callable from compiled kernels only.
    """
    raise NotImplementedError("block_loss is called from compiled kernels only")


@overload(block_loss, inline="always")
def _block_loss_for(
    loss, rows, cols, values, start, end, user_factors, item_factors, user_bias, item_bias, weights
):
    loss_kernel = chosen(loss).block_loss

    def run(loss, rows, cols, values, start, end, user_factors, item_factors, user_bias, item_bias,
            weights):  # fmt: skip
        return loss_kernel(
            rows, cols, values, start, end, user_factors, item_factors, user_bias, item_bias,
            weights, loss,
        )  # fmt: skip

    return run


@kernel
def sgd_epoch_serial(
    loss,
    rows,
    cols,
    values,
    block_offsets,
    schedule,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    out,
    weights=None,
):
    """Run one SGD epoch: every block of ``schedule``, stratum by stratum, on one thread.

    Updates factors, biases and accumulators in place, and writes each
    block's data loss, summed during its pass before each step, into ``out``
    (float64, block order). Starts no thread pool.
    """
    for stratum in range(schedule.shape[0]):
        for slot in range(schedule.shape[1]):
            block = schedule[stratum, slot]
            out[block] = sgd_block(
                loss,
                rows,
                cols,
                values,
                block_offsets[block],
                block_offsets[block + 1],
                user_factors,
                item_factors,
                user_bias,
                item_bias,
                user_acc,
                item_acc,
                lr,
                l2,
                weights,
            )


@parallel_kernel
def sgd_epoch_parallel(
    loss,
    rows,
    cols,
    values,
    block_offsets,
    schedule,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    out,
    weights=None,
):
    """Run one SGD epoch like :func:`sgd_epoch_serial`, the blocks of a stratum in parallel.

    The blocks of one stratum touch disjoint rows (of factors, biases and
    accumulators) and each block is run by one thread in storage order, so
    the result is bit-for-bit that of :func:`sgd_epoch_serial`, whatever the
    number of threads.
    """
    for stratum in range(schedule.shape[0]):
        for slot in numba.prange(schedule.shape[1]):
            block = schedule[stratum, slot]
            out[block] = sgd_block(
                loss,
                rows,
                cols,
                values,
                block_offsets[block],
                block_offsets[block + 1],
                user_factors,
                item_factors,
                user_bias,
                item_bias,
                user_acc,
                item_acc,
                lr,
                l2,
                weights,
            )


# ------------------------------------------------------------ sampled losses
# Implicit feedback: every stored entry is a positive, its value a confidence
# weight, and the negatives are drawn while the pass runs. A block draws them
# from its own item stripe only, so a negative's item row is one that no other
# thread is updating (the stratum's blocks share no item stripe), and from its
# own seeded splitmix64 stream, so that the draws (and the result) are the same
# for any number of threads. The layout keeps each user's items in a block
# sorted (``Loss.shuffle`` is False), so "has the user interacted with this
# item?" is a binary search in the user's run: every interaction of the user
# with an item of this stripe is in this block.
# Extra arguments of the sampled block kernels: item_lo, item_hi (the block's
# item stripe, internal ids), state (uint64, the block's stream for this
# epoch), n_negatives (int64), negative_weight (float32), popularity (bool:
# draw negatives in proportion to their interactions in the block, by picking
# a random entry's item, instead of uniformly from the stripe) and update
# (bool: False only adds up the sampled loss, changing nothing). They return
# the block's sampled data loss (float64), summed before each update as LIBMF
# does: the objective costs no second pass.

# A draw that hits an item the user has interacted with is redrawn, up to this
# many times; then that negative is skipped (a user who has most items of a
# stripe). Rejection sampling keeps the draw exact for everyone else.
MAX_NEGATIVE_DRAWS = 8


@inline_kernel
def _in_sorted(cols, lo, hi, item):
    """Return whether ``item`` is among ``cols[lo:hi]``, which is sorted (binary search)."""
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if cols[mid] < item:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and cols[lo] == item


@inline_kernel
def _draw_negative(state, cols, run_start, run_end, start, end, item_lo, item_hi, popularity):
    """Draw an item of the stripe that the user (run ``run_start:run_end``) has not interacted with.

    Returns ``(state, item)``; ``item`` is -1 when ``MAX_NEGATIVE_DRAWS`` draws
    all hit the user's own items.
    """
    for _ in range(MAX_NEGATIVE_DRAWS):
        state, draw = splitmix64(state)
        if popularity:
            item = np.int64(cols[start + np.int64(draw % np.uint64(end - start))])
        else:
            item = item_lo + np.int64(draw % np.uint64(item_hi - item_lo))
        if not _in_sorted(cols, run_start, run_end, item):
            return state, item
    return state, np.int64(-1)


@inline_kernel
def _bpr_step(user_factors, u, item_factors, i, j, weight, item_bias, user_acc, item_acc, lr, l2,
              update):  # fmt: skip
    """One BPR step on the triple (u, i, j); returns its loss ``weight * log(1 + exp(-x))``.

    ``x = p_u . (q_i - q_j) [+ b_i - b_j]``; with ``g = weight * sigmoid(-x)``
    the steps are ``p_u += lr_u (g (q_i - q_j) - l2 p_u)``,
    ``q_i += lr_i (g p_u - l2 q_i)``, ``q_j += lr_j (-g p_u - l2 q_j)``, all
    from the old values (likewise ``b_i``, ``b_j``), and AdaGrad per row as
    in :func:`_sgd_step`. The user bias cancels in ``x``: it is not learned.
    """
    k = user_factors.shape[1]
    margin = np.float32(0.0)
    for f in range(k):
        margin += user_factors[u, f] * (item_factors[i, f] - item_factors[j, f])
    if item_bias is not None:
        margin += item_bias[i] - item_bias[j]
    loss = weight * np.float64(_softplus(-margin))
    if not update:
        return loss
    g = weight * _sigmoid_of_negative(margin)
    lr_user = lr
    lr_i = lr
    lr_j = lr
    if user_acc is not None:  # from the accumulators before this step, as in _sgd_step
        lr_user = _adagrad_step_size(lr, user_acc[u])
        lr_i = _adagrad_step_size(lr, item_acc[i])
        lr_j = _adagrad_step_size(lr, item_acc[j])
    sq_user = np.float32(0.0)
    sq_i = np.float32(0.0)
    sq_j = np.float32(0.0)
    if item_bias is not None:
        b_i = item_bias[i]
        b_j = item_bias[j]
        grad_i = g - l2 * b_i
        grad_j = -g - l2 * b_j
        item_bias[i] = b_i + lr_i * grad_i
        item_bias[j] = b_j + lr_j * grad_j
        sq_i += grad_i * grad_i
        sq_j += grad_j * grad_j
    for f in range(k):
        p = user_factors[u, f]
        qi = item_factors[i, f]
        qj = item_factors[j, f]
        grad_user = g * (qi - qj) - l2 * p
        grad_i = g * p - l2 * qi
        grad_j = -g * p - l2 * qj
        user_factors[u, f] = p + lr_user * grad_user
        item_factors[i, f] = qi + lr_i * grad_i
        sq_user += grad_user * grad_user
        sq_i += grad_i * grad_i
        sq_j += grad_j * grad_j
        item_factors[j, f] = qj + lr_j * grad_j
    if user_acc is not None:
        per_item_coord = np.float32(1.0) / np.float32(k + 1 if item_bias is not None else k)
        user_acc[u] += sq_user * (np.float32(1.0) / np.float32(k))
        item_acc[i] += sq_i * per_item_coord
        item_acc[j] += sq_j * per_item_coord
    return loss


@inline_kernel
def _pointwise_step(user_factors, u, item_factors, i, label, weight, user_bias, item_bias,
                    user_acc, item_acc, lr, l2, update):  # fmt: skip
    """One logistic step on (u, i) with ``label`` +1 or -1; returns its weighted loss.

    The loss is ``weight * log(1 + exp(-label * s))``; the step is
    :func:`_sgd_step` with ``g = label * weight * sigmoid(-label * s)``.
    """
    k = user_factors.shape[1]
    score, norms = _score_and_norms(
        user_factors, u, item_factors, i, user_bias, item_bias, user_acc, k
    )
    margin = label * score
    loss = weight * np.float64(_softplus(-margin))
    if update:
        gradient = label * weight * _sigmoid_of_negative(margin)
        _sgd_step(
            user_factors, u, item_factors, i, gradient, norms, user_bias, item_bias, user_acc,
            item_acc, lr, l2, k,
        )  # fmt: skip
    return loss


@inline_kernel
def _sampled_pass(bpr, rows, cols, values, start, end, item_lo, item_hi, state, user_factors,
                  item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2, n_negatives,
                  negative_weight, popularity, update):  # fmt: skip
    """Visit every positive of ``start:end`` with its sampled negatives; return the loss.

    A block holds each user's run of positives contiguously (sorted by item).
    Each run is visited from a random rotation (a fresh one every epoch), so
    that no item is always a user's first step.
    """
    total = 0.0
    if end <= start:
        return total
    one = np.float32(1.0)
    run_start = start
    while run_start < end:
        u = rows[run_start]
        run_end = run_start + 1
        while run_end < end and rows[run_end] == u:
            run_end += 1
        length = run_end - run_start
        state, draw = splitmix64(state)
        rotation = np.int64(draw % np.uint64(length))
        for step in range(length):
            offset = rotation + step
            if offset >= length:
                offset -= length
            idx = run_start + offset
            i = cols[idx]
            weight = values[idx]
            if not bpr:
                total += _pointwise_step(
                    user_factors, u, item_factors, i, one, weight, user_bias, item_bias,
                    user_acc, item_acc, lr, l2, update,
                )  # fmt: skip
            for _ in range(n_negatives):
                state, j = _draw_negative(
                    state, cols, run_start, run_end, start, end, item_lo, item_hi, popularity
                )
                if j < 0:
                    continue
                if bpr:
                    total += _bpr_step(
                        user_factors, u, item_factors, i, j, weight, item_bias, user_acc,
                        item_acc, lr, l2, update,
                    )  # fmt: skip
                else:
                    total += _pointwise_step(
                        user_factors, u, item_factors, j, -one, negative_weight, user_bias,
                        item_bias, user_acc, item_acc, lr, l2, update,
                    )  # fmt: skip
        run_start = run_end
    return total


@kernel
def sgd_block_bpr(rows, cols, values, start, end, item_lo, item_hi, state, user_factors,
                  item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2, n_negatives,
                  negative_weight, popularity, update):  # fmt: skip
    """Run BPR SGD over the positives ``start:end``; return the sampled loss (float64).

    Per positive ``(u, i)`` with weight ``c`` and each of ``n_negatives``
    sampled items ``j``: a step on ``c * -log sigmoid(s_ui - s_uj)`` plus the
    L2 penalty (see :func:`_bpr_step`). ``negative_weight`` is unused.
    """
    return _sampled_pass(
        True, rows, cols, values, start, end, item_lo, item_hi, state, user_factors,
        item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2, n_negatives,
        negative_weight, popularity, update,
    )  # fmt: skip


@kernel
def sgd_block_sampled_logistic(rows, cols, values, start, end, item_lo, item_hi, state,
                               user_factors, item_factors, user_bias, item_bias, user_acc,
                               item_acc, lr, l2, n_negatives, negative_weight, popularity,
                               update):  # fmt: skip
    """Run pointwise logistic SGD over the positives ``start:end`` and sampled negatives.

    Per positive ``(u, i)`` with weight ``c``: a step on ``c * log(1 + exp(-s_ui))``,
    then one on ``negative_weight * log(1 + exp(s_uj))`` for each of
    ``n_negatives`` sampled items ``j``. Returns the sampled loss (float64).
    """
    return _sampled_pass(
        False, rows, cols, values, start, end, item_lo, item_hi, state, user_factors,
        item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2, n_negatives,
        negative_weight, popularity, update,
    )  # fmt: skip


def sampled_block(loss, rows, cols, values, start, end, item_lo, item_hi, state, user_factors,
                  item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2, n_negatives,
                  negative_weight, popularity, update):  # fmt: skip
    """Run the sampled SGD block kernel of ``loss`` (a ``KernelSet``); callable from kernels."""
    raise NotImplementedError("sampled_block is called from compiled kernels only")


@overload(sampled_block, inline="always")
def _sampled_block_for(loss, rows, cols, values, start, end, item_lo, item_hi, state,
                       user_factors, item_factors, user_bias, item_bias, user_acc, item_acc, lr,
                       l2, n_negatives, negative_weight, popularity, update):  # fmt: skip
    block_kernel = chosen(loss).sgd_block

    def run(loss, rows, cols, values, start, end, item_lo, item_hi, state, user_factors,
            item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2, n_negatives,
            negative_weight, popularity, update):  # fmt: skip
        return block_kernel(
            rows, cols, values, start, end, item_lo, item_hi, state, user_factors,
            item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2, n_negatives,
            negative_weight, popularity, update,
        )  # fmt: skip

    return run


@inline_kernel
def _sampled_slot(loss, rows, cols, values, block_offsets, block, item_bounds, block_states,
                  user_factors, item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2,
                  n_negatives, negative_weight, popularity, update, out):  # fmt: skip
    stripe = block % (item_bounds.shape[0] - 1)
    out[block] = sampled_block(
        loss, rows, cols, values, block_offsets[block], block_offsets[block + 1],
        np.int64(item_bounds[stripe]), np.int64(item_bounds[stripe + 1]), block_states[block],
        user_factors, item_factors, user_bias, item_bias, user_acc, item_acc, lr, l2,
        n_negatives, negative_weight, popularity, update,
    )  # fmt: skip


@kernel
def sampled_epoch_serial(loss, rows, cols, values, block_offsets, schedule, item_bounds,
                         block_states, user_factors, item_factors, user_bias, item_bias, user_acc,
                         item_acc, lr, l2, n_negatives, negative_weight, popularity, update,
                         out):  # fmt: skip
    """Run one epoch of a sampled loss over ``schedule`` on one thread.

    ``item_bounds`` (int64, grid + 1): the item stripes; ``block_states``
    (uint64, n_blocks): each block's random stream this epoch. Writes each
    block's sampled loss into ``out`` (float64, n_blocks).
    """
    for stratum in range(schedule.shape[0]):
        for slot in range(schedule.shape[1]):
            _sampled_slot(
                loss, rows, cols, values, block_offsets, schedule[stratum, slot], item_bounds,
                block_states, user_factors, item_factors, user_bias, item_bias, user_acc,
                item_acc, lr, l2, n_negatives, negative_weight, popularity, update, out,
            )  # fmt: skip


@parallel_kernel
def sampled_epoch_parallel(loss, rows, cols, values, block_offsets, schedule, item_bounds,
                           block_states, user_factors, item_factors, user_bias, item_bias,
                           user_acc, item_acc, lr, l2, n_negatives, negative_weight, popularity,
                           update, out):  # fmt: skip
    """Like :func:`sampled_epoch_serial`, the blocks of a stratum in parallel (same bits)."""
    for stratum in range(schedule.shape[0]):
        for slot in numba.prange(schedule.shape[1]):
            _sampled_slot(
                loss, rows, cols, values, block_offsets, schedule[stratum, slot], item_bounds,
                block_states, user_factors, item_factors, user_bias, item_bias, user_acc,
                item_acc, lr, l2, n_negatives, negative_weight, popularity, update, out,
            )  # fmt: skip


# ----------------------------------------------------------------- objective
@inline_kernel
def _data_loss(logistic, rows, cols, values, start, end, user_factors, item_factors, user_bias,
               item_bias, weights, k):  # fmt: skip
    """Return the data loss over entries ``start:end``, in float64, with no step.

    The logistic terms are the SGD passes' likelihoods (:func:`_sigmoids`),
    multiplied ``LOG_EVERY`` at a time before one log (:func:`_add_term`):
    a ``log1p(exp(.))`` per entry made this pass (the validation after every
    epoch) twice as long. Margins below ``_EXACT_MARGIN`` add ``-margin``.
    """
    total = 0.0
    product = 1.0
    for idx in range(start, end):
        if idx + _ITEM_PREFETCH_AHEAD < end:
            _prefetch_row(item_factors, cols[idx + _ITEM_PREFETCH_AHEAD], k)
        if not logistic:
            _, term, _ = _entry_gradient(
                False, user_factors, rows[idx], item_factors, cols[idx], values[idx], user_bias,
                item_bias, None, k,
            )  # fmt: skip
            total, product = _add_term(False, total, product, term, weights, idx, idx - start)
            continue
        score = _score(user_factors, rows[idx], item_factors, cols[idx], user_bias, item_bias, k)
        margin = values[idx] * score
        if margin < _EXACT_MARGIN:
            # exp(m) is below 1e-34: the loss is -m to float64's precision
            # (the SGD passes cap it at 87.3 instead, see _LIKELIHOOD_FLOOR).
            total += _weighted_loss(-np.float64(margin), weights, idx)
        else:
            _, likelihood = _sigmoids(margin)
            total, product = _add_term(True, total, product, likelihood, weights, idx, idx - start)
    if logistic:
        return total - math.log(product)
    return total


@kernel
def block_loss_squared(
    rows, cols, values, start, end, user_factors, item_factors, user_bias, item_bias,
    weights=None, kernels=None,
):  # fmt: skip
    """Return ``sum 0.5 * w * (r - s)**2`` over entries ``start:end``, in float64."""
    return _data_loss(
        False, rows, cols, values, start, end, user_factors, item_factors, user_bias, item_bias,
        weights, row_length(user_factors, kernels),
    )  # fmt: skip


@kernel
def block_loss_logistic(
    rows, cols, values, start, end, user_factors, item_factors, user_bias, item_bias,
    weights=None, kernels=None,
):  # fmt: skip
    """Return ``sum w * log(1 + exp(-y * s))`` over entries ``start:end``, in float64."""
    return _data_loss(
        True, rows, cols, values, start, end, user_factors, item_factors, user_bias, item_bias,
        weights, row_length(user_factors, kernels),
    )  # fmt: skip


@kernel
def objective_serial(
    loss,
    rows,
    cols,
    values,
    block_offsets,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    out,
    weights=None,
):
    """Write each block's data loss (``loss.block_loss``) into ``out`` (float64), on one thread.

    Squared: ``sum 0.5 * (r - s)**2``; logistic: ``sum log(1 + exp(-y s))``, with
    ``s`` the score (``p_u . q_i``, plus ``b_u + b_i`` when biases are given).
    """
    for block in range(block_offsets.shape[0] - 1):
        out[block] = block_loss(
            loss,
            rows,
            cols,
            values,
            block_offsets[block],
            block_offsets[block + 1],
            user_factors,
            item_factors,
            user_bias,
            item_bias,
            weights,
        )


@parallel_kernel
def objective_parallel(
    loss,
    rows,
    cols,
    values,
    block_offsets,
    user_factors,
    item_factors,
    user_bias,
    item_bias,
    out,
    weights=None,
):
    """Like :func:`objective_serial`, blocks in parallel (same bits)."""
    for block in numba.prange(block_offsets.shape[0] - 1):
        out[block] = block_loss(
            loss,
            rows,
            cols,
            values,
            block_offsets[block],
            block_offsets[block + 1],
            user_factors,
            item_factors,
            user_bias,
            item_bias,
            weights,
        )


@kernel
def weighted_squared_norms(factors, counts):
    """Return ``sum_r counts[r] * |factors[r]|^2`` in float64, rows in order.

    ``counts``: float64, shape (n_rows,). Computed here rather than with
    numpy's ``@``, which calls BLAS: OpenBLAS threads keep spinning after a
    call and would steal the cores from the next parallel epoch.
    """
    total = 0.0
    for r in range(factors.shape[0]):
        row = 0.0
        for f in range(factors.shape[1]):
            row += np.float64(factors[r, f]) * np.float64(factors[r, f])
        total += counts[r] * row
    return total


@parallel_kernel
def stripe_squared_norms(factors, counts, bounds, out):
    """``out[s] = weighted_squared_norms`` of rows ``bounds[s]:bounds[s + 1]``, stripes in parallel.

    ``bounds``: int64, shape (n_stripes + 1,); ``out``: float64, (n_stripes,).
    Each stripe's sum is the serial one, so adding ``out`` in order gives the
    same bits for any thread count (and as a cluster's stripes).
    """
    for stripe in numba.prange(bounds.shape[0] - 1):
        lo = bounds[stripe]
        hi = bounds[stripe + 1]
        out[stripe] = weighted_squared_norms(factors[lo:hi], counts[lo:hi])


# ---------------------------------------------------------------- prediction
@kernel
def predict_coo(rows, cols, user_factors, item_factors, out):
    """Write ``p_u . q_i`` for each pair into ``out`` (float32, shape (n,)) in place."""
    # A plain loop, not _dot's intrinsic: numba bounds-checks it when
    # NUMBA_BOUNDSCHECK=1 (the intrinsics' loads are not checked).
    for idx in range(rows.shape[0]):
        u, i = rows[idx], cols[idx]
        acc = np.float32(0.0)
        for f in range(user_factors.shape[1]):
            acc += user_factors[u, f] * item_factors[i, f]
        out[idx] = acc


# ---------------------------------------------------------------- serving
# Items scored per pass of a group of queries: the group's 4 rows of scores
# (4 KiB) and the tile of item factors stay in the L1 cache. Side by side on
# 50k users x 20k items, k=32 (one thread): 256 and 512 items were within
# noise of each other; 256 scaled better to 2 threads.
SCORE_TILE = 256
_GROUP = 4  # queries scored together: each item factor loaded serves 4 rows
CHUNK_QUERIES = 16 * _GROUP  # queries per task of the parallel pass (with their own scratch)


@inline_kernel
def _tile_products(query_factors, u0, u1, u2, u3, item_factors_t, start, stop, scores):
    """``scores[r, t] = query_factors[u_r] . item t`` for the items ``start:stop`` of a tile.

    Sums over the factors in order, 4 factors per pass, so that each row of
    ``scores`` is loaded and stored once per 4 factors. Every score of a
    (query, item) pair is computed by this one loop, which is what makes a
    pair's score the same bits whichever side of it is the query.
    """
    k = item_factors_t.shape[0]
    width = stop - start
    s0, s1, s2, s3 = scores[0], scores[1], scores[2], scores[3]
    for t in range(width):
        s0[t] = 0.0
        s1[t] = 0.0
        s2[t] = 0.0
        s3[t] = 0.0
    f = 0
    while f + 4 <= k:
        q0 = item_factors_t[f, start:stop]
        q1 = item_factors_t[f + 1, start:stop]
        q2 = item_factors_t[f + 2, start:stop]
        q3 = item_factors_t[f + 3, start:stop]
        p00, p01 = query_factors[u0, f], query_factors[u0, f + 1]
        p02, p03 = query_factors[u0, f + 2], query_factors[u0, f + 3]
        p10, p11 = query_factors[u1, f], query_factors[u1, f + 1]
        p12, p13 = query_factors[u1, f + 2], query_factors[u1, f + 3]
        p20, p21 = query_factors[u2, f], query_factors[u2, f + 1]
        p22, p23 = query_factors[u2, f + 2], query_factors[u2, f + 3]
        p30, p31 = query_factors[u3, f], query_factors[u3, f + 1]
        p32, p33 = query_factors[u3, f + 2], query_factors[u3, f + 3]
        for t in range(width):
            x0, x1, x2, x3 = q0[t], q1[t], q2[t], q3[t]
            s0[t] = s0[t] + p00 * x0 + p01 * x1 + p02 * x2 + p03 * x3
            s1[t] = s1[t] + p10 * x0 + p11 * x1 + p12 * x2 + p13 * x3
            s2[t] = s2[t] + p20 * x0 + p21 * x1 + p22 * x2 + p23 * x3
            s3[t] = s3[t] + p30 * x0 + p31 * x1 + p32 * x2 + p33 * x3
        f += 4
    while f < k:
        q = item_factors_t[f, start:stop]
        p0, p1 = query_factors[u0, f], query_factors[u1, f]
        p2, p3 = query_factors[u2, f], query_factors[u3, f]
        for t in range(width):
            s0[t] += p0 * q[t]
            s1[t] += p1 * q[t]
            s2[t] += p2 * q[t]
            s3[t] += p3 * q[t]
        f += 1


@inline_kernel
def _score_group(query_factors, queries, first, rows, item_factors_t, item_bias, offsets,
                 seen_indptr, seen_items, exclude, scores, seen, cursor, out_ids,
                 out_scores):  # fmt: skip
    """Top ``n`` items of queries ``first:first + rows`` (at most 4), written to ``out_*``.

    The items are visited a tile at a time: the 4 rows' dot products with
    the tile (:func:`_tile_products`), then per row the
    score ``(p . q + item_bias) + offset`` in float32, the excluded items set
    to -inf, and the selection: a tile enters it only when one of its scores
    beats the row's current n-th best (counted without branches, so the loop
    is vectorized). The lists are kept by score down, then id up
    (:func:`_insert_ranked`; items arrive in id order, so a tie never moves). ``seen``/``cursor``
    are scratch: each row's excluded items, sorted, and its position there.
    """
    n_items = item_factors_t.shape[1]
    n = out_ids.shape[1]
    used = 0
    for r in range(rows):
        row = first + r
        for slot in range(n):
            out_ids[row, slot] = -1
            out_scores[row, slot] = -np.inf
        cursor[r] = used
        if exclude:
            query = queries[row]
            for t in range(seen_indptr[query], seen_indptr[query + 1]):
                seen[used] = seen_items[t]
                used += 1
            seen[cursor[r] : used].sort()
        cursor[r + _GROUP] = used
    # Rows past the last query repeat it; their scores are never read.
    u0 = queries[first]
    u1 = queries[first + min(1, rows - 1)]
    u2 = queries[first + min(2, rows - 1)]
    u3 = queries[first + min(3, rows - 1)]
    for start in range(0, n_items, SCORE_TILE):
        width = min(SCORE_TILE, n_items - start)
        stop = start + width
        _tile_products(query_factors, u0, u1, u2, u3, item_factors_t, start, stop, scores)
        bias = item_bias[start:stop]
        for r in range(rows):
            row = first + r
            values = scores[r]
            c = cursor[r]
            while c < cursor[r + _GROUP] and seen[c] < stop:
                values[seen[c] - start] = -np.inf
                c += 1
            cursor[r] = c
            offset = offsets[row]
            worst = out_scores[row, n - 1]
            better = 0
            for t in range(width):
                score = (values[t] + bias[t]) + offset
                values[t] = score
                better += score > worst
            if better == 0:
                continue
            for t in range(width):
                if values[t] > worst:
                    _insert_ranked(out_ids, out_scores, row, start + t, values[t])
                    worst = out_scores[row, n - 1]


@inline_kernel
def _score_chunk(query_factors, queries, chunk, item_factors_t, item_bias, offsets, seen_indptr,
                 seen_items, exclude, out_ids, out_scores):  # fmt: skip
    """Score and select the queries of chunk ``chunk`` (16 groups of 4), with its own scratch."""
    n_queries = queries.shape[0]
    scores = np.empty((_GROUP, SCORE_TILE), dtype=np.float32)
    cursor = np.empty(2 * _GROUP, dtype=np.int64)
    low = chunk * CHUNK_QUERIES
    high = min(n_queries, low + CHUNK_QUERIES)
    most = 0
    if exclude:
        for row in range(low, high):
            most = max(most, seen_indptr[queries[row] + 1] - seen_indptr[queries[row]])
    seen = np.empty(_GROUP * most, dtype=seen_items.dtype)
    for first in range(low, high, _GROUP):
        _score_group(query_factors, queries, first, min(_GROUP, high - first), item_factors_t,
                     item_bias, offsets, seen_indptr, seen_items, exclude, scores, seen, cursor,
                     out_ids, out_scores)  # fmt: skip


@kernel
def score_top_n(query_factors, queries, item_factors_t, item_bias, offsets, seen_indptr,
                seen_items, exclude, out_ids, out_scores):  # fmt: skip
    """Per query, the ``n`` best items by ``(p . q + item_bias) + offset``, best first.

    ``query_factors`` (float32, (rows, k)) are indexed by ``queries``
    (int64); ``item_factors_t`` is the item factors transposed (float32,
    (k, n_items), C order); ``offsets`` (float32) is per query (the user's
    bias and the global mean). The items of the CSR ``seen_indptr``/
    ``seen_items`` row of a query are left out when ``exclude``. Writes
    ``out_ids`` (int64) and ``out_scores`` (float32), shape (n_queries, n);
    unfilled slots keep id -1 and score -inf. Every query's result depends on
    that query alone: the same bits in any batch and on any thread count.
    """
    for chunk in range((queries.shape[0] + CHUNK_QUERIES - 1) // (CHUNK_QUERIES)):
        _score_chunk(query_factors, queries, chunk, item_factors_t, item_bias, offsets,
                     seen_indptr, seen_items, exclude, out_ids, out_scores)  # fmt: skip


@parallel_kernel
def score_top_n_parallel(query_factors, queries, item_factors_t, item_bias, offsets, seen_indptr,
                         seen_items, exclude, out_ids, out_scores):  # fmt: skip
    """:func:`score_top_n`, chunks of 64 queries in parallel (the same result)."""
    for chunk in numba.prange((queries.shape[0] + CHUNK_QUERIES - 1) // (CHUNK_QUERIES)):
        _score_chunk(query_factors, queries, chunk, item_factors_t, item_bias, offsets,
                     seen_indptr, seen_items, exclude, out_ids, out_scores)  # fmt: skip


# Every row's neighbours at once (similar_items / similar_users of a large
# batch): the score of a pair of rows is the same dot product seen from either
# row, so each pair of tiles (a, b >= a) is scored once and its scores offered
# to the rows of both tiles, half the multiply-adds of scoring every row
# against every row. Candidates then arrive out of id order, so the selection
# compares (score, id) pairs rather than relying on the visiting order.


@inline_kernel
def _beats(score, item, worst_score, worst_item):
    """Whether candidate (``score``, ``item``) ranks before (``worst_score``, ``worst_item``)."""
    return score > worst_score or (score == worst_score and item < worst_item)


@inline_kernel
def _insert_ranked(out_ids, out_scores, row, item, score):
    """Put ``item`` into row ``row``'s list kept by score down, then id up."""
    slot = out_ids.shape[1] - 1
    # Strictly smaller scores first (the common case), then equal ones with larger ids.
    while slot > 0 and out_scores[row, slot - 1] < score:
        out_scores[row, slot] = out_scores[row, slot - 1]
        out_ids[row, slot] = out_ids[row, slot - 1]
        slot -= 1
    while slot > 0 and out_scores[row, slot - 1] == score and out_ids[row, slot - 1] > item:
        out_scores[row, slot] = out_scores[row, slot - 1]
        out_ids[row, slot] = out_ids[row, slot - 1]
        slot -= 1
    out_scores[row, slot] = score
    out_ids[row, slot] = item


@inline_kernel
def _offer(out_ids, out_scores, row, item, score):
    """Insert (``score``, ``item``) into row ``row``'s list if it ranks before the last entry."""
    n = out_ids.shape[1]
    if _beats(score, item, out_scores[row, n - 1], out_ids[row, n - 1]):
        _insert_ranked(out_ids, out_scores, row, item, score)


@inline_kernel
def _offer_hits(out_ids, out_scores, row, items_start, values, worst, hits):
    """Offer ``values[t]`` (item ``items_start + t``) for the ``hits`` entries ``>= worst``."""
    found = 0
    for t in range(values.shape[0]):
        if values[t] >= worst:
            _offer(out_ids, out_scores, row, items_start + t, values[t])
            found += 1
            if found == hits:
                break


@inline_kernel
def _neighbour_pairs(unit, unit_t, pair_a, pair_b, low, high, out_ids, out_scores, own_floor,
                     peer_floor):  # fmt: skip
    """Offer the scores of tile pairs ``low:high`` to the rows of both tiles.

    ``unit`` (float32, (n_rows, k)) and ``unit_t`` (its transpose, C order)
    hold the rows; ``pair_a``/``pair_b`` (int64) list tile pairs with
    ``pair_b >= pair_a``. The pair's scores are computed 4 rows of tile ``a``
    at a time into a block (256 x 256 float32, in the L2 cache); row ``i`` of
    tile ``a`` takes its candidates of tile ``b`` at once (itself excluded on
    the diagonal pair) and, off the diagonal, each row ``j`` of tile ``b``
    then takes the block's column ``j``. A row or column is scanned only for
    the scores that reach its current n-th best, counted first without
    branches (vectorized), and the scan stops at the last of them.

    ``own_floor``/``peer_floor`` (float32, (n_rows,), or None) serve the
    threaded pass, where each worker keeps lists of its own: a worker
    publishes each row's n-th best in ``own_floor`` after changing the row's
    list, and skips the scores below another worker's published value. Those
    cannot be among the row's final ``n``: the other worker holds ``n``
    better candidates (each pair is scored by one worker only), and its
    lists only improve. Ties pass, so the result stays the same bits; without
    it, both workers fill the top ``n`` of most rows from scratch.
    """
    n_rows = unit.shape[0]
    n = out_ids.shape[1]
    block = np.empty((SCORE_TILE + _GROUP, SCORE_TILE), dtype=np.float32)
    column_worst = np.empty(SCORE_TILE, dtype=np.float32)
    column_hits = np.empty(SCORE_TILE, dtype=np.int64)
    for p in range(low, high):
        a_start = pair_a[p] * SCORE_TILE
        a_stop = min(n_rows, a_start + SCORE_TILE)
        b_start = pair_b[p] * SCORE_TILE
        b_stop = min(n_rows, b_start + SCORE_TILE)
        width = b_stop - b_start
        diagonal = a_start == b_start
        for first in range(a_start, a_stop, _GROUP):
            rows = min(_GROUP, a_stop - first)
            # Rows past the tile's last repeat it; their scores are never offered.
            _tile_products(unit, first, first + min(1, rows - 1), first + min(2, rows - 1),
                           first + min(3, rows - 1), unit_t, b_start, b_stop,
                           block[first - a_start :])  # fmt: skip
            for r in range(rows):
                row = first + r
                values = block[row - a_start, :width]
                if diagonal:
                    values[row - b_start] = -np.inf
                worst = out_scores[row, n - 1]
                if peer_floor is not None:
                    worst = max(worst, peer_floor[row])
                hits = 0
                for t in range(width):
                    hits += values[t] >= worst
                if hits:
                    _offer_hits(out_ids, out_scores, row, b_start, values, worst, hits)
                    if own_floor is not None:
                        own_floor[row] = out_scores[row, n - 1]
        if diagonal:
            continue
        for t in range(width):
            column_worst[t] = out_scores[b_start + t, n - 1]
            if peer_floor is not None:
                column_worst[t] = max(column_worst[t], peer_floor[b_start + t])
            column_hits[t] = 0
        for r in range(a_stop - a_start):
            line = block[r]
            for t in range(width):
                column_hits[t] += line[t] >= column_worst[t]
        for t in range(width):
            if column_hits[t]:
                _offer_hits(out_ids, out_scores, b_start + t, a_start,
                            block[: a_stop - a_start, t], column_worst[t],
                            column_hits[t])  # fmt: skip
                if own_floor is not None:
                    own_floor[b_start + t] = out_scores[b_start + t, n - 1]


@inline_kernel
def _clear_lists(out_ids, out_scores):
    for row in range(out_ids.shape[0]):
        for slot in range(out_ids.shape[1]):
            out_ids[row, slot] = -1
            out_scores[row, slot] = -np.inf


@kernel
def neighbours_top_n(unit, unit_t, pair_a, pair_b, out_ids, out_scores):
    """Every row's ``n`` best other rows by dot product, best first, ties to the smaller id.

    Writes ``out_ids`` (int64) and ``out_scores`` (float32), shape
    (n_rows, n), ``n < n_rows``. A row's result is the set of its ``n`` best
    (score, id) pairs, which does not depend on the order the pairs were
    scored in: the same bits as :func:`score_top_n` with the row itself
    excluded, on any thread count.
    """
    _clear_lists(out_ids, out_scores)
    _neighbour_pairs(unit, unit_t, pair_a, pair_b, 0, pair_a.shape[0], out_ids, out_scores, None,
                     None)  # fmt: skip


@parallel_kernel
def neighbours_top_n_parallel(unit, unit_t, pair_a, pair_b, bounds, worker_ids, worker_scores,
                              worker_floors, out_ids, out_scores):  # fmt: skip
    """:func:`neighbours_top_n` with the tile pairs split among workers (the same result).

    Worker ``w`` scores pairs ``bounds[w]:bounds[w + 1]`` into its own lists
    ``worker_ids[w]``/``worker_scores[w]`` (so no two threads write one row),
    then each row's lists are merged. Worker ``w`` publishes its rows' n-th
    best scores in ``worker_floors[w]`` (float32, (workers, n_rows), set to
    -inf here) and skips the scores that the next worker's floors rule out
    (:func:`_neighbour_pairs`).
    """
    n_workers = bounds.shape[0] - 1
    worker_floors[:] = -np.inf
    for w in numba.prange(n_workers):
        _clear_lists(worker_ids[w], worker_scores[w])
        _neighbour_pairs(unit, unit_t, pair_a, pair_b, bounds[w], bounds[w + 1], worker_ids[w],
                         worker_scores[w], worker_floors[w],
                         worker_floors[(w + 1) % n_workers])  # fmt: skip
    n_rows, n = out_ids.shape
    for chunk in numba.prange((n_rows + SCORE_TILE - 1) // SCORE_TILE):
        for row in range(chunk * SCORE_TILE, min(n_rows, (chunk + 1) * SCORE_TILE)):
            for slot in range(n):
                out_ids[row, slot] = worker_ids[0, row, slot]
                out_scores[row, slot] = worker_scores[0, row, slot]
            for w in range(1, n_workers):
                for slot in range(n):
                    item = worker_ids[w, row, slot]
                    if item < 0:
                        break
                    _offer(out_ids, out_scores, row, item, worker_scores[w, row, slot])
