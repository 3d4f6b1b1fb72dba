"""Every kernel against the plain-numpy oracle in _reference.py."""

import os
import platform
import re

import numba
import numpy as np
import pytest
from _reference import entry_gradient, objective, sgd_epoch
from conftest import random_coo

from fastmf import _kernels
from fastmf._jit import FASTMATH_FLAGS, row_step
from fastmf._losses import FIXED_ROW_WIDTHS, LOSSES, SMALL_FIT_RATINGS

BLOCK = {"squared": _kernels.sgd_block_squared, "logistic": _kernels.sgd_block_logistic}


NONE = None  # an optional kernel array left out


def run_sgd(
    loss,
    rows,
    cols,
    values,
    order,
    P,
    Q,
    lr,
    l2,
    user_bias=NONE,
    item_bias=NONE,
    user_acc=NONE,
    item_acc=NONE,
):
    """Visit entries in `order` with the block kernel (a block stored in that order).

    Returns the data loss the kernel summed during the pass.
    """
    return BLOCK[loss](
        rows[order],
        cols[order],
        values[order],
        0,
        len(order),
        P,
        Q,
        user_bias,
        item_bias,
        user_acc,
        item_acc,
        np.float32(lr),
        np.float32(l2),
    )


def data_objective(loss, rows, cols, values, P, Q, user_bias=NONE, item_bias=NONE):
    block_loss = np.zeros(1)
    offsets = np.array([0, rows.size], dtype=np.int64)
    _kernels.objective_serial(
        LOSSES[loss].kernels,
        rows,
        cols,
        values,
        offsets,
        P,
        Q,
        user_bias,
        item_bias,
        block_loss,
    )
    return block_loss[0]


def factors(seed, m, n, k, scale=0.5):
    rng = np.random.default_rng(seed)
    return (
        (scale * rng.standard_normal((m, k))).astype(np.float32),
        (scale * rng.standard_normal((n, k))).astype(np.float32),
    )


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("k", [1, 3, 16])
def test_one_epoch_matches_reference(loss, k):
    rows, cols, values, (m, n) = random_coo(2, binary=loss == "logistic")
    P, Q = factors(3, m, n, k)
    order = np.random.default_rng(4).permutation(rows.size)
    # Visit some entries twice, so that updates build on updated rows.
    order = np.concatenate([order, order[:50]])
    lr, l2 = 0.05, 0.1
    P_ref, Q_ref, loss_ref = sgd_epoch(loss, rows, cols, values, order, P, Q, lr, l2)
    summed = run_sgd(loss, rows, cols, values, order, P, Q, lr, l2)
    np.testing.assert_allclose(P, P_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-4, atol=1e-5)
    # The loss summed during the pass: each entry's, before its own step.
    assert summed == pytest.approx(loss_ref, rel=1e-5)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("adagrad", [False, True])
def test_epoch_with_biases_and_adagrad_matches_reference(loss, use_bias, adagrad):
    rows, cols, values, (m, n) = random_coo(12, binary=loss == "logistic")
    P, Q = factors(13, m, n, 5)
    rng = np.random.default_rng(14)
    user_bias = (0.3 * rng.standard_normal(m)).astype(np.float32) if use_bias else NONE
    item_bias = (0.3 * rng.standard_normal(n)).astype(np.float32) if use_bias else NONE
    user_acc = np.ones(m, dtype=np.float32) if adagrad else NONE
    item_acc = np.ones(n, dtype=np.float32) if adagrad else NONE
    order = np.concatenate([rng.permutation(rows.size), rng.permutation(rows.size)[:60]])
    refs = [
        a.astype(np.float64) if a is not None else None
        for a in (user_bias, item_bias, user_acc, item_acc)
    ]
    P_ref, Q_ref, loss_ref = sgd_epoch(loss, rows, cols, values, order, P, Q, 0.05, 0.1, *refs)
    summed = run_sgd(
        loss, rows, cols, values, order, P, Q, 0.05, 0.1, user_bias, item_bias, user_acc, item_acc
    )
    np.testing.assert_allclose(P, P_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-4, atol=1e-5)
    assert summed == pytest.approx(loss_ref, rel=1e-5)
    for got, ref in zip((user_bias, item_bias, user_acc, item_acc), refs):
        if ref is not None:
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    if use_bias:
        # The objective's score includes the biases.
        got = data_objective(loss, rows, cols, values, P, Q, user_bias, item_bias)
        scores = np.einsum("ij,ij->i", P[rows].astype(float), Q[cols].astype(float))
        scores += user_bias[rows] + item_bias[cols]
        expected = (
            0.5 * (values - scores) ** 2 if loss == "squared" else np.logaddexp(0, -values * scores)
        ).sum()
        assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("width", FIXED_ROW_WIDTHS)
