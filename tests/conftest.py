import hashlib
import inspect

import numpy as np
import pytest

import fastmf

# Every public model class: the contract tests run on each one, so a new model
# is covered as soon as fastmf exports it.
MODELS = [
    obj
    for name in fastmf.__all__
    if inspect.isclass(obj := getattr(fastmf, name))
    and issubclass(obj, fastmf.MatrixFactorization)
    and obj._loss is not None
]

# The reference notebook's matrices, copied from its printed output.
NOTEBOOK_RATINGS = np.array(
    [
        [0, 0, 0, 0, 3, 4, 1, 2, 0, 0],
        [0, 0, 0, 0, 5, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 4, 0, 0, 0, 3],
        [0, 0, 0, 0, 0, 0, 0, 4, 2, 0],
        [0, 0, 1, 0, 2, 0, 0, 0, 0, 2],
    ]
)
NOTEBOOK_B_RATINGS = np.array(
    [
        [1, 1, 0, 0, 0, 1, 0, 0, -1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, -1, 0, 0, -1, 0, 0, 0, 0, -1],
        [0, 0, 0, -1, 1, -1, 0, 0, -1, -1],
        [0, 0, -1, 0, 0, 0, 0, 0, 0, 0],
    ]
)


@pytest.fixture
def notebook_ratings():
    return NOTEBOOK_RATINGS.copy()


@pytest.fixture
def notebook_b_ratings():
    return NOTEBOOK_B_RATINGS.copy()


def random_coo(seed, m=30, n=20, nnz=200, binary=False):
    """Distinct random (row, col) pairs with ratings or +-1 labels."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(m * n, size=nnz, replace=False)
    rows, cols = np.divmod(keys, n)
    if binary:
        values = rng.choice([-1.0, 1.0], size=nnz)
    else:
        values = rng.integers(1, 6, size=nnz).astype(float)
    return rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), (m, n)


def low_rank(seed, m=300, n=200, rank=5, observed=0.2, noise=0.1):
    """A rank-`rank` matrix with unit-variance entries, observed at random with noise.

    Returns train and test triplets (the unobserved entries are the test set).
    """
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((m, rank)) / rank**0.25
    V = rng.standard_normal((n, rank)) / rank**0.25
    truth = U @ V.T
    mask = rng.random((m, n)) < observed
    rows, cols = np.nonzero(mask)
    values = truth[rows, cols] + noise * rng.standard_normal(rows.size)
    test_rows, test_cols = np.nonzero(~mask)
    return (rows, cols, values.astype(np.float32)), (test_rows, test_cols, truth[~mask])


def use_large_fit_kernels():
    """Make every fit take the large-fit path: grouped kernels and all threads.

    Test data is small, and fits under ``fastmf._losses.SMALL_FIT_RATINGS``
    run on one thread with the one-at-a-time kernels (the same bits). Tests
    of parallel training call this (subprocesses directly, tests through the
    ``large_fits`` fixture).
    """
    import fastmf._losses

    fastmf._losses.SMALL_FIT_RATINGS = 0


@pytest.fixture
def large_fits(monkeypatch):
    """Fits in this test take the large-fit path (see :func:`use_large_fit_kernels`)."""
    import fastmf._losses

    monkeypatch.setattr(fastmf._losses, "SMALL_FIT_RATINGS", 0)


def model_coo(model_class, seed, m=30, n=20, nnz=200):
    """Like :func:`random_coo`, with values ``model_class`` trains on (its loss's kind)."""
    return random_coo(seed, m, n, nnz, binary=model_class()._loss.binary)


@pytest.fixture(params=MODELS, ids=lambda model_class: model_class.__name__)
def model_class(request):
    """Each public model class in turn."""
    return request.param


@pytest.fixture
def coo_ratings():
    return random_coo(0)


@pytest.fixture
def coo_labels():
    return random_coo(1, binary=True)


@pytest.fixture(scope="module")
def client():
    """A Dask client on a loopback LocalCluster: two worker processes, one thread each."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    )
    with distributed.Client(cluster, timeout=60) as dask_client:
        yield dask_client
    cluster.close()


def digest(model):
    """A hash of everything a fit produces that must match bit for bit."""
    h = hashlib.sha256()
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "loss_curve_"):
        h.update(getattr(model, name).tobytes())
    h.update(np.float64(model.global_mean_).tobytes())
    return h.hexdigest()
