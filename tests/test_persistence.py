"""save/load: versioned .npz, bit-identical predictions, never unpickles."""

import json
import pickle

import numpy as np
import pytest
from conftest import model_coo, random_coo

import fastmf
from fastmf import RealValueMF


@pytest.mark.parametrize("biases", [False, True])
def test_round_trip_is_bit_identical(tmp_path, model_class, biases):
    rows, cols, values, shape = model_coo(model_class, 0)
    model = model_class(k=5, n_epochs=4, tol=None, random_state=0, biases=biases, lr=0.03)
    model.fit((rows, cols, values), shape=shape)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastmf.load(path)
    assert type(loaded) is model_class
    assert loaded.get_params() == model.get_params()
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "loss_curve_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    for factors in (loaded.user_factors_, loaded.item_factors_):  # served like a fit's
        assert factors.ctypes.data % 64 == 0
        assert factors.flags.c_contiguous and factors.flags.writeable
    assert (loaded.n_users_, loaded.n_items_, loaded.n_iter_) == (
        model.n_users_,
        model.n_items_,
        model.n_iter_,
    )
    assert loaded.global_mean_ == model.global_mean_
    all_rows, all_cols = np.divmod(np.arange(shape[0] * shape[1]), shape[1])
    np.testing.assert_array_equal(
        loaded.predict(all_rows, all_cols), model.predict(all_rows, all_cols)
    )
    np.testing.assert_array_equal(loaded.similar_items(3, 5)[0], model.similar_items(3, 5)[0])


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(fastmf.NotFittedError):
        RealValueMF().save(tmp_path / "m.npz")


def test_generator_seed_is_saved_as_none(tmp_path):
    rows, cols, values, shape = random_coo(0)
    model = RealValueMF(k=2, n_epochs=2, tol=None, random_state=np.random.default_rng(3))
    model.fit((rows, cols, values), shape=shape).save(tmp_path / "m.npz")
    assert fastmf.load(tmp_path / "m.npz").random_state is None


class _Exploit:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Exploit.ran = True
    return "boom"


def _saved(tmp_path):
    rows, cols, values, shape = random_coo(0)
    path = tmp_path / "model.npz"
    RealValueMF(k=3, n_epochs=2, tol=None, random_state=0).fit(
        (rows, cols, values), shape=shape
    ).save(path)
    with np.load(path, allow_pickle=False) as stored:
        return path, {name: stored[name] for name in stored.files}


def test_a_file_with_a_pickled_object_is_rejected_without_running_it(tmp_path):
    path, contents = _saved(tmp_path)
    contents["params"] = np.array([_Exploit()], dtype=object)  # np.save pickles object arrays
    np.savez(path, **contents)
    assert b"_mark_ran" in path.read_bytes()  # the payload really is in the file
    with pytest.raises(ValueError, match="pickled objects, which are never loaded"):
        fastmf.load(path)
    assert _Exploit.ran is False
    # A raw pickle renamed to .npz is not a zip: rejected too.
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ValueError, match="not a readable fastmf model file"):
        fastmf.load(raw)
    assert _Exploit.ran is False


def test_truncated_corrupted_foreign_and_newer_files(tmp_path):
    path, contents = _saved(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated, corrupted"):
        fastmf.load(truncated)

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.arange(3))
    with pytest.raises(ValueError, match="not a fastmf model file"):
        fastmf.load(foreign)

    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**contents, "format_version": np.array(99)})
    with pytest.raises(ValueError, match="format 99.*Upgrade fastmf"):
        fastmf.load(newer)

    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **{**contents, "user_factors_": contents["user_factors_"][:-1]})
    with pytest.raises(ValueError, match="damaged.*user_factors_"):
        fastmf.load(damaged)

    bad_params = tmp_path / "bad_params.npz"
    np.savez(bad_params, **{**contents, "params": np.array(json.dumps({"rank": 3}))})
    with pytest.raises(ValueError, match="damaged"):
        fastmf.load(bad_params)

    with pytest.raises(FileNotFoundError):
        fastmf.load(tmp_path / "missing.npz")
