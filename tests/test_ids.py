"""Raw ids: IdMap, fitting from a Dataset, unknown-id policies, persistence of maps."""

import numpy as np
import pytest

import fastmf
from fastmf import BinaryMF, Dataset, IdMap, RealValueMF


def test_id_map_round_trip_for_ints_and_strings():
    for raw in (np.array([30, 10, 20, 10]), ["bob", "al", "cy", "al"]):
        id_map = IdMap(raw)
        assert len(id_map) == 3
        indices = id_map.to_index(raw)
        np.testing.assert_array_equal(id_map.to_raw(indices), np.asarray(raw))
        assert set(indices.tolist()) == {0, 1, 2}
    strings = IdMap(["b", "a"])
    np.testing.assert_array_equal(strings.to_index(["a", "b", "a"]), [0, 1, 0])
    with pytest.raises(ValueError, match=r"not seen in training, e\.g\. \['zz'\]"):
        strings.to_index(["a", "zz"])
    np.testing.assert_array_equal(strings.to_index(["zz", "b"], unknown="missing"), [-1, 1])
    with pytest.raises(TypeError, match="are integers but the map holds strings"):
        strings.to_index([1])
    with pytest.raises(TypeError, match="only integers or only strings"):
        IdMap(np.array([1, "a"], dtype=object))
    with pytest.raises(TypeError, match="integers or strings"):
        IdMap([1.5, 2.5])


def test_pandas_columns_when_available():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"user": ["u1", "u2", "u1"], "item": [7, 8, 9], "rating": [5, 3, 4]})
    data = Dataset(frame["user"], frame["item"], frame["rating"])
    assert data.shape == (2, 3)


def ratings():
    rng = np.random.default_rng(0)
    users = np.array([f"user{u}" for u in rng.integers(0, 30, 400)])
    items = rng.integers(1000, 1040, 400)
    keep = np.unique(np.char.add(users, items.astype(str)), return_index=True)[1]
    return users[keep], items[keep], rng.integers(1, 6, keep.size).astype(float)


def test_fit_on_raw_ids_and_predict_with_policies(tmp_path):
    users, items, values = ratings()
    data = Dataset(users, items, values)
    model = RealValueMF(k=3, biases=True, n_epochs=5, tol=None, random_state=0).fit(data)
    by_index = RealValueMF(k=3, biases=True, n_epochs=5, tol=None, random_state=0).fit(
        data.triplets, shape=data.shape
    )
    np.testing.assert_array_equal(
        model.predict(users, items), by_index.predict(data.rows, data.cols)
    )
    with pytest.raises(ValueError, match="not seen in training"):
        model.predict(["nobody"], [items[0]])
    assert np.isnan(model.predict(["nobody", users[0]], [items[0], 99999], unknown="nan")).all()
    mean_only = model.predict(
        ["nobody", users[0], "nobody"], [items[0], 99999, 99999], unknown="mean"
    )
    item0 = data.item_map.to_index([items[0]])[0]
    user0 = data.user_map.to_index([users[0]])[0]
    np.testing.assert_allclose(
        mean_only,
        [
            model.global_mean_ + model.item_bias_[item0],
            model.global_mean_ + model.user_bias_[user0],
            model.global_mean_,
        ],
        rtol=1e-6,
    )
    model.save(tmp_path / "m.npz")
    loaded = fastmf.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.user_map_.ids_, model.user_map_.ids_)
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))


def test_index_models_apply_the_policy_to_unseen_indices():
    users, items, values = ratings()
    data = Dataset(users, items, values)
    model = RealValueMF(k=3, n_epochs=3, tol=None, random_state=0).fit(
        data.triplets, shape=data.shape
    )
    assert np.isnan(model.predict([data.shape[0]], [0], unknown="nan")).all()
    with pytest.raises(ValueError, match="out of range"):
        model.predict([data.shape[0]], [0])
    binary = BinaryMF(k=3, n_epochs=3, tol=None, random_state=0).fit(
        Dataset(users, items, np.where(values >= 4, 1, -1))
    )
    with pytest.raises(ValueError, match="returns labels"):
        binary.predict(users[:2], items[:2], unknown="nan")
    proba = binary.predict_proba(["nobody"], [items[0]], unknown="mean")
    assert 0 < proba[0] < 1


def _raw_model():
    rng = np.random.default_rng(4)
    users = np.array([f"u{i}" for i in rng.integers(0, 25, 400)])
    items = np.array([f"i{j}" for j in rng.integers(0, 18, 400)])
    data = Dataset(users, items, rng.integers(1, 6, 400).astype(float))
    model = RealValueMF(k=3, n_epochs=3, tol=None, random_state=0)
    return model.fit(data, duplicates="last"), data


