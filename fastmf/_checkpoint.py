"""Per-epoch training checkpoints (``fit(..., checkpoint=path)``) and resuming from them.

A checkpoint is an ``.npz`` of plain arrays (no pickle): the training state in
internal order after a completed epoch, the curves and counters of the
stopping rules, and the random generator's state, so that resuming continues
bit-for-bit where the interrupted fit would have gone.
"""

import json
import os

import numpy as np


def fingerprint(layout, params):
    """Summarize the data and hyperparameters a checkpoint belongs to (a JSON string)."""
    keep = {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, type(None)))}
    return json.dumps(
        {
            "shape": [int(layout.user_perm.size), int(layout.item_perm.size)],
            "nnz": int(layout.nnz),
            "grid": int(layout.grid),
            "values_sum": float(np.sum(layout.value_sums())),
            "params": {
                k: keep[k] for k in sorted(keep) if k not in ("n_epochs", "verbose", "n_threads")
            },
        },
        sort_keys=True,
    )


def save(path, print_, arrays, progress, rng):
    """Write a checkpoint atomically (temporary file, then rename).

    ``arrays``: name -> ndarray or None (None is left out); ``progress``: a
    JSON-serializable dict; ``rng``: the fit's generator, whose state is saved.
    """
    contents = {
        "fingerprint": np.array(print_),
        "progress": np.array(json.dumps(progress)),
        "rng_state": np.array(json.dumps(rng.bit_generator.state)),
    }
    contents.update((name, array) for name, array in arrays.items() if array is not None)
    partial = os.fspath(path) + ".part.npz"
    np.savez(partial, **contents)
    os.replace(partial, path)


def load(path, print_, rng):
    """Read a checkpoint written for ``print_``; restore ``rng``; return ``(arrays, progress)``."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            contents = {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path!s} is not a readable fastmf checkpoint: {error}") from None
    if contents.get("fingerprint", np.array("")).item() != print_:
        raise ValueError(
            f"{path!s} was written for other data or hyperparameters; resume with the same "
            "ratings, shape, grid and hyperparameters (n_epochs may grow)."
        )
    progress = json.loads(contents.pop("progress").item())
    rng.bit_generator.state = json.loads(contents.pop("rng_state").item())
    return contents, progress
