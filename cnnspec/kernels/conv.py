"""Convolution (cross-correlation) forward and backward, 2-D; 1-D runs with H = 1.

    out[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j]
                                 * xpad[n, g*Cg + c, oh*sh + i*dh, ow*sw + j*dw]

for output channel f in group g = f // Fg (Cg = C / groups input and Fg = F / groups output
channels per group); xpad is x with (top, bottom, left, right) zeros around it.

Every convolution is matrix products on BLAS (``_blas.gemm``), one sample at a time, output rows
in chunks small enough for the BLAS small-matrix kernels and the caches; samples are split over
threads (``run_split``; each thread owns a slice of the workspace and a partial dw/db, summed in
a fixed order afterwards, so results do not depend on timing).  Two ways to make the matrices:

* **kn2row** (stride 1): copy the sample once into a zero-padded buffer xp (C, Hp, Wp); then
  for every tap (i, j) the input the tap sees is the 2-D window ``xp[c, i*dh*Wp + j*dw + q]``,
  q = oh*Wp + ow, a matrix with leading dimension Hp*Wp that BLAS reads in place.  The output is
  computed on the "wide" grid (OH, Wp) and the Wp - OW extra columns per row are dropped:
  ``wide (Fg, q) += w[:, :, i, j] (Fg, Cg) @ xp_tap (Cg, q)``.  No im2col copy at all; the wasted
  columns cost (KW - 1) * dw / Wp of the work.  Backward runs the same taps the other way:
  ``dw_tap += dwide @ xp_tap.T`` and ``dxp_tap += w_tap.T @ dwide`` (dwide is zero on the extra
  columns, so they contribute nothing).
* **im2col** (any stride): ``col (Cg*KH*KW, rows*OW)`` then ``out = w (Fg, Cg*KH*KW) @ col``;
  backward ``dw += dout @ col.T``, ``dcol = w.T @ dout`` and col2im adds dcol back into dx.  A 1x1
  convolution with stride 1 and no padding needs no col: x itself is the matrix.

Stride 1 uses KN2ROW when Cg >= 16 (products with inner dimension Cg), else GATHER (the taps'
windows copied into col, inner dimension Cg*KH*KW); other strides use IM2COL.  Measured choices
(float32, 2 cores): on 3x3 64->64 kn2row ran 187 GFLOP/s against 128 for gather; on LeNet's
conv2 gather ran 2.5x faster than im2col (whose rows of OW = 10 elements cost more to copy than
the wide grid's 40% extra columns).  dw is computed as dw^T = col @ dwide^T, BLAS's fast (NN)
case: 114 against 45 GFLOP/s for dw = dwide @ col^T on LeNet's conv2.  Performance table:
``cnnspec/kernels/__init__.py``.
"""
import numpy as np

from cnnspec.kernels._blas import gemm
from cnnspec.kernels._jit import jit, num_threads, run_split, sum64

# Chunk sizes (measured): kn2row products of about 128 columns (105 GFLOP/s on one core against
# 80 for whole rows of 3248) and col chunks of about 32k elements stay on OpenBLAS's
# small-matrix path and in L2.
_KN2ROW_COLUMNS = 128
_KN2ROW_CHANNELS = 16
_IM2COL_ELEMENTS = 32768

# -- shapes -----------------------------------------------------------------------------------


