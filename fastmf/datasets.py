"""Data generators for demos, tests and benchmarks."""

from collections import namedtuple
from numbers import Integral

import numpy as np

__all__ = [
    "Ratings",
    "fetch_movielens",
    "get_data_home",
    "load_movielens",
    "make_interactions",
    "make_synthetic",
]

Ratings = namedtuple("Ratings", ["rows", "cols", "values", "shape"])
Ratings.__doc__ = """COO ratings: ``fit((r.rows, r.cols, r.values), shape=r.shape)``.

Attributes
----------
rows : ndarray of int32, shape (nnz,)
cols : ndarray of int32, shape (nnz,)
values : ndarray of float32, shape (nnz,)
shape : tuple (n_users, n_items)
"""


def make_synthetic(
    n_users=20_000,
    n_items=2_000,
    n_ratings=1_000_000,
    rank=10,
    skew=0.8,
    noise=0.5,
    stars=True,
    binary=False,
    random_state=0,
):
    """Generate a seeded synthetic rating set with power-law popularity.

    Users and items get Zipf-like popularity (the j-th most popular has weight
    ``(j + 1) ** -skew``), so a few users rate a lot and a few items are rated
    a lot, as in real rating data. Each rating is
    ``3.5 + b_u + b_i + U_u . V_i + noise * eps`` with a rank-``rank`` signal
    of unit variance, biases of spread 0.3 and 0.5, and Gaussian noise; with
    ``stars=True`` it is rounded and clipped to the 1-5 star scale. No (user,
    item) pair appears twice, and the entries come in random order.

    Parameters
    ----------
    n_users, n_items : int
    n_ratings : int
        At most a third of ``n_users * n_items``.
    rank : int, default=10
        Rank of the latent signal.
    skew : float, default=0.8
        Popularity exponent; 0 is uniform.
    noise : float, default=0.5
        Standard deviation of the Gaussian noise (before rounding).
    stars : bool, default=True
        Round to integer stars 1..5; otherwise keep real values.
    binary : bool, default=False
        Return +1 for ratings of 4 stars or more and -1 otherwise (implicit
        "liked" responses for :class:`fastmf.BinaryMF`).
    random_state : int, default=0

    Returns
    -------
    Ratings
        ``(rows, cols, values, shape)``.
    """
    for name, value in (
        ("n_users", n_users),
        ("n_items", n_items),
        ("n_ratings", n_ratings),
        ("rank", rank),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if n_ratings > n_users * n_items / 3:
        raise ValueError(
            f"n_ratings={n_ratings} is too dense for {n_users} x {n_items}; use at most a "
            "third of n_users * n_items."
        )
    if skew < 0 or noise < 0:
        raise ValueError("skew and noise must be non-negative.")
    rng = np.random.default_rng(random_state)
    user_weights = _popularity(n_users, skew, rng)
    item_weights = _popularity(n_items, skew, rng)

    keys = np.empty(0, dtype=np.int64)
    while keys.shape[0] < n_ratings:
        # Popular pairs repeat; draw a margin and drop the repeats.
        draw = int((n_ratings - keys.shape[0]) * 1.3) + 1000
        users = _draw(user_weights, draw, rng)
        items = _draw(item_weights, draw, rng)
        keys = np.unique(np.concatenate((keys, users * n_items + items)))
    keys = keys[rng.permutation(keys.shape[0])[:n_ratings]]
    rows, cols = np.divmod(keys, n_items)

    scale = 1.0 / np.sqrt(rank)
    user_latent = rng.standard_normal((n_users, rank)) * np.sqrt(scale)
    item_latent = rng.standard_normal((n_items, rank)) * np.sqrt(scale)
    user_bias = 0.3 * rng.standard_normal(n_users)
    item_bias = 0.5 * rng.standard_normal(n_items)
    signal = np.einsum("ij,ij->i", user_latent[rows], item_latent[cols])
    values = 3.5 + user_bias[rows] + item_bias[cols] + signal
    values += noise * rng.standard_normal(n_ratings)
    if stars or binary:
        values = np.clip(np.rint(values), 1, 5)
    if binary:
        values = np.where(values >= 4, 1.0, -1.0)
    return Ratings(
        rows.astype(np.int32),
        cols.astype(np.int32),
        values.astype(np.float32),
        (n_users, n_items),
    )


def make_interactions(
    n_users=20_000,
    n_items=2_000,
    n_interactions=500_000,
    groups=50,
    affinity=0.6,
    skew=0.8,
    random_state=0,
):
    """Generate seeded positive-only interactions with popularity and taste (for ImplicitMF).

    Users and items get Zipf-like activity and popularity (the j-th most
    active/popular has weight ``(j + 1) ** -skew``). Users and items belong to
    ``groups`` groups (``id % groups``); a share ``affinity`` of each
    interaction is with an item of the user's own group (drawn by popularity
    within the group), the rest by popularity over all items. No (user, item)
    pair appears twice; the entries come in random order.

    Parameters
    ----------
    n_users, n_items : int
    n_interactions : int
        At most a third of ``n_users * n_items``.
    groups : int, default=50
        At most ``n_items``.
    affinity : float in [0, 1], default=0.6
    skew : float, default=0.8
    random_state : int, default=0

    Returns
    -------
    Ratings
        ``(rows, cols, values, shape)`` with values all ones.
    """
    for name, value in (
        ("n_users", n_users),
        ("n_items", n_items),
        ("n_interactions", n_interactions),
        ("groups", groups),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if n_interactions > n_users * n_items / 3:
        raise ValueError(
            f"n_interactions={n_interactions} is too dense for {n_users} x {n_items}; use at "
            "most a third of n_users * n_items."
        )
    if groups > n_items:
        raise ValueError(f"groups={groups} is more than n_items={n_items}.")
    if not 0 <= affinity <= 1 or skew < 0:
        raise ValueError("affinity must be in [0, 1] and skew non-negative.")
    rng = np.random.default_rng(random_state)
    user_weights = _popularity(n_users, skew, rng)
    item_weights = _popularity(n_items, skew, rng)
    per_group = n_items // groups
    local_weights = _popularity(per_group, skew, rng)
    keys = np.empty(0, dtype=np.int64)
    while keys.shape[0] < n_interactions:
        draw = int((n_interactions - keys.shape[0]) * 1.2) + 1000
        users = _draw(user_weights, draw, rng)
        items = _draw(item_weights, draw, rng)
        own = rng.random(draw) < affinity
        items[own] = users[own] % groups + groups * _draw(local_weights, int(own.sum()), rng)
        keys = np.unique(np.concatenate((keys, users * n_items + items)))
    keys = keys[rng.permutation(keys.shape[0])[:n_interactions]]
    rows, cols = np.divmod(keys, n_items)
    return Ratings(
        rows.astype(np.int32),
        cols.astype(np.int32),
        np.ones(n_interactions, dtype=np.float32),
        (n_users, n_items),
    )


def _popularity(n, skew, rng):
    weights = np.arange(1, n + 1, dtype=np.float64) ** -skew
    weights = weights[rng.permutation(n)]
    return np.cumsum(weights / weights.sum())


def _draw(cumulative, size, rng):
    ids = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return np.minimum(ids, cumulative.shape[0] - 1).astype(np.int64)


def load_movielens(path):
    """Load MovieLens ratings from a file or an unzipped folder, detecting the variant.

    Handles 100K (``u.data``: tab-separated, no header), 1M and 10M
    (``ratings.dat``: ``::``-separated) and 20M/25M/32M/latest (``ratings.csv``
    with a header). Ratings are not shipped with fastmf; download them from
    GroupLens.

    Parameters
    ----------
    path : str or path-like
        The ratings file, or the folder that holds one of those files.

    Returns
    -------
    data : fastmf.Dataset
        Ratings keyed by the raw MovieLens ids (``data.user_map`` maps them).
    timestamps : ndarray of int64, shape (n_ratings,)
        Seconds since 1970, aligned with ``data.rows``.
    """
    import os

    from .ids import Dataset
    from .io import read_ratings

    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("u.data", "ratings.dat", "ratings.csv"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise ValueError(
                f"{path}: no MovieLens ratings file (u.data, ratings.dat or ratings.csv) here."
            )
    name = os.path.basename(path)
    if name.endswith(".csv"):
        raw = read_ratings(
            path,
            sep=",",
            header=True,
            columns=("userId", "movieId", "rating"),
            timestamp="timestamp",
        )
    elif name.endswith(".dat"):
        raw = read_ratings(path, sep="::", header=False, timestamp=3)
    else:
        raw = read_ratings(path, sep="\t", header=False, timestamp=3)
    return Dataset(raw.users, raw.items, raw.values), raw.timestamps


# GroupLens archives and their published MD5 checksums (the ``.zip.md5`` files
# beside each archive). For archives without a pinned value (32M, and
# "latest-small", which changes over time) the ``.zip.md5`` file is fetched.
MOVIELENS_ARCHIVES = {
    "100k": ("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "1m": ("ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "10m": ("ml-10m.zip", "ce571fd55effeba0271552578f2648bd"),
    "20m": ("ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3"),
    "25m": ("ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada"),
    "32m": ("ml-32m.zip", None),
    "latest-small": ("ml-latest-small.zip", None),
}
MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/"
_RATINGS_FILES = ("u.data", "ratings.dat", "ratings.csv")


def get_data_home(data_home=None):
    """Return the dataset cache folder: ``data_home``, ``$FASTMF_DATA``, or ``~/fastmf_data``."""
    import os

    folder = data_home or os.environ.get("FASTMF_DATA") or os.path.join("~", "fastmf_data")
    return os.path.abspath(os.path.expanduser(os.fspath(folder)))


def fetch_movielens(
    variant="100k", data_home=None, *, base_url=MOVIELENS_URL, md5="known", timeout=60
):
    """Download a MovieLens archive once, verify it, cache it, and load its ratings.

    With a verified archive already in the cache folder nothing is downloaded
    (this works offline). A download is written to a temporary file and only
    moved into the cache once its MD5 matches, so a failed or corrupted
    download leaves nothing behind.

    Parameters
    ----------
    variant : {"100k", "1m", "10m", "20m", "25m", "32m", "latest-small"}, default="100k"
    data_home : str or path-like, optional
        Cache folder; defaults to ``$FASTMF_DATA`` or ``~/fastmf_data``.
    base_url : str
        Where the archives are served (GroupLens by default).
    md5 : str, None or "known", default="known"
        Expected MD5 of the archive: the published one (pinned in fastmf, or
        read from the ``.zip.md5`` file GroupLens serves beside the archive),
        an explicit value, or None to skip the check.
    timeout : float, default=60
        Seconds to wait for the server.

    Returns
    -------
    data : fastmf.Dataset
    timestamps : ndarray of int64
        As :func:`load_movielens`.

    Raises
    ------
    ValueError
        Unknown variant, or a checksum mismatch (nothing is cached then).
    OSError
        The server could not be reached and no cached copy exists.
    """
    import hashlib
    import os
    import tempfile
    import urllib.request
    import zipfile

    if variant not in MOVIELENS_ARCHIVES:
        raise ValueError(f"variant must be one of {sorted(MOVIELENS_ARCHIVES)}, got {variant!r}.")
    archive_name, known_md5 = MOVIELENS_ARCHIVES[variant]
    expected = known_md5 if md5 == "known" else md5
    folder = get_data_home(data_home)
    os.makedirs(folder, exist_ok=True)
    archive = os.path.join(folder, archive_name)

    def digest(path):
        h = hashlib.md5()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    url = base_url.rstrip("/") + "/" + archive_name
    if md5 == "known" and expected is None and not os.path.exists(archive):
        with urllib.request.urlopen(url + ".md5", timeout=timeout) as response:
            expected = response.read(4096).decode("ascii", "replace").split()[-1].strip().lower()
        if len(expected) != 32:
            raise ValueError(f"{url}.md5: not an MD5 checksum file.")
    if not os.path.exists(archive) or (expected and digest(archive) != expected):
        handle, partial = tempfile.mkstemp(prefix=archive_name, suffix=".part", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    out.write(chunk)
            got = digest(partial)
            if expected and got != expected:
                raise ValueError(
                    f"{url}: checksum mismatch (MD5 {got}, expected {expected}); the download "
                    "is corrupted or the file changed upstream. Nothing was cached; try again."
                )
            os.replace(partial, archive)
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    extracted = os.path.join(folder, archive_name[: -len(".zip")])
    if not any(os.path.exists(os.path.join(extracted, name)) for name in _RATINGS_FILES):
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.namelist() if os.path.basename(m) in _RATINGS_FILES]
            if not members:
                raise ValueError(f"{archive}: no ratings file inside the archive.")
            os.makedirs(extracted, exist_ok=True)
            target = os.path.join(extracted, os.path.basename(members[0]))
            with bundle.open(members[0]) as source, open(target + ".part", "wb") as out:
                out.write(source.read())
            os.replace(target + ".part", target)
    return load_movielens(extracted)
