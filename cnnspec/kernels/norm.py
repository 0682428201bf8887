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
``0 if y <= 0 else dout`` (relu_backward's rule) as its dout.  Likewise with relu6
(``relu6=True``, MobileNetV2's batchnorm -> relu6): its gradient passes where 0 < y < 6, which
is where 0 < x < 6 (the rule of relu6_backward, which takes x).  Same arithmetic in the same order
as the two kernels one after the other, so the results are bit-identical; one pass over the
tensor less each way.

The kernels see x as (N, C, S) (S = 1 per feature).  Sums are float64, the variance and
dgamma two-pass (centred on the mean), so a large mean does not cancel digits away.

Threads: training splits by samples, as the convolutions around it do, so that each thread reads
the samples it wrote in the layer before, from its own core's cache (measured with two pinned
threads: reading by channels what they wrote by samples took 1.1-1.6x the CPU of reading it by
samples; in ResNet-8's step on two threads the batchnorms' forward took 1.18x less CPU than by
channels, the convolutions after them 1.05x less, and on one thread 1.06-1.09x less: long runs
per sample instead of 64 strided planes).  The batch is cut into
``_blocks(N)`` blocks (up to 8, by N alone): a first call gives each block's per-channel partials
(forward: its mean and centred sum of squares; backward: the sums of g and g * (x - mean)), which
are combined in block order (Chan's pairwise update for the variance), and a second call over
samples writes the output: the results depend on the batch, never on the threads.  The two
halves are also entry points (``batchnorm_partials_into``, ``batchnorm_forward_from_partials``
and the backward's): the engine's shares of a batch (``plan.BySamples``), one per thread, each
write their blocks' partials, meet, and each normalise their samples, the three in one compiled
call each way (``batchnorm_share_forward_step``, ``batchnorm_share_backward_step``).  With one
block it is the two-pass arithmetic exactly.  Evaluation splits by channels (no reduction).
"""
import numpy as np

from cnnspec.kernels._jit import (MET, MET_NOTIFY, _arrive, _spins, jit, jit_inline, jit_sum,
                                  memory_pieces, none_array, num_threads, run_split, sum64)
from cnnspec.kernels._simd import (vadd, vfill, vfma, vhsum, vkeep_relu, vkeep_relu6, vload_like,
                                   vstore, vsub, vwiden, yload, ylanes, yzero)

_PARALLEL_SIZE = 1 << 16


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
def _forward_eval(x, gamma, beta, eps, running_mean, running_var, out, c0, c1):
    for c in range(c0, c1):
        inv = 1.0 / np.sqrt(running_var[c] + eps)
        _affine_channel(x, c, running_mean[c], gamma[c] * inv, beta[c], out, False)


@jit_inline
def _dx_planes(g, x, y, six, c, n0, n1, mu, scale, shift, slope, dx, accumulate):
    """dx[n, c] (+)= scale * (g' - shift - (x - mu) * slope) for n0 <= n < n1, where g' is g, or
    (y not empty: a fused relu's output) g where y > 0, (six: relu6's) where 0 < y < 6.  g is
    loaded (and widened) before the select: a load under the condition compiled to masked
    loads, 1.15-1.3x slower (the same values).  Inlined (``jit_inline``): called per plane, a
    call cost as much as a 64-element plane's loop (64x64x8x8: 0.20 -> 0.11 ms)."""
    relu = y.size > 0
    for n in range(n0, n1):
        gs, xs, d = g[n, c], x[n, c], dx[n, c]
        if relu and six:
            ys = y[n, c]
            for e in range(gs.size):
                gv = np.float64(gs[e])
                ge = gv if (ys[e] > 0) & (ys[e] < 6) else 0.0
                v = scale * (ge - shift - (xs[e] - mu) * slope)
                if accumulate:
                    d[e] += v
                else:
                    d[e] = v
        elif relu:
            ys = y[n, c]
            for e in range(gs.size):
                gv = np.float64(gs[e])
                ge = 0.0 if ys[e] <= 0 else gv
                v = scale * (ge - shift - (xs[e] - mu) * slope)
                if accumulate:
                    d[e] += v
                else:
                    d[e] = v
        else:
            for e in range(gs.size):
                v = scale * (gs[e] - shift - (xs[e] - mu) * slope)
                if accumulate:
                    d[e] += v
                else:
                    d[e] = v


@jit
def _backward_channel(dout, x, c, gamma, mu, inv, train, dx, dgamma, dbeta, need_dx,
                      accumulate, y):
    """Gradients of channel c; train=False is the backward of the evaluation-mode map; y (not
    empty): the output of a fused relu, dout its gradient."""
    m = x.shape[0] * x.shape[2]
    sum_g, sum_gx = _block_centred_sums(x, c, 0, x.shape[0], mu, dout, y, False)
    if dgamma.size > 0:
        dgamma[c] = sum_gx * inv
    if dbeta.size > 0:
        dbeta[c] = sum_g
    if not need_dx:
        return
    scale = gamma[c] * inv
    shift = sum_g / m if train else 0.0
    slope = inv * inv * sum_gx / m if train else 0.0
    _dx_planes(dout, x, y, False, c, 0, x.shape[0], mu, scale, shift, slope, dx, accumulate)


@jit
def _backward(dout, x, gamma, mean, spread, eps, train, dx, dgamma, dbeta, need_dx, accumulate,
              y, c0, c1):
    """spread: invstd (training) or running_var (evaluation); y: a fused relu's output (or empty)."""
    for c in range(c0, c1):
        inv = spread[c] if train else 1.0 / np.sqrt(spread[c] + eps)
        _backward_channel(dout, x, c, gamma, mean[c], inv, train, dx, dgamma, dbeta, need_dx,
                          accumulate, y)


@jit_sum
def _centred_square_sum(xs, mu):
    """sum of (xs - mu)^2 over a plane, float64."""
    t = 0.0
    for e in range(xs.size):
        d = xs[e] - mu
        t += d * d
    return t


@jit_inline
def _plane_sums(xs, gs, ys, relu, six, mu, muv, sv, tv, s, t):
    """One plane's terms added to the running sums of g and g * (x - mu) (_block_centred_sums):
    the lanes' (sv, tv) and, for the plane's last elements, the scalars' (s, t)."""
    lanes = ylanes(xs)
    size = xs.size
    full = size - size % lanes
    if relu and six:
        for e in range(0, full, lanes):
            gw = vwiden(vkeep_relu6(yload(gs, e), yload(ys, e)))
            sv = vadd(sv, gw)
            tv = vfma(tv, gw, vsub(vwiden(yload(xs, e)), muv))
    elif relu:
        for e in range(0, full, lanes):
            gw = vwiden(vkeep_relu(yload(gs, e), yload(ys, e)))
            sv = vadd(sv, gw)
            tv = vfma(tv, gw, vsub(vwiden(yload(xs, e)), muv))
    else:
        for e in range(0, full, lanes):
            gw = vwiden(yload(gs, e))
            sv = vadd(sv, gw)
            tv = vfma(tv, gw, vsub(vwiden(yload(xs, e)), muv))
    for e in range(full, size):
        v = np.float64(gs[e])
        if relu and six:
            v = v if (ys[e] > 0) & (ys[e] < 6) else 0.0
        elif relu:
            v = 0.0 if ys[e] <= 0 else v
        s += v
        t += v * (np.float64(xs[e]) - mu)
    return sv, tv, s, t


@jit
def _block_centred_sums(x, c, n0, n1, mu, g, y, six):
    """sums over samples n0 <= n < n1 of channel c of g and g * (x - mu), float64; g masked by
    relu's backward (0 where y <= 0) when y is not empty, or (``six``) relu6's (g where
    0 < y < 6: y is the input there).  In explicit vectors: each lane's running float64 sums
    (g widened exactly, g * (x - mu) by one FMA), the lanes added in order at the end, the
    planes' last elements (a plane not a whole number of vectors) after them.  The order is the
    code's, not LLVM's: the fused relu's loop and the plain one on relu_backward's output add
    the same numbers in the same order (the same bits), and g is loaded whatever y (a load under
    the condition compiled to masked loads).  Against the loops LLVM vectorised with
    reassociation: 1.3-1.5x on ResNet-8's and MobileNetV2-S's layers."""
    relu = y.size > 0
    sv = tv = vwiden(yzero(x))
    muv = vfill(sv, mu)
    s = t = 0.0
    for n in range(n0, n1):
        sv, tv, s, t = _plane_sums(x[n, c], g[n, c], y[n, c] if relu else g[n, c], relu, six, mu,
                                   muv, sv, tv, s, t)
    return vhsum(sv) + s, vhsum(tv) + t


@jit
def _stats_blocks(x, part, n_, first, nb, b0, b1):
    """part[b, c] = (mean, centred sum of squares) of channel c over block b's samples (of a
    batch of n_; x holds its samples from ``first`` on): two passes over the block, each in
    memory order, sample by sample and channel by channel (by channels, every plane began a
    page the prefetcher had not seen: 32x64x8x8 float32, 0.045 -> 0.032 ms; 256x1024 features,
    1.4 -> 0.6 ms), the second centred on the first's mean."""
    for b in range(b0, b1):
        n0, n1 = b * n_ // nb - first, (b + 1) * n_ // nb - first
        for c in range(x.shape[1]):
            part[b, c, 0] = 0.0
            part[b, c, 1] = 0.0
        for n in range(n0, n1):
            for c in range(x.shape[1]):
                part[b, c, 0] += sum64(x[n, c])
        for c in range(x.shape[1]):
            part[b, c, 0] /= (n1 - n0) * x.shape[2]
        for n in range(n0, n1):
            for c in range(x.shape[1]):
                part[b, c, 1] += _centred_square_sum(x[n, c], part[b, c, 0])


@jit
def _combine_stats(part, n_, s_, eps, momentum, update, running_mean, running_var, mean, invstd):
    """mean, invstd (and the running statistics) from the blocks' partials, in block order
    (Chan et al.'s pairwise update: one block gives its own mean and sum exactly)."""
    nb = part.shape[0]
    m = n_ * s_
    for c in range(part.shape[1]):
        count = 0.0
        mu = 0.0
        sq = 0.0
        for b in range(nb):
            size = float(((b + 1) * n_ // nb - b * n_ // nb) * s_)
            total = count + size
            delta = part[b, c, 0] - mu
            mu += delta * (size / total)
            sq += part[b, c, 1] + delta * delta * (count * size / total)
            count = total
        var = sq / m
        inv = 1.0 / np.sqrt(var + eps)
        mean[c] = mu
        invstd[c] = inv
        if update:
            running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mu
            running_var[c] = (1 - momentum) * running_var[c] + momentum * var * m / (m - 1)


@jit
def _affine_samples(x, gamma, beta, mean, invstd, out, act, n0, n1):
    """out[n] = (x[n] - mean) * gamma * invstd + beta for n0 <= n < n1, then (act 1) relu or
    (act 2) relu6 (on the unrounded value: the same results, NaN kept)."""
    for n in range(n0, n1):
        for c in range(x.shape[1]):
            src, dst = x[n, c], out[n, c]
            mu, scale, shift = mean[c], gamma[c] * invstd[c], beta[c]
            if act == 1:
                for e in range(src.size):
                    v = (src[e] - mu) * scale + shift
                    dst[e] = 0 if v <= 0 else v
            elif act == 2:
                for e in range(src.size):
                    v = (src[e] - mu) * scale + shift
                    dst[e] = 0 if v <= 0 else (6 if v >= 6 else v)
            else:
                for e in range(src.size):
                    dst[e] = (src[e] - mu) * scale + shift


@jit
def _grad_sums_blocks(g, x, mean, y, six, part, n_, first, nb, b0, b1):
    """part[b, c] = the sums of g and g * (x - mean) over block b's samples of channel c (of a
    batch of n_; x, g and y hold its samples from ``first`` on): _block_centred_sums' sums, the
    same bits, but read in memory order, sample by sample and channel by channel, each
    channel's running sums kept in an array between its planes.  By channels, every plane
    began a page the prefetcher had not seen: on MobileNetV2-S's 32x96x32x32 float32 layer
    after a relu6, 3.4 -> 1.6 ms on one thread; ResNet-8's 32x64x8x8, 0.075 -> 0.033 ms."""
    relu = y.size > 0
    zero = vwiden(yzero(x))
    lanes = ylanes(x)
    acc = np.empty((x.shape[1], 2 * lanes + 2))
    for b in range(b0, b1):
        n0, n1 = b * n_ // nb - first, (b + 1) * n_ // nb - first
        acc[:] = 0.0
        for n in range(n0, n1):
            for c in range(x.shape[1]):
                run = acc[c]
                mu = mean[c]
                sv, tv, s, t = _plane_sums(x[n, c], g[n, c], y[n, c] if relu else g[n, c], relu,
                                           six, mu, vfill(zero, mu), vload_like(run, 0, zero),
                                           vload_like(run, lanes, zero), run[2 * lanes],
                                           run[2 * lanes + 1])
                vstore(run, 0, sv)
                vstore(run, lanes, tv)
                run[2 * lanes] = s
                run[2 * lanes + 1] = t
        for c in range(x.shape[1]):
            run = acc[c]
            part[b, c, 0] = vhsum(vload_like(run, 0, zero)) + run[2 * lanes]
            part[b, c, 1] = vhsum(vload_like(run, lanes, zero)) + run[2 * lanes + 1]


@jit
def _combine_grads(part, n_, s_, gamma, invstd, dgamma, dbeta, coef):
    """dgamma, dbeta from the blocks' sums (in block order); coef[c] = (shift, slope) of dx:
    dx = scale * (g - sum_g / M - (x - mean) * inv^2 * sum_gx / M)."""
    m = n_ * s_
    for c in range(part.shape[1]):
        s = part[0, c, 0]
        t = part[0, c, 1]
        for b in range(1, part.shape[0]):
            s += part[b, c, 0]
            t += part[b, c, 1]
        inv = invstd[c]
        if dgamma.size > 0:
            dgamma[c] = t * inv
        if dbeta.size > 0:
            dbeta[c] = s
        coef[c, 0] = s / m
        coef[c, 1] = inv * inv * t / m


@jit
def _grad_samples(g, x, mean, y, six, coef, gamma, invstd, dx, accumulate, n0, n1):
    """dx[n] (+)= the batchnorm's input gradient for n0 <= n < n1 (coef: _combine_grads')."""
    for n in range(n0, n1):
        for c in range(x.shape[1]):
            _dx_planes(g, x, y, six, c, n, n + 1, mean[c], gamma[c] * invstd[c], coef[c, 0],
                       coef[c, 1], dx, accumulate)


# -- entry points ------------------------------------------------------------------------------


def _ncs(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def _split(fn, x, *args):
    """fn(*args, c0, c1) over channel ranges, on several threads for a big x."""
    c = x.shape[1]
    threads = 1 if x.size < _PARALLEL_SIZE else min(num_threads(), c)
    run_split(fn, c, threads, lambda t, lo, hi: args + (lo, hi),
              pieces=memory_pieces(c, threads, x.size) if threads > 1 else None)


_BLOCKS = 8                         # the batch's blocks of partial sums, at most


def _blocks(n):
    return min(n, _BLOCKS)


def share_blocks(batch, lo, hi):
    """The blocks [b0, b1) of the partial sums of a batch of ``batch`` samples that are its
    samples [lo, hi), or None where lo or hi cuts a block (``batchnorm_partials_into``)."""
    nb = _blocks(batch)
    starts = [b * batch // nb for b in range(nb + 1)]
    return (starts.index(lo), starts.index(hi)) if lo in starts and hi in starts else None


def _check_part(part, batch, channels):
    """``part`` must be float64 (blocks of a batch of ``batch``, C, 2): the kernels index it
    unchecked."""
    shape = (_blocks(batch), channels, 2)
    if not (isinstance(part, np.ndarray) and part.dtype == np.float64 and part.shape == shape
            and part.flags.c_contiguous):
        got = f"{part.dtype} {part.shape}" if isinstance(part, np.ndarray) else type(part).__name__
        raise ValueError(f"batchnorm partial sums: expected a contiguous float64 array of shape "
                         f"{shape} (blocks of a batch of {batch}, channels, 2), got {got}")


def _own_blocks(x3, batch, first):
    batch = x3.shape[0] if batch is None else batch
    blocks = share_blocks(batch, first, first + x3.shape[0])
    if blocks is None:
        raise ValueError(f"samples {first}..{first + x3.shape[0] - 1} of a batch of {batch} cut a block of "
                         f"its batchnorm statistics (see norm.share_blocks)")
    return batch, blocks


def _by_blocks(fn, x3, nb, b0, b1, *args):
    """fn(*args, nb, lo, hi) over the blocks [b0, b1) of the batch, on several threads for a big x."""
    threads = 1 if x3.size < _PARALLEL_SIZE else min(num_threads(), b1 - b0)
    run_split(fn, b1 - b0, threads, lambda t, lo, hi: args + (nb, b0 + lo, b0 + hi),
              pieces=memory_pieces(b1 - b0, threads, 2 * x3.size) if threads > 1 else None)


def _by_samples(fn, x3, *args):
    """fn(*args, n0, n1) over ranges of samples, on several threads for a big x."""
    n = x3.shape[0]
    threads = 1 if x3.size < _PARALLEL_SIZE else min(num_threads(), n)
    run_split(fn, n, threads, lambda t, lo, hi: args + (lo, hi),
              pieces=memory_pieces(n, threads, 2 * x3.size) if threads > 1 else None)


_empty = none_array


def batchnorm_forward_train_into(x, gamma, beta, eps, momentum, running_mean, running_var, out,
                                 mean, invstd, relu=False, relu6=False):
    """Training-mode forward; mean, invstd (float64 (C,)) are written for the backward.

    running_mean/running_var are updated in place (None: no update).  ``relu``: out receives
    relu(batchnorm(x)) (fused; the backward then takes ``relu_y=out``); ``relu6``: relu6 of it
    (the backward then takes ``relu_y=out, relu6=True``)."""
    part = np.empty((_blocks(x.shape[0]), x.shape[1], 2))
    batchnorm_partials_into(x, part)
    batchnorm_forward_from_partials(x, gamma, beta, eps, momentum, running_mean, running_var, out,
                                    mean, invstd, part, relu=relu, relu6=relu6)


def batchnorm_partials_into(x, part, batch=None, first=0):
    """The training forward's first half: each block's per-channel (mean, centred sum of
    squares) into ``part`` (float64 (blocks, C, 2), ``_blocks(batch)`` blocks).  ``x`` holds the
    samples [first, first + len(x)) of a batch of ``batch`` (default len(x)) and covers its
    blocks whole (``share_blocks``): a share of the batch writes its blocks' rows of the whole
    batch's ``part``, and the second half, run after every share's first, reads them all."""
    x3 = _ncs(x)
    batch, (b0, b1) = _own_blocks(x3, batch, first)
    _check_part(part, batch, x3.shape[1])
    _by_blocks(_stats_blocks, x3, part.shape[0], b0, b1, x3, part, batch, first)


def batchnorm_forward_from_partials(x, gamma, beta, eps, momentum, running_mean, running_var, out,
                                    mean, invstd, part, batch=None, relu=False, relu6=False):
    """The training forward's second half: mean and invstd of the whole batch of ``batch``
    samples from every block's ``part`` (in block order: the same values for every share), the
    running statistics updated (None: not), and the normalised ``x`` (samples of the batch)
    into ``out``."""
    update = running_mean is not None
    if not update:
        running_mean = running_var = _empty(x.dtype, 1)
    x3, out3 = _ncs(x), _ncs(out)
    _check_part(part, x3.shape[0] if batch is None else batch, x3.shape[1])
    _combine_stats(part, x3.shape[0] if batch is None else batch, x3.shape[2], float(eps),
                   float(momentum), update, running_mean, running_var, mean, invstd)
    _by_samples(_affine_samples, x3, x3, gamma, beta, mean, invstd, out3,
                2 if relu6 else 1 if relu else 0)


@jit
def _share_forward(x, part, n_, first, nb, b0, b1, signals, parties, spins, eps, momentum, update,
                   running_mean, running_var, mean, invstd, gamma, beta, out, act):
    """A share's training forward in one call: its blocks' partials, the meeting (``_arrive``)
    and, once every share came, the statistics and its samples' output; what the meeting came
    to (``_jit.Barrier.settle``)."""
    _stats_blocks(x, part, n_, first, nb, b0, b1)
    came = _arrive(signals, parties, spins)
    if came == MET or came == MET_NOTIFY:
        _finish_forward(x, part, n_, eps, momentum, update, running_mean, running_var, mean,
                        invstd, gamma, beta, out, act)
    return came


@jit
def _finish_forward(x, part, n_, eps, momentum, update, running_mean, running_var, mean, invstd,
                    gamma, beta, out, act):
    """A share's forward after the meeting: the statistics, then its samples' output."""
    _combine_stats(part, n_, x.shape[2], eps, momentum, update, running_mean, running_var, mean,
                   invstd)
    _affine_samples(x, gamma, beta, mean, invstd, out, act, 0, x.shape[0])


@jit
def _share_backward(g, x, mean, y, six, part, n_, first, nb, b0, b1, signals, parties, spins,
                    gamma, invstd, dgamma, dbeta, coef, dx, need_dx, accumulate):
    """A share's training backward in one call: its blocks' sums, the meeting and, once every
    share came, dgamma, dbeta (empty: not written) and its samples' dx."""
    _grad_sums_blocks(g, x, mean, y, six, part, n_, first, nb, b0, b1)
    came = _arrive(signals, parties, spins)
    if came == MET or came == MET_NOTIFY:
        _finish_backward(g, x, mean, y, six, part, n_, gamma, invstd, dgamma, dbeta, coef, dx,
                         need_dx, accumulate)
    return came


@jit
def _finish_backward(g, x, mean, y, six, part, n_, gamma, invstd, dgamma, dbeta, coef, dx,
                     need_dx, accumulate):
    """A share's backward after the meeting: dgamma, dbeta (empty: not written), its dx."""
    _combine_grads(part, n_, x.shape[2], gamma, invstd, dgamma, dbeta, coef)
    if need_dx:
        _grad_samples(g, x, mean, y, six, coef, gamma, invstd, dx, accumulate, 0, x.shape[0])


def batchnorm_share_forward_step(x, gamma, beta, eps, momentum, running_mean, running_var, out,
                                 mean, invstd, part, batch, first, barrier, relu=False,
                                 relu6=False):
    """A share's training forward as one step (a function of no arguments) for a thread of
    its own: ``batchnorm_partials_into``, ``barrier.wait()`` and
    ``batchnorm_forward_from_partials`` with these arguments, checked once, run as one compiled
    call where the meeting takes no sleep (``_jit.Barrier``); the same arithmetic."""
    x3, out3 = _ncs(x), _ncs(out)
    batch, (b0, b1) = _own_blocks(x3, batch, first)
    _check_part(part, batch, x3.shape[1])
    update = running_mean is not None
    if not update:
        running_mean = running_var = _empty(x.dtype, 1)
    eps, momentum, act, nb = float(eps), float(momentum), 2 if relu6 else 1 if relu else 0, part.shape[0]
    signals, parties = barrier.signals, barrier.parties

    def step():
        came = _share_forward(x3, part, batch, first, nb, b0, b1, signals, parties, _spins(), eps,
                              momentum, update, running_mean, running_var, mean, invstd, gamma,
                              beta, out3, act)
        if came != MET:
            barrier.settle(came)                     # asleep until the others came, or raises
            if came >= 0:
                _finish_forward(x3, part, batch, eps, momentum, update, running_mean, running_var,
                                mean, invstd, gamma, beta, out3, act)
    return step


def batchnorm_share_backward_step(dout, x, gamma, mean, invstd, dx, dgamma, dbeta, part, batch,
                                  first, barrier, accumulate=False, relu_y=None, relu6=False):
    """A share's training backward as one step: ``batchnorm_grad_partials_into``,
    ``barrier.wait()`` and ``batchnorm_backward_from_partials`` (as
    ``batchnorm_share_forward_step``)."""
    x3, g3 = _ncs(x), _ncs(dout)
    y3 = _empty(x.dtype, 3) if relu_y is None else _ncs(relu_y)
    batch, (b0, b1) = _own_blocks(x3, batch, first)
    _check_part(part, batch, x3.shape[1])
    empty1 = _empty(x.dtype, 1)
    dgamma = empty1 if dgamma is None else dgamma
    dbeta = empty1 if dbeta is None else dbeta
    dx3, need_dx = (x3, False) if dx is None else (_ncs(dx), True)
    coef, six, accumulate, nb = np.empty((x3.shape[1], 2)), bool(relu6), bool(accumulate), part.shape[0]
    signals, parties = barrier.signals, barrier.parties

    def step():
        came = _share_backward(g3, x3, mean, y3, six, part, batch, first, nb, b0, b1, signals,
                               parties, _spins(), gamma, invstd, dgamma, dbeta, coef, dx3, need_dx,
                               accumulate)
        if came != MET:
            barrier.settle(came)
            if came >= 0:
                _finish_backward(g3, x3, mean, y3, six, part, batch, gamma, invstd, dgamma, dbeta,
                                 coef, dx3, need_dx, accumulate)
    return step


def batchnorm_forward_eval_into(x, gamma, beta, eps, running_mean, running_var, out):
    _split(_forward_eval, x, _ncs(x), gamma, beta, float(eps), running_mean, running_var,
           _ncs(out))


def batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dgamma, dbeta, accumulate=False,
                            relu_y=None, relu6=False):
    """Training-mode backward from the forward's mean and invstd (None gradients: skipped).
    ``relu_y``: the output of a fused relu (``relu=True`` forward; ``relu6``: of a fused relu6);
    dout is then its gradient."""
    part = np.empty((_blocks(x.shape[0]), x.shape[1], 2))
    batchnorm_grad_partials_into(dout, x, mean, part, relu_y=relu_y, relu6=relu6)
    batchnorm_backward_from_partials(dout, x, gamma, mean, invstd, dx, dgamma, dbeta, part,
                                     accumulate=accumulate, relu_y=relu_y, relu6=relu6)


def batchnorm_grad_partials_into(dout, x, mean, part, batch=None, first=0, relu_y=None, relu6=False):
    """The training backward's first half: each block's per-channel sums of dout and
    dout * (x - mean) into ``part`` (as ``batchnorm_partials_into``: ``x``, ``dout`` and
    ``relu_y`` hold the samples [first, first + len(x)) of a batch of ``batch``)."""
    x3, g3 = _ncs(x), _ncs(dout)
    y3 = _empty(x.dtype, 3) if relu_y is None else _ncs(relu_y)
    batch, (b0, b1) = _own_blocks(x3, batch, first)
    _check_part(part, batch, x3.shape[1])
    _by_blocks(_grad_sums_blocks, x3, part.shape[0], b0, b1, g3, x3, mean, y3, bool(relu6), part,
               batch, first)


def batchnorm_backward_from_partials(dout, x, gamma, mean, invstd, dx, dgamma, dbeta, part,
                                     batch=None, accumulate=False, relu_y=None, relu6=False):
    """The training backward's second half: dgamma and dbeta of the whole batch of ``batch``
    samples from every block's ``part`` (None: not written), and dx of x's samples."""
    empty1 = _empty(x.dtype, 1)
    x3, g3 = _ncs(x), _ncs(dout)
    y3 = _empty(x.dtype, 3) if relu_y is None else _ncs(relu_y)
    _check_part(part, x3.shape[0] if batch is None else batch, x3.shape[1])
    coef = np.empty((x3.shape[1], 2))
    _combine_grads(part, x3.shape[0] if batch is None else batch, x3.shape[2], gamma, invstd,
                   empty1 if dgamma is None else dgamma, empty1 if dbeta is None else dbeta, coef)
    if dx is not None:
        _by_samples(_grad_samples, x3, g3, x3, mean, y3, bool(relu6), coef, gamma, invstd, _ncs(dx),
                    bool(accumulate))


def batchnorm_backward_eval_into(dout, x, gamma, eps, running_mean, running_var, dx, dgamma,
                                 dbeta, accumulate=False):
    """Backward of the evaluation-mode forward (running statistics are constants)."""
    empty1 = _empty(x.dtype, 1)
    x3 = _ncs(x)
    _split(_backward, x, _ncs(dout), x3, gamma, running_mean, running_var, float(eps), False,
           x3 if dx is None else _ncs(dx), empty1 if dgamma is None else dgamma,
           empty1 if dbeta is None else dbeta, dx is not None, bool(accumulate),
           _empty(x.dtype, 3))
