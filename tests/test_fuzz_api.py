"""Fuzz: random bad arguments to every public method and odd inputs to fit.

Each call must return a correct result or raise a documented exception
(ValueError, TypeError — NotFittedError and ModelFileError are ValueErrors —
or DivergenceError), and a failed call must leave a fitted model unchanged.
"""

import hashlib

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_coo
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastmf import BinaryMF, Dataset, DivergenceError, RealValueMF

DOCUMENTED = (ValueError, TypeError, DivergenceError)
STATE = ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "loss_curve_",
         "seen_indptr_", "seen_items_", "global_mean_", "n_users_", "n_items_")  # fmt: skip


def _digest(model):
    h = hashlib.sha256(repr(sorted(model.get_params().items())).encode())
    for name in STATE:
        h.update(np.asarray(getattr(model, name)).tobytes())
    return h.hexdigest()


def _models():
    rows, cols, values, shape = random_coo(0, m=12, n=9, nnz=60)
    labels = np.where(values > 3, 1.0, -1.0).astype(np.float32)
    real = RealValueMF(k=2, n_epochs=2, tol=None, random_state=0).fit(
        (rows, cols, values), shape=shape
    )
    binary = BinaryMF(k=2, n_epochs=2, tol=None, random_state=0).fit(
        (rows, cols, labels), shape=shape
    )
    raw = RealValueMF(k=2, n_epochs=2, tol=None, random_state=0).fit(
        Dataset([f"u{r}" for r in rows], [f"i{c}" for c in cols], values)
    )
    return {"real": real, "binary": binary, "raw": raw}


MODELS = _models()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.sampled_from(["u1", "i2", "raise", "nan", "mean"]),
)
arrays = st.one_of(
    st.lists(st.integers(-3, 20), max_size=6).map(np.array),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6).map(np.array),
    st.lists(st.sampled_from(["u1", "u2", "i3", "zz"]), max_size=6).map(np.array),
    st.integers(-3, 20).map(np.array),  # 0-d
    st.just(np.zeros((2, 2), dtype=np.int64)),
    st.just(np.array([], dtype=np.int64)),
    st.just(np.array([object(), 1], dtype=object)),
)
odd = st.one_of(scalars, arrays, st.lists(scalars, max_size=3), st.tuples(scalars, scalars))

CALLS = {
    "predict": lambda m, a, b, c: m.predict(a, b, unknown=c) if c in ("raise", "nan", "mean") else m.predict(a, b),
    "decision_function": lambda m, a, b, c: m.decision_function(a, b),
    "recommend": lambda m, a, b, c: m.recommend(a, n=b if isinstance(b, int) else 3, items=None if c is None else c),
    "recommend_n": lambda m, a, b, c: m.recommend(0 if m is not MODELS["raw"] else "u1", n=a),
    "similar_users": lambda m, a, b, c: m.similar_users(a, n=b if isinstance(b, int) else 2),
    "similar_items": lambda m, a, b, c: m.similar_items(a, n=b if isinstance(b, int) else 2),
    "fold_in": lambda m, a, b, c: m.fold_in((a, b, c) if c is not None else a),
    "partial_fit": lambda m, a, b, c: m.partial_fit((a, b, c)),
    "fit": lambda m, a, b, c: m.fit((a, b, c)),
    "set_params_fit": lambda m, a, b, c: m.set_params(**{"k": a, "lr": b}).fit(
        (np.array([0, 1, 2]), np.array([0, 1, 1]), np.array([1.0, 2.0, 3.0]))
    ),
}  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model_name=st.sampled_from(sorted(MODELS)),
    call=st.sampled_from(sorted(CALLS)),
    a=odd,
    b=odd,
    c=odd,
)
def test_every_method_gives_a_result_or_a_documented_error_and_keeps_the_model(
    model_name, call, a, b, c
):
    model = MODELS[model_name]
    params = model.get_params()
    before = _digest(model)
    try:
        result = CALLS[call](model, a, b, c)
    except DOCUMENTED as error:
        event(f"{call}: {type(error).__name__}")
        model.set_params(**params)  # set_params itself may have run before the failure
        assert _digest(model) == before
        return
    finally:
        if call in ("fit", "partial_fit", "set_params_fit"):
            MODELS[model_name] = _models()[model_name]  # a success changed it: start afresh
    event(f"{call}: result")
    if call in ("predict", "decision_function"):
        assert np.asarray(result).dtype.kind in "fi"
    elif call.startswith("recommend") or call.startswith("similar"):
        ids, scores = result
        assert np.shape(ids) == np.shape(scores)
        assert not np.isnan(scores).any()
    elif call == "fold_in":
        factors, bias = result
        assert np.isfinite(factors).all() and np.isfinite(bias).all()
    if call not in ("fit", "partial_fit", "set_params_fit"):
        assert _digest(model) == before


dense = st.integers(1, 6).flatmap(
    lambda m: st.integers(1, 6).flatmap(
        lambda n: st.lists(
            st.one_of(st.integers(-2, 6), st.sampled_from([np.nan, np.inf, 0.5, 1e30, -1e30])),
            min_size=m * n,
            max_size=m * n,
        ).map(lambda v: np.array(v, dtype=float).reshape(m, n))
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    matrix=dense,
    form=st.sampled_from(["dense", "csr", "coo", "triplets", "int", "transposed-shape"]),
    model_class=st.sampled_from([RealValueMF, BinaryMF]),
)
def test_odd_inputs_to_fit_are_fitted_or_rejected_and_keep_a_fitted_model(
    matrix, form, model_class
):
    model = model_class(k=2, n_epochs=2, tol=None, random_state=0)
    rows, cols, values, shape = random_coo(1, m=8, n=6, nnz=30, binary=True)
    model.fit((rows, cols, values), shape=shape)
    before = _digest(model)
    if form == "dense":
        X, kwargs = matrix, {}
    elif form == "csr":
        X, kwargs = sp.csr_matrix(np.nan_to_num(matrix, nan=0.0, posinf=0.0)), {}
    elif form == "coo":
        X, kwargs = sp.coo_array(matrix), {}
    elif form == "int":
        X, kwargs = np.clip(np.nan_to_num(matrix, nan=0), -7, 7).astype(np.int64), {}
    else:
        r, c = np.nonzero(matrix)
        X = (r, c, matrix[r, c])
        kwargs = {"shape": matrix.shape[::-1]} if form == "transposed-shape" else {}
    try:
        model.fit(X, **kwargs)
    except DOCUMENTED as error:
        event(f"fit {form}: {type(error).__name__}")
        assert _digest(model) == before
        return
    event(f"fit {form}: fitted")
    assert np.isfinite(model.user_factors_).all() and np.isfinite(model.item_factors_).all()
    assert np.isfinite(model.predict(0, 0)).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_fuzzed_models_are_usable(name):
    assert MODELS[name].n_users_ > 0
