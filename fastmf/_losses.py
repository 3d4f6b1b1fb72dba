"""What a loss is: the one definition of each per-entry loss fastmf trains.

A :class:`Loss` holds everything that differs between losses: its compiled
block kernels (SGD and data loss), the block layout it trains on, whether
values are centred on their mean, which values it accepts, its validation
metric and its fold-in solver. A model names its loss (``_loss = SQUARED``);
nothing else switches on which loss it is. A loss's kernels come as
:class:`KernelSet` objects, compile-time choices of the epoch kernels
(:class:`fastmf._jit.CompileTimeChoice`), so a fit compiles only its own
loss's code.

Adding a loss: write its two block kernels in :mod:`fastmf._kernels` (SGD over
``start:end`` and the data loss), define it here, and name it in a model.
"""

import numpy as np
from scipy.special import expit

from . import _kernels
from ._jit import CompileTimeChoice
from ._kernels import LANES

# Row widths with kernels of their own, where the row length is a compile-time
# constant and LLVM unrolls the loops over a row. Each width compiles its own
# kernels, so only where it pays. Side by side (the bench's 10M ratings, biases,
# median seconds, constant step / AdaGrad; bench/README.md, session 17), squared,
# one thread: k=32 0.127 / 0.196 against 0.172 / 0.221 for the general kernels
# (two threads, before the vector update: 0.064 / 0.108 against 0.095 / 0.122);
# k=16 0.105 / 0.172 against 0.136 / 0.184. At k=64 the AdaGrad epoch gained
# nothing (0.429 against 0.415) and at k=128 both were slower (0.593 / 0.787
# against 0.531 / 0.645).
FIXED_ROW_WIDTHS = (16, 32)

# Fits of fewer ratings use a loss's small kernels, which give the same bits
# and compile faster (the squared loss has one set for all sizes), and run on
# one thread: for them, compile time and thread start-up outweigh the epochs.
SMALL_FIT_RATINGS = 100_000


class KernelSet(CompileTimeChoice):
    """A loss's two block kernels, as one compile-time choice of the epoch kernels.

    Attributes
    ----------
    sgd_block, block_loss : numba kernels
        SGD over entries ``start:end`` in storage order, and their data loss
        (float64); see :mod:`fastmf._kernels`.
    row_width : int or None
        The number of factors these kernels are compiled for, a compile-time
        constant (:func:`fastmf._kernels.row_length`); None: any, read from
        the factor matrices.
    """

    def __init__(self, name, sgd_block, block_loss, row_width=None):
        super().__init__(name)
        self.sgd_block, self.block_loss = sgd_block, block_loss
        self.row_width = row_width

    def with_row_width(self, width):
        """Return this set compiled for rows of exactly ``width`` factors (a set of its own)."""
        return KernelSet(f"{self.name}/k={width}", self.sgd_block, self.block_loss, width)

    def __repr__(self):
        return f"KernelSet({self.name!r})"


