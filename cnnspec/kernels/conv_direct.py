"""Direct convolution kernels: register-blocked loops instead of BLAS products (``_Plan.direct``,
``direct_dx``, ``direct_dw``).

**Forward.**  The sample is copied once into a zero-padded buffer (``_grid``): with stride 1,
rows of max(left, right) zeros followed by the W values (a row's trailing zeros are the next
row's leading ones); strided, conv.py's stride phases (``_split_sample``).  The output is
computed on the "wide" grid of that buffer, q = oh*pitch + ow: for input channel c and tap
(i, j), ``wide[f, q] += w[f, c, i, j] * xp[offs(c, i, j) + q]``.  oneDNN's technique, on NCHW
data: a block of 8 output channels x 2 vectors of q (32 float32 or 16 float64 outputs) stays in
16 SIMD accumulators (``_simd.Vec``: one AVX-512 register each) through the whole reduction over
(c, i, j), one flat loop over a table of window offsets; each step loads two input vectors and
broadcasts 8 weights from a packed copy (``wpk[f // 8, (c, i, j), f % 8]``, made once per call,
zero past F): 16 fused multiply-adds.  Nothing is stored until the reduction ends; then
``_from_wide_all`` drops the extra columns (pitch - OW per row) and adds the bias.

**Input gradient** (stride 1): dx is the convolution of dout, padded by (K-1)*dilation minus
the forward's padding on each side, with the flipped, transposed weights
(``pack_weights_flipped``): the same kernel.

**Weight gradient**: ``dw[f, (c, i, j)] = sum over samples and q of dwide[f, q] *
xp[offs(c, i, j) + q]`` with dwide = dout on the wide grid (zero on the extra columns): 4 output
channels x 6 taps = 24 vector accumulators of lane-wise partial sums over a group of samples
(their buffers side by side, at most ``DW_GROUP_ELEMENTS``), added up lane by lane into the
thread's partial dw at the end of each group; db is summed as in conv.py.  For many channels
(F >= 32) the filters are the vector lanes instead: conv_lanes.weight_grad_rows.

**Without AVX-512** (AVX2: 16 registers of 256 bits; ``_Plan.narrow``) the same loops run in
narrow blocks, 12 accumulators of half vectors (``_simd.yload`` and kin): the forward and dx 4
output channels x 3 vectors of 8 float32 (``_direct_sample_narrow``; per tap 3 input loads, 4
broadcasts, 12 FMAs: the loop compiles to those and nothing else, no spill), the weight gradient
2 channels x 6 taps (``_dw_blocks_narrow``).  The forward sums each output's taps in the same
order as AVX-512's blocks, so the two give the same bits.  The packed weights' shape chooses the
blocks (``packed_shape``: 2-D for the narrow ones), and the tap table's the weight gradient's
(rows of 6 taps), so a specialisation compiles only the kernel it runs.  With the filters in the
lanes (below) AVX2 has 6 positions x 16 filters for the forward and dx
(``_lanes_sample_narrow``, chosen by ``lanes_shape``'s 2-D weights), and 6 taps x 16 filters for
the weight gradient (``weight_grad_lanes``: AVX2 only).

Why not BLAS: per sample the products are small (kn2row's (F, Cg) @ (Cg, q) per tap, rowtap's
inner dimension C*KW, dw's products of 9-48 rows), and OpenBLAS spends much of its time packing
and in its edge kernels; the loops above read every input vector once per 8 output channels and
never store a partial sum.  Measured (float32, one thread, CPU time, median of 7 rounds, machine
shared): forward 1.2-1.7x faster than the BLAS modes on every 3x3 layer of ResNet-8 (batch 64)
and of the U-Net (batch 16), 1.35x / 1.07x on LeNet-5's layers at batch 64; dx as fast as the
forward (3x3 16->16 on 64x32x32: 2.5 ms against rowtap's 4.5); dw 1.2-1.9x faster than BLAS for
C*F <= 256 or C <= 4 (3x3 3->32 on 32x32: 1.7 ms against 3.2) and slower above (32->32 on 16x16:
4.5 against 3.3), hence ``_Plan``'s rules.  A call to ``_tap_offset`` inside the loop made LLVM
spill the 16 accumulators at every tap: the table of offsets keeps the body a straight run of
loads and FMAs (1.3x).  The wide grid's extra work is (pitch*OH rounded up to a strip) / (OH*OW):
6% on 32x32 with padding 1, 14% on 14x14 with padding 2, 50% on 8x8 with padding 1.
"""
import math

import numpy as np

from cnnspec.kernels._jit import jit
from cnnspec.kernels._simd import (line_offset, vadd, vfma, vlanes, vload, vsplat, vstore,
                                   vtranspose, vzero, ylanes, yload, ysplat, yzero)
from cnnspec.kernels.conv import _bias_grad_add, _split_sample, _tap_offset

BLOCK_F = 8          # output channels per register block
STRIP = 32           # outputs per block along q for float32 (2 vectors of 16 lanes; float64: 16)
NARROW_F = 4         # without AVX-512 (narrow): 4 output channels x 3 half vectors
NARROW_STRIP = 24    # (24 float32 outputs; float64: 12): _direct_sample_narrow


