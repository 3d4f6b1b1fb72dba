"""fit(X, sample_weight=...): each entry's data loss and gradient scaled by its weight."""

import numpy as np
import pytest
from _reference import sgd_epoch
from conftest import low_rank, random_coo

import fastmf
from fastmf import BinaryMF, ImplicitMF, RealValueMF, _kernels

BLOCK = {
    "squared": _kernels.sgd_block_squared,
    "logistic": _kernels.sgd_block_logistic,
    "logistic/one-at-a-time": _kernels.sgd_block_logistic_one_at_a_time,
}


@pytest.mark.parametrize("kernel", sorted(BLOCK))
@pytest.mark.parametrize("extras", [False, True])
def test_weighted_block_kernel_matches_the_reference(kernel, extras):
    loss = kernel.split("/")[0]
    rows, cols, values, (m, n) = random_coo(30, binary=loss == "logistic")
    rng = np.random.default_rng(31)
    weights = rng.uniform(0, 3, rows.size).astype(np.float32)
    weights[::7] = 0.0
    P = (0.5 * rng.standard_normal((m, 6))).astype(np.float32)
    Q = (0.5 * rng.standard_normal((n, 6))).astype(np.float32)
    extra = [None] * 4
    if extras:
        extra = [
            (0.2 * rng.standard_normal(m)).astype(np.float32),
            (0.2 * rng.standard_normal(n)).astype(np.float32),
            np.ones(m, np.float32),
            np.ones(n, np.float32),
        ]
    refs = [None if a is None else a.astype(np.float64) for a in extra]
    order = np.arange(rows.size)
    P_ref, Q_ref, _ = sgd_epoch(loss, rows, cols, values, order, P, Q, 0.05, 0.1, *refs,
                                weights=weights)  # fmt: skip
    BLOCK[kernel](rows, cols, values, 0, rows.size, P, Q, *extra, np.float32(0.05),
                  np.float32(0.1), weights)  # fmt: skip
    np.testing.assert_allclose(P, P_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-4, atol=1e-5)
    for got, ref in zip(extra, refs):
        if ref is not None:
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_class", [RealValueMF, BinaryMF])
@pytest.mark.parametrize("threads", [1, 2])
def test_unit_weights_give_the_unweighted_fit_bit_for_bit(model_class, threads, monkeypatch):
    if threads > 1:
        monkeypatch.setattr(fastmf._losses, "SMALL_FIT_RATINGS", 0)
    rows, cols, values, shape = random_coo(32, m=60, n=40, nnz=900,
                                           binary=model_class is BinaryMF)  # fmt: skip
    params = dict(k=4, n_epochs=4, tol=None, random_state=0, n_threads=threads, grid=3,
                  learning_rate="adagrad", lr=0.1)  # fmt: skip
    plain = model_class(**params).fit((rows, cols, values), shape=shape)
    weighted = model_class(**params).fit(
        (rows, cols, values), shape=shape, sample_weight=np.ones(rows.size)
    )
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(weighted, name))
    if model_class is BinaryMF:
        # The unweighted logistic pass takes one log per LOG_EVERY entries (of
        # their likelihoods' product), the weighted one a log per entry.
        np.testing.assert_allclose(plain.loss_curve_, weighted.loss_curve_, rtol=1e-12)
    else:
        np.testing.assert_array_equal(plain.loss_curve_, weighted.loss_curve_)


def test_the_objective_is_the_weighted_loss():
    (rows, cols, values), _ = low_rank(33, m=80, n=60)
    weights = np.random.default_rng(34).uniform(0.2, 2.0, rows.size).astype(np.float32)
    model = RealValueMF(k=3, n_epochs=5, tol=None, random_state=0, l2=0.05, monitor="exact")
    model.fit((rows, cols, values), sample_weight=weights)
    scores = model.predict(rows, cols).astype(np.float64)
    data = 0.5 * weights * (values - scores) ** 2
    P, Q = model.user_factors_.astype(float), model.item_factors_.astype(float)
    bu, bi = model.user_bias_.astype(float), model.item_bias_.astype(float)
    penalty = (P[rows] ** 2).sum(1) + (Q[cols] ** 2).sum(1) + bu[rows] ** 2 + bi[cols] ** 2
    expected = np.mean(data + 0.5 * 0.05 * penalty)
    assert model.loss_curve_[-1] == pytest.approx(expected, rel=1e-4)


