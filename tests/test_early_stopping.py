"""fit(X, X_val=...): validation curve, patience, best epoch restored; callbacks."""

import warnings

import numpy as np
import pytest
from conftest import low_rank, random_coo

import fastmf
from fastmf import BinaryMF, RealValueMF


def split(seed=0):
    train, (test_rows, test_cols, truth) = low_rank(seed, m=120, n=80, observed=0.3, noise=0.3)
    pick = np.random.default_rng(seed).random(test_rows.size) < 0.05
    val = (test_rows[pick], test_cols[pick], truth[pick].astype(np.float32))
    return train, val


@pytest.mark.parametrize("n_threads", [1, 2])
def test_early_stopping_keeps_the_best_epoch(n_threads):
    train, val = split()
    # Large rank, no regularization: the validation error turns up (overfitting).
    model = RealValueMF(
        k=30,
        lr=0.05,
        l2=0.0,
        n_epochs=300,
        tol=None,
        patience=4,
        random_state=0,
        n_threads=n_threads,
        grid=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(train, X_val=val, shape=(120, 80))
    curve = model.val_curve_
    assert curve.shape == (model.n_iter_,) and model.loss_curve_.shape == (model.n_iter_,)
    assert model.best_epoch_ == int(np.argmin(curve)) + 1
    assert model.n_iter_ == model.best_epoch_ + 4 < 300
    # The kept factors are the best epoch's: their validation RMSE is the minimum.
    rmse = fastmf.metrics.rmse(val[2], model.predict(val[0], val[1]))
    assert rmse == pytest.approx(curve.min(), rel=1e-5)
    assert rmse < curve[-1]


def test_validation_with_biases_and_binary_labels():
    train, val = split(1)
    model = RealValueMF(k=4, biases=True, n_epochs=30, tol=None, random_state=0)
    model.fit(train, X_val=val, shape=(120, 80))
    assert model.val_curve_.min() == pytest.approx(
        fastmf.metrics.rmse(val[2], model.predict(val[0], val[1])), rel=1e-5
    )
    rows, cols, labels, shape = random_coo(2, binary=True)
    clf = BinaryMF(k=4, n_epochs=10, tol=None, random_state=0)
    clf.fit(
        (rows[:150], cols[:150], labels[:150]),
        X_val=(rows[150:], cols[150:], labels[150:]),
        shape=shape,
    )
    proba = clf.predict_proba(rows[150:], cols[150:])
    assert clf.val_curve_.min() == pytest.approx(
        fastmf.metrics.log_loss(labels[150:], proba), rel=1e-4
    )
    with pytest.raises(ValueError, match="must be -1 or 1"):
        clf.fit((rows, cols, labels), X_val=(rows[:5], cols[:5], np.full(5, 0.5)), shape=shape)


def test_bad_validation_data_fails_before_training():
    rows, cols, values, shape = random_coo(3)
    model = RealValueMF(k=2, n_epochs=2, tol=None).fit((rows, cols, values), shape=shape)
    before = model.user_factors_.copy()
    with pytest.raises(ValueError, match="out of range"):
        model.fit((rows, cols, values), X_val=([0], [shape[1]], [1.0]), shape=shape)
    np.testing.assert_array_equal(model.user_factors_, before)


def test_callback_sees_every_epoch_and_can_stop():
    rows, cols, values, shape = random_coo(4)
    seen = []

    def callback(info):
        seen.append(info)
        return info["epoch"] < 3

    model = RealValueMF(k=2, n_epochs=50, tol=None, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit((rows, cols, values), shape=shape, callback=callback)
    assert model.n_iter_ == 3 and [info["epoch"] for info in seen] == [1, 2, 3]
    assert seen[-1]["loss"] == model.loss_curve_[-1] and seen[0]["val_loss"] is None
    with pytest.raises(TypeError, match="callback must be callable"):
        model.fit((rows, cols, values), callback=3)
