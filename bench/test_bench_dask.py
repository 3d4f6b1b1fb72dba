"""Distributed training on 2 local Dask workers vs local 2-thread training, same data and seed.

Run: ``pytest bench/test_bench_dask.py --benchmark-only -s`` (needs the ``dask`` extra).
Reports ratings/s, seconds per epoch and bytes moved per epoch; both fits give the
same factors (asserted).
"""

import time

import numpy as np
import pytest

import fastmf

EPOCHS = 3


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    )
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


def test_two_workers_vs_two_threads(benchmark, synthetic, client):
    rows, cols, values, shape = synthetic
    params = dict(k=32, n_epochs=EPOCHS, tol=None, random_state=0)
    small = (rows[:20_000], cols[:20_000], values[:20_000])
    fastmf.RealValueMF(**{**params, "n_epochs": 1}).fit(small, shape=shape, client=client)

    start = time.perf_counter()
    local = fastmf.RealValueMF(n_threads=2, **params).fit((rows, cols, values), shape=shape)
    local_seconds = time.perf_counter() - start

    moved = []
    from fastmf import dask as fastmf_dask

    original = fastmf_dask.DaskEpochs.__call__

    def recording(self, *args):
        original(self, *args)
        moved.append((self.bytes_moved, self.tasks))

    fastmf_dask.DaskEpochs.__call__ = recording
    try:
        model = fastmf.RealValueMF(**params)
        benchmark.group = "distributed"
        benchmark.pedantic(
            model.fit,
            args=((rows, cols, values),),
            kwargs={"shape": shape, "client": client},
            rounds=1,
            iterations=1,
        )
    finally:
        fastmf_dask.DaskEpochs.__call__ = original
    seconds = benchmark.stats.stats.median
    np.testing.assert_array_equal(model.user_factors_, local.user_factors_)
    info = dict(
        dask_ratings_per_s=rows.size * EPOCHS / seconds,
        local_ratings_per_s=rows.size * EPOCHS / local_seconds,
        dask_seconds_per_epoch=seconds / EPOCHS,
        local_seconds_per_epoch=local_seconds / EPOCHS,
        bytes_moved_per_epoch=moved[-1][0],
        tasks_per_epoch=moved[-1][1],
    )
    benchmark.extra_info.update(info)
    print(
        f"\n2 Dask workers: {info['dask_ratings_per_s'] / 1e6:.1f}M ratings/s "
        f"({info['dask_seconds_per_epoch']:.2f} s/epoch, whole fit incl. layout); "
        f"local 2 threads: {info['local_ratings_per_s'] / 1e6:.1f}M ratings/s "
        f"({info['local_seconds_per_epoch']:.2f} s/epoch); moved "
        f"{info['bytes_moved_per_epoch'] / 2**20:.1f} MiB and ran {info['tasks_per_epoch']} "
        "tasks per epoch"
    )
