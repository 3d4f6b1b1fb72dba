"""ImplicitMF and its sampled kernels: oracles, sampling, training, validation, input."""

import numpy as np
import pytest
import scipy.sparse as sp
from _reference import bpr_loss, sampled_block, softplus

import fastmf
from fastmf import ImplicitMF, _kernels
from fastmf.metrics import ndcg_at_k, precision_at_k

KERNELS = {True: _kernels.sgd_block_bpr, False: _kernels.sgd_block_sampled_logistic}


def sorted_block(seed, n_users, item_lo, item_hi, per_user):
    """A block as the layout stores it for a sampled loss: users' runs contiguous, items sorted."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        items = np.sort(rng.choice(np.arange(item_lo, item_hi), per_user[u], replace=False))
        rows += [u] * items.size
        cols += items.tolist()
    values = rng.integers(1, 4, size=len(rows)).astype(np.float32)
    return np.array(rows, np.int32), np.array(cols, np.int32), values


def run_kernel(bpr, block, item_lo, item_hi, state, arrays, lr, l2, n_neg, weight, popularity,
               update=True):  # fmt: skip
    rows, cols, values = block
    return KERNELS[bpr](
        rows, cols, values, 0, rows.size, item_lo, item_hi, np.uint64(state), *arrays,
        np.float32(lr), np.float32(l2), np.int64(n_neg), np.float32(weight), popularity, update,
    )  # fmt: skip


@pytest.mark.parametrize("bpr", [True, False], ids=["bpr", "logistic"])
@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("adagrad", [False, True])
@pytest.mark.parametrize("popularity", [False, True])
def test_one_block_matches_the_reference_with_the_same_draws(bpr, biases, adagrad, popularity):
    n_users, item_lo, item_hi, k = 6, 10, 40, 5
    block = sorted_block(1, n_users, item_lo, item_hi, [3, 1, 7, 2, 28, 5])  # user 4: most items
    rng = np.random.default_rng(2)
    P = (0.3 * rng.standard_normal((n_users, k))).astype(np.float32)
    Q = (0.3 * rng.standard_normal((50, k))).astype(np.float32)
    user_bias = (0.1 * rng.standard_normal(n_users)).astype(np.float32) if biases else None
    item_bias = (0.1 * rng.standard_normal(50)).astype(np.float32) if biases else None
    user_acc = np.ones(n_users, np.float32) if adagrad else None
    item_acc = np.ones(50, np.float32) if adagrad else None
    copies = [None if a is None else a.astype(np.float64) for a in
              (P, Q, user_bias, item_bias, user_acc, item_acc)]  # fmt: skip
    state, lr, l2, n_neg, weight = 12345, 0.1, 0.05, 3, 0.7
    got = run_kernel(bpr, block, item_lo, item_hi, state,
                     (P, Q, user_bias, item_bias, user_acc, item_acc), lr, l2, n_neg, weight,
                     popularity)  # fmt: skip
    expected, triples = sampled_block(bpr, *block, item_lo, item_hi, state, *copies, lr, l2,
                                      n_neg, weight, popularity)  # fmt: skip
    assert got == pytest.approx(expected, rel=1e-5)
    for kernel_array, reference in zip((P, Q, user_bias, item_bias, user_acc, item_acc), copies):
        if kernel_array is not None:
            np.testing.assert_allclose(kernel_array, reference, rtol=2e-4, atol=2e-5)
    # The draws: inside the stripe, never one of the user's own items.
    rows, cols, _ = block
    for u, i, j in triples:
        assert item_lo <= j < item_hi
        assert j not in cols[rows == u] and i in cols[rows == u]
    # User 4 has 28 of the 30 items: some of its draws fail 8 times and are skipped.
    assert sum(1 for u, _, _ in triples if u == 4) < 28 * n_neg


@pytest.mark.parametrize("bpr", [True, False], ids=["bpr", "logistic"])
def test_evaluation_pass_changes_nothing_and_returns_the_same_loss(bpr):
    block = sorted_block(3, 5, 0, 30, [4, 4, 2, 9, 1])
    rng = np.random.default_rng(4)
    P = rng.standard_normal((5, 4)).astype(np.float32)
    Q = rng.standard_normal((30, 4)).astype(np.float32)
    arrays = (P, Q, np.zeros(5, np.float32), np.zeros(30, np.float32), None, None)
    before = [a.copy() for a in arrays[:4]]
    loss = run_kernel(bpr, block, 0, 30, 7, arrays, 0.1, 0.01, 2, 1.0, False, update=False)
    for a, b in zip(arrays[:4], before):
        np.testing.assert_array_equal(a, b)
    copies = [a.astype(np.float64) for a in before]
    expected, _ = sampled_block(bpr, *block, 0, 30, 7, *copies, None, None, 0.0, 0.0, 2, 1.0,
                                False)  # fmt: skip
    assert loss == pytest.approx(expected, rel=1e-5)


def test_bpr_step_is_the_gradient_by_finite_differences():
    # One positive, one negative, tiny lr: each row's step / -lr is the
    # gradient of the triple's loss plus l2/2 of the three rows' norms.
    rng = np.random.default_rng(5)
    k, l2, lr, weight = 4, 0.2, 1e-3, 2.0
    p, qi, qj = rng.standard_normal((3, k))
    bi, bj = 0.3, -0.2

    def f(p_, qi_, qj_, bi_, bj_):
        norms = p_ @ p_ + qi_ @ qi_ + qj_ @ qj_ + bi_**2 + bj_**2
        return bpr_loss(p_, qi_, qj_, bi_, bj_, weight) + 0.5 * l2 * norms

    eps = 1e-6
    args = [p, qi, qj, np.array([bi]), np.array([bj])]
    numeric = []
    for which in range(5):
        grad = []
        for e in np.eye(args[which].size):
            up = [a.copy() for a in args]
            down = [a.copy() for a in args]
            up[which] = up[which] + eps * e
            down[which] = down[which] - eps * e
            grad.append(
                (f(*up[:3], up[3][0], up[4][0]) - f(*down[:3], down[3][0], down[4][0])) / (2 * eps)
            )
        numeric.append(np.array(grad))
    # The kernel on a block of one user with item 0 (positive) in a stripe {0, 1}.
    P = p[None].astype(np.float32)
    Q = np.vstack([qi, qj]).astype(np.float32)
    item_bias = np.array([bi, bj], np.float32)
    block = (np.array([0], np.int32), np.array([0], np.int32), np.array([weight], np.float32))
    start = [P.copy(), Q.copy(), item_bias.copy()]
    run_kernel(True, block, 0, 2, 1, (P, Q, None, item_bias, None, None), lr, l2, 1, 1.0, False)
    steps = [P[0] - start[0][0], Q[0] - start[1][0], Q[1] - start[1][1],
             item_bias[:1] - start[2][:1], item_bias[1:] - start[2][1:]]  # fmt: skip
    for step, grad in zip(steps, numeric):
        np.testing.assert_allclose(step / -lr, grad, rtol=2e-2, atol=2e-3)


def test_the_sampled_logistic_loss_is_the_weighted_softplus():
    P = np.array([[2.0]], np.float32)
    Q = np.array([[1.5], [-1.0]], np.float32)
    block = (np.array([0], np.int32), np.array([0], np.int32), np.array([3.0], np.float32))
    arrays = (P, Q, None, None, None, None)
    loss = run_kernel(False, block, 0, 2, 9, arrays, 0.0, 0.0, 1, 0.25, False, update=False)
    # The only possible negative is item 1: 3 * softplus(-3) + 0.25 * softplus(-2).
    assert loss == pytest.approx(3 * softplus(-3.0) + 0.25 * softplus(-2.0), rel=1e-6)


# ------------------------------------------------------------------ training
def planted(seed, n_users=300, n_items=200, groups=5, per_user=12, noise=0.1):
    """Users interact mostly with the items of their group; returns train, test, shape."""
    rng = np.random.default_rng(seed)
    group_of_item = np.arange(n_items) % groups
    rows, cols = [], []
    for u in range(n_users):
        mine = np.flatnonzero(group_of_item == u % groups)
        others = np.flatnonzero(group_of_item != u % groups)
        n_noise = rng.binomial(per_user, noise)
        items = np.concatenate(
            [
                rng.choice(mine, per_user - n_noise, replace=False),
                rng.choice(others, n_noise, False),
            ]
        )
        rows += [u] * items.size
        cols += items.tolist()
    rows, cols = np.array(rows), np.array(cols)
    test = rng.random(rows.size) < 0.2
    train = (rows[~test], cols[~test], np.ones((~test).sum(), np.float32))
    return train, (rows[test], cols[test], np.ones(test.sum(), np.float32)), (n_users, n_items)


@pytest.mark.parametrize("loss", ["logistic", "bpr"])
def test_learns_the_planted_groups_far_better_than_popularity(loss):
    train, test, shape = planted(0)
    # Three seeds: one fit's precision varies by about +-0.006 with the seed.
    learned = [
        precision_at_k(ImplicitMF(k=8, loss=loss, random_state=seed).fit(train, shape=shape),
                       test, k=10)
        for seed in range(3)
    ]  # fmt: skip
    # Popularity: the most interacted items overall.
    counts = np.bincount(train[1], minlength=shape[1]).astype(float)
    hits = []
    for u in np.unique(test[0]):
        scores = counts.copy()
        scores[train[1][train[0] == u]] = -1
        top = np.argsort(-scores, kind="stable")[:10]
        hits.append(np.isin(top, test[1][test[0] == u]).sum() / 10)
    # Knowing each user's group exactly gives about 0.08 here (2.4 held-out
    # items among the ~30 unseen items of the group).
    assert min(learned) > 3 * np.mean(hits)
    assert np.mean(learned) > 0.065


@pytest.mark.parametrize("loss", ["logistic", "bpr"])
@pytest.mark.parametrize("negative_sampling", ["uniform", "popularity"])
def test_identical_on_one_and_two_threads(loss, negative_sampling, large_fits):
    train, _, shape = planted(1)
    fits = [
        ImplicitMF(
            k=8,
            loss=loss,
            negative_sampling=negative_sampling,
            n_epochs=3,
            random_state=0,
            n_threads=t,
            grid=4,
        ).fit(train, shape=shape)  # fmt: skip
        for t in (1, 2)
    ]
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "loss_curve_"):
        np.testing.assert_array_equal(getattr(fits[0], name), getattr(fits[1], name))


def test_early_stopping_on_held_out_ndcg_keeps_the_best_epoch():
    train, test, shape = planted(2)
    model = ImplicitMF(k=8, n_epochs=60, lr=0.3, patience=3, random_state=0)
    model.fit(train, X_val=test, shape=shape)
    assert model.val_curve_.shape == (model.n_iter_,)
    assert model.best_epoch_ == int(np.argmax(model.val_curve_)) + 1
    # The kept factors are the best epoch's: its NDCG@10 is what ndcg_at_k gives.
    assert ndcg_at_k(model, test, k=10) == pytest.approx(model.val_curve_.max(), abs=1e-6)
    assert model.val_curve_.max() > 0.12  # about 0.17 at best on this data


def test_validation_does_not_change_the_training_draws():
    train, test, shape = planted(3)
    plain = ImplicitMF(k=4, n_epochs=4, random_state=0).fit(train, shape=shape)
    validated = ImplicitMF(k=4, n_epochs=4, random_state=0, patience=10)
    validated.fit(train, X_val=test, shape=shape)
    # Every epoch's sampled loss is the same: the same draws, the same steps.
    np.testing.assert_array_equal(plain.loss_curve_, validated.loss_curve_)


# --------------------------------------------------------------------- input
def test_interactions_without_values_are_weight_one():
    users, items = np.array([0, 0, 1, 2, 2]), np.array([1, 2, 0, 1, 3])
    ones = np.ones(5, np.float32)
    reference = ImplicitMF(k=2, n_epochs=3, random_state=0).fit((users, items, ones))
    for X in ((users, items), (users, items, None), sp.coo_array((ones, (users, items)))):
        model = ImplicitMF(k=2, n_epochs=3, random_state=0).fit(X)
        np.testing.assert_array_equal(model.item_factors_, reference.item_factors_)
    dataset = fastmf.Dataset(["a", "a", "b", "c", "c"], ["x", "y", "w", "x", "z"])
    model = ImplicitMF(k=2, n_epochs=3, random_state=0).fit(dataset)
    ids, _ = model.recommend("b", n=2)
    assert set(ids.tolist()) <= {"x", "y", "z"}


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_weights_must_be_positive(bad):
    with pytest.raises(ValueError, match="confidence weights and must be > 0"):
        ImplicitMF().fit(([0, 1], [1, 0], [1.0, bad]))


def test_a_failed_fit_leaves_the_fitted_model_unchanged():
    train, _, shape = planted(4)
    model = ImplicitMF(k=4, n_epochs=2, random_state=0).fit(train, shape=shape)
    before = model.item_factors_.copy()
    with pytest.raises(ValueError):
        model.fit(([0, 1], [1, 0], [1.0, -2.0]))
    np.testing.assert_array_equal(model.item_factors_, before)


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(loss="warp"), ValueError, "loss must be one of"),
        (dict(n_negatives=0), ValueError, "n_negatives must be in 1..1000"),
        (dict(n_negatives=2.5), TypeError, "n_negatives must be an integer"),
        (dict(negative_weight=0), ValueError, "negative_weight must be > 0"),
        (dict(negative_weight=float("nan")), TypeError, "negative_weight must be a finite"),
        (dict(negative_sampling="zipf"), ValueError, "negative_sampling must be one of"),
    ],
)
def test_bad_hyperparameters_are_named(params, error, match):
    with pytest.raises(error, match=match):
        ImplicitMF(**params).fit(([0, 1], [1, 0]))


# ------------------------------------------------------------- what it serves
@pytest.mark.parametrize("loss", ["logistic", "bpr"])
def test_fold_in_recommends_the_new_users_group(loss):
    # A user folded in from its interactions gets the items of its planted
    # group (items i with i % 5 == user % 5), as the trained users do.
    train, _, shape = planted(5)
    model = ImplicitMF(k=8, loss=loss, random_state=0).fit(train, shape=shape)
    in_group = []
    for user in range(20):
        items = train[1][train[0] == user]
        factors, bias = model.fold_in((np.zeros(items.size, int), items))
        scores = factors[0] @ model.item_factors_.T + model.item_bias_
        scores[items] = -np.inf
        folded = np.argsort(-scores)[:10]
        in_group.append(np.mean(folded % 5 == user % 5))
        if loss == "bpr":
            assert bias[0] == 0.0
    trained = model.recommend(np.arange(20), n=10)[0]
    trained_in_group = np.mean(trained % 5 == (np.arange(20) % 5)[:, None])
    assert np.mean(in_group) > 0.9 and trained_in_group > 0.9


def test_save_load_round_trip_keeps_the_loss_and_the_recommendations(tmp_path):
    train, _, shape = planted(6)
    model = ImplicitMF(k=4, loss="bpr", n_epochs=3, random_state=0).fit(train, shape=shape)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastmf.load(path)
    assert isinstance(loaded, ImplicitMF) and loaded.loss == "bpr"
    np.testing.assert_array_equal(
        loaded.recommend(np.arange(5))[0], model.recommend(np.arange(5))[0]
    )


def test_ranking_metrics_count_every_held_out_interaction_as_relevant():
    # On positive-only data the held-out values are all 1 (or confidences):
    # with no threshold, each held-out item is relevant, whatever its value.
    from fastmf.metrics import map_at_k, recall_at_k

    train, test, shape = planted(7)
    model = ImplicitMF(k=8, random_state=0).fit(train, shape=shape)
    weighted = (test[0], test[1], np.random.default_rng(0).uniform(0.5, 3, test[0].size))
    users = np.unique(test[0])
    top = model.recommend(users, n=10)[0]
    hits = np.array([np.isin(top[r], test[1][test[0] == u]) for r, u in enumerate(users)])
    relevant = np.array([np.sum(test[0] == u) for u in users])
    discounts = 1 / np.log2(np.arange(10) + 2)
    ideal = np.array([discounts[: min(n, 10)].sum() for n in relevant])
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, 11)
    expected = {
        precision_at_k: hits.sum(1).mean() / 10,
        recall_at_k: (hits.sum(1) / relevant).mean(),
        ndcg_at_k: ((hits * discounts).sum(1) / ideal).mean(),
        map_at_k: ((precision_at * hits).sum(1) / np.minimum(relevant, 10)).mean(),
    }
    for metric, value in expected.items():
        assert metric(model, test, k=10) == pytest.approx(value)
        assert metric(model, weighted, k=10) == pytest.approx(value)
    assert expected[precision_at_k] > 0.05


@pytest.mark.parametrize("loss", ["logistic", "bpr"])
def test_checkpoint_and_resume_draw_the_same_negatives(tmp_path, loss):
    from conftest import digest

    train, _, shape = planted(8)
    settings = dict(k=4, loss=loss, n_epochs=6, random_state=3, grid=3)
    full = ImplicitMF(**settings).fit(train, shape=shape)
    path = tmp_path / "ckpt.npz"
    ImplicitMF(**settings).fit(
        train, shape=shape, checkpoint=path, callback=lambda info: info["epoch"] < 3
    )
    resumed = ImplicitMF(**settings).fit(train, shape=shape, resume=path)
    assert digest(resumed) == digest(full) and resumed.n_iter_ == 6
    with pytest.raises(ValueError, match="other data or hyperparameters"):
        ImplicitMF(**{**settings, "n_negatives": 2}).fit(train, shape=shape, resume=path)


def test_partial_fit_adds_users_and_items_and_remembers_what_they_saw():
    train, _, (m, n) = planted(9)
    old = train[0] < 250
    model = ImplicitMF(k=8, random_state=0).fit((train[0][old], train[1][old]), shape=(250, n))
    new_users = (train[0][~old], train[1][~old])
    model.partial_fit(new_users, shape=(m, n + 5))
    assert (model.n_users_, model.n_items_) == (m, n + 5)
    for user in (3, 260):  # an old user and a new one
        seen = set(train[1][train[0] == user].tolist())
        ids = model.recommend(user, n=20)[0]
        assert not seen & set(ids.tolist())
    # The new users learned their groups from their own interactions.
    top = model.recommend(np.arange(250, m), n=5)[0]
    assert np.mean(top % 5 == (np.arange(250, m) % 5)[:, None]) > 0.7


def test_make_interactions_is_seeded_distinct_and_has_group_taste():
    from fastmf.datasets import make_interactions

    data = make_interactions(2000, 500, 20_000, groups=10, affinity=0.6, random_state=4)
    again = make_interactions(2000, 500, 20_000, groups=10, affinity=0.6, random_state=4)
    assert data.shape == (2000, 500) and data.rows.size == 20_000
    np.testing.assert_array_equal(data.rows, again.rows)
    assert np.unique(data.rows.astype(np.int64) * 500 + data.cols).size == 20_000
    assert (data.values == 1).all()
    own = np.mean(data.rows % 10 == data.cols % 10)
    assert 0.55 < own < 0.75  # 60% by taste, plus the popular items that happen to match
    with pytest.raises(ValueError, match="too dense"):
        make_interactions(10, 10, 50)
    with pytest.raises(ValueError, match="affinity"):
        make_interactions(100, 100, 100, affinity=1.5)
