"""Fits give the same bits as the recorded ones, across a matrix of configurations.

``tests/digests.json`` was recorded from the code before the training driver
and the loss definitions were redesigned (issue 13); a refactor of the
orchestration must not change a single bit of any fit. Each configuration is
fitted locally on 1 and on 2 threads, on a Dask cluster, and interrupted by a
checkpoint then resumed; every one of those must match the recorded digest.

Re-record (only for an intended change of results, say why in the commit):
``python tests/test_digests.py --record``.
"""

import hashlib
import itertools
import json
import pathlib
import sys

import numpy as np
import pytest

import fastmf._losses
from fastmf import BinaryMF, RealValueMF, mf

RECORDED = pathlib.Path(__file__).with_name("digests.json")

CONFIGS = [
    {"loss": loss, "biases": biases, "learning_rate": rate, "validation": validation, "stop": None}
    for (loss, biases, rate), validation in zip(
        itertools.product(("squared", "logistic"), (False, True), ("constant", "adagrad")),
        itertools.cycle((False, True)),
    )
] + [
    # The stopping rules end these fits early: tol and n_iter_no_change, validation patience.
    {"loss": "squared", "biases": True, "learning_rate": "constant", "validation": False,
     "stop": "tol"},
    {"loss": "logistic", "biases": True, "learning_rate": "adagrad", "validation": True,
     "stop": "patience"},
]  # fmt: skip
_STOPS = {None: {}, "tol": {"tol": 0.005, "n_iter_no_change": 2}, "patience": {"patience": 2}}


def _name(config):
    return "-".join(f"{key}={value}" for key, value in config.items())


def _data(loss):
    rng = np.random.default_rng(7)
    m, n, nnz = 70, 50, 1400
    keys = rng.choice(m * n, size=nnz, replace=False)
    rows, cols = np.divmod(keys, n)
    if loss == "logistic":
        values = rng.choice([-1.0, 1.0], size=nnz).astype(np.float32)
    else:
        values = rng.integers(1, 6, size=nnz).astype(np.float32)
    train, val = slice(0, 1200), slice(1200, None)
    return (
        (rows[train], cols[train], values[train]),
        (rows[val], cols[val], values[val]),
        (m, n),
    )


def _model(config, **extra):
    model_class = BinaryMF if config["loss"] == "logistic" else RealValueMF
    lr = 0.05 if config["learning_rate"] == "adagrad" else 0.02
    settings = dict(
        k=5,
        lr=lr,
        n_epochs=6,
        tol=None,
        biases=config["biases"],
        learning_rate=config["learning_rate"],
        random_state=11,
        grid=3,
        patience=10,
    )
    return model_class(**{**settings, **_STOPS[config["stop"]], **extra})


def _digest(model):
    h = hashlib.sha256()
    for name in (
        "user_factors_",
        "item_factors_",
        "user_bias_",
        "item_bias_",
        "loss_curve_",
        "seen_indptr_",
        "seen_items_",
    ):
        h.update(np.ascontiguousarray(getattr(model, name)).tobytes())
    if model.val_curve_ is not None:
        h.update(np.asarray(model.val_curve_).tobytes())
    h.update(np.float64(model.global_mean_).tobytes())
    h.update(str((model.n_iter_, model.best_epoch_)).encode())
    return h.hexdigest()


def _fit(config, how, tmp_path=None, client=None):
    train, val, shape = _data(config["loss"])
    kwargs = {"shape": shape}
    if config["validation"]:
        kwargs["X_val"] = val
    threads = 2 if how == "threads2" else 1
    if how == "dask":
        return _model(config).fit(train, client=client, **kwargs)
    if how == "resume":
        path = tmp_path / "checkpoint.npz"
        _model(config, n_threads=1).fit(
            train, checkpoint=path, callback=lambda info: info["epoch"] < 2, **kwargs
        )
        return _model(config, n_threads=threads).fit(train, resume=path, **kwargs)
    return _model(config, n_threads=threads).fit(train, **kwargs)


def _partial_fit_digest():
    train, _, shape = _data("squared")
    rows, cols, values = train
    first = rows < 50
    model = _model(CONFIGS[3]).fit((rows[first], cols[first], values[first]), shape=(50, 50))
    model.partial_fit((rows[~first], cols[~first], values[~first]), shape=shape)
    return _digest(model)


def _mf_digest():
    train, _, shape = _data("squared")
    user_factors, item_factors = mf(train, 4, n_epoch=5, random_state=2)
    return hashlib.sha256(user_factors.tobytes() + item_factors.tobytes()).hexdigest()


def _recorded():
    return json.loads(RECORDED.read_text())


@pytest.fixture(params=["small", "large"])
def fit_size(request, monkeypatch):
    """Small fits run one thread and one-at-a-time kernels; large ones all threads, grouped."""
    if request.param == "large":
        monkeypatch.setattr(fastmf._losses, "SMALL_FIT_RATINGS", 0)
    return request.param


@pytest.mark.parametrize("how", ["threads1", "threads2", "resume"])
@pytest.mark.parametrize("config", CONFIGS, ids=_name)
def test_local_fits_match_the_recorded_digests(config, how, tmp_path, fit_size):
    assert _digest(_fit(config, how, tmp_path)) == _recorded()[_name(config)]


@pytest.mark.parametrize("config", CONFIGS, ids=_name)
def test_dask_fits_match_the_recorded_digests(config, client, fit_size):
    assert _digest(_fit(config, "dask", client=client)) == _recorded()[_name(config)]


def test_partial_fit_and_mf_match_the_recorded_digests():
    recorded = _recorded()
    assert _partial_fit_digest() == recorded["partial_fit"]
    assert _mf_digest() == recorded["mf"]


def test_the_recorded_configurations_differ():
    """A digest that ignored the configuration would make the tests above vacuous."""
    values = [_recorded()[_name(config)] for config in CONFIGS]
    assert len(set(values)) == len(values)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    digests = {_name(config): _digest(_fit(config, "threads1")) for config in CONFIGS}
    digests["partial_fit"] = _partial_fit_digest()
    digests["mf"] = _mf_digest()
    RECORDED.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(digests)} digests in {RECORDED}")
