"""fold_in (new users, item factors fixed) and partial_fit (warm start, growing)."""

import numpy as np
import pytest
from conftest import low_rank, random_coo

from fastmf import BinaryMF, RealValueMF


def converged(model_class, biases, binary=False):
    if binary:
        rows, cols, values, shape = random_coo(7, m=40, n=30, nnz=600, binary=True)
        data = (rows, cols, values)
    else:
        data, _ = low_rank(3, m=60, n=40, observed=0.5, noise=0.1)
        shape = (60, 40)
    model = model_class(
        k=3,
        lr=0.02,
        l2=0.05,
        n_epochs=3000,
        tol=None,
        biases=biases,
        random_state=0,
    )
    return model.fit(data, shape=shape), data


def rows_of(data, users):
    rows, cols, values = data
    pick = np.isin(rows, users)
    remap = {u: j for j, u in enumerate(users)}
    return np.array([remap[u] for u in rows[pick]]), cols[pick], values[pick]


@pytest.mark.parametrize("biases", [False, True])
def test_fold_in_of_training_users_reproduces_their_predictions(biases):
    model, data = converged(RealValueMF, biases)
    users = [0, 5, 17]
    factors, bias = model.fold_in(
        rows_of(data, users),
    )
    items = np.arange(model.n_items_)
    for j, user in enumerate(users):
        learned = model.predict(np.full(items.size, user), items)
        folded = model.global_mean_ + bias[j] + model.item_bias_ + model.Q @ factors[j]
        assert np.abs(folded - learned).max() < 0.05 * np.abs(learned).max()


def test_fold_in_logistic_solves_the_user_objective():
    model, data = converged(BinaryMF, True, binary=True)
    users = [1, 2]
    rows, cols, labels = rows_of(data, users)
    factors, bias = model.fold_in((rows, cols, labels))
    for j in range(len(users)):
        mine = rows == j
        x = np.append(factors[j], bias[j]).astype(np.float64)
        Z = np.hstack([model.Q[cols[mine]], np.ones((mine.sum(), 1))])
        margin = labels[mine] * (Z @ x + model.item_bias_[cols[mine]])
        gradient = -Z.T @ (labels[mine] / (1 + np.exp(margin))) + 0.05 * mine.sum() * x
        assert np.abs(gradient).max() < 1e-4  # a stationary point: Newton converged
        learned = model.predict_proba(np.full(mine.sum(), users[j]), cols[mine])
        folded = 1 / (1 + np.exp(-(Z @ x + model.item_bias_[cols[mine]])))
        assert np.abs(folded - learned).max() < 0.05


def test_fold_in_errors_and_empty_users():
    model, data = converged(RealValueMF, False)
    factors, bias = model.fold_in(([0, 2], [1, 3], [4.0, 2.0]))
    assert factors.shape == (3, 3) and not factors[1].any()  # user 1 has no ratings
    with pytest.raises(ValueError, match="item id 40 is out of range"):
        model.fold_in(([0], [40], [1.0]))


def test_partial_fit_grows_and_learns_new_users():
    rows, cols, values, shape = random_coo(8, m=30, n=20, nnz=300)
    model = RealValueMF(k=3, n_epochs=30, tol=None, random_state=0, biases=True)
    model.fit((rows, cols, values), shape=shape)
    old_items = model.item_factors_.copy()
    new_rows = np.repeat(np.arange(30, 35), 6)
    new_cols = np.tile(np.arange(6), 5)
    new_values = np.full(30, 5.0)
    model.partial_fit((new_rows, new_cols, new_values))
    assert (model.n_users_, model.n_items_) == (35, 20)
    assert model.user_factors_.shape == (35, 3)
    # The new users learned their (high) ratings.
    assert model.predict(new_rows, new_cols).mean() > 4.0
    # Old items moved only a little (warm start, not a refit from scratch).
    assert np.abs(model.item_factors_[6:] - old_items[6:]).max() < 1.0
    # Seen items are the union: old users keep theirs, new users have the new ones.
    ids, _ = model.recommend(30, n=20)
    assert not set(ids[ids >= 0].tolist()) & set(range(6))
    user0_seen = set(cols[rows == 0].tolist())
    ids0, _ = model.recommend(0, n=20)
    assert not set(ids0[ids0 >= 0].tolist()) & user0_seen
    with pytest.raises(ValueError, match="smaller than the fitted"):
        model.partial_fit(([0], [0], [1.0]), shape=(10, 10))
