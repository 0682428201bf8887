"""Batch normalisation, per channel on (N, C, *spatial) and per feature on (N, D).

Training (batch statistics over N and the spatial axes: M values per channel):
    mean = sum(x) / M,   var = sum((x - mean)^2) / M  (biased: it normalises)
    xhat = (x - mean) * invstd,  invstd = 1 / sqrt(var + eps),  out = gamma * xhat + beta
    running = (1 - momentum) * running + momentum * batch, with the UNBIASED var * M / (M - 1)
    for running_var, as PyTorch does.
Backward (training):  dbeta = sum(dout),  dgamma = sum(dout * xhat),
    dx = gamma * invstd * (dout - dbeta / M - xhat * dgamma / M)
Evaluation: xhat = (x - running_mean) / sqrt(running_var + eps), a fixed affine map.

Fused with a following relu (``relu=True`` in training, the engine's plan where the relu is the
batchnorm's only consumer): the forward writes relu(out) and never the batchnorm's output; the
backward takes the gradient of the relu's output and the relu's output y, and uses
``0 if y <= 0 else dout`` (relu_backward's rule) as its dout.  Same arithmetic in the same order
as the two kernels one after the other, so the results are bit-identical; one pass over the
tensor less each way.

The kernels see x as (N, C, S) (S = 1 per feature).  Sums are float64, the variance and
dgamma two-pass (centred on the mean), so a large mean does not cancel digits away.  Channels
are independent: a big tensor is split over threads by channels (``run_split``).
"""
import numpy as np

from cnnspec.kernels._jit import jit, jit_sum, memory_pieces, num_threads, run_split, sum64

_PARALLEL_SIZE = 1 << 16


@jit_sum
def _centred_sums(x, c, mu, g):
    """sum over channel c of g and of g * (x - mu), float64 (vectorised: see ``jit_sum``)."""
    s = t = 0.0
    for n in range(x.shape[0]):
        xs, gs = x[n, c], g[n, c]
        for e in range(xs.size):
            s += gs[e]
            t += gs[e] * (xs[e] - mu)
    return s, t


@jit_sum
def _centred_sums_relu(x, c, mu, g, y):
    """_centred_sums of g masked by relu's backward (0 where y <= 0)."""
    s = t = 0.0
    for n in range(x.shape[0]):
        xs, gs, ys = x[n, c], g[n, c], y[n, c]
        for e in range(xs.size):
            v = 0 if ys[e] <= 0 else gs[e]
            s += v
            t += v * (xs[e] - mu)
    return s, t


@jit_sum
def _centred_square_sum(x, c, mu):
    """sum over channel c of (x - mu)^2, float64 (the variance's; vectorised: see ``jit_sum``)."""
    t = 0.0
    for n in range(x.shape[0]):
        xs = x[n, c]
        for e in range(xs.size):
            d = xs[e] - mu
            t += d * d
    return t


@jit
def _channel_mean(x, c):
    total = 0.0
    for n in range(x.shape[0]):
        total += sum64(x[n, c])
    return total / (x.shape[0] * x.shape[2])


@jit
def _affine_channel(x, c, mu, scale, shift, out, relu):
    """out[:, c] = (x[:, c] - mu) * scale + shift (relu: then max(0, .), NaN kept)."""
    for n in range(x.shape[0]):
        src, dst = x[n, c], out[n, c]
        if relu:
            for e in range(src.size):
                v = (src[e] - mu) * scale + shift    # relu on v or on v rounded: the same
                dst[e] = 0 if v <= 0 else v
        else:
            for e in range(src.size):
                dst[e] = (src[e] - mu) * scale + shift


@jit
def _train_channel(x, c, gamma, beta, eps, momentum, update, running_mean, running_var, out,
                   mean, invstd, relu):
    m = x.shape[0] * x.shape[2]
    mu = _channel_mean(x, c)
    sq = _centred_square_sum(x, c, mu)
    var = sq / m
    inv = 1.0 / np.sqrt(var + eps)
    mean[c] = mu
    invstd[c] = inv
    if update:
        running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mu
        running_var[c] = (1 - momentum) * running_var[c] + momentum * var * m / (m - 1)
    _affine_channel(x, c, mu, gamma[c] * inv, beta[c], out, relu)


@jit
def _forward_train(x, gamma, beta, eps, momentum, update, running_mean, running_var, out,
                   mean, invstd, relu, c0, c1):
    for c in range(c0, c1):
        _train_channel(x, c, gamma, beta, eps, momentum, update, running_mean, running_var, out,
                       mean, invstd, relu)


@jit
def _forward_eval(x, gamma, beta, eps, running_mean, running_var, out, c0, c1):
    for c in range(c0, c1):
        inv = 1.0 / np.sqrt(running_var[c] + eps)
        _affine_channel(x, c, running_mean[c], gamma[c] * inv, beta[c], out, False)


