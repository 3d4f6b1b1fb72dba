"""Saving and loading fitted models as versioned ``.npz`` files, without pickle.

A model file holds plain numeric and unicode arrays only and is always read
with ``allow_pickle=False``: loading a file never executes code.
"""

import json
import math
import struct
import zipfile
import zlib
from numbers import Integral, Real

import numpy as np

from ._state import aligned_empty
from ._version import __version__
from .exceptions import ModelFileError
from .ids import IdMap

FORMAT = "fastmf-model"
FORMAT_VERSION = 1
_ARRAYS = (
    "user_factors_",
    "item_factors_",
    "user_bias_",
    "item_bias_",
    "loss_curve_",
    "seen_indptr_",
    "seen_items_",
)
_SCALARS = ("global_mean_", "n_iter_", "n_users_", "n_items_")
# Model classes by name, filled as they are defined (MatrixFactorization's
# subclass hook), so that loading needs no import of the models.
_MODEL_CLASSES = {}


def register_model_class(cls):
    """Make ``cls`` loadable by :func:`load` under its class name."""
    _MODEL_CLASSES[cls.__name__] = cls


def save_model(model, path):
    """Write a fitted ``model`` to ``path`` (``.npz``); see :meth:`MatrixFactorization.save`."""
    model._check_is_fitted()
    params = {}
    for name, value in model.get_params().items():
        if value is None or isinstance(value, (bool, str, Integral, Real)):
            params[name] = value.item() if isinstance(value, np.generic) else value
        else:
            # A Generator or RandomState seed has no file form; its use is over anyway.
            params[name] = None
    arrays = {name: getattr(model, name) for name in _ARRAYS}
    for name in ("user_map_", "item_map_"):
        id_map = getattr(model, name, None)
        if id_map is not None:
            arrays[name + "ids"] = id_map.ids_
    scalars = {name: np.asarray(getattr(model, name)) for name in _SCALARS}
    with open(path, "wb") as handle:
        np.savez(
            handle,
            format=np.array(FORMAT),
            format_version=np.array(FORMAT_VERSION),
            fastmf_version=np.array(__version__),
            model_class=np.array(type(model).__name__),
            params=np.array(json.dumps(params)),
            **arrays,
            **scalars,
        )


def load(path):
    """Load a model saved by :meth:`MatrixFactorization.save`.

    Parameters
    ----------
    path : str or path-like
        A ``.npz`` file written by ``save``.

    Returns
    -------
    RealValueMF or BinaryMF
        A fitted model: it predicts and computes similarities without the
        training data, bit-for-bit as the saved model did.

    Raises
    ------
    ModelFileError
        (a ``ValueError``) The file is not a fastmf model, is truncated or
        damaged, was written by a newer fastmf, holds arrays of the wrong
        shape or type, or parameters that are not finite or out of range.
        Everything is checked before use: array sizes are checked against
        the model's dimensions and the member's stored size before anything
        is allocated or inflated, and arrays are read with their header
        parsed here, never with pickle, so a file carrying pickled objects
        is rejected without running them.
    FileNotFoundError, PermissionError, IsADirectoryError
        ``path`` cannot be opened.
    """
    with open(path, "rb") as handle:  # errors about the path itself stay as they are
        try:
            contents = _read_model_archive(path, handle)
        except ModelFileError:
            raise
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            zlib.error,
            NotImplementedError,
            RuntimeError,
            EOFError,
            OSError,
            ValueError,
            KeyError,
            TypeError,
            struct.error,
            SyntaxError,
            UnicodeError,
            RecursionError,
        ) as error:
            raise ModelFileError(
                f"{path!s} is not a readable fastmf model file (truncated, corrupted, or not "
                f"written by fastmf): {type(error).__name__}: {error}"
            ) from None
    return _build_model(path, contents)


# Members of the file and how each is checked: dtype kinds allowed, and shape.
_TEXT = "U"
_MAX_SMALL_MEMBER_BYTES = 1 << 20  # markers, parameters and scalars
_MAX_INFLATION = 50  # a member may inflate at most this much (fastmf writes them uncompressed)
_MAX_RANK = 1 << 16
_MAX_DIMENSION = np.iinfo(np.int64).max // 16
# Any score mean + biases + dot product must stay finite in float32.
_MAX_SCORE = 1e38


