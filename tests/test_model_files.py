"""Hostile and damaged model files: every failure is one ModelFileError, nothing is allocated blindly."""

import io
import json
import pathlib
import tempfile
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import random_coo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmf
from fastmf import BinaryMF, ModelFileError, RealValueMF

_FITTED = {}


def _model_bytes():
    """The bytes of a small saved model (made once), and the model."""
    if not _FITTED:
        rows, cols, values, shape = random_coo(0)
        model = RealValueMF(k=3, n_epochs=2, tol=None, random_state=0).fit(
            (rows, cols, values), shape=shape
        )
        with tempfile.TemporaryDirectory() as folder:
            path = pathlib.Path(folder) / "model.npz"
            model.save(path)
            _FITTED["bytes"], _FITTED["model"] = path.read_bytes(), model
    return _FITTED["bytes"], _FITTED["model"]


def _contents():
    data, _ = _model_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def _write(path, contents):
    np.savez(path, **contents)
    return path


def _npy_member(header, payload=b""):
    """A .npy member with a hand-written header dict (no size check by numpy)."""
    text = repr(header).encode("latin1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload


def _load_fails(path, match=None):
    with pytest.raises(ModelFileError, match=match) as caught:
        fastmf.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "pickle.load" not in message and "unsafe" not in message
    return message


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


def test_foreign_files_are_named_for_what_they_are(tmp_path):
    npy = tmp_path / "array.npy"
    np.save(npy, np.arange(4.0))
    _load_fails(npy, "single .npy array")
    csv = tmp_path / "ratings.csv"
    csv.write_text("user,item,rating\n1,2,3\n")
    _load_fails(csv, "not a complete zip")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _load_fails(empty, "not a complete zip")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"user_factors_": None}, "user_factors_ is missing"),
        ({"seen_items_": None}, "seen_items_ is missing"),
        ({"user_factors_": np.zeros((30, 3, 1), np.float32)}, "user_factors_ has dtype"),
        ({"item_factors_": np.zeros((20, 4), np.float32)}, "item_factors_ has dtype"),
        ({"user_bias_": np.zeros(30, np.float64)}, "user_bias_ has dtype"),
        ({"user_bias_": np.array("x")}, "user_bias_ has dtype"),
        ({"n_users_": np.array(-1)}, "n_users_ is -1"),
        ({"n_users_": np.array(2.5)}, "n_users_ has dtype"),
        ({"global_mean_": np.array(np.nan)}, "global_mean_ is nan"),
        ({"global_mean_": np.array(np.inf)}, "global_mean_ is inf"),
        ({"global_mean_": np.array(1e39)}, "global_mean_ is 1e"),
        ({"global_mean_": np.array("3.5")}, "global_mean_ has dtype"),
        ({"params": np.array("[" * 100_000 + "]" * 100_000)}, "params are not JSON"),
        ({"params": np.array(json.dumps({"rank": 3}))}, "params"),
        ({"params": np.array(json.dumps({"k": -3}))}, "params"),
        ({"params": np.array(json.dumps({"k": 4}))}, "k=4 but the factors have rank 3"),
        ({"params": np.array(json.dumps({"k": [3]}))}, "params must map"),
        ({"model_class": np.array("os.system")}, "unknown model class"),
        ({"seen_indptr_": np.zeros(31, np.int64) + 5}, "seen-items"),
        ({"extra": np.arange(3)}, "unexpected member"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_damaged_members_are_rejected(tmp_path, change, match):
    contents = _contents()
    for name, value in change.items():
        if value is None:
            del contents[name]
        else:
            contents[name] = value
    _load_fails(_write(tmp_path / "damaged.npz", contents), match)


@pytest.mark.parametrize(
    "name, scale",
    [("user_factors_", 1e20), ("item_bias_", 3e38), ("user_bias_", 2e38)],
)
def test_parameters_that_cannot_predict_are_rejected(tmp_path, name, scale):
    contents = _contents()
    contents[name] = np.full_like(contents[name], scale)
    _load_fails(_write(tmp_path / "huge.npz", contents), "overflow float32")
    contents[name] = np.full_like(contents[name], np.nan)
    _load_fails(_write(tmp_path / "nan.npz", contents), "not finite")


def _archive(path, contents, hostile, write_hostile, compression=zipfile.ZIP_STORED):
    """Write ``contents`` as a model file, member ``hostile`` by ``write_hostile(archive, name)``."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, value in contents.items():
            if name == hostile:
                write_hostile(archive, name + ".npy")
            else:
                buffer = io.BytesIO()
                np.save(buffer, value)
                archive.writestr(name + ".npy", buffer.getvalue())
    return path


def _load_fails_within(path, match, max_bytes=5_000_000, max_seconds=5):
    """Like :func:`_load_fails`, checking the peak memory and time it took."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        _load_fails(path, match)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < max_bytes
    assert time.perf_counter() - start < max_seconds


def test_a_header_declaring_a_huge_array_allocates_nothing(tmp_path):
    def huge(archive, member):
        header = {"descr": "<i4", "fortran_order": False, "shape": (2**40,)}
        archive.writestr(member, _npy_member(header, b"\0" * 64))

    path = _archive(tmp_path / "huge.npz", _contents(), "seen_items_", huge)
    assert path.stat().st_size < 10_000
    _load_fails_within(path, "seen_items_ declares")


def test_a_member_that_inflates_enormously_is_not_inflated(tmp_path):
    # 2**20 users x k=32: a 128 MiB factor matrix of zeros, deflated to ~130 KB.
    m, k = 2**20, 32
    contents = _contents()
    contents["n_users_"] = np.array(m)

    def bomb(archive, member_name):
        header = {"descr": "<f4", "fortran_order": False, "shape": (m, k)}
        with archive.open(member_name, "w", force_zip64=True) as member:
            member.write(_npy_member(header))
            chunk = b"\0" * (1 << 20)
            for _ in range(m * k * 4 // len(chunk)):
                member.write(chunk)

    path = _archive(tmp_path / "bomb.npz", contents, "user_factors_", bomb, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2_000_000
    _load_fails_within(path, "user_factors_ would inflate")


def test_object_arrays_are_never_unpickled(tmp_path):
    contents = _contents()
    contents["loss_curve_"] = np.array([object()], dtype=object)
    path = tmp_path / "objects.npz"
    np.savez(path, **contents)
    _load_fails(path, "pickled objects, which are never loaded")


def _header_spans(data):
    """Byte ranges of the zip's local headers and central directory (where flips bite)."""
    spans = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset
            spans.append(range(start, start + 30 + len(info.filename.encode())))
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    first_central = data.find(b"PK\x01\x02")
    spans.append(range(first_central, len(data)))
    del central
    return spans


def test_every_flipped_header_byte_gives_a_model_file_error_or_the_same_model(tmp_path):
    data, model = _model_bytes()
    positions = sorted({p for span in _header_spans(data) for p in span})
    assert len(positions) > 500
    path = tmp_path / "flipped.npz"
    outcomes = {"error": 0, "same": 0}
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            loaded = fastmf.load(path)
        except ModelFileError:
            outcomes["error"] += 1
            continue
        np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
        np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
        outcomes["same"] += 1
    assert outcomes["error"] > len(positions) // 2


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**9)),
)
def test_fuzzed_files_load_correctly_or_raise_model_file_error(tmp_path, flips, cut):
    data, _ = _model_bytes()
    damaged = bytearray(data)
    for position, mask in flips:
        damaged[position % len(data)] ^= mask
    if cut is not None:
        damaged = damaged[: cut % len(data)]
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(bytes(damaged))
    try:
        loaded = fastmf.load(path)
    except ModelFileError:
        return
    # Whatever loads must be usable: finite predictions for every pair.
    rows, cols = np.divmod(np.arange(loaded.n_users_ * loaded.n_items_), max(loaded.n_items_, 1))
    assert np.isfinite(loaded.predict(rows, cols)).all()


def test_a_binary_model_round_trips_through_the_checked_reader(tmp_path):
    rows, cols, values, shape = random_coo(1, binary=True)
    model = BinaryMF(k=2, n_epochs=2, tol=None, random_state=0).fit(
        (rows, cols, values), shape=shape
    )
    model.save(tmp_path / "binary.npz")
    loaded = fastmf.load(tmp_path / "binary.npz")
    np.testing.assert_array_equal(loaded.predict_proba(rows, cols), model.predict_proba(rows, cols))
