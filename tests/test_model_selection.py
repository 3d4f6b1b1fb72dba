import numpy as np
import pytest
from conftest import random_coo

import fastmf
from fastmf.model_selection import KFold, cross_validate, train_test_split


def keys(triplets, n):
    return set((triplets[0].astype(np.int64) * n + triplets[1]).tolist())


def test_random_split_partitions_the_entries():
    rows, cols, values, shape = random_coo(0, nnz=500)
    train, test = train_test_split((rows, cols, values), test_size=0.2, random_state=0)
    assert len(test[0]) == 100 and len(train[0]) == 400
    all_keys = keys((rows, cols), shape[1])
    assert keys(train, shape[1]) | keys(test, shape[1]) == all_keys
    assert not keys(train, shape[1]) & keys(test, shape[1])
    again = train_test_split((rows, cols, values), test_size=0.2, random_state=0)
    np.testing.assert_array_equal(again[1][0], test[0])


def test_per_user_fraction_and_last_n():
    rows, cols, values, shape = random_coo(1, nnz=500)
    train, test = train_test_split((rows, cols, values), 0.25, by="user", random_state=0)
    for user in np.unique(rows):
        total = (rows == user).sum()
        held = (test[0] == user).sum()
        assert held == min(int(np.floor(0.25 * total)), total - 1)
        assert (train[0] == user).sum() >= 1
    timestamps = np.random.default_rng(2).permutation(rows.size)
    train, test = train_test_split(
        (rows, cols, values), by="user", last_n=2, order=timestamps, shape=shape
    )
    stamp = dict(zip(zip(rows.tolist(), cols.tolist()), timestamps.tolist()))
    for user in np.unique(rows):
        held = [stamp[(user, i)] for i in test[1][test[0] == user]]
        kept = [stamp[(user, i)] for i in train[1][train[0] == user]]
        assert len(held) == min(2, (rows == user).sum() - 1)
        assert not held or min(held) > max(kept)  # the last ones by time
    with pytest.raises(ValueError, match="needs order"):
        train_test_split((rows, cols, values), by="user", last_n=2)


def test_kfold_and_cross_validate():
    rows, cols, values, shape = random_coo(2, nnz=300)
    folds = list(KFold(3, random_state=0).split((rows, cols, values), shape))
    assert len(folds) == 3
    tests = [keys(test, shape[1]) for _, test in folds]
    assert set().union(*tests) == keys((rows, cols), shape[1])
    assert sum(len(t) for t in tests) == 300
    model = fastmf.RealValueMF(k=3, n_epochs=5, tol=None, random_state=0)
    scores = cross_validate(
        model,
        (rows, cols, values),
        {"rmse": lambda m, t: fastmf.metrics.rmse(t[2], m.predict(t[0], t[1]))},
        cv=KFold(3, random_state=0),
        shape=shape,
    )
    assert scores["rmse"].shape == (3,) and (scores["rmse"] > 0).all()
    assert not hasattr(model, "user_factors_")  # the template model stays unfitted
