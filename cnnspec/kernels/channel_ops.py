"""Channel-wise operations of modern blocks: the product ``mul`` (equal shapes, or a gate of one
value per channel broadcast over the plane: squeeze-and-excitation), the channel slice
``channels`` and the channel ``shuffle`` (ShuffleNet), forward and backward.

* mul:      out = a * b;          da = dout * b, db = dout * a (one call per operand)
* gate:     out[n, c, s] = x[n, c, s] * gate[n, c];
            dx = dout * gate, dgate[n, c] = sum_s dout[n, c, s] * x[n, c, s] (float64 sums)
* channels: out = x[:, start:start + C_out]; dx[:, start:...] (+)= dout, zero elsewhere
* shuffle:  view the C channels as (g, C/g), transpose, flatten:
            out[:, k*g + i] = x[:, i*(C/g) + k]; the backward is the shuffle with C/g groups.
"""
import numpy as np

from cnnspec.kernels._jit import by_samples, elementwise, jit, jit_sum
from cnnspec.kernels.merge import _copy_channels, _flat, _ncs


@jit
def _mul(a, b, out):
    for i in range(out.size):
        out[i] = a[i] * b[i]


@jit
def _mul_grad(dout, other, dx, accumulate):
    if accumulate:
        for i in range(dx.size):
            dx[i] += dout[i] * other[i]
    else:
        for i in range(dx.size):
            dx[i] = dout[i] * other[i]


@jit_sum
def _dot64(a, b):
    """The float64 sum of a * b over two 1-D arrays (vectorised: reassociation only, see
    ``_jit.jit_sum``; the products of float32 values are exact in float64)."""
    s = 0.0
    for e in range(a.size):
        s += np.float64(a[e]) * np.float64(b[e])
    return s


@jit
def _gate_forward(x, gate, out):
    """x, out (N, C, S); gate (N, C)."""
    n_, c_, _ = x.shape
    for n in range(n_):
        for c in range(c_):
            g = gate[n, c]
            src, dst = x[n, c], out[n, c]
            for e in range(dst.size):
                dst[e] = src[e] * g


@jit
def _gate_backward(dout, x, gate, dx, dgate, need_dx, need_dgate, accumulate_dx,
                   accumulate_dgate):
    n_, c_, _ = dout.shape
    for n in range(n_):
        for c in range(c_):
            d = dout[n, c]
            if need_dgate:
                s = _dot64(d, x[n, c])
                dgate[n, c] = dgate[n, c] + s if accumulate_dgate else s
            if need_dx:
                g, dst = gate[n, c], dx[n, c]
                if accumulate_dx:
                    for e in range(dst.size):
                        dst[e] += d[e] * g
                else:
                    for e in range(dst.size):
                        dst[e] = d[e] * g


@jit
def _zero_outside(dx, start, stop):
    """dx[:, c] = 0 for the channels c outside [start, stop) of dx (N, C, S)."""
    n_, c_, _ = dx.shape
    for n in range(n_):
        for c in range(c_):
            if c < start or c >= stop:
                d = dx[n, c]
                for e in range(d.size):
                    d[e] = 0


@jit
def _transpose_channels(src, rows, cols, dst, accumulate):
    """dst[:, c*rows + r] (+)= src[:, r*cols + c]: the channels of src (N, C, S) as a (rows, cols)
    matrix, transposed."""
    n_ = src.shape[0]
    for n in range(n_):
        for r in range(rows):
            for c in range(cols):
                s, d = src[n, r * cols + c], dst[n, c * rows + r]
                if accumulate:
                    for e in range(d.size):
                        d[e] += s[e]
                else:
                    for e in range(d.size):
                        d[e] = s[e]


def mul_forward_into(a, b, out):
    """out = a * b (equal shapes)."""
    elementwise(_mul, _flat(a), _flat(b), _flat(out))


def mul_backward_into(dout, other, dx, accumulate=False):
    """dx (+)= dout * other: the gradient of one operand of mul (other = the other operand)."""
    elementwise(_mul_grad, _flat(dout), _flat(other), _flat(dx), bool(accumulate))


def gate_forward_into(x, gate, out):
    """out (N, C, *spatial) = x * gate, gate (N, C[, 1, ...]): one value per channel."""
    by_samples(_gate_forward, 2 * x.size, _ncs(x), gate.reshape(gate.shape[0], gate.shape[1]),
               _ncs(out))


def gate_backward_into(dout, x, gate, dx, dgate, accumulate_dx=False, accumulate_dgate=False):
    """dx (+)= dout * gate; dgate (N, C[, 1, ...]) (+)= the sums over each plane of dout * x.
    dx or dgate may be None (not computed); each has its own accumulate flag (two inputs)."""
    d3 = _ncs(dout)
    g2 = gate.reshape(gate.shape[0], gate.shape[1])
    dx3 = d3[:0] if dx is None else _ncs(dx)
    dg2 = g2[:0] if dgate is None else dgate.reshape(dgate.shape[0], dgate.shape[1])
    by_samples(_gate_backward, 3 * x.size, d3, _ncs(x), g2, dx3, dg2, dx is not None,
               dgate is not None, bool(accumulate_dx), bool(accumulate_dgate))


def channel_slice_forward_into(x, start, out):
    """out (N, C_out, *spatial) = x[:, start:start + C_out]."""
    by_samples(_copy_channels, 2 * out.size, _ncs(x), _ncs(out), int(start), False, False)


def channel_slice_backward_into(dout, start, dx, accumulate=False):
    """dx[:, start:start + C_out] (+)= dout; without accumulate the other channels of dx are 0."""
    dx3 = _ncs(dx)
    if not accumulate:
        _zero_outside(dx3, int(start), int(start) + dout.shape[1])
    by_samples(_copy_channels, 2 * dout.size, _ncs(dout), dx3, int(start), True, bool(accumulate))


def channel_shuffle_forward_into(x, groups, out):
    """out[:, k*g + i] = x[:, i*(C/g) + k] (x viewed as (g, C/g) channels, transposed)."""
    c = x.shape[1]
    _transpose_channels(_ncs(x), int(groups), c // int(groups), _ncs(out), False)


def channel_shuffle_backward_into(dout, groups, dx, accumulate=False):
    """dx (+)= the inverse shuffle of dout (a shuffle with C/g groups)."""
    c = dout.shape[1]
    _transpose_channels(_ncs(dout), c // int(groups), int(groups), _ncs(dx), bool(accumulate))