@jit
def _backward_channel(dout, x, c, gamma, mu, inv, train, dx, dgamma, dbeta, need_dx,
                      accumulate, y):
    """Gradients of channel c; train=False is the backward of the evaluation-mode map; y (not
    empty): the output of a fused relu, dout its gradient."""
    m = x.shape[0] * x.shape[2]
    relu = y.size > 0
    if relu:
        sum_g, sum_gx = _centred_sums_relu(x, c, mu, dout, y)
    else:
        sum_g, sum_gx = _centred_sums(x, c, mu, dout)
    if dgamma.size > 0:
        dgamma[c] = sum_gx * inv
    if dbeta.size > 0:
        dbeta[c] = sum_g
    if not need_dx:
        return
    scale = gamma[c] * inv
    shift = sum_g / m if train else 0.0
    slope = inv * inv * sum_gx / m if train else 0.0
    for n in range(x.shape[0]):
        g, xs, d = dout[n, c], x[n, c], dx[n, c]
        if relu:
            ys = y[n, c]
            for e in range(g.size):
                ge = 0 if ys[e] <= 0 else g[e]
                v = scale * (ge - shift - (xs[e] - mu) * slope)
                if accumulate:
                    d[e] += v
                else:
                    d[e] = v
        else:
            for e in range(g.size):
                v = scale * (g[e] - shift - (xs[e] - mu) * slope)
                if accumulate:
                    d[e] += v
                else:
                    d[e] = v


@jit
def _backward(dout, x, gamma, mean, spread, eps, train, dx, dgamma, dbeta, need_dx, accumulate,
              y, c0, c1):
    """spread: invstd (training) or running_var (evaluation); y: a fused relu's output (or empty)."""
    for c in range(c0, c1):
        inv = spread[c] if train else 1.0 / np.sqrt(spread[c] + eps)
        _backward_channel(dout, x, c, gamma, mean[c], inv, train, dx, dgamma, dbeta, need_dx,
                          accumulate, y)


# -- entry points ------------------------------------------------------------------------------

_EMPTY = {}


def _ncs(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def _split(fn, x, *args):
    """fn(*args, c0, c1) over channel ranges, on several threads for a big x."""
    c = x.shape[1]
    threads = 1 if x.size < _PARALLEL_SIZE else min(num_threads(), c)
    run_split(fn, c, threads, lambda t, lo, hi: args + (lo, hi),
              pieces=memory_pieces(c, threads, x.size) if threads > 1 else None)


def _empty(dtype, ndim):
    key = (np.dtype(dtype), ndim)
    if key not in _EMPTY:
        _EMPTY[key] = np.zeros((0,) * ndim, dtype)
    return _EMPTY[key]


def batchnorm_forward_train_into(x, gamma, beta, eps, momentum, running_mean, running_var, out,
                                 mean, invstd, relu=False):
    """Training-mode forward; mean, invstd (float64 (C,)) are written for the backward.

    running_mean/running_var are updated in place (None: no update).  ``relu``: out receives
    relu(batchnorm(x)) (fused; the backward then takes ``relu_y=out``)."""
    update = running_mean is not None
    if not update:
        running_mean = running_var = _empty(x.dtype, 1)
    _split(_forward_train, x, _ncs(x), gamma, beta, float(eps), float(momentum), update,
           running_mean, running_var, _ncs(out), mean, invstd, bool(relu))


def batchnorm_forward_eval_into(x, gamma, beta, eps, running_mean, running_var, out):
    _split(_forward_eval, x, _ncs(x), gamma, beta, float(eps), running_mean, running_var,
           _ncs(out))


def batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dgamma, dbeta, accumulate=False,
                            relu_y=None):
    """Training-mode backward from the forward's mean and invstd (None gradients: skipped).
    ``relu_y``: the output of a fused relu (``relu=True`` forward); dout is then its gradient."""
    empty1 = _empty(x.dtype, 1)
    x3 = _ncs(x)
    _split(_backward, x, _ncs(dout), x3, gamma, mean, invstd, 0.0, True,
           x3 if dx is None else _ncs(dx), empty1 if dgamma is None else dgamma,
           empty1 if dbeta is None else dbeta, dx is not None, bool(accumulate),
           _empty(x.dtype, 3) if relu_y is None else _ncs(relu_y))


def batchnorm_backward_eval_into(dout, x, gamma, eps, running_mean, running_var, dx, dgamma,
                                 dbeta, accumulate=False):
    """Backward of the evaluation-mode forward (running statistics are constants)."""
    empty1 = _empty(x.dtype, 1)
    x3 = _ncs(x)
    _split(_backward, x, _ncs(dout), x3, gamma, running_mean, running_var, float(eps), False,
           x3 if dx is None else _ncs(dx), empty1 if dgamma is None else dgamma,
           empty1 if dbeta is None else dbeta, dx is not None, bool(accumulate),
           _empty(x.dtype, 3))
