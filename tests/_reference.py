"""Plain-numpy oracles for the kernels: slow, obvious, float64."""

import numpy as np


def data_loss(loss, value, score):
    if loss == "squared":
        return 0.5 * (value - score) ** 2
    return np.logaddexp(0.0, -value * score)


def neg_dloss_dscore(loss, value, score):
    """Minus the derivative of the data loss with respect to the score."""
    if loss == "squared":
        return value - score
    return value / (1.0 + np.exp(value * score))


def sgd_epoch(
    loss,
    rows,
    cols,
    values,
    order,
    user_factors,
    item_factors,
    lr,
    l2,
    user_bias=None,
    item_bias=None,
    user_acc=None,
    item_acc=None,
):
    """One SGD pass; returns new factors and the summed pre-update loss.

    With biases (arrays, updated in place as float64 copies are returned via
    the same arrays) the score adds b_u + b_i; with accumulators the step is
    AdaGrad's lr / sqrt(acc) after adding the row's mean squared gradient.
    """
    P = user_factors.astype(np.float64)
    Q = item_factors.astype(np.float64)
    use_bias = user_bias is not None
    total = 0.0
    for idx in order:
        u, i, r = rows[idx], cols[idx], float(values[idx])
        p, q = P[u].copy(), Q[i].copy()
        score = p @ q + (user_bias[u] + item_bias[i] if use_bias else 0.0)
        total += data_loss(loss, r, score)
        g = neg_dloss_dscore(loss, r, score)
        grad_p, grad_q = g * q - l2 * p, g * p - l2 * q
        lr_u = lr_i = lr
        if user_acc is not None:
            sq_u, sq_i, n = grad_p @ grad_p, grad_q @ grad_q, p.size
            if use_bias:
                sq_u += (g - l2 * user_bias[u]) ** 2
                sq_i += (g - l2 * item_bias[i]) ** 2
                n += 1
            user_acc[u] += sq_u / n
            item_acc[i] += sq_i / n
            lr_u, lr_i = lr / np.sqrt(user_acc[u]), lr / np.sqrt(item_acc[i])
        if use_bias:
            user_bias[u] += lr_u * (g - l2 * user_bias[u])
            item_bias[i] += lr_i * (g - l2 * item_bias[i])
        P[u] = p + lr_u * grad_p
        Q[i] = q + lr_i * grad_q
    return P, Q, total


def objective(loss, rows, cols, values, user_factors, item_factors, l2):
    """The models' objective L, straight from its formula."""
    P = user_factors.astype(np.float64)
    Q = item_factors.astype(np.float64)
    terms = []
    for u, i, r in zip(rows, cols, values):
        score = P[u] @ Q[i]
        penalty = 0.5 * l2 * (P[u] @ P[u] + Q[i] @ Q[i])
        terms.append(data_loss(loss, float(r), score) + penalty)
    return float(np.mean(terms))


def entry_gradient(loss, value, p, q, l2):
    """Gradient of one entry's term f_ui with respect to (p_u, q_i)."""
    g = neg_dloss_dscore(loss, value, p @ q)
    return -g * q + l2 * p, -g * p + l2 * q


def block_epoch(
    loss, rows, cols, values, block_offsets, schedule, user_factors, item_factors, lr, l2
):
    """One epoch of the block schedule: blocks stratum by stratum, entries in storage order."""
    P = user_factors.astype(np.float64)
    Q = item_factors.astype(np.float64)
    for stratum in schedule:
        for block in stratum:
            span = np.arange(block_offsets[block], block_offsets[block + 1])
            P, Q, _ = sgd_epoch(loss, rows, cols, values, span, P, Q, lr, l2)
    return P, Q