def direct_sizes(x_shape, w_shape, stride, pad, dilation, oh, narrow=False):
    """(packed weights, per-thread phase buffer, per-thread wide buffer), in elements, for the
    blocks of AVX-512 (8 filters x 32 outputs) or, ``narrow``, of AVX2 (4 x 24)."""
    _, c, h, w = x_shape
    f, _, kh, kw = w_shape
    block, strip = (NARROW_F, NARROW_STRIP) if narrow else (BLOCK_F, STRIP)
    wq, plane = _grid(h, w, stride, pad)
    fp = -(-f // block) * block
    qs = -(-(oh * wq) // strip) * strip
    # the last strip reads up to a strip past the last window: zeros (or finished samples'
    # values) that only reach the discarded outputs
    xp = stride[0] * stride[1] * c * plane + (kw - 1) * dilation[1] + 2 * strip
    return fp * c * kh * kw, xp, fp * qs


def packed_shape(w_shape, narrow, flipped=False):
    """The shape of the packed weights that pack_weights (pack_weights_flipped) writes and the
    drivers read: 1-D for AVX-512's blocks of 8 filters; 2-D (blocks of 4 filters, K*4) for
    AVX2's, and its two dimensions are what make the drivers run _direct_sample_narrow."""
    f, c, kh, kw = w_shape
    if flipped:
        f, c = c, f
    if not narrow:
        return (-(-f // BLOCK_F) * BLOCK_F * c * kh * kw,)
    return (-(-f // NARROW_F), NARROW_F * c * kh * kw)


def _grid(h, w, stride, pad):
    """(row pitch, plane) of the sample buffer of forward_direct.  Stride 1: rows of
    ``max(left, right)`` zeros then the W values, so that a row's trailing zeros are the next
    row's leading ones (``_pad_rows``; pitch W + max instead of W + left + right: 16 against 18
    for 14x14 with padding 2, the wide grid's extra work 14% instead of 29%), one zero row more
    at the bottom; strided: conv._split_sample's phases."""
    if stride == (1, 1):
        pitch = w + max(pad[2], pad[3])
        return pitch, (h + pad[0] + pad[1] + 1) * pitch
    hq, wq = -(-(h + pad[0] + pad[1]) // stride[0]), -(-(w + pad[2] + pad[3]) // stride[1])
    return wq, hq * wq


_grid_jit = jit(_grid)


_OFFSETS = {}


def window_offsets(x_shape, kernel, stride, pad, dilation, size):
    """The int64 table of window offsets of _grid's layout (``size`` >= C*KH*KW entries, the
    rest 0), made once per geometry and kept (read only by the kernels): making it took ~37 us
    a call, 11 calls in a ResNet-8 step, serial on two threads."""
    _, c, h, w = x_shape
    key = (c, h, w, tuple(kernel), tuple(stride), tuple(pad), tuple(dilation), size)
    offs = _OFFSETS.get(key)
    if offs is None:
        wq, plane = _grid(h, w, stride, pad)
        offs = np.zeros(size, np.int64)
        _window_offsets(c, kernel, stride, pad, dilation, wq, plane, offs)
        if len(_OFFSETS) >= 512:
            _OFFSETS.clear()
        _OFFSETS[key] = offs
    return offs


@jit
def _window_offsets(c_, kernel, stride, pad, dilation, wq, plane, offs):
    """offs[(c, i, j)] = where tap (i, j) of channel c reads for output q = 0 (_grid's layout)."""
    kh, kw = kernel
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                if stride[0] == 1 and stride[1] == 1:
                    t = i * dilation[0] * wq + j * dilation[1] + max(pad[2], pad[3]) - pad[2]
                else:
                    t = _tap_offset(i, j, c_, plane, wq, stride, dilation)
                offs[(c * kh + i) * kw + j] = t + c * plane


def phases_of(stride):
    """The drivers' ``phases`` argument: None for stride 1, else the stride.  Its type tells
    numba which fill a specialisation needs (``if phases is None`` is resolved when it
    compiles): the stride-phase split took 4 s of the first LeNet-5 step's compile, for layers
    of stride 1."""
    return None if tuple(stride) == (1, 1) else tuple(stride)


@jit
def _fill_sample(x, n, phases, pad, wq, plane, zero, xp):
    """Sample n into the buffer of _grid's layout (phases: see phases_of)."""
    if phases is None:
        _pad_rows(x, n, pad, wq, plane, zero, xp)
    else:
        _split_sample(x, n, phases, pad, zero, xp)


@jit
def _pad_rows(x, n, pad, pitch, plane, zero, xp):
    """xp[c*plane + (h + top)*pitch + s + w] = x[n, c, h, w], s = max(left, right); zeros
    elsewhere (the whole buffer is cleared when ``zero``: the first sample of a call)."""
    _, c_, h_, w_ = x.shape
    if zero:
        for e in range(xp.size):
            xp[e] = 0
    s = max(pad[2], pad[3])
    xf = x.reshape(x.size)
    for c in range(c_):
        for h in range(h_):
            src = np.uint64(((n * c_ + c) * h_ + h) * w_)
            dst = np.uint64(c * plane + (h + pad[0]) * pitch + s)
            for e in range(w_):
                xp[dst + np.uint64(e)] = xf[src + np.uint64(e)]


@jit
def pack_weights(w, wpk):
    """wpk[f // B, (c, i, j), f % B] = w[f, c, i, j], zero for f >= F in the last block: B = 8
    for a flat wpk, 4 for a 2-D one (packed_shape)."""
    f_, cg, kh, kw = w.shape
    block = NARROW_F if wpk.ndim == 2 else BLOCK_F
    flat = wpk.reshape(wpk.size)
    flat[:] = 0
    for f in range(f_):
        for c in range(cg):
            for i in range(kh):
                for j in range(kw):
                    flat[((((f // block) * cg + c) * kh + i) * kw + j) * block + f % block] = \
                        w[f, c, i, j]


@jit
def pack_weights_flipped(w, wpk):
    """pack_weights of w' (C, F, KH, KW), w'[c, f, i, j] = w[f, c, KH-1-i, KW-1-j]: the
    weights of the convolution that gives dx from dout (see backward_data_pad)."""
    f_, c_, kh, kw = w.shape
    block = NARROW_F if wpk.ndim == 2 else BLOCK_F
    flat = wpk.reshape(wpk.size)
    flat[:] = 0
    for c in range(c_):
        for f in range(f_):
            for i in range(kh):
                for j in range(kw):
                    flat[((((c // block) * f_ + f) * kh + i) * kw + j) * block + c % block] = \
                        w[f, c, kh - 1 - i, kw - 1 - j]


def backward_data_pad(kernel, pad, dilation):
    """Padding of dout for dx = conv(dout padded, w flipped) of a stride-1 convolution, or None
    where a side would be negative (padding beyond (K-1)*dilation: left to the BLAS modes)."""
    kh, kw = kernel
    ph, pw = (kh - 1) * dilation[0], (kw - 1) * dilation[1]
    new = (ph - pad[0], ph - pad[1], pw - pad[2], pw - pad[3])
    return new if min(new) >= 0 else None


@jit
def _from_wide_all(wide, qs, wq, b, n, accumulate, out):
    """out[n, f, oh, :] (+)= wide[f*qs + oh*wq : ... + OW] + b[f] (the extra columns dropped)."""
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    of = out.reshape(out.size)
    for f in range(f_):
        bias = b[f] if b.size > 0 else 0
        for rr in range(oh_):
            src = np.uint64(f * qs + rr * wq)
            dst = np.uint64(((n * f_ + f) * oh_ + rr) * ow_)
            if accumulate:
                for e in range(ow_):
                    of[dst + np.uint64(e)] += wide[src + np.uint64(e)] + bias
            else:
                for e in range(ow_):
                    of[dst + np.uint64(e)] = wide[src + np.uint64(e)] + bias


@jit
def _direct_sample(xp, wpk, offs, fp, qs, wide):
    """wide[f, q] = sum over k of wpk[f // 8, k, f % 8] * xp[offs[k] + q] for f < fp, q < qs:
    one sample, blocks of 8 channels x 2 vectors."""
    lanes = vlanes(xp)
    strip = 2 * lanes
    k_ = offs.size
    for fb in range(0, fp, 8):
        for q0 in range(0, qs, strip):
            a0 = vzero(xp)
            a1 = vzero(xp)
            a2 = vzero(xp)
            a3 = vzero(xp)
            a4 = vzero(xp)
            a5 = vzero(xp)
            a6 = vzero(xp)
            a7 = vzero(xp)
            b0 = vzero(xp)
            b1 = vzero(xp)
            b2 = vzero(xp)
            b3 = vzero(xp)
            b4 = vzero(xp)
            b5 = vzero(xp)
            b6 = vzero(xp)
            b7 = vzero(xp)
            u = fb * k_
            for k in range(k_):
                t = offs[k] + q0
                x0 = vload(xp, t)
                x1 = vload(xp, t + lanes)
                s = vsplat(wpk, u)
                a0 = vfma(a0, s, x0)
                b0 = vfma(b0, s, x1)
                s = vsplat(wpk, u + 1)
                a1 = vfma(a1, s, x0)
                b1 = vfma(b1, s, x1)
                s = vsplat(wpk, u + 2)
                a2 = vfma(a2, s, x0)
                b2 = vfma(b2, s, x1)
                s = vsplat(wpk, u + 3)
                a3 = vfma(a3, s, x0)
                b3 = vfma(b3, s, x1)
                s = vsplat(wpk, u + 4)
                a4 = vfma(a4, s, x0)
                b4 = vfma(b4, s, x1)
                s = vsplat(wpk, u + 5)
                a5 = vfma(a5, s, x0)
                b5 = vfma(b5, s, x1)
                s = vsplat(wpk, u + 6)
                a6 = vfma(a6, s, x0)
                b6 = vfma(b6, s, x1)
                s = vsplat(wpk, u + 7)
                a7 = vfma(a7, s, x0)
                b7 = vfma(b7, s, x1)
                u += 8
            d = fb * qs + q0
            vstore(wide, d, a0)
            vstore(wide, d + lanes, b0)
            vstore(wide, d + qs, a1)
            vstore(wide, d + qs + lanes, b1)
            vstore(wide, d + 2 * qs, a2)
            vstore(wide, d + 2 * qs + lanes, b2)
            vstore(wide, d + 3 * qs, a3)
            vstore(wide, d + 3 * qs + lanes, b3)
            vstore(wide, d + 4 * qs, a4)
            vstore(wide, d + 4 * qs + lanes, b4)
            vstore(wide, d + 5 * qs, a5)
            vstore(wide, d + 5 * qs + lanes, b5)
            vstore(wide, d + 6 * qs, a6)
            vstore(wide, d + 6 * qs + lanes, b6)
            vstore(wide, d + 7 * qs, a7)
            vstore(wide, d + 7 * qs + lanes, b7)


@jit
def _direct_sample_narrow(xp, wpk, offs, fp, qs, wide):
    """_direct_sample for AVX2 (16 registers of 8 float32): blocks of 4 channels x 3 half
    vectors, 12 accumulators, the 3 input vectors and a broadcast weight in the other 4
    registers; wpk's 2-D packing (packed_shape), read flat."""
    lanes = ylanes(xp)
    strip = 3 * lanes
    k_ = offs.size
    for fb in range(0, fp, 4):
        for q0 in range(0, qs, strip):
            a0 = yzero(xp)
            a1 = yzero(xp)
            a2 = yzero(xp)
            a3 = yzero(xp)
            b0 = yzero(xp)
            b1 = yzero(xp)
            b2 = yzero(xp)
            b3 = yzero(xp)
            c0 = yzero(xp)
            c1 = yzero(xp)
            c2 = yzero(xp)
            c3 = yzero(xp)
            u = fb * k_
            for k in range(k_):
                t = offs[k] + q0
                x0 = yload(xp, t)
                x1 = yload(xp, t + lanes)
                x2 = yload(xp, t + 2 * lanes)
                s = ysplat(wpk, u)
                a0 = vfma(a0, s, x0)
                b0 = vfma(b0, s, x1)
                c0 = vfma(c0, s, x2)
                s = ysplat(wpk, u + 1)
                a1 = vfma(a1, s, x0)
                b1 = vfma(b1, s, x1)
                c1 = vfma(c1, s, x2)
                s = ysplat(wpk, u + 2)
                a2 = vfma(a2, s, x0)
                b2 = vfma(b2, s, x1)
                c2 = vfma(c2, s, x2)
                s = ysplat(wpk, u + 3)
                a3 = vfma(a3, s, x0)
                b3 = vfma(b3, s, x1)
                c3 = vfma(c3, s, x2)
                u += 4
            d = fb * qs + q0
            vstore(wide, d, a0)
            vstore(wide, d + lanes, b0)
            vstore(wide, d + 2 * lanes, c0)
            vstore(wide, d + qs, a1)
            vstore(wide, d + qs + lanes, b1)
            vstore(wide, d + qs + 2 * lanes, c1)
            vstore(wide, d + 2 * qs, a2)
            vstore(wide, d + 2 * qs + lanes, b2)
            vstore(wide, d + 2 * qs + 2 * lanes, c2)
            vstore(wide, d + 3 * qs, a3)
            vstore(wide, d + 3 * qs + lanes, b3)
            vstore(wide, d + 3 * qs + 2 * lanes, c3)


@jit
def _blocks(xp, wpk, f_, oh_, wq):
    """(channels rounded up to whole blocks, the wide grid's outputs rounded up to whole
    strips) of the kernel that wpk's packing chooses (packed_shape)."""
    if wpk.ndim == 2:
        block, strip = 4, 3 * ylanes(xp)
    else:
        block, strip = 8, 2 * vlanes(xp)
    return (f_ + block - 1) // block * block, (oh_ * wq + strip - 1) // strip * strip


@jit
def _sample(xp, wpk, offs, fp, qs, wide):
    """_direct_sample, or _direct_sample_narrow for 2-D packed weights (a numba specialisation
    compiles only the one it calls: wpk.ndim is known when it compiles)."""
    if wpk.ndim == 2:
        _direct_sample_narrow(xp, wpk, offs, fp, qs, wide)
    else:
        _direct_sample(xp, wpk, offs, fp, qs, wide)


@jit
def forward_direct(x, b, kernel, pad, dilation, out, accumulate, wpk, offs, xp, wide, n0, n1):
    """out[n] (+)= conv(x[n]) + b, stride 1, for n0 <= n < n1 (groups 1); wpk from pack_weights,
    offs from window_offsets.  One driver per layout (this one and forward_direct_strided): a
    network compiles only those its layers use (the phase split alone costs 1.6 s to compile)."""
    h_, w_ = x.shape[2], x.shape[3]
    f_, oh_ = out.shape[1], out.shape[2]
    wq = w_ + max(pad[2], pad[3])
    plane = (h_ + pad[0] + pad[1] + 1) * wq
    fp, qs = _blocks(xp, wpk, f_, oh_, wq)
    for n in range(n0, n1):
        _pad_rows(x, n, pad, wq, plane, n == n0, xp)
        _sample(xp, wpk, offs, fp, qs, wide)
        _from_wide_all(wide, qs, wq, b, n, accumulate, out)


@jit
def forward_direct_strided(x, b, kernel, stride, pad, dilation, out, wpk, offs, xp, wide, n0,
                           n1):
    """out[n] = conv(x[n]) + b on conv.py's stride phases (see forward_direct)."""
    h_, w_ = x.shape[2], x.shape[3]
    f_, oh_ = out.shape[1], out.shape[2]
    wq, _ = _grid_jit(h_, w_, stride, pad)
    fp, qs = _blocks(xp, wpk, f_, oh_, wq)
    for n in range(n0, n1):
        _split_sample(x, n, stride, pad, n == n0, xp)
        _sample(xp, wpk, offs, fp, qs, wide)
        _from_wide_all(wide, qs, wq, b, n, False, out)


# -- the weight gradient ----------------------------------------------------------------------
# dw[f, (c, i, j)] = sum over samples and q of dwide[f, q] * xp[offs(c, i, j) + q], dwide = dout
# on the wide grid (zero on the extra columns and past the last row).  A block of 4 output
# channels x 4 taps is 16 vector accumulators of lane-wise partial sums over a group of samples
# (the phase buffers of the group side by side), added up lane by lane into the partial dw at
# the end of the group.

DW_BLOCK = 4         # output channels and taps per block (16 accumulators)
DW_GROUP_ELEMENTS = 1 << 18   # a group's phase and wide buffers, at most (1 MB of float32)
DW_FEW_FILTERS_ELEMENTS = 1 << 15   # ... for fewer than 8 filters (AVX2): LeNet-5's conv1 dw
# 0.64 ms a call against 0.80 with the default (groups of 3 samples against 31), and a
# workspace a tenth the size (the training-memory test: its peak 12.1 MiB against 7.9)


def weight_grad_sizes(x_shape, w_shape, stride, pad, dilation, oh, elements=None):
    """(samples per group, phase buffer per sample, wide dout per sample, per-thread total):
    the per-thread slice holds [up to 15 elements | phase buffers | wide douts | the rest of 16
    elements | 24 x 16 scratch | dw (K, F) | db] (see weight_grad_dw_offset).  The phase and
    wide buffers start on a 64-byte line (``line_offset``) and each is a whole number of
    lines: the wide douts' loads are never split over two lines (+10% on the 16-channel 3x3 dw,
    quartiles 1.07-1.13).  ``elements``: a group's phase and wide buffers at most (default
    DW_GROUP_ELEMENTS)."""
    _, c, h, w = x_shape
    f, _, kh, kw = w_shape
    _, xp, _ = direct_sizes(x_shape, w_shape, stride, pad, dilation, oh)
    xp = -(-xp // 16) * 16
    wq, _ = _grid(h, w, stride, pad)
    wide = -(-f // DW_BLOCK) * DW_BLOCK * (-(-(oh * wq) // STRIP) * STRIP)
    group = max(1, min(x_shape[0], (elements or DW_GROUP_ELEMENTS) // (xp + wide)))
    k = c * kh * kw
    return group, xp, wide, weight_grad_dw_offset(group, xp, wide) + k * f + f


def weight_grad_dw_offset(group, xp, wide):
    """Where weight_grad_direct's partial dw starts in its per-thread slice (db follows it)."""
    return 16 + group * (xp + wide) + 384


@jit
def weight_grad_direct(dout, x, kernel, stride, phases, pad, dilation, need_dw, need_db, group,
                       xp_size, wide_size, offs, buf, n0, n1):
    """The partial dw (K, F) and db (F) of samples n0 <= n < n1 in buf (see weight_grad_sizes;
    ``phases`` from phases_of);
    offs: window_offsets padded to a multiple of 6 taps (the extra ones read the first window,
    their sums are discarded): flat for AVX-512's blocks of 4 channels x 6 taps, as rows of 6
    taps (2-D) for AVX2's of 2 channels x 6 taps (as the packed weights' shape chooses the
    forward's blocks: a specialisation compiles only the blocks it runs)."""
    lay = _dw_layout(dout, x, kernel, stride, pad, group, xp_size, wide_size, buf)
    taps = offs.reshape(offs.size)
    for g0 in range(n0, n1, group):
        g1 = min(n1, g0 + group)
        _dw_fill(dout, x, phases, pad, need_dw, need_db, group, xp_size, wide_size, buf, lay,
                 n0, g0, g1)
        if not need_dw:
            continue
        if offs.ndim == 2:
            _dw_blocks_narrow(buf, taps, lay, g1 - g0, xp_size, wide_size, dout.shape[1])
        else:
            _dw_blocks(buf, taps, lay, g1 - g0, xp_size, wide_size, dout.shape[1])


@jit
def _dw_layout(dout, x, kernel, stride, pad, group, xp_size, wide_size, buf):
    """(wq, plane, qs, K, K rounded up to 6 taps, start, o_wide, o_tmp, o_dw, OH*wq) of
    weight_grad_sizes' slice (the partial dw at o_dw, db after it), the partial dw and db
    cleared."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_ = dout.shape[1], dout.shape[2]
    wq, plane = _grid_jit(h_, w_, stride, pad)
    lanes = vlanes(buf)
    qs = (oh_ * wq + 2 * lanes - 1) // (2 * lanes) * (2 * lanes)
    k_ = c_ * kernel[0] * kernel[1]
    kp = (k_ + 5) // 6 * 6
    start = line_offset(buf)               # the phase buffers start on a line
    o_wide = start + group * xp_size
    o_tmp = 16 + group * (xp_size + wide_size)
    o_dw = o_tmp + 384
    for e in range(o_dw, o_dw + k_ * f_ + f_):
        buf[e] = 0
    return wq, plane, qs, k_, kp, start, o_wide, o_tmp, o_dw, oh_ * wq


@jit
def _dw_fill(dout, x, phases, pad, need_dw, need_db, group, xp_size, wide_size, buf, lay, n0,
             g0, g1):
    """db of samples g0 <= n < g1 added up; with need_dw their phase buffers and wide douts
    filled."""
    wq, plane, qs, k_, _, start, o_wide, _, o_dw, _ = lay
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    dbp = buf[o_dw + k_ * f_:o_dw + k_ * f_ + f_]
    df = dout.reshape(dout.size)
    for n in range(g0, g1):
        if need_db:
            _bias_grad_add(dout, n, dbp)
        if not need_dw:
            continue
        _fill_sample(x, n, phases, pad, wq, plane, g0 == n0,
                     buf[start + (n - g0) * xp_size:start + (n - g0 + 1) * xp_size])
        if g0 == n0 and n == g0:     # the extra columns stay zero: every sample writes
            for e in range(o_wide, o_wide + group * wide_size):   # the same places
                buf[e] = 0
        # unsigned indices (no negative-index test: the loop vectorises) and no clearing
        # per sample: the copy took 0.6 of a 3x3 3->16 dw's 1.0 ms at 64x32x32, then 0.25
        base = np.uint64(o_wide + (n - g0) * wide_size)
        for f in range(f_):
            for r in range(oh_):
                src = np.uint64(((n * f_ + f) * oh_ + r) * ow_)
                dst = base + np.uint64(f * qs + r * wq)
                for e in range(ow_):
                    buf[dst + np.uint64(e)] = df[src + np.uint64(e)]


@jit
def _dw_blocks(buf, offs, lay, count, xp_size, wide_size, f_):
    """The group's dw, blocks of 4 channels x 6 taps, added into the partial dw."""
    _, _, qs, k_, kp, start, o_wide, o_tmp, o_dw, _ = lay
    lanes = vlanes(buf)
    fp = (f_ + 3) // 4 * 4
    dwp = buf[o_dw:o_dw + k_ * f_]
    for fb in range(0, fp, 4):
        for kb in range(0, kp, 6):
            a00 = vzero(buf)
            a01 = vzero(buf)
            a02 = vzero(buf)
            a03 = vzero(buf)
            a10 = vzero(buf)
            a11 = vzero(buf)
            a12 = vzero(buf)
            a13 = vzero(buf)
            a20 = vzero(buf)
            a21 = vzero(buf)
            a22 = vzero(buf)
            a23 = vzero(buf)
            a30 = vzero(buf)
            a31 = vzero(buf)
            a32 = vzero(buf)
            a33 = vzero(buf)
            a40 = vzero(buf)
            a41 = vzero(buf)
            a42 = vzero(buf)
            a43 = vzero(buf)
            a50 = vzero(buf)
            a51 = vzero(buf)
            a52 = vzero(buf)
            a53 = vzero(buf)
            for n in range(count):
                t0, t1, t2, t3, t4, t5 = _six_taps(start + n * xp_size, offs, kb)
                u = o_wide + n * wide_size + fb * qs
                for q in range(0, qs, lanes):
                    y0 = vload(buf, u + q)
                    y1 = vload(buf, u + qs + q)
                    y2 = vload(buf, u + 2 * qs + q)
                    y3 = vload(buf, u + 3 * qs + q)
                    v = vload(buf, t0 + q)
                    a00 = vfma(a00, y0, v)
                    a01 = vfma(a01, y1, v)
                    a02 = vfma(a02, y2, v)
                    a03 = vfma(a03, y3, v)
                    v = vload(buf, t1 + q)
                    a10 = vfma(a10, y0, v)
                    a11 = vfma(a11, y1, v)
                    a12 = vfma(a12, y2, v)
                    a13 = vfma(a13, y3, v)
                    v = vload(buf, t2 + q)
                    a20 = vfma(a20, y0, v)
                    a21 = vfma(a21, y1, v)
                    a22 = vfma(a22, y2, v)
                    a23 = vfma(a23, y3, v)
                    v = vload(buf, t3 + q)
                    a30 = vfma(a30, y0, v)
                    a31 = vfma(a31, y1, v)
                    a32 = vfma(a32, y2, v)
                    a33 = vfma(a33, y3, v)
                    v = vload(buf, t4 + q)
                    a40 = vfma(a40, y0, v)
                    a41 = vfma(a41, y1, v)
                    a42 = vfma(a42, y2, v)
                    a43 = vfma(a43, y3, v)
                    v = vload(buf, t5 + q)
                    a50 = vfma(a50, y0, v)
                    a51 = vfma(a51, y1, v)
                    a52 = vfma(a52, y2, v)
                    a53 = vfma(a53, y3, v)
            # tmp[(tap, channel), lane], then lane sums into dw[(kb + tap), fb + channel]
            vstore(buf, o_tmp + 0 * lanes, a00)
            vstore(buf, o_tmp + 1 * lanes, a01)
            vstore(buf, o_tmp + 2 * lanes, a02)
            vstore(buf, o_tmp + 3 * lanes, a03)
            vstore(buf, o_tmp + 4 * lanes, a10)
            vstore(buf, o_tmp + 5 * lanes, a11)
            vstore(buf, o_tmp + 6 * lanes, a12)
            vstore(buf, o_tmp + 7 * lanes, a13)
            vstore(buf, o_tmp + 8 * lanes, a20)
            vstore(buf, o_tmp + 9 * lanes, a21)
            vstore(buf, o_tmp + 10 * lanes, a22)
            vstore(buf, o_tmp + 11 * lanes, a23)
            vstore(buf, o_tmp + 12 * lanes, a30)
            vstore(buf, o_tmp + 13 * lanes, a31)
            vstore(buf, o_tmp + 14 * lanes, a32)
            vstore(buf, o_tmp + 15 * lanes, a33)
            vstore(buf, o_tmp + 16 * lanes, a40)
            vstore(buf, o_tmp + 17 * lanes, a41)
            vstore(buf, o_tmp + 18 * lanes, a42)
            vstore(buf, o_tmp + 19 * lanes, a43)
            vstore(buf, o_tmp + 20 * lanes, a50)
            vstore(buf, o_tmp + 21 * lanes, a51)
            vstore(buf, o_tmp + 22 * lanes, a52)
            vstore(buf, o_tmp + 23 * lanes, a53)
            _dw_add(buf, o_tmp, lanes, 4, kb, fb, k_, f_, dwp)


@jit
def _six_taps(base, offs, kb):
    """Where taps kb .. kb + 5 read a sample's buffer that starts at base (or positions kb ..
    kb + 5 of a table of positions, base 0)."""
    return (base + offs[kb], base + offs[kb + 1], base + offs[kb + 2], base + offs[kb + 3],
            base + offs[kb + 4], base + offs[kb + 5])


@jit
def _dw_add(buf, o_tmp, lanes, block, kb, fb, k_, f_, dwp):
    """dwp[(kb + tap) * F + fb + channel] += the lane sum of the block's vector
    buf[o_tmp + (tap * block + channel) * lanes ...] (6 taps x ``block`` channels)."""
    for rk in range(min(6, k_ - kb)):
        for rf in range(min(block, f_ - fb)):
            src = o_tmp + (rk * block + rf) * lanes
            s = buf[src]
            for e in range(1, lanes):
                s += buf[src + e]
            dwp[(kb + rk) * f_ + fb + rf] += s


@jit
def _dw_blocks_narrow(buf, offs, lay, count, xp_size, wide_size, f_):
    """_dw_blocks for AVX2: blocks of 2 channels x 6 taps, 12 accumulators of half vectors
    (the two channels' dout vectors and one input vector in the other 3 registers)."""
    _, _, qs, k_, kp, start, o_wide, o_tmp, o_dw, q_ = lay
    lanes = ylanes(buf)
    qn = (q_ + lanes - 1) // lanes * lanes     # the rest of the strips' zeros add nothing
    fp = (f_ + 1) // 2 * 2
    dwp = buf[o_dw:o_dw + k_ * f_]
    for fb in range(0, fp, 2):
        for kb in range(0, kp, 6):
            a00 = yzero(buf)
            a01 = yzero(buf)
            a10 = yzero(buf)
            a11 = yzero(buf)
            a20 = yzero(buf)
            a21 = yzero(buf)
            a30 = yzero(buf)
            a31 = yzero(buf)
            a40 = yzero(buf)
            a41 = yzero(buf)
            a50 = yzero(buf)
            a51 = yzero(buf)
            for n in range(count):
                t0, t1, t2, t3, t4, t5 = _six_taps(start + n * xp_size, offs, kb)
                u = o_wide + n * wide_size + fb * qs
                for q in range(0, qn, lanes):
                    y0 = yload(buf, u + q)
                    y1 = yload(buf, u + qs + q)
                    v = yload(buf, t0 + q)
                    a00 = vfma(a00, y0, v)
                    a01 = vfma(a01, y1, v)
                    v = yload(buf, t1 + q)
                    a10 = vfma(a10, y0, v)
                    a11 = vfma(a11, y1, v)
                    v = yload(buf, t2 + q)
                    a20 = vfma(a20, y0, v)
                    a21 = vfma(a21, y1, v)
                    v = yload(buf, t3 + q)
                    a30 = vfma(a30, y0, v)
                    a31 = vfma(a31, y1, v)
                    v = yload(buf, t4 + q)
                    a40 = vfma(a40, y0, v)
                    a41 = vfma(a41, y1, v)
                    v = yload(buf, t5 + q)
                    a50 = vfma(a50, y0, v)
                    a51 = vfma(a51, y1, v)
            vstore(buf, o_tmp + 0 * lanes, a00)
            vstore(buf, o_tmp + 1 * lanes, a01)
            vstore(buf, o_tmp + 2 * lanes, a10)
            vstore(buf, o_tmp + 3 * lanes, a11)
            vstore(buf, o_tmp + 4 * lanes, a20)
            vstore(buf, o_tmp + 5 * lanes, a21)
            vstore(buf, o_tmp + 6 * lanes, a30)
            vstore(buf, o_tmp + 7 * lanes, a31)
            vstore(buf, o_tmp + 8 * lanes, a40)
            vstore(buf, o_tmp + 9 * lanes, a41)
            vstore(buf, o_tmp + 10 * lanes, a50)
            vstore(buf, o_tmp + 11 * lanes, a51)
            _dw_add(buf, o_tmp, lanes, 2, kb, fb, k_, f_, dwp)


# -- the forward with the filters in the vector lanes (small planes; large ones of 64 filters) --
# out^T[p, f] = sum over k = (c, i, j) of xp[offs[k] + pos[p]] * wt[k, f]: blocks of 6 output
# positions x 4 vectors of filters (64 float32 filters) = 24 accumulators; per k, 4 vector loads
# of the packed weights and 6 broadcasts of the input.  Any output position can join a block
# (the positions are a table), so nothing of the wide grid is computed: on 8x8 planes the wide
# grid computes 96 outputs per 64, on 4x4 32 per 16.  Each accumulator sums its k in order with
# one FMA per term, as _direct_sample does (the same values).  Without AVX-512, blocks of 6
# positions x 2 half vectors (16 float32 filters) = 12 accumulators (_lanes_sample_narrow; the
# packed weights 2-D: lanes_shape).

LANES_POS = 6        # output positions per block
LANES_FILTERS = 64   # filters per block, float32 (4 vectors; float64: 2 blocks of 32)
LANES_CHUNK = 64     # taps per pass over the tile: their weights (16 KB) stay in L1
NARROW_LANES_FILTERS = 16    # AVX2: 2 half vectors of float32 (float64: 2 blocks of 8)
NARROW_LANES_CHUNK = 256     # taps per pass: 16 KB of weights, as above


def lanes_sizes(x_shape, w_shape, stride, pad, dilation, oh, ow, narrow=False):
    """(packed weights, per-thread phase buffer, per-thread tile) in elements for
    forward_lanes: weights (C*KH*KW, Fp), tile (P6, Fp); Fp = F rounded up to LANES_FILTERS
    (``narrow``: NARROW_LANES_FILTERS), P6 = OH*OW rounded up to LANES_POS."""
    _, xp, _ = direct_sizes(x_shape, w_shape, stride, pad, dilation, oh)
    packed = math.prod(lanes_shape(w_shape, narrow))
    fp = packed // (x_shape[1] * w_shape[2] * w_shape[3])
    p6 = -(-(oh * ow) // LANES_POS) * LANES_POS
    return packed, xp, p6 * fp


def lanes_shape(w_shape, narrow, flipped=False):
    """The shape of the weights that pack_weights_lanes writes and forward_lanes reads, rows
    k = (c, i, j) of Fp filters (``flipped``, dx's: k = (f, i, j), rows of C): flat for AVX-512's
    blocks, 2-D for AVX2's (the two dimensions make forward_lanes run _lanes_sample_narrow)."""
    f, c, kh, kw = w_shape
    if flipped:
        f, c = c, f
    block = NARROW_LANES_FILTERS if narrow else LANES_FILTERS
    fp = -(-f // block) * block
    return (c * kh * kw, fp) if narrow else (c * kh * kw * fp,)


def lanes_positions(x_shape, stride, pad, oh, ow):
    """int64 table of where output p = oh*OW + ow reads in _grid's layout (oh*pitch + ow), padded
    to a multiple of LANES_POS with the last position (computed twice, stored once)."""
    wq, _ = _grid(x_shape[2], x_shape[3], stride, pad)
    p = oh * ow
    pos = np.empty(-(-p // LANES_POS) * LANES_POS, np.int64)
    pos[:p] = (np.arange(oh)[:, None] * wq + np.arange(ow)[None, :]).reshape(-1)
    pos[p:] = pos[p - 1]
    return pos


@jit
def pack_weights_lanes(w, flipped, wt):
    """wt[k, o] (rows of Fp = O rounded up to the blocks of lanes_shape, zero past O): the
    forward's w[o, (c, i, j)], or (``flipped``, dx's convolution of dout) w[f, o, KH-1-i,
    KW-1-j] at k = (f, i, j)."""
    f_, c_, kh, kw = w.shape
    o_, r_ = (c_, f_) if flipped else (f_, c_)
    fp = _lanes_filters(o_, wt)
    wo = wt.reshape(wt.size)
    # flat unsigned offsets (signed ones made numba test each for a negative value), row by row
    # of wt (each written along memory, its padding columns zeroed): 2.3-3x faster than by rows
    # of w' (ResNet-8's 3x3 64->64 57 -> 19-21 us a call, serial on two threads)
    t_ = kh * kw
    wf = np.ascontiguousarray(w).reshape(f_ * c_ * t_)
    for a in range(r_):
        for t in range(t_):
            dst = np.uint64((a * t_ + t) * fp)
            if flipped:                          # wt[(f, i, j), c] = w[f, c, KH-1-i, KW-1-j]
                src = np.uint64(a * c_ * t_ + t_ - 1 - t)
                for b in range(o_):
                    wo[dst + np.uint64(b)] = wf[src + np.uint64(b * t_)]
            else:                                # wt[(c, i, j), f] = w[f, c, i, j]
                src = np.uint64(a * t_ + t)
                for b in range(o_):
                    wo[dst + np.uint64(b)] = wf[src + np.uint64(b * c_ * t_)]
            for b in range(o_, fp):
                wo[dst + np.uint64(b)] = 0


@jit
def _lanes_filters(o_, wt):
    """Fp: O output channels rounded up to the blocks that wt's packing chooses (lanes_shape)."""
    if wt.ndim == 2:
        return (o_ + NARROW_LANES_FILTERS - 1) // NARROW_LANES_FILTERS * NARROW_LANES_FILTERS
    return (o_ + LANES_FILTERS - 1) // LANES_FILTERS * LANES_FILTERS


@jit
def forward_lanes(x, b, stride, phases, pad, out, accumulate, wt, offs, pos, xp, tile, n0, n1):
    """out[n] (+)= conv(x[n]) + b for n0 <= n < n1 (groups 1, any stride: _grid's layout,
    ``phases`` from phases_of); wt from pack_weights_lanes (its shape, lanes_shape, chooses the
    blocks), offs from window_offsets, pos from lanes_positions."""
    wq, plane = _grid_jit(x.shape[2], x.shape[3], stride, pad)
    fp = _lanes_filters(out.shape[1], wt)
    for n in range(n0, n1):
        _fill_sample(x, n, phases, pad, wq, plane, n == n0, xp)
        _lanes_one(xp, wt, offs, pos, fp, tile, b, n, accumulate, out)


@jit
def _lanes_one(xp, wt, offs, pos, fp, tile, b, n, accumulate, out):
    """One sample, its buffer filled: the blocks that wt's packing chooses (a numba
    specialisation compiles only the one it calls: wt.ndim is known when it compiles), then
    out[n] from the tile."""
    wf = wt.reshape(wt.size)
    if wt.ndim == 2:
        _lanes_sample_narrow(xp, wf, offs, pos, fp, tile)
    else:
        _lanes_sample(xp, wf, offs, pos, fp, tile)
    _lanes_out(tile, fp, b, n, accumulate, out)


@jit
def _lanes_sample(xp, wt, offs, pos, fp, tile):
    """tile[p, f] = one sample's sums (rows of fp), in blocks of 6 positions x 4 vectors of
    filters, the taps in chunks of LANES_CHUNK (the tile holds the partial sums between)."""
    lanes = vlanes(xp)
    k_ = offs.size
    for fb in range(0, fp, 4 * lanes):
        for k0 in range(0, k_, LANES_CHUNK):
            k1 = min(k_, k0 + LANES_CHUNK)
            for p0 in range(0, pos.size, 6):
                q0, q1, q2, q3, q4, q5 = _six_taps(0, pos, p0)
                d = p0 * fp + fb
                a00 = vzero(xp) if k0 == 0 else vload(tile, d)
                a01 = vzero(xp) if k0 == 0 else vload(tile, d + 1 * lanes)
                a02 = vzero(xp) if k0 == 0 else vload(tile, d + 2 * lanes)
                a03 = vzero(xp) if k0 == 0 else vload(tile, d + 3 * lanes)
                a10 = vzero(xp) if k0 == 0 else vload(tile, d + 1 * fp)
                a11 = vzero(xp) if k0 == 0 else vload(tile, d + 1 * fp + 1 * lanes)
                a12 = vzero(xp) if k0 == 0 else vload(tile, d + 1 * fp + 2 * lanes)
                a13 = vzero(xp) if k0 == 0 else vload(tile, d + 1 * fp + 3 * lanes)
                a20 = vzero(xp) if k0 == 0 else vload(tile, d + 2 * fp)
                a21 = vzero(xp) if k0 == 0 else vload(tile, d + 2 * fp + 1 * lanes)
                a22 = vzero(xp) if k0 == 0 else vload(tile, d + 2 * fp + 2 * lanes)
                a23 = vzero(xp) if k0 == 0 else vload(tile, d + 2 * fp + 3 * lanes)
                a30 = vzero(xp) if k0 == 0 else vload(tile, d + 3 * fp)
                a31 = vzero(xp) if k0 == 0 else vload(tile, d + 3 * fp + 1 * lanes)
                a32 = vzero(xp) if k0 == 0 else vload(tile, d + 3 * fp + 2 * lanes)
                a33 = vzero(xp) if k0 == 0 else vload(tile, d + 3 * fp + 3 * lanes)
                a40 = vzero(xp) if k0 == 0 else vload(tile, d + 4 * fp)
                a41 = vzero(xp) if k0 == 0 else vload(tile, d + 4 * fp + 1 * lanes)
                a42 = vzero(xp) if k0 == 0 else vload(tile, d + 4 * fp + 2 * lanes)
                a43 = vzero(xp) if k0 == 0 else vload(tile, d + 4 * fp + 3 * lanes)
                a50 = vzero(xp) if k0 == 0 else vload(tile, d + 5 * fp)
                a51 = vzero(xp) if k0 == 0 else vload(tile, d + 5 * fp + 1 * lanes)
                a52 = vzero(xp) if k0 == 0 else vload(tile, d + 5 * fp + 2 * lanes)
                a53 = vzero(xp) if k0 == 0 else vload(tile, d + 5 * fp + 3 * lanes)
                u = k0 * fp + fb
                for k in range(k0, k1):
                    t = offs[np.uint64(k)]      # unsigned: no negative-index test
                    w0 = vload(wt, u)
                    w1 = vload(wt, u + lanes)
                    w2 = vload(wt, u + 2 * lanes)
                    w3 = vload(wt, u + 3 * lanes)
                    s = vsplat(xp, t + q0)
                    a00 = vfma(a00, s, w0)
                    a01 = vfma(a01, s, w1)
                    a02 = vfma(a02, s, w2)
                    a03 = vfma(a03, s, w3)
                    s = vsplat(xp, t + q1)
                    a10 = vfma(a10, s, w0)
                    a11 = vfma(a11, s, w1)
                    a12 = vfma(a12, s, w2)
                    a13 = vfma(a13, s, w3)
                    s = vsplat(xp, t + q2)
                    a20 = vfma(a20, s, w0)
                    a21 = vfma(a21, s, w1)
                    a22 = vfma(a22, s, w2)
                    a23 = vfma(a23, s, w3)
                    s = vsplat(xp, t + q3)
                    a30 = vfma(a30, s, w0)
                    a31 = vfma(a31, s, w1)
                    a32 = vfma(a32, s, w2)
                    a33 = vfma(a33, s, w3)
                    s = vsplat(xp, t + q4)
                    a40 = vfma(a40, s, w0)
                    a41 = vfma(a41, s, w1)
                    a42 = vfma(a42, s, w2)
                    a43 = vfma(a43, s, w3)
                    s = vsplat(xp, t + q5)
                    a50 = vfma(a50, s, w0)
                    a51 = vfma(a51, s, w1)
                    a52 = vfma(a52, s, w2)
                    a53 = vfma(a53, s, w3)
                    u += fp
                vstore(tile, d, a00)
                vstore(tile, d + 1 * lanes, a01)
                vstore(tile, d + 2 * lanes, a02)
                vstore(tile, d + 3 * lanes, a03)
                vstore(tile, d + 1 * fp, a10)
                vstore(tile, d + 1 * fp + 1 * lanes, a11)
                vstore(tile, d + 1 * fp + 2 * lanes, a12)
                vstore(tile, d + 1 * fp + 3 * lanes, a13)
                vstore(tile, d + 2 * fp, a20)
                vstore(tile, d + 2 * fp + 1 * lanes, a21)
                vstore(tile, d + 2 * fp + 2 * lanes, a22)
                vstore(tile, d + 2 * fp + 3 * lanes, a23)
                vstore(tile, d + 3 * fp, a30)
                vstore(tile, d + 3 * fp + 1 * lanes, a31)
                vstore(tile, d + 3 * fp + 2 * lanes, a32)
                vstore(tile, d + 3 * fp + 3 * lanes, a33)
                vstore(tile, d + 4 * fp, a40)
                vstore(tile, d + 4 * fp + 1 * lanes, a41)
                vstore(tile, d + 4 * fp + 2 * lanes, a42)
                vstore(tile, d + 4 * fp + 3 * lanes, a43)
                vstore(tile, d + 5 * fp, a50)
                vstore(tile, d + 5 * fp + 1 * lanes, a51)
                vstore(tile, d + 5 * fp + 2 * lanes, a52)
                vstore(tile, d + 5 * fp + 3 * lanes, a53)


@jit
def _lanes_sample_narrow(xp, wt, offs, pos, fp, tile):
    """_lanes_sample for AVX2 (16 registers of 8 float32): blocks of 6 positions x 2 half
    vectors of filters, 12 accumulators, the 2 weight vectors and a broadcast input in the other
    3 registers; the taps in chunks of NARROW_LANES_CHUNK."""
    lanes = ylanes(xp)
    k_ = offs.size
    for fb in range(0, fp, 2 * lanes):
        for k0 in range(0, k_, NARROW_LANES_CHUNK):
            k1 = min(k_, k0 + NARROW_LANES_CHUNK)
            for p0 in range(0, pos.size, 6):
                q0, q1, q2, q3, q4, q5 = _six_taps(0, pos, p0)
                d = p0 * fp + fb
                a00 = yzero(xp) if k0 == 0 else yload(tile, d)
                a01 = yzero(xp) if k0 == 0 else yload(tile, d + lanes)
                a10 = yzero(xp) if k0 == 0 else yload(tile, d + 1 * fp)
                a11 = yzero(xp) if k0 == 0 else yload(tile, d + 1 * fp + lanes)
                a20 = yzero(xp) if k0 == 0 else yload(tile, d + 2 * fp)
                a21 = yzero(xp) if k0 == 0 else yload(tile, d + 2 * fp + lanes)
                a30 = yzero(xp) if k0 == 0 else yload(tile, d + 3 * fp)
                a31 = yzero(xp) if k0 == 0 else yload(tile, d + 3 * fp + lanes)
                a40 = yzero(xp) if k0 == 0 else yload(tile, d + 4 * fp)
                a41 = yzero(xp) if k0 == 0 else yload(tile, d + 4 * fp + lanes)
                a50 = yzero(xp) if k0 == 0 else yload(tile, d + 5 * fp)
                a51 = yzero(xp) if k0 == 0 else yload(tile, d + 5 * fp + lanes)
                u = k0 * fp + fb
                for k in range(k0, k1):
                    t = offs[np.uint64(k)]      # unsigned: no negative-index test
                    w0 = yload(wt, u)
                    w1 = yload(wt, u + lanes)
                    s = ysplat(xp, t + q0)
                    a00 = vfma(a00, s, w0)
                    a01 = vfma(a01, s, w1)
                    s = ysplat(xp, t + q1)
                    a10 = vfma(a10, s, w0)
                    a11 = vfma(a11, s, w1)
                    s = ysplat(xp, t + q2)
                    a20 = vfma(a20, s, w0)
                    a21 = vfma(a21, s, w1)
                    s = ysplat(xp, t + q3)
                    a30 = vfma(a30, s, w0)
                    a31 = vfma(a31, s, w1)
                    s = ysplat(xp, t + q4)
                    a40 = vfma(a40, s, w0)
                    a41 = vfma(a41, s, w1)
                    s = ysplat(xp, t + q5)
                    a50 = vfma(a50, s, w0)
                    a51 = vfma(a51, s, w1)
                    u += fp
                vstore(tile, d, a00)
                vstore(tile, d + lanes, a01)
                vstore(tile, d + 1 * fp, a10)
                vstore(tile, d + 1 * fp + lanes, a11)
                vstore(tile, d + 2 * fp, a20)
                vstore(tile, d + 2 * fp + lanes, a21)
                vstore(tile, d + 3 * fp, a30)
                vstore(tile, d + 3 * fp + lanes, a31)
                vstore(tile, d + 4 * fp, a40)
                vstore(tile, d + 4 * fp + lanes, a41)
                vstore(tile, d + 5 * fp, a50)
                vstore(tile, d + 5 * fp + lanes, a51)


@jit
def _lanes_out(tile, fp, b, n, accumulate, out):
    """out[n, f, p] (+)= tile[p, f] + b[f]: blocks of lanes positions x lanes filters by vector
    transposes (_simd.vtranspose), then the bias added along the rows; the last positions (and
    a bias with ``accumulate``, which no caller passes) one by one, unsigned indices.  Scalar
    copies throughout took 20% of the 3x3 64->64 forward on 56x56 (strided reads of the tile)."""
    f_, p_ = out.shape[1], out.shape[2] * out.shape[3]
    lanes = vlanes(tile)
    of = out.reshape(out.size)
    base = n * f_ * p_
    pv = 0 if accumulate and b.size > 0 else p_ // lanes * lanes
    for p0 in range(0, pv, lanes):
        for f0 in range(0, f_, lanes):
            vtranspose(tile, p0 * fp + f0, fp, of, base + f0 * p_ + p0, p_, 0,
                       min(lanes, f_ - f0), accumulate)
    if b.size > 0 and pv > 0:
        for f in range(f_):
            bias = b[f]
            row = of[base + f * p_:base + f * p_ + pv]
            for p in range(pv):
                row[p] += bias
    for f in range(f_):
        bias = b[f] if b.size > 0 else 0
        dst = np.uint64(base + f * p_)
        src = np.uint64(f)
        step = np.uint64(fp)
        if accumulate:
            for p in range(pv, p_):
                of[dst + np.uint64(p)] += tile[src + np.uint64(p) * step] + bias
        else:
            for p in range(pv, p_):
                of[dst + np.uint64(p)] = tile[src + np.uint64(p) * step] + bias


# -- the weight gradient with the filters in the vector lanes (AVX2) --
# dw^T[k, f] = sum over samples and positions p of xp[offs[k] + pos[p]] * dout^T[p, f]: blocks of
# 6 taps x 2 half vectors of filters (16 float32 filters) = 12 accumulators; per position, 2
# vector loads of the sample's dout^T (transposed once per sample) and 6 broadcasts of the
# input.  The positions are the outputs' own (lanes_positions), so nothing of the wide grid is
# summed (the blocked sums above sum it: 1.14x the outputs on the bench's 5x5, 1.5x on 8x8).

LANES_DW_RUN = 256   # positions summed in one chain before their sums go to dw (see below)


def lanes_dw_sizes(x_shape, w_shape, stride, pad, dilation, oh, ow):
    """(the per-thread buffer, where its partial dw^T starts, where its db starts) in elements
    for weight_grad_lanes: the sample's phase buffer (rounded up to 16), dout^T (OH*OW rows of
    F), dw^T (C*KH*KW rounded up to 6 rows of F; the first C*KH*KW rows are the partial, in
    conv's GATHER layout) and db (F)."""
    f, c, kh, kw = w_shape
    _, xp, _ = direct_sizes(x_shape, w_shape, stride, pad, dilation, oh)
    xp = -(-xp // 16) * 16
    o_dw = xp + oh * ow * f
    o_db = o_dw + -(-(c * kh * kw) // 6) * 6 * f
    return o_db + f, o_dw, o_db


@jit
def weight_grad_lanes(dout, x, stride, phases, pad, need_dw, need_db, offs, buf, o_dw, o_db, n0,
                      n1):
    """The partial dw^T (rows k = (c, i, j) of F) and db of samples n0 <= n < n1 in buf (laid
    out by lanes_dw_sizes), F a multiple of 16, ``phases`` from phases_of; offs from
    window_offsets, its size C*KH*KW rounded up to 6 (the extra rows' sums are dropped)."""
    wq, plane = _grid_jit(x.shape[2], x.shape[3], stride, pad)
    xp, dt, dwt, db, pos = _dw_lanes_start(dout, wq, buf, o_dw, o_db)
    for n in range(n0, n1):
        if need_db:
            _bias_grad_add(dout, n, db)
        if need_dw:
            _fill_sample(x, n, phases, pad, wq, plane, n == n0, xp)
            _transpose_out(dout, n, dt)
            _dw_lanes_sample(xp, dt, offs, pos, dout.shape[1], dwt)


@jit
def _dw_lanes_start(dout, wq, buf, o_dw, o_db):
    """buf's views (the phase buffer, dout^T, dw^T, db), the partial sums zeroed, and the
    table of where output p reads in _grid's layout (oh*pitch + ow)."""
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    p_ = oh_ * ow_
    dwt = buf[o_dw:o_db]
    db = buf[o_db:o_db + f_]
    for e in range(dwt.size):
        dwt[e] = 0
    for f in range(f_):
        db[f] = 0
    pos = np.empty(p_, np.int64)
    for p in range(p_):
        pos[p] = p // ow_ * wq + p % ow_
    return buf[:o_dw - p_ * f_], buf[o_dw - p_ * f_:o_dw], dwt, db, pos


@jit
def _transpose_out(dout, n, dt):
    """dt[p, f] = dout[n, f, p]: blocks of lanes x lanes by vector transposes (F a multiple of
    the lanes), the last positions one by one."""
    f_, p_ = dout.shape[1], dout.shape[2] * dout.shape[3]
    lanes = vlanes(dt)
    src = dout.reshape(dout.size)
    base = n * f_ * p_
    pv = p_ // lanes * lanes
    for p0 in range(0, pv, lanes):
        for f0 in range(0, f_, lanes):
            vtranspose(src, base + f0 * p_ + p0, p_, dt, p0 * f_ + f0, f_, 0, lanes, False)
    for p in range(pv, p_):
        for f in range(f_):
            dt[p * f_ + f] = src[base + f * p_ + p]


@jit
def _dw_lanes_sample(xp, dt, offs, pos, f_, dwt):
    """dwt[k, f] += sum over p of xp[offs[k] + pos[p]] * dt[p, f], one sample: blocks of 6 taps
    x 2 half vectors of filters (12 accumulators), summing runs of LANES_DW_RUN positions in
    order, each run's sums then added to dwt (a run of a whole sample's 1,024 positions summed
    in one chain had 20x the rounding error of the other paths)."""
    lanes = ylanes(xp)
    p_ = pos.size
    for k0 in range(0, offs.size, 6):
        t0, t1, t2, t3, t4, t5 = _six_taps(0, offs, k0)
        for fb in range(0, f_, 2 * lanes):
            for p0 in range(0, p_, LANES_DW_RUN):
                a00 = yzero(xp)
                a01 = yzero(xp)
                a10 = yzero(xp)
                a11 = yzero(xp)
                a20 = yzero(xp)
                a21 = yzero(xp)
                a30 = yzero(xp)
                a31 = yzero(xp)
                a40 = yzero(xp)
                a41 = yzero(xp)
                a50 = yzero(xp)
                a51 = yzero(xp)
                u = p0 * f_ + fb
                for p in range(p0, min(p_, p0 + LANES_DW_RUN)):
                    q = pos[np.uint64(p)]
                    y0 = yload(dt, u)
                    y1 = yload(dt, u + lanes)
                    s = ysplat(xp, t0 + q)
                    a00 = vfma(a00, s, y0)
                    a01 = vfma(a01, s, y1)
                    s = ysplat(xp, t1 + q)
                    a10 = vfma(a10, s, y0)
                    a11 = vfma(a11, s, y1)
                    s = ysplat(xp, t2 + q)
                    a20 = vfma(a20, s, y0)
                    a21 = vfma(a21, s, y1)
                    s = ysplat(xp, t3 + q)
                    a30 = vfma(a30, s, y0)
                    a31 = vfma(a31, s, y1)
                    s = ysplat(xp, t4 + q)
                    a40 = vfma(a40, s, y0)
                    a41 = vfma(a41, s, y1)
                    s = ysplat(xp, t5 + q)
                    a50 = vfma(a50, s, y0)
                    a51 = vfma(a51, s, y1)
                    u += f_
                d = k0 * f_ + fb
                _add_to(dwt, d, lanes, a00)
                _add_to(dwt, d + lanes, lanes, a01)
                _add_to(dwt, d + f_, lanes, a10)
                _add_to(dwt, d + f_ + lanes, lanes, a11)
                _add_to(dwt, d + 2 * f_, lanes, a20)
                _add_to(dwt, d + 2 * f_ + lanes, lanes, a21)
                _add_to(dwt, d + 3 * f_, lanes, a30)
                _add_to(dwt, d + 3 * f_ + lanes, lanes, a31)
                _add_to(dwt, d + 4 * f_, lanes, a40)
                _add_to(dwt, d + 4 * f_ + lanes, lanes, a41)
                _add_to(dwt, d + 5 * f_, lanes, a50)
                _add_to(dwt, d + 5 * f_ + lanes, lanes, a51)


@jit
def _add_to(a, i, lanes, v):
    """a[i:i + lanes] += v (a half vector)."""
    vstore(a, i, vadd(yload(a, i), v))


@jit
def pack_and_forward(w, x, b, kernel, pad, dilation, out, accumulate, wpk, offs, xp, wide, n0, n1):
    """``pack_weights`` then ``forward_direct`` in one call: a layer on one thread (a training
    share's) returns to Python once."""
    pack_weights(w, wpk)
    forward_direct(x, b, kernel, pad, dilation, out, accumulate, wpk, offs, xp, wide, n0, n1)
