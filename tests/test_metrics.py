import numpy as np
import pytest
from sklearn import metrics as sk

from fastmf import metrics


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.normal(3, 1, 500), rng.normal(3, 1, 500)
    assert metrics.rmse(y, p) == pytest.approx(np.sqrt(sk.mean_squared_error(y, p)))
    assert metrics.mae(y, p) == pytest.approx(sk.mean_absolute_error(y, p))


@pytest.mark.parametrize("negative", [-1, 0])
def test_classification_metrics_match_sklearn(negative):
    rng = np.random.default_rng(1)
    y = np.where(rng.random(400) < 0.3, 1, negative)
    proba = np.clip(rng.random(400) * 0.6 + (y == 1) * 0.3, 0, 1)
    proba[:50] = np.round(proba[:50], 1)  # ties
    y01 = (y == 1).astype(int)
    assert metrics.roc_auc(y, proba) == pytest.approx(sk.roc_auc_score(y01, proba))
    assert metrics.log_loss(y, proba) == pytest.approx(sk.log_loss(y01, proba), rel=1e-9)


def test_metric_errors():
    with pytest.raises(ValueError, match="same length"):
        metrics.rmse([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        metrics.rmse([], [])
    with pytest.raises(ValueError, match="one positive and one negative"):
        metrics.roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="binary labels"):
        metrics.log_loss([2, 1], [0.2, 0.3])
