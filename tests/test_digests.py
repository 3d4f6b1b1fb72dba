"""Fits give the same bits as the recorded ones, across a matrix of configurations.

``tests/digests.json`` was first recorded before the training driver and the
loss definitions were redesigned (issue 13), and re-recorded for issue 14,
which changed results on purpose: AdaGrad takes its step size from the
accumulator before the step (LIBMF's order), and ``loss_curve_`` (hence
``tol`` stopping) is by default the loss summed during each pass; its AdaGrad
digests again when the squared-gradient norms moved into the score's loop (an
algebraically equal step, other last bits), and all of them when fit began
to draw its initial factors in chunks with generators of their own, used in
the layout's internal order (no reordering at the start). A refactor
of the orchestration must not change a single bit of any fit. Each configuration is
fitted locally on 1 and on 2 threads (with the small-fit and the large-fit
kernels), on a Dask cluster, and interrupted by a checkpoint then resumed;
every one of those must match the recorded digest.

The fits run in a subprocess whose kernels numba compiles for its generic
x86-64 target (``NUMBA_CPU_NAME=generic``). The kernels let LLVM reorder and
fuse float32 arithmetic, so natively compiled bits depend on the CPU (an
AVX-512 Intel target and AMD Zen 4 differ in the last bits); the generic
target's bits depend only on the numba/llvmlite/numpy versions, which the
recording names.

Re-record (only for an intended change of results, or for new versions of the
compiler after checking that the previous commit gives the same new digests;
say why in the commit): ``python tests/test_digests.py --record``.
"""

import hashlib
import itertools
import json
import pathlib
import platform
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
    # The exact objective after each epoch instead of the running one.
    {"loss": "logistic", "biases": True, "learning_rate": "constant", "validation": False,
     "stop": "tol", "monitor": "exact"},
    {"loss": "squared", "biases": False, "learning_rate": "adagrad", "validation": True,
     "stop": None, "monitor": "exact"},
]  # fmt: skip
_STOPS = {None: {}, "tol": {"tol": 0.01, "n_iter_no_change": 2}, "patience": {"patience": 2}}


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
        monitor=config.get("monitor", "running"),
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


SIZES = ("small", "large")
HOWS = ("threads1", "threads2", "resume", "dask")


def _key(config, size, how):
    return f"{_name(config)}|{size}|{how}"


def _versions():
    import llvmlite
    import numba

    return {"numba": numba.__version__, "llvmlite": llvmlite.__version__, "numpy": np.__version__}


def _compute(out_path):
    """Fit everything (in this process, compiled for the generic target) and write the digests."""
    import tempfile

    import distributed

    digests = {}
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    )
    with distributed.Client(cluster, timeout=60) as client, tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            # Small fits run one thread and one-at-a-time kernels; large ones all
            # threads, grouped (the same bits).
            fastmf._losses.SMALL_FIT_RATINGS = 100_000 if size == "small" else 0
            for config, how in itertools.product(CONFIGS, HOWS):
                model = _fit(config, how, pathlib.Path(tmp), client=client)
                digests[_key(config, size, how)] = _digest(model)
        fastmf._losses.SMALL_FIT_RATINGS = 100_000
        digests["partial_fit"] = _partial_fit_digest()
        digests["mf"] = _mf_digest()
    cluster.close()
    pathlib.Path(out_path).write_text(json.dumps(digests))


def _compute_generic(tmp_dir):
    """Run :func:`_compute` in a subprocess compiled for numba's generic target."""
    import os
    import subprocess

    out_path = pathlib.Path(tmp_dir) / "digests.json"
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CPU_FEATURES"}
    env["NUMBA_CPU_NAME"] = "generic"
    subprocess.run(
        [sys.executable, __file__, "--compute", str(out_path)],
        env=env,
        check=True,
        timeout=1800,
        cwd=pathlib.Path(__file__).parent,
    )
    return json.loads(out_path.read_text())


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the digests are recorded for numba's generic x86-64 target")
    pytest.importorskip("distributed")
    return _compute_generic(tmp_path_factory.mktemp("digests"))


def _check(computed, key, name):
    recorded = _recorded()
    assert computed[key] == recorded[name], (
        f"{key}: the bits differ from those recorded with {recorded['_recorded_with']}; "
        f"this run has {_versions()}. See the module docstring before re-recording."
    )


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("config", CONFIGS, ids=_name)
def test_fits_match_the_recorded_digests(computed, config, size, how):
    _check(computed, _key(config, size, how), _name(config))


def test_partial_fit_and_mf_match_the_recorded_digests(computed):
    _check(computed, "partial_fit", "partial_fit")
    _check(computed, "mf", "mf")


def test_the_recorded_configurations_differ():
    """A digest that ignored the configuration would make the tests above vacuous."""
    values = [_recorded()[_name(config)] for config in CONFIGS]
    assert len(set(values)) == len(values)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compute"]:
        _compute(sys.argv[2])
    elif sys.argv[1:] == ["--record"]:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            computed = _compute_generic(tmp)
        digests = {_name(c): computed[_key(c, "small", "threads1")] for c in CONFIGS}
        digests["partial_fit"] = computed["partial_fit"]
        digests["mf"] = computed["mf"]
        digests["_recorded_with"] = {**_versions(), "target": "generic x86-64"}
        RECORDED.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(digests)} digests in {RECORDED}")
    else:
        sys.exit(__doc__)
