"""Saving and loading fitted models as versioned ``.npz`` files, without pickle.

A model file holds plain numeric and unicode arrays only and is always read
with ``allow_pickle=False``: loading a file never executes code.
"""

import json
import zipfile
from numbers import Integral, Real

import numpy as np

from ._version import __version__
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
    ValueError
        The file is not a fastmf model, is truncated or corrupted, was written
        by a newer fastmf, or holds arrays of the wrong shape or type. Files
        are read with ``allow_pickle=False``, so a file carrying pickled
        objects is rejected without running them.
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            contents = {name: stored[name] for name in stored.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(
            f"{path!s} is not a readable fastmf model file (truncated, corrupted, or holding "
            f"pickled objects, which are never loaded): {error}"
        ) from None
    if contents.get("format", np.array("")).item() != FORMAT:
        raise ValueError(f"{path!s} is not a fastmf model file (no '{FORMAT}' marker).")
    version = int(contents["format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path!s} was written in model format {version} by fastmf "
            f"{contents['fastmf_version'].item()}; this fastmf reads format {FORMAT_VERSION} "
            "and older. Upgrade fastmf to load it."
        )
    try:
        model_class = _MODEL_CLASSES[contents["model_class"].item()]
        model = model_class(**json.loads(contents["params"].item()))
        fitted = {name: contents[name] for name in _ARRAYS}
        scalars = {name: contents[name].item() for name in _SCALARS}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path!s} is a damaged fastmf model file: {error!r}") from None
    _check_fitted_arrays(path, fitted, scalars)
    maps = {}
    for name, size in (("user_map_", scalars["n_users_"]), ("item_map_", scalars["n_items_"])):
        ids = contents.get(name + "ids")
        try:
            maps[name] = None if ids is None else IdMap.from_sorted_unique(ids)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path!s} is a damaged fastmf model file: {error}") from None
        if maps[name] is not None and len(maps[name]) != size:
            raise ValueError(f"{path!s} is a damaged fastmf model file: {name} has wrong size.")
    model.__dict__.update(fitted, **scalars, **maps, val_curve_=None, best_epoch_=None)
    return model


def _check_fitted_arrays(path, fitted, scalars):
    m, n = scalars["n_users_"], scalars["n_items_"]
    expected = {
        "user_factors_": (np.float32, 2, m),
        "item_factors_": (np.float32, 2, n),
        "user_bias_": (np.float32, 1, m),
        "item_bias_": (np.float32, 1, n),
        "loss_curve_": (np.float64, 1, scalars["n_iter_"]),
    }
    for name, (dtype, ndim, rows) in expected.items():
        array = fitted[name]
        if array.dtype != dtype or array.ndim != ndim or array.shape[0] != rows:
            raise ValueError(
                f"{path!s} is a damaged fastmf model file: {name} has dtype {array.dtype} "
                f"and shape {array.shape}."
            )
    indptr, seen = fitted["seen_indptr_"], fitted["seen_items_"]
    if (
        indptr.dtype != np.int64
        or indptr.shape != (m + 1,)
        or seen.dtype != np.int32
        or indptr[0] != 0
        or indptr[-1] != seen.size
        or (np.diff(indptr) < 0).any()
        or (seen.size and (seen.min() < 0 or seen.max() >= n))
    ):
        raise ValueError(f"{path!s} is a damaged fastmf model file: bad seen-items index.")
    if fitted["user_factors_"].shape[1] != fitted["item_factors_"].shape[1]:
        raise ValueError(f"{path!s} is a damaged fastmf model file: factor ranks differ.")
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        if not np.isfinite(fitted[name]).all():
            raise ValueError(f"{path!s} is a damaged fastmf model file: {name} is not finite.")