def conv_output_size(size, kernel, stride, pad_before, pad_after, dilation=1):
    """Output length along one axis: 1 + (size + pads - dilation*(kernel-1) - 1) // stride."""
    return 1 + (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride


def conv2d_output_shape(x_shape, w_shape, stride, pad, dilation=(1, 1)):
    """(N, F, OH, OW) of a 2-D convolution of x (N, C, H, W) by w (F, C/groups, KH, KW)."""
    n, _, h, w = x_shape
    f, _, kh, kw = w_shape
    return (n, f, conv_output_size(h, kh, stride[0], pad[0], pad[1], dilation[0]),
            conv_output_size(w, kw, stride[1], pad[2], pad[3], dilation[1]))


# How a convolution runs (``_Plan.mode``).
IM2COL = 0        # any stride: col (Cg*KH*KW, rows*OW) per chunk; 1x1/stride 1/no pad: x itself
GATHER = 1        # stride 1, few channels: the taps' windows of xp copied into col (contiguous)
KN2ROW = 2        # stride 1, Cg >= 16: BLAS reads every tap's window of xp in place


class _Plan:
    """How one convolution runs: mode, row-chunk size and workspace layout (in elements).

    The workspace holds ``shared`` elements (KN2ROW: the weights, tap-major) and then one
    ``per_thread`` slice per thread with the offsets ``layout = (xp, wide, col, dw, db)``:
    GATHER/KN2ROW  [xp | dxp | wide chunk | its transpose | col (GATHER) | partial dw | db]
    IM2COL         [col | partial dw | partial db]                (xp = wide = col = 0)
    Partial dw layouts: IM2COL (F, Cg*KH*KW) like w; GATHER (Cg*KH*KW, F); KN2ROW (taps, Cg, F).
    """

    __slots__ = ("mode", "identity", "rows", "shared", "per_thread", "layout")

    def __init__(self, x_shape, w_shape, stride, pad, dilation, groups):
        n, c, h, w = x_shape
        f, cg, kh, kw = w_shape
        k = cg * kh * kw
        oh, ow = conv2d_output_shape(x_shape, w_shape, stride, pad, dilation)[2:]
        self.identity = (kh == 1 and kw == 1 and stride == (1, 1) and pad == (0, 0, 0, 0))
        if stride != (1, 1) or self.identity:
            self.mode = IM2COL
            self.rows = max(1, min(oh, _IM2COL_ELEMENTS // max(1, k * ow)))
            self.shared = 0
            o_dw = 0 if self.identity else k * self.rows * ow
            self.layout = (0, 0, 0, o_dw, o_dw + f * k)
        else:
            self.mode = KN2ROW if cg >= _KN2ROW_CHANNELS else GATHER
            hp, wp = h + pad[0] + pad[1], w + pad[2] + pad[3]
            if self.mode == KN2ROW:
                self.rows = max(1, min(oh, _KN2ROW_COLUMNS // wp))
            else:
                self.rows = max(1, min(oh, _IM2COL_ELEMENTS // (k * wp)))
            q = self.rows * wp
            xp = c * hp * wp + (kw - 1) * dilation[1]
            o_col = 2 * xp + 2 * f * q
            o_dw = o_col + (k * q if self.mode == GATHER else 0)
            self.shared = kh * kw * f * cg if self.mode == KN2ROW else 0
            self.layout = (xp, 2 * xp, o_col, o_dw, o_dw + f * k)
        self.per_thread = self.layout[4] + f

    def workspace_size(self, threads):
        return self.shared + threads * self.per_thread


def conv2d_workspace_size(x_shape, w_shape, stride, pad, dilation=(1, 1), groups=1):
    """Elements of the scratch ``workspace`` that conv2d_forward_into/backward_into need."""
    plan = _Plan(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(pad), tuple(dilation),
                 groups)
    return plan.workspace_size(num_threads())


# -- small loops ------------------------------------------------------------------------------
# numba idiom used throughout: take a 1-D view at the offset and index it with the bare loop
# variable (``d = col[dst:]; d[e] = s[e]``).  ``col[dst + e]`` makes numba test every index for
# negative wrap-around, which blocks vectorisation: the gather below ran 17x slower that way.


@jit
def _span(n_out, n_in, step, offset):
    """Outputs o in [lo, hi) with 0 <= o * step + offset < n_in (the rest read padding)."""
    lo = 0
    if offset < 0:
        lo = (-offset + step - 1) // step
    hi = 0
    if n_in - offset > 0:
        hi = (n_in - offset + step - 1) // step
    hi = min(hi, n_out)
    return min(lo, hi), hi


@jit
def _pad_sample(x, n, pad, xp):
    """xp (flat) = x[n] (C, H, W) with zero borders (C, Hp, Wp); zeros after it to the end."""
    _, c_, h_, w_ = x.shape
    hp, wp = h_ + pad[0] + pad[1], w_ + pad[2] + pad[3]
    xp[:] = 0
    for c in range(c_):
        for h in range(h_):
            src = x[n, c, h]
            dst = xp[(c * hp + h + pad[0]) * wp + pad[2]:]
            for j in range(w_):
                dst[j] = src[j]


@jit
def _tap_major(w, wt):
    """wt[(i*KW + j), f, c] = w[f, c, i, j] (flat): each tap's (F, Cg) block is a BLAS matrix."""
    f_, cg, kh, kw = w.shape
    for f in range(f_):
        for c in range(cg):
            for i in range(kh):
                for j in range(kw):
                    wt[((i * kw + j) * f_ + f) * cg + c] = w[f, c, i, j]


@jit
def _im2col(x, n, c0, cg, kernel, stride, pad, dilation, oh0, oh1, ow_, col):
    """col[(c, i, j), (oh - oh0)*OW + ow] = xpad[n, c0 + c, oh*sh + i*dh, ow*sw + j*dw]."""
    h_, w_ = x.shape[2], x.shape[3]
    sw = stride[1]
    pc = (oh1 - oh0) * ow_
    for c in range(cg):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                row = ((c * kernel[0] + i) * kernel[1] + j) * pc
                off = j * dilation[1] - pad[2]
                lo, hi = _span(ow_, w_, sw, off)
                for oh in range(oh0, oh1):
                    dst = col[row + (oh - oh0) * ow_:row + (oh - oh0 + 1) * ow_]
                    ih = oh * stride[0] + i * dilation[0] - pad[0]
                    if ih < 0 or ih >= h_:
                        dst[:] = 0
                        continue
                    for e in range(lo):
                        dst[e] = 0
                    src = x[n, c0 + c, ih, lo * sw + off:]
                    inner = dst[lo:]
                    for e in range(hi - lo):
                        inner[e] = src[e * sw]
                    for e in range(hi, ow_):
                        dst[e] = 0


@jit
def _col2im_add(col, kernel, stride, pad, dilation, oh0, oh1, ow_, n, c0, cg, dx):
    """The adjoint of _im2col: dx[n, c0 + c, ih, iw] += col[(c, i, j), q] (padding dropped)."""
    h_, w_ = dx.shape[2], dx.shape[3]
    sw = stride[1]
    pc = (oh1 - oh0) * ow_
    for c in range(cg):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                row = ((c * kernel[0] + i) * kernel[1] + j) * pc
                off = j * dilation[1] - pad[2]
                lo, hi = _span(ow_, w_, sw, off)
                for oh in range(oh0, oh1):
                    ih = oh * stride[0] + i * dilation[0] - pad[0]
                    if ih < 0 or ih >= h_:
                        continue
                    src = col[row + (oh - oh0) * ow_ + lo:]
                    dst = dx[n, c0 + c, ih, lo * sw + off:]
                    for e in range(hi - lo):
                        dst[e * sw] += src[e]


@jit
def _gather_taps(xp, g, cg, kernel, dilation, plane, wp, oh0, q, col):
    """col[(c, i, j), :q] = xp[g*cg + c, tap (i, j) window from row oh0] (contiguous runs)."""
    for c in range(cg):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                src = xp[(g * cg + c) * plane + (oh0 + i * dilation[0]) * wp + j * dilation[1]:]
                dst = col[((c * kernel[0] + i) * kernel[1] + j) * q:]
                for e in range(q):
                    dst[e] = src[e]


@jit
def _scatter_taps(col, g, cg, kernel, dilation, plane, wp, oh0, q, dxp):
    """The adjoint of _gather_taps: dxp[tap window] += col[(c, i, j), :q]."""
    for c in range(cg):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                dst = dxp[(g * cg + c) * plane + (oh0 + i * dilation[0]) * wp + j * dilation[1]:]
                src = col[((c * kernel[0] + i) * kernel[1] + j) * q:]
                for e in range(q):
                    dst[e] += src[e]


@jit
def _to_wide(dout, n, oh0, r, wp, wide):
    """wide[f, rr*Wp + ow] = dout[n, f, oh0 + rr, ow]; zero on the Wp - OW extra columns."""
    f_, ow_ = dout.shape[1], dout.shape[3]
    q = r * wp
    for f in range(f_):
        for rr in range(r):
            src = dout[n, f, oh0 + rr]
            dst = wide[f * q + rr * wp:f * q + (rr + 1) * wp]
            for e in range(ow_):
                dst[e] = src[e]
            for e in range(ow_, wp):
                dst[e] = 0


@jit
def _to_wide_t(dout, n, oh0, r, wp, wide_t):
    """wide_t[rr*Wp + ow, f] = dout[n, f, oh0 + rr, ow]: the transpose of _to_wide's matrix."""
    f_, ow_ = dout.shape[1], dout.shape[3]
    for rr in range(r):
        for ow in range(wp):
            dst = wide_t[(rr * wp + ow) * f_:(rr * wp + ow + 1) * f_]
            if ow < ow_:
                for f in range(f_):
                    dst[f] = dout[n, f, oh0 + rr, ow]
            else:
                dst[:] = 0


@jit
def _from_wide(wide, b, n, oh0, r, wp, out):
    """out[n, f, oh0 + rr, :] = wide[f, rr*Wp : rr*Wp + OW] + b[f] (the extra columns dropped)."""
    f_, ow_ = out.shape[1], out.shape[3]
    q = r * wp
    for f in range(f_):
        bias = b[f] if b.size > 0 else 0
        for rr in range(r):
            src = wide[f * q + rr * wp:]
            dst = out[n, f, oh0 + rr]
            for e in range(ow_):
                dst[e] = src[e] + bias


@jit
def _crop_padding(dxp, pad, n, accumulate, dx):
    """dx[n] (+)= dxp (C, Hp, Wp) without its borders."""
    _, c_, h_, w_ = dx.shape
    hp, wp = h_ + pad[0] + pad[1], w_ + pad[2] + pad[3]
    for c in range(c_):
        for h in range(h_):
            src = dxp[(c * hp + h + pad[0]) * wp + pad[2]:]
            dst = dx[n, c, h]
            if accumulate:
                for j in range(w_):
                    dst[j] += src[j]
            else:
                for j in range(w_):
                    dst[j] = src[j]


# -- one sample -------------------------------------------------------------------------------


@jit
def _wide_forward(x, n, w, wt, b, kernel, pad, dilation, groups, out, gather, rows, xp, wide,
                  col):
    """Stride 1: out[n] on the wide grid (OH, Wp), taps read in place (kn2row) or gathered."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    cg, fg = c_ // groups, f_ // groups
    k = cg * kernel[0] * kernel[1]
    wp = w_ + pad[2] + pad[3]
    plane = (h_ + pad[0] + pad[1]) * wp
    wf = w.reshape(w.size)
    _pad_sample(x, n, pad, xp)
    for oh0 in range(0, oh_, rows):
        r = min(rows, oh_ - oh0)
        q = r * wp
        for g in range(groups):
            if gather:
                _gather_taps(xp, g, cg, kernel, dilation, plane, wp, oh0, q, col)
                gemm(False, False, fg, q, k, 1.0, wf[g * fg * k:], k, col, q,
                     0.0, wide[g * fg * q:], q)
                continue
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    tap = i * kernel[1] + j
                    shift = g * cg * plane + (oh0 + i * dilation[0]) * wp + j * dilation[1]
                    gemm(False, False, fg, q, cg, 1.0, wt[(tap * f_ + g * fg) * cg:], cg,
                         xp[shift:], plane, 0.0 if tap == 0 else 1.0, wide[g * fg * q:], q)
        _from_wide(wide, b, n, oh0, r, wp, out)


@jit
def _wide_backward(dout, x, n, w, wt, kernel, pad, dilation, groups, dx, accumulate, need_dx,
                   need_dw, gather, rows, xp, dxp, wide, wide_t, col, dwp):
    """dx (+)= and dw^T += for sample n (dwp: GATHER (K, F), KN2ROW (taps, Cg, F))."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    cg, fg = c_ // groups, f_ // groups
    k = cg * kernel[0] * kernel[1]
    wp = w_ + pad[2] + pad[3]
    plane = (h_ + pad[0] + pad[1]) * wp
    wf = w.reshape(w.size)
    if need_dw:
        _pad_sample(x, n, pad, xp)
    if need_dx:
        dxp[:] = 0
    for oh0 in range(0, oh_, rows):
        r = min(rows, oh_ - oh0)
        q = r * wp
        if need_dx:
            _to_wide(dout, n, oh0, r, wp, wide)
        if need_dw:                          # dw^T = col @ dwide^T is BLAS's fast (NN) case
            _to_wide_t(dout, n, oh0, r, wp, wide_t)
        for g in range(groups):
            if gather:
                if need_dw:
                    _gather_taps(xp, g, cg, kernel, dilation, plane, wp, oh0, q, col)
                    gemm(False, False, k, fg, q, 1.0, col, q, wide_t[g * fg:], f_,
                         1.0, dwp[g * fg:], f_)
                if need_dx:
                    gemm(True, False, k, q, fg, 1.0, wf[g * fg * k:], k, wide[g * fg * q:], q,
                         0.0, col, q)
                    _scatter_taps(col, g, cg, kernel, dilation, plane, wp, oh0, q, dxp)
                continue
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    tap = i * kernel[1] + j
                    shift = g * cg * plane + (oh0 + i * dilation[0]) * wp + j * dilation[1]
                    if need_dw:
                        gemm(False, False, cg, fg, q, 1.0, xp[shift:], plane, wide_t[g * fg:],
                             f_, 1.0, dwp[tap * cg * f_ + g * fg:], f_)
                    if need_dx:
                        gemm(True, False, cg, q, fg, 1.0, wt[(tap * f_ + g * fg) * cg:], cg,
                             wide[g * fg * q:], q, 1.0, dxp[shift:], plane)
    if need_dx:
        _crop_padding(dxp, pad, n, accumulate, dx)


@jit
def _im2col_forward(x, n, w, b, kernel, stride, pad, dilation, groups, out, identity, rows,
                    col):
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    cg, fg = c_ // groups, f_ // groups
    k = cg * kernel[0] * kernel[1]
    p = oh_ * ow_
    xf, wf, of = x.reshape(x.size), w.reshape(w.size), out.reshape(out.size)
    for oh0 in range(0, oh_, rows):
        oh1 = min(oh_, oh0 + rows)
        pc = (oh1 - oh0) * ow_
        for g in range(groups):
            if identity:                     # 1x1, stride 1, no padding: x is the matrix
                gemm(False, False, fg, pc, k, 1.0, wf[g * fg * k:], k,
                     xf[(n * c_ + g * cg) * p + oh0 * ow_:], p,
                     0.0, of[(n * f_ + g * fg) * p + oh0 * ow_:], p)
            else:
                _im2col(x, n, g * cg, cg, kernel, stride, pad, dilation, oh0, oh1, ow_, col)
                gemm(False, False, fg, pc, k, 1.0, wf[g * fg * k:], k, col, pc,
                     0.0, of[(n * f_ + g * fg) * p + oh0 * ow_:], p)
        if b.size > 0:
            for f in range(f_):
                dst = of[(n * f_ + f) * p + oh0 * ow_:]
                for e in range(pc):
                    dst[e] += b[f]


@jit
def _im2col_backward(dout, x, n, w, kernel, stride, pad, dilation, groups, dx, accumulate,
                     need_dx, need_dw, identity, rows, col, dwp):
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    cg, fg = c_ // groups, f_ // groups
    k = cg * kernel[0] * kernel[1]
    p = oh_ * ow_
    xf, wf, df = x.reshape(x.size), w.reshape(w.size), dout.reshape(dout.size)
    dxf = dx.reshape(dx.size)
    if need_dx and not accumulate and not identity:
        dx[n] = 0
    for oh0 in range(0, oh_, rows):
        oh1 = min(oh_, oh0 + rows)
        pc = (oh1 - oh0) * ow_
        for g in range(groups):
            d_g = df[(n * f_ + g * fg) * p + oh0 * ow_:]
            if identity:
                if need_dw:
                    gemm(False, True, fg, k, pc, 1.0, d_g, p,
                         xf[(n * c_ + g * cg) * p + oh0 * ow_:], p, 1.0, dwp[g * fg * k:], k)
                if need_dx:
                    gemm(True, False, k, pc, fg, 1.0, wf[g * fg * k:], k, d_g, p,
                         1.0 if accumulate else 0.0, dxf[(n * c_ + g * cg) * p + oh0 * ow_:], p)
            else:
                if need_dw:
                    _im2col(x, n, g * cg, cg, kernel, stride, pad, dilation, oh0, oh1, ow_, col)
                    gemm(False, True, fg, k, pc, 1.0, d_g, p, col, pc, 1.0, dwp[g * fg * k:], k)
                if need_dx:
                    gemm(True, False, k, pc, fg, 1.0, wf[g * fg * k:], k, d_g, p, 0.0, col, pc)
                    _col2im_add(col, kernel, stride, pad, dilation, oh0, oh1, ow_, n, g * cg, cg,
                                dx)


@jit
def _bias_grad_add(dout, n, db):
    """db[f] += sum over the plane of dout[n, f] (float64 sums)."""
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    for f in range(f_):
        db[f] += sum64(dout[n, f].reshape(oh_ * ow_))


# -- drivers: samples split over threads ------------------------------------------------------
# ``layout`` = per-thread buffer offsets (see _Plan); ``wt`` = tap-major weights (KN2ROW).


@jit
def _forward_samples(x, w, b, kernel, stride, pad, dilation, groups, out, mode, identity, rows,
                     layout, wt, buf, n0, n1):
    xp, o_wide, o_col, o_dw, _ = layout
    for n in range(n0, n1):
        if mode == IM2COL:
            _im2col_forward(x, n, w, b, kernel, stride, pad, dilation, groups, out, identity,
                            rows, buf[:o_dw])
        else:
            _wide_forward(x, n, w, wt, b, kernel, pad, dilation, groups, out, mode == GATHER,
                          rows, buf[:xp], buf[o_wide:(o_wide + o_col) // 2], buf[o_col:o_dw])


@jit
def _backward_samples(dout, x, w, kernel, stride, pad, dilation, groups, dx, accumulate,
                      need_dx, need_dw, need_db, mode, identity, rows, layout, wt, buf, n0, n1):
    xp, o_wide, o_col, o_dw, o_db = layout
    dwp, dbp = buf[o_dw:o_db], buf[o_db:o_db + dout.shape[1]]
    dwp[:] = 0
    dbp[:] = 0
    for n in range(n0, n1):
        if mode == IM2COL:
            _im2col_backward(dout, x, n, w, kernel, stride, pad, dilation, groups, dx,
                             accumulate, need_dx, need_dw, identity, rows, buf[:o_dw], dwp)
        else:
            half = (o_col - o_wide) // 2
            _wide_backward(dout, x, n, w, wt, kernel, pad, dilation, groups, dx, accumulate,
                           need_dx, need_dw, mode == GATHER, rows, buf[:xp], buf[xp:o_wide],
                           buf[o_wide:o_wide + half], buf[o_wide + half:o_col],
                           buf[o_col:o_dw], dwp)
        if need_db:
            _bias_grad_add(dout, n, dbp)


@jit
def _sum_partials(ws, shared, per_thread, threads, layout, mode, dw, db, need_dw, need_db):
    """dw, db = the sums of the threads' partials, in thread order (deterministic)."""
    o_dw, o_db = layout[3], layout[4]
    f_, cg, kh, kw = dw.shape
    if need_dw:
        for f in range(f_):
            for c in range(cg):
                for i in range(kh):
                    for j in range(kw):
                        if mode == IM2COL:
                            e = ((f * cg + c) * kh + i) * kw + j
                        elif mode == GATHER:
                            e = ((c * kh + i) * kw + j) * f_ + f
                        else:
                            e = ((i * kw + j) * cg + c) * f_ + f
                        s = ws[shared + o_dw + e]
                        for t in range(1, threads):
                            s += ws[shared + t * per_thread + o_dw + e]
                        dw[f, c, i, j] = s
    if need_db:
        for f in range(f_):
            s = ws[shared + o_db + f]
            for t in range(1, threads):
                s += ws[shared + t * per_thread + o_db + f]
            db[f] = s


# -- entry points -----------------------------------------------------------------------------

_PARALLEL_MACS = 1 << 21        # below this many multiply-adds one thread is faster (measured)
_EMPTY = {}                     # dtype -> (empty 1-D, empty 4-D): stand-ins for None


def _empty(dtype):
    if dtype not in _EMPTY:
        _EMPTY[dtype] = (np.zeros(0, dtype), np.zeros((0, 0, 0, 0), dtype))
    return _EMPTY[dtype]


def _threads(n, macs):
    return 1 if macs < _PARALLEL_MACS else min(num_threads(), n)


def _plan_for(x, w, stride, pad, dilation, groups, workspace, threads):
    plan = _Plan(x.shape, w.shape, stride, pad, dilation, groups)
    if workspace.size < plan.workspace_size(threads):
        raise ValueError(f"conv2d workspace too small: {workspace.size} elements, "
                         f"need {plan.workspace_size(threads)} (conv2d_workspace_size)")
    return plan


def conv2d_forward_into(x, w, b, stride, pad, dilation, groups, out, workspace):
    """out (N, F, OH, OW) = conv2d(x, w) + b.  See the package docstring for conventions."""
    f_, cg, kh, kw = w.shape
    threads = _threads(x.shape[0], out.size * cg * kh * kw)
    plan = _plan_for(x, w, stride, pad, dilation, groups, workspace, threads)
    if b is None:
        b = _empty(x.dtype)[0]
    shared, per = plan.shared, plan.per_thread
    wt = workspace[:shared]
    if plan.mode == KN2ROW:
        _tap_major(w, wt)
    run_split(_forward_samples, x.shape[0], threads, lambda t, lo, hi: (
        x, w, b, (kh, kw), stride, pad, dilation, groups, out, plan.mode, plan.identity,
        plan.rows, plan.layout, wt, workspace[shared + t * per:shared + (t + 1) * per], lo, hi))


def conv2d_backward_into(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace,
                         accumulate=False):
    """dx (+)= dL/dx, dw = dL/dw, db = dL/db (each may be None: not computed)."""
    f_, cg, kh, kw = w.shape
    threads = _threads(x.shape[0], 2 * dout.size * cg * kh * kw)
    plan = _plan_for(x, w, stride, pad, dilation, groups, workspace, threads)
    empty1, empty4 = _empty(x.dtype)
    shared, per = plan.shared, plan.per_thread
    wt = workspace[:shared]
    if plan.mode == KN2ROW:
        _tap_major(w, wt)
    dx_ = empty4 if dx is None else dx
    run_split(_backward_samples, x.shape[0], threads, lambda t, lo, hi: (
        dout, x, w, (kh, kw), stride, pad, dilation, groups, dx_, bool(accumulate),
        dx is not None, dw is not None, db is not None, plan.mode, plan.identity, plan.rows,
        plan.layout, wt, workspace[shared + t * per:shared + (t + 1) * per], lo, hi))
    if dw is not None or db is not None:
        _sum_partials(workspace, shared, per, threads, plan.layout, plan.mode,
                      empty4 if dw is None else dw, empty1 if db is None else db,
                      dw is not None, db is not None)
