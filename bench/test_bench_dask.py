"""Distributed training on 2 local Dask workers vs local 2-thread training, same data and seed.

Run: ``pytest bench/test_bench_dask.py --benchmark-only -s`` (needs the ``dask`` extra).
Reports ratings/s, seconds per epoch and bytes moved per epoch; both fits give the
same factors (asserted).
"""

import time

import numpy as np
import pytest

import fastmf
import fastmf.dask

EPOCHS = 5


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

    local_epochs, dask_epochs = [], []
    start = time.perf_counter()
    local = fastmf.RealValueMF(n_threads=2, **params).fit(
        (rows, cols, values), shape=shape, callback=lambda i: local_epochs.append(i["seconds"])
    )
    local_seconds = time.perf_counter() - start

    moved = []
    original = fastmf.dask.DaskBackend.objective

    def recording(self, *args):  # an epoch's traffic is complete once its objective is
        result = original(self, *args)
        moved.append((self.bytes_moved, self.tasks))
        return result

    fastmf.dask.DaskBackend.objective = recording
    try:
        model = fastmf.RealValueMF(**params)
        benchmark.group = "distributed"
        benchmark.pedantic(
            model.fit,
            args=((rows, cols, values),),
            kwargs={
                "shape": shape,
                "client": client,
                "callback": lambda i: dask_epochs.append(i["seconds"]),
            },
            rounds=1,
            iterations=1,
        )
    finally:
        fastmf.dask.DaskBackend.objective = original
    seconds = benchmark.stats.stats.median
    np.testing.assert_array_equal(model.user_factors_, local.user_factors_)
    info = dict(
        dask_fit_seconds=seconds,
        local_fit_seconds=local_seconds,
        dask_seconds_per_epoch=float(np.mean(dask_epochs)),
        local_seconds_per_epoch=float(np.mean(local_epochs)),
        dask_epoch_ratings_per_s=rows.size / float(np.mean(dask_epochs)),
        local_epoch_ratings_per_s=rows.size / float(np.mean(local_epochs)),
        # moved[0] is the objective before the first epoch (with the initial push).
        bytes_moved_per_epoch=float(np.mean([b for b, _ in moved[1:]])),
        tasks_per_epoch=moved[-1][1],
    )
    benchmark.extra_info.update(info)
    print(
        f"\nepochs: 2 Dask workers {info['dask_seconds_per_epoch']:.2f} s "
        f"({info['dask_epoch_ratings_per_s'] / 1e6:.1f}M ratings/s), local 2 threads "
        f"{info['local_seconds_per_epoch']:.3f} s ({info['local_epoch_ratings_per_s'] / 1e6:.0f}M "
        f"ratings/s); whole fit ({EPOCHS} epochs, layout, objective) {seconds:.2f} s vs "
        f"{local_seconds:.2f} s; per epoch incl. its objective: moved on average "
        f"{info['bytes_moved_per_epoch'] / 2**20:.1f} MiB between processes, "
        f"{info['tasks_per_epoch']} tasks"
    )


@pytest.fixture(scope="module")
def npz_shards(synthetic, tmp_path_factory):
    """The synthetic set as 8 ``.npz`` shards, as a data pipeline would leave it."""
    rows, cols, values, _ = synthetic
    folder = tmp_path_factory.mktemp("shards")
    paths = []
    for j, part in enumerate(np.array_split(np.arange(rows.size), 8)):
        path = folder / f"part-{j}.npz"
        np.savez(path, rows=rows[part], cols=cols[part], values=values[part])
        paths.append(str(path))
    return paths


def test_sharded_input_on_two_workers(benchmark, synthetic, npz_shards, client):
    """Shards read by the workers: the driver's peak memory stays far below the ratings'."""
    import tracemalloc

    rows, cols, values, shape = synthetic
    params = dict(k=32, n_epochs=EPOCHS, tol=None, random_state=0)
    local_epochs = []
    local = fastmf.RealValueMF(n_threads=2, **params).fit(
        (rows, cols, values), shape=shape, callback=lambda i: local_epochs.append(i["seconds"])
    )
    input_bytes = rows.nbytes + cols.nbytes + values.nbytes
    del rows, cols, values

    epochs, peaks = [], []

    def record(info):
        epochs.append(info["seconds"])
        peaks.append(tracemalloc.get_traced_memory()[1])

    model = fastmf.RealValueMF(**params)
    tracemalloc.start()
    try:
        benchmark.group = "distributed"
        benchmark.pedantic(
            model.fit,
            args=(fastmf.dask.Shards(npz_shards),),
            kwargs={
                "shape": shape,
                "client": client,
                "callback": record,
            },
            rounds=1,
            iterations=1,
        )
        _, driver_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = benchmark.stats.stats.median
    np.testing.assert_array_equal(model.user_factors_, local.user_factors_)
    np.testing.assert_array_equal(model.item_factors_, local.item_factors_)
    info = dict(
        whole_fit_seconds=seconds,
        dask_seconds_per_epoch=float(np.mean(epochs)),
        local_seconds_per_epoch=float(np.mean(local_epochs)),
        driver_peak_bytes=driver_peak,
        driver_peak_until_last_epoch_bytes=peaks[-1],
        input_triplet_bytes=input_bytes,
    )
    benchmark.extra_info.update(info)
    print(
        f"\nsharded (8 npz files) on 2 Dask workers: {seconds:.1f} s for the whole fit "
        f"(read, check, layout, {EPOCHS} epochs, seen-items index); "
        f"{info['dask_seconds_per_epoch']:.2f} s/epoch vs {info['local_seconds_per_epoch']:.2f} "
        f"s/epoch locally on 2 threads; driver peak (tracemalloc) until the last epoch "
        f"{peaks[-1] / 2**20:.0f} MiB, with the seen-items index {driver_peak / 2**20:.0f} MiB; "
        f"the triplets are {input_bytes / 2**20:.0f} MiB"
    )
    factor_bytes = model.user_factors_.nbytes + model.item_factors_.nbytes
    # Until the end of training the driver holds the factors (and one stripe in
    # transit), counts and permutations; then the seen-items index adds 4 bytes
    # per rating (and its int64 row pointers). Never the triplets' 12 bytes per rating.
    assert peaks[-1] < 1.5 * factor_bytes + 16 * 2**20
    seen_bytes = model.seen_items_.nbytes + model.seen_indptr_.nbytes
    assert driver_peak < peaks[-1] + seen_bytes + 16 * 2**20
