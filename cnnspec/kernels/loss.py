"""Losses: fused softmax-cross-entropy and mean squared error (each returns loss and gradient).

softmax-cross-entropy over logits (N, K) and int labels (N,), mean over the batch:
    loss_n = logsumexp(z_n) - z_n[y_n],  logsumexp(z) = m + log(sum exp(z - m)), m = max(z)
    dlogits = (softmax(z) - onehot(y)) / N
subtracting the max keeps it finite for logits up to 1e4 (exp never overflows).
mse over all elements: loss = mean((pred - target)^2), dpred = 2 (pred - target) / size.
bce over probabilities, as PyTorch's binary_cross_entropy (mean over all elements):
    loss_i = -(t log p + (1 - t) log(1 - p)), each log clamped at -100 (log(0) never gives inf)
    dpred = (p - t) / max(p (1 - p), 1e-12) / size    (1e-12 rounded to float32, as PyTorch)
sigmoid_bce over logits, fused and stable (BCEWithLogits) for |logits| up to 1e4:
    loss_i = (1 - t) x - logsigmoid(x),  logsigmoid(x) = min(x, 0) - log1p(exp(-|x|))
    dlogits = (sigmoid(x) - t) / size
l1: loss = mean |pred - target|, dpred = sign(pred - target) / size (0 where they are equal).
Losses are summed in float64 and returned as Python floats.  Each kernel takes rows of samples,
the divisor (``count``: the whole batch's elements) and writes each sample's summed terms; the loss
is their sum over the count (``mean``): the same bits for any cut of the batch into rows (the
engine's threads each compute their share of samples).
"""
import numpy as np

from cnnspec.kernels._exp import exp, log
from cnnspec.kernels._jit import by_samples, jit, jit_inline, sum64
from cnnspec.kernels.activation import _softmax_forward, column_max


@jit
def _softmax_cross_entropy(z, y, dz, count, totals):
    """totals[n] = sample n's loss, dz = (softmax - onehot) / count.  Returns the index of the first
    label out of range, or -1."""
    n_, k_ = z.shape
    for n in range(n_):
        label = y[n]
        if label < 0 or label >= k_:
            return n
        row, drow = z[n], dz[n]
        m = row[0]
        for k in range(1, k_):
            m = max(m, row[k])
        s = 0.0
        for k in range(k_):
            s += exp(row[k] - m)
        lse = m + log(s)
        totals[n] = lse - row[label]
        for k in range(k_):
            drow[k] = exp(row[k] - lse) / count
        drow[label] -= 1.0 / count
    return -1


@jit
def _softmax_and_cross_entropy(z, probs, y, dz, count, totals, m, total):
    """A final softmax fused with its cross-entropy, in one call (a training share's rows):
    probs = softmax(z) as ``activation._softmax_forward`` computes it (m: 1 element of z's
    type, total: 1 float64, its scratch), then ``_softmax_cross_entropy``'s terms and gradient."""
    n_, k_ = z.shape
    _softmax_forward(z.reshape(n_, k_, 1), probs.reshape(n_, k_, 1), m, total)
    return _softmax_cross_entropy(z, y, dz, count, totals)


@jit
def _cross_entropy_positions(z, y, dz, count, totals):
    """z, dz (N, K, P): one score per class at each of P positions; y (N, P) labels (checked by
    the caller).  dz = (softmax over K - onehot) / count; totals[n] = sample n's summed loss.
    Each position computes as a row of _softmax_cross_entropy does (same types, same order),
    the positions side by side (vectorised over P, no transposed copy)."""
    n_, k_, p_ = z.shape
    m = np.empty(p_, z.dtype)
    s = np.empty(p_, np.float64)
    lse = np.empty(p_, np.float64)
    for n in range(n_):
        zn, dn, yn = z[n], dz[n], y[n]
        column_max(zn, m)
        for p in range(p_):
            s[p] = 0.0
        for k in range(k_):
            for p in range(p_):
                s[p] += exp(zn[k, p] - m[p])
        for p in range(p_):
            lse[p] = m[p] + log(s[p])
        total = 0.0
        for p in range(p_):
            total += lse[p] - zn[yn[p], p]
        for k in range(k_):
            for p in range(p_):
                dn[k, p] = exp(zn[k, p] - lse[p]) / count
        for p in range(p_):
            dn[yn[p], p] -= 1.0 / count
        totals[n] = total


# PyTorch's EPSILON in the bce gradient is a float32 constant: 1e-12 rounded to float32
_BCE_EPSILON = float(np.float32(1e-12))

# the element-wise losses, by name: the kind _term computes
MSE, BCE, SIGMOID_BCE, L1 = range(4)
ROWS = {"mse": MSE, "bce": BCE, "sigmoid_bce": SIGMOID_BCE, "l1": L1}


