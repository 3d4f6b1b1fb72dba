"""Exceptions and warnings raised by fastmf."""

__all__ = [
    "ConvergenceWarning",
    "DivergenceError",
    "ModelFileError",
    "NotFittedError",
    "SerialFallbackWarning",
]


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    Subclasses both ``ValueError`` and ``AttributeError``, like scikit-learn's
    exception of the same name, so code written for either keeps working.
    """


class ConvergenceWarning(UserWarning):
    """``fit`` stopped at ``n_epochs`` before the objective met ``tol``."""


class DivergenceError(FloatingPointError):
    """Training produced a non-finite objective or non-finite factors.

    The model is left as it was before the failed ``fit``. A smaller learning
    rate (``lr``) or a larger ``l2`` usually fixes it.
    """


class SerialFallbackWarning(RuntimeWarning):
    """A fit ran on one thread although more were asked for, because more would be unsafe.

    Given once per process and reason: in a child process forked after the
    parent started numba's GNU OpenMP thread pool (which would abort the
    child), and when numba's thread pool is not thread-safe (the
    ``workqueue`` layer) and another parallel fit is running. The result is
    the same bits either way; only the speed differs.
    """


class ModelFileError(ValueError):
    """:func:`fastmf.load` was given a file that is not a usable fastmf model.

    Raised for damaged, truncated, foreign, hostile or newer files, with the
    file's name and what is wrong; the file is never unpickled. A
    ``ValueError``, so code that caught ``ValueError`` keeps working.
    """
