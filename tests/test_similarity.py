import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics.pairwise import cosine_similarity as sk_cosine

from fastmf import cosine_similarity
from fastmf.similarity import top_similar


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_matches_sklearn_including_zero_rows(dtype):
    rng = np.random.default_rng(0)
    A = (rng.standard_normal((6, 4)) * 3).astype(dtype)
    A[2] = 0
    B = (rng.standard_normal((5, 4)) * 3).astype(dtype)
    B[0] = 0
    for got, expected in (
        (cosine_similarity(A), sk_cosine(A)),
        (cosine_similarity(A, B), sk_cosine(A, B)),
    ):
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert np.isfinite(got).all()
    assert (cosine_similarity(A)[2] == 0).all()


def test_sparse_input_matches_sklearn():
    rng = np.random.default_rng(1)
    A = sp.random(8, 5, density=0.4, random_state=1, format="csr")
    B = rng.standard_normal((3, 5))
    np.testing.assert_allclose(cosine_similarity(A), sk_cosine(A), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(cosine_similarity(A, B), sk_cosine(A, B), rtol=1e-6, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="same number of columns"):
        cosine_similarity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        cosine_similarity(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        cosine_similarity(np.array([[np.nan, 1.0]]))


@settings(max_examples=50, deadline=None)
@given(
    factors=arrays(
        np.float32,
        st.tuples(st.integers(2, 12), st.integers(1, 4)),
        elements=st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]),
    ),
    data=st.data(),
)
def test_top_similar_equals_brute_force_with_ties(factors, data):
    # Few distinct values make many ties and zero rows: the top-n must still
    # equal a full stable sort of the cosine matrix row, self excluded.
    index = data.draw(st.integers(0, factors.shape[0] - 1))
    n = data.draw(st.integers(1, factors.shape[0] + 2))
    n = min(n, factors.shape[0] - 1)
    ids, scores = top_similar(factors, np.array([index]), n, single=True)
    row = cosine_similarity(factors)[index].astype(np.float32)
    candidates = [j for j in range(factors.shape[0]) if j != index]
    expected = sorted(candidates, key=lambda j: (-row[j], j))[:n]
    np.testing.assert_allclose(scores, row[expected], atol=1e-6)
    # Ids agree wherever scores are not within rounding of each other.
    np.testing.assert_allclose(row[ids], row[expected], atol=1e-6)
    assert index not in ids and len(set(ids.tolist())) == len(ids)


def test_batch_similar_items_equal_single_queries():
    from conftest import random_coo

    import fastmf

    rows, cols, values, shape = random_coo(6)
    model = fastmf.RealValueMF(k=4, n_epochs=3, tol=None, random_state=0).fit(
        (rows, cols, values), shape=shape
    )
    ids, scores = model.similar_items([4, 0, 4], n=6)
    assert ids.shape == scores.shape == (3, 6)
    for row, item in enumerate([4, 0, 4]):
        single_ids, single_scores = model.similar_items(item, n=6)
        np.testing.assert_array_equal(ids[row], single_ids)
        # One compiled pass per query: the same bits in a batch as alone.
        np.testing.assert_array_equal(scores[row], single_scores)
    users, _ = model.similar_users(np.arange(5), n=3)
    assert users.shape == (5, 3) and all(u not in users[u] for u in range(5))
    with pytest.raises(ValueError, match="item id 99 is out of range"):
        model.similar_items([1, 99])


