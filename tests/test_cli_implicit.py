"""The command line on positive-only interactions: fit, recommend, evaluate."""

import numpy as np

from fastmf import ImplicitMF, load
from fastmf.__main__ import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _clicks(folder, weights=False, header=True):
    """Users 0..59 each click 6 of the 10 items of their group (item % 4 == user % 4)."""
    rng = np.random.default_rng(0)
    lines = ["user,item" + (",count" if weights else "")] if header else []
    for user in range(60):
        items = rng.choice(np.arange(user % 4, 40, 4), 6, replace=False)
        for item in items:
            count = f",{int(rng.integers(1, 4))}" if weights else ""
            lines.append(f"u{user},i{item}{count}")
    path = folder / ("weighted.csv" if weights else "clicks.csv")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_on_user_item_lines_recommends_the_users_group(tmp_path, capsys):
    data = _clicks(tmp_path)
    model_path = tmp_path / "m.npz"
    code, out, err = run(capsys, "fit", data, "--loss", "implicit-logistic", "-k", 4,
                         "--save", model_path, "--quiet")  # fmt: skip
    assert code == 0, err
    assert "epochs=30" in out and "saved=" in out
    model = load(model_path)
    assert isinstance(model, ImplicitMF) and model.loss == "logistic"
    code, out, err = run(capsys, "recommend", model_path, "--users", "u1", "-n", 3)
    assert code == 0, err
    rows = [line.split(",") for line in out.strip().splitlines()[1:]]
    assert len(rows) == 3
    assert all(int(item[1:]) % 4 == 1 for _, _, item, _ in rows)


def test_bpr_with_weights_validation_and_evaluate(tmp_path, capsys):
    data = _clicks(tmp_path, weights=True)
    model_path = tmp_path / "b.npz"
    code, out, err = run(capsys, "fit", data, "--loss", "bpr", "--negatives", 2, "-k", 4,
                         "--val", 0.25, "--epochs", 20, "--save", model_path, "--quiet")  # fmt: skip
    assert code == 0, err
    assert "val_ndcg@10=" in out and "best_epoch=" in out
    model = load(model_path)
    assert model.loss == "bpr" and model.n_negatives == 2
    code, out, err = run(capsys, "evaluate", model_path, data, "-k", 5)
    assert code == 0, err
    header, values = out.strip().splitlines()
    assert header.split(",") == [
        "ratings", "skipped_unknown", "precision@5", "recall@5", "ndcg@5", "map@5",
    ]  # fmt: skip
    assert "rmse" not in header


def test_implicit_only_options_are_refused_elsewhere(tmp_path, capsys):
    data = _clicks(tmp_path, weights=True)
    code, _, err = run(capsys, "fit", data, "--negatives", 2, "--save", tmp_path / "m.npz")
    assert code == 1 and "--negatives applies to --loss bpr and implicit-logistic" in err
    code, _, err = run(capsys, "fit", data, "--columns", "user", "item",
                       "--save", tmp_path / "m.npz")  # fmt: skip
    assert code == 1 and "is for --loss bpr or implicit-logistic" in err
    code, _, err = run(capsys, "fit", data, "--loss", "bpr", "--threshold", 2,
                       "--save", tmp_path / "m.npz")  # fmt: skip
    assert code == 1 and "--threshold applies to --loss logistic only" in err
