"""Evaluation metrics for predictions on held-out entries."""

import numpy as np
from scipy.stats import rankdata

__all__ = ["log_loss", "mae", "rmse", "roc_auc"]


def _pair(y_true, y_pred):
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length; got {y_true.size} and {y_pred.size}."
        )
    if y_true.size == 0:
        raise ValueError("y_true and y_pred are empty.")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("y_true and y_pred must be finite.")
    return y_true, y_pred


def rmse(y_true, y_pred):
    """Root mean squared error."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def mae(y_true, y_pred):
    """Mean absolute error."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def _binary(y_true):
    positive = y_true > 0
    if not np.all((y_true == 1) | (y_true == 0) | (y_true == -1)):
        raise ValueError("y_true must hold binary labels: -1/+1 or 0/1.")
    return positive


def log_loss(y_true, proba, eps=1e-15):
    """Mean negative log-likelihood of binary labels under ``P(y = +1) = proba``.

    Parameters
    ----------
    y_true : array_like, labels in {-1, +1} or {0, 1}
    proba : array_like, probabilities of the positive label
    eps : float, default=1e-15
        Probabilities are clipped to ``[eps, 1 - eps]``.

    Returns
    -------
    float
    """
    y_true, proba = _pair(y_true, proba)
    positive = _binary(y_true)
    proba = np.clip(proba, eps, 1 - eps)
    return float(-np.mean(np.where(positive, np.log(proba), np.log1p(-proba))))


def roc_auc(y_true, scores):
    """Area under the ROC curve: the chance a random positive outscores a random negative.

    Ties count one half (the Mann-Whitney U statistic).

    Parameters
    ----------
    y_true : array_like, labels in {-1, +1} or {0, 1}
    scores : array_like, any monotone score (logits or probabilities)

    Returns
    -------
    float
    """
    y_true, scores = _pair(y_true, scores)
    positive = _binary(y_true)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative label.")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