class Loss:
    """One per-entry loss and everything fastmf does differently for it.

    Attributes
    ----------
    name : str
        ``"squared"``, ``"logistic"``, ``"bpr"`` or ``"implicit-logistic"``:
        the CLI's ``--loss``.
    kernels : KernelSet
        The block kernels of a fit; :meth:`kernels_for` picks per fit size
        and row width.
    interleave : int
        Parts per block that the layout takes in turn (the kernel's number of
        independent update chains; see :mod:`fastmf._blocks`).
    centred : bool
        With biases, train on values minus their mean (the model's
        ``global_mean_``); otherwise the global term is 0.
    binary : bool
        Whether the values are labels -1 and +1 (so ``duplicates="sum"``
        makes no sense; the CLI's ``--threshold`` makes labels from ratings).
    metric_name : str
        The validation metric (``val_curve_`` holds it): lower is better,
        except for the sampled losses' ranking metric.
    sampled : bool
        Implicit feedback: every entry is a positive (its value a confidence
        weight) and the kernels draw negatives as they go (``_kernels``'
        sampled section); they also return the pass's loss, so the objective
        needs no second pass, and validation ranks items (NDCG@10).
    shuffle : bool
        Whether the layout shuffles each user's items within a block (the
        sampled losses keep them sorted, to search them).
    """

    def __init__(
        self,
        name,
        *,
        kernels,
        small_kernels=None,
        interleave,
        centred,
        binary,
        metric_name,
        metric,
        values_check,
        fold_in_solver,
        sampled=False,
    ):
        self.name = name
        self.sampled = sampled
        self.shuffle = not sampled
        self.kernels = kernels
        self._small_kernels = small_kernels or kernels
        # The sampled losses' kernels read the row width at run time.
        widths = () if sampled else FIXED_ROW_WIDTHS
        self._fixed_width = {
            (small, width): (self._small_kernels if small else kernels).with_row_width(width)
            for small in (False, True)
            for width in widths
            if not (small and self._small_kernels is kernels)
        }
        self.interleave = interleave
        self.centred = centred
        self.binary = binary
        self.metric_name = metric_name
        self._metric = metric
        self._values_check = values_check
        self._fold_in_solver = fold_in_solver

    def __repr__(self):
        return f"Loss({self.name!r})"

    def __reduce__(self):  # one instance per loss, also on Dask workers
        return _loss_by_name, (self.name,)

    def kernels_for(self, nnz, k):
        """Return the :class:`KernelSet` for a fit on ``nnz`` ratings with ``k`` factors.

        The small and the large kernels give the same bits. The fixed-width
        ones (``FIXED_ROW_WIDTHS``) give the general ones' bits with a
        constant step and may differ in the last bits with AdaGrad (the
        kernel tests check both); every fit of a given ``k`` uses the same.
        """
        small = nnz < SMALL_FIT_RATINGS and self._small_kernels is not self.kernels
        chosen = self._fixed_width.get((small, k))
        if chosen is not None:
            return chosen
        return self._small_kernels if small else self.kernels

    def check_values(self, values):
        """Return the float32 values this loss trains on, or raise a ValueError that says why."""
        return self._values_check(values)

    def validation_metric(self, data_loss, count):
        """Return the validation metric of ``count`` entries whose data loss sums to ``data_loss``.

        The data loss is what the objective kernels sum (``kernels.block_loss``):
        RMSE is ``sqrt(2 * data_loss / count)``, the mean log loss ``data_loss / count``.
        """
        return self._metric(float(data_loss), count)

    def fold_in(self, design, target, offset, ridge, n_iter):
        """Solve one new user's row: minimize the loss of ``design @ x + offset`` plus a ridge.

        ``design`` (n_ratings, k[+1]) holds the rated items' factors (and a
        column of ones for the bias), ``offset`` their fixed score terms,
        ``ridge`` the penalty matrix; returns ``x`` (float64).
        """
        return self._fold_in_solver(design, target, offset, ridge, n_iter)


def _rmse(half_squared_errors, count):
    return float(np.sqrt(2.0 * half_squared_errors / count))


def _mean_log_loss(log_losses, count):
    return log_losses / count


def _any_finite(values):
    return values  # fastmf._validation.check_coo has checked them finite


def _plus_minus_one(values):
    wrong = (values != 1.0) & (values != -1.0)
    if wrong.any():
        raise ValueError(
            f"The logistic loss trains on labels -1 and +1; got {values[wrong][0]!r} "
            f"({int(wrong.sum())} value(s) are neither)."
        )
    return values


def _positive_weights(values):
    wrong = ~(values > 0)
    if wrong.any():
        raise ValueError(
            f"Implicit feedback values are confidence weights and must be > 0; got "
            f"{values[wrong][0]!r} ({int(wrong.sum())} value(s) are not). Leave out the "
            "entries that are not interactions, or give no values (all ones)."
        )
    return values


def _ridge_solution(design, target, offset, ridge, n_iter):
    return np.linalg.solve(design.T @ design + ridge, design.T @ (target - offset))


