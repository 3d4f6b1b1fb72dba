"""Per-epoch training checkpoints (``fit(..., checkpoint=path)``) and resuming from them.

A checkpoint is an ``.npz`` of plain arrays (no pickle): the training state in
internal order after a completed epoch, the curves and counters of the
stopping rules, and the random generator's state, so that resuming continues
bit-for-bit where the interrupted fit would have gone.
"""

import json
import os

import numpy as np

_STATE = ("user_factors", "item_factors", "user_bias", "item_bias", "user_acc", "item_acc")


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
    """Write a checkpoint atomically (temporary file, then rename)."""
    progress = dict(progress)
    best_state = progress.pop("_best_state", None) or ()
    contents = {
        "fingerprint": np.array(print_),
        "progress": np.array(json.dumps(progress)),
        "rng_state": np.array(json.dumps(rng.bit_generator.state)),
    }
    for name, array in zip(_STATE, arrays):
        if array is not None:
            contents[name] = array
    for name, array in zip(_STATE, best_state):
        if array is not None:
            contents["best_" + name] = array
    partial = os.fspath(path) + ".part.npz"
    np.savez(partial, **contents)
    os.replace(partial, path)


def load(path, print_, arrays, rng):
    """Restore a checkpoint into ``arrays`` (in place) and ``rng``; return the progress dict."""
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
    for name, array in zip(_STATE, arrays):
        if array is not None:
            np.copyto(array, contents[name])
    progress = json.loads(contents["progress"].item())
    if "best_user_factors" in contents:
        progress["_best_state"] = [contents.get("best_" + name) for name in _STATE[:4]]
    rng.bit_generator.state = json.loads(contents["rng_state"].item())
    return progress