@jit_inline
def _term(kind, p, t, count):
    """(loss term, gradient) of one element of an element-wise loss (``kind``), ``count`` the
    elements of the whole batch."""
    if kind == MSE:
        d = p - t
        return np.float64(d * d), 2.0 / count * d
    if kind == BCE:
        pi, ti = np.float64(p), np.float64(t)
        loss = (ti - 1) * max(np.log1p(-pi), -100.0) - ti * max(np.log(pi), -100.0)
        return loss, (pi - ti) / max((1 - pi) * pi, _BCE_EPSILON) / count
    if kind == SIGMOID_BCE:
        v, ti = np.float64(p), np.float64(t)
        e = np.exp(-abs(v))                         # never exp of a positive number
        s = 1 / (1 + e) if v >= 0 else e / (1 + e)  # sigmoid(v)
        return (1 - ti) * v - (min(v, 0.0) - np.log1p(e)), (s - ti) * (1.0 / count)
    d = np.float64(p) - np.float64(t)               # L1
    scale = 1.0 / count
    return abs(d), scale if d > 0 else (-scale if d < 0 else 0.0)


@jit
def element_wise_rows(kind, pred, target, dpred, count, totals):
    """An element-wise loss over rows (N, P): totals[n] = the sum of row n's terms, dpred the
    gradient (``_term``)."""
    for n in range(pred.shape[0]):
        total = 0.0
        for i in range(pred.shape[1]):
            term, grad = _term(kind, pred[n, i], target[n, i], count)
            total += term
            dpred[n, i] = grad
        totals[n] = total


def rows(a):
    """A tensor (N, ...) as rows (N, P): one per sample."""
    return a.reshape(len(a), -1)


def mean(totals, count) -> float:
    """The loss from the samples' terms: their sum (``sum64``: vectorised, in an order fixed on a
    machine) over ``count``."""
    return sum64(totals) / count if count else float("nan")


def _element_wise(kind, pred, target, dpred):
    if pred.ndim == 0:                          # a 0-d pair: one term, as a row of one
        pred, target, dpred = pred.reshape(1), target.reshape(1), dpred.reshape(1)
    totals = np.empty(len(pred))
    element_wise_rows(kind, rows(pred), rows(target), rows(dpred), pred.size, totals)
    return mean(totals, pred.size)


@jit
def label_range(y):
    """(smallest, largest) of a non-empty 1-D array of labels, in one pass (NumPy's min and max
    are two, each ~15 us in a training step, where their code is out of the caches)."""
    low = high = y[0]
    for i in range(1, y.size):
        low, high = min(low, y[i]), max(high, y[i])
    return low, high


def softmax_cross_entropy_into(logits, y, dlogits):
    """loss (float) = mean cross-entropy of softmax(logits (N, K)) against labels y (N,);
    dlogits (N, K) = its gradient."""
    y = y.astype(np.int64, copy=False)
    totals = np.empty(len(logits))
    bad = _softmax_cross_entropy(logits, y, dlogits, len(logits), totals)
    if bad >= 0:
        raise ValueError(f"label {int(y[bad])} of sample {bad} is outside 0..{logits.shape[1] - 1}")
    return mean(totals, len(logits))


def cross_entropy_positions_into(logits, y, dlogits):
    """loss (float) = mean cross-entropy over every position of softmax over axis 1 of logits
    (N, K, P) against labels y (N, P) in 0..K-1 (not checked here: the engine checks them);
    dlogits (N, K, P) its gradient.  Samples are split over the threads; the loss is the sum of
    the samples' sums, whatever the split."""
    n, _, p = logits.shape
    totals = np.zeros(n)
    by_samples(_cross_entropy_positions, 3 * logits.size, logits, y.astype(np.int64, copy=False),
               dlogits, n * p, totals)
    return mean(totals, n * p)


def mse_loss_into(pred, target, dpred):
    """loss (float) = mean((pred - target)^2) over all elements; dpred its gradient."""
    return _element_wise(MSE, pred, target, dpred)


def bce_loss_into(pred, target, dpred):
    """loss (float) = mean binary cross-entropy of probabilities pred against target in [0, 1]
    (logs clamped at -100, as PyTorch); dpred its gradient."""
    return _element_wise(BCE, pred, target, dpred)


def sigmoid_bce_into(logits, target, dlogits):
    """loss (float) = mean binary cross-entropy of sigmoid(logits) against target, computed from
    the logits (stable); dlogits its gradient."""
    return _element_wise(SIGMOID_BCE, logits, target, dlogits)


def l1_loss_into(pred, target, dpred):
    """loss (float) = mean |pred - target| over all elements; dpred its gradient."""
    return _element_wise(L1, pred, target, dpred)
