import re
import subprocess
import sys

from fastmf.__main__ import main


def test_demo_trains_and_reports(capsys):
    assert main(["demo", "--ratings", "30000", "--users", "3000", "--items", "400", "-k", "8"]) == 0
    out = capsys.readouterr().out
    rmse, baseline = map(
        float,
        re.search(r"held-out RMSE (\S+)\s+\(predicting the training mean: (\S+)\)", out).groups(),
    )
    assert rmse < baseline
    auc = float(re.search(r"held-out AUC\s+(\S+)", out).group(1))
    assert 0.6 < auc <= 1.0
    assert "ratings/s" in out
    assert len(re.findall(r"^item \d+: ", out, flags=re.M)) == 3


def test_module_help_and_usage_error():
    ok = subprocess.run(
        [sys.executable, "-m", "fastmf", "demo", "--help"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "--ratings" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "fastmf", "frobnicate"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
