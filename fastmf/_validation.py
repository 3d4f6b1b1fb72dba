"""The input boundary: any accepted input becomes checked, contiguous COO arrays.

Kernels do no bounds checks, so everything a kernel will index with is checked
here, once, before the first kernel call.
"""

import os
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import scipy.sparse as sp

DUPLICATE_POLICIES = ("raise", "sum", "last")
# An inferred shape may exceed the entries by this much (ids with no data get
# factors too) before the ids are taken for raw ids rather than indices.
INFERRED_DIMENSION_SLACK = 1_000_000
INFERRED_DIMENSION_PER_ENTRY = 10


@dataclass(frozen=True)
class Coo:
    """Checked COO data, ready for the kernels.

    Attributes
    ----------
    rows, cols : ndarray of int32 or int64, shape (nnz,), every id below ``shape``
    values : ndarray of float32, shape (nnz,), all finite
    shape : tuple of two ints

    Duplicate (row, col) pairs may remain; :func:`fastmf._blocks.arrange` resolves them.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple

    @property
    def nnz(self):
        """Number of observed entries."""
        return self.rows.shape[0]


def check_sample_weight(sample_weight, data, duplicates):
    """Return ``sample_weight`` as float32 weights, one per entry of ``data`` (a Coo), or raise.

    They must be finite, non-negative and not all zero; sharded input and
    ``duplicates="sum"`` take none.
    """
    if not hasattr(data, "values") or data.values is None:
        raise ValueError(
            "sample_weight is not supported with sharded Dask input; put the weights in the "
            "values, or fit in-memory data."
        )
    if duplicates == "sum":
        raise ValueError(
            "sample_weight with duplicates='sum' is ambiguous (which weight does a merged "
            "entry take?); merge the duplicates first, or use duplicates='last'."
        )
    weights = np.asarray(sample_weight)
    if weights.dtype == object or weights.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must hold numbers, got dtype {weights.dtype}.")
    if weights.ndim != 1 or weights.shape[0] != data.nnz:
        raise ValueError(
            f"sample_weight must be 1-D with one weight per entry of X ({data.nnz}); got "
            f"shape {weights.shape}."
        )
    weights = weights.astype(np.float32)
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"sample_weight must be finite and >= 0; entry {at} is {float(weights[at])!r} "
            f"({int(bad.sum())} bad weight(s))."
        )
    if not weights.any():
        raise ValueError("sample_weight is all zeros: nothing would be learned.")
    return weights


def check_coo(X, shape=None, *, duplicates="raise"):
    """Turn ``X`` into checked :class:`Coo` arrays.

    Parameters
    ----------
    X : array_like of shape (m, n), scipy.sparse matrix or array, or tuple
        A dense matrix whose non-zero entries are the observations (0 means
        missing, as in the reference notebook); a sparse matrix whose stored
        entries are the observations (explicit zeros included); or a tuple
        ``(rows, cols, values)`` of equal-length 1-D arrays.
    shape : tuple of two ints, optional
        ``(n_users, n_items)``. For triplets it defaults to one more than the
        largest row and column index; for matrices it must equal ``X.shape``.
    duplicates : {"raise", "sum", "last"}, default="raise"
        Checked here; duplicate pairs are found and resolved when the entries
        are arranged in blocks (:mod:`fastmf._blocks`), which sorts them anyway.

    Returns
    -------
    Coo
    """
    check_duplicates_policy(duplicates)
    if shape is not None:
        shape = check_shape(shape)

    if isinstance(X, tuple):
        if len(X) != 3:
            raise ValueError(
                f"A tuple input must be (rows, cols, values); got a tuple of length {len(X)}. "
                "Pass a dense matrix as a numpy array, not a tuple."
            )
        rows, cols, values = (_as_1d(a, name) for a, name in zip(X, ("rows", "cols", "values")))
        if not (rows.shape[0] == cols.shape[0] == values.shape[0]):
            raise ValueError(
                f"rows, cols and values must have the same length; got {rows.shape[0]}, "
                f"{cols.shape[0]} and {values.shape[0]}."
            )
    elif sp.issparse(X):
        _check_matrix_shape(X.shape, shape)
        shape = X.shape
        coo = X.tocoo()
        rows, cols, values = coo.row, coo.col, coo.data
    else:
        if isinstance(X, (str, bytes, dict, set)) or X is None:
            raise TypeError(
                f"Cannot factorize a {type(X).__name__}: pass a 2-D numpy array, a "
                "scipy.sparse matrix, or a (rows, cols, values) tuple."
            )
        dense = np.asarray(X)
        if dense.ndim != 2:
            raise ValueError(
                f"A dense input must be 2-D (users x items); got {dense.ndim} dimension(s) "
                f"with shape {dense.shape}. For COO data pass a (rows, cols, values) tuple."
            )
        _check_matrix_shape(dense.shape, shape)
        shape = dense.shape
        _check_value_dtype(dense, "X")
        if dense.dtype.kind == "f":
            bad = ~np.isfinite(dense)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ValueError(
                    f"X contains NaN or infinity (first at row {r}, column {c}: "
                    f"{dense[r, c]}). In a dense input 0 marks a missing entry: replace "
                    "NaN by 0, or pass a sparse matrix or (rows, cols, values) tuple."
                )
        rows, cols = np.nonzero(dense)
        values = dense[rows, cols]

    if rows.shape[0] == 0:
        raise ValueError(
            "The input has no observed entries: there is nothing to factorize. "
            "In a dense matrix observations are the non-zero entries."
        )
    rows = _check_indices(rows, "rows", "row")
    cols = _check_indices(cols, "cols", "column")
    values = _check_values(values)

    if shape is None:
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
        for idx, dim, what in ((rows, shape[0], "row"), (cols, shape[1], "column")):
            if dim > INFERRED_DIMENSION_SLACK + INFERRED_DIMENSION_PER_ENTRY * idx.shape[0]:
                raise ValueError(
                    f"The data has a {what} id of {dim - 1} but only {idx.shape[0]} entries: "
                    f"the inferred shape would give {dim} {what}s, nearly all without data, "
                    "each with a row of factors. If the ids are raw ids (user or item numbers "
                    "from a database), map them to 0..n-1 with fastmf.Dataset; if they are "
                    "really indices, pass shape= explicitly."
                )
    else:
        for idx, dim, what, axis in ((rows, shape[0], "row", 0), (cols, shape[1], "column", 1)):
            top = int(idx.max())
            if top >= dim:
                raise ValueError(
                    f"{what} index {top} is out of range for shape {shape} (axis {axis} has "
                    f"{dim} entries). Pass a larger shape, or omit it to infer it."
                )

    # int32 and int64 ids pass through without a copy; other integer types are
    # widened so that the kernels compile for two index types only.
    rows, cols = (
        idx
        if idx.dtype in (np.int32, np.int64) and idx.flags.c_contiguous
        else np.ascontiguousarray(idx, dtype=np.int64)
        for idx in (rows, cols)
    )
    return Coo(rows, cols, np.ascontiguousarray(values, dtype=np.float32), shape)


def repeated_pairs(rows, cols, n_cols):
    """Find (row, col) pairs given more than once.

    Returns ``(count, first, second)``: how many entries repeat an earlier
    pair, and the positions (in input order) of the first repeated pair's two
    entries (None, None when there are none).
    """
    keys = np.asarray(rows, dtype=np.int64) * max(int(n_cols), 1) + np.asarray(cols)
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if repeated.size == 0:
        return 0, None, None
    return int(repeated.size), int(order[repeated[0]]), int(order[repeated[0] + 1])


def check_duplicates_policy(duplicates):
    """Raise ValueError unless ``duplicates`` is one of :data:`DUPLICATE_POLICIES`."""
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}.")


def check_binary_labels(values, labels):
    """Map binary responses to float32 {-1, +1}.

    Parameters
    ----------
    values : ndarray of float32, shape (nnz,)
    labels : {"pm1", "01"}
        "pm1" accepts exactly {-1, +1}; "01" accepts exactly {0, 1} (0 becomes -1).

    Returns
    -------
    ndarray of float32, shape (nnz,), values in {-1, +1}
    """
    accepted = {"pm1": (-1.0, 1.0), "01": (0.0, 1.0)}
    if labels not in accepted:
        raise ValueError(f"labels must be 'pm1' or '01', got {labels!r}.")
    negative, positive = accepted[labels]
    bad = (values != negative) & (values != positive)
    if bad.any():
        where = int(np.flatnonzero(bad)[0])
        found = np.unique(values[bad])[:5]
        hint = (
            " For {0, 1} labels in a sparse matrix or triplets, pass labels='01'."
            if labels == "pm1" and np.all(np.isin(values, (0.0, 1.0)))
            else ""
        )
        raise ValueError(
            f"Binary responses must be {negative:g} or {positive:g} (labels={labels!r}); "
            f"found {found.tolist()} (first at entry {where}).{hint}"
        )
    if labels == "01":
        return np.where(values == positive, np.float32(1.0), np.float32(-1.0))
    return values


def check_pairs(rows, cols, shape):
    """Check (user, item) query pairs against a fitted shape.

    Returns
    -------
    rows, cols : ndarray of int64, broadcast to a common shape and flattened
    out_shape : tuple, the broadcast shape of the inputs
    """
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    try:
        rows, cols = np.broadcast_arrays(rows, cols)
    except ValueError:
        raise ValueError(
            f"rows and cols must have the same shape (or broadcast); got {rows.shape} "
            f"and {cols.shape}."
        ) from None
    out_shape = rows.shape
    flat_rows = _check_indices(rows.ravel(), "rows", "user")
    flat_cols = _check_indices(cols.ravel(), "cols", "item")
    for idx, dim, what in ((flat_rows, shape[0], "user"), (flat_cols, shape[1], "item")):
        if idx.size and idx.max() >= dim:
            raise ValueError(
                f"{what} id {int(idx.max())} is out of range: the model was fitted with "
                f"{dim} {what}s (ids 0 to {dim - 1})."
            )
    return (
        np.ascontiguousarray(flat_rows, dtype=np.int64),
        np.ascontiguousarray(flat_cols, dtype=np.int64),
        out_shape,
    )


def check_index(index, size, what):
    """Return ``index`` as a Python int after checking ``0 <= index < size``."""
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, Integral):
        raise TypeError(f"{what} id must be an integer, got {index!r}.")
    if not 0 <= index < size:
        raise ValueError(
            f"{what} id {index} is out of range: the model has {size} {what}s "
            f"(ids 0 to {size - 1})."
        )
    return int(index)


def _as_1d(a, name):
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    return arr


def check_random_state(random_state):
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    ``None`` draws a seed from numpy's global generator (so ``np.random.seed``
    makes the run repeatable, as in the reference notebook); an int seeds a new
    generator; a ``Generator`` is used as is (and advanced); a ``RandomState``
    is advanced to draw a seed.
    """
    if random_state is None:
        return np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))  # noqa: NPY002
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**63 - 1, dtype=np.int64))
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be non-negative, got {random_state}.")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int, a numpy Generator or a RandomState; "
        f"got {random_state!r}."
    )


