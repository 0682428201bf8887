"""Losses: fused softmax-cross-entropy and mean squared error (each returns loss and gradient).

softmax-cross-entropy over logits (N, K) and int labels (N,), mean over the batch:
    loss_n = logsumexp(z_n) - z_n[y_n],  logsumexp(z) = m + log(sum exp(z - m)), m = max(z)
    dlogits = (softmax(z) - onehot(y)) / N
subtracting the max keeps it finite for logits up to 1e4 (exp never overflows).
mse over all elements: loss = mean((pred - target)^2), dpred = 2 (pred - target) / size.
Losses are summed in float64 and returned as Python floats.
"""
import numpy as np

from cnnspec.kernels._jit import jit


@jit
def _softmax_cross_entropy(z, y, dz):
    """Returns (mean loss, index of the first label out of range or -1)."""
    n_, k_ = z.shape
    total = 0.0
    for n in range(n_):
        label = y[n]
        if label < 0 or label >= k_:
            return 0.0, n
        row, drow = z[n], dz[n]
        m = row[0]
        for k in range(1, k_):
            m = max(m, row[k])
        s = 0.0
        for k in range(k_):
            s += np.exp(row[k] - m)
        lse = m + np.log(s)
        total += lse - row[label]
        for k in range(k_):
            drow[k] = np.exp(row[k] - lse) / n_
        drow[label] -= 1.0 / n_
    return total / n_, -1


@jit
def _mse(pred, target, dpred):
    total = 0.0
    scale = 2.0 / pred.size
    for i in range(pred.size):
        d = pred[i] - target[i]
        total += d * d
        dpred[i] = scale * d
    return total / pred.size


def softmax_cross_entropy_into(logits, y, dlogits):
    """loss (float) = mean cross-entropy of softmax(logits (N, K)) against labels y (N,);
    dlogits (N, K) = its gradient."""
    y = y.astype(np.int64, copy=False)
    loss, bad = _softmax_cross_entropy(logits, y, dlogits)
    if bad >= 0:
        raise ValueError(f"label {int(y[bad])} of sample {bad} is outside 0..{logits.shape[1] - 1}")
    return float(loss)


def mse_loss_into(pred, target, dpred):
    """loss (float) = mean((pred - target)^2) over all elements; dpred its gradient."""
    return float(_mse(pred.reshape(-1), target.reshape(-1), dpred.reshape(-1)))
