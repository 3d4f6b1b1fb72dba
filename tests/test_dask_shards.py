"""Distributed training from shards the driver never loads: same factors as local training."""

import numpy as np
import pytest
from conftest import digest, model_coo, random_coo

import fastmf
from fastmf import BinaryMF, RealValueMF

distributed = pytest.importorskip("distributed")
fastmf_dask = pytest.importorskip("fastmf.dask")


def write_npz_shards(folder, rows, cols, values, n_shards=3):
    paths = []
    for j, part in enumerate(np.array_split(np.arange(rows.size), n_shards)):
        path = folder / f"part-{j}.npz"
        np.savez(path, rows=rows[part], cols=cols[part], values=values[part])
        paths.append(str(path))
    return paths


def seen_sets(model):
    indptr, items = model.seen_indptr_, model.seen_items_
    return [set(items[indptr[u] : indptr[u + 1]].tolist()) for u in range(indptr.size - 1)]


@pytest.mark.parametrize(
    "params",
    [{}, {"biases": True, "learning_rate": "adagrad", "lr": 0.05}],
    ids=["plain", "adagrad"],
)
def test_npz_shards_give_the_local_factors_bit_for_bit(client, tmp_path, model_class, params):
    rows, cols, values, shape = model_coo(model_class, 21, m=120, n=90, nnz=3000)
    settings = dict(k=6, n_epochs=4, tol=None, random_state=3, grid=4, **params)
    local = model_class(n_threads=1, **settings).fit((rows, cols, values), shape=shape)
    paths = write_npz_shards(tmp_path, rows, cols, values)
    remote = model_class(**settings).fit(paths, shape=shape, client=client)
    assert digest(remote) == digest(local)
    assert seen_sets(remote) == seen_sets(local)
    np.testing.assert_array_equal(remote.recommend(0, n=5)[0], local.recommend(0, n=5)[0])
    remote.save(tmp_path / "model.npz")  # an ordinary fitted model
    loaded = fastmf.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.predict(rows, cols), local.predict(rows, cols))


def test_a_dask_dataframe_and_parquet_files_give_the_same_factors(client, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    rows, cols, values, shape = random_coo(22, m=100, n=70, nnz=2500)
    settings = dict(k=5, n_epochs=3, tol=None, random_state=1, grid=3, biases=True)
    local = RealValueMF(n_threads=1, **settings).fit((rows, cols, values), shape=shape)

    frame = pd.DataFrame({"rating": values, "user": rows, "item": cols})
    ddf = dd.from_pandas(frame, npartitions=4)
    shards = fastmf_dask.Shards(ddf, columns=("user", "item", "rating"))
    from_frame = RealValueMF(**settings).fit(shards, shape=shape, client=client)
    assert digest(from_frame) == digest(local)

    paths = []
    for j, part in enumerate(np.array_split(np.arange(rows.size), 2)):
        path = tmp_path / f"part-{j}.parquet"
        table = pa.table({"u": rows[part], "i": cols[part], "r": values[part]})
        pq.write_table(table, path)
        paths.append(path)
    from_parquet = fastmf_dask.fit(RealValueMF(**settings), paths, client, shape=shape)
    assert digest(from_parquet) == digest(local)


def test_the_driver_never_loads_the_shards(client, tmp_path, monkeypatch):
    import fastmf._backend
    import fastmf._blocks
    import fastmf.dask

    rows, cols, values, _ = random_coo(23, m=80, n=60, nnz=1500)
    paths = write_npz_shards(tmp_path, rows, cols, values, n_shards=2)
    local = RealValueMF(n_threads=1, k=4, n_epochs=2, tol=None, random_state=0, grid=2)
    local.fit((rows, cols, values))  # shape inferred, as below

    def forbidden(*args, **kwargs):
        raise AssertionError("the driver tried to load or arrange the ratings")

    # Patched in this (driver) process only; the workers are other processes.
    real_load = np.load
    monkeypatch.setattr(
        np,
        "load",
        lambda path, *a, **k: forbidden() if "part-" in str(path) else real_load(path, *a, **k),
    )
    monkeypatch.setattr(fastmf._backend, "arrange", forbidden)
    monkeypatch.setattr(fastmf.dask, "arrange", forbidden)
    monkeypatch.setattr(fastmf._blocks, "arrange", forbidden)
    model = RealValueMF(k=4, n_epochs=2, tol=None, random_state=0, grid=2)
    model.fit(paths, client=client)  # shape inferred on the workers
    assert (model.n_users_, model.n_items_) == (int(rows.max()) + 1, int(cols.max()) + 1)
    assert digest(model) == digest(local)


def test_duplicates_across_shards_follow_the_policy(client, tmp_path):
    rows, cols, values, shape = random_coo(24, m=50, n=40, nnz=800)
    # The same pairs again in a later shard, with other values.
    rows2, cols2, values2 = rows[:100], cols[:100], values[:100] % 5 + 1
    all_rows = np.concatenate([rows, rows2])
    all_cols = np.concatenate([cols, cols2])
    all_values = np.concatenate([values, values2])
    paths = write_npz_shards(tmp_path, all_rows, all_cols, all_values, n_shards=3)
    settings = dict(k=3, n_epochs=2, tol=None, random_state=4, grid=2)
    with pytest.raises(ValueError, match=r"100 \(row, col\) pair\(s\) more than once"):
        RealValueMF(**settings).fit(paths, shape=shape, client=client)
    for policy in ("last", "sum"):
        local = RealValueMF(n_threads=1, **settings).fit(
            (all_rows, all_cols, all_values), shape=shape, duplicates=policy
        )
        remote = RealValueMF(**settings).fit(paths, shape=shape, client=client, duplicates=policy)
        assert digest(remote) == digest(local)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda r, c, v: (r, c, np.where(np.arange(v.size) == 7, np.nan, v)), "part-1.npz.*NaN"),
        (lambda r, c, v: (np.where(np.arange(r.size) == 3, -2, r), c, v), "part-1.npz.*negative"),
        (lambda r, c, v: (r, c.astype(np.float64) + 0.5, v), "part-1.npz.*integer"),
    ],
)
def test_a_bad_shard_is_named_and_the_fitted_model_is_unchanged(client, tmp_path, corrupt, message):
    rows, cols, values, shape = random_coo(25, m=40, n=30, nnz=600)
    model = RealValueMF(k=3, n_epochs=2, tol=None, random_state=0, grid=2)
    model.fit((rows, cols, values), shape=shape)
    before = digest(model)
    paths = write_npz_shards(tmp_path, rows, cols, values, n_shards=2)
    r, c, v = (a[300:] for a in (rows, cols, values))
    np.savez(paths[1], **dict(zip(("rows", "cols", "values"), corrupt(r, c, v))))
    with pytest.raises(ValueError, match=message):
        model.fit(paths, shape=shape, client=client)
    assert digest(model) == before


