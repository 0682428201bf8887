"""Pooling forward and backward, 2-D; 1-D runs with H = 1.  Global pooling is pooling with the
window equal to the whole plane.

Window (oh, ow) covers padded rows oh*sh - top ... + kh and columns ow*sw - left ... + kw.
* max: over the real input elements in the window (padding never wins); ties go to the first
  maximum in row-major order; ``argmax`` keeps the flat index h*W + w of the winner for the
  backward (-1 and out = -inf for a window with no input element, as PyTorch).
* avg: the sum of the real elements divided by the window clipped to the padded input, i.e.
  count_include_pad=True, and in ceil mode the part of a window hanging past the bottom/right
  padding is not counted (PyTorch's avg_pool2d: ``hend = min(hstart + kh, H + pad_bottom)``).
* sum: the plain sum of the window (= avg x its divisor).

The caller chooses OH, OW (the out buffer's shape), which is how ceil mode is expressed.
Samples are independent: big tensors are split over threads by samples (``run_split``).
"""
import numpy as np

from cnnspec.kernels._jit import jit, num_threads, run_split

_PARALLEL_WORK = 1 << 19          # window reads below which one thread is faster


@jit
def _window(o, step, before, k, size, after):
    """Real rows [lo, hi) of window o and its length clipped to the padded input."""
    start = o * step - before
    end = min(start + k, size + after)
    return max(start, 0), min(start + k, size), end - start


@jit
def _maxpool_plane(xp, kernel, stride, pad, outp, argp):
    h_, w_ = xp.shape
    oh_, ow_ = outp.shape
    for oh in range(oh_):
        h0, h1, _ = _window(oh, stride[0], pad[0], kernel[0], h_, pad[1])
        for ow in range(ow_):
            w0, w1, _ = _window(ow, stride[1], pad[2], kernel[1], w_, pad[3])
            best = -np.inf
            arg = -1
            for h in range(h0, h1):
                row = xp[h]
                for w in range(w0, w1):
                    v = row[w]
                    # '>' keeps the first maximum; a NaN wins (propagates), as in PyTorch
                    if arg < 0 or v > best or v != v:
                        best = v
                        arg = h * w_ + w
            outp[oh, ow] = best
            argp[oh, ow] = arg


@jit
def _maxpool_forward(x, kernel, stride, pad, out, argmax):
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            _maxpool_plane(x[n, c], kernel, stride, pad, out[n, c], argmax[n, c])


@jit
def _maxpool_backward_plane(doutp, argp, dxp, accumulate):
    flat = dxp.reshape(dxp.size)
    if not accumulate:
        flat[:] = 0
    d = doutp.reshape(doutp.size)
    a = argp.reshape(argp.size)
    for e in range(d.size):
        if a[e] >= 0:
            flat[a[e]] += d[e]


@jit
def _maxpool_backward(dout, argmax, dx, accumulate):
    for n in range(dx.shape[0]):
        for c in range(dx.shape[1]):
            _maxpool_backward_plane(dout[n, c], argmax[n, c], dx[n, c], accumulate)


@jit
def _avgpool_plane(xp, kernel, stride, pad, divide, outp):
    h_, w_ = xp.shape
    oh_, ow_ = outp.shape
    for oh in range(oh_):
        h0, h1, hn = _window(oh, stride[0], pad[0], kernel[0], h_, pad[1])
        for ow in range(ow_):
            w0, w1, wn = _window(ow, stride[1], pad[2], kernel[1], w_, pad[3])
            s = 0.0
            for h in range(h0, h1):
                row = xp[h]
                for w in range(w0, w1):
                    s += row[w]
            outp[oh, ow] = s / (hn * wn) if divide else s


@jit
def _avgpool_forward(x, kernel, stride, pad, divide, out):
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            _avgpool_plane(x[n, c], kernel, stride, pad, divide, out[n, c])


