"""The training state (factors, biases, AdaGrad accumulators) and how it starts.

:func:`normal_factors` is the one initializer of fit and partial_fit (the
notebook-compatible :func:`fastmf.mf` draws :func:`uniform_factors` instead).
A :class:`TrainingState` holds the arrays a fit updates, in the layout's
internal order while training, and knows how to move between the two orders.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._blocks import inverse_permutation, permute_rows

# Factor matrices start on a cache line: numpy's large arrays start 16 bytes
# past one, so that every row of k=32 floats spans three lines instead of two.
# Aligned, an SGD epoch ran 3-12% faster (k=32 and 128, side by side).
CACHE_LINE = 64


def aligned_empty(shape, dtype=np.float32):
    """Return an uninitialized C-contiguous array whose data starts on a 64-byte boundary."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start : start + size].view(dtype).reshape(shape)


def is_aligned(array):
    """Whether ``array``'s data starts on a cache line."""
    return array.ctypes.data % CACHE_LINE == 0


# Factor rows drawn per generator. Each chunk of rows has its own generator,
# seeded from the fit's ``rng``, so chunks can be drawn on threads (numpy
# releases the GIL while it fills an array) with the same bits for any thread
# count. 200k x 32 factors: 28-30 ms on two threads against 57 ms on one.
NORMAL_CHUNK_ROWS = 16384


def normal_factors(rng, n_rows, k, init_scale, n_threads=1):
    """Draw ``n_rows`` factor rows from N(0, init_scale**2 / k), float32, C-contiguous.

    The rows start on a cache line (:func:`aligned_empty`). Rows
    ``c * NORMAL_CHUNK_ROWS`` onwards are ``standard_normal`` draws of a
    PCG64 generator seeded with the ``c``-th of the integers drawn from
    ``rng`` first (one per chunk); ``n_threads`` chunks are drawn at a time,
    which changes no bit.
    """
    factors = aligned_empty((n_rows, k))
    starts = range(0, n_rows, NORMAL_CHUNK_ROWS)
    seeds = rng.integers(0, np.iinfo(np.int64).max, size=len(starts), dtype=np.int64)
    scale = np.float32(float(init_scale) / float(np.sqrt(k)))

    def draw(chunk):
        rows = factors[starts[chunk] : starts[chunk] + NORMAL_CHUNK_ROWS]
        generator = np.random.Generator(np.random.PCG64(int(seeds[chunk])))
        generator.standard_normal(dtype=np.float32, out=rows)
        rows *= scale

    if n_threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=min(n_threads, len(starts))) as pool:
            list(pool.map(draw, range(len(starts))))
    else:
        for chunk in range(len(starts)):
            draw(chunk)
    return factors


def uniform_factors(rng, n_rows, k, use_global_numpy):
    """Draw ``n_rows`` factor rows from U[0, 1), float32, as the reference notebook does.

    With ``use_global_numpy``, from numpy's global generator (so that
    ``np.random.seed`` repeats a run, as in the notebook); else from ``rng``.
    """
    if use_global_numpy:
        return np.random.rand(n_rows, k).astype(np.float32)  # noqa: NPY002
    return rng.random((n_rows, k), dtype=np.float32)


def _aligned_copy(array):
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return copy


@dataclass
class TrainingState:
    """The arrays one fit updates in place; the optional ones are None when unused.

    Attributes
    ----------
    user_factors, item_factors : ndarray of float32, shape (n, k)
    user_bias, item_bias : ndarray of float32, shape (n,), or None without biases
    user_acc, item_acc : ndarray of float32, shape (n,), or None without AdaGrad
        AdaGrad's per-row accumulators of squared gradients.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray | None = None
    item_bias: np.ndarray | None = None
    user_acc: np.ndarray | None = None
    item_acc: np.ndarray | None = None

    # The learned parameters (what the best validation epoch keeps), then the rest.
    PARAMETERS = ("user_factors", "item_factors", "user_bias", "item_bias")
    NAMES = (*PARAMETERS, "user_acc", "item_acc")

    @classmethod
    def start(
        cls, layout, user_factors, item_factors, biases, adagrad, warm_biases=None, drawn=False
    ):
        """Build the state of a fit on ``layout`` from factors in original order (taken over).

        The factor rows are reordered in place into the layout's internal order,
        unless they were ``drawn`` at random for this fit: i.i.d. rows are as
        random in either order, so internal row ``r`` simply keeps drawn row ``r``.
        Biases start at 0 (or at ``warm_biases``, in original order, for a warm
        start); AdaGrad accumulators start at 1, as in LIBMF, so that the first
        steps are at most ``lr``. Factors that do not start on a cache line
        (a warm start's) are copied to ones that do.
        """
        user_factors, item_factors = (
            factors if is_aligned(factors) else _aligned_copy(factors)
            for factors in (user_factors, item_factors)
        )
        if not drawn:
            permute_rows(user_factors, layout.user_perm)
            permute_rows(item_factors, layout.item_perm)
        state = cls(user_factors, item_factors)
        m, n = user_factors.shape[0], item_factors.shape[0]
        if biases:
            if warm_biases is None:
                state.user_bias = np.zeros(m, dtype=np.float32)
                state.item_bias = np.zeros(n, dtype=np.float32)
            else:
                state.user_bias = warm_biases[0][layout.user_perm]
                state.item_bias = warm_biases[1][layout.item_perm]
        if adagrad:
            state.user_acc = np.ones(m, dtype=np.float32)
            state.item_acc = np.ones(n, dtype=np.float32)
        return state

    def arrays(self):
        """All six arrays (None where unused), in :attr:`NAMES` order: the kernels' order."""
        return tuple(getattr(self, name) for name in self.NAMES)

    def copy_parameters(self, into=None):
        """Return copies of the learned parameters, in :attr:`PARAMETERS` order.

        ``into``, a list an earlier call returned, is filled and returned
        instead of allocating new arrays (a new best epoch after another).
        """
        if into is None:
            return [None if a is None else a.copy() for a in self.arrays()[:4]]
        for array, kept in zip(self.arrays()[:4], into):
            if array is not None:
                np.copyto(kept, array)
        return into

    def restore_parameters(self, saved):
        """Copy parameters saved by :meth:`copy_parameters` back into this state's arrays."""
        for array, kept in zip(self.arrays()[:4], saved):
            if array is not None:
                np.copyto(array, kept)

    def fitted(self, layout):
        """Return factors and biases in original id order (zeros for absent biases).

        Reorders the factor arrays in place: call once, at the end of training.
        """
        user_new = inverse_permutation(layout.user_perm)
        item_new = inverse_permutation(layout.item_perm)
        permute_rows(self.user_factors, user_new)
        permute_rows(self.item_factors, item_new)
        m, n = self.user_factors.shape[0], self.item_factors.shape[0]
        biases = self.user_bias is not None
        return {
            "user_factors_": self.user_factors,
            "item_factors_": self.item_factors,
            "user_bias_": self.user_bias[user_new] if biases else np.zeros(m, np.float32),
            "item_bias_": self.item_bias[item_new] if biases else np.zeros(n, np.float32),
        }
