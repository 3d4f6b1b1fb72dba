"""The one place numba is configured.

Every kernel in :mod:`fastmf._kernels` is decorated with :func:`kernel`, so the
compilation options live here and nowhere else.

- ``cache=True``: compiled machine code is written next to the module (or to
  ``NUMBA_CACHE_DIR``) so that only the first import on a machine pays the
  compile time.
- ``nogil=True``: a caller may run fits in Python threads concurrently.
- ``fastmath={"reassoc", "contract"}``: the two flags the dot product and the
  factor updates need to vectorize (SIMD) and use fused multiply-add. The full
  ``fastmath=True`` would also assume no NaN/inf ("nnan", "ninf"), which would
  let LLVM delete the finiteness checks that catch a diverging run.
- ``error_model="numpy"``: division follows IEEE rules instead of raising
  ``ZeroDivisionError``, which keeps the inner loops free of branches.

Bounds checking stays at numba's default (off, unless ``NUMBA_BOUNDSCHECK=1``
is set in the environment, as the CI does once): indices are validated in
Python before any kernel runs.
"""

import numba

FASTMATH_FLAGS = frozenset({"reassoc", "contract"})


def kernel(func):
    """Compile ``func`` lazily with fastmf's numba options.

    Each distinct dtype signature is compiled once per process (and cached on
    disk across processes).
    """
    return numba.njit(
        cache=True,
        nogil=True,
        fastmath=set(FASTMATH_FLAGS),
        error_model="numpy",
    )(func)
