"""Embedded use: forked, spawned and forkserver children, concurrent threads, the workqueue layer.

Every child runs in a subprocess bounded by a timeout, so a crash or a hang
fails the test instead of the CI run.
"""

import os
import subprocess
import sys
import textwrap

import pytest

TESTS = os.path.dirname(__file__)

# A parallel fit in the parent starts numba's thread pool; then children made
# by each start method fit with the default (all) threads and report digests.
_CHILDREN = """
import multiprocessing as mp, sys, warnings
sys.path.insert(0, {tests!r})
from conftest import MODELS, digest, model_coo, use_large_fit_kernels
use_large_fit_kernels()

def fit(args):
    name, threads = args
    cls = {{c.__name__: c for c in MODELS}}[name]
    rows, cols, values, shape = model_coo(cls, 3, m=200, n=150, nnz=4000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = cls(k=6, n_epochs=3, tol=None, random_state=1, grid=4, n_threads=threads)
        model.fit((rows, cols, values), shape=shape)
        ids = model.recommend(list(range(100)), n=5)[0].tolist()  # > 64: threaded
    return digest(model), ids, [type(w.message).__name__ for w in caught]

if __name__ == "__main__":
    jobs = [(cls.__name__, threads) for cls in MODELS for threads in (None, 2)]
    expected = [fit((name, 1))[:2] for name, _ in jobs]
    fit(jobs[0])  # the parent's own parallel fit starts its thread pool
    import numba.np.ufunc.parallel as pool
    assert pool._is_initialized
    with mp.get_context({method!r}).Pool(2) as workers:
        results = workers.map(fit, jobs)
    for (digest_, ids, warned), (digest_1, ids_1) in zip(results, expected):
        assert (digest_, ids) == (digest_1, ids_1)
    import numba
    print("layer", numba.threading_layer())
    print("warnings", sorted({{w for *_, ws in results for w in ws}}))
"""


