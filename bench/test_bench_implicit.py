"""Implicit feedback: ImplicitMF against implicit (ALS, BPR, logistic MF) and popularity.

Everything here is measured side by side in one run, and every run is printed.

Quality (``test_movielens_quality``): MovieLens 100K (``../shared/data/ml-100k``,
or ``FASTMF_BENCH_ML100K=/path/to/u.data``), ratings >= 4 are the interactions,
``train_test_split(by="user", test_size=0.2, random_state=0)`` holds out 20% of
each user's interactions (users with >= 5); precision@10 and NDCG@10 over the
held-out interactions, training items excluded, computed by one function for
every model from its top-10 lists. fastmf with its defaults (and ``loss="bpr"``),
implicit 0.7.x with ``factors=32`` and its defaults, and a popularity baseline.

Second data set (``test_synthetic_quality_and_time_to_als``): 10M generated
interactions of 200k users x 20k items (``FASTMF_BENCH_INTERACTIONS`` sets the
count; :func:`fastmf.datasets.make_interactions`): power-law user activity and item popularity,
and taste: users and items fall in 50 groups, and 60% of a user's interactions
are with items of its own group (drawn by popularity within the group), the
rest by popularity overall. The same per-user split; metrics over a fixed
sample of 2,000 held-out users. implicit's ALS fit gives the target P@10;
fastmf fits with its defaults for 1, 2, 3, 5, 8, ... epochs (a fit of ``e``
epochs is the first ``e`` epochs of a longer one) and the whole ``fit`` time
of the first that reaches ALS's P@10 is compared with ALS's.

Speed (``test_sampled_updates_per_second``): on the same interactions, BPR
with one negative per interaction, k=32, 1 and 2 threads: fastmf's
``ImplicitMF(loss="bpr", n_negatives=1)`` and implicit's
``BayesianPersonalizedRanking(factors=32)``, 5 epochs / iterations each, whole
``fit`` times, alternating rounds (``FASTMF_BENCH_ROUNDS``, default 2).
Updates per second = epochs x interactions / fit time (both tools take one
sampled triple per interaction per epoch).

    pip install implicit   # the peer; its side is skipped when missing
    python -m pytest bench/test_bench_implicit.py --benchmark-only -s
"""

import os
import pathlib
import time

import numpy as np
import pytest
import scipy.sparse as sp

import fastmf
from fastmf.model_selection import train_test_split

HERE = pathlib.Path(__file__).resolve().parent
ML100K = pathlib.Path(
    os.environ.get(
        "FASTMF_BENCH_ML100K", HERE.parents[1] / "shared" / "data" / "ml-100k" / "u.data"
    )
)
ROUNDS = int(os.environ.get("FASTMF_BENCH_ROUNDS", 2))
N_USERS, N_ITEMS, K = 200_000, 20_000, 32
EVAL_USERS = 2000


def _implicit():
    try:
        import implicit  # noqa: F401
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    threadpool_limits(1, "blas")  # implicit warns, and ALS slows down, with threaded BLAS
    return implicit


def top_n_metrics(top, test_rows, test_cols, users, k=10):
    """Mean precision@k and NDCG@k of ``top`` (one row of item ids per user of ``users``)."""
    order = np.lexsort((test_cols, test_rows))
    rows, cols = test_rows[order], test_cols[order]
    starts = np.searchsorted(rows, users)
    ends = np.searchsorted(rows, users, side="right")
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    precision, ndcg = [], []
    for row, (lo, hi) in enumerate(zip(starts, ends)):
        hits = np.isin(top[row, :k], cols[lo:hi])
        precision.append(hits.sum() / k)
        ndcg.append((hits * discounts).sum() / discounts[: min(hi - lo, k)].sum())
    return float(np.mean(precision)), float(np.mean(ndcg))


