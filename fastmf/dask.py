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

The ratings may also stay distributed: pass a :class:`Shards` (``.npz``,
Parquet or text files that the workers read, or a dask DataFrame) instead of
in-memory data. The workers then read and check their shards, relabel and
cut them into blocks, and keep them; the driver only ever holds per-user and
per-item counts, the relabeling permutations and the factors (plus, at the
end, the compact index of which items each user rated, 4 bytes per rating,
used by ``recommend(exclude_seen=True)``). The blocks are built by the same
per-block code as local training, so the factors are again bit-for-bit
those of a local fit on the concatenated shards.

Workers should run one thread each (``threads_per_worker=1``): the kernels
are serial, and numba's thread pool must not be nested inside Dask's. With
``verbose=2`` the fit prints a line as each sub-epoch (stratum) completes;
the Dask dashboard shows the tasks as usual.
"""

import operator
import os
import threading
import time

import numpy as np

from . import _kernels
from ._blocks import (
    arrange,
    block_value_sum,
    canonicalize_blocks,
    draw_relabeling,
    duplicates_error,
    epoch_streams,
    index_dtype,
    inverse_permutation,
    stripe_bounds,
)
from ._jit import kernel
from ._validation import check_duplicates_policy, check_shape

__all__ = ["DaskBackend", "Shards", "fit"]


class Shards:
    """Ratings that stay distributed: files the workers read, or a dask DataFrame.

    Pass it to ``model.fit(shards, client=client)`` (or :func:`fit`). The
    driver never loads the ratings: each worker reads, checks and keeps its
    part. Ids must be integer indices (raw string ids need a global map:
    build it with :class:`fastmf.ids.IdMap` first).

    Parameters
    ----------
    source : list of str or path-like, or dask.dataframe.DataFrame
        Files readable by every worker (a shared or network file system):
        ``.npz`` files holding arrays ``rows``, ``cols`` and ``values``;
        ``.parquet`` files; or delimited text files (read as by
        :func:`fastmf.io.read_ratings`). Or a dask DataFrame, one shard per
        partition. The ratings are taken in the order given (shard by shard),
        which is what ``duplicates="last"`` refers to.
    columns : three ints or three str, default=(0, 1, 2)
        The user, item and value columns of Parquet, text and DataFrame
        shards, by position or name.
    """

    def __init__(self, source, columns=(0, 1, 2)):
        if _is_dask_frame(source):
            self.frame, self.paths = source, None
        else:
            if isinstance(source, (str, bytes, os.PathLike)):
                source = [source]
            paths = list(source)
            if not paths or not all(isinstance(path, (str, os.PathLike)) for path in paths):
                raise TypeError(
                    "Shards takes a non-empty list of file paths or a dask DataFrame; got "
                    f"{type(source).__name__}."
                )
            self.frame, self.paths = None, [os.fspath(path) for path in paths]
        if len(columns) != 3:
            raise ValueError("columns must name three columns: user, item, value.")
        self.columns = tuple(columns)

    def __repr__(self):
        what = f"{len(self.paths)} file(s)" if self.paths else "a dask DataFrame"
        return f"Shards({what}, columns={self.columns!r})"


def fit(model, X, client, **fit_params):
    """Fit ``model`` on ``X`` with the epochs run on the Dask ``client``'s workers.

    Parameters
    ----------
    model : RealValueMF or BinaryMF
    X : array_like, scipy.sparse matrix, (rows, cols, values) tuple, Dataset, or Shards
        In-memory ratings, as for :meth:`~fastmf.MatrixFactorization.fit`; or
        ratings that stay on the workers: a :class:`Shards`, a dask DataFrame
        (its first three columns) or a list of ``.npz``/Parquet/text file paths.
    client : distributed.Client
    **fit_params
        Passed to ``fit`` (``shape``, ``X_val``, ``callback``, ...).

    Returns
    -------
    model
        An ordinary fitted model (save, load, predict, recommend all work).
    """
    return model.fit(X, client=client, **fit_params)


def _is_dask_frame(obj):
    return hasattr(obj, "to_delayed") and hasattr(obj, "npartitions") and hasattr(obj, "columns")


def as_shards(X):
    """Return ``X`` as :class:`Shards` when it is sharded input, else None."""
    if isinstance(X, Shards):
        return X
    if _is_dask_frame(X):
        return Shards(X)
    if isinstance(X, list) and X and all(isinstance(p, (str, os.PathLike)) for p in X):
        return Shards(X)
    return None


def _load_part(source, columns, check, duplicates, name):
    """Worker task: read one shard and check it; returns ``(rows, cols, values)``."""
    from .io import read_ratings

    if isinstance(source, str):
        if source.endswith(".npz"):
            with np.load(source, allow_pickle=False) as stored:
                if not {"rows", "cols", "values"} <= set(stored.files):
                    raise ValueError(
                        f"{name}: an .npz shard must hold arrays 'rows', 'cols' and 'values'; "
                        f"it has {stored.files}."
                    )
                triplet = (stored["rows"], stored["cols"], stored["values"])
        else:
            raw = read_ratings(source, columns=columns)
            triplet = (raw.users, raw.items, raw.values)
    else:  # one partition of a dask DataFrame, as pandas
        names = [source.columns[c] if isinstance(c, int) else c for c in columns]
        missing = [c for c in names if c not in source.columns]
        if missing:
            raise ValueError(f"{name}: no column(s) {missing}; it has {list(source.columns)}.")
        triplet = tuple(source[c].to_numpy() for c in names)
    if len(triplet[0]) == 0:  # an empty partition is fine; empty data overall is not
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    try:
        coo = check(triplet, None, duplicates)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{name}: {error}") from None
    return coo.rows, coo.cols, coo.values


def _summarize(part):
    rows, cols, _ = part
    if rows.shape[0] == 0:
        return 0, -1, -1
    return rows.shape[0], int(rows.max()), int(cols.max())


def _split_by_stripe(part, user_new, item_new, grid, dtype):
    """Worker task: relabel one shard and cut it by user stripe, keeping its order."""
    rows, cols, values = part
    m = user_new.shape[0]
    users = user_new[rows]
    stripe = (users * grid) // m
    order = np.argsort(stripe, kind="stable")
    bounds = np.searchsorted(stripe[order], np.arange(grid + 1))
    users = users[order].astype(dtype)
    items = item_new[cols][order].astype(dtype)
    values = values[order]
    return [(users[lo:hi], items[lo:hi], values[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _build_stripe(pieces, seeds, duplicates, grid, n, user_bounds, item_bounds, ways, shuffle):
    """Worker task: arrange one user stripe into its ``grid`` blocks, as local training does.

    Returns the blocks (in stripe-local ids, as :class:`DaskBackend` runs them)
    and the stripe's statistics for the driver.
    """
    rows = np.concatenate([piece[0] for piece in pieces])
    cols = np.concatenate([piece[1] for piece in pieces])
    values = np.concatenate([piece[2] for piece in pieces])
    item_stripe = (cols.astype(np.int64) * grid) // n
    order = np.argsort(item_stripe, kind="stable")  # input order kept within a block
    rows, cols, values = rows[order], cols[order], values[order]
    offsets = np.zeros(grid + 1, dtype=np.int64)
    np.cumsum(np.bincount(item_stripe, minlength=grid), out=offsets[1:])
    results = canonicalize_blocks(
        rows, cols, values, offsets, seeds, duplicates, ways, shuffle=shuffle
    )
    user_lo, user_hi = user_bounds
    blocks, sums = [], []
    user_counts = np.zeros(user_hi - user_lo, dtype=np.float64)
    item_counts = np.zeros(n, dtype=np.float64)
    for bi in range(grid):
        start, kept = offsets[bi], results[bi, 0]
        block_values = values[start : start + kept].copy()
        if not np.isfinite(block_values).all():
            raise ValueError(
                "Summing duplicate entries overflowed float32; rescale the values or use "
                "duplicates='last'."
            )
        block_rows = (rows[start : start + kept] - user_lo).astype(np.int32)
        block_cols = (cols[start : start + kept] - item_bounds[bi]).astype(np.int32)
        user_counts += np.bincount(block_rows, minlength=user_hi - user_lo)
        item_counts[item_bounds[bi] : item_bounds[bi + 1]] += np.bincount(
            block_cols, minlength=item_bounds[bi + 1] - item_bounds[bi]
        )
        sums.append(block_value_sum(block_values))
        blocks.append((block_rows, block_cols, block_values))
    stats = {
        "kept": results[:, 0].copy(),
        "duplicates": results[:, 1].copy(),
        "first_duplicate": results[:, 2:4].copy(),
        "value_sums": np.array(sums, dtype=np.float64),
        "user_counts": user_counts,
        "item_counts": item_counts,
    }
    return blocks, stats


def _block_value_sum(block):
    return block_value_sum(block[2])


def _subtract(block, value):
    rows, cols, values = block
    return rows, cols, values - value


def _block_objective(kernels, block, user_holder, item_state):
    """Worker task: one block's data loss (float64), as local training computes it."""
    rows, cols, values = block[:3]
    weights = block[3] if len(block) > 3 else None
    user_state = user_holder[0]
    return kernels.block_loss(
        rows, cols, values, 0, rows.shape[0], user_state[0], item_state[0], user_state[1],
        item_state[1], weights,
    )  # fmt: skip