@pytest.mark.parametrize("n_rows, k", [(700, 3), (1037, 8), (257, 5)])
def test_all_pairs_pass_equals_per_query_pass_bits(n_rows, k):
    # Tiles of 256 and a partial one, k not a multiple of 4, integer-valued
    # factors (many exact ties) and zero rows: scoring each pair once for both
    # rows must give the per-query pass's ids and score bits, on 1 and 2 threads.
    from fastmf._ranking import best_items, best_neighbours
    from fastmf.similarity import _unit_rows

    rng = np.random.default_rng(n_rows)
    factors = rng.integers(-2, 3, (n_rows, k)).astype(np.float32)
    factors[::97] = 0.0
    unit = np.ascontiguousarray(_unit_rows(factors, "factors"), dtype=np.float32)
    rows = np.arange(n_rows)
    itself = (np.arange(n_rows + 1), rows)
    want_ids, want_scores = best_items(unit, rows, unit, 12, seen=itself)
    for threads in (1, 2):
        got_ids, got_scores = best_neighbours(unit, 12, threads)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_scores, want_scores)
    # And the per-query pass is a stable sort of the cosines (score down, id up).
    cosines = (unit.astype(np.float64) @ unit.T.astype(np.float64)).astype(np.float32)
    np.fill_diagonal(cosines, -np.inf)
    for row in (0, 97, n_rows - 1):
        order = np.lexsort((rows, -cosines[row]))[:12]
        np.testing.assert_allclose(want_scores[row], cosines[row, order], atol=1e-6)
        assert row not in want_ids[row]


def test_a_peer_floor_skips_only_scores_that_cannot_rank():
    # The threaded all-pairs pass skips scores below another worker's published
    # n-th best. With each row's true n-th best as that floor, one worker over
    # all pairs must still find every row's exact top n (ties at the floor
    # pass); one ulp higher, the floor drops the n-th entries.
    import numba

    from fastmf import _jit, _kernels
    from fastmf._ranking import best_neighbours
    from fastmf.similarity import _unit_rows

    # The kernels' arithmetic flags, so that the scores have the pass's bits.
    @numba.njit(fastmath=set(_jit.FASTMATH_FLAGS), error_model="numpy")
    def pairs_with_floor(unit, unit_t, pair_a, pair_b, ids, scores, own_floor, peer_floor):
        _kernels._clear_lists(ids, scores)
        _kernels._neighbour_pairs(unit, unit_t, pair_a, pair_b, 0, pair_a.shape[0], ids, scores,
                                  own_floor, peer_floor)  # fmt: skip

    rng = np.random.default_rng(5)
    factors = rng.integers(-2, 3, (700, 5)).astype(np.float32)
    unit = np.ascontiguousarray(_unit_rows(factors, "factors"), dtype=np.float32)
    want_ids, want_scores = best_neighbours(unit, 12, 1)
    tiles = -(-unit.shape[0] // _kernels.SCORE_TILE)
    pair_a, pair_b = (np.ascontiguousarray(side, dtype=np.int64) for side in np.triu_indices(tiles))
    ids = np.empty_like(want_ids)
    scores = np.empty_like(want_scores)
    own_floor = np.full(unit.shape[0], -np.inf, dtype=np.float32)
    args = (unit, np.ascontiguousarray(unit.T), pair_a, pair_b, ids, scores, own_floor)
    pairs_with_floor(*args, want_scores[:, -1].copy())
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(own_floor, want_scores[:, -1])  # what the worker publishes
    pairs_with_floor(*args, np.nextafter(want_scores[:, -1], np.float32(np.inf)))
    assert (ids[:, -1] == -1).all()


def test_large_batches_take_the_all_pairs_pass_with_single_query_bits(monkeypatch):
    import fastmf
    from fastmf import _ranking

    rng = np.random.default_rng(3)
    m, n_items = 40, 600
    rows, cols = np.divmod(np.unique(rng.integers(0, m * n_items, 3000)), n_items)
    model = fastmf.RealValueMF(k=6, n_epochs=2, tol=None, random_state=0, n_threads=2)
    model.fit((rows, cols, rng.integers(1, 6, rows.size).astype(float)), shape=(m, n_items))
    calls = []
    real = _ranking.best_neighbours
    monkeypatch.setattr(_ranking, "best_neighbours", lambda *a: calls.append(1) or real(*a))
    batch = rng.permutation(n_items)[:400]  # two thirds of the items, shuffled
    ids, scores = model.similar_items(batch, n=7)
    assert calls == [1]
    for row in (0, 199, 399):
        single_ids, single_scores = model.similar_items(int(batch[row]), n=7)
        np.testing.assert_array_equal(ids[row], single_ids)
        np.testing.assert_array_equal(scores[row], single_scores)
    assert calls == [1]  # single queries score each query alone
