"""What a bug report needs: versions, threading, compile cache, CPU (``fastmf.show_config``)."""

import importlib.metadata
import os
import platform
import sys
import tempfile

import numba

from . import _jit
from ._version import __version__

_EXTRAS = ("dask", "distributed", "pyarrow", "tqdm", "matplotlib", "tbb")

# Fork and thread safety of numba's threading layers (numba's documentation),
# and what fastmf does about the unsafe cases (fastmf._jit.numba_threads).
_LAYER_SAFETY = {
    "tbb": ("fork-safe", "thread-safe"),
    "omp": ("not fork-safe with GNU OpenMP: serial in forked children", "thread-safe"),
    "workqueue": ("fork-safe", "not thread-safe: concurrent parallel fits run serially"),
}


def config():
    """Return the configuration as a dict of str -> str (see :func:`show_config`)."""
    info = {
        "fastmf": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in ("numba", "llvmlite", "numpy", "scipy"):
        info[name] = _version(name)
    for name in _EXTRAS:
        info[f"{name} (optional)"] = _version(name)
    layer = _jit.threading_layer()
    if layer is None:
        layer_text = (
            f"not chosen yet (numba picks it at the first parallel fit; "
            f"NUMBA_THREADING_LAYER={numba.config.THREADING_LAYER})"
        )
        safety = "fork-safe until then (no thread pool)"
    else:
        fork, thread = _LAYER_SAFETY.get(layer, ("unknown", "unknown"))
        layer_text, safety = layer, f"{fork}; {thread}"
    info["threading layer"] = layer_text
    info["threading safety"] = safety
    info["threads"] = f"{_jit.max_threads()} (NUMBA_NUM_THREADS; n_threads=None uses all)"
    info["thread pool started"] = str(_jit.pool_started())
    from ._kernels import predict_coo

    cache = getattr(predict_coo._cache, "_cache_path", None)  # where numba put this module's
    if cache is None:
        info["compile cache"] = "none writable: kernels compile in memory, once per process"
    else:
        info["compile cache"] = f"{cache} ({'writable' if _writable(cache) else 'not writable'})"
    info["cpu"] = _cpu_name()
    info["simd"] = _simd()
    return info


def show_config(file=None):
    """Print fastmf's configuration: versions, threading layer, cache, CPU.

    Paste the output into a bug report. Does not start numba's thread pool or
    compile anything. Also ``python -m fastmf info``.

    Parameters
    ----------
    file : file-like, optional
        Where to print; standard output by default.
    """
    info = config()
    width = max(len(key) for key in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}", file=file or sys.stdout)


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _writable(folder):
    probe = folder
    while not os.path.isdir(probe):  # the cache folder is made on first use
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            return True
    except OSError:
        return False


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _simd():
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if features.get("avx512f"):
        width = "512-bit (AVX-512)"
    elif features.get("avx2"):
        width = "256-bit (AVX2)"
    elif features.get("avx"):
        width = "256-bit (AVX)"
    elif features.get("neon") or features.get("sse2"):
        width = "128-bit"
    else:
        width = "unknown"
    return f"{width}; LLVM target {llvm.get_host_cpu_name()}"


def warmup(models=None, n_threads=None, background=False, large=False, **params):
    """Compile the kernels a default fit needs now, instead of at the first real fit.

    For services that want to pay the compile time at start-up. Fits each
    model once on a tiny generated matrix with the given hyperparameters (the
    kernels are specialized on them: ``biases``, ``learning_rate``, whether
    ``n_threads`` is 1, and ``k`` where it has kernels of its own, as the
    default 32 and 16 do), then recommends for its users and finds an
    item's neighbours; the compiled code also goes to numba's cache.

    Parameters
    ----------
    models : list of model classes, optional
        Default: :class:`fastmf.RealValueMF`, :class:`fastmf.BinaryMF` and
        :class:`fastmf.ImplicitMF`.
    n_threads : int or None, default=None
        As in the models; 1 compiles the serial kernels only.
    background : bool, default=False
        Compile in a daemon thread and return it at once (``join()`` waits).
    large : bool, default=False
        Also compile what fits of 100,000 ratings or more run (the threaded
        block layout, the grouped kernels, recommending for more than 64
        users and all-pairs neighbours on threads; about 5-12 s per model on the
        2-core dev machine), by fitting a generated matrix of that size for
        one epoch. Without it, only the small-fit path is compiled.
    **params
        Other hyperparameters to compile for (e.g. ``learning_rate="adagrad"``).

    Returns
    -------
    threading.Thread or None
        The compiling thread when ``background``, else None.
    """
    if models is None:
        from ._implicit import ImplicitMF
        from ._models import BinaryMF, RealValueMF

        models = (RealValueMF, BinaryMF, ImplicitMF)
    models = list(models)

    def compile_all():
        import numpy as np

        from ._losses import SMALL_FIT_RATINGS

        sizes = [(8, 4)] + ([(SMALL_FIT_RATINGS // 100, 100)] if large else [])
        for n_users, per_user in sizes:
            # Distinct (user, item) pairs, each user rating `per_user` items.
            rows = np.repeat(np.arange(n_users), per_user)
            cols = (rows * 3 + np.tile(np.arange(per_user), n_users)) % per_user
            labels = np.where((rows + cols) % 2 == 0, 1.0, -1.0)
            for model_class in models:
                values = labels if model_class()._loss.binary else labels + 3.0
                settings = {"n_epochs": 1, "tol": None, "random_state": 0, **params}
                model = model_class(n_threads=n_threads, **settings)
                model.fit((rows, cols, values), shape=(n_users, per_user))
                # Batches of more than 64 users recommend on numba's threads.
                model.recommend(np.arange(n_users), n=2)
                model.similar_items(0, n=1)
                # A batch of half the rows or more scores all pairs (threaded above 256 rows).
                model.similar_users(np.arange(n_users), n=1)

    if not background:
        compile_all()
        return None
    import threading

    thread = threading.Thread(target=compile_all, name="fastmf-warmup", daemon=True)
    thread.start()
    return thread
