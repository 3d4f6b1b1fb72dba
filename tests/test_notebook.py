"""The reference notebook's examples, with its own settings (k=3, its L2 weights)."""

import numpy as np
from conftest import NOTEBOOK_RATINGS

import fastmf


def test_real_value_mf_reproduces_every_observed_rating(notebook_ratings):
    model = fastmf.RealValueMF(
        k=3, l2=0.04, lr=0.05, n_epochs=5000, tol=None, biases=False, random_state=0
    )
    model.fit(notebook_ratings)
    observed = notebook_ratings != 0
    rows, cols = np.nonzero(observed)
    predicted = model.predict(rows, cols)
    assert np.abs(predicted - notebook_ratings[rows, cols]).max() < 0.1
    # The notebook's full prediction matrix, for known and unknown entries alike.
    full = model.P @ model.Q.T
    np.testing.assert_allclose(full[rows, cols], predicted, rtol=1e-5)


def test_binary_mf_separates_the_labels(notebook_b_ratings):
    model = fastmf.BinaryMF(
        k=3, l2=0.0001, lr=0.1, n_epochs=5000, tol=None, biases=False, random_state=0
    )
    model.fit(notebook_b_ratings)
    rows, cols = np.nonzero(notebook_b_ratings)
    proba = model.predict_proba(rows, cols)
    labels = notebook_b_ratings[rows, cols]
    assert (proba[labels == 1] > 0.9).all()
    assert (proba[labels == -1] < 0.1).all()
    np.testing.assert_array_equal(model.predict(rows, cols), labels)
    # User 1 has no responses at all: its factors never receive a gradient, so
    # they keep their initial values (those of a one-epoch fit with the same
    # seed, bit for bit) and its probabilities stay away from the confident ones.
    one_epoch = fastmf.BinaryMF(
        k=3, l2=0.0001, lr=0.1, n_epochs=1, tol=None, biases=False, random_state=0
    ).fit(notebook_b_ratings)
    np.testing.assert_array_equal(model.user_factors_[1], one_epoch.user_factors_[1])
    assert not np.array_equal(model.user_factors_[0], one_epoch.user_factors_[0])
    user1 = model.predict_proba(np.full(10, 1), np.arange(10))
    assert (np.abs(user1 - 0.5) < 0.4).all()


def notebook_mf(R, k, n_epoch=5000, lr=0.0003, l2=0.04):
    """The notebook's mf, verbatim but for the dense objective (unused by its loop)."""
    m, n = R.shape
    P = np.random.rand(m, k)
    Q = np.random.rand(n, k)
    for _ in range(n_epoch):
        for u, i in zip(*R.nonzero()):
            err_ui = R[u, i] - P[u, :].dot(Q[i, :])
            for j in range(k):
                P[u][j] += lr * (2 * err_ui * Q[i][j] - l2 / 2 * P[u][j])
                Q[i][j] += lr * (2 * err_ui * P[u][j] - l2 / 2 * Q[i][j])
    return P, Q


def test_mf_does_as_well_as_the_notebook():
    R = NOTEBOOK_RATINGS
    rows, cols = np.nonzero(R)
    np.random.seed(777)
    P_ref, Q_ref = notebook_mf(R, 3, n_epoch=1000)
    reference_error = np.abs((P_ref @ Q_ref.T)[rows, cols] - R[rows, cols]).max()

    np.random.seed(777)
    P, Q = fastmf.mf(R, k=3, n_epoch=1000)
    error = np.abs((P @ Q.T)[rows, cols] - R[rows, cols]).max()
    assert P.shape == (5, 3) and Q.shape == (10, 3)
    assert P.dtype == np.float32
    assert error <= max(1.25 * reference_error, 0.15)

    # Like the notebook, np.random.seed makes the call repeatable ...
    np.random.seed(777)
    P_again, _ = fastmf.mf(R, k=3, n_epoch=1000)
    np.testing.assert_array_equal(P, P_again)
    # ... and with an explicit seed it ignores the global generator.
    np.random.seed(1)
    P_seeded, _ = fastmf.mf(R, k=3, n_epoch=10, random_state=5)
    np.random.seed(2)
    P_seeded_again, _ = fastmf.mf(R, k=3, n_epoch=10, random_state=5)
    np.testing.assert_array_equal(P_seeded, P_seeded_again)


def test_cosine_similarity_matches_the_notebook_formula(notebook_ratings):
    model = fastmf.RealValueMF(
        k=3, l2=0.04, lr=0.05, n_epochs=50, tol=None, biases=False, random_state=0
    )
    P = model.fit(notebook_ratings).P.astype(np.float64)
    norms = np.sqrt((P**2).sum(axis=1))
    expected = P @ P.T / np.outer(norms, norms)
    np.testing.assert_allclose(model.user_similarity(), expected, rtol=1e-5, atol=1e-6)
