"""recommend: top-n against a brute-force argsort, exclusion, restriction, batches."""

import numpy as np
import pytest
from conftest import model_coo

import fastmf
from fastmf import RealValueMF


@pytest.fixture
def fitted(model_class):
    rows, cols, values, shape = model_coo(model_class, 4, m=25, n=40, nnz=300)
    model = model_class(k=4, n_epochs=5, tol=None, random_state=0, biases=True, lr=0.05)
    return model.fit((rows, cols, values), shape=shape), (rows, cols)


def brute_force(model, user, n, exclude=(), allowed=None):
    scores = model.decision_function(np.full(model.n_items_, user), np.arange(model.n_items_))
    ranked = [
        i
        for i in sorted(range(model.n_items_), key=lambda i: (-scores[i], i))
        if i not in set(exclude) and (allowed is None or i in set(allowed))
    ]
    return ranked[:n], scores


def test_matches_brute_force_with_and_without_exclusion(fitted):
    model, (rows, cols) = fitted
    for user in range(model.n_users_):
        seen = cols[rows == user]
        ids, scores = model.recommend(user, n=7)
        expected, all_scores = brute_force(model, user, 7, exclude=seen)
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_allclose(scores, all_scores[expected], rtol=1e-5, atol=1e-6)
        assert not set(ids.tolist()) & set(seen.tolist())
        ids_all, _ = model.recommend(user, n=7, exclude_seen=False)
        np.testing.assert_array_equal(ids_all, brute_force(model, user, 7)[0])


def test_batch_restriction_and_padding(fitted):
    model, (rows, cols) = fitted
    users = np.array([3, 0, 3, 24])
    ids, scores = model.recommend(users, n=5)
    assert ids.shape == scores.shape == (4, 5)
    for row, user in enumerate(users):
        np.testing.assert_array_equal(ids[row], model.recommend(int(user), n=5)[0])
    allowed = [2, 5, 7, 11, 13, 17]
    ids, scores = model.recommend(users, n=10, items=allowed)
    for row, user in enumerate(users):
        expected, _ = brute_force(model, user, 10, exclude=cols[rows == user], allowed=allowed)
        got = ids[row][ids[row] >= 0]
        np.testing.assert_array_equal(got, expected)
        # Fewer candidates than n: padded with -1 / -inf.
        assert (ids[row][len(expected) :] == -1).all()
        assert np.isneginf(scores[row][len(expected) :]).all()


def test_seen_items_are_the_training_interactions(fitted):
    model, (rows, cols) = fitted
    for user in range(model.n_users_):
        seen = model.seen_items_[model.seen_indptr_[user] : model.seen_indptr_[user + 1]]
        assert sorted(seen.tolist()) == sorted(cols[rows == user].tolist())


def test_loaded_model_recommends_identically(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "m.npz")
    loaded = fastmf.load(tmp_path / "m.npz")
    for a, b in zip(
        model.recommend(np.arange(model.n_users_), n=6),
        loaded.recommend(np.arange(model.n_users_), n=6),
    ):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments(fitted):
    model, _ = fitted
    with pytest.raises(ValueError, match="user id 25 is out of range"):
        model.recommend(25)
    with pytest.raises(ValueError, match="item id 40 is out of range"):
        model.recommend(0, items=[1, 40])
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.recommend(0, n=0)
    with pytest.raises(fastmf.NotFittedError):
        RealValueMF().recommend(0)


def test_batch_selection_is_brute_force_with_ties():
    # Scores with many exact ties (integer-valued factors): the compiled
    # selection must give numpy's stable order (score down, id up), seen
    # items excluded, padding -1 / -inf.
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 40, 600)
    cols = rng.integers(0, 70, 600)
    keys = np.unique(rows * 70 + cols)
    rows, cols = np.divmod(keys, 70)
    model = fastmf.RealValueMF(k=3, n_epochs=1, tol=None, random_state=0)
    model.fit((rows, cols, np.ones(rows.size)), shape=(40, 70))
    model.user_factors_[:] = rng.integers(-2, 3, model.user_factors_.shape)
    model.item_factors_[:] = rng.integers(-2, 3, model.item_factors_.shape)
    model.item_bias_[:] = rng.integers(-1, 2, 70)
    model.user_bias_[:] = rng.integers(-1, 2, 40)
    model.global_mean_ = 1.0  # integer scores: exact ties, whatever the order of the sums
    ids, scores = model.recommend(np.arange(40), n=65)
    for user in range(40):
        full = model.predict(np.full(70, user), np.arange(70)).astype(np.float64)
        seen = model.seen_items_[model.seen_indptr_[user] : model.seen_indptr_[user + 1]]
        full[seen] = -np.inf
        order = np.lexsort((np.arange(70), -full))
        kept = order[np.isfinite(full[order])][:65]
        np.testing.assert_array_equal(ids[user, : kept.size], kept)
        assert (ids[user, kept.size :] == -1).all()
        assert np.isneginf(scores[user, kept.size :]).all()
    similar, _ = model.similar_items(np.arange(70), n=5)
    unit = (
        model.item_factors_
        / np.maximum(np.linalg.norm(model.item_factors_, axis=1), 1e-12)[:, None]
    )
    cosines = unit @ unit.T
    np.fill_diagonal(cosines, -np.inf)
    for item in range(70):
        order = np.lexsort((np.arange(70), -cosines[item]))[:5]
        assert set(similar[item]) == set(order) or np.allclose(
            np.sort(cosines[item, similar[item]]), np.sort(cosines[item, order]), atol=1e-6
        )


