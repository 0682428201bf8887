"""Depthwise convolution, forward and backward: a grouped convolution with one input channel per
group (groups == C > 1, w (F, 1, KH, KW), F = m*C; MobileNet's and EfficientNet's 3x3 and 5x5
layers have m = 1).  ``conv2d_*_into`` (conv.py) send these here.

    out[n, f, oh, ow] = b[f] + sum_{i,j} w[f, 0, i, j] * xpad[n, f // m, oh*sh + i*dh, ow*sw + j*dw]

The general path runs each group as a BLAS product, here (1 x KH*KW) @ (KH*KW x columns): far
too small (MobileNetV2's 3x3 on 32x96x56x56 took 116 ms there, PyTorch 181 ms).  Two kernels
here: the *flat* ones (below the wide grid's, "the flat kernels") where one filter per channel
and ceil(W / sw) <= OW (MobileNet's pad k // 2, any stride: ``flat_ok``), 1.2-7x faster with
AVX-512 (without it only on small planes: ``_use_flat``), strided ones by gathers where those
measured faster (AVX-512's; AVX2's on 8x8 planes: ``_use_gathers``, at the end), and the
forward of planes up to 8x8 sample by sample (``_forward_small``); the wide grid's loops for the
rest (depth multipliers, less padding), on conv.py's layout:

* the padded plane is split into stride phases by conv's ``_split_sample`` (a plane is a sample of
  one channel): phase (a, b) = xpad[a::sh, b::sw], and tap (i, j) reads phase ((i*dh) % sh,
  (j*dw) % sw) shifted by ((i*dh)//sh, (j*dw)//sw) (``conv._tap_offset``), so every tap of every
  stride and dilation is a run of the phase buffer;
* the output is computed on the "wide" grid of the phase rows (rows of Wq >= OW, the extra columns
  dropped when copied out), in chunks of rows: each loop runs over ~500 contiguous elements
  instead of one output row (rows of 14 to 56 elements left most of each loop to its scalar
  remainder: 1.8x slower);
* forward: ``wide += w[i, 0] * tap(i, 0) + ... + w[i, KW-1] * tap(i, KW-1)`` per kernel row i (the
  taps of a row in one loop for KW = 3 and 5); MobileNet's 3x3 stride-1 layers (output rows of
  a half vector or more) skip the wide grid: ``_rows_3x3`` writes the output rows straight from
  the padded plane, four rows at a time, each input vector loaded once for the rows that use it;
* backward: dx of a stride-1 layer of one filter per channel is the forward of dout by the
  turned weights (``_dx_pad``: its 3x3 taps in one pass); else dout on the wide grid (zeros on
  the extra columns), then per tap the adjoint
  ``dphase[tap window] += w * dwide`` (merged back into dx by conv's ``_merge_phases``) and
  dw's ``sum(dwide * tap window)`` per tap, three taps at a time in running vectors
  (``_dw_taps``: a scalar running sum adds one element per FP-add latency), their lanes added
  in float64 once per chunk; the 3x3 stride-1 layers' dw straight from dout and the padded
  plane instead (``_dw_rows_3x3``, the forward's blocks of four rows).

Threads: batches of 8+ are split by samples (``_sample_pieces``), as the 1x1 convolutions and
batchnorms around a MobileNet's depthwise layer are, so a thread reads what it wrote in the layer
before (split by channels, each thread read half of its input from the other core's cache): the
forward on 2+ threads (each output plane computed by the same loops: bit-identical), the backward
on input planes up to 16x16 (``_backward_pieces``) in up to 8 fixed pieces whatever the thread
count, each piece's dw and db into its own rows of the workspace, added in piece order in float64
(``_sum_parts``): the same bits on any thread count, within float32 rounding of one pass.  The
rest is split by channels in contiguous ranges: every output (out, dx planes, dw and db rows)
belongs to one thread.  Either way results do not depend on timing.
"""
import functools
import math

import numpy as np

from cnnspec.kernels._jit import jit, jit_inline, num_threads, run_split, sum64
from cnnspec.kernels._simd import (vadd, vevens, vfma, vgather, vhigh, vlanes, vload, vload_masked,
                                  vlow, vodds, vprefetch, vsplat, vstore, vstore_masked, vzero,
                                  vadd_wide, vzero_below, ylanes, yload, ysplat, yzero)
from cnnspec.kernels.conv import (_merge_phases, _phase_shape, _phase_shape_jit, _split_sample,
                                  _tap_offset, _zero, conv_output_size)

_PARALLEL_MACS = 1 << 20          # below this many multiply-adds one thread is faster
_CHUNK = 512                      # elements of the wide grid per loop (a chunk of rows)