def _stripe_seen(blocks, item_bounds, item_perm, stripe_size):
    """Worker task: the original item ids each user of one stripe rated, grouped by user."""
    rows = np.concatenate([block[0] for block in blocks])
    cols = np.concatenate(
        [block[1].astype(np.int64) + item_bounds[bi] for bi, block in enumerate(blocks)]
    )
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=stripe_size).astype(np.int64)
    return counts, item_perm[cols[order]].astype(np.int32)


class ShardedLayout:
    """The block layout of a fit whose blocks stay on the Dask workers.

    Has the attributes of :class:`fastmf._blocks.BlockLayout` that the driver
    needs (``grid``, ``block_offsets``, permutations, counts, ``nnz``); the
    ratings themselves (``rows``, ``cols``, ``values``) are None here and live
    in ``blocks``, futures of stripe-local ``(rows, cols, values)`` held by
    the worker ``owner[user stripe]``.
    """

    rows = cols = values = None
    weights = None  # sample weights are for in-memory input only

    def __init__(self, client, grid, user_perm, item_perm, owner, blocks, stats, seeds):
        self.client, self.grid, self.owner, self.blocks = client, grid, owner, blocks
        self.user_perm, self.item_perm, self.seeds = user_perm, item_perm, seeds
        kept = np.concatenate([stripe["kept"] for stripe in stats])
        self.block_offsets = np.zeros(grid * grid + 1, dtype=np.int64)
        np.cumsum(kept, out=self.block_offsets[1:])
        self.user_counts = np.concatenate([stripe["user_counts"] for stripe in stats])
        self.item_counts = np.sum([stripe["item_counts"] for stripe in stats], axis=0)
        self._value_sums = np.concatenate([stripe["value_sums"] for stripe in stats])

    @property
    def nnz(self):
        """Number of stored ratings."""
        return int(self.block_offsets[-1])

    def value_sums(self):
        """Each block's sum of values (float64), in block order."""
        if self._value_sums is None:
            futures = [
                self.client.submit(_block_value_sum, self.blocks[b], pure=False)
                for b in range(self.grid**2)
            ]
            self._value_sums = np.array(self.client.gather(futures), dtype=np.float64)
        return self._value_sums

    def subtract(self, value):
        """Subtract ``value`` (float32) from every stored value, on the workers."""
        for b in range(self.grid**2):
            self.blocks[b] = self.client.submit(
                _subtract,
                self.blocks[b],
                value,
                workers=[self.owner[b // self.grid]],
                pure=False,
            )
        self._value_sums = None

    def seen_items_csr(self, parallel=False):
        """Like :func:`fastmf._blocks.seen_items_csr`, assembled stripe by stripe on the workers."""
        m, grid = self.user_perm.shape[0], self.grid
        user_bounds = stripe_bounds(m, grid)
        item_bounds = stripe_bounds(self.item_perm.shape[0], grid)
        counts = np.empty(m, dtype=np.int64)
        counts[self.user_perm] = self.user_counts.astype(np.int64)
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        items = np.empty(self.nnz, dtype=np.int32)
        item_perm = self.client.scatter(self.item_perm, broadcast=True)
        for bu in range(grid):
            future = self.client.submit(
                _stripe_seen,
                [self.blocks[bu * grid + bi] for bi in range(grid)],
                item_bounds,
                item_perm,
                user_bounds[bu + 1] - user_bounds[bu],
                workers=[self.owner[bu]],
                pure=False,
            )
            stripe_counts, stripe_items = future.result()
            _place_runs(
                stripe_items,
                stripe_counts,
                self.user_perm[user_bounds[bu] : user_bounds[bu + 1]],
                indptr,
                items,
            )
        return indptr, items


@kernel
def _place_runs(stripe_items, stripe_counts, original_users, indptr, out):
    """Copy each user's run of item ids to its row of the CSR ``out`` (in place)."""
    position = 0
    for r in range(original_users.shape[0]):
        start = indptr[original_users[r]]
        for t in range(stripe_counts[r]):
            out[start + t] = stripe_items[position + t]
        position += stripe_counts[r]


def open_shards(client, shards, check, shape, duplicates):
    """Read the shards on the workers, checked by ``check``; returns a :class:`ShardSource`."""
    if shards.frame is not None:
        frames = client.compute(shards.frame.to_delayed())
        names = [f"partition {i}" for i in range(len(frames))]
        sources = frames
    else:
        names, sources = list(shards.paths), list(shards.paths)
    parts = [
        client.submit(_load_part, source, shards.columns, check, duplicates, name, pure=False)
        for source, name in zip(sources, names)
    ]
    # In shard order, so that the first bad shard is the one reported, whatever the timing.
    summaries = [
        future.result()
        for future in [client.submit(_summarize, part, pure=False) for part in parts]
    ]
    del sources
    nnz = sum(count for count, _, _ in summaries)
    if nnz == 0:
        raise ValueError(
            f"The shards hold no ratings ({len(parts)} shard(s) read); nothing to fit."
        )
    top = (max(s[1] for s in summaries), max(s[2] for s in summaries))
    if shape is None:
        shape = (top[0] + 1, top[1] + 1)
    else:
        shape = check_shape(shape)
        for what, axis in (("row", 0), ("column", 1)):
            if top[axis] >= shape[axis]:
                raise ValueError(
                    f"{what} index {top[axis]} is out of range for shape {shape} (axis {axis} "
                    f"has {shape[axis]} entries). Pass a larger shape, or omit it to infer it."
                )
    return ShardSource(client, parts, shape, nnz)


class ShardSource:
    """Checked shards on the workers, ready to be arranged into blocks."""

    def __init__(self, client, parts, shape, nnz):
        self.client, self.parts, self.shape, self.nnz = client, parts, shape, nnz

    def arrange(self, grid, rng, duplicates, ways, shuffle=True):
        """Like :func:`fastmf._blocks.arrange`, the same random draws; blocks stay on workers."""
        client = self.client
        m, n = self.shape
        user_perm, item_perm, seeds = draw_relabeling(rng, self.shape, grid)
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise RuntimeError("The Dask cluster has no workers.")
        owner = [workers[b % len(workers)] for b in range(grid)]
        dtype = index_dtype(self.shape)
        user_new, item_new = (
            client.scatter(inverse_permutation(perm), broadcast=True)
            for perm in (user_perm, item_perm)
        )
        split = [
            client.submit(_split_by_stripe, part, user_new, item_new, grid, dtype, pure=False)
            for part in self.parts
        ]
        user_bounds = stripe_bounds(m, grid)
        item_bounds = stripe_bounds(n, grid)
        built = []
        for bu in range(grid):
            pieces = [client.submit(operator.getitem, s, bu, pure=False) for s in split]
            built.append(
                client.submit(
                    _build_stripe,
                    pieces,
                    seeds[bu * grid : (bu + 1) * grid],
                    duplicates,
                    grid,
                    n,
                    (user_bounds[bu], user_bounds[bu + 1]),
                    item_bounds,
                    ways,
                    shuffle,
                    workers=[owner[bu]],
                    pure=False,
                )
            )
        stats = client.gather(
            [
                client.submit(operator.getitem, b, 1, workers=[owner[bu]])
                for bu, b in enumerate(built)
            ]
        )
        blocks = {}
        for bu, future in enumerate(built):
            stripe_blocks = client.submit(operator.getitem, future, 0, workers=[owner[bu]])
            for bi in range(grid):
                blocks[bu * grid + bi] = client.submit(
                    operator.getitem, stripe_blocks, bi, workers=[owner[bu]]
                )
        self.parts = None  # the shards as read are no longer needed on the workers
        n_duplicates = int(sum(stripe["duplicates"].sum() for stripe in stats))
        if n_duplicates and duplicates == "raise":
            for stripe in stats:
                first = np.flatnonzero(stripe["duplicates"])
                if first.size:
                    user, item = stripe["first_duplicate"][first[0]]
                    break
            raise duplicates_error(n_duplicates, user_perm[user], item_perm[item])
        return ShardedLayout(client, grid, user_perm, item_perm, owner, blocks, stats, seeds)


def _run_block(kernels, block, user_holder, item_state, lr, l2, sampled=None):
    """Worker task: one block of SGD on copies of its user and item stripes.

    ``user_holder[0]`` is the user stripe: the previous block task's whole
    output stays on this worker and is passed on as is (no task to pick it
    out); the item stripe, which moves, is picked out by a small task. The
    block's data loss, summed during the pass, is returned third. For a
    sampled loss, ``sampled`` is ``(stream, sampling arguments)``; its
    negatives come from the whole (stripe-local) item stripe, as in local
    training.
    """
    rows, cols, values = block[:3]
    weights = block[3] if len(block) > 3 else None
    user_state = tuple(None if a is None else a.copy() for a in user_holder[0])
    item_state = tuple(None if a is None else a.copy() for a in item_state)
    if sampled is not None:
        stream, arguments = sampled
        loss = kernels.sgd_block(
            rows, cols, values, 0, rows.shape[0], 0, item_state[0].shape[0], stream,
            user_state[0], item_state[0], user_state[1], item_state[1], user_state[2],
            item_state[2], lr, l2, *arguments, True,
        )  # fmt: skip
        return user_state, item_state, loss
    loss = kernels.sgd_block(
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
        weights,
    )
    return user_state, item_state, loss


class DaskBackend:
    """Run the epochs of a fit on a Dask cluster (``fit(..., client=...)``).

    The backend interface of :mod:`fastmf._backend`. The training state
    (factors, biases, AdaGrad accumulators) lives on the workers between
    epochs, as stripe futures: user stripe ``b`` on the worker that owns it,
    each item stripe wherever its last block ran. The state is sent once
    (:meth:`push`) and copied back only when the driver needs it
    (:meth:`pull`: validation, checkpoints, the end of the fit); the
    objective and the divergence check run on the workers.

    Parameters
    ----------
    client : distributed.Client
    n_threads : int
        Threads for the work done in the client's process (arranging
        in-memory ratings into blocks).
    report : callable, optional
        ``report(stratum, strata, seconds)`` as each sub-epoch completes.
    """

    def __init__(self, client, n_threads=1, report=None):
        self.client, self.n_threads, self.report = client, n_threads, report

    def open(self, X, check, shape, duplicates):
        """Check in-memory ``X`` here, or sharded input on the workers (a :class:`ShardSource`)."""
        shards = as_shards(X)
        if shards is None:
            return check(X, shape, duplicates)
        check_duplicates_policy(duplicates)
        return open_shards(self.client, shards, check, shape, duplicates)

    def arrange(self, data, grid, rng, duplicates, ways, shuffle=True):
        """Lay out the ratings in blocks: on the workers for shards, else here."""
        if isinstance(data, ShardSource):
            return data.arrange(grid, rng, duplicates, ways, shuffle)
        return arrange(
            data, grid, rng, duplicates, parallel=self.n_threads > 1, ways=ways, shuffle=shuffle
        )

    def start(self, layout, loss, state, sampling=None):
        """Place the blocks (unless already on the workers) and push ``state``."""
        client = self.client
        self.kernels = loss.kernels_for(layout.nnz, state.user_factors.shape[1])
        self.grid, self.state = layout.grid, state
        self.sampling = sampling if loss.sampled else None
        self.seeds = layout.seeds
        self.block_losses = None  # per-block loss futures, summed during the last pass
        grid = layout.grid
        self.user_bounds = stripe_bounds(layout.user_perm.shape[0], grid)
        self.item_bounds = stripe_bounds(layout.item_perm.shape[0], grid)
        if isinstance(layout, ShardedLayout):  # the blocks are already on the workers
            self.owner, self.blocks = layout.owner, layout.blocks
        else:
            workers = sorted(client.scheduler_info()["workers"])
            if not workers:
                raise RuntimeError("The Dask cluster has no workers.")
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
                if layout.weights is not None:
                    local += (layout.weights[start:end].copy(),)
                self.blocks[block] = self._scatter(local, self.owner[bu])
        self.user_counts = {
            b: self._scatter(self._part(layout.user_counts, self.user_bounds, b), self.owner[b])
            for b in range(grid)
        }
        self.item_counts = {
            b: self._scatter(self._part(layout.item_counts, self.item_bounds, b), self.owner[b])
            for b in range(grid)
        }
        self.holder = None  # the worker holding each item stripe
        self.stripe_bytes = None
        # Bytes sent between processes and tasks run in the last epoch (with
        # its objective): item stripes handed between workers, plus whatever
        # the client pushed or pulled.
        self.bytes_moved = 0
        self.tasks = 0
        self.push()

    def _scatter(self, data, worker):
        # hash=False: equal contents (e.g. two stripes of zero biases) must not share a key.
        return self.client.scatter([data], workers=[worker], hash=False)[0]

    @staticmethod
    def _part(array, bounds, b):
        return None if array is None else np.ascontiguousarray(array[bounds[b] : bounds[b + 1]])

    def _lost(self, during, error):
        detail = " ".join(str(error).split())  # Dask's messages span lines
        return RuntimeError(
            f"The Dask cluster lost work during {during} ({type(error).__name__}: {detail}). "
            "The model is unchanged; fit again with resume=<checkpoint> to continue from the "
            "last completed epoch (pass checkpoint=<path> to fit to write one)."
        )

    def push(self):
        """Send the client's training state to the workers (at the start, after resuming)."""
        state = self.state
        user_arrays = (state.user_factors, state.user_bias, state.user_acc)
        item_arrays = (state.item_factors, state.item_bias, state.item_acc)
        grid = self.grid
        self.users = {  # held as (user stripe, _), like a block task's output
            b: self._scatter(
                (tuple(self._part(a, self.user_bounds, b) for a in user_arrays), None),
                self.owner[b],
            )
            for b in range(grid)
        }
        self.items = {
            b: self._scatter(
                tuple(self._part(a, self.item_bounds, b) for a in item_arrays), self.owner[b]
            )
            for b in range(grid)
        }
        self.holder = {b: self.owner[b] for b in range(grid)}
        self.stripe_bytes = [
            sum(self._part(a, self.item_bounds, b).nbytes for a in item_arrays if a is not None)
            for b in range(grid)
        ]
        self.bytes_moved += sum(a.nbytes for a in (*user_arrays, *item_arrays) if a is not None)

    def pull(self):
        """Copy the workers' training state into the client's arrays, stripe by stripe."""
        state = self.state
        try:
            users = {
                b: self.client.submit(operator.getitem, self.users[b], 0, pure=False)
                for b in range(self.grid)
            }
            user_arrays = (state.user_factors, state.user_bias, state.user_acc)
            item_arrays = (state.item_factors, state.item_bias, state.item_acc)
            for futures, arrays, bounds in (
                (users, user_arrays, self.user_bounds),
                (self.items, item_arrays, self.item_bounds),
            ):
                for b in range(self.grid):
                    lo, hi = bounds[b], bounds[b + 1]
                    for target, part in zip(arrays, futures[b].result()):
                        if target is not None:
                            target[lo:hi] = part
                            self.bytes_moved += part.nbytes
        except Exception as error:
            raise self._lost("a transfer of the factors", error) from error

    def objective(self, exact=False):
        """Compute the objective's parts on the workers.

        Returns ``(block_loss, penalty, finite)``: each block's data loss
        (summed during the last pass, or with ``exact`` that of the current
        state), the weighted squared norms summed stripe by stripe in the same
        order as local training, and whether every factor, bias and
        accumulator is finite.
        """
        client, grid = self.client, self.grid
        try:
            exact = exact and self.sampling is None
            losses = []
            if not exact:
                losses = [self.block_losses[block] for block in range(grid * grid)]
            for bi in range(grid if exact else 0):  # an item stripe is fetched once, then reused
                needed = {self.owner[bu] for bu in range(grid)} - {self.holder[bi]}
                self.bytes_moved += len(needed) * self.stripe_bytes[bi]
            for block in range(grid * grid if exact else 0):
                bu, bi = divmod(block, grid)
                losses.append(
                    client.submit(
                        _block_objective,
                        self.kernels,
                        self.blocks[block],
                        self.users[bu],
                        self.items[bi],
                        workers=[self.owner[bu]],
                        pure=False,
                    )
                )
            penalties = [
                client.submit(task, futures[b], counts[b], pure=False)
                for task, futures, counts in (
                    (_user_stripe_penalty, self.users, self.user_counts),
                    (_stripe_penalty, self.items, self.item_counts),
                )
                for b in range(grid)
            ]
            self.tasks += len(losses) + len(penalties)
            block_loss = np.array(client.gather(losses), dtype=np.float64)
            parts = client.gather(penalties)
        except Exception as error:
            raise self._lost("the objective", error) from error
        penalty = 0.0
        for which in (0, 1):  # factors of every user and item stripe, then their biases
            for factor_part, bias_part, _ in parts:
                penalty += bias_part if which else factor_part
        return block_loss, penalty, all(finite for _, _, finite in parts)

    def epoch(self, schedule, lr, l2, number):
        """Run epoch ``number`` of ``schedule`` on the workers' training state."""
        try:
            self._epoch(schedule, lr, l2, number)
        except Exception as error:  # a lost worker, a killed task, a broken connection
            raise self._lost("this epoch", error) from error

    def _epoch(self, schedule, lr, l2, number):
        grid, client = self.grid, self.client
        if self.sampling is not None:
            streams, arguments = epoch_streams(self.seeds, number), self.sampling.arguments()
        self.block_losses = {}
        users, items = self.users, self.items
        self.bytes_moved, self.tasks = 0, 0
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
                if self.holder[bi] != self.owner[bu]:
                    self.bytes_moved += self.stripe_bytes[bi]
                    self.holder[bi] = self.owner[bu]
                self.tasks += 2
                sampled = None
                if self.sampling is not None:
                    sampled = (streams[int(block)], arguments)
                out = client.submit(
                    _run_block,
                    self.kernels,
                    self.blocks[int(block)],
                    users[bu],
                    items[bi],
                    lr,
                    l2,
                    sampled,
                    workers=where,
                    pure=False,
                )
                self.tasks += 1
                self.block_losses[int(block)] = client.submit(
                    operator.getitem, out, 2, workers=where, pure=False
                )
                if self.report is not None:
                    out.add_done_callback(finished(index))
                users[bu] = out
                items[bi] = client.submit(operator.getitem, out, 1, workers=where, pure=False)
        # Wait for the epoch (so that its time is measured and a lost task shows here).
        _wait([*users.values(), *items.values()])
        for future in (*users.values(), *items.values()):
            if future.status != "finished":
                future.result()  # raises the task's error
        if self.report is not None:  # done-callbacks run on the client's thread: let them finish
            deadline = time.perf_counter() + 5.0
            while sum(done) < grid * grid and time.perf_counter() < deadline:
                time.sleep(0.001)


def _user_stripe_penalty(user_holder, counts):
    return _stripe_penalty(user_holder[0], counts)


def _stripe_penalty(stripe, counts):
    """Worker task: a stripe's weighted squared norms (factors, biases) and finiteness."""
    factors, bias, _ = stripe
    factor_part = _kernels.weighted_squared_norms(factors, counts)
    bias_part = 0.0 if bias is None else _kernels.weighted_squared_norms(bias[:, None], counts)
    finite = all(np.isfinite(a).all() for a in stripe if a is not None)
    return factor_part, bias_part, finite


def _wait(futures):
    from distributed import wait

    wait(futures)
