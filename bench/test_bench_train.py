"""End-to-end training: fastmf (1 and all threads) vs the straightforward loop vs LIBMF.

Run: ``pytest bench/test_bench_train.py --benchmark-only -s``. Every model
trains 20 epochs on the same 90% of the synthetic set with the same k, and is
scored on the same held-out 10%. Throughput is training ratings x epochs /
wall time of the whole ``fit`` (fastmf's includes validation, the block
layout and the exact objective after every epoch). LIBMF runs through the
``libmf`` package (``pip install -e '.[bench]'``) and is skipped when absent;
note that LIBMF 2 adapts its learning rate per coordinate, so its RMSE after
20 epochs is not an apples-to-apples quality comparison.
"""

import os
import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import EPOCHS, straightforward_fit

import fastmf
from fastmf._jit import max_threads
from fastmf.metrics import rmse, roc_auc

LR, L2 = 0.01, 0.05
CASES = [(32, "squared"), (128, "squared"), (32, "logistic")]
results = {}


def labels_of(values):
    return np.where(values >= 4, 1.0, -1.0).astype(np.float32)


def score(loss, model_predict, test):
    rows, cols, values = test
    if loss == "squared":
        return "rmse", rmse(values, model_predict(rows, cols))
    return "auc", roc_auc(labels_of(values), model_predict(rows, cols))


def record(benchmark, name, k, loss, threads, n_train, metric, value):
    seconds = benchmark.stats.stats.median
    rate = n_train * EPOCHS / seconds
    benchmark.extra_info.update(
        k=k, loss=loss, threads=threads, epochs=EPOCHS, ratings_per_s=rate, **{metric: value}
    )
    results[(name, k, loss, threads)] = (rate, value)
    print(
        f"\n{name:>16} k={k:<4} {loss:<8} threads={threads}  {rate / 1e6:6.1f}M ratings/s  "
        f"{seconds:6.2f} s  held-out {metric} {value:.4f}"
    )


@pytest.mark.parametrize("threads", [1, max_threads()])
@pytest.mark.parametrize("k, loss", CASES)
def test_fastmf_fit(benchmark, split, k, loss, threads):
    train, test, shape = split
    model_class = fastmf.RealValueMF if loss == "squared" else fastmf.BinaryMF
    values = train[2] if loss == "squared" else labels_of(train[2])
    # No biases: the same model as the straightforward loop and LIBMF.
    params = dict(k=k, lr=LR, l2=L2, n_epochs=EPOCHS, tol=None, biases=False, random_state=0)
    params["n_threads"] = threads
    if loss == "logistic":
        params.update(lr=0.05, init_scale=0.5)
    model_class(**{**params, "n_epochs": 1}).fit(
        np.eye(3) if loss == "squared" else np.diag([1, -1, 1])
    )
    model = model_class(**params)
    benchmark.group = f"train {loss} k={k}"
    benchmark.pedantic(
        model.fit,
        args=((train[0], train[1], values),),
        kwargs={"shape": shape},
        rounds=1,
        iterations=1,
    )
    predict = model.predict if loss == "squared" else model.decision_function
    record(benchmark, "fastmf", k, loss, threads, train[0].size, *score(loss, predict, test))


@pytest.mark.parametrize("k", [32, 128])
def test_straightforward_fit(benchmark, split, k):
    train, test, shape = split
    straightforward_fit(*train, shape, k, 1, LR, L2)  # compile
    benchmark.group = f"train squared k={k}"
    P, Q = benchmark.pedantic(
        straightforward_fit, args=(*train, shape, k, EPOCHS, LR, L2), rounds=1, iterations=1
    )
    predicted = np.einsum("ij,ij->i", P[test[0]], Q[test[1]])
    record(
        benchmark,
        "straightforward",
        k,
        "squared",
        1,
        train[0].size,
        "rmse",
        rmse(test[2], predicted),
    )
    fastmf_result = results.get(("fastmf", k, "squared", 1))
    if fastmf_result is not None:
        # Speed must not be bought with worse convergence: same held-out RMSE
        # (within 1%) after the same number of epochs.
        assert fastmf_result[1] <= 1.01 * results[("straightforward", k, "squared", 1)][1]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k, loss", CASES)
