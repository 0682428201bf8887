"""Upsampling by integer factors (sh, sw), nearest and bilinear, forward and backward, as PyTorch's
``interpolate(scale_factor=...)`` with ``align_corners=False``; 1-D ``linear`` is bilinear with
H = 1 and scale (1, s) (an axis of scale 1 is the identity).

* nearest: out[oh, ow] = x[oh // sh, ow // sw]; its gradient sums each sh x sw block of dout.
* bilinear: along an axis of scale s, output o reads the input at src = (o + 0.5)/s - 0.5,
  clamped at 0 (PyTorch's ``area_pixel_compute_source_index``): i0 = floor(src),
  i1 = min(i0 + 1, in - 1), l1 = src - i0, l0 = 1 - l1.  Separable, in PyTorch's order: each
  input row is interpolated along W into ``tmp`` (H, OW), then
  out[oh] = l0[oh] * tmp[i0[oh]] + l1[oh] * tmp[i1[oh]] (a vectorised loop over the row).
  The backward is the adjoint, in reverse: dtmp[i0[oh]] += l0[oh] * dout[oh] (and i1), then
  dx[h, i0[ow]] += l0[ow] * dtmp[h, ow] (and i1).

Samples are independent: big tensors are split over threads by samples (``run_split``).
"""
import numpy as np

from cnnspec.kernels._jit import jit, num_threads, run_split

_PARALLEL_WORK = 1 << 18          # output elements below which one thread is faster


@jit
def _linear_weights(n_out, n_in, scale, dtype_probe):
    """(i0, i1, l0, l1) per output index along one axis (weights in the probe's dtype)."""
    i0 = np.empty(n_out, np.int64)
    i1 = np.empty(n_out, np.int64)
    l0 = np.empty(n_out, dtype_probe.dtype)
    l1 = np.empty(n_out, dtype_probe.dtype)
    inv = 1.0 / scale                        # PyTorch multiplies by 1/scale
    for o in range(n_out):
        src = inv * (o + 0.5) - 0.5
        if src < 0:
            src = 0.0
        lo = int(src)                        # src >= 0: truncation is floor
        lo = min(lo, n_in - 1)
        i0[o] = lo
        i1[o] = min(lo + 1, n_in - 1)
        frac = src - lo
        l1[o] = frac
        l0[o] = 1.0 - frac
    return i0, i1, l0, l1


@jit
def _bilinear_forward(x, sh, sw, out):
    n_, c_, h_, w_ = x.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    hi0, hi1, hl0, hl1 = _linear_weights(oh_, h_, sh, x[:0, 0, 0, 0])
    wi0, wi1, wl0, wl1 = _linear_weights(ow_, w_, sw, x[:0, 0, 0, 0])
    tmp = np.empty((h_, ow_), x.dtype)
    for n in range(n_):
        for c in range(c_):
            xp, op = x[n, c], out[n, c]
            for h in range(h_):
                src, row = xp[h], tmp[h]
                for o in range(ow_):
                    row[o] = wl0[o] * src[wi0[o]] + wl1[o] * src[wi1[o]]
            for o in range(oh_):
                a, b = tmp[hi0[o]], tmp[hi1[o]]
                la, lb = hl0[o], hl1[o]
                row = op[o]
                for e in range(ow_):
                    row[e] = la * a[e] + lb * b[e]


@jit
def _bilinear_backward(dout, sh, sw, dx, accumulate):
    n_, c_, h_, w_ = dx.shape
    oh_, ow_ = dout.shape[2], dout.shape[3]
    hi0, hi1, hl0, hl1 = _linear_weights(oh_, h_, sh, dx[:0, 0, 0, 0])
    wi0, wi1, wl0, wl1 = _linear_weights(ow_, w_, sw, dx[:0, 0, 0, 0])
    dtmp = np.empty((h_, ow_), dx.dtype)
    flat = dtmp.reshape(dtmp.size)
    for n in range(n_):
        for c in range(c_):
            for e in range(flat.size):
                flat[e] = 0
            gp, dp = dout[n, c], dx[n, c]
            for o in range(oh_):
                g, a, b = gp[o], dtmp[hi0[o]], dtmp[hi1[o]]
                la, lb = hl0[o], hl1[o]
                for e in range(ow_):
                    a[e] += la * g[e]
                for e in range(ow_):                 # a second loop: a and b may be one row
                    b[e] += lb * g[e]
            for h in range(h_):
                src, row = dtmp[h], dp[h]
                if not accumulate:
                    for e in range(w_):
                        row[e] = 0
                for o in range(ow_):
                    row[wi0[o]] += wl0[o] * src[o]
                    row[wi1[o]] += wl1[o] * src[o]


@jit
def _nearest_forward(x, sh, sw, out):
    n_, c_, h_, w_ = x.shape
    ow_ = out.shape[3]
    for n in range(n_):
        for c in range(c_):
            xp, op = x[n, c], out[n, c]
            for h in range(h_):
                src, first = xp[h], op[h * sh]
                if sw == 2:
                    for e in range(w_):
                        first[2 * e] = src[e]
                        first[2 * e + 1] = src[e]
                else:
                    for e in range(w_):
                        for k in range(sw):
                            first[e * sw + k] = src[e]
                for r in range(1, sh):
                    row = op[h * sh + r]
                    for e in range(ow_):
                        row[e] = first[e]


@jit
def _nearest_backward(dout, sh, sw, dx, accumulate):
    n_, c_, h_, w_ = dx.shape
    ow_ = dout.shape[3]
    tmp = np.empty(ow_, dx.dtype)
    for n in range(n_):
        for c in range(c_):
            gp, dp = dout[n, c], dx[n, c]
            for h in range(h_):
                first = gp[h * sh]
                for e in range(ow_):
                    tmp[e] = first[e]
                for r in range(1, sh):
                    row = gp[h * sh + r]
                    for e in range(ow_):
                        tmp[e] += row[e]
                drow = dp[h]
                for e in range(w_):
                    s = tmp[e * sw]
                    for k in range(1, sw):
                        s += tmp[e * sw + k]
                    if accumulate:
                        drow[e] += s
                    else:
                        drow[e] = s


def _threads(n, work):
    return 1 if work < _PARALLEL_WORK else min(num_threads(), n)


_MODES = ("nearest", "bilinear", "linear")


def _mode(mode):
    if mode not in _MODES:
        raise ValueError(f"upsample mode must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode == "nearest"


def upsample2d_forward_into(x, scale, mode, out):
    """out (N, C, H*sh, W*sw) = x (N, C, H, W) upsampled; scale (sh, sw) ints; mode "nearest",
    "bilinear" (or "linear": the same kernel, for (N, C, 1, L) with scale (1, s))."""
    fn = _nearest_forward if _mode(mode) else _bilinear_forward
    sh, sw = int(scale[0]), int(scale[1])
    run_split(fn, x.shape[0], _threads(x.shape[0], out.size),
              lambda t, lo, hi: (x[lo:hi], sh, sw, out[lo:hi]), dynamic=True)


def upsample2d_backward_into(dout, scale, mode, dx, accumulate=False):
    """dx (N, C, H, W) (+)= the gradient of upsample2d_forward_into for dout (N, C, OH, OW)."""
    fn = _nearest_backward if _mode(mode) else _bilinear_backward
    sh, sw = int(scale[0]), int(scale[1])
    run_split(fn, dx.shape[0], _threads(dx.shape[0], dout.size),
              lambda t, lo, hi: (dout[lo:hi], sh, sw, dx[lo:hi], bool(accumulate)), dynamic=True)
