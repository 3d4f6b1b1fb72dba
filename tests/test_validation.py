"""Bad input gets a clear error before any kernel runs, and a failed fit changes nothing."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_coo

from fastmf import BinaryMF, DivergenceError, RealValueMF
from fastmf._validation import check_coo

ROWS = np.array([0, 1, 2])
COLS = np.array([1, 0, 2])
VALS = np.array([1.0, 2.0, 3.0])


def fit(X, model=None, **kwargs):
    model = model or RealValueMF(k=2, n_epochs=2, tol=None, random_state=0)
    return model.fit(X, **kwargs)


@pytest.mark.parametrize(
    "X, kwargs, error, match",
    [
        ((ROWS, COLS, np.array([1.0, np.nan, 3.0])), {}, ValueError, "NaN or infinity.*entry 1"),
        ((ROWS, COLS, np.array([1.0, np.inf, 3.0])), {}, ValueError, "NaN or infinity"),
        ((ROWS, COLS, np.array([1.0, 1e39, 3.0])), {}, ValueError, "float32"),
        (np.array([[1.0, np.nan], [0, 2]]), {}, ValueError, "row 0, column 1.*replace NaN by 0"),
        ((np.array([0, -1, 2]), COLS, VALS), {}, ValueError, "negative row id"),
        ((ROWS, np.array([0, 1, -5]), VALS), {}, ValueError, "negative column id.*-5"),
        ((np.array([0, 1.5, 2]), COLS, VALS), {}, ValueError, "integer row ids; entry 1"),
        ((np.array(["a", "b", "c"]), COLS, VALS), {}, TypeError, "integer row ids"),
        ((np.array([True, False, True]), COLS, VALS), {}, TypeError, "integer"),
        ((ROWS, COLS, VALS), {"shape": (2, 3)}, ValueError, "row index 2 is out of range"),
        ((ROWS, COLS, VALS), {"shape": (3, 2)}, ValueError, "column index 2 is out of range"),
        ((ROWS, COLS, VALS), {"shape": (3,)}, ValueError, "shape must be a pair"),
        ((ROWS, COLS, VALS), {"shape": (0, 3)}, ValueError, "positive integers"),
        ((ROWS, COLS[:2], VALS), {}, ValueError, "same length; got 3, 2 and 3"),
        ((ROWS, COLS), {}, ValueError, r"\(rows, cols, values\)"),
        ((ROWS[:0], COLS[:0], VALS[:0]), {}, ValueError, "no observed entries"),
        (np.zeros((3, 4)), {}, ValueError, "no observed entries"),
        (sp.csr_matrix((3, 4)), {}, ValueError, "no observed entries"),
        (np.ones(5), {}, ValueError, "must be 2-D"),
        (np.ones((2, 2, 2)), {}, ValueError, "must be 2-D"),
        (np.array([["a", "b"]]), {}, TypeError, "real numbers"),
        (np.array([[1 + 1j, 0]]), {}, TypeError, "real numbers"),
        ("ratings.csv", {}, TypeError, "Cannot factorize a str"),
        (None, {}, TypeError, "Cannot factorize"),
        (np.eye(3), {"shape": (4, 4)}, ValueError, "does not match"),
        (
            (np.array([0, 1, 0]), np.array([1, 1, 1]), VALS),
            {},
            ValueError,
            r"more than once, e.g. \(0, 1\).*duplicates='sum'",
        ),
        ((ROWS, COLS, VALS), {"duplicates": "first"}, ValueError, "duplicates must be one of"),
    ],
)
def test_bad_input_raises_a_clear_error(X, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(X, **kwargs)


def test_duplicates_in_a_non_canonical_sparse_matrix_are_caught():
    coo = sp.coo_matrix((VALS, (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    with pytest.raises(ValueError, match="more than once"):
        fit(coo)
    non_canonical_csr = sp.csr_matrix(
        (VALS, np.array([1, 1, 0]), np.array([0, 2, 3])), shape=(2, 2)
    )
    with pytest.raises(ValueError, match="more than once"):
        fit(non_canonical_csr)


def test_duplicates_sum_and_last():
    rows, cols = np.array([0, 0, 1, 0]), np.array([1, 1, 0, 1])
    values = np.array([1.0, 2.0, 5.0, 4.0])
    summed = fit(
        (rows, cols, values),
        duplicates="sum",
        model=RealValueMF(k=1, biases=False, n_epochs=1, tol=None, lr=1e-9, random_state=0),
    )
    last = fit(
        (rows, cols, values),
        duplicates="last",
        model=RealValueMF(k=1, biases=False, n_epochs=1, tol=None, lr=1e-9, random_state=0),
    )
    # With lr ~ 0 the factors barely move, so the objective shows the targets:
    # sum gives (0,1) -> 7, last gives (0,1) -> 4; (1,0) -> 5 in both.
    init_loss_sum = summed.loss_curve_[0]
    init_loss_last = last.loss_curve_[0]
    assert init_loss_sum == pytest.approx((0.5 * 49 + 0.5 * 25) / 2, rel=1e-2)
    assert init_loss_last == pytest.approx((0.5 * 16 + 0.5 * 25) / 2, rel=1e-2)


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": 2.5}, TypeError, "k must be an integer"),
        ({"k": True}, TypeError, "k must be an integer"),
        ({"lr": 0}, ValueError, "lr must be > 0"),
        ({"lr": -0.1}, ValueError, "lr must be > 0"),
        ({"lr": float("nan")}, TypeError, "lr must be a finite number"),
        ({"l2": -1e-3}, ValueError, "l2 must be >= 0"),
        ({"n_epochs": 0}, ValueError, "n_epochs must be >= 1"),
        ({"tol": -1.0}, ValueError, "tol must be >= 0"),
        ({"init_scale": 0}, ValueError, "init_scale must be > 0"),
        ({"n_iter_no_change": 0}, ValueError, "n_iter_no_change must be >= 1"),
        ({"n_threads": -1}, ValueError, "n_threads must be None, 0"),
        ({"n_threads": 1.5}, ValueError, "n_threads must be None, 0"),
        ({"grid": 0}, ValueError, "grid must be >= 1"),
        ({"random_state": -3}, ValueError, "random_state must be non-negative"),
        ({"random_state": "seed"}, TypeError, "random_state must be"),
    ],
)
def test_bad_hyperparameters_raise_at_fit(params, error, match):
    model = RealValueMF(**params)  # __init__ stores, never validates
    with pytest.raises(error, match=match):
        model.fit((ROWS, COLS, VALS))


@pytest.mark.parametrize(
    "values, labels, match",
    [
        (np.array([1.0, 0.5, -1.0]), "pm1", r"must be -1 or 1.*\[0.5\].*entry 1"),
        (np.array([1.0, 0.0, 1.0]), "pm1", "labels='01'"),
        (np.array([1.0, -1.0, 1.0]), "01", r"must be 0 or 1.*\[-1.0\]"),
        (np.array([2.0, 1.0, 1.0]), "01", r"must be 0 or 1"),
    ],
)
def test_binary_labels_outside_the_accepted_set(values, labels, match):
    with pytest.raises(ValueError, match=match):
        BinaryMF(labels=labels, n_epochs=1).fit((ROWS, COLS, values))


def test_binary_rejects_ambiguous_options():
    with pytest.raises(ValueError, match="dense matrix 0 means 'missing'"):
        BinaryMF(labels="01").fit(np.array([[1, 0], [0, 1]]))
    with pytest.raises(ValueError, match="labels must be 'pm1' or '01'"):
        BinaryMF(labels="bool").fit((ROWS, COLS, np.array([1.0, -1.0, 1.0])))
    with pytest.raises(ValueError, match="duplicates='sum' would add labels"):
        BinaryMF().fit((ROWS, COLS, np.array([1.0, -1.0, 1.0])), duplicates="sum")


def test_divergence_raises_with_epoch_and_advice():
    rows, cols, values, shape = random_coo(0)
    model = RealValueMF(k=8, lr=50.0, n_epochs=20, tol=None, random_state=0)
    with pytest.raises(DivergenceError, match=r"diverged in epoch \d+.*smaller learning rate"):
        model.fit((rows, cols, values * 100), shape=shape)
    assert not hasattr(model, "user_factors_")


@pytest.mark.parametrize(
    "bad_call",
    [
        lambda m: m.fit((ROWS, COLS, np.array([1.0, np.nan, 3.0]))),
        lambda m: m.fit((ROWS, COLS, VALS), shape=(1, 1)),
        lambda m: m.set_params(lr=1e4).fit((ROWS, COLS, VALS * 1e3)),
        lambda m: m.set_params(k=0).fit((ROWS, COLS, VALS)),
        lambda m: m.fit(np.zeros((2, 2))),
    ],
)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_a_failed_fit_leaves_the_fitted_model_exactly_as_it_was(bad_call, n_threads):
    rows, cols, values, shape = random_coo(0)
    model = RealValueMF(k=4, n_epochs=3, tol=None, random_state=0, n_threads=n_threads, grid=2)
    model.fit((rows, cols, values), shape=shape)
    before = {key: np.copy(value) for key, value in vars(model).items() if key.endswith("_")}
    predictions = model.predict(rows, cols)
    with pytest.raises((ValueError, TypeError, FloatingPointError)):
        bad_call(model)
    after = {key: value for key, value in vars(model).items() if key.endswith("_")}
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    np.testing.assert_array_equal(model.predict(rows, cols), predictions)


def test_input_arrays_are_not_modified():
    rows, cols, values, shape = random_coo(0)
    copies = rows.copy(), cols.copy(), values.copy()
    dense = np.zeros(shape)
    dense[rows, cols] = values
    dense_copy = dense.copy()
    RealValueMF(k=2, n_epochs=2, tol=None).fit((rows, cols, values), shape=shape)
    RealValueMF(k=2, n_epochs=2, tol=None).fit(dense)
    for original, copy in zip((rows, cols, values, dense), (*copies, dense_copy)):
        np.testing.assert_array_equal(original, copy)


def test_float_ids_with_integral_values_and_explicit_zeros_are_accepted():
    model = fit((np.array([0.0, 1.0, 2.0]), COLS, np.array([0.0, 2.0, 3.0])))
    assert model.n_users_ == 3
    # An explicit zero stored in a sparse matrix is an observation.
    matrix = sp.csr_matrix((np.array([0.0, 1.0]), (np.array([0, 1]), np.array([0, 1]))))
    assert check_coo(matrix).nnz == 2
    # Both entries are fitted: the initial objective averages over two terms
    # (0.25 up to the small initial products; one term alone would give 0 or 0.5).
    model = fit(
        matrix, model=RealValueMF(k=1, biases=False, n_epochs=1, tol=None, lr=1e-9, random_state=0)
    )
    assert model.loss_curve_[0] == pytest.approx((0.5 * 0 + 0.5 * 1) / 2, abs=0.05)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", ["user_factors", "item_factors", "user_bias", "item_bias"])
def test_the_backend_reports_any_non_finite_parameter(bad, where):
    # The finiteness flag comes from the penalty's pass, not a pass of its own:
    # one bad value anywhere, in a row without ratings too, must clear it.
    from fastmf._backend import LocalBackend
    from fastmf._blocks import arrange
    from fastmf._losses import LOSSES
    from fastmf._state import TrainingState

    rows, cols, values, (m, n) = random_coo(4)
    m, n = m + 1, n + 1  # the last user and item have no ratings
    layout = arrange(check_coo((rows, cols, values), (m, n)), 2, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    user_factors = rng.standard_normal((m, 3)).astype(np.float32)
    item_factors = rng.standard_normal((n, 3)).astype(np.float32)
    state = TrainingState.start(layout, user_factors, item_factors, biases=True, adagrad=False)
    backend = LocalBackend(1)
    backend.start(layout, LOSSES["squared"], state)
    assert backend.objective()[2]
    counts = layout.user_counts if where.startswith("user") else layout.item_counts
    unrated = int(np.flatnonzero(counts == 0)[0])
    array = getattr(state, where)
    for row in (int(np.flatnonzero(counts)[0]), unrated):
        kept = array[row].copy()
        array[row] = bad
        assert not backend.objective()[2]
        array[row] = kept
        assert backend.objective()[2]
