"""Loaders and file formats on small files the tests write."""

import numpy as np
import pytest
import scipy.sparse as sp

import fastmf
from fastmf.io import read_matrix_market, read_ratings, write_matrix_market, write_ratings


def write(path, text):
    path.write_text(text)
    return path


def test_delimited_formats_and_header_detection(tmp_path):
    csv = write(tmp_path / "r.csv", "user,item,rating\nu1,10,4.5\nu2,11,3\n")
    raw = read_ratings(csv)
    assert raw.users.tolist() == ["u1", "u2"] and raw.items.tolist() == [10, 11]
    np.testing.assert_array_equal(raw.values, [4.5, 3.0])
    tsv = write(tmp_path / "r.tsv", "1\t2\t5\t100\n3\t4\t1\t200\n")
    raw = read_ratings(tsv, timestamp=3)
    assert raw.users.dtype == np.int64 and raw.timestamps.tolist() == [100, 200]
    libmf = write(tmp_path / "r.txt", "0 1 0.5\n2  3 -1\n")
    assert read_ratings(libmf).values.tolist() == [0.5, -1.0]
    named = write(tmp_path / "n.csv", "ts;rating;movie;who\n1;5;7;a\n2;4;8;b\n")
    raw = read_ratings(named, columns=("who", "movie", "rating"), timestamp="ts")
    assert raw.users.tolist() == ["a", "b"] and raw.items.tolist() == [7, 8]
    with pytest.raises(ValueError, match="no column named 'score'"):
        read_ratings(named, columns=("who", "movie", "score"))


@pytest.mark.parametrize(
    "text, match",
    [
        ("1,2,5\n1,3,x\n", r"line 2: the value 'x' is not a number"),
        ("1,2,5\n1,3\n", r"line 2: expected at least 3 fields, found 2"),
        ("u,i,r\n1,2,5\n1,3,nan\n", r"line 3: the value is nan"),
        ("", "empty"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, text, match):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=match) as error:
        read_ratings(path)
    assert "bad.csv" in str(error.value)


def test_skip_bad_lines_reports_the_count(tmp_path):
    path = write(tmp_path / "bad.csv", "1,2,5\n1,3,x\n2,2\n4,4,2\n")
    with pytest.warns(UserWarning, match="skipped 2 bad line"):
        raw = read_ratings(path, skip_bad_lines=True)
    assert raw.users.tolist() == [1, 4]


def test_write_read_round_trip_and_matrix_market(tmp_path):
    users, items, values = np.array([3, 1]), np.array([0, 2]), np.array([4.0, 2.5])
    write_ratings(tmp_path / "out.csv", users, items, values)
    raw = read_ratings(tmp_path / "out.csv")
    np.testing.assert_array_equal(raw.users, users)
    np.testing.assert_array_equal(raw.values, values)
    write_ratings(tmp_path / "out.txt", users, items, values, sep=" ", header=None)
    np.testing.assert_array_equal(read_ratings(tmp_path / "out.txt").items, items)
    matrix = sp.coo_array((values, (users, items)), shape=(4, 3))
    write_matrix_market(tmp_path / "m.mtx", matrix)
    back = read_matrix_market(tmp_path / "m.mtx")
    assert (back != matrix).nnz == 0 and back.shape == (4, 3)


@pytest.mark.parametrize(
    "name, text",
    [
        ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"),
        ("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"),
    ],
)
def test_load_movielens_variants_from_file_or_folder(tmp_path, name, text):
    write(tmp_path / name, text)
    for where in (tmp_path / name, tmp_path):
        data, timestamps = fastmf.datasets.load_movielens(where)
        assert len(data.rows) == 2 and timestamps.dtype == np.int64 and timestamps[0] > 8e8
        assert data.values.dtype == np.float64 and data.values[0] in (3.0, 5.0, 4.0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no MovieLens ratings file"):
        fastmf.datasets.load_movielens(empty)


def test_parquet_when_pyarrow_is_installed(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"user": ["a", "b"], "item": [1, 2], "stars": [4.0, 2.0]})
    pq.write_table(table, tmp_path / "r.parquet")
    raw = read_ratings(tmp_path / "r.parquet", columns=("user", "item", "stars"))
    assert raw.users.tolist() == ["a", "b"] and raw.values.tolist() == [4.0, 2.0]
    write_ratings(tmp_path / "w.parquet", [3, 4], ["x", "y"], [1.5, 2.5])
    back = read_ratings(tmp_path / "w.parquet", columns=("user", "item", "rating"))
    assert back.users.tolist() == [3, 4] and back.items.tolist() == ["x", "y"]


def test_read_pairs_with_string_ids_and_header_detection(tmp_path):
    from fastmf.io import read_pairs

    with_header = write(tmp_path / "p.csv", "userId,movieId\nu1,m7\nu2,m8\n")
    users, items = read_pairs(with_header)
    assert users.tolist() == ["u1", "u2"] and items.tolist() == ["m7", "m8"]
    bare = write(tmp_path / "p.tsv", "3\tm7\n4\tm9\n")
    users, items = read_pairs(bare)
    assert users.tolist() == [3, 4] and items.tolist() == ["m7", "m9"]
    with pytest.raises(ValueError, match="p.tsv"):
        read_pairs(bare, columns=(0, 5))
