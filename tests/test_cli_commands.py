"""End-to-end CLI runs in subprocesses on files the tests write; outputs parsed and checked."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from fastmf import load
from fastmf.datasets import make_synthetic
from fastmf.io import write_ratings


def fastmf(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "fastmf", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    data = make_synthetic(300, 80, 6000, random_state=1)
    users = np.array([f"u{r}" for r in data.rows])
    items = data.cols + 1000
    is_test = np.random.default_rng(0).random(data.values.size) < 0.1
    write_ratings(folder / "train.csv", users[~is_test], items[~is_test], data.values[~is_test])
    write_ratings(folder / "test.csv", users[is_test], items[is_test], data.values[is_test])
    write_ratings(folder / "pairs.csv", ["u1", "nobody"], [1001, 1002], [0, 0])
    fit = fastmf(
        "fit",
        "train.csv",
        "-k",
        8,
        "--epochs",
        30,
        "--val",
        0.1,
        "--biases",
        "--save",
        "model.npz",
        "--quiet",
        cwd=folder,
    )
    assert fit.returncode == 0, fit.stderr
    assert "val_rmse=" in fit.stdout and "saved=model.npz" in fit.stdout
    train = {(u, i) for u, i in zip(users[~is_test].tolist(), items[~is_test].tolist())}
    return folder, train


def test_recommend_excludes_training_items(workdir):
    folder, train = workdir
    result = fastmf("recommend", "model.npz", "--users", "u1", "u2", "-n", 5, cwd=folder)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 10 and {r["user"] for r in rows} == {"u1", "u2"}
    assert all((r["user"], int(r["item"])) not in train for r in rows)
    scores = [float(r["score"]) for r in rows if r["user"] == "u1"]
    assert scores == sorted(scores, reverse=True)


def test_similar_and_predict_in_both_formats(workdir):
    folder, _ = workdir
    result = fastmf(
        "similar", "model.npz", "--items", 1001, "-n", 3, "--format", "jsonl", cwd=folder
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["rank"] for line in lines] == [1, 2, 3]
    assert all(line["item"] == 1001 and line["similar"] != 1001 for line in lines)
    assert all(-1 <= line["score"] <= 1 for line in lines)
    result = fastmf("predict", "model.npz", "pairs.csv", "--unknown", "nan", cwd=folder)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["user"] == "u1" and 0 < float(rows[0]["score"]) < 7
    assert rows[1]["score"] == ""  # unknown user, NaN policy


def test_evaluate_reports_metrics_within_bounds(workdir):
    folder, _ = workdir
    result = fastmf(
        "evaluate",
        "model.npz",
        "test.csv",
        "-k",
        5,
        "--threshold",
        4,
        "--format",
        "jsonl",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert 0.3 < metrics["rmse"] < 1.6 and metrics["mae"] <= metrics["rmse"]
    for name in ("precision@5", "recall@5", "ndcg@5"):
        assert 0 <= metrics[name] <= 1


def test_errors_exit_codes_and_help(workdir):
    folder, _ = workdir
    unknown = fastmf("recommend", "model.npz", "--users", "nobody", cwd=folder)
    assert unknown.returncode == 1
    assert (
        unknown.stderr.strip().count("\n") == 0
        and "no user nobody in the training data" in unknown.stderr
    )
    debug = fastmf("--debug", "recommend", "model.npz", "--users", "nobody", cwd=folder)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    (folder / "bad.csv").write_text("u1,1001,5\nu2,1002,oops\n")
    bad = fastmf("fit", "bad.csv", "--save", "x.npz", cwd=folder)
    assert bad.returncode == 1 and "bad.csv, line 2" in bad.stderr
    assert fastmf("fit", cwd=folder).returncode == 2
    for command in ("fit", "predict", "recommend", "similar", "evaluate", "demo"):
        result = fastmf(command, "--help", cwd=folder)
        assert result.returncode == 0 and "example:" in result.stdout


def test_fit_plot_writes_a_png_or_explains_the_missing_extra(workdir):
    folder, _ = workdir
    result = fastmf(
        "fit",
        "train.csv",
        "-k",
        4,
        "--epochs",
        3,
        "--val",
        0.1,
        "--quiet",
        "--save",
        "plot_model.npz",
        "--plot",
        "curve.png",
        cwd=folder,
    )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.returncode == 1 and "--plot needs matplotlib" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert (folder / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_logistic_with_threshold(workdir):
    folder, _ = workdir
    args = ["fit", "train.csv", "--loss", "logistic", "--threshold", 4, "-k", 4, "--biases"]
    args += ["--epochs", 30, "--val", 0.1, "--quiet", "--save", "clf.npz"]
    result = fastmf(*args, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "val_log_loss=" in result.stdout
    scored = fastmf(
        "evaluate", "clf.npz", "test.csv", "--threshold", 4, "--format", "jsonl", cwd=folder
    )
    metrics = json.loads(scored.stdout)
    # Few ratings per user (about 20): the item offsets carry most of the signal.
    assert 0.6 <= metrics["auc"] <= 1 and 0 < metrics["log_loss"] < 0.693


def test_fit_learns_biases_unless_told_not_to(workdir):
    folder, _ = workdir
    common = ["train.csv", "-k", 2, "--epochs", 3, "--quiet"]
    assert fastmf("fit", *common, "--save", "biased.npz", cwd=folder).returncode == 0
    plain = fastmf("fit", *common, "--no-biases", "--save", "plain.npz", cwd=folder)
    assert plain.returncode == 0, plain.stderr
    biased, plain = load(folder / "biased.npz"), load(folder / "plain.npz")
    assert biased.biases and biased.user_bias_.any() and biased.global_mean_ > 1
    assert not plain.biases and not plain.user_bias_.any() and plain.global_mean_ == 0


def test_predict_with_string_item_ids(tmp_path):
    # Pairs are read without a value column, so string item ids work too.
    users = np.repeat(["a", "b", "c"], 7)
    items = np.array([f"m{i}" for i in range(7)] * 3)
    write_ratings(tmp_path / "r.csv", users, items, np.arange(21) % 5 + 1.0)
    assert (
        fastmf(
            "fit", "r.csv", "-k", 2, "--epochs", 3, "--quiet", "--save", "m.npz", cwd=tmp_path
        ).returncode
        == 0
    )
    (tmp_path / "pairs.csv").write_text("user,item\na,m1\nb,m2\n")
    result = fastmf("predict", "m.npz", "pairs.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["item"] for r in rows] == ["m1", "m2"] and all(float(r["score"]) for r in rows)
