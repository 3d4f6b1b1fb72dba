"""The numpy layout of small fits gives exactly the bits of the layout kernels."""

import numpy as np
import pytest
from conftest import random_coo
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmf import RealValueMF, _blocks, _layout_numpy
from fastmf._validation import check_coo


def with_duplicates(seed, m, n, nnz, repeats):
    rows, cols, values, _ = random_coo(seed, m, n, nnz)
    pick = np.random.default_rng(seed).integers(0, nnz, size=repeats)
    rows, cols = np.concatenate([rows, rows[pick]]), np.concatenate([cols, cols[pick]])
    values = np.concatenate([values, values[pick] * 0.37 + 0.1]).astype(np.float32)
    order = np.random.default_rng(seed + 1).permutation(rows.shape[0])
    return rows[order], cols[order], values[order]


def scattered(rows, cols, values, shape, grid, seed):
    """Relabel and group by block with the kernels, as arrange does for large fits."""
    rng = np.random.default_rng(seed)
    user_new, item_new = rng.permutation(shape[0]), rng.permutation(shape[1])
    coo = check_coo((rows, cols, values), shape, duplicates="sum")
    return _blocks._scatter(coo, user_new, item_new, grid)[:4], (user_new, item_new, coo)


def kept_entries(arrays, offsets, results):
    return [
        np.concatenate([a[offsets[b] : offsets[b] + results[b, 0]] for b in range(len(results))])
        for a in arrays
    ]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    m=st.integers(1, 60),
    n=st.integers(1, 60),
    grid=st.integers(1, 6),
    ways=st.sampled_from([1, 2, 4]),
    duplicates=st.sampled_from(["raise", "sum", "last"]),
    repeats=st.integers(0, 40),
    shuffle=st.booleans(),
)
def test_numpy_block_sort_equals_the_serial_and_parallel_kernels(
    seed, m, n, grid, ways, duplicates, repeats, shuffle
):
    nnz = min(m * n, 300)
    rows, cols, values = with_duplicates(seed, m, n, nnz, repeats)
    (block_rows, block_cols, block_values, offsets), _ = scattered(
        rows, cols, values, (m, n), grid, seed
    )
    seeds = np.random.default_rng(seed).integers(0, 2**62, size=grid * grid)
    policy = _blocks.duplicates_code(duplicates)
    outcomes = []
    for how in ("numpy", "serial", "parallel"):
        arrays = [block_rows.copy(), block_cols.copy(), block_values.copy()]
        if how == "numpy":
            results = _layout_numpy.canonicalize_blocks(
                *arrays, offsets, seeds, policy, ways, shuffle
            )
        else:
            results = np.zeros((grid * grid, 4), dtype=np.int64)
            kernel = (
                _blocks._canonicalize_serial if how == "serial" else _blocks._canonicalize_parallel
            )
            kernel(*arrays, offsets, 1, seeds, policy, ways, shuffle, results)
        outcomes.append((results, kept_entries(arrays, offsets, results)))
    reference_results, reference = outcomes[1]
    assert reference_results[:, 1].sum() == repeats
    for results, arrays in (outcomes[0], outcomes[2]):
        np.testing.assert_array_equal(results, reference_results)
        for a, b in zip(arrays, reference):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_numpy_scatter_equals_the_scatter_kernels():
    rows, cols, values = with_duplicates(3, 70, 50, 1500, 30)
    (kernel_arrays), (user_new, item_new, coo) = scattered(rows, cols, values, (70, 50), 5, 3)
    numpy_arrays = _layout_numpy.scatter_blocks(
        coo.rows, coo.cols, coo.values, user_new, item_new, 5, (70, 50), np.int32
    )
    for a, b in zip(numpy_arrays, kernel_arrays):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_sums_of_many_duplicates_are_taken_in_input_order():
    # 40 copies of one pair: numpy's pairwise sum would round differently.
    rng = np.random.default_rng(0)
    values = rng.normal(size=40).astype(np.float32) * np.float32(1e4)
    rows = np.zeros(40, dtype=np.int32)
    cols = np.zeros(40, dtype=np.int32)
    arrays = [rows, cols, values.copy()]
    offsets = np.array([0, 40], dtype=np.int64)
    results = _layout_numpy.canonicalize_blocks(*arrays, offsets, np.array([5]), 1, 2)
    total = np.float64(0.0)
    for v in values:
        total += np.float64(v)
    assert results[0, :2].tolist() == [1, 39]
    assert arrays[2][0] == np.float32(total)


def test_long_runs_fall_back_to_the_kernel_with_the_same_result(monkeypatch):
    rows, cols, values = with_duplicates(5, 30, 40, 600, 10)
    coo = check_coo((rows, cols, values), (30, 40), duplicates="sum")
    reference = _blocks.arrange(coo, 2, np.random.default_rng(1), "sum")
    assert (
        _layout_numpy.canonicalize_blocks(
            *[np.zeros(50, np.int32), np.zeros(50, np.int32), np.ones(50, np.float32)],
            np.array([0, 50]),
            np.array([1]),
            0,
            2,
        )
        is not None
    )
    monkeypatch.setattr(_layout_numpy, "MAX_RUN_LENGTH", 3)
    untouched = [np.zeros(50, np.int32), np.arange(50, dtype=np.int32), np.ones(50, np.float32)]
    assert (
        _layout_numpy.canonicalize_blocks(*untouched, np.array([0, 50]), np.array([1]), 0, 2)
        is None
    )
    np.testing.assert_array_equal(untouched[1], np.arange(50))
    fallback = _blocks.arrange(coo, 2, np.random.default_rng(1), "sum")
    for name in ("rows", "cols", "values", "block_offsets", "user_counts", "item_counts"):
        np.testing.assert_array_equal(getattr(fallback, name), getattr(reference, name))