def test_zero_weights_make_corrupted_entries_harmless():
    (rows, cols, values), (test_rows, test_cols, truth) = low_rank(35)
    rng = np.random.default_rng(36)
    bad = rng.random(rows.size) < 0.2
    corrupted = values.copy()
    corrupted[bad] = 25.0
    params = dict(k=5, lr=0.02, l2=0.02, n_epochs=60, tol=None, random_state=0)
    shape = (300, 200)

    def rmse(model):
        return np.sqrt(np.mean((model.predict(test_rows, test_cols) - truth) ** 2))

    clean = RealValueMF(**params).fit((rows[~bad], cols[~bad], values[~bad]), shape=shape)
    ignored = RealValueMF(**params).fit(
        (rows, cols, corrupted), shape=shape, sample_weight=(~bad).astype(float)
    )
    polluted = RealValueMF(**params).fit((rows, cols, corrupted), shape=shape)
    assert rmse(ignored) < 1.15 * rmse(clean)
    assert rmse(polluted) > 2 * rmse(ignored)


def test_dataset_weights_follow_its_ratings():
    users = ["u1", "u2", "u1", "u3", "u2", "u3"]
    items = ["a", "b", "b", "a", "c", "c"]
    values = np.array([5.0, 3.0, 4.0, 2.0, 1.0, 4.0])
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.5])
    params = dict(k=2, n_epochs=5, tol=None, random_state=0)
    as_dataset = RealValueMF(**params).fit(
        fastmf.Dataset(users, items, values), sample_weight=weights
    )
    data = fastmf.Dataset(users, items, values)
    as_triplets = RealValueMF(**params).fit(
        (data.rows, data.cols, values), shape=data.shape, sample_weight=weights
    )
    np.testing.assert_array_equal(as_dataset.item_factors_, as_triplets.item_factors_)


def test_implicit_weights_multiply_the_confidences():
    users, items = np.array([0, 0, 1, 2, 2, 3]), np.array([1, 2, 0, 1, 3, 2])
    weights = np.array([1.0, 2.0, 3.0, 1.0, 0.5, 2.0], np.float32)
    params = dict(k=2, n_epochs=3, random_state=0)
    weighted = ImplicitMF(**params).fit((users, items), sample_weight=weights)
    valued = ImplicitMF(**params).fit((users, items, weights))
    np.testing.assert_array_equal(weighted.item_factors_, valued.item_factors_)


@pytest.mark.parametrize(
    "weights, duplicates, match",
    [
        (np.ones(3), "raise", "one weight per entry of X \\(4\\)"),
        (np.ones((4, 1)), "raise", "1-D"),
        ([1, 2, -1, 1], "raise", "entry 2 is -1.0"),
        ([1, np.nan, 1, 1], "raise", "finite and >= 0"),
        (np.zeros(4), "raise", "all zeros"),
        (np.ones(4), "sum", "duplicates='sum' is ambiguous"),
    ],
)
def test_bad_weights_are_named_and_the_model_is_unchanged(weights, duplicates, match):
    X = ([0, 1, 2, 0], [0, 1, 0, 2], [1.0, 2.0, 3.0, 4.0])
    model = RealValueMF(k=2, n_epochs=2, tol=None, random_state=0).fit(X)
    before = model.item_factors_.copy()
    with pytest.raises(ValueError, match=match):
        model.fit(X, sample_weight=weights, duplicates=duplicates)
    np.testing.assert_array_equal(model.item_factors_, before)
    with pytest.raises(TypeError, match="must hold numbers"):
        model.fit(X, sample_weight=["a", "b", "c", "d"])


def test_partial_fit_takes_weights_too():
    rows, cols, values, shape = random_coo(39, m=40, n=30, nnz=300)
    params = dict(k=3, n_epochs=3, tol=None, random_state=0)
    first = RealValueMF(**params).fit((rows[:200], cols[:200], values[:200]), shape=shape)
    second = RealValueMF(**params).fit((rows[:200], cols[:200], values[:200]), shape=shape)
    new = (rows[200:], cols[200:], values[200:])
    first.partial_fit(new, shape=shape)
    second.partial_fit(new, shape=shape, sample_weight=np.ones(100))
    np.testing.assert_array_equal(first.item_factors_, second.item_factors_)
    second.partial_fit(new, shape=shape, sample_weight=np.full(100, 3.0))
    assert not np.array_equal(first.item_factors_, second.item_factors_)
