"""Quality with default hyperparameters on MovieLens 100K, and time to LIBMF's quality.

Run: ``pytest bench/test_bench_quality.py --benchmark-only -s``. MovieLens 100K
is read from ``../shared/data/ml-100k/u.data`` (skipped when absent); the
split is a 90/10 random split with seed 0, as in the project's issue.
"""

import os
import time
import warnings

import numpy as np
import pytest

import fastmf
from fastmf.metrics import rmse, roc_auc

ML100K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ml-100k", "u.data")


@pytest.fixture(scope="module")
def movielens():
    if not os.path.exists(ML100K):
        pytest.skip("MovieLens 100K not found beside the checkout (../shared/data)")
    data = np.loadtxt(ML100K, dtype=np.int64)
    rows, cols, values = data[:, 0] - 1, data[:, 1] - 1, data[:, 2].astype(np.float32)
    is_test = np.random.default_rng(0).random(rows.size) < 0.1
    train = (rows[~is_test], cols[~is_test], values[~is_test])
    test = (rows[is_test], cols[is_test], values[is_test])
    return train, test, (int(rows.max()) + 1, int(cols.max()) + 1)


@pytest.mark.xfail(strict=True, reason="quality bar not met yet: defaults reach RMSE ~0.905")
def test_default_real_value_mf_rmse(benchmark, movielens):
    train, test, shape = movielens
    model = fastmf.RealValueMF(k=32, biases=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        benchmark.pedantic(model.fit, args=(train,), kwargs={"shape": shape}, rounds=1)
    score = rmse(test[2], np.clip(model.predict(test[0], test[1]), 1, 5))
    benchmark.extra_info.update(rmse=score, epochs=model.n_iter_)
    print(
        f"\nRealValueMF(k=32, biases=True) defaults: held-out RMSE {score:.4f} "
        f"({model.n_iter_} epochs); bar 0.900"
    )
    assert score <= 0.900


@pytest.mark.xfail(strict=True, reason="quality bar not met yet: defaults reach AUC ~0.787")
def test_default_binary_mf_auc(benchmark, movielens):
    train, test, shape = movielens
    labels = np.where(train[2] >= 4, 1.0, -1.0)
    model = fastmf.BinaryMF(k=32, biases=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        benchmark.pedantic(
            model.fit, args=((train[0], train[1], labels),), kwargs={"shape": shape}, rounds=1
        )
    score = roc_auc(np.where(test[2] >= 4, 1, -1), model.decision_function(test[0], test[1]))
    benchmark.extra_info.update(auc=score, epochs=model.n_iter_)
    print(
        f"\nBinaryMF(k=32, biases=True) defaults: held-out AUC {score:.4f} "
        f"({model.n_iter_} epochs); bar 0.80"
    )
    assert score >= 0.80


def test_reference_configurations_on_this_split(benchmark, movielens):
    """How hard this split is: reference configurations scored side by side with the defaults.

    The issue quotes other libraries on "that same split", which we cannot
    reproduce exactly. Scoring LIBMF (its defaults, via the ``libmf`` package)
    and the cornac ``MF`` and Surprise ``SVD`` configurations (run in fastmf,
    which uses the same per-entry biased update) on *this* split shows how it
    compares with theirs; fastmf's defaults must beat them all.
    """
    train, test, shape = movielens
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        ours = fastmf.RealValueMF(k=32, biases=True, random_state=0)
        benchmark.pedantic(ours.fit, args=(train,), kwargs={"shape": shape}, rounds=1)
        cornac_like = fastmf.RealValueMF(
            k=10,
            lr=0.01,
            l2=0.02,
            n_epochs=20,
            tol=None,
            biases=True,
            init_scale=0.01 * np.sqrt(10),
            random_state=0,
        ).fit(train, shape=shape)
        # Surprise's SVD defaults: 100 factors, lr 0.005, reg 0.02, 20 epochs, N(0, 0.1) init.
        surprise_like = fastmf.RealValueMF(
            k=100,
            lr=0.005,
            l2=0.02,
            n_epochs=20,
            tol=None,
            biases=True,
            init_scale=0.1 * np.sqrt(100),
            random_state=0,
        ).fit(train, shape=shape)
    scores = {
        "fastmf defaults (k=32, biases)": rmse(
            test[2], np.clip(ours.predict(test[0], test[1]), 1, 5)
        ),
        "cornac MF configuration (quoted 0.900)": rmse(
            test[2], np.clip(cornac_like.predict(test[0], test[1]), 1, 5)
        ),
        "Surprise SVD configuration (quoted 0.913)": rmse(
            test[2], np.clip(surprise_like.predict(test[0], test[1]), 1, 5)
        ),
    }
    try:
        from libmf import mf as libmf
    except ImportError:
        libmf = None
    if libmf is not None:
        reference = libmf.MF(fun=0, nr_threads=1, quiet=True)
        reference.fit(np.ascontiguousarray(np.column_stack(train), dtype=np.float32))
        pairs = np.asfortranarray(np.column_stack([test[0], test[1]]), dtype=np.float32)
        scores["LIBMF defaults (quoted 0.925)"] = rmse(
            test[2], np.clip(reference.predict(pairs), 1, 5)
        )
    print()
    for name, score in scores.items():
        print(f"  {name:<42} held-out RMSE {score:.4f}")
    benchmark.extra_info.update(scores)
    best_reference = min(v for name, v in scores.items() if not name.startswith("fastmf"))
    assert scores["fastmf defaults (k=32, biases)"] < best_reference


def test_biases_on_and_off(benchmark, movielens):
    """The measurement behind the default ``biases=False``: both settings, both models."""
    from fastmf.datasets import make_synthetic

    synthetic = make_synthetic(20_000, 2_000, 1_000_000, random_state=1)
    is_test = np.random.default_rng(0).random(synthetic.rows.size) < 0.1
    datasets = {
        "MovieLens 100K": movielens,
        "synthetic 1M": (
            tuple(a[~is_test] for a in (synthetic.rows, synthetic.cols, synthetic.values)),
            tuple(a[is_test] for a in (synthetic.rows, synthetic.cols, synthetic.values)),
            (20_000, 2_000),
        ),
    }

    def measure():
        scores = {}
        for name, (train, test, shape) in datasets.items():
            labels = np.where(train[2] >= 4, 1.0, -1.0)
            truth = np.where(test[2] >= 4, 1, -1)
            for biases in (False, True):
                errors, aucs = [], []
                for seed in range(3):
                    real = fastmf.RealValueMF(k=32, biases=biases, random_state=seed)
                    real.fit(train, shape=shape)
                    errors.append(rmse(test[2], np.clip(real.predict(test[0], test[1]), 1, 5)))
                    binary = fastmf.BinaryMF(k=32, biases=biases, random_state=seed)
                    binary.fit((train[0], train[1], labels), shape=shape)
                    aucs.append(roc_auc(truth, binary.decision_function(test[0], test[1])))
                scores[(name, biases)] = (float(np.mean(errors)), float(np.mean(aucs)))
        return scores

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        scores = benchmark.pedantic(measure, rounds=1, iterations=1)
    print()
    for (name, biases), (error, auc) in scores.items():
        print(f"  {name:<15} biases={biases!s:<5}  RMSE {error:.4f}  AUC {auc:.4f}")
    benchmark.extra_info.update({f"{n} biases={b}": v for (n, b), v in scores.items()})
    # Biases must not hurt BinaryMF's ranking; they are what the README says they are.
    assert scores[("MovieLens 100K", True)][1] > scores[("MovieLens 100K", False)][1]


@pytest.mark.parametrize("threads", [1, 2])
def test_time_to_libmf_quality(benchmark, split, threads):
    """Wall time for fastmf to reach the held-out RMSE LIBMF reaches in 20 iterations."""
    libmf = pytest.importorskip("libmf.mf", reason="needs the 'bench' extra (libmf)")
    train, test, shape = split
    data = np.ascontiguousarray(np.column_stack(train), dtype=np.float32)
    reference = libmf.MF(
        fun=0,
        k=32,
        nr_threads=threads,
        nr_iters=20,
        lambda_p1=0.0,
        lambda_q1=0.0,
        lambda_p2=0.05,
        lambda_q2=0.05,
        eta=0.1,
        quiet=True,
    )
    start = time.perf_counter()
    reference.fit(data)
    libmf_seconds = time.perf_counter() - start
    pairs = np.asfortranarray(np.column_stack([test[0], test[1]]), dtype=np.float32)
    target = rmse(test[2], reference.predict(pairs))

    reached = {}

    def stop_at_target(info):
        if info["val_loss"] <= target:
            reached["epoch"] = info["epoch"]
            return False
        return True

    model = fastmf.RealValueMF(
        k=32,
        biases=True,
        learning_rate="adagrad",
        lr=0.1,
        l2=0.05,
        n_epochs=100,
        tol=None,
        patience=100,
        n_threads=threads,
        random_state=0,
    )
    benchmark.group = "time to LIBMF quality"
    benchmark.pedantic(
        model.fit,
        args=(train,),
        kwargs={"shape": shape, "X_val": test, "callback": stop_at_target},
        rounds=1,
        iterations=1,
    )
    seconds = benchmark.stats.stats.median
    ratio = seconds / libmf_seconds
    benchmark.extra_info.update(
        target_rmse=target,
        libmf_seconds=libmf_seconds,
        fastmf_seconds=seconds,
        ratio=ratio,
        epochs=reached.get("epoch"),
    )
    print(
        f"\nthreads={threads}: LIBMF 20 iterations {libmf_seconds:.2f} s -> RMSE {target:.4f}; "
        f"fastmf reached it after {reached.get('epoch')} epochs in {seconds:.2f} s "
        f"({ratio:.2f}x LIBMF's time)"
    )
    assert "epoch" in reached, f"fastmf did not reach RMSE {target:.4f} in 100 epochs"
    assert ratio <= 0.7


def test_default_epoch_cap(benchmark, movielens):
    """The measurement behind the README's note: the 100-epoch cap is part of the defaults.

    On this split the defaults still improve slowly when ``n_epochs`` runs out
    (a ConvergenceWarning); trained on to convergence they overfit, and early
    stopping on a slice of the training data trains on less data.
    """
    train, test, shape = movielens

    def held_out(model):
        return rmse(test[2], np.clip(model.predict(test[0], test[1]), 1, 5))

    def measure():
        scores = {"default": [], "n_epochs=400": [], "X_val early stopping": []}
        warned = []
        for seed in range(3):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                capped = fastmf.RealValueMF(k=32, biases=True, random_state=seed)
                capped.fit(train, shape=shape)
            warned.append(any(issubclass(w.category, fastmf.ConvergenceWarning) for w in caught))
            scores["default"].append(held_out(capped))
            longer = fastmf.RealValueMF(k=32, biases=True, random_state=seed, n_epochs=400)
            scores["n_epochs=400"].append(held_out(longer.fit(train, shape=shape)))
            inner = np.random.default_rng(seed + 100).random(train[0].size) < 0.1
            stopped = fastmf.RealValueMF(k=32, biases=True, random_state=seed, n_epochs=400)
            stopped.fit(
                tuple(a[~inner] for a in train),
                shape=shape,
                X_val=tuple(a[inner] for a in train),
            )
            scores["X_val early stopping"].append(held_out(stopped))
        return {name: float(np.mean(values)) for name, values in scores.items()}, warned

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        means, warned = benchmark.pedantic(measure, rounds=1)
    print()
    for name, score in means.items():
        print(f"  RealValueMF(k=32, biases=True), {name:<22} held-out RMSE {score:.4f} (3 seeds)")
    benchmark.extra_info.update(means)
    assert all(warned)
    assert means["default"] < means["X_val early stopping"] < means["n_epochs=400"]
