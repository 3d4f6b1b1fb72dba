"""Where the epochs run: the backend interface, and the local (numba threads) backend.

A backend is what the training driver (:mod:`fastmf._driver`) runs epochs
on. Its interface, which :class:`fastmf.dask.DaskBackend` implements too:

- ``open(X, check, shape, duplicates)``: the checked input, with ``shape``
  and ``nnz`` (``check`` is the model's input check);
- ``arrange(data, grid, rng, duplicates, ways, shuffle)``: the block layout;
- ``start(layout, loss, state, sampling)``: take the training state (and the
  data) to where the epochs run; ``sampling`` (a
  :class:`~fastmf._losses.NegativeSampling`) for a sampled loss, else None;
- ``epoch(schedule, lr, l2, number)``: SGD epoch ``number`` (1, 2, ...; it
  picks a sampled loss's random streams);
- ``objective(exact)``: ``(block_loss, penalty, finite)``: each block's data
  loss (float64, block order), the weighted squared norms summed stripe by
  stripe (user factors, item factors, user biases, item biases) and whether
  the state is finite; the driver adds them up in one fixed order. The block
  losses are those the last epoch summed during its pass (each entry's before
  its step), or with ``exact`` (not for a sampled loss) those of the current
  state, from a pass of the objective kernels;
- ``pull()`` / ``push()``: copy the state into / from the driver's
  :class:`~fastmf._state.TrainingState` arrays (no-ops where they are the same);
- ``n_threads``: the threads it may use in this process; the estimator lowers
  it to 1 for a fit where more would be unsafe (:func:`fastmf._jit.numba_threads`).

Every backend gives the same bits for the same layout and schedule.
"""

import numpy as np

from . import _kernels
from ._blocks import arrange, epoch_streams, stripe_bounds


class LocalBackend:
    """Run the epochs in this process, on ``n_threads`` of numba's threads.

    ``n_threads == 1`` uses the serial kernels, which never start numba's
    thread pool.
    """

    def __init__(self, n_threads):
        self.n_threads = n_threads

    def open(self, X, check, shape, duplicates):
        """Check the in-memory input ``X`` with the model's ``check``."""
        return check(X, shape, duplicates)

    def arrange(self, data, grid, rng, duplicates, ways, shuffle=True):
        """Store the checked ratings in block order (see :func:`fastmf._blocks.arrange`)."""
        return arrange(
            data, grid, rng, duplicates, parallel=self.n_threads > 1, ways=ways, shuffle=shuffle
        )

    def start(self, layout, loss, state, sampling=None):
        """Train ``state`` (updated in place) on ``layout`` with ``loss``."""
        self.layout, self.state = layout, state
        self.kernels = loss.kernels_for(layout.nnz, state.user_factors.shape[1])
        parallel = self.n_threads > 1
        self._sgd_epoch = _kernels.sgd_epoch_parallel if parallel else _kernels.sgd_epoch_serial
        self._objective = _kernels.objective_parallel if parallel else _kernels.objective_serial
        self._block_loss = np.zeros(layout.grid**2, dtype=np.float64)
        self._user_bounds, self._item_bounds = (
            np.asarray(stripe_bounds(factors.shape[0], layout.grid), dtype=np.int64)
            for factors in (state.user_factors, state.item_factors)
        )
        # The penalty's stripes on numba's threads (same bits as one by one).
        self._parallel = parallel
        self._stripe_norms = np.zeros(layout.grid, dtype=np.float64)
        self.sampling = sampling if loss.sampled else None
        if self.sampling is not None:
            self._sampled_epoch = (
                _kernels.sampled_epoch_parallel if parallel else _kernels.sampled_epoch_serial
            )

    def _data(self):
        layout = self.layout
        return layout.rows, layout.cols, layout.values, layout.block_offsets

    def epoch(self, schedule, lr, l2, number):
        """Run SGD epoch ``number`` of ``schedule``."""
        if self.sampling is not None:
            self._sampled_epoch(
                self.kernels,
                *self._data(),
                schedule,
                self._item_bounds,
                epoch_streams(self.layout.seeds, number),
                *self.state.arrays(),
                lr,
                l2,
                *self.sampling.arguments(),
                True,
                self._block_loss,
            )
            return
        self._sgd_epoch(
            self.kernels,
            *self._data(),
            schedule,
            *self.state.arrays(),
            lr,
            l2,
            self._block_loss,
            self.layout.weights,
        )

    def objective(self, exact=False):
        """Return ``(block_loss, penalty, finite)``; see the module docstring."""
        state, layout = self.state, self.layout
        if exact and self.sampling is None:
            self._objective(
                self.kernels, *self._data(), *state.arrays()[:4], self._block_loss, layout.weights
            )
        penalty = 0.0
        # Stripe by stripe, in the order a cluster's stripes are added up.
        for factors, counts, bounds in (
            (state.user_factors, layout.user_counts, self._user_bounds),
            (state.item_factors, layout.item_counts, self._item_bounds),
            (state.user_bias, layout.user_counts, self._user_bounds),
            (state.item_bias, layout.item_counts, self._item_bounds),
        ):
            if factors is None:
                continue
            matrix = factors if factors.ndim == 2 else factors[:, None]
            if self._parallel:
                _kernels.stripe_squared_norms(matrix, counts, bounds, self._stripe_norms)
                for stripe_norm in self._stripe_norms:
                    penalty += float(stripe_norm)
                continue
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                penalty += _kernels.weighted_squared_norms(matrix[lo:hi], counts[lo:hi])
        # The penalty reads every parameter: it is finite exactly when they all
        # are (a non-finite one makes its term inf or NaN, a count of 0 times
        # inf included, and float32 squares cannot overflow a float64 sum), so
        # no second pass over the factors is needed.
        return self._block_loss, penalty, bool(np.isfinite(penalty))

    def pull(self):
        """Nothing to do: the epochs update the driver's arrays themselves."""

    def push(self):
        """Nothing to do: the epochs read the driver's arrays themselves."""