def _run(code, env=None, timeout=120, script=None):
    """Run ``code`` in a new interpreter (from the file ``script`` if given; spawned
    children need a main module they can import)."""
    if script is not None:
        script.write_text(code)
    out = subprocess.run(
        [sys.executable, *([str(script)] if script is not None else ["-c", code])],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_children_fit_after_a_parallel_fit_in_the_parent(method, tmp_path):
    out = _run(_CHILDREN.format(tests=TESTS, method=method), script=tmp_path / "children.py")
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    # A child forked from a GNU OpenMP parent falls back to serial kernels, saying why;
    # other start methods (and other layers) run in parallel without a word.
    fell_back = "SerialFallbackWarning" in lines["warnings"]
    assert fell_back == (method == "fork" and lines["layer"] == "omp")


_THREADS = """
import sys, threading
sys.path.insert(0, {tests!r})
from conftest import MODELS, digest, model_coo, use_large_fit_kernels
use_large_fit_kernels()

def job(cls, seed):
    rows, cols, values, shape = model_coo(cls, seed, m=200, n=150, nnz=4000)
    model = cls(k=6, n_epochs=3, tol=None, random_state=seed, grid=4, n_threads=2)
    model.fit((rows, cols, values), shape=shape)
    return digest(model), model.recommend(list(range(100)), n=5)[0].tolist()  # threaded

jobs = [(cls, seed) for cls in MODELS for seed in (0, 1)]
alone = [job(*j) for j in jobs]
results = [None] * len(jobs)
def run(i):
    results[i] = job(*jobs[i])
threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
for t in threads: t.start()
for t in threads: t.join()
assert results == alone, "concurrent fits differ from lone fits"
import numba
print("layer", numba.threading_layer())
"""


def test_four_threads_fit_and_recommend_at_once_with_the_bits_of_lone_calls():
    out = _run(_THREADS.format(tests=TESTS))
    assert "layer" in out


def test_the_same_on_the_workqueue_layer_which_is_not_thread_safe():
    out = _run(_THREADS.format(tests=TESTS), env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert "layer workqueue" in out


def test_import_starts_no_threads():
    code = textwrap.dedent(
        """
        import threading
        before = threading.active_count()
        import fastmf
        import numba.np.ufunc.parallel as pool
        print(threading.active_count() - before, pool._is_initialized)
        """
    )
    assert _run(code).split() == ["0", "False"]


def test_show_config_reports_what_a_bug_report_needs_without_starting_threads():
    code = textwrap.dedent(
        """
        import io, fastmf
        import numba.np.ufunc.parallel as pool
        buffer = io.StringIO()
        fastmf.show_config(file=buffer)
        print(buffer.getvalue())
        print("pool", pool._is_initialized)
        """
    )
    out = _run(code)
    for key in ("fastmf", "numba", "llvmlite", "numpy", "scipy", "threading layer", "threads"):
        assert any(line.startswith(key + " ") for line in out.splitlines()), key
    assert "compile cache" in out and ("writable" in out) and "simd" in out
    assert "pool False" in out


def test_info_command_after_a_parallel_fit_names_the_layer_and_its_safety():
    code = (
        "import numpy as np, fastmf, fastmf.__main__, fastmf._losses\n"
        "fastmf._losses.SMALL_FIT_RATINGS = 0\n"
        "fastmf.RealValueMF(k=2, n_epochs=1, tol=None, n_threads=2)"
        ".fit((np.arange(8), np.arange(8), np.ones(8)))\n"
        "fastmf.__main__.main(['info'])\n"
    )
    out = _run(code)
    layer = [line for line in out.splitlines() if line.startswith("threading layer")][0]
    assert layer.split()[-1] in ("tbb", "omp", "workqueue")
    assert "safe" in [line for line in out.splitlines() if line.startswith("threading safety")][0]


@pytest.mark.parametrize("large", [False, True])
def test_warmup_in_the_background_compiles_what_a_default_fit_needs(tmp_path, large):
    code = textwrap.dedent(
        f"""
        import numpy as np, fastmf
        from numba.core import event
        thread = fastmf.warmup(background=True, large={large})
        thread.join()
        compiled = []
        class Count(event.Listener):
            def on_start(self, ev):
                compiled.append(ev.data["dispatcher"].py_func.__qualname__)
            def on_end(self, ev):
                pass
        event.register("numba:compile", Count())
        rng = np.random.default_rng(0)
        X = rng.integers(0, 6, size=(60, 40))
        fastmf.RealValueMF(random_state=0, n_epochs=2, tol=None).fit(X).recommend([0, 1])
        y = rng.integers(-1, 2, size=(60, 40))
        fastmf.BinaryMF(random_state=0, n_epochs=2, tol=None).fit(y).recommend(0)
        fastmf.ImplicitMF(random_state=0, n_epochs=2).fit(np.nonzero(X)).recommend(0)
        if {large}:  # 120,000 ratings: the threaded layout and the grouped kernels
            users, items = np.divmod(rng.permutation(400 * 300)[:120_000], 300)
            for model in (
                fastmf.RealValueMF(n_epochs=1),
                fastmf.BinaryMF(n_epochs=1),
                fastmf.ImplicitMF(n_epochs=1),
            ):
                values = rng.choice([-1.0, 1.0], size=users.size)
                model.fit((users, items, values + 3 * (not model._loss.binary)))
        print("compiled", compiled)
        """
    )
    out = _run(code, env={"NUMBA_CACHE_DIR": str(tmp_path)})
    assert "compiled []" in out, out


_FIT_AND_REPORT = """
import sys
import numpy as np
import fastmf
from fastmf import _kernels
rng = np.random.default_rng(0)
model = fastmf.RealValueMF(n_epochs=2, tol=None, random_state=0)
model.fit(rng.integers(0, 6, size=(40, 30)))
stats = _kernels.sgd_epoch_serial.stats
print(fastmf.__file__)
print("hits", sum(stats.cache_hits.values()), "misses", sum(stats.cache_misses.values()))
print("digest", float(model.loss_curve_[-1]).hex())
"""


def _copy_package(tmp_path):
    """A copy of the package whose own folder cannot hold numba's cache (a read-only install)."""
    import shutil

    import fastmf

    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(fastmf.__file__), site / "fastmf")
    cache = site / "fastmf" / "__pycache__"
    shutil.rmtree(cache, ignore_errors=True)
    cache.write_text("")  # a file: no folder can be made there, even by root
    return site


def test_read_only_install_caches_in_the_user_folder_or_compiles_in_memory(tmp_path):
    site = _copy_package(tmp_path)
    (tmp_path / "blocked").write_text("")
    # No writable cache anywhere (the home folder lies under a file): fits still work.
    nowhere = {
        "PYTHONPATH": str(site),
        "HOME": str(tmp_path / "blocked" / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "blocked" / "cache"),
        "NUMBA_CACHE_DIR": "",
    }
    out = _run(_FIT_AND_REPORT, env=nowhere, script=tmp_path / "run.py")
    assert str(site) in out and "hits 0" in out
    digest = out.split("digest")[1].split()[0]
    # A writable user cache folder: the second process loads the compiled kernels.
    user = {**nowhere, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    first = _run(_FIT_AND_REPORT, env=user, script=tmp_path / "run.py")
    second = _run(_FIT_AND_REPORT, env=user, script=tmp_path / "run.py")
    assert "hits 0" in first and "hits 1" in second
    assert first.split("digest")[1].split()[0] == digest == second.split("digest")[1].split()[0]


def test_processes_compiling_into_one_cache_at_once_all_succeed(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_FIT_AND_REPORT)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    children = [
        subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [child.communicate(timeout=240)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0, 0]
    digests = {out.split("digest")[1].split()[0] for out in outputs}
    assert len(digests) == 1
    after = _run(_FIT_AND_REPORT, env={"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert "hits 1" in after and after.split("digest")[1].split()[0] in digests
