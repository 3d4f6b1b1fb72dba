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
    weights=None,
):
    """One SGD pass; returns new factors and the summed pre-update loss.

    ``weights`` (one per entry) scale each entry's data loss and its gradient.

    With biases (arrays, updated in place as float64 copies are returned via
    the same arrays) the score adds b_u + b_i; with accumulators the step is
    AdaGrad's lr / sqrt(acc) with the accumulator from before this step, which
    then adds the step's mean squared gradient (LIBMF's order).
    """
    P = user_factors.astype(np.float64)
    Q = item_factors.astype(np.float64)
    use_bias = user_bias is not None
    total = 0.0
    for idx in order:
        u, i, r = rows[idx], cols[idx], float(values[idx])
        p, q = P[u].copy(), Q[i].copy()
        score = p @ q + (user_bias[u] + item_bias[i] if use_bias else 0.0)
        w = 1.0 if weights is None else float(weights[idx])
        total += w * data_loss(loss, r, score)
        g = w * neg_dloss_dscore(loss, r, score)
        grad_p, grad_q = g * q - l2 * p, g * p - l2 * q
        lr_u, lr_i = _adagrad_step(u, i, g, p, q, grad_p, grad_q, user_bias, item_bias,
                                   user_acc, item_acc, lr, l2)  # fmt: skip
        if use_bias:
            user_bias[u] += lr_u * (g - l2 * user_bias[u])
            item_bias[i] += lr_i * (g - l2 * item_bias[i])
        P[u] = p + lr_u * grad_p
        Q[i] = q + lr_i * grad_q
    return P, Q, total


def _adagrad_step(u, i, g, p, q, grad_p, grad_q, user_bias, item_bias, user_acc, item_acc, lr,
                  l2):  # fmt: skip
    """The step sizes of rows u and i (lr without accumulators); advances the accumulators.

    The sizes come from the accumulators before this step, which then add
    the step's mean squared gradient over the row's coordinates.
    """
    if user_acc is None:
        return lr, lr
    lr_u, lr_i = lr / np.sqrt(user_acc[u]), lr / np.sqrt(item_acc[i])
    sq_u, sq_i, n = grad_p @ grad_p, grad_q @ grad_q, p.size
    if user_bias is not None:
        sq_u += (g - l2 * user_bias[u]) ** 2
        sq_i += (g - l2 * item_bias[i]) ** 2
        n += 1
    user_acc[u] += sq_u / n
    item_acc[i] += sq_i / n
    return lr_u, lr_i


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
    """One epoch of the block schedule: blocks stratum by stratum, entries in storage order.

    Returns the factors and each block's data loss, summed before each step.
    """
    P = user_factors.astype(np.float64)
    Q = item_factors.astype(np.float64)
    block_losses = np.zeros(len(block_offsets) - 1)
    for stratum in schedule:
        for block in stratum:
            span = np.arange(block_offsets[block], block_offsets[block + 1])
            P, Q, block_losses[block] = sgd_epoch(loss, rows, cols, values, span, P, Q, lr, l2)
    return P, Q, block_losses


# ------------------------------------------------------------ sampled losses
MASK64 = 2**64 - 1


