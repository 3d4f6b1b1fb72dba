"""Shared benchmark data: the synthetic set, generated once and cached by pytest."""

import os

import numpy as np
import pytest

from fastmf.datasets import make_synthetic

N_USERS = 200_000
N_ITEMS = 20_000
N_RATINGS = int(os.environ.get("FASTMF_BENCH_RATINGS", 10_000_000))


@pytest.fixture(scope="session")
def synthetic(request):
    """10M power-law ratings (200k users x 20k items), as row-major sorted triplets."""
    folder = request.config.cache.mkdir("fastmf-bench-data")
    path = folder / f"synthetic_{N_USERS}_{N_ITEMS}_{N_RATINGS}.npz"
    if not path.exists():
        data = make_synthetic(N_USERS, N_ITEMS, N_RATINGS, random_state=0)
        np.savez(path, rows=data.rows, cols=data.cols, values=data.values)
    with np.load(path, allow_pickle=False) as stored:
        rows, cols, values = stored["rows"], stored["cols"], stored["values"]
    order = np.lexsort((cols, rows))  # the order fit() hands to the kernels
    return rows[order], cols[order], values[order], (N_USERS, N_ITEMS)
