"""Quality with default hyperparameters on MovieLens 100K (versus LIBMF: test_bench_libmf.py).

Run: ``pytest bench/test_bench_quality.py --benchmark-only -s``. MovieLens 100K
is read from ``../shared/data/ml-100k/u.data`` (skipped when absent).

The split is the issue's "90/10 random split with seed 0", read as: shuffle the
ratings (in file order) with ``numpy.random.default_rng(0).permutation`` and
hold out the first 10% (exactly 10,000). The issue quotes other libraries'
scores "on that same split"; of five common readings of its wording
(:data:`SPLITS`), this one reproduces them most closely: the reference
configurations land 0.004-0.005 above their quoted RMSEs here, and 0.011-0.022
above them on the split that earlier versions of this file used (a Bernoulli
mask, ``default_rng(0).random(n) < 0.1``).
``test_split_sensitivity`` prints the whole comparison.
"""

import os
import warnings

import numpy as np
import pytest

import fastmf
from fastmf.metrics import rmse, roc_auc

ML100K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ml-100k", "u.data")


def _first_tenth(order):
    is_test = np.zeros(order.size, dtype=bool)
    is_test[order[: order.size // 10]] = True
    return is_test


# Readings of "a 90/10 random split with seed 0": name -> function of n returning the test mask.
SPLITS = {
    "default_rng(0).permutation, first 10%": (
        lambda n: _first_tenth(np.random.default_rng(0).permutation(n))
    ),
    "RandomState(0).permutation, first 10% (= sklearn train_test_split)": (
        lambda n: _first_tenth(np.random.RandomState(0).permutation(n))
    ),
    "default_rng(0).choice(n, n // 10)": (
        lambda n: np.isin(np.arange(n), np.random.default_rng(0).choice(n, n // 10, replace=False))
    ),
    "default_rng(0).random(n) < 0.1": lambda n: np.random.default_rng(0).random(n) < 0.1,
    "RandomState(0).rand(n) < 0.1": lambda n: np.random.RandomState(0).rand(n) < 0.1,
}
SPLIT = "default_rng(0).permutation, first 10%"


def _load_movielens():
    if not os.path.exists(ML100K):
        pytest.skip("MovieLens 100K not found beside the checkout (../shared/data)")
    data = np.loadtxt(ML100K, dtype=np.int64)
    return data[:, 0] - 1, data[:, 1] - 1, data[:, 2].astype(np.float32)


def _split(rows, cols, values, is_test):
    train = (rows[~is_test], cols[~is_test], values[~is_test])
    test = (rows[is_test], cols[is_test], values[is_test])
    return train, test, (int(rows.max()) + 1, int(cols.max()) + 1)


@pytest.fixture(scope="module")
def movielens():
    rows, cols, values = _load_movielens()
    return _split(rows, cols, values, SPLITS[SPLIT](rows.size))


def _synthetic_split(n_users, n_items, seed):
    """1M synthetic ratings, 10% held out by a seeded mask, as (train, test, shape)."""
    from fastmf.datasets import make_synthetic

    data = make_synthetic(n_users, n_items, 1_000_000, random_state=seed)
    is_test = np.random.default_rng(0).random(data.rows.size) < 0.1
    triplets = (data.rows, data.cols, data.values)
    train = tuple(a[~is_test] for a in triplets)
    test = tuple(a[is_test] for a in triplets)
    return train, test, (n_users, n_items)


def _clipped_rmse(test, predictions):
    """Held-out RMSE of star-rating predictions clipped to [1, 5]."""
    return rmse(test[2], np.clip(predictions, 1, 5))


def _mean_rmse(train, test, shape, seeds=3, **params):
    """RealValueMF(**params) held-out RMSE, the mean over ``seeds`` initial seeds."""
    return float(
        np.mean(
            [
                _clipped_rmse(
                    test,
                    fastmf.RealValueMF(**params, random_state=seed)
                    .fit(train, shape=shape)
                    .predict(test[0], test[1]),
                )
                for seed in range(seeds)
            ]
        )
    )


def _mean_auc(train, test, shape, seeds=3, **params):
    """BinaryMF(**params) held-out AUC on ratings binarized at 4, the mean over seeds."""
    labels = np.where(train[2] >= 4, 1.0, -1.0)
    truth = np.where(test[2] >= 4, 1, -1)
    scores = []
    for seed in range(seeds):
        model = fastmf.BinaryMF(**params, random_state=seed)
        model.fit((train[0], train[1], labels), shape=shape)
        scores.append(roc_auc(truth, model.decision_function(test[0], test[1])))
    return float(np.mean(scores))


def test_default_real_value_mf_rmse(benchmark, movielens):
    train, test, shape = movielens
    model = fastmf.RealValueMF(k=32, biases=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        benchmark.pedantic(model.fit, args=(train,), kwargs={"shape": shape}, rounds=1)
    score = _clipped_rmse(test, model.predict(test[0], test[1]))
    benchmark.extra_info.update(rmse=score, epochs=model.n_iter_)
    print(
        f"\nRealValueMF(k=32, biases=True) defaults: held-out RMSE {score:.4f} "
        f"({model.n_iter_} epochs); bar 0.900"
    )
    assert score <= 0.900


@pytest.mark.xfail(strict=True, reason="quality bar not met yet: defaults reach AUC ~0.791")
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


def _reference_rmses(train, test, shape, seed=0):
    """Held-out RMSE of fastmf's defaults and of the reference configurations.

    LIBMF runs its own defaults (via the ``libmf`` package, when installed);
    the cornac ``MF`` and Surprise ``SVD`` configurations run in fastmf, which
    uses the same per-entry biased update.
    """

    configurations = {
        "fastmf defaults (k=32, biases)": dict(k=32, biases=True),
        "cornac MF configuration (quoted 0.900)": dict(
            k=10, lr=0.01, l2=0.02, n_epochs=20, tol=None, init_scale=0.01 * np.sqrt(10)
        ),
        # Surprise's SVD defaults: 100 factors, lr 0.005, reg 0.02, 20 epochs, N(0, 0.1) init.
        "Surprise SVD configuration (quoted 0.913)": dict(
            k=100, lr=0.005, l2=0.02, n_epochs=20, tol=None, init_scale=0.1 * np.sqrt(100)
        ),
    }
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        for name, params in configurations.items():
            model = fastmf.RealValueMF(**{"biases": True, **params}, random_state=seed)
            model.fit(train, shape=shape)
            scores[name] = _clipped_rmse(test, model.predict(test[0], test[1]))
    try:
        from libmf import mf as libmf
    except ImportError:
        return scores
    reference = libmf.MF(fun=0, nr_threads=1, quiet=True)
    reference.fit(np.ascontiguousarray(np.column_stack(train), dtype=np.float32))
    pairs = np.asfortranarray(np.column_stack([test[0], test[1]]), dtype=np.float32)
    scores["LIBMF defaults (quoted 0.925)"] = _clipped_rmse(test, reference.predict(pairs))
    return scores


QUOTED = {
    "cornac MF configuration (quoted 0.900)": 0.900,
    "Surprise SVD configuration (quoted 0.913)": 0.913,
    "LIBMF defaults (quoted 0.925)": 0.925,
}


def test_reference_configurations_on_this_split(benchmark, movielens):
    """How hard this split is: reference configurations scored side by side with the defaults.

    fastmf's defaults must beat them all.
    """
    scores = benchmark.pedantic(_reference_rmses, args=movielens, rounds=1)
    print()
    for name, score in scores.items():
        print(f"  {name:<42} held-out RMSE {score:.4f}")
    benchmark.extra_info.update(scores)
    best_reference = min(v for name, v in scores.items() if not name.startswith("fastmf"))
    assert scores["fastmf defaults (k=32, biases)"] < best_reference


def test_split_sensitivity(benchmark):
    """The evidence behind :data:`SPLIT`: every reading of the issue's split, scored.

    For each split: fastmf's defaults (RMSE and BinaryMF AUC, mean of three
    seeds) and the reference configurations (seed 0), and how far the
    references land from the figures the issue quotes for "that same split".
    The chosen split must be the one closest to them.
    """
    pytest.importorskip("libmf.mf", reason="needs the 'bench' extra (libmf)")
    rows, cols, values = _load_movielens()

    def measure():
        results = {}
        for name, make_mask in SPLITS.items():
            train, test, shape = _split(rows, cols, values, make_mask(rows.size))
            scores = _reference_rmses(train, test, shape)
            distance = sum(abs(scores[ref] - quoted) for ref, quoted in QUOTED.items())
            error = _mean_rmse(train, test, shape, k=32, biases=True)
            auc = _mean_auc(train, test, shape, k=32, biases=True)
            results[name] = (distance, scores, error, auc)
        return results

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        results = benchmark.pedantic(measure, rounds=1)
    print("\n  quoted: cornac MF 0.900, Surprise SVD 0.913, LIBMF 0.925")
    for name, (distance, scores, error, auc) in results.items():
        references = "  ".join(f"{score:.4f}" for ref, score in scores.items() if ref in QUOTED)
        print(
            f"  {name:<66} references {references}  (sum |off quoted| {distance:.3f})"
            f"  fastmf defaults RMSE {error:.4f} AUC {auc:.4f}"
        )
    benchmark.extra_info.update({name: r[0] for name, r in results.items()})
    assert min(results, key=lambda name: results[name][0]) == SPLIT


def test_biases_on_and_off(benchmark, movielens):
    """The measurement behind the default ``biases=True``: both settings, both models."""
    datasets = {"MovieLens 100K": movielens, "synthetic 1M": _synthetic_split(20_000, 2_000, 1)}

    def measure():
        scores = {}
        for name, (train, test, shape) in datasets.items():
            for biases in (False, True):
                scores[(name, biases)] = (
                    _mean_rmse(train, test, shape, k=32, biases=biases),
                    _mean_auc(train, test, shape, k=32, biases=biases),
                )
        return scores

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        scores = benchmark.pedantic(measure, rounds=1, iterations=1)
    print()
    for (name, biases), (error, auc) in scores.items():
        print(f"  {name:<15} biases={biases!s:<5}  RMSE {error:.4f}  AUC {auc:.4f}")
    benchmark.extra_info.update({f"{n} biases={b}": v for (n, b), v in scores.items()})
    # The default rests on these: on MovieLens, biases lower the RMSE and raise the AUC.
    assert scores[("MovieLens 100K", True)][0] < scores[("MovieLens 100K", False)][0]
    assert scores[("MovieLens 100K", True)][1] > scores[("MovieLens 100K", False)][1]


def test_default_epoch_cap(benchmark, movielens):
    """The measurement behind the README's note: the 100-epoch cap is part of the defaults.

    On this split the defaults still improve slowly when ``n_epochs`` runs out
    (a ConvergenceWarning); trained on to convergence they overfit, and early
    stopping on a slice of the training data trains on less data.
    """
    train, test, shape = movielens

    def held_out(model):
        return _clipped_rmse(test, model.predict(test[0], test[1]))

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


def test_binary_mf_learning_rate_default(benchmark, movielens):
    """The measurement behind BinaryMF's default ``lr=0.02``: three data sets, three rates.

    lr=0.01 scores best on MovieLens alone, but worse than the old 0.05 on the
    demo's sparser synthetic data; 0.02 beats 0.05 on all three.
    """
    datasets = {
        "MovieLens 100K": movielens,
        "synthetic 20k x 2k": _synthetic_split(20_000, 2_000, 1),
        "demo synthetic 50k x 5k": _synthetic_split(50_000, 5_000, 0),
    }
    rates = (0.05, 0.02, 0.01)

    def measure():
        return {
            (name, lr): _mean_auc(train, test, shape, k=32, lr=lr)
            for name, (train, test, shape) in datasets.items()
            for lr in rates
        }

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmf.ConvergenceWarning)
        aucs = benchmark.pedantic(measure, rounds=1)
    print()
    for name in datasets:
        shown = "  ".join(f"lr={lr}: {aucs[(name, lr)]:.4f}" for lr in rates)
        print(f"  BinaryMF(k=32) AUC, {name:<24} {shown}")
    benchmark.extra_info.update({f"{name} lr={lr}": v for (name, lr), v in aucs.items()})
    # lr=None resolves to the constant schedule's default, 0.02.
    assert fastmf.BinaryMF()._validated_params()["lr"] == 0.02
    assert all(aucs[(name, 0.02)] > aucs[(name, 0.05)] for name in datasets)
