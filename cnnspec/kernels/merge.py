"""Dropout, add and concat: the layers that only move or scale values.

Inverted dropout: out = x * mask / (1 - p) with a boolean keep-mask made by the caller (the
engine draws it from a seeded generator); identity at evaluation (the engine skips the layer).
add: out = a + b; its backward hands dout to every operand (``accumulate_into``).
concat along channels: each input is a block of channels of out; the backward splits dout.
"""
from cnnspec.kernels._jit import by_samples, elementwise, jit
from cnnspec.kernels.activation import same_buffer


@jit
def _dropout(x, mask, keep, out):
    for i in range(x.size):
        out[i] = x[i] / keep if mask[i] else 0


@jit
def _dropout_backward(dout, mask, keep, dx, accumulate):
    if accumulate:
        for i in range(dx.size):
            dx[i] += dout[i] / keep if mask[i] else 0
    else:
        for i in range(dx.size):
            dx[i] = dout[i] / keep if mask[i] else 0


@jit
def _dropout_backward_in_place(g, mask, keep):
    for i in range(g.size):
        g[i] = g[i] / keep if mask[i] else 0


@jit
def _add(a, b, out):
    for i in range(out.size):
        out[i] = a[i] + b[i]


@jit
def _add_relu(a, b, out):
    for i in range(out.size):
        v = a[i] + b[i]
        out[i] = 0 if v <= 0 else v


@jit
def _accumulate(src, dst):
    for i in range(dst.size):
        dst[i] += src[i]


@jit
def _copy(src, dst):
    for i in range(dst.size):
        dst[i] = src[i]


@jit
def _copy_channels(src, dst, c0, to_block, accumulate):
    """to_block: dst[:, c0:c0+Cs] (+)= src;  else: dst (+)= src[:, c0:c0+Cd].  (N, C, S) views."""
    n_ = src.shape[0]
    cs = src.shape[1] if to_block else dst.shape[1]
    for n in range(n_):
        for c in range(cs):
            if to_block:
                s, d = src[n, c], dst[n, c0 + c]
            else:
                s, d = src[n, c0 + c], dst[n, c]
            if accumulate:
                for e in range(d.size):
                    d[e] += s[e]
            else:
                for e in range(d.size):
                    d[e] = s[e]


def _flat(a):
    return a.reshape(-1)


def _ncs(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


# x / (1 - p) with 1 - p in x's dtype: the rounding NumPy's float32 arithmetic gives
def dropout_forward_into(x, mask, p, out):
    elementwise(_dropout, _flat(x), _flat(mask), x.dtype.type(1 - p), _flat(out))


def dropout_backward_into(dout, mask, p, dx, accumulate=False):
    keep = dout.dtype.type(1 - p)
    if not accumulate and same_buffer(dx, dout):     # see activation._relu_backward_in_place
        elementwise(_dropout_backward_in_place, _flat(dx), _flat(mask), keep)
    else:
        elementwise(_dropout_backward, _flat(dout), _flat(mask), keep, _flat(dx), bool(accumulate))


def add_into(a, b, out):
    elementwise(_add, _flat(a), _flat(b), _flat(out))


def add_relu_into(a, b, out):
    """out = relu(a + b): add_into then relu_forward_into in one pass, the same values bit for
    bit (the sum rounds to out's dtype in both; NaN goes through)."""
    elementwise(_add_relu, _flat(a), _flat(b), _flat(out))


def accumulate_into(src, dst):
    elementwise(_accumulate, _flat(src), _flat(dst))


def copy_into(src, dst):
    """dst = src (same size, same dtype): the backward of add, on the threads when big."""
    elementwise(_copy, _flat(src), _flat(dst))


def concat_forward_into(xs, out):
    """out (N, sum Ci, *spatial) = the xs (N, Ci, *spatial) side by side along channels."""
    o = _ncs(out)
    c0 = 0
    for x in xs:
        by_samples(_copy_channels, 2 * x.size, _ncs(x), o, c0, True, False)
        c0 += x.shape[1]


def concat_backward_into(dout, dxs, accumulate=False):
    """dxs[i] (+)= the block of dout's channels that input i filled.

    An entry may be an int instead of an array: that input's channel count, skipped (an input
    that needs no gradient)."""
    d = _ncs(dout)
    c0 = 0
    for dx in dxs:
        if isinstance(dx, int):
            c0 += dx
            continue
        by_samples(_copy_channels, 2 * dx.size, d, _ncs(dx), c0, False, bool(accumulate))
        c0 += dx.shape[1]
