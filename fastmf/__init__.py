"""fastmf: fast matrix factorization of large sparse matrices on the CPU.

Compiled (numba) SGD kernels run over the observed entries of a sparse matrix;
thin scikit-learn-style classes handle input, initialization, convergence,
prediction and similarity.
"""

from . import datasets, exceptions, ids, io, metrics, model_selection
from ._base import MatrixFactorization
from ._config import show_config, warmup
from ._implicit import ImplicitMF
from ._models import BinaryMF, RealValueMF, mf
from ._persistence import load
from ._version import __version__
from .exceptions import (
    ConvergenceWarning,
    DivergenceError,
    ModelFileError,
    NotFittedError,
    SerialFallbackWarning,
)
from .ids import Dataset, IdMap
from .similarity import cosine_similarity

__all__ = [
    "BinaryMF",
    "ConvergenceWarning",
    "Dataset",
    "DivergenceError",
    "IdMap",
    "ImplicitMF",
    "MatrixFactorization",
    "ModelFileError",
    "NotFittedError",
    "RealValueMF",
    "SerialFallbackWarning",
    "__version__",
    "cosine_similarity",
    "datasets",
    "exceptions",
    "ids",
    "io",
    "load",
    "metrics",
    "mf",
    "model_selection",
    "show_config",
    "warmup",
]