@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("small", [False, True])
def test_fixed_width_kernels_match_the_reference_and_the_general_ones(loss, small, width):
    # Fits of these ranks run kernels compiled for rows of exactly that many
    # factors (Loss.kernels_for); they must do what the general kernels and
    # the numpy oracle do: the same bits with a constant step; with AdaGrad
    # LLVM may reassociate the step-size arithmetic differently (last bits).
    code = LOSSES[loss]
    nnz = 10 if small else SMALL_FIT_RATINGS
    fixed, general = code.kernels_for(nnz, width), code.kernels_for(nnz, width + 1)
    assert (fixed.row_width, general.row_width) == (width, None)
    assert fixed.sgd_block is general.sgd_block
    rows, cols, values, (m, n) = random_coo(21, nnz=400, binary=loss == "logistic")
    rng = np.random.default_rng(22)
    order = np.concatenate([rng.permutation(rows.size), rng.permutation(rows.size)[:60]])
    rows, cols, values = rows[order], cols[order], values[order]
    weights = rng.uniform(0.5, 2.0, rows.size).astype(np.float32)
    lr, l2 = np.float32(0.05), np.float32(0.1)
    for adagrad in (False, True):
        runs = []
        for kernels in (fixed, general):
            P, Q = factors(23, m, n, width, scale=0.2)
            biases = [0.3 * np.random.default_rng(size).standard_normal(size) for size in (m, n)]
            accumulators = [np.ones(size, np.float32) if adagrad else NONE for size in (m, n)]
            extras = [bias.astype(np.float32) for bias in biases] + accumulators
            start = [a.copy() if a is not None else None for a in (P, Q, *extras)]
            summed = kernels.sgd_block(
                rows, cols, values, 0, rows.size, P, Q, *extras, lr, l2, weights, kernels
            )
            held_out = kernels.block_loss(
                rows, cols, values, 0, rows.size, P, Q, *extras[:2], weights, kernels
            )
            runs.append((P, Q, *extras, summed, held_out, start))
        (*fixed_out, fixed_start), (*general_out, _) = runs
        for got, want in zip(fixed_out, general_out):
            if got is None:
                continue
            if adagrad:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(got, want)
        # Against the numpy oracle (a weighted pass: each entry's step scaled).
        P0, Q0, *extras0 = fixed_start
        refs = [a.astype(np.float64) if a is not None else None for a in extras0]
        P_ref, Q_ref, loss_ref = sgd_epoch(
            loss, rows, cols, values, np.arange(rows.size), P0, Q0, lr, l2, *refs,
            weights=weights,
        )  # fmt: skip
        np.testing.assert_allclose(fixed_out[0], P_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fixed_out[1], Q_ref, rtol=1e-4, atol=1e-5)
        assert fixed_out[6] == pytest.approx(loss_ref, rel=1e-5)


# Compiled with the kernels' options: "contract" and "reassoc" change the last bits.
@numba.njit(fastmath=set(FASTMATH_FLAGS), error_model="numpy")
def one_at_a_time(
    logistic, rows, cols, values, P, Q, user_bias, item_bias, user_acc, item_acc, lr, l2
):
    """The SGD pass without grouping: each gradient computed right before its own step.

    Returns the summed data loss, one log per logistic entry.
    """
    total = 0.0
    for t in range(rows.shape[0]):
        gradient, term, norms = _kernels._entry_gradient(
            logistic, P, rows[t], Q, cols[t], values[t], user_bias, item_bias, user_acc,
            P.shape[1],
        )  # fmt: skip
        total += -np.log(term) if logistic else term
        _kernels._sgd_step(
            P, rows[t], Q, cols[t], gradient, norms, user_bias, item_bias, user_acc, item_acc,
            lr, l2, P.shape[1],
        )  # fmt: skip
    return total