@pytest.mark.parametrize("k", [3, 8])
def test_tiles_groups_and_threads_give_brute_force_bits(k):
    # 700 items (tiles of 256 and a partial one), 150 users (groups of 4,
    # chunks of 64, partial ones), k not a multiple of 4 (the remainder loop),
    # seen items in every tile, integer-valued factors (exact ties): the
    # compiled pass must equal a stable sort of numpy's scores, and give the
    # same bits for any batch and thread count.
    rng = np.random.default_rng(k)
    m, n_items = 150, 700
    keys = np.unique(rng.integers(0, m, 6000) * n_items + rng.integers(0, n_items, 6000))
    rows, cols = np.divmod(keys, n_items)
    model = fastmf.RealValueMF(k=k, n_epochs=1, tol=None, random_state=0, n_threads=1)
    model.fit((rows, cols, np.ones(rows.size)), shape=(m, n_items))
    model.user_factors_[:] = rng.integers(-2, 3, model.user_factors_.shape)
    model.item_factors_[:] = rng.integers(-2, 3, model.item_factors_.shape)
    model.item_bias_[:] = rng.integers(-1, 2, n_items)
    model.user_bias_[:] = rng.integers(-1, 2, m)
    model.global_mean_ = 2.0
    users = rng.permutation(m)
    ids, scores = model.recommend(users, n=12)
    full = (
        model.user_factors_.astype(np.float64) @ model.item_factors_.T.astype(np.float64)
        + model.item_bias_
        + model.user_bias_[:, None]
        + 2.0
    )

    def check(user, got_ids, got_scores, allowed=None):
        # A stable sort of the float64 scores (score down, id up), seen items out.
        expected = full[user].copy()
        if allowed is not None:
            expected[np.setdiff1d(np.arange(n_items), allowed)] = -np.inf
        expected[
            model.seen_items_[model.seen_indptr_[user] : model.seen_indptr_[user + 1]]
        ] = -np.inf
        order = np.lexsort((np.arange(n_items), -expected))[:12]
        np.testing.assert_array_equal(got_ids, order)
        np.testing.assert_array_equal(got_scores, expected[order].astype(np.float32))

    for row, user in enumerate(users):
        check(user, ids[row], scores[row])
    model.set_params(n_threads=2)
    for got, want in zip(model.recommend(users, n=12), (ids, scores)):
        np.testing.assert_array_equal(got, want)
    # A candidate subset across the tiles: the same pass over those items only.
    allowed = np.sort(rng.choice(n_items, 400, replace=False))
    sub_ids, sub_scores = model.recommend(users, n=12, items=allowed[::-1])
    for row, user in enumerate(users):
        check(user, sub_ids[row], sub_scores[row], allowed)
    for row in (0, 77, 149):
        single_ids, single_scores = model.recommend(int(users[row]), n=12)
        np.testing.assert_array_equal(single_ids, ids[row])
        np.testing.assert_array_equal(single_scores, scores[row])


def test_real_valued_scores_equal_decision_function_bits():
    rows, cols, values, shape = model_coo(RealValueMF, 5, m=90, n=300, nnz=2000)
    model = RealValueMF(k=7, n_epochs=3, tol=None, random_state=0, lr=0.05).fit(
        (rows, cols, values), shape=shape
    )
    ids, scores = model.recommend(np.arange(90), n=5, exclude_seen=False)
    for user in (0, 45, 89):
        full = model.decision_function(np.full(shape[1], user), np.arange(shape[1]))
        np.testing.assert_allclose(scores[user], full[ids[user]], rtol=1e-6, atol=1e-6)
        assert scores[user][-1] >= np.sort(full)[-5] - 1e-5