def _newton_solution(design, target, offset, ridge, n_iter):
    return weighted_logistic_solution(design, target, 1.0, offset, ridge, n_iter)


def weighted_logistic_solution(design, target, sample_weight, offset, ridge, n_iter):
    """Minimize ``sum_r w_r log(1 + exp(-y_r (design_r . x + offset_r))) + x' ridge x / 2``.

    ``n_iter`` Newton steps from 0; ``target`` holds labels -1/+1,
    ``sample_weight`` each row's weight (or 1.0: multiplying by it changes
    no bit). Returns ``x`` (float64).
    """
    x = np.zeros(design.shape[1])
    for _ in range(n_iter):
        margin = target * (design @ x + offset)
        weight = expit(-margin)
        gradient = -design.T @ (sample_weight * target * weight) + ridge @ x
        hessian = (design.T * (sample_weight * weight * (1 - weight))) @ design + ridge
        x -= np.linalg.solve(hessian, gradient)
    return x


# The squared kernel steps one entry at a time and gains nothing from more than
# two parts (dev machine, 10M ratings, one thread, k=32, ratings/s for 1, 2, 4, 8
# parts: 55M, 65M, 65M, 59M; in later side-by-side runs, four parts were 13-20%
# slower than two). The logistic kernel takes entries in groups of LANES (see
# fastmf._kernels._sgd_grouped) and needs the group's entries from different
# users: one part per lane.
SQUARED = Loss(
    "squared",
    kernels=KernelSet("squared", _kernels.sgd_block_squared, _kernels.block_loss_squared),
    interleave=2,
    centred=True,
    binary=False,
    metric_name="RMSE",
    metric=_rmse,
    values_check=_any_finite,
    fold_in_solver=_ridge_solution,
)
LOGISTIC = Loss(
    "logistic",
    kernels=KernelSet("logistic", _kernels.sgd_block_logistic, _kernels.block_loss_logistic),
    small_kernels=KernelSet(
        "logistic/one-at-a-time",
        _kernels.sgd_block_logistic_one_at_a_time,
        _kernels.block_loss_logistic,
    ),
    interleave=LANES,
    centred=False,
    binary=True,
    metric_name="log loss",
    metric=_mean_log_loss,
    values_check=_plus_minus_one,
    fold_in_solver=_newton_solution,
)
# The sampled losses keep each user's items in a block contiguous (one part:
# their kernel walks a user's run, rotated each epoch) and sorted.
BPR = Loss(
    "bpr",
    kernels=KernelSet("bpr", _kernels.sgd_block_bpr, None),
    interleave=1,
    centred=False,
    binary=False,
    metric_name="NDCG@10",
    metric=None,
    values_check=_positive_weights,
    fold_in_solver=None,
    sampled=True,
)
SAMPLED_LOGISTIC = Loss(
    "implicit-logistic",
    kernels=KernelSet("implicit-logistic", _kernels.sgd_block_sampled_logistic, None),
    interleave=1,
    centred=False,
    binary=False,
    metric_name="NDCG@10",
    metric=None,
    values_check=_positive_weights,
    fold_in_solver=None,
    sampled=True,
)
LOSSES = {loss.name: loss for loss in (SQUARED, LOGISTIC, BPR, SAMPLED_LOGISTIC)}


class NegativeSampling:
    """How a sampled loss draws its negatives: the extra scalars of its kernels.

    Parameters
    ----------
    n_negatives : int
        Negatives per positive.
    negative_weight : float
        Weight of each negative's loss (pointwise logistic only).
    popularity : bool
        Draw negatives in proportion to their interactions instead of uniformly.
    """

    def __init__(self, n_negatives, negative_weight, popularity):
        self.n_negatives = n_negatives
        self.negative_weight = negative_weight
        self.popularity = popularity

    def arguments(self):
        """Return the kernels' ``n_negatives, negative_weight, popularity`` arguments, typed."""
        return np.int64(self.n_negatives), np.float32(self.negative_weight), bool(self.popularity)


def _loss_by_name(name):
    return LOSSES[name]