def _read_model_archive(path, handle):
    """Read and check every member of a model file; return name -> ndarray."""
    if not zipfile.is_zipfile(handle):
        handle.seek(0)
        what = (
            "a single .npy array"
            if handle.read(6) == b"\x93NUMPY"
            else "not a complete zip (.npz) archive: truncated, corrupted, or another kind of file"
        )
        raise ModelFileError(
            f"{path!s} is not a readable fastmf model file: it is {what}. A fastmf model is "
            "written by model.save(path)."
        )
    handle.seek(0)
    with zipfile.ZipFile(handle) as archive:
        members = {}
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else None
            if name is None or name in members:
                raise ModelFileError(
                    f"{path!s} is not a fastmf model file: member {info.filename!r}."
                )
            members[name] = info
        if "format" not in members:
            raise ModelFileError(f"{path!s} is not a fastmf model file (no '{FORMAT}' marker).")
        reader = _MemberReader(path, archive, members)
        contents = {}
        if reader.text("format") != FORMAT:
            raise ModelFileError(f"{path!s} is not a fastmf model file (no '{FORMAT}' marker).")
        version = reader.integer("format_version")
        written_by = reader.text("fastmf_version")
        if version > FORMAT_VERSION or version < 1:
            raise ModelFileError(
                f"{path!s} was written in model format {version} by fastmf "
                f"{written_by}; this fastmf reads format {FORMAT_VERSION} "
                "and older. Upgrade fastmf to load it."
            )
        for name in ("model_class", "params"):
            contents[name] = reader.text(name)
        scalars = {name: reader.integer(name) for name in ("n_iter_", "n_users_", "n_items_")}
        for name, value in scalars.items():
            if not 0 <= value <= _MAX_DIMENSION:
                reader.damaged(f"{name} is {value}")
        contents.update(scalars)
        contents["global_mean_"] = reader.scalar("global_mean_", "f")
        m, n = scalars["n_users_"], scalars["n_items_"]
        user_factors = reader.array("user_factors_", np.float32, (m, None))
        k = user_factors.shape[1]
        contents["user_factors_"] = user_factors
        contents["item_factors_"] = reader.array("item_factors_", np.float32, (n, k))
        contents["user_bias_"] = reader.array("user_bias_", np.float32, (m,))
        contents["item_bias_"] = reader.array("item_bias_", np.float32, (n,))
        contents["loss_curve_"] = reader.array("loss_curve_", np.float64, (scalars["n_iter_"],))
        contents["seen_indptr_"] = reader.array("seen_indptr_", np.int64, (m + 1,))
        contents["seen_items_"] = reader.array("seen_items_", np.int32, (None,))
        for name, size in (("user_map_ids", m), ("item_map_ids", n)):
            if name in members:
                contents[name] = reader.array(name, None, (size,))
        unknown = set(members) - reader.read
        if unknown:
            reader.damaged(f"unexpected member(s) {sorted(unknown)}")
    return contents


class _MemberReader:
    """Reads ``.npy`` members of a model archive with every size checked first."""

    def __init__(self, path, archive, members):
        self.path, self.archive, self.members = path, archive, members
        self.read = set()

    def damaged(self, what):
        raise ModelFileError(f"{self.path!s} is a damaged fastmf model file: {what}.")

    def text(self, name):
        array = self.array(name, _TEXT, (), limit=_MAX_SMALL_MEMBER_BYTES)
        return str(array.item())

    def integer(self, name):
        array = self.array(name, "iu", (), limit=_MAX_SMALL_MEMBER_BYTES)
        return int(array.item())

    def scalar(self, name, kinds):
        array = self.array(name, kinds, (), limit=_MAX_SMALL_MEMBER_BYTES)
        return array.item()

    def array(self, name, dtype, shape, limit=None):
        """Read member ``name``, checking its header before reading any data.

        ``dtype``: a numpy type, a string of dtype kinds, or None (integers or
        text); ``shape``: the expected shape, None for a free dimension.
        """
        info = self.members.get(name)
        if info is None:
            self.damaged(f"{name} is missing")
        self.read.add(name)
        if limit is not None and info.file_size > limit:
            self.damaged(f"{name} is {info.file_size} bytes")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_INFLATION * max(
            info.compress_size, 1
        ):
            self.damaged(f"{name} would inflate {info.file_size / max(info.compress_size, 1):.0f}x")
        with self.archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(stream, max_header_size=10_000)
            elif version in ((2, 0), (3, 0)):
                header = np.lib.format.read_array_header_2_0(stream, max_header_size=10_000)
            else:
                self.damaged(f"{name} has .npy format {version}")
            stored_shape, fortran_order, stored_dtype = header
            if stored_dtype.hasobject:
                raise ModelFileError(
                    f"{self.path!s} is not a readable fastmf model file: {name} holds pickled "
                    "objects, which are never loaded."
                )
            self._check_type(name, stored_dtype, dtype, stored_shape, shape)
            count = math.prod(stored_shape)
            nbytes = count * stored_dtype.itemsize
            if nbytes != info.file_size - stream.tell():
                self.damaged(
                    f"{name} declares {stored_shape} {stored_dtype} but stores "
                    f"{info.file_size - stream.tell()} bytes"
                )
            data = stream.read(nbytes)
            if len(data) != nbytes:
                self.damaged(f"{name} is truncated")
        order = "F" if fortran_order else "C"
        array = np.frombuffer(data, dtype=stored_dtype, count=count).reshape(
            stored_shape, order=order
        )
        # Writable, C order, in memory of its own (not the file's buffer), on a cache line
        # like a fit's factors.
        copy = aligned_empty(array.shape, array.dtype)
        copy[...] = array
        return copy

    def _check_type(self, name, stored_dtype, dtype, stored_shape, shape):
        if isinstance(dtype, str):
            good = stored_dtype.kind in dtype and stored_dtype.isnative
        elif dtype is None:
            good = stored_dtype.kind in "iuU" and stored_dtype.isnative
        else:
            good = stored_dtype == np.dtype(dtype)
        fits = len(stored_shape) == len(shape) and all(
            want is None or got == want for got, want in zip(stored_shape, shape)
        )
        if len(shape) == 2 and fits and not 1 <= stored_shape[1] <= _MAX_RANK:
            fits = False
        if not (good and fits):
            self.damaged(f"{name} has dtype {stored_dtype} and shape {stored_shape}")


