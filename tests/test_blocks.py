"""The block layout, the stratum schedule, and parallel training's guarantees."""

import hashlib
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from _reference import block_epoch
from conftest import MODELS, model_coo, random_coo
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmf._losses
from fastmf import BinaryMF, DivergenceError, RealValueMF, _blocks, _kernels
from fastmf._losses import LOSSES, SQUARED
from fastmf._validation import check_coo

NONE = None  # an optional kernel array left out


def layout_of(seed=0, grid=3, m=40, n=30, nnz=500, binary=False, order=None, ways=2):
    rows, cols, values, shape = random_coo(seed, m, n, nnz, binary=binary)
    if order is not None:
        rows, cols, values = rows[order], cols[order], values[order]
    coo = check_coo((rows, cols, values), shape)
    return (rows, cols, values), _blocks.arrange(coo, grid, np.random.default_rng(7), ways=ways)


@pytest.mark.parametrize("ways", sorted({loss.interleave for loss in LOSSES.values()}))
def test_layout_keeps_every_rating_once_in_its_block(ways):
    (rows, cols, values), layout = layout_of(ways=ways)
    original = sorted(zip(rows.tolist(), cols.tolist(), values.tolist()))
    stored = sorted(
        zip(
            layout.user_perm[layout.rows].tolist(),
            layout.item_perm[layout.cols].tolist(),
            layout.values.tolist(),
        )
    )
    assert stored == original
    grid = layout.grid
    for block in range(grid * grid):
        span = slice(layout.block_offsets[block], layout.block_offsets[block + 1])
        assert (layout.rows[span] * grid // 40 == block // grid).all()
        assert (layout.cols[span] * grid // 30 == block % grid).all()
        # The block takes its `ways` parts in turn; within each, a user's ratings are
        # contiguous.
        users = layout.rows[span]
        for part in (users[w::ways] for w in range(ways)):
            starts = part[np.r_[True, part[1:] != part[:-1]]]
            assert len(starts) == len(set(starts.tolist()))
            assert (np.diff(starts) > 0).all()  # users in (relabeled) id order
    np.testing.assert_array_equal(layout.user_counts, np.bincount(layout.rows, minlength=40))


def test_layout_does_not_depend_on_input_order():
    _, reference = layout_of()
    _, shuffled = layout_of(order=np.random.default_rng(3).permutation(500))
    for name in ("rows", "cols", "values", "block_offsets"):
        np.testing.assert_array_equal(getattr(shuffled, name), getattr(reference, name))


@settings(max_examples=40, deadline=None)
@given(grid=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_schedule_visits_every_block_once_in_disjoint_strata(grid, seed):
    schedule = _blocks.epoch_schedule(grid, np.random.default_rng(seed))
    assert schedule.shape == (grid, grid)
    assert sorted(schedule.ravel().tolist()) == list(range(grid * grid))
    for stratum in schedule:
        assert len(set((stratum // grid).tolist())) == grid  # distinct user stripes
        assert len(set((stratum % grid).tolist())) == grid  # distinct item stripes


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("epoch", [_kernels.sgd_epoch_serial, _kernels.sgd_epoch_parallel])
def test_epoch_equals_numpy_reference_of_the_same_schedule(loss, epoch):
    _, layout = layout_of(binary=loss == "logistic")
    rng = np.random.default_rng(1)
    P = (0.3 * rng.standard_normal((40, 4))).astype(np.float32)
    Q = (0.3 * rng.standard_normal((30, 4))).astype(np.float32)
    schedule = _blocks.epoch_schedule(layout.grid, rng)
    block_losses = np.full(layout.grid**2, np.nan)
    P_ref, Q_ref, losses_ref = block_epoch(
        loss,
        layout.rows,
        layout.cols,
        layout.values,
        layout.block_offsets,
        schedule,
        P,
        Q,
        0.05,
        0.1,
    )
    epoch(
        LOSSES[loss].kernels,
        layout.rows,
        layout.cols,
        layout.values,
        layout.block_offsets,
        schedule,
        P,
        Q,
        NONE,
        NONE,
        NONE,
        NONE,
        np.float32(0.05),
        np.float32(0.1),
        block_losses,
    )
    np.testing.assert_allclose(P, P_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-4, atol=1e-5)
    # Each block's loss, summed during its pass before each step.
    np.testing.assert_allclose(block_losses, losses_ref, rtol=1e-5)
    assert (block_losses > 0).sum() == (np.diff(layout.block_offsets) > 0).sum()


@pytest.mark.parametrize("epoch", [_kernels.sgd_epoch_serial, _kernels.sgd_epoch_parallel])
def test_each_rating_is_visited_exactly_once_per_epoch(epoch):
    # A visit counter made of the kernel itself: k = 1, user factors 1, item
    # factors 0, all ratings 1, no L2 and a tiny lr. Each visit of (u, i) then
    # adds lr * (1 - p_u q_i) * p_u ~ lr to q_i (to first order in lr), so
    # after one epoch q_i / lr counts the visits of item i's ratings; a missed
    # or doubled rating would be off by one.
    _, layout = layout_of(grid=4, nnz=600)
    rng = np.random.default_rng(2)
    P = np.ones((40, 1), dtype=np.float32)
    Q = np.zeros((30, 1), dtype=np.float32)
    values = np.ones_like(layout.values)
    lr = np.float32(2.0**-16)
    epoch(
        SQUARED.kernels,
        layout.rows,
        layout.cols,
        values,
        layout.block_offsets,
        _blocks.epoch_schedule(4, rng),
        P,
        Q,
        NONE,
        NONE,
        NONE,
        NONE,
        lr,
        np.float32(0),
        np.zeros(16),
    )
    visits = Q[:, 0] / lr
    np.testing.assert_allclose(visits, layout.item_counts, rtol=1e-3)
    assert layout.item_counts.sum() == 600


def fit_digest(model_class, n_threads, seed=0, grid=4, **params):
    rows, cols, values, shape = model_coo(model_class, 5, 200, 150, 5000)
    model = model_class(
        k=8,
        n_epochs=4,
        tol=None,
        random_state=seed,
        n_threads=n_threads,
        grid=grid,
        lr=0.05,
        **params,
    )
    model.fit((rows, cols, values), shape=shape)
    digest = hashlib.sha256()
    for array in (
        model.user_factors_,
        model.item_factors_,
        model.user_bias_,
        model.item_bias_,
        model.loss_curve_,
    ):
        digest.update(array.tobytes())
    return digest.hexdigest()


def test_identical_on_any_thread_count_with_biases_and_adagrad(model_class, large_fits):
    params = dict(biases=True, learning_rate="adagrad")
    digests = {fit_digest(model_class, threads, **params) for threads in (1, 2, None)}
    assert len(digests) == 1


def test_same_seed_gives_identical_factors_on_any_thread_count(model_class, large_fits):
    digests = {fit_digest(model_class, threads) for threads in (1, 2, None)}
    assert len(digests) == 1
    assert fit_digest(model_class, 1, seed=1) not in digests


def test_identical_factors_with_four_threads_in_a_fresh_process():
    # NUMBA_NUM_THREADS is read at import, so 4 threads need a new process
    # (on a 2-core machine they are oversubscribed, which is the point).
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import numba
        from test_blocks import fit_digest
        from conftest import MODELS, use_large_fit_kernels
        use_large_fit_kernels()
        assert numba.config.NUMBA_NUM_THREADS == 4
        for cls in MODELS:
            print(cls.__name__, fit_digest(cls, 1), fit_digest(cls, 2), fit_digest(cls, 4))
        """
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="4")
    out = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(__file__)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.strip().splitlines():
        name, *digests = line.split()
        model_class = {cls.__name__: cls for cls in MODELS}[name]
        assert set(digests) == {fit_digest(model_class, 1)}


def test_fit_restores_the_numba_thread_count_even_when_it_fails(large_fits):
    before = numba.get_num_threads()
    rows, cols, values, shape = random_coo(0)
    RealValueMF(k=2, n_epochs=2, tol=None, n_threads=1).fit((rows, cols, values), shape=shape)
    assert numba.get_num_threads() == before
    if numba.config.NUMBA_NUM_THREADS > 1:
        numba.set_num_threads(1)
        try:
            RealValueMF(k=2, n_epochs=2, tol=None, n_threads=2).fit(
                (rows, cols, values), shape=shape
            )
            assert numba.get_num_threads() == 1
            with pytest.raises(DivergenceError):
                RealValueMF(k=8, lr=50.0, n_epochs=20, tol=None, n_threads=2).fit(
                    (rows, cols, values * 100), shape=shape
                )
            assert numba.get_num_threads() == 1
        finally:
            numba.set_num_threads(before)


def test_serial_fit_never_starts_the_thread_pool():
    code = textwrap.dedent(
        """
        import numpy as np
        import numba.np.ufunc.parallel as pool
        import sys
        sys.path.insert(0, sys.argv[1])
        from conftest import MODELS
        X = np.random.default_rng(0).integers(0, 3, size=(60, 40)) - 1
        for cls in MODELS:  # implicit feedback takes positive weights
            data = np.abs(X) if cls()._loss.sampled else X
            cls(k=4, n_epochs=3, tol=None, n_threads=1).fit(data)
        print(pool._is_initialized)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(__file__)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_grid_depends_on_data_and_rank_only():
    # 10M ratings of 200k x 20k at k=32: the item stripes of an 8 x 8 grid fit the budget.
    assert _blocks.choose_grid(200_000, 20_000, 10_000_000, 32) == 8
    # Many items at a high rank need more stripes to keep a stripe cached.
    assert _blocks.choose_grid(200_000, 1_000_000, 100_000_000, 128) > 8
    # Tiny data: one block (nothing to parallelize, nothing to cache).
    assert _blocks.choose_grid(5, 10, 13, 3) == 1
    for m, n, nnz, k in [(10, 10, 50, 4), (1000, 500, 100_000, 16), (10**6, 10**5, 10**8, 64)]:
        grid = _blocks.choose_grid(m, n, nnz, k)
        assert grid == 1 or nnz / grid**2 >= _blocks.MIN_RATINGS_PER_BLOCK


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    density=st.floats(0.05, 1.0),
    grid=st.integers(1, 6),
    k=st.integers(1, 9),
    biases=st.booleans(),
    adagrad=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_any_small_problem_fits_identically_on_one_and_two_threads(
    m, n, density, grid, k, biases, adagrad, seed
):
    # Edge shapes (a single user or item, more stripes than rows, empty blocks)
    # must train without touching memory outside the arrays (CI runs this with
    # NUMBA_BOUNDSCHECK=1) and give the same bits serially and in parallel.
    rng = np.random.default_rng(seed)
    mask = rng.random((m, n)) < density
    mask[rng.integers(m), rng.integers(n)] = True
    rows, cols = np.nonzero(mask)
    values = rng.integers(1, 6, rows.size).astype(np.float32)
    fits = []
    for threads in (1, 2):
        with pytest.MonkeyPatch.context() as patch:  # 2 threads: the large-fit path
            patch.setattr(fastmf._losses, "SMALL_FIT_RATINGS", 0 if threads == 2 else 10**9)
            model = RealValueMF(
                k=k,
                n_epochs=3,
                tol=None,
                random_state=seed,
                grid=grid,
                n_threads=threads,
                biases=biases,
                learning_rate="adagrad" if adagrad else "constant",
            )
            fits.append(model.fit((rows, cols, values), shape=(m, n)))
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "loss_curve_"):
        np.testing.assert_array_equal(getattr(fits[0], name), getattr(fits[1], name))
    assert np.isfinite(fits[0].user_factors_).all()
    ids, _ = fits[0].recommend(0, n=3)
    seen = set(cols[rows == 0].tolist())
    assert not set(ids[ids >= 0].tolist()) & seen


@pytest.mark.parametrize("duplicates", ["sum", "last"])
@pytest.mark.parametrize("ways", sorted({loss.interleave for loss in LOSSES.values()}))
def test_parallel_and_serial_block_sorts_give_the_same_layout(duplicates, ways):
    # Small fits sort their blocks serially, so the parallel sort is checked
    # here directly, with duplicate pairs to resolve.
    rows, cols, values, _ = random_coo(9, m=50, n=40, nnz=800)
    rows = np.concatenate([rows, rows[:100]])
    cols = np.concatenate([cols, cols[:100]])
    values = np.concatenate([values, values[:100] + 1])
    results = []
    for parallel in (False, True):
        arrays = [rows.copy(), cols.copy(), values.astype(np.float32)]
        grid = 4
        stripe = (arrays[0].astype(np.int64) * grid // 50) * grid + arrays[1] * grid // 40
        order = np.argsort(stripe, kind="stable")
        arrays = [a[order] for a in arrays]
        offsets = np.searchsorted(stripe[order], np.arange(grid * grid + 1)).astype(np.int64)
        seeds = np.arange(grid * grid, dtype=np.int64) * 7919
        summary = _blocks.canonicalize_blocks(
            *arrays, offsets, seeds, duplicates, ways, parallel=parallel
        )
        results.append((summary, arrays))
    (serial_summary, serial), (parallel_summary, parallel) = results
    np.testing.assert_array_equal(serial_summary, parallel_summary)
    assert serial_summary[:, 1].sum() == 100
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("parallel", [False, True])
def test_seen_items_csr_lists_each_users_training_items(monkeypatch, parallel):
    # The compiled scatter (serial, or one user stripe per task) must give each
    # original user exactly the original items it rated, in storage order: the
    # same arrays as the small-layout argsort path.
    from fastmf import _layout_numpy

    rows, cols, values, shape = random_coo(4, m=60, n=45, nnz=900)
    results = []
    for small in (True, False):
        monkeypatch.setattr(_layout_numpy, "SMALL_LAYOUT_RATINGS", 10**9 if small else 0)
        data = check_coo((rows, cols, values), shape=shape)
        layout = _blocks.arrange(data, 3, np.random.default_rng(0))
        results.append(layout.seen_items_csr(parallel=parallel and not small))
    (indptr, items), (small_indptr, small_items) = results[1], results[0]
    np.testing.assert_array_equal(indptr, small_indptr)
    np.testing.assert_array_equal(items, small_items)
    for user in range(shape[0]):
        got = np.sort(items[indptr[user] : indptr[user + 1]])
        np.testing.assert_array_equal(got, np.sort(cols[rows == user]))


def test_small_fits_run_serially_with_the_quick_to_compile_kernels(monkeypatch):
    import fastmf._backend

    seen = []
    real_arrange, real_start = fastmf._backend.arrange, fastmf._backend.LocalBackend.start

    def arrange(*args, parallel=False, **kwargs):
        seen.append(parallel)
        return real_arrange(*args, parallel=parallel, **kwargs)

    def start(self, layout, loss, state, sampling=None):
        real_start(self, layout, loss, state, sampling)
        seen.append((self.kernels.name, self.n_threads))

    monkeypatch.setattr(fastmf._backend, "arrange", arrange)
    monkeypatch.setattr(fastmf._backend.LocalBackend, "start", start)
    monkeypatch.setattr(fastmf._losses, "SMALL_FIT_RATINGS", 500)
    for nnz in (400, 600):
        rows, cols, values, shape = random_coo(3, m=40, n=30, nnz=nnz, binary=True)
        BinaryMF(k=2, n_epochs=1, tol=None, n_threads=2).fit((rows, cols, values), shape=shape)
    assert seen == [False, ("logistic/one-at-a-time", 1), True, ("logistic", 2)]


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_held_out_entries_are_relabeled_and_stably_sorted_by_user(dtype):
    # Above the small-data threshold a counting-sort kernel runs, below it
    # numpy; both must give the stable argsort's order of the relabeled ids.
    rng = np.random.default_rng(1)
    m, n = 997, 301
    user_new, item_new = rng.permutation(m), rng.permutation(n)
    for size in (50, 150_000):
        rows = rng.integers(0, m, size).astype(dtype)
        cols = rng.integers(0, n, size).astype(dtype)
        values = rng.normal(size=size).astype(np.float32)
        out_rows, out_cols, out_values = _blocks.relabeled_by_user(
            rows, cols, values, user_new, item_new, 0.25
        )
        order = np.argsort(user_new[rows], kind="stable")
        np.testing.assert_array_equal(out_rows, user_new[rows][order])
        np.testing.assert_array_equal(out_cols, item_new[cols][order])
        np.testing.assert_array_equal(out_values, values[order] - np.float32(0.25))
        assert out_rows.dtype == out_cols.dtype == np.int32
        assert out_values.dtype == np.float32


def test_parallel_id_counts_by_stripe_equal_bincount():
    # Above the small-layout threshold the counts run stripe by stripe on
    # numba's threads; each stripe owns its ids, so they must be exact.
    rows, cols, values, shape = random_coo(4, m=700, n=500, nnz=150_000)
    coo = check_coo((rows, cols, values), shape)
    layout = _blocks.arrange(coo, 5, np.random.default_rng(4), parallel=True)
    np.testing.assert_array_equal(layout.user_counts, np.bincount(layout.rows, minlength=700))
    np.testing.assert_array_equal(layout.item_counts, np.bincount(layout.cols, minlength=500))
    serial = _blocks.arrange(coo, 5, np.random.default_rng(4), parallel=False)
    np.testing.assert_array_equal(serial.user_counts, layout.user_counts)
    np.testing.assert_array_equal(serial.item_counts, layout.item_counts)