def test_a_dataset_model_takes_and_returns_raw_ids_everywhere():
    model, data = _raw_model()
    user_ids, item_ids = data.user_map.ids_, data.item_map.ids_
    # recommend: raw in, raw out; the index form is the same ranking.
    ids, scores = model.recommend(["u3", "u7"], n=4)
    index_ids, index_scores = model.recommend(
        data.user_map.to_index(["u3", "u7"]), n=4, by_index=True
    )
    assert ids.dtype.kind == "U"
    np.testing.assert_array_equal(ids, item_ids[index_ids])
    np.testing.assert_array_equal(scores, index_scores)
    candidates = ["i1", "i2", "i5", "i9"]
    one, one_scores = model.recommend("u3", n=4, items=candidates)
    seen = set(item_ids[data.cols[data.user_map.ids_[data.rows] == "u3"]].tolist())
    unseen = [c for c in candidates if c not in seen]
    assert 0 < len(unseen) < 4  # some candidates were rated: padding follows
    assert sorted(one[: len(unseen)].tolist()) == sorted(unseen)
    assert one[len(unseen) :].tolist() == [""] * (4 - len(unseen))
    assert np.isneginf(one_scores[len(unseen) :]).all()
    # similar_*: raw in, raw out.
    for method, raw, id_map in (
        (model.similar_users, "u2", data.user_map),
        (model.similar_items, "i4", data.item_map),
    ):
        similar, sim_scores = method(raw, n=3)
        by_index, index_scores = method(id_map.to_index([raw])[0], n=3, by_index=True)
        np.testing.assert_array_equal(similar, id_map.ids_[by_index])
        np.testing.assert_array_equal(sim_scores, index_scores)
        assert raw not in similar.tolist()
    # predict by index equals predict by raw id.
    np.testing.assert_array_equal(
        model.predict(["u3", "u4"], ["i1", "i2"]),
        model.predict(data.user_map.to_index(["u3", "u4"]), data.item_map.to_index(["i1", "i2"]),
                      by_index=True),
    )  # fmt: skip
    # fold_in with raw item ids equals the index form.
    new = (np.array([0, 0, 1]), np.array(["i1", "i5", "i2"]), np.array([4.0, 2.0, 5.0]))
    mapped = (new[0], data.item_map.to_index(new[1]), new[2])
    for a, b in zip(model.fold_in(new), model.fold_in(mapped, by_index=True)):
        np.testing.assert_array_equal(a, b)
    del user_ids


def test_unknown_raw_ids_are_named_and_point_to_by_index():
    model, _ = _raw_model()
    with pytest.raises(ValueError, match=r"nobody.*by_index=True"):
        model.recommend("nobody")
    with pytest.raises(TypeError, match="by_index=True"):
        model.similar_items(3)
    with pytest.raises(TypeError, match="raw item ids"):
        model.fold_in(np.ones((2, 18)))


def test_ranking_metrics_take_a_dataset_for_a_dataset_model():
    model, data = _raw_model()
    users = data.user_map.ids_[data.rows[:50]]
    items = data.item_map.ids_[data.cols[:50]]
    held_out = Dataset(users, items, np.ones(50), user_map=data.user_map, item_map=data.item_map)
    by_dataset = fastmf.metrics.precision_at_k(model, held_out, k=5, exclude_seen=False)
    by_raw = fastmf.metrics.precision_at_k(model, (users, items, np.ones(50)), k=5,
                                           exclude_seen=False)  # fmt: skip
    assert by_dataset == by_raw
    assert 0 < by_dataset <= 1


def test_partial_fit_of_a_dataset_model_grows_its_maps_and_keeps_old_rows():
    model, data = _raw_model()
    before = {
        raw: (model.user_factors_[i].copy(), model.user_bias_[i])
        for i, raw in enumerate(data.user_map.ids_.tolist())
    }
    seen_before = {
        raw: set(data.item_map.ids_[model.seen_items_[model.seen_indptr_[i] : model.seen_indptr_[i + 1]]].tolist())
        for i, raw in enumerate(data.user_map.ids_.tolist())
    }  # fmt: skip
    # New ids sort between old ones ("u10a" after "u10"): old rows must move, not be overwritten.
    new_users = np.array(["u10a", "u3", "a0", "u10a"])
    new_items = np.array(["i1", "i0b", "i4", "zz"])
    zero_epochs = model.get_params()["n_epochs"]
    model.set_params(n_epochs=1, lr=1e-12)  # nearly no change: old rows must stay at their ids
    model.partial_fit((new_users, new_items, np.array([5.0, 1.0, 2.0, 3.0])))
    model.set_params(n_epochs=zero_epochs)
    assert {"u10a", "a0"} <= set(model.user_map_.ids_.tolist())
    assert {"i0b", "zz"} <= set(model.item_map_.ids_.tolist())
    assert model.n_users_ == len(model.user_map_) == len(data.user_map) + 2
    for raw, (factors, _) in before.items():
        index = model.user_map_.to_index([raw])[0]
        np.testing.assert_allclose(model.user_factors_[index], factors, atol=1e-6)

    # Seen items follow their ids: an old user's are the old ones plus the new.
    def seen(raw):
        i = model.user_map_.to_index([raw])[0]
        span = model.seen_items_[model.seen_indptr_[i] : model.seen_indptr_[i + 1]]
        return set(model.item_map_.ids_[span].tolist())

    assert seen("u3") == seen_before["u3"] | {"i0b"}
    assert seen("u10a") == {"i1", "zz"} and seen("a0") == {"i4"}
    assert seen("u7") == seen_before["u7"]
    ids, _ = model.recommend("u10a", n=5)
    assert not {"i1", "zz"} & set(ids.tolist())
    with pytest.raises(TypeError, match="Dataset or"):
        model.partial_fit(np.ones((3, 3)))
    with pytest.raises(TypeError):
        model.partial_fit((np.array([1, 2]), np.array(["i1", "i2"]), np.ones(2)))


def test_raw_ids_beyond_int64_are_a_clear_error():
    # Found by the API fuzz: an object array of a Python int below -2**63
    # raised numpy's OverflowError instead of a documented ValueError.
    with pytest.raises(ValueError, match="must fit in int64"):
        IdMap([-(2**63) - 1, 3])
    id_map = IdMap([1, 2, 3])
    with pytest.raises(ValueError, match="must fit in int64"):
        id_map.to_index(np.array([2**64], dtype=object))
