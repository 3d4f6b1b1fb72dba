"""Sizes from the data or the arguments are bounded before anything is allocated."""

import numpy as np
import pytest
from conftest import random_coo

from fastmf import DivergenceError, RealValueMF


def _fitted(**params):
    rows, cols, values, shape = random_coo(0, m=30, n=20, nnz=200)
    model = RealValueMF(k=3, n_epochs=2, tol=None, random_state=0, **params)
    return model.fit((rows, cols, values), shape=shape)


def test_an_id_far_beyond_the_data_asks_for_a_dataset_or_a_shape():
    rows, cols, values = np.array([0, 2**31]), np.array([0, 1]), np.array([1.0, 2.0])
    with pytest.raises(
        ValueError, match=r"row id of 2147483648 but only 2 entries.*Dataset.*shape="
    ):
        RealValueMF().fit((rows, cols, values))
    with pytest.raises(ValueError, match=r"column id of 5000000"):
        RealValueMF().fit((cols, np.array([0, 5_000_000]), values))
    # Sparse but plausible indices still infer their shape.
    model = RealValueMF(k=2, n_epochs=1, tol=None).fit((np.array([0, 999_999]), cols, values))
    assert model.n_users_ == 1_000_000


def test_a_shape_whose_factors_cannot_fit_in_memory_is_refused_before_allocating():
    triplets = (np.array([0, 1]), np.array([0, 1]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"GiB for its factors.*more than this machine"):
        RealValueMF(k=32).fit(triplets, shape=(2**33, 2**33))


def test_float_ids_beyond_int64_are_named_as_such():
    triplets = (np.array([0.0, 1e30]), np.array([0, 1]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"too large for int64 \(1e\+30 at entry 1\)"):
        RealValueMF().fit(triplets)


def test_grid_is_capped_by_the_data():
    capped = _fitted(grid=10**6)  # would be 10**12 blocks
    # 200 ratings of 30 users x 20 items: at most min(30, 20, isqrt(200)) = 14 stripes.
    same = _fitted(grid=14)
    np.testing.assert_array_equal(capped.user_factors_, same.user_factors_)
    np.testing.assert_array_equal(capped.item_factors_, same.item_factors_)
    assert not np.array_equal(_fitted(grid=13).user_factors_, same.user_factors_)


def test_recommend_caps_n_at_the_candidate_items():
    model = _fitted()
    ids, scores = model.recommend(0, n=10**12)
    assert ids.shape == scores.shape == (20,)
    assert (ids[: 20 - np.diff(model.seen_indptr_)[0]] >= 0).all()
    ids, scores = model.recommend(0, n=5, items=[])
    assert ids.shape == scores.shape == (0,)
    ids, _ = model.recommend([0, 1], n=5, items=[3, 4])
    assert ids.shape == (2, 2)


def test_similar_takes_a_zero_dimensional_array_like_predict():
    model = _fitted()
    for method in (model.similar_users, model.similar_items):
        by_array, by_int = method(np.array(2), n=3), method(2, n=3)
        np.testing.assert_array_equal(by_array[0], by_int[0])
        np.testing.assert_array_equal(by_array[1], by_int[1])


def test_fold_in_rejects_a_pair_given_twice():
    model = _fitted()
    new = (np.array([0, 1, 0]), np.array([4, 2, 4]), np.array([3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match=r"more than once, e\.g\. \(0, 4\)"):
        model.fold_in(new)


def test_divergence_on_huge_values_blames_the_data_not_lr():
    rows, cols = np.arange(50) % 10, np.arange(50) // 10
    with pytest.raises(DivergenceError, match="data is the likely cause.*1e\\+30") as caught:
        RealValueMF(n_epochs=3).fit((rows, cols, np.linspace(-1e30, 1e30, 50)))
    assert "lr" not in str(caught.value)
    with pytest.raises(DivergenceError, match="smaller learning rate"):
        RealValueMF(n_epochs=3, lr=1e3).fit((rows, cols, np.linspace(-1, 1, 50)))