def test_libmf_fit(benchmark, split, k, loss, threads):
    libmf = pytest.importorskip("libmf.mf", reason="LIBMF comparison needs the 'bench' extra")
    train, test, shape = split
    values = train[2] if loss == "squared" else labels_of(train[2])
    # Checked on small data with libmf 0.9.2: fit reads its (nnz, 3) float32
    # array row-major (a Fortran-ordered one crashes or trains on garbage),
    # while predict reads its (n, 2) array column-major.
    data = np.ascontiguousarray(np.column_stack([train[0], train[1], values]), dtype=np.float32)
    model = libmf.MF(
        fun=0 if loss == "squared" else 5,
        k=k,
        nr_threads=threads,
        nr_iters=EPOCHS,
        lambda_p1=0.0,
        lambda_q1=0.0,
        lambda_p2=L2,
        lambda_q2=L2,
        eta=0.1,
        quiet=True,
    )
    benchmark.group = f"train {loss} k={k}"
    benchmark.pedantic(model.fit, args=(data,), rounds=1, iterations=1)

    def predict(rows, cols):
        return model.predict(np.asfortranarray(np.column_stack([rows, cols]).astype(np.float32)))

    record(benchmark, "LIBMF", k, loss, threads, train[0].size, *score(loss, predict, test))


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    import fastmf
    with np.load(sys.argv[1], allow_pickle=False) as stored:
        rows, cols, values = stored["rows"], stored["cols"], stored["values"]
    fastmf.RealValueMF(k=32, n_epochs=1, tol=None, biases=False).fit(np.eye(3))  # compile
    if sys.argv[2] == "fit":
        fastmf.RealValueMF(k=32, n_epochs=3, tol=None, biases=False, random_state=0).fit(
            (rows, cols, values), shape=(200_000, 20_000))
    """
)


def peak_rss_bytes(*args):
    out = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-c", _MEMORY_SCRIPT, *args],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out).group(1)) * 1024


@pytest.mark.skipif(not os.path.exists("/usr/bin/time"), reason="needs GNU time")
def test_peak_memory_of_fit(benchmark, request, synthetic):
    rows, cols, values, shape = synthetic
    path = (
        request.config.cache.mkdir("fastmf-bench-data") / f"synthetic_200000_20000_{rows.size}.npz"
    )
    # The baseline process holds the interpreter, the kernels and the input triplets.
    baseline = peak_rss_bytes(str(path), "load")
    peak = benchmark.pedantic(peak_rss_bytes, args=(str(path), "fit"), rounds=1, iterations=1)
    triplets = rows.nbytes + cols.nbytes + values.nbytes
    factors = (shape[0] + shape[1]) * 32 * 4
    extra = peak - baseline
    benchmark.group = "memory"
    benchmark.extra_info.update(
        baseline_bytes=baseline,
        peak_bytes=peak,
        extra_bytes=extra,
        triplet_bytes=triplets,
        factor_bytes=factors,
    )
    print(
        f"\npeak RSS: {peak / 2**20:.0f} MiB; baseline (interpreter + input) "
        f"{baseline / 2**20:.0f} MiB; fit adds {extra / 2**20:.0f} MiB for one copy of the "
        f"triplets ({triplets / 2**20:.0f} MiB) and the factors ({factors / 2**20:.0f} MiB)"
    )
    assert extra <= 1.1 * (triplets + factors) + 16 * 2**20


@pytest.mark.parametrize("threads", [1, max_threads()])
@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("held_out", ["no X_val", "X_val"])
def test_whole_fit_to_epoch_throughput(benchmark, split, loss, threads, held_out):
    """A whole 20-epoch fit's throughput as a fraction of its own epochs' (target >= 0.8).

    The fit: the fast path (``learning_rate="adagrad"``, default ``lr``, biases,
    ``l2=0.05``, k=32), timed from the call to its return; ``held_out="X_val"``
    also scores the 1M held-out ratings after every epoch and keeps the best
    epoch's parameters (a copy of them after each new best). Its epochs: the
    same SGD epoch kernel on the same kind of layout, 20 epochs back to back,
    nothing else. Alternating rounds; the ratio of the medians. What separates
    the two is input validation, layout, initialization, the training
    objective after every epoch, the final commit (and with ``X_val`` its
    scoring and copies).
    """
    from fastmf import _blocks, _kernels
    from fastmf._jit import numba_threads
    from fastmf._losses import LOSSES
    from fastmf._state import normal_factors
    from fastmf._validation import check_coo

    train, test, shape = split
    k = 32
    if loss == "logistic":
        train = (train[0], train[1], labels_of(train[2]))
        test = (test[0], test[1], labels_of(test[2]))
    model_class = fastmf.RealValueMF if loss == "squared" else fastmf.BinaryMF
    params = dict(k=k, learning_rate="adagrad", l2=L2, n_epochs=EPOCHS, tol=None, patience=100)
    params.update(n_threads=threads, random_state=0)
    code = LOSSES[loss]
    grid = _blocks.choose_grid(*shape, train[0].size, k)
    layout = _blocks.arrange(
        check_coo(train, shape), grid, np.random.default_rng(0), ways=code.interleave
    )
    run_epoch = _kernels.sgd_epoch_parallel if threads > 1 else _kernels.sgd_epoch_serial
    lr = np.float32(0.15 if loss == "squared" else 0.2)  # the defaults at k=32

    validation = test if held_out == "X_val" else None

    def fit():
        start = time.perf_counter()
        model_class(**params).fit(train, shape=shape, X_val=validation)
        return time.perf_counter() - start

    def epochs(count=EPOCHS):
        rng = np.random.default_rng(0)
        # Drawn as the fit draws them (rows on cache lines, as the fit's are).
        user_factors = normal_factors(rng, shape[0], k, 0.1)
        item_factors = normal_factors(rng, shape[1], k, 0.1)
        state = (
            user_factors, item_factors,
            np.zeros(shape[0], np.float32), np.zeros(shape[1], np.float32),
            np.ones(shape[0], np.float32), np.ones(shape[1], np.float32),
        )  # fmt: skip
        block_loss = np.zeros(grid**2)
        start = time.perf_counter()
        with numba_threads(threads):
            for _ in range(count):
                schedule = _blocks.epoch_schedule(grid, rng)
                run_epoch(
                    code.kernels_for(layout.nnz, k), layout.rows, layout.cols, layout.values,
                    layout.block_offsets, schedule, *state, lr, np.float32(L2), block_loss,
                )  # fmt: skip
        return time.perf_counter() - start

    def measure(rounds=4):
        model_class(**{**params, "n_epochs": 1}).fit(train, shape=shape, X_val=test)  # compile
        epochs(1)
        seconds = {"fit": [], "epochs": []}
        for r in range(rounds):
            for what in ("fit", "epochs") if r % 2 == 0 else ("epochs", "fit"):
                seconds[what].append(fit() if what == "fit" else epochs())
        return seconds

    benchmark.group = "whole fit vs its epochs"
    seconds = benchmark.pedantic(measure, rounds=1, iterations=1)
    ratio = float(np.median(seconds["epochs"]) / np.median(seconds["fit"]))
    benchmark.extra_info.update(
        loss=loss, threads=threads, held_out=held_out, ratio=ratio, **seconds
    )
    print(
        f"\n{loss}, k={k}, {threads} thread(s), {EPOCHS} epochs, {held_out}: whole fit "
        f"{np.round(seconds['fit'], 2).tolist()} s, its epochs alone "
        f"{np.round(seconds['epochs'], 2).tolist()} s; fit throughput / epoch throughput "
        f"{ratio:.2f} (target 0.8)"
    )
