"""Distributed training on a local Dask cluster: the same factors as local training."""

import numpy as np
import pytest
from conftest import digest, model_coo, random_coo

from fastmf import RealValueMF

distributed = pytest.importorskip("distributed")


@pytest.mark.parametrize(
    "params",
    [{}, {"biases": True, "learning_rate": "adagrad", "lr": 0.05}],
    ids=["plain", "adagrad"],
)
def test_distributed_fit_is_bit_identical_to_local(client, model_class, params):
    rows, cols, values, shape = model_coo(model_class, 11, m=120, n=90, nnz=3000)
    settings = dict(k=6, n_epochs=4, tol=None, random_state=3, grid=4, **params)
    local = model_class(n_threads=1, **settings).fit((rows, cols, values), shape=shape)
    remote = model_class(**settings).fit((rows, cols, values), shape=shape, client=client)
    assert digest(remote) == digest(local)
    np.testing.assert_array_equal(remote.recommend(0, n=5)[0], local.recommend(0, n=5)[0])


def test_module_level_fit_and_a_saved_model(client, tmp_path):
    import fastmf
    import fastmf.dask

    rows, cols, values, shape = random_coo(12, m=60, n=40, nnz=900)
    model = fastmf.dask.fit(
        RealValueMF(k=3, n_epochs=2, tol=None, random_state=0, grid=2),
        (rows, cols, values),
        client,
        shape=shape,
    )
    model.save(tmp_path / "m.npz")
    loaded = fastmf.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(rows, cols), model.predict(rows, cols))


def test_checkpoint_and_resume_locally_are_bit_identical(tmp_path):
    rows, cols, values, shape = random_coo(13, m=80, n=60, nnz=1500)
    settings = dict(
        k=4, tol=None, random_state=5, grid=3, biases=True, learning_rate="adagrad", lr=0.05
    )
    full = RealValueMF(n_epochs=6, **settings).fit((rows, cols, values), shape=shape)
    path = tmp_path / "ckpt.npz"
    RealValueMF(n_epochs=6, **settings).fit(
        (rows, cols, values), shape=shape, checkpoint=path, callback=lambda info: info["epoch"] < 3
    )
    resumed = RealValueMF(n_epochs=6, **settings).fit(
        (rows, cols, values), shape=shape, resume=path
    )
    assert digest(resumed) == digest(full) and resumed.n_iter_ == 6
    other = RealValueMF(n_epochs=6, **{**settings, "k": 5})
    with pytest.raises(ValueError, match="other data or hyperparameters"):
        other.fit((rows, cols, values), shape=shape, resume=path)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_killed_worker_fails_clearly_and_resume_finishes_the_fit(client, tmp_path, sharded):
    import os

    rows, cols, values, shape = random_coo(14, m=100, n=80, nnz=2500)
    settings = dict(k=5, n_epochs=5, tol=None, random_state=2, grid=4)
    local = RealValueMF(n_threads=1, **settings).fit((rows, cols, values), shape=shape)
    data = (rows, cols, values)
    if sharded:  # the blocks die with the worker; resuming reads the files again
        data = []
        for j, part in enumerate(np.array_split(np.arange(rows.size), 2)):
            np.savez(tmp_path / f"s{j}.npz", rows=rows[part], cols=cols[part], values=values[part])
            data.append(str(tmp_path / f"s{j}.npz"))
    path = tmp_path / "ckpt.npz"
    victim = sorted(client.scheduler_info()["workers"])[0]

    def kill_after_epoch_two(info):
        if info["epoch"] == 2:
            client.run(os._exit, 1, workers=[victim], on_error="ignore")  # the worker dies
        return True

    model = RealValueMF(**settings)
    with pytest.raises(RuntimeError, match="lost work during .*resume="):
        model.fit(
            data,
            shape=shape,
            client=client,
            checkpoint=path,
            callback=kill_after_epoch_two,
        )
    assert not hasattr(model, "user_factors_")  # the failed fit changed nothing
    # The nanny restarts the worker under a new address; wait until the scheduler
    # has dropped the dead one and sees two workers again.
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = client.scheduler_info()["workers"]
        if victim not in workers and len(workers) == 2:
            break
        time.sleep(0.1)
    model.fit(data, shape=shape, client=client, resume=path)
    assert digest(model) == digest(local)


def test_sub_epoch_progress(client, capsys):
    rows, cols, values, shape = random_coo(15, m=60, n=40, nnz=900)
    RealValueMF(k=3, n_epochs=2, tol=None, random_state=0, grid=3, verbose=2).fit(
        (rows, cols, values), shape=shape, client=client
    )
    out = capsys.readouterr().out
    assert out.count("sub-epoch") == 6  # 3 strata x 2 epochs
    assert "sub-epoch 3/3 done" in out and out.count("epoch    2/2") == 1


def test_factors_stay_on_the_workers_unless_the_client_needs_them(client, monkeypatch):
    import fastmf.dask

    pulls = []
    original = fastmf.dask.DaskBackend.pull

    def counting(self, *args):
        pulls.append(1)
        return original(self, *args)

    monkeypatch.setattr(fastmf.dask.DaskBackend, "pull", counting)
    rows, cols, values, shape = random_coo(16, m=90, n=70, nnz=2000)
    settings = dict(k=4, n_epochs=3, tol=None, random_state=8, grid=3, biases=True)
    RealValueMF(**settings).fit((rows, cols, values), shape=shape, client=client)
    assert len(pulls) == 1  # once, at the end

    # With validation data the client needs the factors after every epoch; the
    # result (early stopping included) is still the local one.
    pulls.clear()
    train, val = slice(0, 1700), slice(1700, None)
    fit_args = ((rows[train], cols[train], values[train]),)
    fit_kwargs = dict(shape=shape, X_val=(rows[val], cols[val], values[val]))
    local = RealValueMF(n_threads=1, **settings).fit(*fit_args, **fit_kwargs)
    remote = RealValueMF(**settings).fit(*fit_args, client=client, **fit_kwargs)
    assert len(pulls) == 3 + 1
    assert digest(remote) == digest(local)
    np.testing.assert_array_equal(remote.val_curve_, local.val_curve_)
    assert remote.best_epoch_ == local.best_epoch_


def test_weighted_dask_fit_is_bit_identical_to_local(client):
    rows, cols, values, shape = random_coo(37, m=50, n=40, nnz=700)
    weights = np.random.default_rng(38).uniform(0.5, 2, rows.size)
    params = dict(k=3, n_epochs=3, tol=None, random_state=0, grid=3)
    local = RealValueMF(**params).fit((rows, cols, values), shape=shape, sample_weight=weights)
    remote = RealValueMF(**params).fit(
        (rows, cols, values), shape=shape, sample_weight=weights, client=client
    )
    np.testing.assert_array_equal(local.item_factors_, remote.item_factors_)
    np.testing.assert_array_equal(local.loss_curve_, remote.loss_curve_)
