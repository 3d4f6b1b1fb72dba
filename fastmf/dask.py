"""Distributed stratified SGD on a Dask cluster (``pip install 'fastmf[dask]'``).

The ratings are laid out exactly as for local training (same seeded
relabeling, same ``grid`` x ``grid`` blocks, same per-block order); block
``(bu, bi)`` lives on the worker that owns user stripe ``bu`` (stripes are
dealt to the workers round-robin), and each task runs the same compiled block
kernel as local training on one block, with the user stripe and item stripe
it needs. Strata follow the same seeded schedule as local training, so the
factors are bit-for-bit those of ``fit`` on one machine with the same
``random_state`` and ``grid``. Item stripes move between workers as Dask
sends a task's inputs to where it is pinned.

Workers should run one thread each (``threads_per_worker=1``): the kernels
are serial, and numba's thread pool must not be nested inside Dask's. With
``verbose=2`` the fit prints a line as each sub-epoch (stratum) completes;
the Dask dashboard shows the tasks as usual.
"""

import operator
import threading
import time

import numpy as np

from . import _kernels

__all__ = ["fit"]


def fit(model, X, client, **fit_params):
    """Fit ``model`` on ``X`` with the epochs run on the Dask ``client``'s workers.

    Parameters
    ----------
    model : RealValueMF or BinaryMF
    X : array_like, scipy.sparse matrix, (rows, cols, values) tuple, or Dataset
        In-memory ratings, as for :meth:`~fastmf.MatrixFactorization.fit`.
    client : distributed.Client
    **fit_params
        Passed to ``fit`` (``shape``, ``X_val``, ``callback``, ...).

    Returns
    -------
    model
        An ordinary fitted model (save, load, predict, recommend all work).
    """
    return model.fit(X, client=client, **fit_params)


def _stripe_bounds(size, grid):
    """First index of each stripe (and the end), matching ``_blocks._stripe``."""
    return [(b * size + grid - 1) // grid for b in range(grid)] + [size]


def _run_block(loss, block, user_state, item_state, lr, l2):
    """Worker task: one block of SGD on copies of its user and item stripes."""
    rows, cols, values = block
    user_state = tuple(None if a is None else a.copy() for a in user_state)
    item_state = tuple(None if a is None else a.copy() for a in item_state)
    kernel = _kernels.sgd_block_squared if loss == _kernels.SQUARED else _kernels.sgd_block_logistic
    kernel(
        rows,
        cols,
        values,
        0,
        rows.shape[0],
        user_state[0],
        item_state[0],
        user_state[1],
        item_state[1],
        user_state[2],
        item_state[2],
        lr,
        l2,
    )
    return user_state, item_state


class DaskEpochs:
    """Runs the epochs of one fit on a Dask cluster (created by ``fit(..., client=...)``)."""

    def __init__(self, client, layout, loss, report=None):
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise RuntimeError("The Dask cluster has no workers.")
        self.client, self.loss, self.grid, self.report = client, loss, layout.grid, report
        grid = layout.grid
        self.user_bounds = _stripe_bounds(layout.user_perm.shape[0], grid)
        self.item_bounds = _stripe_bounds(layout.item_perm.shape[0], grid)
        self.owner = [workers[b % len(workers)] for b in range(grid)]
        self.blocks = {}
        for block in range(grid * grid):
            bu, bi = divmod(block, grid)
            start, end = layout.block_offsets[block], layout.block_offsets[block + 1]
            local = (
                (layout.rows[start:end] - self.user_bounds[bu]).astype(np.int32),
                (layout.cols[start:end] - self.item_bounds[bi]).astype(np.int32),
                layout.values[start:end].copy(),
            )
            self.blocks[block] = client.scatter([local], workers=[self.owner[bu]])[0]
        # Bytes sent between processes in the last epoch: stripes scattered
        # and gathered by the client, and item stripes handed between workers.
        self.bytes_moved = 0
        self.tasks = 0

    def _stripe(self, arrays, bounds, b):
        lo, hi = bounds[b], bounds[b + 1]
        return tuple(None if a is None else np.ascontiguousarray(a[lo:hi]) for a in arrays)

    def __call__(self, schedule, state, user_acc, item_acc, lr, l2):
        """Run one epoch of ``schedule``; update ``state`` and accumulators in place."""
        try:
            self._epoch(schedule, state, user_acc, item_acc, lr, l2)
        except Exception as error:  # a lost worker, a killed task, a broken connection
            raise RuntimeError(
                f"The Dask cluster lost work during this epoch ({type(error).__name__}: {error}). "
                "The model is unchanged; fit again with resume=<checkpoint> to continue from the "
                "last completed epoch (pass checkpoint=<path> to fit to write one)."
            ) from error

    def _epoch(self, schedule, state, user_acc, item_acc, lr, l2):
        user_factors, item_factors, user_bias, item_bias = state
        user_arrays = (user_factors, user_bias, user_acc)
        item_arrays = (item_factors, item_bias, item_acc)
        grid, client = self.grid, self.client
        first_user_of_item = {int(b % grid): int(b // grid) for b in schedule[0]}
        users = {
            b: client.scatter(
                [self._stripe(user_arrays, self.user_bounds, b)], workers=[self.owner[b]]
            )[0]
            for b in range(grid)
        }
        items = {
            b: client.scatter(
                [self._stripe(item_arrays, self.item_bounds, b)],
                workers=[self.owner[first_user_of_item[b]]],
            )[0]
            for b in range(grid)
        }
        stripe_bytes = [
            sum(a.nbytes for a in self._stripe(item_arrays, self.item_bounds, b) if a is not None)
            for b in range(grid)
        ]
        all_bytes = sum(a.nbytes for a in (*user_arrays, *item_arrays) if a is not None)
        self.bytes_moved, self.tasks = 2 * all_bytes, 0
        holder = {b: self.owner[first_user_of_item[b]] for b in range(grid)}
        done = [0] * grid
        lock = threading.Lock()
        start = time.perf_counter()

        def finished(index):
            def callback(_future):
                with lock:
                    done[index] += 1
                    if done[index] == grid:
                        self.report(index + 1, grid, time.perf_counter() - start)

            return callback

        for index, stratum in enumerate(schedule):
            for block in stratum:
                bu, bi = divmod(int(block), grid)
                where = [self.owner[bu]]
                if holder[bi] != self.owner[bu]:
                    self.bytes_moved += stripe_bytes[bi]
                    holder[bi] = self.owner[bu]
                self.tasks += 3
                out = client.submit(
                    _run_block,
                    self.loss,
                    self.blocks[int(block)],
                    users[bu],
                    items[bi],
                    lr,
                    l2,
                    workers=where,
                    pure=False,
                )
                if self.report is not None:
                    out.add_done_callback(finished(index))
                users[bu] = client.submit(operator.getitem, out, 0, workers=where, pure=False)
                items[bi] = client.submit(operator.getitem, out, 1, workers=where, pure=False)
        gathered = [client.gather([futures[b] for b in range(grid)]) for futures in (users, items)]
        if self.report is not None:  # done-callbacks run on the client's thread: let them finish
            deadline = time.perf_counter() + 5.0
            while sum(done) < grid * grid and time.perf_counter() < deadline:
                time.sleep(0.001)
        for stripes, arrays, bounds in (
            (gathered[0], user_arrays, self.user_bounds),
            (gathered[1], item_arrays, self.item_bounds),
        ):
            for b, stripe in enumerate(stripes):
                lo, hi = bounds[b], bounds[b + 1]
                for target, part in zip(arrays, stripe):
                    if target is not None:
                        target[lo:hi] = part