@pytest.mark.parametrize("duplicates", ["sum", "last"])
def test_fits_are_identical_whichever_path_builds_the_layout(monkeypatch, duplicates):
    rows, cols, values = with_duplicates(8, 60, 45, 1200, 50)

    def fit():
        model = RealValueMF(k=4, n_epochs=3, tol=None, random_state=2)
        return model.fit((rows, cols, values), shape=(60, 45), duplicates=duplicates)

    small = fit()
    monkeypatch.setattr(_layout_numpy, "SMALL_LAYOUT_RATINGS", 0)
    monkeypatch.setattr(_blocks, "_SMALL_PERMUTE_VALUES", 0)
    large = fit()
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "loss_curve_",
                 "seen_indptr_", "seen_items_"):  # fmt: skip
        np.testing.assert_array_equal(getattr(small, name), getattr(large, name))


@pytest.mark.parametrize("duplicates", ["raise", "sum", "last"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_long_user_runs_sort_as_the_numpy_twin(duplicates, shuffle):
    # Three users with 60 items each in one block, with duplicates: the
    # kernel's radix sort must keep input order among duplicates ("last"
    # means the last given) like the twin's stable lexsort.
    rows, cols, values = with_duplicates(5, 3, 60, 180, 25)
    (block_rows, block_cols, block_values, offsets), _ = scattered(
        rows, cols, values, (3, 60), 1, 5
    )
    seeds = np.array([123], dtype=np.int64)
    policy = _blocks.duplicates_code(duplicates)
    twin = [block_rows.copy(), block_cols.copy(), block_values.copy()]
    twin_results = _layout_numpy.canonicalize_blocks(*twin, offsets, seeds, policy, 2, shuffle)
    kernel = [block_rows.copy(), block_cols.copy(), block_values.copy()]
    results = np.zeros((1, 4), dtype=np.int64)
    _blocks._canonicalize_serial(*kernel, offsets, 1, seeds, policy, 2, shuffle, results)
    np.testing.assert_array_equal(results, twin_results)
    assert results[0, 1] == 25
    for a, b in zip(kept_entries(kernel, offsets, results), kept_entries(twin, offsets, results)):
        np.testing.assert_array_equal(a, b)


def test_parallel_scatter_equals_the_serial_one():
    # Each thread scatters a contiguous chunk after the chunks before it, so
    # the blocks keep input order: the serial result, bit for bit.
    from fastmf._jit import numba_threads

    rows, cols, values, _ = random_coo(9, 50, 40, 1500)
    coo = check_coo((rows, cols, values), (50, 40))
    rng = np.random.default_rng(9)
    user_new, item_new = rng.permutation(50), rng.permutation(40)
    serial = _blocks._scatter(coo, user_new, item_new, 3)
    with numba_threads(2) as threads:
        if threads < 2:
            pytest.skip("needs two of numba's threads")
        parallel = _blocks._scatter(coo, user_new, item_new, 3, parallel=True)
    for a, b in zip(parallel, serial):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    m=st.integers(1, 80),
    n=st.integers(1, 40),
    grid=st.integers(1, 4),
    cut_ratings=st.integers(1, 40),
    duplicates=st.sampled_from(["raise", "sum", "last"]),
    repeats=st.integers(0, 30),
    shuffle=st.booleans(),
    parallel=st.booleans(),
)
def test_cutting_blocks_into_user_ranges_gives_the_same_layout(
    seed, m, n, grid, cut_ratings, duplicates, repeats, shuffle, parallel
):
    # The scatter cuts each block into ranges of ascending users so that the
    # block sort stays in cache; the sort then runs range by range with one
    # shuffle generator per block, which must give the bits of sorting the
    # whole block at once.
    rows, cols, values = with_duplicates(seed, m, n, min(m * n, 400), repeats)
    coo = check_coo((rows, cols, values), (m, n), duplicates="sum")
    rng = np.random.default_rng(seed)
    user_new, item_new = rng.permutation(m), rng.permutation(n)
    cut = _blocks._scatter(coo, user_new, item_new, grid, cut_ratings=cut_ratings)
    whole = _blocks._scatter(coo, user_new, item_new, grid, cut_ratings=10**9)
    block_rows, block_cols, block_values, offsets, sub_offsets = cut
    assert whole[4].shape[0] == grid * grid + 1
    np.testing.assert_array_equal(sub_offsets[:: (sub_offsets.shape[0] - 1) // grid**2], offsets)
    for a, b in zip(cut[:4], whole[:4]):  # cutting only regroups entries within a block
        np.testing.assert_array_equal(np.sort(a), np.sort(b))
    seeds = np.random.default_rng(seed).integers(0, 2**62, size=grid * grid)
    policy = _blocks.duplicates_code(duplicates)
    kernel = _blocks._canonicalize_parallel if parallel else _blocks._canonicalize_serial
    outcomes = []
    for arrays, bounds in (
        ([block_rows.copy(), block_cols.copy(), block_values.copy()], sub_offsets),
        ([whole[0].copy(), whole[1].copy(), whole[2].copy()], whole[4]),
    ):
        results = np.zeros((grid * grid, 4), dtype=np.int64)
        cuts = (bounds.shape[0] - 1) // (grid * grid)
        kernel(*arrays, bounds, cuts, seeds, policy, 2, shuffle, results)
        outcomes.append((results, kept_entries(arrays, offsets, results)))
    np.testing.assert_array_equal(outcomes[0][0], outcomes[1][0])
    for a, b in zip(outcomes[0][1], outcomes[1][1]):
        np.testing.assert_array_equal(a, b)
