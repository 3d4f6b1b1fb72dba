"""First-call cost: import, and a default fit with an empty numba cache, then with a warm one.

Each measurement runs in a fresh subprocess with its own ``NUMBA_CACHE_DIR``,
as a user's first call (or a CI job's) would. ``FASTMF_BENCH_OTHER=/path`` to
another fastmf checkout times that tree too, in alternating rounds, and
reports the ratio (this tree / the other), e.g. before and after a change.

    python -m pytest bench/test_bench_compile.py --benchmark-only -s
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, time
start = time.perf_counter()
import numpy as np
import fastmf
imported = time.perf_counter() - start
assert fastmf.__file__.startswith(sys.argv[2]), (fastmf.__file__, sys.argv[2])
rng = np.random.default_rng(0)
# Dense, 0 = missing: ratings 1-5, or labels -1/+1.
low, high = (0, 6) if sys.argv[1] == "RealValueMF" else (-1, 2)
X = rng.integers(low, high, size=(300, 200))
model = getattr(fastmf, sys.argv[1])(random_state=0, n_epochs=5)
start = time.perf_counter()
model.fit(X)
print(json.dumps({"import": imported, "fit": time.perf_counter() - start}))
"""


def first_call(tree, model, cache):
    """Time ``import fastmf`` and a default fit of ``model`` from ``tree`` in a new process."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(tree))
    # Run from the cache folder: `python -c` puts the working directory first on
    # sys.path, ahead of PYTHONPATH.
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, model, str(tree)],
        cwd=cache,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["RealValueMF", "BinaryMF"])
def test_first_call(benchmark, model):
    trees = {"this": HERE}
    if os.environ.get("FASTMF_BENCH_OTHER"):
        trees["other"] = pathlib.Path(os.environ["FASTMF_BENCH_OTHER"]).resolve()
    rounds = 3 if len(trees) > 1 else 1
    cold = {name: [] for name in trees}
    warm = {name: [] for name in trees}
    imports = {name: [] for name in trees}

    def measure():
        for r in range(rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                with tempfile.TemporaryDirectory() as cache:
                    first = first_call(trees[name], model, cache)
                    second = first_call(trees[name], model, cache)
                cold[name].append(first["fit"])
                warm[name].append(second["fit"])
                imports[name].append(second["import"])

    benchmark.group = "first call"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    for name in trees:
        print(
            f"\n{model} [{name} tree]: empty cache {_runs(cold[name])} s; cached "
            f"{_runs(warm[name])} s; import {_runs(imports[name])} s"
        )
        benchmark.extra_info[f"{name}_cold_median"] = float(np.median(cold[name]))
        benchmark.extra_info[f"{name}_warm_median"] = float(np.median(warm[name]))
    if "other" in trees:
        ratios = np.array(cold["this"]) / np.array(cold["other"])
        print(f"{model}: empty-cache first fit, this / other per round: {_runs(ratios)}")
        benchmark.extra_info["cold_ratio_median"] = float(np.median(ratios))


def _runs(values):
    return ", ".join(f"{v:.2f}" for v in values)