def test_shard_shape_labels_and_format_errors(client, tmp_path):
    rows, cols, values, shape = random_coo(26, m=40, n=30, nnz=600)
    paths = write_npz_shards(tmp_path, rows, cols, values, n_shards=2)
    small = (int(rows.max()), int(cols.max()) + 1)
    with pytest.raises(ValueError, match="row index .* out of range for shape"):
        RealValueMF(k=2, n_epochs=1).fit(paths, shape=small, client=client)
    with pytest.raises(ValueError, match="part-0.npz.*labels"):
        BinaryMF(k=2, n_epochs=1).fit(paths, shape=shape, client=client)
    other = tmp_path / "other.npz"
    np.savez(other, a=rows, b=cols, c=values)
    with pytest.raises(ValueError, match="other.npz.*'rows', 'cols' and 'values'"):
        RealValueMF(k=2, n_epochs=1).fit([str(other)], client=client)
    empty = tmp_path / "empty.npz"
    np.savez(empty, rows=rows[:0], cols=cols[:0], values=values[:0])
    with pytest.raises(ValueError, match="hold no ratings"):
        RealValueMF(k=2, n_epochs=1).fit([str(empty)], client=client)
    with pytest.raises(TypeError, match="list of file paths or a dask DataFrame"):
        fastmf_dask.Shards([1, 2])


def test_sharded_checkpoint_and_resume(client, tmp_path):
    rows, cols, values, shape = random_coo(27, m=70, n=50, nnz=1400)
    paths = write_npz_shards(tmp_path, rows, cols, values)
    settings = dict(k=4, tol=None, random_state=6, grid=3, biases=True, n_epochs=4)
    full = RealValueMF(n_threads=1, **settings).fit((rows, cols, values), shape=shape)
    path = tmp_path / "ckpt.npz"
    RealValueMF(**settings).fit(
        paths, shape=shape, client=client, checkpoint=path, callback=lambda i: i["epoch"] < 2
    )
    resumed = RealValueMF(**settings).fit(paths, shape=shape, client=client, resume=path)
    assert digest(resumed) == digest(full) and resumed.n_iter_ == 4
