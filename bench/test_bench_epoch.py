"""Single-thread SGD epoch throughput: fastmf's kernels against a straightforward loop.

Run: ``pytest bench/test_bench_epoch.py --benchmark-only``. Each benchmark is
one epoch over all ratings in a fresh shuffled order, after a warm-up call that
compiles the kernel; ``extra_info`` holds ratings/s, which is also printed.
"""

import numba
import numpy as np
import pytest

from fastmf import _kernels


@numba.njit(cache=True)
def straightforward_epoch(rows, cols, values, order, P, Q, lr, l2):
    """The baseline: a plain @njit loop over a shuffled order, default numba options."""
    k = P.shape[1]
    for idx in order:
        u = rows[idx]
        i = cols[idx]
        err = values[idx]
        for f in range(k):
            err -= P[u, f] * Q[i, f]
        for f in range(k):
            p = P[u, f]
            P[u, f] += lr * (err * Q[i, f] - l2 * p)
            Q[i, f] += lr * (err * p - l2 * Q[i, f])


KERNELS = {
    "straightforward": straightforward_epoch,
    "fastmf-squared": _kernels.sgd_epoch_squared,
    "fastmf-logistic": _kernels.sgd_epoch_logistic,
}


@pytest.mark.parametrize("k", [32, 128])
@pytest.mark.parametrize("name", list(KERNELS))
def test_epoch_throughput(benchmark, synthetic, name, k):
    rows, cols, values, (m, n) = synthetic
    if name == "fastmf-logistic":
        values = np.where(values >= 4, 1.0, -1.0).astype(np.float32)
    rng = np.random.default_rng(0)
    P = (rng.standard_normal((m, k), dtype=np.float32) * 0.1).astype(np.float32)
    Q = (rng.standard_normal((n, k), dtype=np.float32) * 0.1).astype(np.float32)
    lr, l2 = np.float32(0.005), np.float32(0.05)
    kernel = KERNELS[name]
    kernel(rows[:1000], cols[:1000], values[:1000], np.arange(1000), P, Q, lr, l2)  # compile

    def setup():
        return (rows, cols, values, rng.permutation(rows.size), P, Q, lr, l2), {}

    benchmark.group = f"epoch k={k}"
    benchmark.extra_info.update(n_ratings=int(rows.size), k=k, threads=1)
    benchmark.pedantic(kernel, setup=setup, rounds=3, iterations=1)
    rate = rows.size / benchmark.stats.stats.median
    benchmark.extra_info["ratings_per_s"] = rate
    print(f"\n{name:>16} k={k:<4} {rate / 1e6:6.1f}M ratings/s")
    assert np.isfinite(P).all()


def test_objective_pass_throughput(benchmark, synthetic):
    rows, cols, values, (m, n) = synthetic
    rng = np.random.default_rng(0)
    P = (rng.standard_normal((m, 32), dtype=np.float32) * 0.1).astype(np.float32)
    Q = (rng.standard_normal((n, 32), dtype=np.float32) * 0.1).astype(np.float32)
    _kernels.objective_squared(rows[:10], cols[:10], values[:10], P, Q)
    benchmark.group = "objective k=32"
    benchmark.pedantic(_kernels.objective_squared, args=(rows, cols, values, P, Q), rounds=3)
    rate = rows.size / benchmark.stats.stats.median
    benchmark.extra_info["ratings_per_s"] = rate
    print(f"\n       objective k=32   {rate / 1e6:6.1f}M ratings/s")
