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


class _FixedRanker:
    """A stand-in model whose recommendations are given, to test the metrics alone."""

    n_users_, n_items_ = 4, 8

    def __init__(self, ranking):
        self.ranking = np.asarray(ranking)

    def recommend(self, users, n, exclude_seen):
        return self.ranking[users, :n], None


RANKING = [[0, 1, 2, 3, 4], [5, 6, 7, 0, 1], [2, 4, 6, 1, 3], [7, 6, 5, 4, 3]]
TEST = (np.array([0, 0, 1, 2, 2, 2, 3]), np.array([1, 7, 0, 2, 3, 5, 0]), np.ones(7))


def reference_metrics(k):
    """Plain-Python precision/recall/NDCG/MAP of RANKING against TEST."""
    relevant = {}
    for u, i in zip(*TEST[:2]):
        relevant.setdefault(int(u), set()).add(int(i))
    out = {"precision": [], "recall": [], "ndcg": [], "map": []}
    for u, rel in relevant.items():
        top = RANKING[u][:k]
        hits = [1 if i in rel else 0 for i in top]
        out["precision"].append(sum(hits) / k)
        out["recall"].append(sum(hits) / len(rel))
        dcg = sum(h / np.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / np.log2(j + 2) for j in range(min(k, len(rel))))
        out["ndcg"].append(dcg / idcg)
        ap = sum(sum(hits[: j + 1]) / (j + 1) for j in range(k) if hits[j])
        out["map"].append(ap / min(k, len(rel)))
    return {name: np.mean(values) for name, values in out.items()}


@pytest.mark.parametrize("k", [1, 3, 5])
def test_ranking_metrics_match_a_plain_reference(k):
    model = _FixedRanker(RANKING)
    expected = reference_metrics(k)
    assert metrics.precision_at_k(model, TEST, k=k) == pytest.approx(expected["precision"])
    assert metrics.recall_at_k(model, TEST, k=k) == pytest.approx(expected["recall"])
    assert metrics.ndcg_at_k(model, TEST, k=k) == pytest.approx(expected["ndcg"])
    assert metrics.map_at_k(model, TEST, k=k) == pytest.approx(expected["map"])


def test_ndcg_matches_sklearn_on_a_real_model():
    from conftest import random_coo

    import fastmf

    rows, cols, values, shape = random_coo(3, m=20, n=30, nnz=200)
    model = fastmf.RealValueMF(k=4, n_epochs=5, tol=None, random_state=0).fit(
        (rows[:150], cols[:150], values[:150]), shape=shape
    )
    test = (rows[150:], cols[150:], values[150:])
    k = 5
    ours = metrics.ndcg_at_k(model, test, k=k, exclude_seen=False)
    per_user = []
    for user in np.unique(test[0]):
        relevance = np.zeros(shape[1])
        relevance[test[1][test[0] == user]] = 1
        scores = model.predict(np.full(shape[1], user), np.arange(shape[1]))
        per_user.append(sk.ndcg_score(relevance[None], scores[None], k=k))
    assert ours == pytest.approx(np.mean(per_user), rel=1e-6)


def test_threshold_selects_relevant_entries():
    model = _FixedRanker(RANKING)
    graded = (TEST[0], TEST[1], np.array([5, 1, 5, 5, 1, 1, 5]))
    only_liked = (TEST[0][graded[2] >= 4], TEST[1][graded[2] >= 4], np.ones(4))
    assert metrics.recall_at_k(model, graded, k=3, threshold=4) == pytest.approx(
        metrics.recall_at_k(model, only_liked, k=3)
    )