def popularity_top(train_matrix, users, k=10):
    counts = np.asarray(train_matrix.sum(axis=0)).ravel().astype(np.float64)
    top = np.empty((users.size, k), dtype=np.int64)
    for row, user in enumerate(users):
        scores = counts.copy()
        scores[train_matrix.indices[train_matrix.indptr[user] : train_matrix.indptr[user + 1]]] = -1
        top[row] = np.argsort(-scores, kind="stable")[:k]
    return top


def implicit_model(name, threads, **params):
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking
    from implicit.lmf import LogisticMatrixFactorization

    cls = {
        "ALS": AlternatingLeastSquares,
        "BPR": BayesianPersonalizedRanking,
        "LMF": LogisticMatrixFactorization,
    }[name]
    return cls(factors=K, random_state=0, num_threads=threads, **params)


def implicit_top(model, train_matrix, users, k=10):
    ids, _ = model.recommend(users, train_matrix[users], N=k, filter_already_liked_items=True)
    return ids


def fastmf_top(model, users, k=10):
    return model.recommend(users, n=k)[0]


def split(rows, cols, shape):
    ones = np.ones(rows.size, dtype=np.float32)
    train, test = train_test_split((rows, cols, ones), 0.2, by="user", shape=shape, random_state=0)
    matrix = sp.csr_matrix((train[2], (train[0], train[1])), shape=shape)
    matrix.sort_indices()
    return train, test, matrix


def _table(title, lines):
    print(f"\n{title}")
    print(f"  {'model':<34} {'P@10':>7} {'NDCG@10':>8} {'fit s':>7}")
    for name, p, n, seconds in lines:
        shown = "" if seconds is None else f"{seconds:7.2f}"
        print(f"  {name:<34} {p:7.3f} {n:8.3f} {shown:>7}")


def test_movielens_quality(benchmark):
    if not ML100K.exists():
        pytest.skip(f"MovieLens 100K is not at {ML100K}; set FASTMF_BENCH_ML100K")
    data = np.loadtxt(ML100K, dtype=np.int64)
    liked = data[:, 2] >= 4
    shape = (int(data[:, 0].max()), int(data[:, 1].max()))
    train, test, matrix = split(data[liked, 0] - 1, data[liked, 1] - 1, shape)
    users = np.unique(test[0])
    lines = [("popularity", *top_n_metrics(popularity_top(matrix, users), *test[:2], users), None)]
    fastmf.ImplicitMF(n_epochs=1).fit(train, shape=shape)  # compile outside the timings
    fastmf.ImplicitMF(n_epochs=1, loss="bpr").fit(train, shape=shape)
    results = {}
    for name, params in (("ImplicitMF()", {}), ('ImplicitMF(loss="bpr")', {"loss": "bpr"})):
        start = time.perf_counter()
        model = fastmf.ImplicitMF(random_state=0, n_threads=1, **params).fit(train, shape=shape)
        seconds = time.perf_counter() - start
        results[name] = top_n_metrics(fastmf_top(model, users), *test[:2], users)
        lines.append((f"fastmf {name}", *results[name], seconds))
    implicit = _implicit()
    if implicit is not None:
        for name in ("ALS", "BPR", "LMF"):
            model = implicit_model(name, 1)
            start = time.perf_counter()
            model.fit(matrix, show_progress=False)
            seconds = time.perf_counter() - start
            results[name] = top_n_metrics(implicit_top(model, matrix, users), *test[:2], users)
            lines.append((f"implicit {implicit.__version__} {name}", *results[name], seconds))
    _table("MovieLens 100K, ratings >= 4, 20% of each user held out (1 thread)", lines)
    benchmark.pedantic(
        lambda: fastmf.ImplicitMF(random_state=0, n_threads=1).fit(train, shape=shape),
        rounds=1,
        iterations=1,
    )
    popularity = lines[0][1:3]
    assert results["ImplicitMF()"][0] > 1.5 * popularity[0]
    if implicit is not None:  # the target: the defaults at least as good as ALS on both
        assert results["ImplicitMF()"][0] >= results["ALS"][0]
        assert results["ImplicitMF()"][1] >= results["ALS"][1]