@numba.njit(fastmath=set(FASTMATH_FLAGS), error_model="numpy")
def grouped(logistic, rows, cols, values, P, Q, user_bias, item_bias, user_acc, item_acc, lr, l2):
    return _kernels._sgd_grouped(
        logistic,
        rows,
        cols,
        values,
        0,
        rows.shape[0],
        P,
        Q,
        user_bias,
        item_bias,
        user_acc,
        item_acc,
        lr,
        l2,
        None,
        P.shape[1],
    )


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("extras", [False, True])
@pytest.mark.parametrize("length", [400, 403])
def test_grouped_steps_equal_one_at_a_time_bit_for_bit(loss, extras, length):
    # _sgd_grouped (the logistic block kernel's loop) computes a group of LANES
    # gradients before applying the group's steps, and recomputes them when
    # entries of a group share a row. On a
    # 5 x 5 matrix most groups share one, and with a large step a stale gradient
    # would move the factors in their leading digits. `length` 403 leaves a tail
    # shorter than a group.
    assert _kernels.LANES == 4
    m = n = 5
    rng = np.random.default_rng(21)
    rows = rng.integers(0, m, length).astype(np.int32)
    cols = rng.integers(0, n, length).astype(np.int32)
    if loss == "logistic":
        values = rng.choice([-1.0, 1.0], length).astype(np.float32)
    else:
        values = rng.integers(1, 6, length).astype(np.float32)
    # Also some groups of four distinct users and items (the fast path).
    rows[:8] = [0, 1, 2, 0, 1, 2, 0, 1]
    cols[:8] = [2, 0, 1, 1, 2, 0, 0, 2]
    P, Q = factors(22, m, n, 7)
    state = [P, Q]
    initial_biases = (
        (0.3 * rng.standard_normal(m)).astype(np.float32),
        (0.3 * rng.standard_normal(n)).astype(np.float32),
    )
    if extras:
        state += [b.copy() for b in initial_biases]
        state += [np.ones(m, dtype=np.float32), np.ones(n, dtype=np.float32)]
    else:
        state += [NONE] * 4
    expected = [a.copy() if a is not None else None for a in state]
    lr, l2 = np.float32(0.2), np.float32(0.05)
    logistic = loss == "logistic"
    expected_loss = one_at_a_time(logistic, rows, cols, values, *expected, lr, l2)
    grouped_loss = grouped(logistic, rows, cols, values, *state, lr, l2)
    for got, want in zip(state, expected):
        if want is not None:
            np.testing.assert_array_equal(got, want)
    # The same losses, up to the logistic pass's products of LOG_EVERY likelihoods
    # (this large step makes the squared loss blow up: nan on both sides then).
    np.testing.assert_allclose(grouped_loss, expected_loss, rtol=1e-12)
    if logistic:
        assert np.isfinite(grouped_loss)
    # The data must exercise both paths, and a stale gradient must be visible.
    lanes = np.stack(
        [rows[: length // 4 * 4].reshape(-1, 4), cols[: length // 4 * 4].reshape(-1, 4)]
    )
    distinct = [
        len(set(g[0].tolist())) == 4 == len(set(g[1].tolist())) for g in lanes.transpose(1, 0, 2)
    ]
    assert 0 < sum(distinct) < len(distinct)
    if logistic:  # the small fits' kernel gives the same bits as the grouped one
        start_P, start_Q = factors(22, m, n, 7)
        simple = [start_P, start_Q]
        if extras:
            simple += [b.copy() for b in initial_biases]
            simple += [np.ones(m, dtype=np.float32), np.ones(n, dtype=np.float32)]
        else:
            simple += [NONE] * 4
        simple_loss = _kernels.sgd_block_logistic_one_at_a_time(
            rows, cols, values, 0, length, *simple, lr, l2
        )
        for got, want in zip(simple, expected):
            if want is not None:
                np.testing.assert_array_equal(got, want)
        assert simple_loss == grouped_loss  # bit for bit, as the factors


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_epoch_visits_only_the_order_and_uses_old_values(loss):
    # Two entries sharing a user: after visiting only the first, the second
    # item's row must be untouched, and the step must use the old p_u for q_i.
    rows = np.array([0, 0], dtype=np.int32)
    cols = np.array([0, 1], dtype=np.int32)
    values = np.array([1.0, -1.0], dtype=np.float32)
    P = np.array([[0.3, -0.2]], dtype=np.float32)
    Q = np.array([[0.5, 0.1], [0.7, 0.7]], dtype=np.float32)
    p0, q0 = P[0].astype(float), Q[0].astype(float)
    run_sgd(loss, rows, cols, values, np.array([0]), P, Q, 0.1, 0.2)
    g = (1.0 - p0 @ q0) if loss == "squared" else 1.0 / (1.0 + np.exp(p0 @ q0))
    np.testing.assert_allclose(P[0], p0 + 0.1 * (g * q0 - 0.2 * p0), rtol=1e-6)
    np.testing.assert_allclose(Q[0], q0 + 0.1 * (g * p0 - 0.2 * q0), rtol=1e-6)
    np.testing.assert_array_equal(Q[1], np.float32([0.7, 0.7]))


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_objective_matches_formula(loss):
    rows, cols, values, (m, n) = random_coo(5, binary=loss == "logistic")
    P, Q = factors(6, m, n, 4)
    l2 = 0.3
    data = data_objective(loss, rows, cols, values, P, Q)
    counts_u = np.bincount(rows, minlength=m)
    counts_i = np.bincount(cols, minlength=n)
    penalty = counts_u @ (P.astype(float) ** 2).sum(1) + counts_i @ (Q.astype(float) ** 2).sum(1)
    got = (data + 0.5 * l2 * penalty) / rows.size
    assert got == pytest.approx(objective(loss, rows, cols, values, P, Q, l2), rel=1e-6)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_sgd_step_is_the_entry_gradient_by_finite_differences(loss):
    # One entry, tiny lr: the kernel's step divided by -lr is the gradient of
    # f_ui, which we check by central differences of the reference objective.
    rng = np.random.default_rng(7)
    k, l2, lr = 4, 0.2, 1e-3
    p = rng.standard_normal(k)
    q = rng.standard_normal(k)
    value = 1.0 if loss == "logistic" else 2.5
    rows = np.array([0], dtype=np.int32)
    cols = np.array([0], dtype=np.int32)
    values = np.array([value], dtype=np.float32)

    def f(p_, q_):
        return objective(loss, rows, cols, values, p_[None], q_[None], l2)

    eps = 1e-6
    numeric_p = np.array([(f(p + eps * e, q) - f(p - eps * e, q)) / (2 * eps) for e in np.eye(k)])
    numeric_q = np.array([(f(p, q + eps * e) - f(p, q - eps * e)) / (2 * eps) for e in np.eye(k)])
    grad_p, grad_q = entry_gradient(loss, value, p, q, l2)
    np.testing.assert_allclose(grad_p, numeric_p, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_q, numeric_q, rtol=1e-5, atol=1e-7)

    P = p[None].astype(np.float32)
    Q = q[None].astype(np.float32)
    run_sgd(loss, rows, cols, values, np.array([0]), P, Q, lr, l2)
    np.testing.assert_allclose((P[0] - p.astype(np.float32)) / -lr, numeric_p, rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose((Q[0] - q.astype(np.float32)) / -lr, numeric_q, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("margin", [-200.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 200.0])
def test_logistic_is_stable_for_extreme_scores(margin):
    # p . q = margin with a +1 label; no overflow, and loss/gradient match the math.
    P = np.array([[margin]], dtype=np.float32)
    Q = np.array([[1.0]], dtype=np.float32)
    rows = cols = np.array([0], dtype=np.int32)
    values = np.array([1.0], dtype=np.float32)
    data = data_objective("logistic", rows, cols, values, P, Q)
    assert np.isfinite(data)
    assert data == pytest.approx(np.logaddexp(0.0, -margin), rel=1e-6, abs=1e-12)
    run_sgd("logistic", rows, cols, values, np.array([0]), P, Q, 1.0, 0.0)
    expected_step = 1.0 / (1.0 + np.exp(np.clip(margin, -700, 700)))  # sigmoid(-margin)
    assert Q[0, 0] == pytest.approx(1.0 + expected_step * margin, rel=1e-5, abs=1e-6)
    assert np.isfinite(P).all() and np.isfinite(Q).all()


def test_predict_coo_matches_dot_products():
    P, Q = factors(8, 7, 5, 6)
    rows = np.array([0, 6, 3, 3], dtype=np.int64)
    cols = np.array([4, 0, 2, 2], dtype=np.int64)
    out = np.empty(4, dtype=np.float32)
    _kernels.predict_coo(rows, cols, P, Q, out)
    expected = np.einsum("ij,ij->i", P[rows].astype(float), Q[cols].astype(float))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_each_kernel_compiles_once_per_signature():
    rows, cols, values, (m, n) = random_coo(9)
    P, Q = factors(10, m, n, 3)
    for k in (3, 8):  # the rank is a runtime size, not part of the signature
        P, Q = factors(10, m, n, k)
        for _ in range(2):
            run_sgd("squared", rows, cols, values, np.arange(rows.size), P, Q, 0.01, 0.0)
    # The same argument types (int32 ids, no biases, no AdaGrad, weights
    # left out) compiled once.
    int32_signatures = [
        sig
        for sig in _kernels.sgd_block_squared.signatures
        if sig[0] == numba.typeof(rows)
        and all(t == numba.types.none for t in sig[7:11])
        and isinstance(sig[13], numba.types.Omitted)
    ]
    assert len(int32_signatures) == 1


@pytest.mark.skipif(
    os.environ.get("NUMBA_BOUNDSCHECK") != "1", reason="runs in CI's NUMBA_BOUNDSCHECK=1 pass"
)
def test_bounds_checks_are_active_when_requested():
    # Proves the CI pass with NUMBA_BOUNDSCHECK=1 really checks the kernels' indexing.
    P, Q = factors(0, 2, 2, 2)
    out = np.empty(1, dtype=np.float32)
    with pytest.raises(IndexError):
        _kernels.predict_coo(np.array([5]), np.array([0]), P, Q, out)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 SIMD names")
@pytest.mark.parametrize("name", ["sgd_block_squared", "sgd_block_logistic"])
def test_inner_loops_over_k_are_vectorized(name):
    # Recompile without the disk cache (cached code cannot be inspected) with
    # the same options, and look for packed single-precision FMAs on 256- or
    # 512-bit registers: the dot product and the updates run in SIMD.

    kernel = getattr(_kernels, name)
    fresh = numba.njit(fastmath=set(FASTMATH_FLAGS), error_model="numpy")(kernel.py_func)
    rows = np.zeros(2, dtype=np.int32)
    values = np.ones(2, dtype=np.float32)
    P, Q = factors(0, 1, 1, 32)
    fresh(
        rows,
        rows,
        values,
        0,
        2,
        P,
        Q,
        NONE,
        NONE,
        NONE,
        NONE,
        np.float32(0.01),
        np.float32(0.01),
    )
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert re.search(r"vfn?m(add|sub)\w*ps\s+.*%[yz]mm", asm), "no packed FMA on ymm/zmm"


def test_running_logistic_loss_is_exact_at_extreme_margins():
    # One entry per block: margins from confidently right to badly wrong. The
    # summed loss is log(1 + exp(-m)) whatever the sign (no cancellation for
    # m >> 0, no overflow for m << 0), capped at float32's smallest normal
    # likelihood (a loss of 87.3) only below m = -87.
    margins = np.array([40.0, 15.0, 2.0, 0.0, -2.0, -15.0, -60.0, -100.0])
    for margin in margins:
        P = np.array([[1.0]], dtype=np.float32)
        Q = np.array([[margin]], dtype=np.float32)
        one = np.zeros(1, dtype=np.int32)
        got = _kernels.sgd_block_logistic(
            one, one, np.ones(1, np.float32), 0, 1, P, Q, NONE, NONE, NONE, NONE,
            np.float32(0.0), np.float32(0.0),
        )  # fmt: skip
        want = min(np.logaddexp(0.0, -margin), 126 * np.log(2.0))
        assert got == pytest.approx(want, rel=1e-6), margin


def test_adagrad_norms_from_the_score_loop_equal_the_direct_sum():
    # _sgd_step gets |g q - l2 p|^2 from p.q, |p|^2 and |q|^2 instead of summing it.
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.standard_normal(32).astype(np.float32)
        q = rng.standard_normal(32).astype(np.float32)
        g, l2 = np.float32(rng.standard_normal()), np.float32(0.05)
        dot, p_norm, q_norm = _kernels._dot_and_norms(p[None], 0, q[None], 0, 32)
        got = _kernels._squared_gradient_norm(g, l2, dot, p_norm, q_norm)
        direct = np.sum((g * q.astype(float) - l2 * p.astype(float)) ** 2)
        assert got == pytest.approx(direct, rel=1e-5)
    # Complete cancellation (g q == l2 p): rounding must not make the norm negative.
    p = rng.standard_normal(32).astype(np.float32)
    q = (np.float32(0.05) * p / np.float32(0.3)).astype(np.float32)
    dot, p_norm, q_norm = _kernels._dot_and_norms(p[None], 0, q[None], 0, 32)
    got = _kernels._squared_gradient_norm(np.float32(0.3), np.float32(0.05), dot, p_norm, q_norm)
    assert 0.0 <= got <= 1e-6 * (0.3**2 * q_norm + 0.05**2 * p_norm)


@pytest.mark.parametrize("k", [1, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 128])
def test_dot_and_norms_match_numpy_for_every_row_length(k):
    # Up to _FUSED_NORMS_MAX_K the sums come from the vector intrinsic
    # (16 floats at a time, one more 8, a scalar tail): every split of k.
    rng = np.random.default_rng(k)
    P = rng.standard_normal((7, k)).astype(np.float32)
    Q = rng.standard_normal((5, k)).astype(np.float32)
    for u, i in [(0, 0), (6, 4), (np.int32(3), np.int64(2))]:
        got = _kernels._dot_and_norms(P, u, Q, i, k)
        p, q = P[u].astype(np.float64), Q[i].astype(np.float64)
        want = (p @ q, p @ p, q @ q)
        assert all(isinstance(value, float) for value in got)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@numba.njit(fastmath=set(FASTMATH_FLAGS), error_model="numpy")
def _row_step(P, u, Q, i, g, l2, rate_u, rate_i):
    row_step(P, u, Q, i, P.shape[1], g, l2, rate_u, rate_i)


@pytest.mark.parametrize("k", [1, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 128])
def test_row_step_matches_numpy_for_every_row_length(k):
    # The update is written in vectors of 8 floats and a scalar tail: every split of k.
    rng = np.random.default_rng(k)
    P = rng.standard_normal((7, k)).astype(np.float32)
    Q = rng.standard_normal((5, k)).astype(np.float32)
    g, l2, rate_u, rate_i = (np.float32(x) for x in (0.7, 0.05, 0.1, 0.03))
    for u, i in [(0, 0), (6, 4), (np.int32(3), np.int64(2))]:
        p, q = P[u].astype(np.float64), Q[i].astype(np.float64)
        others_p, others_q = np.delete(P, u, axis=0), np.delete(Q, i, axis=0)
        _row_step(P, u, Q, i, g, l2, rate_u, rate_i)
        np.testing.assert_allclose(P[u], p + rate_u * (g * q - l2 * p), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(Q[i], q + rate_i * (g * p - l2 * q), rtol=1e-6, atol=1e-6)
        # Only the two rows change.
        np.testing.assert_array_equal(np.delete(P, u, axis=0), others_p)
        np.testing.assert_array_equal(np.delete(Q, i, axis=0), others_q)
