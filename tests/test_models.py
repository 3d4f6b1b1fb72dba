"""Behaviour shared by every model (one contract, run on each), and model-specific checks."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import low_rank, model_coo, random_coo
from sklearn.base import clone

import fastmf
from fastmf import BinaryMF, ConvergenceWarning, NotFittedError, RealValueMF


def data_for(model_class, seed=0):
    return model_coo(model_class, seed)


@pytest.fixture(params=[1, 2], ids=["serial", "parallel"])
def n_threads(request, monkeypatch):
    if request.param > 1:  # the parallel path even on small test data
        import fastmf._losses

        monkeypatch.setattr(fastmf._losses, "SMALL_FIT_RATINGS", 0)
    return request.param


@pytest.fixture
def small(n_threads):
    """Model factory: small, seeded, fixed epochs, on 1 or 2 threads (grid 2 so both run)."""

    def make(model_class, **params):
        defaults = dict(k=4, n_epochs=5, tol=None, random_state=0, n_threads=n_threads, grid=2)
        defaults.update(params)
        return model_class(**defaults)

    return make


class TestContract:
    def test_fit_returns_self_and_sets_fitted_attributes(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        model = small(model_class)
        assert model.fit((rows, cols, values), shape=shape) is model
        assert model.user_factors_.shape == (shape[0], 4)
        assert model.item_factors_.shape == (shape[1], 4)
        assert model.user_factors_.dtype == np.float32
        assert model.user_factors_.flags.c_contiguous
        assert model.n_iter_ == 5 and model.loss_curve_.shape == (5,)
        assert (model.n_users_, model.n_items_) == shape

    def test_training_lowers_the_objective(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        model = small(model_class, n_epochs=30, lr=0.05, learning_rate="constant")
        model.fit((rows, cols, values), shape=shape)
        assert model.loss_curve_[-1] < 0.7 * model.loss_curve_[0]

    def test_params_round_trip_and_clone(self, model_class, small):
        model = model_class(k=7, lr=0.02, random_state=3)
        params = model.get_params()
        assert params["k"] == 7 and params["lr"] == 0.02 and params["random_state"] == 3
        assert set(params) >= {
            "k",
            "lr",
            "l2",
            "n_epochs",
            "tol",
            "init_scale",
            "random_state",
            "n_threads",
            "verbose",
            "n_iter_no_change",
        }
        cloned = clone(model)
        assert cloned is not model and cloned.get_params() == params
        assert model.set_params(k=9) is model and model.k == 9
        with pytest.raises(ValueError, match="Invalid parameter 'rank'"):
            model.set_params(rank=3)

    def test_init_stores_arguments_unchanged(self, model_class, small):
        model = model_class(k="not validated yet", lr=-1)
        assert model.k == "not validated yet" and model.lr == -1
        assert "k='not validated yet'" in repr(model)

    def test_same_seed_same_factors_other_seed_different(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        a = small(model_class, random_state=42).fit((rows, cols, values), shape=shape)
        b = small(model_class, random_state=42).fit((rows, cols, values), shape=shape)
        c = small(model_class, random_state=43).fit((rows, cols, values), shape=shape)
        np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
        np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
        np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
        assert not np.array_equal(a.user_factors_, c.user_factors_)

    def test_none_seed_follows_numpy_global_seed(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        np.random.seed(0)
        a = small(model_class, random_state=None).fit((rows, cols, values), shape=shape)
        np.random.seed(0)
        b = small(model_class, random_state=None).fit((rows, cols, values), shape=shape)
        np.testing.assert_array_equal(a.user_factors_, b.user_factors_)

    def test_dense_sparse_and_triplets_give_the_same_model(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        dense = np.zeros(shape)
        dense[rows, cols] = values
        reference = small(model_class).fit((rows, cols, values), shape=shape)
        shuffled = np.random.default_rng(0).permutation(rows.size)
        inputs = [
            dense,
            sp.csr_matrix(dense),
            sp.coo_array(dense),
            sp.csc_matrix(dense),
            (rows[shuffled], cols[shuffled], values[shuffled]),
            dense.tolist(),
        ]
        for X in inputs:
            other = small(model_class).fit(X, shape=shape if isinstance(X, tuple) else None)
            # Entries reach the kernels in one canonical order: identical factors.
            np.testing.assert_array_equal(other.user_factors_, reference.user_factors_)
            np.testing.assert_array_equal(other.item_factors_, reference.item_factors_)

    def test_shape_is_inferred_from_triplets(self, model_class, small):
        model = small(model_class).fit(([0, 3], [5, 1], [1.0, 1.0]))
        assert (model.n_users_, model.n_items_) == (4, 6)

    def test_predict_broadcasts_and_matches_factors(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        model = small(model_class).fit((rows, cols, values), shape=shape)
        scores = model.decision_function(np.arange(3)[:, None], np.arange(4)[None, :])
        assert scores.shape == (3, 4)
        expected = (
            model.global_mean_
            + model.user_bias_[:3, None]
            + model.item_bias_[None, :4]
            + model.P[:3] @ model.Q[:4].T
        )
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
        assert model.predict(2, 3).shape == ()

    def test_unfitted_model_raises_not_fitted(self, model_class, small):
        model = model_class()
        for call in (
            lambda: model.predict([0], [0]),
            lambda: model.similar_items(0),
            lambda: model.user_similarity(),
            lambda: model.P,
        ):
            with pytest.raises(NotFittedError, match="not fitted"):
                call()

    def test_out_of_range_ids_raise_at_predict(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        model = small(model_class).fit((rows, cols, values), shape=shape)
        with pytest.raises(ValueError, match="user id 30 is out of range"):
            model.predict([0, 30], [0, 0])
        with pytest.raises(ValueError, match="negative"):
            model.predict([0], [-1])
        with pytest.raises(TypeError, match="integer"):
            model.predict(["a"], [0])
        with pytest.raises(ValueError, match="item id 99 is out of range"):
            model.similar_items(99)

    def test_P_and_Q_are_read_only_aliases(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        model = small(model_class).fit((rows, cols, values), shape=shape)
        np.testing.assert_array_equal(model.P, model.user_factors_)
        np.testing.assert_array_equal(model.Q, model.item_factors_)
        with pytest.raises(ValueError):
            model.P[0, 0] = 1.0
        with pytest.raises(AttributeError):
            model.P = None

    def test_similar_items_and_users_match_brute_force(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        model = small(model_class).fit((rows, cols, values), shape=shape)
        for matrix, method, size in (
            (model.item_similarity(), model.similar_items, shape[1]),
            (model.user_similarity(), model.similar_users, shape[0]),
        ):
            assert matrix.shape == (size, size)
            ids, scores = method(3, n=5)
            expected = [j for j in np.argsort(-matrix[3], kind="stable") if j != 3][:5]
            np.testing.assert_array_equal(ids, expected)
            np.testing.assert_allclose(scores, matrix[3, expected], rtol=1e-5, atol=1e-6)
            all_ids, _ = method(3, n=10_000)
            assert len(all_ids) == size - 1 and 3 not in all_ids

    def test_cap_without_convergence_warns(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        with pytest.warns(ConvergenceWarning, match="n_epochs=2"):
            small(model_class, n_epochs=2, tol=1e-12).fit((rows, cols, values), shape=shape)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            small(model_class, n_epochs=2, tol=None).fit((rows, cols, values), shape=shape)

    def test_converges_and_stops_before_the_cap(self, model_class, small):
        rows, cols, values, shape = data_for(model_class)
        model = small(model_class, n_epochs=2000, tol=1e-3, lr=0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.fit((rows, cols, values), shape=shape)
        assert 3 <= model.n_iter_ < 2000
        # Each of the last n_iter_no_change epochs improved less than tol on the best before it.
        curve = model.loss_curve_
        for epoch in range(model.n_iter_ - model.n_iter_no_change, model.n_iter_):
            best_before = curve[:epoch].min()
            assert (best_before - curve[epoch]) / best_before < 1e-3

    def test_verbose_prints_one_line_per_epoch(self, model_class, small, capsys):
        rows, cols, values, shape = data_for(model_class)
        small(model_class, verbose=2, n_epochs=3).fit((rows, cols, values), shape=shape)
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
        assert len(lines) == 3 and "objective" in lines[0] and "ratings/s" in lines[0]
        small(model_class, n_epochs=3).fit((rows, cols, values), shape=shape)
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err == ""  # silent by default

    def test_verbose_1_shows_a_progress_bar(self, model_class, small, capsys):
        pytest.importorskip("tqdm")
        rows, cols, values, shape = data_for(model_class)
        small(model_class, verbose=1, n_epochs=3).fit((rows, cols, values), shape=shape)
        captured = capsys.readouterr()
        assert "3/3" in captured.err and model_class.__name__ in captured.err
        assert "epoch    1/3" not in captured.out


def test_recovers_a_low_rank_matrix_to_the_noise_level():
    # Rank 5, 300 x 200, 20% observed, noise 0.1. Least squares with 2,500
    # parameters from ~12,000 observations has an excess error of about
    # sqrt(params / observations) ~ 0.46 of the noise, so held-out RMSE against the
    # true matrix should be near 0.1 * 0.46 ~ 0.05 and is asserted below 0.15
    # (1.5x the noise level), far below the 1.0 spread of the entries.
    train, (test_rows, test_cols, truth) = low_rank(0)
    model = RealValueMF(k=5, lr=0.02, l2=0.01, n_epochs=400, tol=1e-6, random_state=0)
    model.fit(train, shape=(300, 200))
    rmse = fastmf.metrics.rmse(truth, model.predict(test_rows, test_cols))
    assert rmse < 0.15
    train_rmse = fastmf.metrics.rmse(train[2], model.predict(train[0], train[1]))
    assert 0.05 < train_rmse < 0.12  # fits the signal, not the noise


def test_binary_labels_01_option():
    rows, cols, values, shape = random_coo(3, binary=True)
    zero_one = (values > 0).astype(np.float32)
    a = BinaryMF(k=4, n_epochs=5, tol=None, random_state=0, labels="01")
    a.fit((rows, cols, zero_one), shape=shape)
    b = BinaryMF(k=4, n_epochs=5, tol=None, random_state=0).fit((rows, cols, values), shape=shape)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert set(np.unique(a.predict(rows, cols))) <= {0, 1}
    assert set(np.unique(b.predict(rows, cols))) <= {-1, 1}
    proba = b.predict_proba(rows, cols)
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-b.decision_function(rows, cols))), rtol=1e-5)


def test_base_class_cannot_be_fitted():
    with pytest.raises(TypeError, match="base class"):
        fastmf.MatrixFactorization(n_epochs=1).fit(np.eye(3))


def test_biases_learn_mean_and_offsets_and_enter_predictions():
    # Ratings made of a mean plus user and item offsets only: biases alone
    # explain them, so a model with biases fits them almost exactly.
    rng = np.random.default_rng(0)
    m, n = 60, 40
    user_offset, item_offset = rng.normal(0, 0.5, m), rng.normal(0, 0.5, n)
    rows, cols = np.nonzero(rng.random((m, n)) < 0.5)
    values = 3.5 + user_offset[rows] + item_offset[cols]
    model = RealValueMF(
        k=2, biases=True, l2=1e-4, lr=0.02, n_epochs=300, tol=None, random_state=0
    ).fit((rows, cols, values), shape=(m, n))
    assert model.global_mean_ == pytest.approx(values.mean(), rel=1e-6)
    scores = model.predict(rows, cols)
    expected = (
        model.global_mean_
        + model.user_bias_[rows]
        + model.item_bias_[cols]
        + np.einsum("ij,ij->i", model.P[rows], model.Q[cols])
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    assert fastmf.metrics.rmse(values, scores) < 0.05
    # The biases carry the offsets (up to a shared constant).
    assert np.corrcoef(model.user_bias_, user_offset)[0, 1] > 0.95
    without = RealValueMF(k=2, biases=False, random_state=0, n_epochs=3, tol=None)
    without.fit((rows, cols, values))
    assert without.global_mean_ == 0 and not without.user_bias_.any()


def test_adagrad_converges_with_a_large_learning_rate():
    train, (test_rows, test_cols, truth) = low_rank(1)
    model = RealValueMF(
        k=5, lr=0.1, l2=0.01, learning_rate="adagrad", n_epochs=200, tol=None, random_state=0
    ).fit(train, shape=(300, 200))
    assert fastmf.metrics.rmse(truth, model.predict(test_rows, test_cols)) < 0.2
    with pytest.raises(ValueError, match="learning_rate must be one of"):
        RealValueMF(learning_rate="adam").fit(train)


def test_lr_none_picks_the_schedules_default_by_k():
    # The fast path's lr: AdaGrad 0.15 up to k=64 and 0.1 above for the
    # squared loss (bench/README.md), 0.2 for the logistic loss; the constant
    # schedule's defaults do not depend on k.
    def lr(model_class, **params):
        return model_class(**params)._validated_params()["lr"]

    assert lr(RealValueMF) == 0.005 and lr(RealValueMF, k=128) == 0.005
    assert lr(RealValueMF, learning_rate="adagrad") == 0.15
    assert lr(RealValueMF, learning_rate="adagrad", k=64) == 0.15
    assert lr(RealValueMF, learning_rate="adagrad", k=65) == 0.1
    assert lr(BinaryMF, learning_rate="adagrad", k=128) == 0.2
    assert lr(BinaryMF) == 0.02
    assert lr(RealValueMF, learning_rate="adagrad", lr=0.3) == 0.3


def test_initial_factors_are_the_same_bits_on_any_thread_count():
    # Chunks of rows have generators of their own, so drawing them on threads
    # changes nothing; each chunk is a standard normal draw, scaled.
    from fastmf._state import NORMAL_CHUNK_ROWS, normal_factors

    n_rows = 2 * NORMAL_CHUNK_ROWS + 5
    drawn = [
        normal_factors(np.random.default_rng(7), n_rows, 4, 0.2, threads) for threads in (1, 2, 3)
    ]
    for other in drawn[1:]:
        np.testing.assert_array_equal(other, drawn[0])
    seeds = np.random.default_rng(7).integers(0, 2**63 - 1, size=3, dtype=np.int64)
    last = np.random.Generator(np.random.PCG64(int(seeds[2]))).standard_normal((5, 4), np.float32)
    np.testing.assert_array_equal(drawn[0][-5:], last * np.float32(0.2 / 2.0))
    assert abs(drawn[0].std() - 0.1) < 0.002 and abs(drawn[0].mean()) < 0.002
    # Chunks are independent streams, not one stream repeated.
    assert not np.array_equal(drawn[0][:5], drawn[0][NORMAL_CHUNK_ROWS : NORMAL_CHUNK_ROWS + 5])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_trained_factors_start_on_a_cache_line(n_threads):
    # Rows that start on cache lines make the epochs faster (fastmf._state);
    # a warm start's grown factors are realigned too.
    from fastmf._state import normal_factors

    drawn = normal_factors(np.random.default_rng(3), 1001, 7, 0.1)
    seed = np.random.default_rng(3).integers(0, 2**63 - 1, size=1, dtype=np.int64)[0]
    expected = np.random.Generator(np.random.PCG64(int(seed))).standard_normal(
        (1001, 7), dtype=np.float32
    )
    np.testing.assert_array_equal(drawn, expected * np.float32(0.1 / np.sqrt(7)))
    rows, cols, values, shape = random_coo(2)
    model = RealValueMF(k=5, n_epochs=2, tol=None, random_state=0, n_threads=n_threads)
    for fit in (
        lambda: model.fit((rows, cols, values), shape=shape),
        lambda: model.partial_fit((rows, cols, values), shape=(shape[0] + 3, shape[1] + 2)),
    ):
        fit()
        for factors in (drawn, model.user_factors_, model.item_factors_):
            assert factors.ctypes.data % 64 == 0
            assert factors.flags.c_contiguous and factors.flags.writeable