def _layout(x_shape, w_shape, stride, pad, dilation):
    """(rows per chunk, phase buffer elements, elements per thread).  A thread's slice holds
    [phases | their gradient | a chunk of the wide grid (dout's, in the backward)]; the
    phase buffer ends with the (KW-1)*dw//sw zeros that the wide grid's last row reads."""
    hq, wq = _phase_shape(x_shape[2], x_shape[3], stride, pad)
    _, _, kh, kw = w_shape
    oh = conv_output_size(x_shape[2], kh, stride[0], pad[0], pad[1], dilation[0])
    rows = max(1, min(oh, _CHUNK // wq))
    phases = stride[0] * stride[1] * hq * wq + (kw - 1) * dilation[1] // stride[1]
    return rows, phases, 2 * phases + rows * wq


def workspace_size(x_shape, w_shape, stride, pad, dilation, threads):
    """Elements of the scratch workspace the depthwise kernels need with ``threads`` threads."""
    per = _per_thread(x_shape, w_shape, stride, pad, dilation)
    size = max(threads * per, _workspace(per, _backward_pieces(x_shape), w_shape, threads))
    pad_dx = _dx_pad(x_shape, w_shape, stride, pad, dilation)
    if pad_dx is not None:                  # dx as the forward of dout (_dx_pad)
        dout_shape = tuple(x_shape[:2]) + tuple(
            conv_output_size(x_shape[2 + a], w_shape[2 + a], 1, pad[2 * a], pad[2 * a + 1],
                             dilation[a]) for a in (0, 1))
        size = max(size, threads * _per_thread(dout_shape, w_shape, (1, 1), pad_dx, dilation))
    return size


def _per_thread(x_shape, w_shape, stride, pad, dilation):
    """A thread's slice of the workspace for the forward (and backward) of this geometry."""
    if _use_flat(x_shape, w_shape, stride, pad, dilation):
        return _flat_per_thread(x_shape, w_shape, stride, pad, dilation)
    return _layout(x_shape, w_shape, stride, pad, dilation)[2]


_DX_BY_FORWARD = None             # tests: True / False, dx by the forward of dout wherever it is a
                                  # stride-1 layer of one filter per channel / never; None: the rule


def _dx_pad(x_shape, w_shape, stride, pad, dilation):
    """The padding with which dx of a stride-1 depthwise convolution of one filter per channel
    is the forward of dout by the weights turned by 180 degrees (each side: the kernel's reach
    dh*(KH-1) less the forward's padding there), where the wide grid's backward would run (not
    the flat kernels) and no padding exceeds the reach; else None.  The wide grid's dx adds
    each tap's products into dx's phases, a load and a store per element and tap; the forward
    takes 3x3's nine taps in one pass: MobileNet's 32x144x28x28, two threads, dx 3.6 -> 2.3 ms
    (see the README's issue 16 fourteenth round)."""
    if _DX_BY_FORWARD is False or tuple(stride) != (1, 1) or w_shape[0] != x_shape[1]:
        return None
    if _DX_BY_FORWARD is None and _use_flat(x_shape, w_shape, stride, pad, dilation):
        return None
    reach = (dilation[0] * (w_shape[2] - 1), dilation[1] * (w_shape[3] - 1))
    turned = (reach[0] - pad[0], reach[0] - pad[1], reach[1] - pad[2], reach[1] - pad[3])
    return turned if min(turned) >= 0 else None


@jit
def _tap_offsets(kernel, stride, dilation, wq, plane):
    """Offset of each tap's window in the phase buffer (``conv._tap_offset``), once per call:
    its divisions, repeated per row, cost more than the row's multiply-adds."""
    kh, kw = kernel
    offsets = np.empty(kh * kw, np.uint64)
    for i in range(kh):
        for j in range(kw):
            offsets[i * kw + j] = _tap_offset(i, j, 1, plane, wq, stride, dilation)
    return offsets


# Flat arrays and unsigned indices (np.uint64) throughout, as in conv.py: an unsigned index needs
# no negative-index test, which would keep LLVM from vectorising the loops.


@jit
def _wide_chunk(xp, wf, f, bias, kernel, offsets, start, q, wide):
    """wide[:q] = bias + the taps of filter f over the wide grid from element ``start``."""
    kh, kw = kernel
    if kh == 3 and kw == 3:
        # MobileNet's 3x3 in one pass: the same sums in the same order as the rows' passes below
        # (bias + row 0, + row 1, + row 2: the same bits), each element of wide loaded and
        # stored once, not three times: 1.07x (two threads) and 1.09x (one) on 32x144x28x28,
        # 1.09x and 1.13x on 32x96x56x56
        o0, o1, o2 = offsets[0] + start, offsets[1] + start, offsets[2] + start
        o3, o4, o5 = offsets[3] + start, offsets[4] + start, offsets[5] + start
        o6, o7, o8 = offsets[6] + start, offsets[7] + start, offsets[8] + start
        w0 = f * 9
        a0, b0, c0 = wf[w0], wf[w0 + 1], wf[w0 + 2]
        a1, b1, c1 = wf[w0 + 3], wf[w0 + 4], wf[w0 + 5]
        a2, b2, c2 = wf[w0 + 6], wf[w0 + 7], wf[w0 + 8]
        wide[0] = bias
        bv = wide[0]                         # in wide's dtype (a float64 0.0 without a bias)
        for e in range(q):
            u = np.uint64(e)
            r0 = a0 * xp[o0 + u] + b0 * xp[o1 + u] + c0 * xp[o2 + u]
            r1 = a1 * xp[o3 + u] + b1 * xp[o4 + u] + c1 * xp[o5 + u]
            r2 = a2 * xp[o6 + u] + b2 * xp[o7 + u] + c2 * xp[o8 + u]
            wide[u] = ((bv + r0) + r1) + r2
        return
    for e in range(q):
        wide[e] = bias
    for i in range(kh):
        w0 = (f * kh + i) * kw
        t = i * kw
        if kw == 3:
            o0, o1, o2 = offsets[t] + start, offsets[t + 1] + start, offsets[t + 2] + start
            a, b, c = wf[w0], wf[w0 + 1], wf[w0 + 2]
            for e in range(q):
                u = np.uint64(e)
                wide[u] += a * xp[o0 + u] + b * xp[o1 + u] + c * xp[o2 + u]
        elif kw == 5:
            o0, o1, o2 = offsets[t] + start, offsets[t + 1] + start, offsets[t + 2] + start
            o3, o4 = offsets[t + 3] + start, offsets[t + 4] + start
            a, b, c, d, g = wf[w0], wf[w0 + 1], wf[w0 + 2], wf[w0 + 3], wf[w0 + 4]
            for e in range(q):
                u = np.uint64(e)
                wide[u] += (a * xp[o0 + u] + b * xp[o1 + u] + c * xp[o2 + u] + d * xp[o3 + u]
                            + g * xp[o4 + u])
        else:
            for j in range(kw):
                o = offsets[t + j] + start
                a = wf[w0 + j]
                for e in range(q):
                    u = np.uint64(e)
                    wide[u] += a * xp[o + u]


_ROWS_3X3 = None                  # tests: True / False, 3x3 stride-1 planes by _rows_3x3 wherever
                                  # a row holds a half vector / never; None: the rule (always)


def _use_rows_3x3(x_shape, w_shape, stride, pad, dilation, dtype):
    """Whether ``_forward`` writes this layer's output rows straight from the padded plane
    (``_rows_3x3``): 3x3, stride 1, no dilation, output rows of a half vector or more."""
    if _ROWS_3X3 is False or tuple(w_shape[2:]) != (3, 3) or tuple(stride) != (1, 1) or tuple(
            dilation) != (1, 1):
        return False
    ow = conv_output_size(x_shape[3], 3, 1, pad[2], pad[3], 1)
    return ow >= 32 // np.dtype(dtype).itemsize


@jit_inline
def _taps3(acc, a, b, c, u, v, w):
    """acc + a*u + b*v + c*w: one kernel row's three taps, an FMA each, in that order."""
    return vfma(vfma(vfma(acc, a, u), b, v), c, w)


@jit
def _rows_3x3(xp, wf, b, f, wq, oh_, ow_, of, base):
    """of[base + oh*OW + ow] = b[f] + the 3x3 taps of filter f, stride 1, no dilation, over the
    padded plane xp (rows of wq): four output rows at a time, each input row's three shifted
    half vectors loaded once for the (up to) three output rows that use it, nine weights and
    four sums in registers; a row's last vector overlaps the one before (the same values).  The
    wide grid's loops load nine taps per output and copy each chunk out (rows of 28 ran mostly
    element by element there): forward 1.4x on 32x144x28x28, 1.24x on 32x96x56x56, 1.6x on
    32x144x14x14 (one thread).  Each output is bias + its taps in row-major order, one FMA
    each, whatever the block (the same bits for every row)."""
    lanes = ylanes(xp)
    last = ow_ - lanes
    bv = ysplat(b, f) if b.size > 0 else yzero(xp)
    w0 = f * 9
    a0, b0, c0 = ysplat(wf, w0), ysplat(wf, w0 + 1), ysplat(wf, w0 + 2)
    a1, b1, c1 = ysplat(wf, w0 + 3), ysplat(wf, w0 + 4), ysplat(wf, w0 + 5)
    a2, b2, c2 = ysplat(wf, w0 + 6), ysplat(wf, w0 + 7), ysplat(wf, w0 + 8)
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    uq, uw = np.uint64(wq), np.uint64(ow_)
    blocks = oh_ // 4
    for k0 in range(0, ow_, lanes):
        e = np.uint64(min(k0, last))
        for blk in range(blocks):
            s = np.uint64(4 * blk * wq) + e        # input row 4*blk (padded), column e
            d = np.uint64(base + 4 * blk * ow_) + e
            v0, v1, v2 = yload(xp, s), yload(xp, s + one), yload(xp, s + two)
            r0 = _taps3(bv, a0, b0, c0, v0, v1, v2)
            s += uq
            v0, v1, v2 = yload(xp, s), yload(xp, s + one), yload(xp, s + two)
            r0 = _taps3(r0, a1, b1, c1, v0, v1, v2)
            r1 = _taps3(bv, a0, b0, c0, v0, v1, v2)
            s += uq
            v0, v1, v2 = yload(xp, s), yload(xp, s + one), yload(xp, s + two)
            r0 = _taps3(r0, a2, b2, c2, v0, v1, v2)
            r1 = _taps3(r1, a1, b1, c1, v0, v1, v2)
            r2 = _taps3(bv, a0, b0, c0, v0, v1, v2)
            vstore(of, d, r0)
            s += uq
            v0, v1, v2 = yload(xp, s), yload(xp, s + one), yload(xp, s + two)
            r1 = _taps3(r1, a2, b2, c2, v0, v1, v2)
            r2 = _taps3(r2, a1, b1, c1, v0, v1, v2)
            r3 = _taps3(bv, a0, b0, c0, v0, v1, v2)
            vstore(of, d + uw, r1)
            s += uq
            v0, v1, v2 = yload(xp, s), yload(xp, s + one), yload(xp, s + two)
            r2 = _taps3(r2, a2, b2, c2, v0, v1, v2)
            r3 = _taps3(r3, a1, b1, c1, v0, v1, v2)
            vstore(of, d + two * uw, r2)
            s += uq
            v0, v1, v2 = yload(xp, s), yload(xp, s + one), yload(xp, s + two)
            r3 = _taps3(r3, a2, b2, c2, v0, v1, v2)
            vstore(of, d + three * uw, r3)
        for oh in range(4 * blocks, oh_):         # the last rows one at a time
            s = np.uint64(oh * wq) + e
            r0 = _taps3(bv, a0, b0, c0, yload(xp, s), yload(xp, s + one), yload(xp, s + two))
            s += uq
            r0 = _taps3(r0, a1, b1, c1, yload(xp, s), yload(xp, s + one), yload(xp, s + two))
            s += uq
            r0 = _taps3(r0, a2, b2, c2, yload(xp, s), yload(xp, s + one), yload(xp, s + two))
            vstore(of, np.uint64(base + oh * ow_) + e, r0)


@jit
def _dw_rows_3x3(xp, df, base, wq, oh_, ow_, acc, at):
    """acc[at + (3i + j)*L + l] += lane l's share (L lanes) of the sum over the plane of
    dout[oh, ow] * xp[(oh + i)*wq + ow + j], in float64: dw of
    a 3x3 stride-1 layer (no dilation) from one sample's dout plane (df from ``base``, rows of
    OW) and its padded input plane, no copy of dout: four dout rows at a time, each input row's
    three shifted half vectors loaded once for the rows that use it, the nine taps' sums in
    running vectors (a row's last vector, where it overlaps the one before, with the repeated
    lanes of dout zeroed), added lane by lane into acc every ~_FLUSH vectors (``vadd_wide``).
    The wide grid's dw copied dout to the grid and read it three times (three taps a pass):
    dw 1.55-2.3x faster so on MobileNet's layers."""
    lanes = ylanes(xp)
    last = ow_ - lanes
    one, two = np.uint64(1), np.uint64(2)
    uq, uw = np.uint64(wq), np.uint64(ow_)
    vectors = (ow_ + lanes - 1) // lanes
    per_flush = max(1, _FLUSH // (4 * vectors))      # blocks of four rows between folds
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = yzero(xp)
    blocks = oh_ // 4
    for blk in range(blocks + 1):
        rows = 4 if blk < blocks else oh_ - 4 * blocks
        for k0 in range(0, ow_, lanes):
            e = min(k0, last)
            ue = np.uint64(e)
            d = np.uint64(base + 4 * blk * ow_) + ue
            s = np.uint64(4 * blk * wq) + ue
            if rows == 4:
                d0, d1 = yload(df, d), yload(df, d + uw)
                d2, d3 = yload(df, d + two * uw), yload(df, d + np.uint64(3) * uw)
                if k0 > e:
                    d0, d1 = vzero_below(d0, k0 - e), vzero_below(d1, k0 - e)
                    d2, d3 = vzero_below(d2, k0 - e), vzero_below(d3, k0 - e)
                v = yload(xp, s)                  # input row 4*blk: dout row 0's kernel row 0
                s00 = vfma(s00, d0, v)
                v = yload(xp, s + one)
                s01 = vfma(s01, d0, v)
                v = yload(xp, s + two)
                s02 = vfma(s02, d0, v)
                s += uq                           # row 1: kernel row 1 of dout row 0, 0 of 1
                v = yload(xp, s)
                s10, s00 = vfma(s10, d0, v), vfma(s00, d1, v)
                v = yload(xp, s + one)
                s11, s01 = vfma(s11, d0, v), vfma(s01, d1, v)
                v = yload(xp, s + two)
                s12, s02 = vfma(s12, d0, v), vfma(s02, d1, v)
                s += uq                           # row 2: kernel rows 2, 1, 0 of dout rows 0-2
                v = yload(xp, s)
                s20, s10, s00 = vfma(s20, d0, v), vfma(s10, d1, v), vfma(s00, d2, v)
                v = yload(xp, s + one)
                s21, s11, s01 = vfma(s21, d0, v), vfma(s11, d1, v), vfma(s01, d2, v)
                v = yload(xp, s + two)
                s22, s12, s02 = vfma(s22, d0, v), vfma(s12, d1, v), vfma(s02, d2, v)
                s += uq                           # row 3: dout rows 1-3
                v = yload(xp, s)
                s20, s10, s00 = vfma(s20, d1, v), vfma(s10, d2, v), vfma(s00, d3, v)
                v = yload(xp, s + one)
                s21, s11, s01 = vfma(s21, d1, v), vfma(s11, d2, v), vfma(s01, d3, v)
                v = yload(xp, s + two)
                s22, s12, s02 = vfma(s22, d1, v), vfma(s12, d2, v), vfma(s02, d3, v)
                s += uq                           # row 4: dout rows 2, 3
                v = yload(xp, s)
                s20, s10 = vfma(s20, d2, v), vfma(s10, d3, v)
                v = yload(xp, s + one)
                s21, s11 = vfma(s21, d2, v), vfma(s11, d3, v)
                v = yload(xp, s + two)
                s22, s12 = vfma(s22, d2, v), vfma(s12, d3, v)
                s += uq                           # row 5: dout row 3
                s20 = vfma(s20, d3, yload(xp, s))
                s21 = vfma(s21, d3, yload(xp, s + one))
                s22 = vfma(s22, d3, yload(xp, s + two))
                continue
            for r in range(rows):                 # the last rows one at a time
                d0 = yload(df, d)
                if k0 > e:
                    d0 = vzero_below(d0, k0 - e)
                s00 = vfma(s00, d0, yload(xp, s))
                s01 = vfma(s01, d0, yload(xp, s + one))
                s02 = vfma(s02, d0, yload(xp, s + two))
                s10 = vfma(s10, d0, yload(xp, s + uq))
                s11 = vfma(s11, d0, yload(xp, s + uq + one))
                s12 = vfma(s12, d0, yload(xp, s + uq + two))
                s20 = vfma(s20, d0, yload(xp, s + two * uq))
                s21 = vfma(s21, d0, yload(xp, s + two * uq + one))
                s22 = vfma(s22, d0, yload(xp, s + two * uq + two))
                d += uw
                s += uq
        if blk % per_flush == per_flush - 1 or blk == blocks:
            vadd_wide(acc, at, s00)
            vadd_wide(acc, at + lanes, s01)
            vadd_wide(acc, at + 2 * lanes, s02)
            vadd_wide(acc, at + 3 * lanes, s10)
            vadd_wide(acc, at + 4 * lanes, s11)
            vadd_wide(acc, at + 5 * lanes, s12)
            vadd_wide(acc, at + 6 * lanes, s20)
            vadd_wide(acc, at + 7 * lanes, s21)
            vadd_wide(acc, at + 8 * lanes, s22)
            s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = yzero(xp)


@jit
def _forward(x, w, b, stride, pad, dilation, out, rows, phases, buf, c0, c1, rows_3x3):
    """Output planes of input channels [c0, c1), every sample (``rows_3x3``: by _rows_3x3)."""
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = w.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    m = f_ // c_
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    xp, wide = buf[:phases], buf[2 * phases:2 * phases + rows * wq]
    wf, of = w.reshape(w.size), out.reshape(out.size)
    offsets = _tap_offsets((kh, kw), stride, dilation, wq, hq * wq)
    for c in range(c0, c1):
        for n in range(n_):
            _split_sample(x[n, c].reshape(1, 1, h_, w_), 0, stride, pad,
                          c == c0 and n == 0, xp)
            for k in range(m):
                f = c * m + k
                bias = b[f] if b.size > 0 else 0.0
                base = (n * f_ + f) * oh_ * ow_
                if rows_3x3:
                    _rows_3x3(xp, wf, b, f, wq, oh_, ow_, of, base)
                    continue
                for oh0 in range(0, oh_, rows):
                    r = min(rows, oh_ - oh0)
                    _wide_chunk(xp, wf, f, bias, (kh, kw), offsets, np.uint64(oh0 * wq), r * wq,
                                wide)
                    for rr in range(r):              # drop the extra columns
                        dst = np.uint64(base + (oh0 + rr) * ow_)
                        src = np.uint64(rr * wq)
                        for e in range(ow_):
                            of[dst + np.uint64(e)] = wide[src + np.uint64(e)]


@jit
def _backward(dout, x, w, stride, pad, dilation, dx, dw, db, accumulate, need_dx, need_dw,
              need_db, rows, phases, buf, c0, c1, rows_3x3):
    """dx planes, dw and db rows of input channels [c0, c1) (``rows_3x3``: dw by _dw_rows_3x3)."""
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = w.shape
    oh_, ow_ = dout.shape[2], dout.shape[3]
    m = f_ // c_
    taps = kh * kw
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    chunk = rows * wq
    xp, dxp = buf[:phases], buf[phases:2 * phases]
    dwide = buf[2 * phases:2 * phases + chunk]
    sums = np.zeros(m * taps)                     # dw's sums of the channel, float64
    lane_sums = np.empty(ylanes(dwide), dwide.dtype)
    lanes = ylanes(xp)
    acc = np.zeros(m * taps * lanes if rows_3x3 else 0)   # _dw_rows_3x3's sums, per lane
    wf, df = w.reshape(w.size), dout.reshape(dout.size)
    dwf = dw.reshape(dw.size)
    offsets = _tap_offsets((kh, kw), stride, dilation, wq, hq * wq)
    for c in range(c0, c1):
        if need_dw:
            _zero(sums)
        dbs = np.zeros(m)
        for n in range(n_):
            if need_dw:
                _split_sample(x[n, c].reshape(1, 1, h_, w_), 0, stride, pad,
                              c == c0 and n == 0, xp)
            if need_dx:
                _zero(dxp)
            for k in range(m):
                f = c * m + k
                base = (n * f_ + f) * oh_ * ow_
                if need_db:
                    dbs[k] += sum64(df[base:base + oh_ * ow_])
                if rows_3x3 and need_dw:
                    _dw_rows_3x3(xp, df, base, wq, oh_, ow_, acc, k * taps * lanes)
                if not (need_dx or need_dw and not rows_3x3):
                    continue
                for oh0 in range(0, oh_, rows):
                    r = min(rows, oh_ - oh0)
                    q = r * wq
                    for rr in range(r):              # dout on the wide grid
                        src = np.uint64(base + (oh0 + rr) * ow_)
                        dst = np.uint64(rr * wq)
                        for e in range(ow_):
                            dwide[dst + np.uint64(e)] = df[src + np.uint64(e)]
                        for e in range(ow_, wq):
                            dwide[dst + np.uint64(e)] = 0
                    start = np.uint64(oh0 * wq)
                    if need_dw and not rows_3x3:
                        for t0 in range(0, taps, 3):
                            _dw_taps(dwide, xp, offsets, start, q, t0, taps, sums, k * taps,
                                     lane_sums)
                    if need_dx:
                        for t in range(taps):
                            o = offsets[t] + start
                            v = wf[f * taps + t]
                            for e in range(q):
                                u = np.uint64(e)
                                dxp[o + u] += v * dwide[u]
            if need_dx:
                _merge_phases(dxp, stride, pad, 0, accumulate, dx[n, c].reshape(1, 1, h_, w_))
        if rows_3x3 and need_dw:                  # the lanes' sums, in lane order
            for t in range(m * taps):
                total = 0.0
                for l in range(lanes):
                    total += acc[t * lanes + l]
                    acc[t * lanes + l] = 0
                sums[t] = total
        for k in range(m):
            f = c * m + k
            if need_dw:
                for t in range(taps):
                    dwf[f * taps + t] = sums[k * taps + t]
            if need_db:
                db[f] = dbs[k]


@jit
def _dw_taps(dwide, xp, offsets, start, q, t0, taps, sums, at, lane_sums):
    """sums[at + t] += the sum over the chunk's q elements e of dwide[e] * xp[offsets[t] + start
    + e], for taps t0 .. t0 + 2 (those below ``taps``): nine running vectors (three taps, three
    vectors of the chunk each) that stay in AVX2's registers, their lanes then added in float64,
    the chunk's tail too.  A row of partial sums per tap in memory (a load and a store per
    element and tap) took 3.6 ms of MobileNet's 32x144x28x28 dw on two threads."""
    ln = ylanes(dwide)
    step = 3 * ln
    qv = q - q % step
    o0 = np.uint64(offsets[t0]) + start
    o1 = np.uint64(offsets[min(t0 + 1, taps - 1)]) + start
    o2 = np.uint64(offsets[min(t0 + 2, taps - 1)]) + start
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = yzero(dwide)
    u1, u2 = np.uint64(ln), np.uint64(2 * ln)
    for e0 in range(0, qv, step):
        e = np.uint64(e0)
        d0, d1, d2 = yload(dwide, e), yload(dwide, e + u1), yload(dwide, e + u2)
        a00 = vfma(a00, d0, yload(xp, o0 + e))
        a01 = vfma(a01, d1, yload(xp, o0 + e + u1))
        a02 = vfma(a02, d2, yload(xp, o0 + e + u2))
        a10 = vfma(a10, d0, yload(xp, o1 + e))
        a11 = vfma(a11, d1, yload(xp, o1 + e + u1))
        a12 = vfma(a12, d2, yload(xp, o1 + e + u2))
        a20 = vfma(a20, d0, yload(xp, o2 + e))
        a21 = vfma(a21, d1, yload(xp, o2 + e + u1))
        a22 = vfma(a22, d2, yload(xp, o2 + e + u2))
    for g in range(min(3, taps - t0)):
        if g == 0:
            vstore(lane_sums, 0, vadd(vadd(a00, a01), a02))
            o = o0
        elif g == 1:
            vstore(lane_sums, 0, vadd(vadd(a10, a11), a12))
            o = o1
        else:
            vstore(lane_sums, 0, vadd(vadd(a20, a21), a22))
            o = o2
        total = 0.0
        for l in range(ln):
            total += lane_sums[l]
        for e in range(qv, q):
            total += dwide[e] * xp[o + np.uint64(e)]
        sums[at + t0 + g] += total


# -- the flat kernels: whole planes in vectors, masked loads -------------------------------------
#
# MobileNet's layers (pad k // 2, one filter per channel) keep the plane's width on any stride:
# ceil(W / sw) <= OW.  A plane's outputs, flat (p = oh*OW + ow), then run in vectors of 16
# consecutive elements across row ends: tap t of output p reads src[p + off_t], where src is the
# input plane itself (stride 1 and W == OW) or its stride phases laid out with OW columns (a copy
# per plane), and lanes whose tap falls in the padding (or past the plane) are masked to zero
# (one 16-bit mask per vector and tap, from a table made once per geometry).  No padded copy, no
# wide grid, no copy out: every output is computed once and stored once, 8x8 and 4x4 planes
# included (the wide grid computed 80 for 64 and 20 for 16, in loops of one or two vectors).
# Four samples of a channel go together: they share each tap's weight and mask.
# dx: stride 1 is the same gather on dout (taps mirrored); a strided dx gathers each stride phase
# of dx from dout with the taps that land on it, then interleaves the phases into dx.
# dw: per tap, four running vectors (one per sample) of dout * the tap's masked input, folded per
# block of samples into float32 sums that go to float64 every 64 vectors.

_HEAD = np.array([(1 << k) - 1 for k in range(17)], np.uint16)  # masks of the first k lanes


_BLOCK = 4                        # samples of a channel per pass (they share weights and masks)
_SKEW = 48                        # elements between a sample's phases and the next's, and between
#                                   slots: planes of 4 KB (32x32) otherwise met the copies' loads
#                                   and stores at addresses equal mod 4096 (false dependencies)
_AHEAD = 2                        # blocks ahead that _prefetch hints (see _ahead)
_PREFETCH_BYTES = 2048
_FLUSH = 64                       # vectors summed in float32 before dw's sums go to float64


def flat_ok(x_shape, w_shape, stride, pad, dilation):
    """The flat kernels take this convolution: one filter per channel, and each stride phase of
    a row fits in OW columns (MobileNet's pad k // 2 on any stride)."""
    if w_shape[0] != x_shape[1]:
        return False
    oh = conv_output_size(x_shape[2], w_shape[2], stride[0], pad[0], pad[1], dilation[0])
    ow = conv_output_size(x_shape[3], w_shape[3], stride[1], pad[2], pad[3], dilation[1])
    return oh > 0 and ow > 0 and -(-x_shape[3] // stride[1]) <= ow


def _bits(valid, lanes):
    """uint16 masks of a boolean (positions, ...) array: one per vector of ``lanes`` positions
    and trailing index, bit l = position v*lanes + l."""
    p = valid.shape[0]
    nv = -(-p // lanes)
    full = np.zeros((nv * lanes,) + valid.shape[1:], bool)
    full[:p] = valid
    full = full.reshape((nv, lanes) + valid.shape[1:])
    weights = (1 << np.arange(lanes, dtype=np.int64)).reshape((1, lanes) + (1,) * (valid.ndim - 1))
    return (full * weights).sum(axis=1).astype(np.uint16).reshape(-1)


@functools.lru_cache(maxsize=256)
def _tables(hw, kernel, stride, pad, dilation, lanes):
    """Offsets and masks of the flat kernels for one geometry (see above).  Returns
    (direct, PS, toff, fmask, nv, vmask, dx program (tap, offset, first tap, taps, first mask,
    vectors per pass), dx's masks, dx's store masks)."""
    h_, w_ = hw
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    oh = conv_output_size(h_, kh, sh, pad[0], pad[1], dh)
    ow = conv_output_size(w_, kw, sw, pad[2], pad[3], dw)
    direct = sh == 1 and sw == 1 and w_ == ow
    r0 = -(-h_ // sh)
    ps = r0 * ow
    ri, ci = np.arange(oh)[:, None], np.arange(ow)[None, :]
    toff, valid = [], []
    for i in range(kh):
        for j in range(kw):
            u, v = i * dh - pad[0], j * dw - pad[2]
            if direct:
                toff.append(u * w_ + v)
            else:
                toff.append(((u % sh) * sw + v % sw) * ps + (u // sh) * ow + v // sw)
            ok = (ri * sh + u >= 0) & (ri * sh + u < h_) & (ci * sw + v >= 0) & (ci * sw + v < w_)
            valid.append(ok.reshape(-1))
    fmask = _bits(np.stack(valid, axis=1), lanes)
    nv = -(-(oh * ow) // lanes)
    vmask = _bits(np.ones((oh * ow, 1), bool), lanes)
    # dx: one pass over dx's plane (direct) or one per stride phase of it
    prog, xoff, xmasks, xstore = [], [], [], []
    phases = [(0, 0)] if direct else [(a, b) for a in range(sh) for b in range(sw)]
    for a, b in phases:
        rows = h_ if direct else -(-(h_ - a) // sh)
        pitch = w_ if direct else ow
        r, c = np.arange(rows)[:, None], np.arange(pitch)[None, :]
        taps, valid = [], []
        for i in range(kh):
            for j in range(kw):
                u, v = a + pad[0] - i * dh, b + pad[2] - j * dw
                if u % sh or v % sw:
                    continue
                du, dv = u // sh, v // sw
                taps.append(i * kw + j)
                xoff.append(du * ow + dv)
                ok = ((r + du >= 0) & (r + du < oh) & (c + dv >= 0) & (c + dv < ow)
                      & (c * sw + b < w_))
                valid.append(ok.reshape(-1))
        npos = rows * pitch
        nvx = -(-npos // lanes)
        prog.append((len(xoff) - len(taps), len(taps), sum(len(m) for m in xmasks),
                     nvx, sum(len(m) for m in xstore)))
        xmasks.append(_bits(np.stack(valid, axis=1), lanes) if taps
                      else np.zeros(0, np.uint16))
        xstore.append(_bits(np.ones((npos, 1), bool), lanes))
        prog[-1] = prog[-1] + (taps,)
    tapidx = np.array([t for p in prog for t in p[5]], np.int64)
    program = np.array([p[:5] for p in prog], np.int64).reshape(-1, 5)
    return (direct, ps, np.array(toff, np.int64), fmask, nv, vmask, tapidx,
            np.array(xoff, np.int64), program, np.concatenate(xmasks).astype(np.uint16),
            np.concatenate(xstore).astype(np.uint16))


def _flat_per_thread(x_shape, w_shape, stride, pad, dilation):
    """Elements of a thread's slice for the flat kernels: the stride phases of two blocks of
    samples, as many for dx's phases, and the float32 dw sums (taps x 16)."""
    ow = conv_output_size(x_shape[3], w_shape[3], stride[1], pad[2], pad[3], dilation[1])
    ps = -(-x_shape[2] // stride[0]) * ow * stride[0] * stride[1]
    return 4 * (_BLOCK * (ps + _SKEW) + _SKEW) + w_shape[2] * w_shape[3] * 16


@jit
def _split_plane(xf, base, h_, w_, stride, ow, ps, dst, at):
    """dst[at + (a*sw + b)*ps + r*ow + c] = x plane[r*sh + a, c*sw + b] (no padding: the masks
    stand for it).  Unsigned indices, as in conv's _split_sample, and no division in the loops
    (two per row took most of an 8x8 plane's time)."""
    sh, sw = stride
    lanes = vlanes(dst)
    for a in range(sh):
        for r in range((h_ - a + sh - 1) // sh):
            src = np.uint64(base + (r * sh + a) * w_)
            d = np.uint64(at + a * sw * ps + r * ow)
            if sw == 1:
                for e in range(w_):
                    dst[d + np.uint64(e)] = xf[src + np.uint64(e)]
            elif sw == 2:                  # two vectors in, evens and odds out
                for k0 in range(0, w_, 2 * lanes):
                    n = min(2 * lanes, w_ - k0)
                    v0 = vload_masked(xf, src + k0, _HEAD, min(lanes, n))
                    v1 = vload_masked(xf, src + k0 + lanes, _HEAD, max(0, n - lanes))
                    vstore_masked(dst, d + k0 // 2, vevens(v0, v1), _HEAD, (n + 1) // 2)
                    vstore_masked(dst, d + ps + k0 // 2, vodds(v0, v1), _HEAD, n // 2)
            else:
                for b in range(sw):
                    db = d + np.uint64(b * ps)
                    for e in range((w_ - b + sw - 1) // sw):
                        dst[db + np.uint64(e)] = xf[src + np.uint64(e * sw + b)]


@jit
def _merge_plane(src, at, h_, w_, stride, ow, ps, accumulate, dxf, base):
    """dx plane[h, w] (+)= src[at + (h%sh*sw + w%sw)*ps + (h//sh)*ow + w//sw] (no division in
    the loops, as in _split_plane)."""
    sh, sw = stride
    lanes = vlanes(src)
    for a in range(sh):
        for r in range((h_ - a + sh - 1) // sh):
            d = np.uint64(base + (r * sh + a) * w_)
            s = np.uint64(at + a * sw * ps + r * ow)
            if sw == 2:                      # evens and odds in, two vectors out
                for k0 in range(0, w_, 2 * lanes):
                    n = min(2 * lanes, w_ - k0)
                    ev = vload_masked(src, s + k0 // 2, _HEAD, (n + 1) // 2)
                    od = vload_masked(src, s + ps + k0 // 2, _HEAD, n // 2)
                    lo, hi = vlow(ev, od), vhigh(ev, od)
                    if accumulate:
                        lo = vadd(lo, vload_masked(dxf, d + k0, _HEAD, min(lanes, n)))
                        hi = vadd(hi, vload_masked(dxf, d + k0 + lanes, _HEAD,
                                                    max(0, n - lanes)))
                    vstore_masked(dxf, d + k0, lo, _HEAD, min(lanes, n))
                    vstore_masked(dxf, d + k0 + lanes, hi, _HEAD, max(0, n - lanes))
                continue
            for b in range(sw):
                sb = s + np.uint64(b * ps)
                if accumulate:
                    for e in range((w_ - b + sw - 1) // sw):
                        dxf[d + np.uint64(e * sw + b)] += src[sb + np.uint64(e)]
                else:
                    for e in range((w_ - b + sw - 1) // sw):
                        dxf[d + np.uint64(e * sw + b)] = src[sb + np.uint64(e)]


@jit
def _block(n_, i):
    """(first sample, samples) of block i: blocks of _BLOCK, then single samples."""
    full = n_ // _BLOCK
    if i < full:
        return i * _BLOCK, _BLOCK
    return full * _BLOCK + i - full, 1


@jit
def _prefetch(arr, n_, i, c_, c, plane):
    """Hint the planes of block i (if any) of channel c into the cache: a channel's planes lie
    C planes apart, too far for the hardware prefetcher to follow (8x8 planes: 4 lines each)."""
    if i >= n_ // _BLOCK + n_ % _BLOCK:
        return
    n, nb = _block(n_, i)
    lanes = vlanes(arr)
    for k in range(nb):
        base = ((n + k) * c_ + c) * plane
        for e in range(0, plane, lanes):
            vprefetch(arr, base + e)


@jit
def _bases(n, c_, c, plane):
    return ((n * c_ + c) * plane, ((n + 1) * c_ + c) * plane, ((n + 2) * c_ + c) * plane,
            ((n + 3) * c_ + c) * plane)


@jit
def _gather(src, sb, nb, wf, wb, tapidx, toff, t0, nt, masks, m0, nv, smask, s0, dst, db,
            accumulate, b, bi):
    """dst[db[k] + p] (+)= b[bi] + sum_t wf[wb + tapidx[t0+t]] * src[sb[k] + p + toff[t0+t]],
    p over nv vectors, tap t's lanes masked by masks[m0 + v*nt + t], stores by smask[s0 + v];
    nb = 4 samples (k < 4) or 1."""
    lanes = vlanes(dst)
    for v in range(nv):
        p = v * lanes
        if bi >= 0:
            a0 = vsplat(b, bi)
        else:
            a0 = vzero(dst)
        a1, a2, a3 = a0, a0, a0
        mv = m0 + v * nt
        if nb == 4:
            for t in range(nt):
                wv = vsplat(wf, wb + tapidx[t0 + t])
                o = p + toff[t0 + t]
                a0 = vfma(a0, wv, vload_masked(src, sb[0] + o, masks, mv + t))
                a1 = vfma(a1, wv, vload_masked(src, sb[1] + o, masks, mv + t))
                a2 = vfma(a2, wv, vload_masked(src, sb[2] + o, masks, mv + t))
                a3 = vfma(a3, wv, vload_masked(src, sb[3] + o, masks, mv + t))
            if accumulate:
                a0 = vadd(a0, vload_masked(dst, db[0] + p, smask, s0 + v))
                a1 = vadd(a1, vload_masked(dst, db[1] + p, smask, s0 + v))
                a2 = vadd(a2, vload_masked(dst, db[2] + p, smask, s0 + v))
                a3 = vadd(a3, vload_masked(dst, db[3] + p, smask, s0 + v))
            vstore_masked(dst, db[0] + p, a0, smask, s0 + v)
            vstore_masked(dst, db[1] + p, a1, smask, s0 + v)
            vstore_masked(dst, db[2] + p, a2, smask, s0 + v)
            vstore_masked(dst, db[3] + p, a3, smask, s0 + v)
        else:
            for t in range(nt):
                wv = vsplat(wf, wb + tapidx[t0 + t])
                a0 = vfma(a0, wv, vload_masked(src, sb[0] + p + toff[t0 + t], masks, mv + t))
            if accumulate:
                a0 = vadd(a0, vload_masked(dst, db[0] + p, smask, s0 + v))
            vstore_masked(dst, db[0] + p, a0, smask, s0 + v)


@jit
def _dw_block(df, dbase, xsrc, sb, nb, taps, toff, fmask, nv, vmask, acc):
    """acc[t*lanes:] += sum over the block's samples and vectors of dout * tap t's input."""
    lanes = vlanes(df)
    for t in range(taps):
        p0 = vzero(df)
        p1, p2, p3 = p0, p0, p0
        o = toff[t]
        if nb == 4:
            for v in range(nv):
                p = v * lanes
                mi = v * taps + t
                p0 = vfma(p0, vload_masked(df, dbase[0] + p, vmask, v),
                          vload_masked(xsrc, sb[0] + p + o, fmask, mi))
                p1 = vfma(p1, vload_masked(df, dbase[1] + p, vmask, v),
                          vload_masked(xsrc, sb[1] + p + o, fmask, mi))
                p2 = vfma(p2, vload_masked(df, dbase[2] + p, vmask, v),
                          vload_masked(xsrc, sb[2] + p + o, fmask, mi))
                p3 = vfma(p3, vload_masked(df, dbase[3] + p, vmask, v),
                          vload_masked(xsrc, sb[3] + p + o, fmask, mi))
            p0 = vadd(vadd(p0, p1), vadd(p2, p3))
        else:
            for v in range(nv):
                p = v * lanes
                p0 = vfma(p0, vload_masked(df, dbase[0] + p, vmask, v),
                          vload_masked(xsrc, sb[0] + p + o, fmask, v * taps + t))
        vstore(acc, t * lanes, vadd(vload(acc, t * lanes), p0))


@jit
def _forward_flat(x, w, b, stride, out, direct, ps, toff, fmask, nv, vmask, ahead, buf, c0,
                  c1):
    """Output planes of channels [c0, c1), every sample (the flat kernels).  Strided: block
    i + 1's phases are copied before block i is computed (two slots), so that the vector loads
    do not wait for the copy's stores just made."""
    n_, c_, h_, w_ = x.shape
    taps = w.shape[2] * w.shape[3]
    oh_, ow_ = out.shape[2], out.shape[3]
    xf, of, wf = x.reshape(x.size), out.reshape(out.size), w.reshape(w.size)
    phases = stride[0] * stride[1] * ps + _SKEW    # a sample's phases in the scratch
    slot = _BLOCK * phases + _SKEW
    blocks = n_ // _BLOCK + n_ % _BLOCK
    tapidx = np.arange(taps)
    for c in range(c0, c1):
        bi = c if b.size > 0 else -1
        if not direct:
            n, nb = _block(n_, 0)
            xb = _bases(n, c_, c, h_ * w_)
            for k in range(nb):
                _split_plane(xf, xb[k], h_, w_, stride, ow_, ps, buf, k * phases)
        for i in range(blocks):
            n, nb = _block(n_, i)
            ob = _bases(n, c_, c, oh_ * ow_)
            _prefetch(xf, n_, i + ahead, c_, c, h_ * w_)
            if direct:
                _gather(xf, _bases(n, c_, c, h_ * w_), nb, wf, c * taps, tapidx, toff, 0, taps,
                        fmask, 0, nv, vmask, 0, of, ob, False, b, bi)
                continue
            if i + 1 < blocks:
                n1, nb1 = _block(n_, i + 1)
                xb = _bases(n1, c_, c, h_ * w_)
                for k in range(nb1):
                    _split_plane(xf, xb[k], h_, w_, stride, ow_, ps, buf,
                                 ((i + 1) % 2) * slot + k * phases)
            at = (i % 2) * slot
            _gather(buf, (at, at + phases, at + 2 * phases, at + 3 * phases), nb, wf, c * taps,
                    tapidx, toff, 0, taps, fmask, 0, nv, vmask, 0, of, ob, False, b, bi)


@jit
def _backward_flat(dout, x, w, stride, dx, dw, db, accumulate, need_dx, need_dw, need_db,
                   direct, ps, toff, fmask, nv, vmask, tapidx, xoff, program, xmask, xstore,
                   ahead, buf, c0, c1):
    """dx planes, dw and db rows of channels [c0, c1) (the flat kernels; strided: x's phases
    copied a block ahead, dx's phases merged a block behind, two slots each)."""
    n_, c_, h_, w_ = x.shape
    kh, kw = w.shape[2], w.shape[3]
    taps = kh * kw
    oh_, ow_ = dout.shape[2], dout.shape[3]
    lanes = vlanes(x)
    xf, df, wf = x.reshape(x.size), dout.reshape(dout.size), w.reshape(w.size)
    dxf, dwf = dx.reshape(dx.size), dw.reshape(dw.size)
    phases = stride[0] * stride[1] * ps + _SKEW    # a sample's phases in the scratch
    slot = _BLOCK * phases + _SKEW
    xs, ds = 0, 2 * slot                         # x's phases, dx's phases: two slots each
    acc = buf[4 * slot:4 * slot + taps * lanes]
    acc64 = np.zeros(taps * lanes)
    blocks = n_ // _BLOCK + n_ % _BLOCK
    for c in range(c0, c1):
        if need_dw:
            _zero(acc)
            for e in range(taps * lanes):
                acc64[e] = 0.0
            if not direct:
                n, nb = _block(n_, 0)
                xb = _bases(n, c_, c, h_ * w_)
                for k in range(nb):
                    _split_plane(xf, xb[k], h_, w_, stride, ow_, ps, buf, xs + k * phases)
        dbs = 0.0
        count = 0
        for i in range(blocks):
            n, nb = _block(n_, i)
            xb = _bases(n, c_, c, h_ * w_)
            ob = _bases(n, c_, c, oh_ * ow_)
            _prefetch(df, n_, i + ahead, c_, c, oh_ * ow_)
            if need_dw:
                _prefetch(xf, n_, i + ahead, c_, c, h_ * w_)
            if need_db:
                for k in range(nb):
                    dbs += sum64(df[ob[k]:ob[k] + oh_ * ow_])
            if need_dw:
                if direct:
                    _dw_block(df, ob, xf, xb, nb, taps, toff, fmask, nv, vmask, acc)
                else:
                    if i + 1 < blocks:
                        n1, nb1 = _block(n_, i + 1)
                        xb1 = _bases(n1, c_, c, h_ * w_)
                        for k in range(nb1):
                            _split_plane(xf, xb1[k], h_, w_, stride, ow_, ps, buf,
                                         xs + ((i + 1) % 2) * slot + k * phases)
                    at = xs + (i % 2) * slot
                    _dw_block(df, ob, buf, (at, at + phases, at + 2 * phases, at + 3 * phases),
                              nb, taps, toff, fmask, nv, vmask, acc)
                count += nb * nv
                if count >= _FLUSH:
                    _flush(acc, acc64, taps * lanes)
                    count = 0
            if need_dx:
                if direct:
                    _gather(df, ob, nb, wf, c * taps, tapidx, xoff, 0, program[0, 1], xmask, 0,
                            program[0, 3], xstore, 0, dxf, xb, accumulate, wf, -1)
                    continue
                base = ds + (i % 2) * slot
                for q in range(program.shape[0]):
                    at = base + q * ps
                    _gather(df, ob, nb, wf, c * taps, tapidx, xoff, program[q, 0], program[q, 1],
                            xmask, program[q, 2], program[q, 3], xstore, program[q, 4], buf,
                            (at, at + phases, at + 2 * phases, at + 3 * phases), False, wf, -1)
                if i > 0:
                    _merge_block(buf, ds + ((i - 1) % 2) * slot, n_, i - 1, c_, c, h_, w_,
                                 stride, ow_, ps, accumulate, dxf)
        if need_dx and not direct and blocks > 0:
            _merge_block(buf, ds + ((blocks - 1) % 2) * slot, n_, blocks - 1, c_, c, h_, w_,
                         stride, ow_, ps, accumulate, dxf)
        if need_dw:
            _dw_lanes_sum(acc, acc64, taps, lanes, dwf, c * taps)
        if need_db:
            db[c] = dbs


@jit
def _flush(acc, acc64, n):
    """acc64[:n] += acc[:n]; acc[:n] = 0 (the float32 partials of dw folded into float64)."""
    for e in range(n):
        acc64[e] += acc[e]
        acc[e] = 0


@jit
def _dw_lanes_sum(acc, acc64, taps, lanes, dwf, at):
    """dwf[at + t] = the sum over lanes of acc64 + acc (per-lane float64 partials of tap t)."""
    for e in range(taps * lanes):
        acc64[e] += acc[e]
    for t in range(taps):
        s = 0.0
        for e in range(lanes):
            s += acc64[t * lanes + e]
        dwf[at + t] = s


@jit
def _merge_block(buf, at, n_, i, c_, c, h_, w_, stride, ow, ps, accumulate, dxf):
    """Block i's dx phases (at buf[at:]) into dx."""
    n, nb = _block(n_, i)
    xb = _bases(n, c_, c, h_ * w_)
    phases = stride[0] * stride[1] * ps + _SKEW
    for k in range(nb):
        _merge_plane(buf, at + k * phases, h_, w_, stride, ow, ps, accumulate, dxf, xb[k])


_FLAT = None                      # tests: True / False, the flat kernels wherever flat_ok / never
                                  # (the wide grid's, to compare); None: the rules (_use_flat)
_NARROW_FLAT_PLANE = 64           # without AVX-512: the flat kernels on planes up to 8x8
_GATHERS = None                   # tests: True / False, strided flat layers by gathers always /
                                  # never; None: the rules (_use_gathers)
_GATHER_BACKWARD_PLANE = 64       # input planes up to 8x8: the backward by gathers
_SMALL = True                     # tests: False, small planes' forward by the kernels above
_empty_offsets = np.zeros(16, np.int32)


def _use_flat(x_shape, w_shape, stride, pad, dilation):
    """Whether the flat kernels take a layer that flat_ok allows.  With AVX-512, always; without
    it (AVX2: their 16-lane vectors are two registers, their masked loads and stores two
    instructions each after the mask's lanes are unpacked from its bits), only on planes of up
    to _NARROW_FLAT_PLANE (strided ones by gathers: _use_gathers).  Measured against the wide
    grid's loops on an AMD EPYC (Zen 3, AVX2; MobileNetV2's 3x3 layers, float32, one thread,
    median of 5 rounds, forward / backward, the flat kernels' better run of two): 16 channels
    on 64x32x32 0.39x / 0.48x, 144 on 64x16x16 0.42x / 0.63x, 144 on 32x28x28 0.47x / 0.58x, 96
    on 32x56x56 0.53x / 0.71x; stride 2 on 32x32 0.27x / 0.23x, on 16x16 0.34x / 0.37x, on 8x8
    0.87x / 0.43x; on 8x8 planes, stride 1, 1.51x / 1.49x, stride 2 by gathers 3.06x / 1.34x.  Against PyTorch
    (batch 64, forward and backward) the layers on planes up to 32x32 went from 0.18-1.76x to
    0.42-6.6x, those on 28x28 and 56x56 from 1.8-4.1x to 3.6-8.1x.  Since the fifteenth round,
    3x3 stride-1 layers whose output rows hold a float32 half vector (8x8 planes with padding 1)
    run _rows_3x3 and _dw_rows_3x3 instead (against the flat kernels, 144 and 192 channels on
    64x8x8: forward 1.11-1.12x, backward 1.21-1.37x on one thread, 1.23-1.27x on two)."""
    from cnnspec.kernels.conv import _wide_vector_cpu
    if _FLAT is False or not flat_ok(x_shape, w_shape, stride, pad, dilation):
        return False
    if _FLAT or _wide_vector_cpu():
        return True
    return (x_shape[2] * x_shape[3] <= _NARROW_FLAT_PLANE
            and not _use_rows_3x3(x_shape, w_shape, stride, pad, dilation, np.float32))


def _use_gathers(kind, x_shape, stride):
    """Whether a strided flat layer runs by gathers (below) rather than its stride phases' copies.
    Measured (one thread, CPU time, MobileNetV2-S's strided layers at batch 64, see the
    performance log's seventh round): the forward 2.9x faster on 8x8 planes, 1.04-1.2x on 16x16
    to 56x56; the backward 1.8x on 8x8, 0.65-0.82x on 16x16 and larger.  On AVX2 (AMD EPYC,
    the same layers) against the wide grid's loops: 8x8 3.06x / 1.34x, 16x16 0.85x / 0.58x."""
    from cnnspec.kernels.conv import _wide_vector_cpu
    if tuple(stride) == (1, 1) or _GATHERS is False:
        return False
    if _GATHERS:
        return True
    if not _wide_vector_cpu():          # AVX2 (its 8-lane gathers, two a vector): planes up to
        return x_shape[2] * x_shape[3] <= _GATHER_BACKWARD_PLANE    # 8x8 only (_use_flat)
    return kind == "forward" or x_shape[2] * x_shape[3] <= _GATHER_BACKWARD_PLANE


def _ahead(x):
    """Blocks ahead that the flat kernels hint into the cache: planes of up to 2 KB (16x16 in
    float32: 1.04-1.27x faster, 8x8 1.0-1.12x); larger planes run 0.8-0.93x with the hints
    (the hardware prefetcher follows a plane of 4 KB or more by itself)."""
    return _AHEAD if x.shape[2] * x.shape[3] * x.itemsize <= _PREFETCH_BYTES else 1 << 30


def _lanes(dtype):
    return 64 // np.dtype(dtype).itemsize


def _threads(channels, macs):
    return 1 if macs < _PARALLEL_MACS else min(num_threads(), channels)


def _check(workspace, need):
    if workspace.size < need:
        raise ValueError(f"conv2d workspace too small: {workspace.size} elements, need {need} "
                         f"(conv2d_workspace_size)")


def _split(fn, x, out, threads, args):
    """run_split of a forward kernel ``fn(*args(slot, x piece, out piece, c0, c1))``: on several
    threads by samples (the pieces of ``_sample_pieces``, every channel in each), else by
    channels.  Either way each output plane is computed by the same loops: the same results."""
    c_, n_ = x.shape[1], x.shape[0]
    pieces = _sample_pieces(x.shape) if threads > 1 else 0
    if pieces:
        run_split(fn, pieces, threads, lambda t, lo, hi: args(
            t, x[lo * n_ // pieces:hi * n_ // pieces], out[lo * n_ // pieces:hi * n_ // pieces],
            0, c_), dynamic=True)
    else:
        run_split(fn, c_, threads, lambda t, lo, hi: args(t, x, out, lo, hi), dynamic=True)


def forward_into(x, w, b, stride, pad, dilation, out, workspace, empty1):
    """out (N, F, OH, OW) = depthwise conv of x (N, C, H, W) by w (F, 1, KH, KW) + b (F,);
    ``empty1`` (an empty 1-D array of x's dtype) stands for b=None."""
    c_ = x.shape[1]
    threads = _threads(c_, out.size * w.shape[2] * w.shape[3])
    if _use_flat(x.shape, w.shape, stride, pad, dilation):
        per = _flat_per_thread(x.shape, w.shape, stride, pad, dilation)
        _check(workspace, threads * per)
        direct, ps, toff, fmask, nv, vmask = _tables(
            x.shape[2:], w.shape[2:], tuple(stride), tuple(pad), tuple(dilation),
            _lanes(x.dtype))[:6]
        b = empty1 if b is None else b
        if _SMALL and x.shape[2] * x.shape[3] <= _SMALL_PLANE and (
                direct or _use_gathers("forward", x.shape, stride)):
            gidx = _empty_offsets if direct else _gather_table(
                x.shape[2:], w.shape[2:], tuple(stride), tuple(pad), tuple(dilation),
                _lanes(x.dtype))
            _split(_forward_small, x, out, threads, lambda t, xs, os, lo, hi: (
                xs, w, b, os, direct, toff, gidx, fmask, nv, vmask, lo, hi))
            return
        if _use_gathers("forward", x.shape, stride):
            gidx = _gather_table(x.shape[2:], w.shape[2:], tuple(stride), tuple(pad),
                                 tuple(dilation), _lanes(x.dtype))
            _split(_forward_gather, x, out, threads, lambda t, xs, os, lo, hi: (
                xs, w, b, os, gidx, fmask, nv, vmask, lo, hi))
            return
        _split(_forward_flat, x, out, threads, lambda t, xs, os, lo, hi: (
            xs, w, b, tuple(stride), os, direct, ps, toff, fmask, nv, vmask, _ahead(x),
            workspace[t * per:(t + 1) * per], lo, hi))
        return
    rows, phases, per = _layout(x.shape, w.shape, stride, pad, dilation)
    _check(workspace, threads * per)
    b = empty1 if b is None else b
    rows_3x3 = _use_rows_3x3(x.shape, w.shape, stride, pad, dilation, x.dtype)
    _split(_forward, x, out, threads, lambda t, xs, os, lo, hi: (
        xs, w, b, stride, pad, dilation, os, rows, phases, workspace[t * per:(t + 1) * per],
        lo, hi, rows_3x3))


def backward_into(dout, x, w, stride, pad, dilation, dx, dw, db, workspace, accumulate, empty1,
                  empty4):
    """dx (+)= dL/dx, dw = dL/dw, db = dL/db (each may be None: not computed); ``empty1`` and
    ``empty4`` (empty arrays of x's dtype) stand for None."""
    pad_dx = None if dx is None or accumulate else _dx_pad(x.shape, w.shape, stride, pad,
                                                            dilation)
    if pad_dx is not None:
        forward_into(dout, np.ascontiguousarray(w[:, :, ::-1, ::-1]), None, (1, 1), pad_dx,
                     dilation, dx, workspace, empty1)
        if dw is None and db is None:
            return
        dx = None
    c_ = x.shape[1]
    threads = _threads(c_, 2 * dout.size * w.shape[2] * w.shape[3])
    flat = _use_flat(x.shape, w.shape, stride, pad, dilation)
    if flat:
        per = _flat_per_thread(x.shape, w.shape, stride, pad, dilation)
    else:
        rows, phases, per = _layout(x.shape, w.shape, stride, pad, dilation)
    pieces = _backward_pieces(x.shape)
    _check(workspace, _workspace(per, pieces, w.shape, threads))
    need = (dx is not None, dw is not None, db is not None)
    if flat:
        tables = _tables(x.shape[2:], w.shape[2:], tuple(stride), tuple(pad), tuple(dilation),
                         _lanes(x.dtype))
        if _use_gathers("backward", x.shape, stride):
            lanes = _lanes(x.dtype)
            geometry = (x.shape[2:], w.shape[2:], tuple(stride), tuple(pad), tuple(dilation), lanes)
            gidx, dxt = _gather_table(*geometry), _gather_dx_table(*geometry)
            xvmask = _bits(np.ones((x.shape[2] * x.shape[3], 1), bool), lanes)
            taps = w.shape[2] * w.shape[3]
            fn, args = _backward_gather, lambda buf, dout, x, dx, dw, db, lo, hi: (
                dout, x, w, dx, dw, db, bool(accumulate), need[0], need[1], need[2], gidx,
                tables[3], tables[4], tables[5]) + dxt + (xvmask, buf[:taps * lanes], lo, hi)
        else:
            fn, args = _backward_flat, lambda buf, dout, x, dx, dw, db, lo, hi: (
                dout, x, w, tuple(stride), dx, dw, db, bool(accumulate), need[0], need[1],
                need[2]) + tables + (_ahead(x), buf, lo, hi)
    else:
        rows_3x3 = _use_rows_3x3(x.shape, w.shape, stride, pad, dilation, x.dtype)
        fn, args = _backward, lambda buf, dout, x, dx, dw, db, lo, hi: (
            dout, x, w, stride, pad, dilation, dx, dw, db, bool(accumulate), need[0], need[1],
            need[2], rows, phases, buf, lo, hi, rows_3x3)
    dx = empty4 if dx is None else dx
    if not pieces:
        run_split(fn, c_, threads, lambda t, lo, hi: args(
            workspace[t * per:(t + 1) * per], dout, x, dx, empty4 if dw is None else dw,
            empty1 if db is None else db, lo, hi), dynamic=True)
        return
    # by samples: piece k's dw and db into its own rows after the pieces' scratch, summed in
    # piece order (the pieces do not depend on the thread count: neither do the results)
    f_ = w.shape[0]
    parts = workspace[pieces * per:pieces * per + pieces * (w.size + f_)].reshape(pieces, -1)
    dws = parts[:, :w.size].reshape((pieces,) + w.shape)
    dbs = parts[:, w.size:]
    run_split(fn, x.shape[0], threads, lambda k, lo, hi: args(
        workspace[k * per:(k + 1) * per], dout[lo:hi], x[lo:hi],
        dx[lo:hi] if need[0] else dx, dws[k] if need[1] else empty4,
        dbs[k] if need[2] else empty1, 0, c_), pieces=pieces)
    if need[1]:
        _sum_parts(dws.reshape(pieces, -1), dw.reshape(-1))
    if need[2]:
        _sum_parts(dbs, db)


@jit
def _sum_parts(parts, out):
    """out[e] = sum over k (in order, float64) of parts[k, e]."""
    for e in range(out.size):
        s = 0.0
        for k in range(parts.shape[0]):
            s += parts[k, e]
        out[e] = s


_BY_SAMPLES = True                # tests: False, every layer split by channels
_SAMPLE_PIECES = 8                # pieces of a split by samples (whatever the thread count)


def _sample_pieces(x_shape):
    """Pieces of a layer split by samples (0: by channels): batches of 8 or more, in up to 8
    pieces of whole blocks of 4 samples (a piece of 8 samples of MobileNetV2-S's 192x8x8 maps
    is 0.4 MB, within a core's cache)."""
    if not _BY_SAMPLES or x_shape[0] < 2 * _BLOCK:
        return 0
    return min(_SAMPLE_PIECES, x_shape[0] // _BLOCK)


_BACKWARD_PLANE = 256             # the backward by samples on input planes up to 16x16


def _backward_pieces(x_shape):
    """Pieces of the backward split by samples (0: by channels), whatever the thread count (its
    dw and db are sums of the pieces' partials: the split must not depend on the threads).
    Measured (float32, CPU time of both threads, A/B in MobileNetV2-S's training step at batch
    64 and alone, see the performance log's eighth round): 192x8x8 0.47-0.67x, 144x16x16 and
    192x8x8 stride 2 0.80-0.94x on 2 threads in the step; planes of 28x28 to 56x56 alone
    0.98-1.22x on one thread (their pieces gain no cache locality), so they stay by channels."""
    if x_shape[2] * x_shape[3] > _BACKWARD_PLANE:
        return 0
    return _sample_pieces(x_shape)


def _workspace(per, pieces, w_shape, threads):
    """Workspace elements: ``per`` a thread, or a piece and the pieces' dw and db rows."""
    if not pieces:
        return threads * per
    return max(threads, pieces) * per + pieces * (math.prod(w_shape) + w_shape[0])


# -- small strided planes by gathers ------------------------------------------------------------
# A strided flat layer copies each plane's stride phases before its gather: on 8x8 planes (4x4
# outputs) the copy and its loop overheads cost most of the ~190 ns a plane took (PyTorch: ~70).
# Here each tap's 16 inputs are read straight from x by one AVX-512 gather (``vgather``: offsets
# from a table, the padding's lanes masked to zero by the flat kernels' masks).

@functools.lru_cache(maxsize=64)
def _gather_table(hw, kernel, stride, pad, dilation, lanes):
    """int32 offsets [vector v, tap t, lane l] into x's plane of output p = v*lanes + l at tap
    t (0 where the lane is masked: padding, or past the plane)."""
    h_, w_ = hw
    kh, kw = kernel
    oh = conv_output_size(h_, kh, stride[0], pad[0], pad[1], dilation[0])
    ow = conv_output_size(w_, kw, stride[1], pad[2], pad[3], dilation[1])
    nv = -(-(oh * ow) // lanes)
    p = np.arange(nv * lanes)
    r, c = p // ow, p % ow
    offs = np.zeros((nv * lanes, kh * kw), np.int64)
    for i in range(kh):
        for j in range(kw):
            u = r * stride[0] + i * dilation[0] - pad[0]
            v = c * stride[1] + j * dilation[1] - pad[2]
            ok = (u >= 0) & (u < h_) & (v >= 0) & (v < w_) & (p < oh * ow)
            offs[:, i * kw + j] = np.where(ok, u * w_ + v, 0)
    table = offs.reshape(nv, lanes, kh * kw).transpose(0, 2, 1).reshape(-1)
    return np.concatenate([table, np.zeros(16, np.int64)]).astype(np.int32)


@jit
def _forward_gather(x, w, b, out, gidx, fmask, nv, vmask, c0, c1):
    """Output planes of channels [c0, c1), every sample, four samples at a time: each tap's
    inputs by one gather per output vector."""
    n_, c_, h_, w_ = x.shape
    taps = w.shape[2] * w.shape[3]
    plane, oplane = h_ * w_, out.shape[2] * out.shape[3]
    lanes = vlanes(x)
    xf, of, wf = x.reshape(x.size), out.reshape(out.size), w.reshape(w.size)
    for c in range(c0, c1):
        for n in range(0, n_, 4):
            nb = min(4, n_ - n)
            x0 = (n * c_ + c) * plane
            o0 = (n * c_ + c) * oplane
            xs, os_ = c_ * plane, c_ * oplane
            for v in range(nv):
                p = v * lanes
                if b.size > 0:
                    a0 = vsplat(b, c)
                else:
                    a0 = vzero(x)
                a1, a2, a3 = a0, a0, a0
                if nb == 4:
                    for t in range(taps):
                        wv = vsplat(wf, c * taps + t)
                        m = v * taps + t
                        a0 = vfma(a0, wv, vgather(xf, x0, gidx, m * lanes, fmask, m))
                        a1 = vfma(a1, wv, vgather(xf, x0 + xs, gidx, m * lanes, fmask, m))
                        a2 = vfma(a2, wv, vgather(xf, x0 + 2 * xs, gidx, m * lanes, fmask, m))
                        a3 = vfma(a3, wv, vgather(xf, x0 + 3 * xs, gidx, m * lanes, fmask, m))
                    vstore_masked(of, o0 + p, a0, vmask, v)
                    vstore_masked(of, o0 + os_ + p, a1, vmask, v)
                    vstore_masked(of, o0 + 2 * os_ + p, a2, vmask, v)
                    vstore_masked(of, o0 + 3 * os_ + p, a3, vmask, v)
                else:
                    for k in range(nb):
                        a = a0
                        for t in range(taps):
                            m = v * taps + t
                            a = vfma(a, vsplat(wf, c * taps + t),
                                     vgather(xf, x0 + k * xs, gidx, m * lanes, fmask, m))
                        vstore_masked(of, o0 + k * os_ + p, a, vmask, v)


@functools.lru_cache(maxsize=64)
def _gather_dx_table(hw, kernel, stride, pad, dilation, lanes):
    """dx by gathers from dout: input position q = v*lanes + l receives w[t] * dout[o] from the
    taps t whose output o exists; slot s of lane l is its s-th such tap.  Returns (offsets into
    dout's plane [v, s, l] int32, tap indices [v, s, l] int32, masks [v, s] uint16, slots,
    vectors)."""
    h_, w_ = hw
    kh, kw = kernel
    sh, sw = stride
    oh = conv_output_size(h_, kh, sh, pad[0], pad[1], dilation[0])
    ow = conv_output_size(w_, kw, sw, pad[2], pad[3], dilation[1])
    nv = -(-(h_ * w_) // lanes)
    lists = []
    for q in range(nv * lanes):
        r, c = divmod(q, w_)
        here = []
        for i in range(kh):
            for j in range(kw):
                u, v = r + pad[0] - i * dilation[0], c + pad[2] - j * dilation[1]
                if (q < h_ * w_ and u % sh == 0 and v % sw == 0 and 0 <= u // sh < oh
                        and 0 <= v // sw < ow):
                    here.append(((u // sh) * ow + v // sw, i * kw + j))
        lists.append(here)
    slots = max(1, max(len(e) for e in lists))
    offs = np.zeros((nv, slots, lanes), np.int32)
    taps = np.zeros((nv, slots, lanes), np.int32)
    valid = np.zeros((nv, slots, lanes), bool)
    for q, here in enumerate(lists):
        for s, (o, t) in enumerate(here):
            offs[q // lanes, s, q % lanes] = o
            taps[q // lanes, s, q % lanes] = t
            valid[q // lanes, s, q % lanes] = True
    masks = (valid * (1 << np.arange(lanes, dtype=np.int64))).sum(axis=2).astype(np.uint16)
    pad16 = np.zeros(16, np.int32)
    return (np.concatenate([offs.reshape(-1), pad16]), np.concatenate([taps.reshape(-1), pad16]),
            masks.reshape(-1), slots, nv)


@jit
def _backward_gather(dout, x, w, dx, dw, db, accumulate, need_dx, need_dw, need_db, gidx, fmask,
                     nv, vmask, xidx, xtap, xmask, slots, nvx, xvmask, acc, c0, c1):
    """dx planes, dw and db rows of channels [c0, c1) by gathers (four samples at a time): dx
    from dout (slots of taps, see _gather_dx_table), dw's taps as in _forward_gather."""
    n_, c_, h_, w_ = x.shape
    taps = w.shape[2] * w.shape[3]
    plane, oplane = h_ * w_, dout.shape[2] * dout.shape[3]
    lanes = vlanes(x)
    xf, df, wf = x.reshape(x.size), dout.reshape(dout.size), w.reshape(w.size)
    dxf, dwf = dx.reshape(dx.size), dw.reshape(dw.size)
    acc64 = np.zeros(taps * lanes)
    xs, os_ = c_ * plane, c_ * oplane
    for c in range(c0, c1):
        if need_dw:
            _zero(acc)
            for e in range(taps * lanes):
                acc64[e] = 0.0
        dbs = 0.0
        count = 0
        for n in range(0, n_, 4):
            nb = min(4, n_ - n)
            x0 = (n * c_ + c) * plane
            o0 = (n * c_ + c) * oplane
            if need_db:
                for k in range(nb):
                    dbs += sum64(df[o0 + k * os_:o0 + k * os_ + oplane])
            if need_dw:
                for t in range(taps):
                    p0 = vzero(x)
                    p1, p2, p3 = p0, p0, p0
                    for v in range(nv):
                        p = v * lanes
                        m = v * taps + t
                        p0 = vfma(p0, vload_masked(df, o0 + p, vmask, v),
                                  vgather(xf, x0, gidx, m * lanes, fmask, m))
                        if nb == 4:
                            p1 = vfma(p1, vload_masked(df, o0 + os_ + p, vmask, v),
                                      vgather(xf, x0 + xs, gidx, m * lanes, fmask, m))
                            p2 = vfma(p2, vload_masked(df, o0 + 2 * os_ + p, vmask, v),
                                      vgather(xf, x0 + 2 * xs, gidx, m * lanes, fmask, m))
                            p3 = vfma(p3, vload_masked(df, o0 + 3 * os_ + p, vmask, v),
                                      vgather(xf, x0 + 3 * xs, gidx, m * lanes, fmask, m))
                        else:
                            for k in range(1, nb):
                                p0 = vfma(p0, vload_masked(df, o0 + k * os_ + p, vmask, v),
                                          vgather(xf, x0 + k * xs, gidx, m * lanes, fmask, m))
                    p0 = vadd(vadd(p0, p1), vadd(p2, p3))
                    vstore(acc, t * lanes, vadd(vload(acc, t * lanes), p0))
                count += nb * nv
                if count >= _FLUSH:
                    _flush(acc, acc64, taps * lanes)
                    count = 0
            if need_dx:
                for v in range(nvx):
                    p = v * lanes
                    a0 = vzero(x)
                    a1, a2, a3 = a0, a0, a0
                    for s in range(slots):
                        m = v * slots + s
                        wv = vgather(wf, c * taps, xtap, m * lanes, xmask, m)
                        a0 = vfma(a0, wv, vgather(df, o0, xidx, m * lanes, xmask, m))
                        if nb > 1:
                            a1 = vfma(a1, wv, vgather(df, o0 + os_, xidx, m * lanes, xmask, m))
                        if nb > 2:
                            a2 = vfma(a2, wv, vgather(df, o0 + 2 * os_, xidx, m * lanes, xmask,
                                                      m))
                        if nb > 3:
                            a3 = vfma(a3, wv, vgather(df, o0 + 3 * os_, xidx, m * lanes, xmask,
                                                      m))
                    if accumulate:
                        a0 = vadd(a0, vload_masked(dxf, x0 + p, xvmask, v))
                        if nb > 1:
                            a1 = vadd(a1, vload_masked(dxf, x0 + xs + p, xvmask, v))
                        if nb > 2:
                            a2 = vadd(a2, vload_masked(dxf, x0 + 2 * xs + p, xvmask, v))
                        if nb > 3:
                            a3 = vadd(a3, vload_masked(dxf, x0 + 3 * xs + p, xvmask, v))
                    vstore_masked(dxf, x0 + p, a0, xvmask, v)
                    if nb > 1:
                        vstore_masked(dxf, x0 + xs + p, a1, xvmask, v)
                    if nb > 2:
                        vstore_masked(dxf, x0 + 2 * xs + p, a2, xvmask, v)
                    if nb > 3:
                        vstore_masked(dxf, x0 + 3 * xs + p, a3, xvmask, v)
        if need_dw:
            _dw_lanes_sum(acc, acc64, taps, lanes, dwf, c * taps)
        if need_db:
            db[c] = dbs


# -- small planes, a sample's channels in a row ------------------------------------------------
# The flat kernels take four samples of one channel at a time (they share weights and masks), so
# consecutive planes lie C planes apart; on 8x8 planes (256 bytes) that walk, not the arithmetic,
# bounds them.  Here a thread runs its channels sample by sample: four consecutive planes (one
# run of memory) a step, each with its own weights, the masks shared as before.

_SMALL_PLANE = 64                 # input planes up to 8x8 (16x16 ran 0.68-0.91x this way)


@jit
def _forward_small(x, w, b, out, direct, toff, gidx, fmask, nv, vmask, c0, c1):
    """Output planes of channels [c0, c1), sample by sample, four channels a step: the taps by
    masked loads at toff (``direct``) or by gathers (gidx, see _gather_table)."""
    n_, c_, h_, w_ = x.shape
    taps = w.shape[2] * w.shape[3]
    plane, oplane = h_ * w_, out.shape[2] * out.shape[3]
    lanes = vlanes(x)
    xf, of, wf = x.reshape(x.size), out.reshape(out.size), w.reshape(w.size)
    for n in range(n_):
        for c in range(c0, c1, 4):
            cb = min(4, c1 - c)
            x0 = (n * c_ + c) * plane
            o0 = (n * c_ + c) * oplane
            for v in range(nv):
                p = v * lanes
                for k in range(0, cb - 3, 4):          # four channels (once, or not at all)
                    a0 = vzero(x)
                    a1, a2, a3 = a0, a0, a0
                    if b.size > 0:
                        a0 = vsplat(b, c)
                        a1 = vsplat(b, c + 1)
                        a2 = vsplat(b, c + 2)
                        a3 = vsplat(b, c + 3)
                    for t in range(taps):
                        m = v * taps + t
                        w0 = c * taps + t
                        if direct:
                            o = x0 + p + toff[t]
                            a0 = vfma(a0, vsplat(wf, w0), vload_masked(xf, o, fmask, m))
                            a1 = vfma(a1, vsplat(wf, w0 + taps),
                                      vload_masked(xf, o + plane, fmask, m))
                            a2 = vfma(a2, vsplat(wf, w0 + 2 * taps),
                                      vload_masked(xf, o + 2 * plane, fmask, m))
                            a3 = vfma(a3, vsplat(wf, w0 + 3 * taps),
                                      vload_masked(xf, o + 3 * plane, fmask, m))
                        else:
                            g = m * lanes
                            a0 = vfma(a0, vsplat(wf, w0), vgather(xf, x0, gidx, g, fmask, m))
                            a1 = vfma(a1, vsplat(wf, w0 + taps),
                                      vgather(xf, x0 + plane, gidx, g, fmask, m))
                            a2 = vfma(a2, vsplat(wf, w0 + 2 * taps),
                                      vgather(xf, x0 + 2 * plane, gidx, g, fmask, m))
                            a3 = vfma(a3, vsplat(wf, w0 + 3 * taps),
                                      vgather(xf, x0 + 3 * plane, gidx, g, fmask, m))
                    vstore_masked(of, o0 + p, a0, vmask, v)
                    vstore_masked(of, o0 + oplane + p, a1, vmask, v)
                    vstore_masked(of, o0 + 2 * oplane + p, a2, vmask, v)
                    vstore_masked(of, o0 + 3 * oplane + p, a3, vmask, v)
                if cb < 4:                             # the last few channels one by one
                    for k in range(cb):
                        a = vzero(x)
                        if b.size > 0:
                            a = vsplat(b, c + k)
                        for t in range(taps):
                            m = v * taps + t
                            if direct:
                                u = vload_masked(xf, x0 + k * plane + p + toff[t], fmask, m)
                            else:
                                u = vgather(xf, x0 + k * plane, gidx, m * lanes, fmask, m)
                            a = vfma(a, vsplat(wf, (c + k) * taps + t), u)
                        vstore_masked(of, o0 + k * oplane + p, a, vmask, v)