def check_shape(shape):
    """Return ``shape`` as a pair of non-negative ints, or raise a ValueError."""
    try:
        m, n = shape
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (n_users, n_items), got {shape!r}.") from None
    for dim in (m, n):
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, Integral) or dim < 1:
            raise ValueError(
                f"shape must hold two positive integers (n_users, n_items), got {shape!r}."
            )
    return (int(m), int(n))


def _check_matrix_shape(actual, given):
    if given is not None and tuple(actual) != given:
        raise ValueError(
            f"shape={given} does not match the matrix's shape {tuple(actual)}; "
            "shape is only needed for (rows, cols, values) input."
        )


def _check_value_dtype(arr, name):
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers; got dtype {arr.dtype}. Convert it with "
            ".astype(float) if its entries are numeric."
        )


def _check_values(values):
    _check_value_dtype(values, "values")
    with np.errstate(over="ignore"):  # overflow is reported below, with context
        as_float32 = np.asarray(values, dtype=np.float32)
    bad = ~np.isfinite(as_float32)
    if bad.any():
        where = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"values contain NaN or infinity (first at entry {where}: {values[where]!r}; "
            "values are stored as float32, so magnitudes above 3.4e38 overflow). "
            "Drop or impute those entries before fitting."
        )
    return as_float32