@jit
def _avgpool_backward_plane(doutp, kernel, stride, pad, divide, dxp, accumulate):
    h_, w_ = dxp.shape
    oh_, ow_ = doutp.shape
    if not accumulate:
        dxp[:] = 0
    for oh in range(oh_):
        h0, h1, hn = _window(oh, stride[0], pad[0], kernel[0], h_, pad[1])
        for ow in range(ow_):
            w0, w1, wn = _window(ow, stride[1], pad[2], kernel[1], w_, pad[3])
            g = doutp[oh, ow] / (hn * wn) if divide else doutp[oh, ow]
            for h in range(h0, h1):
                row = dxp[h]
                for w in range(w0, w1):
                    row[w] += g


@jit
def _avgpool_backward(dout, kernel, stride, pad, divide, dx, accumulate):
    for n in range(dx.shape[0]):
        for c in range(dx.shape[1]):
            _avgpool_backward_plane(dout[n, c], kernel, stride, pad, divide, dx[n, c],
                                    accumulate)


def _threads(n, work):
    return 1 if work < _PARALLEL_WORK else min(num_threads(), n)


# -- entry points (x, out, dx 4-D C-contiguous; see the package docstring) ---------------------


# Samples are split over threads for big tensors: x[lo:hi] is a C-contiguous view.


def maxpool2d_forward_into(x, kernel, stride, pad, out, argmax):
    run_split(_maxpool_forward, x.shape[0], _threads(x.shape[0], out.size * kernel[0] * kernel[1]),
              lambda t, lo, hi: (x[lo:hi], kernel, stride, pad, out[lo:hi], argmax[lo:hi]))


def maxpool2d_backward_into(dout, argmax, dx, accumulate=False):
    run_split(_maxpool_backward, dx.shape[0], _threads(dx.shape[0], dx.size),
              lambda t, lo, hi: (dout[lo:hi], argmax[lo:hi], dx[lo:hi], bool(accumulate)))


def _avgpool(x, kernel, stride, pad, divide, out):
    run_split(_avgpool_forward, x.shape[0], _threads(x.shape[0], out.size * kernel[0] * kernel[1]),
              lambda t, lo, hi: (x[lo:hi], kernel, stride, pad, divide, out[lo:hi]))


def _avgpool_grad(dout, kernel, stride, pad, divide, dx, accumulate):
    run_split(_avgpool_backward, dx.shape[0],
              _threads(dx.shape[0], dout.size * kernel[0] * kernel[1]),
              lambda t, lo, hi: (dout[lo:hi], kernel, stride, pad, divide, dx[lo:hi],
                                 bool(accumulate)))


def avgpool2d_forward_into(x, kernel, stride, pad, out):
    _avgpool(x, kernel, stride, pad, True, out)


def avgpool2d_backward_into(dout, kernel, stride, pad, dx, accumulate=False):
    _avgpool_grad(dout, kernel, stride, pad, True, dx, accumulate)


def sumpool2d_forward_into(x, kernel, stride, pad, out):
    _avgpool(x, kernel, stride, pad, False, out)


def sumpool2d_backward_into(dout, kernel, stride, pad, dx, accumulate=False):
    _avgpool_grad(dout, kernel, stride, pad, False, dx, accumulate)


def _planes(a):
    """(N, C, *spatial) -> the 4-D view (N, C, 1, S) the pooling kernels take."""
    return a.reshape(a.shape[0], a.shape[1], 1, -1)


_WHOLE = (0, 0, 0, 0)


def global_avgpool_forward_into(x, out):
    """out (N, C, 1[, 1]) = the mean of each plane of x (N, C, *spatial)."""
    x4 = _planes(x)
    s = x4.shape[3]
    _avgpool(x4, (1, s), (1, s), _WHOLE, True, _planes(out))


def global_avgpool_backward_into(dout, dx, accumulate=False):
    dx4 = _planes(dx)
    s = dx4.shape[3]
    _avgpool_grad(_planes(dout), (1, s), (1, s), _WHOLE, True, dx4, accumulate)


def global_maxpool_forward_into(x, out, argmax):
    """out (N, C, 1[, 1]) = the max of each plane; argmax int64 (N, C): flat spatial index."""
    x4 = _planes(x)
    s = x4.shape[3]
    maxpool2d_forward_into(x4, (1, s), (1, s), _WHOLE, _planes(out), _planes(argmax))


def global_maxpool_backward_into(dout, argmax, dx, accumulate=False):
    maxpool2d_backward_into(_planes(dout), _planes(argmax), _planes(dx), accumulate)
