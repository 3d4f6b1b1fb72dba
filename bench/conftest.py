"""Shared benchmark data and the baseline loop.

The synthetic set (10M power-law ratings, 200k users x 20k items; override the
count with ``FASTMF_BENCH_RATINGS``) is generated once by
``fastmf.datasets.make_synthetic`` and cached in pytest's cache folder.
"""

import os

import numba
import numpy as np
import pytest

from fastmf.datasets import make_interactions, make_synthetic

N_USERS = 200_000
N_ITEMS = 20_000
N_RATINGS = int(os.environ.get("FASTMF_BENCH_RATINGS", 10_000_000))
EPOCHS = 20


@pytest.fixture(scope="session")
def synthetic(request):
    """The ratings as (rows, cols, values, shape), in the generator's random order."""
    folder = request.config.cache.mkdir("fastmf-bench-data")
    path = folder / f"synthetic_{N_USERS}_{N_ITEMS}_{N_RATINGS}.npz"
    if not path.exists():
        data = make_synthetic(N_USERS, N_ITEMS, N_RATINGS, random_state=0)
        np.savez(path, rows=data.rows, cols=data.cols, values=data.values)
    with np.load(path, allow_pickle=False) as stored:
        return stored["rows"], stored["cols"], stored["values"], (N_USERS, N_ITEMS)


@pytest.fixture(scope="session")
def generated_interactions(request):
    """10M positive-only interactions (``make_interactions``, seed 0) as (rows, cols, shape).

    ``FASTMF_BENCH_INTERACTIONS`` sets the count; generated once and cached.
    """
    count = int(os.environ.get("FASTMF_BENCH_INTERACTIONS", 10_000_000))
    folder = request.config.cache.mkdir("fastmf-bench-data")
    path = folder / f"interactions_v2_{N_USERS}_{N_ITEMS}_{count}.npz"
    if not path.exists():
        data = make_interactions(N_USERS, N_ITEMS, count, random_state=0)
        np.savez(path, rows=data.rows, cols=data.cols)
    with np.load(path, allow_pickle=False) as stored:
        return stored["rows"], stored["cols"], (N_USERS, N_ITEMS)


@pytest.fixture(scope="session")
def split(synthetic):
    """A seeded 90/10 train/test split of the synthetic set."""
    rows, cols, values, shape = synthetic
    is_test = np.random.default_rng(0).random(rows.size) < 0.1
    train = (rows[~is_test], cols[~is_test], values[~is_test])
    test = (rows[is_test], cols[is_test], values[is_test])
    return train, test, shape


@numba.njit(cache=True)
def straightforward_epoch(rows, cols, values, order, P, Q, lr, l2):
    """The baseline: a plain @njit SGD loop over a shuffled order, default numba options."""
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


def straightforward_fit(rows, cols, values, shape, k, epochs, lr, l2, seed=0):
    """Train with the baseline loop: a fresh np.random permutation every epoch."""
    rng = np.random.default_rng(seed)
    std = np.float32(0.1 / np.sqrt(k))
    P = rng.standard_normal((shape[0], k), dtype=np.float32) * std
    Q = rng.standard_normal((shape[1], k), dtype=np.float32) * std
    for _ in range(epochs):
        straightforward_epoch(
            rows, cols, values, rng.permutation(rows.size), P, Q, np.float32(lr), np.float32(l2)
        )
    return P, Q
