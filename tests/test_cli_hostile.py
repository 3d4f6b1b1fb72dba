"""The command line never surprises: clear one-line errors, results on stdout, progress on stderr."""

import json

import numpy as np
import pytest

from fastmf.__main__ import main
from fastmf.io import read_pairs, read_ratings


def _ratings(folder, name="ratings.csv", extra=""):
    rng = np.random.default_rng(0)
    lines = ["user,item,rating"]
    seen = set()
    while len(lines) < 400:
        user, item = int(rng.integers(1, 40)), int(rng.integers(1, 30))
        if (user, item) not in seen:
            seen.add((user, item))
            lines.append(f"{user},{item},{int(rng.integers(1, 6))}")
    path = folder / name
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _fit(capsys, folder, *extra, data=None):
    data = data or _ratings(folder)
    return run(capsys, "fit", data, "-k", 4, "--epochs", 3, "--save", folder / "m.npz", *extra)


def test_a_duplicate_rating_is_named_by_raw_ids_and_rows_with_the_option_to_fix_it(
    tmp_path, capsys
):
    data = _ratings(tmp_path, extra="7,3,5\n7,3,1\n")
    code, out, err = _fit(capsys, tmp_path, data=data)
    assert code == 1 and out == ""
    assert "user 7 rated item 3 more than once" in err and "--duplicates" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = _fit(capsys, tmp_path, "--duplicates", "last", "--quiet", data=data)
    assert code == 0, err
    assert "saved=" in out


def test_output_paths_and_the_plot_extra_are_checked_before_training(tmp_path, capsys):
    code, _, err = _fit(capsys, tmp_path, "--save", tmp_path / "missing" / "m.npz")
    assert code == 1 and "does not exist" in err
    code, _, err = _fit(capsys, tmp_path, "--plot", tmp_path / "nowhere" / "c.png")
    assert code == 1 and "--plot" in err and "does not exist" in err
    assert not (tmp_path / "m.npz").exists()  # nothing was trained


def test_threshold_checks_for_the_logistic_loss(tmp_path, capsys):
    code, _, err = _fit(capsys, tmp_path, "--threshold", 4)
    assert code == 1 and "--threshold applies to --loss logistic only" in err
    code, _, err = _fit(capsys, tmp_path, "--loss", "logistic")
    assert code == 1 and "--threshold" in err and "labels='" not in err
    code, _, err = _fit(capsys, tmp_path, "--loss", "logistic", "--threshold", 9)
    assert code == 1 and "every one of the" in err and "negative" in err
    code, _, err = _fit(capsys, tmp_path, "--loss", "logistic", "--threshold", 4, "--quiet")
    assert code == 0, err


def test_progress_goes_to_stderr_and_warnings_are_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):  # the plain per-epoch lines, not the bar
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    code, out, err = _fit(capsys, tmp_path)
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("epochs=")
    assert len(out.strip().splitlines()) == 1  # only the result
    assert sum(line.startswith("epoch ") for line in err.splitlines()) == 3  # per-epoch lines
    warning_lines = [line for line in err.splitlines() if "warning" in line.lower()]
    assert warning_lines and all(line.startswith("fastmf fit: warning:") for line in warning_lines)
    assert not any(".py:" in line for line in err.splitlines())


def test_jsonl_writes_null_for_unknown_pairs_and_recommend_prints_probabilities(tmp_path, capsys):
    code, _, err = _fit(capsys, tmp_path, "--loss", "logistic", "--threshold", 4, "--quiet")
    assert code == 0, err
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("uid,iid\n7,3\n999,3\n")
    code, out, err = run(
        capsys, "predict", tmp_path / "m.npz", pairs, "--unknown", "nan", "--format", "jsonl"
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]  # strict JSON: no NaN
    assert records[0]["user"] == 7 and 0 < records[0]["score"] < 1
    assert records[1]["score"] is None
    code, out, err = run(capsys, "recommend", tmp_path / "m.npz", "--users", 7, "-n", 3)
    assert code == 0, err
    scores = [float(line.split(",")[3]) for line in out.splitlines()[1:]]
    assert len(scores) == 3 and all(0 < s < 1 for s in scores)
    code, _, err = run(capsys, "predict", tmp_path / "m.npz", pairs)
    assert code == 1 and "--unknown nan" in err and "unknown='" not in err


def test_predict_takes_columns_and_header_options(tmp_path, capsys):
    code, _, err = _fit(capsys, tmp_path, "--quiet")
    assert code == 0, err
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("x\tItemId\tUserId\n0\t3\t7\n0\t4\t8\n")
    code, out, err = run(
        capsys, "predict", tmp_path / "m.npz", pairs, "--columns", "UserId", "ItemId"
    )
    assert code == 0, err
    assert [line.split(",")[:2] for line in out.splitlines()[1:]] == [["7", "3"], ["8", "4"]]
    bare = tmp_path / "bare.csv"
    bare.write_text("7,3\n8,4\n")
    code, out, err = run(capsys, "predict", tmp_path / "m.npz", bare, "--no-header")
    assert code == 0 and len(out.splitlines()) == 3, err


def test_malformed_ids_are_caught_with_their_line(tmp_path):
    empty = _ratings(tmp_path, "empty.csv", extra="196,,3\n")
    with pytest.raises(ValueError, match=r"empty\.csv, line 401: the item id is empty"):
        read_ratings(empty)
    floats = tmp_path / "floats.csv"
    floats.write_text("user,item,rating\n196.0,242,3\n186,302.0,4\n")
    ratings = read_ratings(floats)
    assert ratings.users.dtype == np.int64 and ratings.users.tolist() == [196, 186]
    assert ratings.items.tolist() == [242, 302]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("1,2\n3,4\n5\n")
    with pytest.raises(ValueError, match=r"pairs\.csv, line 3: expected at least 2 fields"):
        read_pairs(pairs)


def test_bom_quotes_and_other_encodings(tmp_path):
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffuser,item,rating\n1,2,3\n4,5,1\n".encode())
    assert read_ratings(bom, columns=("user", "item", "rating")).users.tolist() == [1, 4]
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('"user","item","rating"\n"1","2","3"\n"4","x y","1"\n')
    ratings = read_ratings(quoted, columns=("user", "item", "rating"))
    assert ratings.users.tolist() == [1, 4] and ratings.items.tolist() == ["2", "x y"]
    assert ratings.values.tolist() == [3.0, 1.0]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("user,item,rating\nJos\xe9,2,3\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv: not UTF-8 text.*iconv"):
        read_ratings(latin)


def test_unknown_ids_on_the_command_line_are_named_without_python_advice(tmp_path, capsys):
    code, _, err = _fit(capsys, tmp_path, "--quiet")
    assert code == 0, err
    for command in (("recommend", "--users", 7, 12345), ("similar", "--users", 12345)):
        code, out, err = run(capsys, command[0], tmp_path / "m.npz", *command[1:])
        assert code == 1 and out == ""
        assert "no user 12345 in the training data" in err and "by_index" not in err