def _check_indices(idx, name, what):
    kind = idx.dtype.kind
    if kind in "iu":
        pass
    elif kind == "f":
        integral = np.isfinite(idx) & (idx == np.round(idx))
        if not integral.all():
            where = int(np.flatnonzero(~integral)[0])
            raise ValueError(
                f"{name} must hold integer {what} ids; entry {where} is {idx[where]!r}."
            )
        too_large = np.abs(idx) >= 2.0**63
        if too_large.any():
            where = int(np.flatnonzero(too_large)[0])
            raise ValueError(
                f"{name} contains a {what} id too large for int64 ({float(idx[where]):g} at entry "
                f"{where}). Map raw ids to 0..n-1 with fastmf.Dataset."
            )
        idx = idx.astype(np.int64)
    else:
        raise TypeError(f"{name} must hold integer {what} ids; got dtype {idx.dtype}.")
    if idx.size and kind != "u" and int(idx.min()) < 0:
        where = int(np.flatnonzero(idx < 0)[0])
        raise ValueError(
            f"{name} contains a negative {what} id ({int(idx[where])} at entry {where}); "
            "ids must be 0-based and non-negative."
        )
    if kind == "u" and idx.size and int(idx.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} contains a {what} id too large for int64.")
    return idx


def check_factor_memory(shape, k):
    """Raise a ValueError when the factor matrices of ``shape`` at rank ``k`` cannot fit in RAM."""
    needed = (shape[0] + shape[1]) * (k + 2) * 4  # factors, biases, AdaGrad accumulators
    available = _physical_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"The model would need {needed / 2**30:.1f} GiB for its factors ({shape[0]} users + "
            f"{shape[1]} items, k={k}), more than this machine's {available / 2**30:.1f} GiB of "
            "memory. Use a smaller k or shape, or fastmf.Dataset if the ids are raw ids."
        )


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