@pytest.fixture(scope="module")
def interactions(generated_interactions):
    """The generated interactions (bench/conftest.py), split per user."""
    rows, cols, shape = generated_interactions
    train, test, matrix = split(rows, cols, shape)
    held_out = np.unique(test[0])
    users = np.sort(np.random.default_rng(0).choice(held_out, EVAL_USERS, replace=False))
    return train, test, matrix, shape, users


def test_synthetic_quality_and_time_to_als(interactions, benchmark):
    train, test, matrix, shape, users = interactions
    print(f"\n{train[0].size:,} training interactions, {N_USERS:,} users x {N_ITEMS:,} items")
    lines = [("popularity", *top_n_metrics(popularity_top(matrix, users), *test[:2], users), None)]
    for threads in (1, 2):  # compile outside the timings
        fastmf.ImplicitMF(n_epochs=1, n_threads=threads).fit(train, shape=shape)
    implicit = _implicit()
    target = None
    for threads in (1, 2):
        if implicit is not None:
            model = implicit_model("ALS", threads)
            start = time.perf_counter()
            model.fit(matrix, show_progress=False)
            als_seconds = time.perf_counter() - start
            als = top_n_metrics(implicit_top(model, matrix, users), *test[:2], users)
            target = als[0]
            lines.append((f"implicit ALS, {threads} thread(s)", *als, als_seconds))
        for epochs in (1, 2, 3, 5, 8, 12, 20, 30, 50):
            model = fastmf.ImplicitMF(n_epochs=epochs, random_state=0, n_threads=threads)
            start = time.perf_counter()
            model.fit(train, shape=shape)
            seconds = time.perf_counter() - start
            metrics = top_n_metrics(fastmf_top(model, users), *test[:2], users)
            lines.append((f"fastmf ImplicitMF({epochs} epochs), {threads}T", *metrics, seconds))
            if target is not None and metrics[0] >= target:
                ratio = seconds / als_seconds
                print(
                    f"  {threads} thread(s): fastmf reached ALS's P@10 {target:.3f} in "
                    f"{seconds:.2f} s, {ratio:.2f}x ALS's {als_seconds:.2f} s"
                )
                break
        else:
            if target is not None:
                print(f"  {threads} thread(s): fastmf did not reach ALS's P@10 {target:.3f}")
    _table("Synthetic interactions (2,000 held-out users)", lines)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


@pytest.mark.parametrize("threads", [1, 2])
def test_sampled_updates_per_second(interactions, threads, benchmark):
    implicit = _implicit()
    train, _, matrix, shape, _ = interactions
    epochs, nnz = 5, train[0].size

    def run_fastmf():
        model = fastmf.ImplicitMF(
            loss="bpr", n_negatives=1, n_epochs=epochs, random_state=0, n_threads=threads
        )
        start = time.perf_counter()
        model.fit(train, shape=shape)
        return time.perf_counter() - start

    def run_implicit():
        model = implicit_model("BPR", threads, iterations=epochs)
        start = time.perf_counter()
        model.fit(matrix, show_progress=False)
        return time.perf_counter() - start

    fastmf.ImplicitMF(loss="bpr", n_epochs=1, n_threads=threads).fit(train, shape=shape)
    print(f"\nBPR, k={K}, {threads} thread(s), {nnz:,} interactions, {epochs} epochs")
    ratios = []
    for round_ in range(ROUNDS):
        ours = run_fastmf()
        line = f"  round {round_ + 1}: fastmf {epochs * nnz / ours / 1e6:6.1f}M updates/s"
        if implicit is not None:
            theirs = run_implicit()
            ratios.append(theirs / ours)
            line += (
                f", implicit {epochs * nnz / theirs / 1e6:6.1f}M updates/s, "
                f"ratio {theirs / ours:.2f}"
            )
        print(line)
    if ratios:
        print(f"  median ratio fastmf/implicit updates/s: {np.median(ratios):.2f}")
    benchmark.pedantic(run_fastmf, rounds=1, iterations=1)