def splitmix64(state):
    """Python-int splitmix64: ``(new_state, draw)``, as the kernels' generator."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def softplus(x):
    return float(np.logaddexp(0.0, x))


def sigmoid(x):
    return float(1.0 / (1.0 + np.exp(-x)))


def sampled_block(
    bpr,
    rows,
    cols,
    values,
    item_lo,
    item_hi,
    state,
    P,
    Q,
    user_bias,
    item_bias,
    user_acc,
    item_acc,
    lr,
    l2,
    n_negatives,
    negative_weight,
    popularity,
    max_draws=8,
):
    """One block of a sampled loss, written from its definition; float64 arrays updated in place.

    The block holds each user's positives contiguously and sorted. Per run: a
    rotation ``draw % length``; per positive (logistic: its own step first),
    ``n_negatives`` draws, each redrawn while it hits the user's items (at
    most ``max_draws`` tries, then skipped). Returns ``(loss, negatives)``:
    the summed pre-update loss and the (user, positive, negative) triples.
    """
    total, triples = 0.0, []
    use_bias = item_bias is not None
    run_start = 0
    while run_start < rows.size:
        u = rows[run_start]
        run_end = run_start
        while run_end < rows.size and rows[run_end] == u:
            run_end += 1
        own = set(cols[run_start:run_end].tolist())
        length = run_end - run_start
        state, draw = splitmix64(state)
        rotation = draw % length
        for step in range(length):
            idx = run_start + (rotation + step) % length
            i, c = int(cols[idx]), float(values[idx])
            if not bpr:
                total += _pointwise(u, i, 1.0, c, P, Q, user_bias, item_bias, user_acc, item_acc,
                                    lr, l2)  # fmt: skip
            for _ in range(n_negatives):
                j = -1
                for _ in range(max_draws):
                    state, draw = splitmix64(state)
                    if popularity:
                        candidate = int(cols[draw % rows.size])
                    else:
                        candidate = item_lo + draw % (item_hi - item_lo)
                    if candidate not in own:
                        j = candidate
                        break
                if j < 0:
                    continue
                triples.append((u, i, j))
                if bpr:
                    total += _bpr(u, i, j, c, P, Q, item_bias, user_acc, item_acc, lr, l2, use_bias)
                else:
                    total += _pointwise(u, j, -1.0, negative_weight, P, Q, user_bias, item_bias,
                                        user_acc, item_acc, lr, l2)  # fmt: skip
        run_start = run_end
    return total, triples


def _pointwise(u, i, label, weight, P, Q, user_bias, item_bias, user_acc, item_acc, lr, l2):
    use_bias = user_bias is not None
    p, q = P[u].copy(), Q[i].copy()
    score = p @ q + (user_bias[u] + item_bias[i] if use_bias else 0.0)
    loss = weight * softplus(-label * score)
    g = label * weight * sigmoid(-label * score)
    grad_p, grad_q = g * q - l2 * p, g * p - l2 * q
    lr_u, lr_i = _adagrad_step(u, i, g, p, q, grad_p, grad_q, user_bias, item_bias,
                               user_acc, item_acc, lr, l2)  # fmt: skip
    if use_bias:
        user_bias[u] += lr_u * (g - l2 * user_bias[u])
        item_bias[i] += lr_i * (g - l2 * item_bias[i])
    P[u] = p + lr_u * grad_p
    Q[i] = q + lr_i * grad_q
    return loss


def bpr_loss(p, qi, qj, bi, bj, weight):
    """BPR's data loss of one triple: ``weight * -log sigmoid(p.(qi - qj) + bi - bj)``."""
    return weight * softplus(-(p @ (qi - qj) + bi - bj))


def _bpr(u, i, j, weight, P, Q, item_bias, user_acc, item_acc, lr, l2, use_bias):
    p, qi, qj = P[u].copy(), Q[i].copy(), Q[j].copy()
    bi, bj = (item_bias[i], item_bias[j]) if use_bias else (0.0, 0.0)
    x = p @ (qi - qj) + bi - bj
    loss = bpr_loss(p, qi, qj, bi, bj, weight)
    g = weight * sigmoid(-x)
    grad_p, grad_i, grad_j = g * (qi - qj) - l2 * p, g * p - l2 * qi, -g * p - l2 * qj
    lr_u = lr_i = lr_j = lr
    if user_acc is not None:  # step sizes from the accumulators before this step
        lr_u = lr / np.sqrt(user_acc[u])
        lr_i, lr_j = lr / np.sqrt(item_acc[i]), lr / np.sqrt(item_acc[j])
        n_item = p.size + (1 if use_bias else 0)
        sq_i, sq_j = grad_i @ grad_i, grad_j @ grad_j
        if use_bias:
            sq_i += (g - l2 * bi) ** 2
            sq_j += (-g - l2 * bj) ** 2
        user_acc[u] += grad_p @ grad_p / p.size
        item_acc[i] += sq_i / n_item
        item_acc[j] += sq_j / n_item
    if use_bias:
        item_bias[i] = bi + lr_i * (g - l2 * bi)
        item_bias[j] = bj + lr_j * (-g - l2 * bj)
    P[u] = p + lr_u * grad_p
    Q[i] = qi + lr_i * grad_i
    Q[j] = qj + lr_j * grad_j
    return loss