def _build_model(path, contents):
    """Check the values read from a model file and build the fitted model."""

    def damaged(what):
        raise ModelFileError(f"{path!s} is a damaged fastmf model file: {what}.")

    model_class = _MODEL_CLASSES.get(contents["model_class"])
    if model_class is None:
        damaged(f"unknown model class {contents['model_class']!r}")
    try:
        params = json.loads(contents["params"])
    except (ValueError, RecursionError) as error:
        damaged(f"params are not JSON ({type(error).__name__})")
    if not isinstance(params, dict) or not all(
        isinstance(value, (type(None), bool, int, float, str)) for value in params.values()
    ):
        damaged("params must map names to numbers, strings or null")
    try:
        model = model_class(**params)
        model._validated_params()
    except (TypeError, ValueError) as error:
        damaged(f"params: {error}")

    global_mean = contents["global_mean_"]
    if not isinstance(global_mean, float) or not abs(global_mean) < _MAX_SCORE:
        damaged(f"global_mean_ is {global_mean!r}")
    fitted = {name: contents[name] for name in _ARRAYS}
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        if not np.isfinite(fitted[name]).all():
            damaged(f"{name} is not finite")
    k = fitted["user_factors_"].shape[1]
    if model.k != k:
        damaged(f"params say k={model.k} but the factors have rank {k}")

    def largest(array):
        return float(np.abs(array).max()) if array.size else 0.0

    # Scores (mean + biases + dot product) and the squared norms that cosine
    # similarity takes must all stay finite in float32.
    user_largest, item_largest = largest(fitted["user_factors_"]), largest(fitted["item_factors_"])
    worst = max(
        abs(global_mean)
        + largest(fitted["user_bias_"])
        + largest(fitted["item_bias_"])
        + k * user_largest * item_largest,
        k * user_largest**2,
        k * item_largest**2,
    )
    if not worst < _MAX_SCORE:
        damaged("factors or biases so large that predictions would overflow float32")
    m, n = contents["n_users_"], contents["n_items_"]
    indptr, seen = fitted["seen_indptr_"], fitted["seen_items_"]
    if (
        indptr[0] != 0
        or indptr[-1] != seen.size
        or (np.diff(indptr) < 0).any()
        or (seen.size and (seen.min() < 0 or seen.max() >= n))
    ):
        damaged("bad seen-items index")
    maps = {}
    for name, size in (("user_map_", m), ("item_map_", n)):
        ids = contents.get(name + "ids")
        try:
            maps[name] = None if ids is None else IdMap.from_sorted_unique(ids)
        except (TypeError, ValueError) as error:
            damaged(f"{name}: {error}")
        if maps[name] is not None and len(maps[name]) != size:
            damaged(f"{name} has wrong size")
    scalars = {"global_mean_": global_mean, "n_iter_": contents["n_iter_"], "n_users_": m,
               "n_items_": n}  # fmt: skip
    model.__dict__.update(fitted, **scalars, **maps, val_curve_=None, best_epoch_=None)
    return model
