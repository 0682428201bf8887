"""Direct convolution forward: register-blocked loops instead of BLAS products (``_Plan.direct``).

The sample is zero-padded and split into stride phases as for kn2row (``conv._split_sample``),
and the output is computed on the same "wide" grid (OH, Wq) of a phase plane, q = oh*Wq + ow:
for tap (i, j) and input channel c, ``wide[f, q] += w[f, c, i, j] * xp[offs(c, i, j) + q]``,
where offs is the tap's window in the phase buffer (``conv._tap_offset``).  oneDNN's technique,
on NCHW data: a block of 8 output channels x 2 vectors of q (32 float32 or 16 float64 outputs) is
kept in 16 SIMD accumulators (``_simd.Vec``: one AVX-512 register each) through the whole
reduction over (c, i, j), a single flat loop over a table of window offsets; each step loads two
vectors of input and broadcasts 8 weights from a packed copy (``wpk[f // 8, (c, i, j), f % 8]``,
made once per call, zero for the channels past F), 16 fused multiply-adds.  Nothing is stored
until the reduction ends, then the block goes to the wide buffer and ``_from_wide_all`` drops
the Wq - OW extra columns and adds the bias.

Why not BLAS: per sample the products are small (kn2row's (F, Cg) @ (Cg, q) per tap, rowtap's
K = C*KW), so OpenBLAS spends much of its time packing and in its edge kernels; the loop above
reads every input vector once per 8 output channels and never writes a partial sum.  Measured
(float32, one thread, CPU time, median of 7 rounds; forward, ms): 3x3 16->16 on 64x32x32 2.5
against rowtap's 3.4 (PyTorch 3.2), 3x3 3->32 on 32x3x32x32 0.71 against 0.98 (0.87), 3x3
32->32 on 64x32x16x16 2.5 against 3.0 (2.3), 3x3 64->64 on 8x64x56x56 15.0 against kn2row's 16.4
(12.8), 5x5 16->32 on 64x16x14x14 2.7 against 2.9 (2.0).  The wide grid wastes (Wq - OW)/Wq of
the work (8x8 planes with padding 1: 20%, and up to a strip of 32 per plane), and a calls away
in a ``_tap_offset`` inside the loop made LLVM spill the 16 accumulators at every tap: the table
of offsets keeps the loop body a straight run of loads and FMAs (1.3x faster).

The backward passes stay with the BLAS modes of the plan (``conv.py``).
"""
import numpy as np

from cnnspec.kernels._jit import jit
from cnnspec.kernels._simd import vfma, vlanes, vload, vsplat, vstore, vzero
from cnnspec.kernels.conv import _phase_shape_jit, _split_sample, _tap_offset

BLOCK_F = 8          # output channels per register block
STRIP = 32           # outputs per block along q for float32 (2 vectors of 16 lanes; float64: 16)


def direct_sizes(x_shape, w_shape, stride, pad, dilation, oh):
    """(packed weights, per-thread phase buffer, per-thread wide buffer), in elements."""
    _, c, h, w = x_shape
    f, _, kh, kw = w_shape
    hp, wp = h + pad[0] + pad[1], w + pad[2] + pad[3]
    hq, wq = -(-hp // stride[0]), -(-wp // stride[1])
    fp = -(-f // BLOCK_F) * BLOCK_F
    qs = -(-(oh * wq) // STRIP) * STRIP
    # the last strip reads up to a strip past the last window: zeros (or finished samples'
    # values) that only reach the discarded outputs
    xp = stride[0] * stride[1] * c * hq * wq + (kw - 1) * dilation[1] + 2 * STRIP
    return fp * c * kh * kw, xp, fp * qs


@jit
def pack_weights(w, wpk):
    """wpk[f // 8, (c, i, j), f % 8] = w[f, c, i, j] (flat), zero for f >= F in the last block."""
    f_, cg, kh, kw = w.shape
    fp = (f_ + 7) // 8 * 8
    k = cg * kh * kw
    for e in range(fp * k):
        wpk[e] = 0
    for f in range(f_):
        for c in range(cg):
            for i in range(kh):
                for j in range(kw):
                    wpk[((((f // 8) * cg + c) * kh + i) * kw + j) * 8 + f % 8] = w[f, c, i, j]


@jit
def _from_wide_all(wide, qs, wq, b, n, out):
    """out[n, f, oh, :] = wide[f*qs + oh*wq : ... + OW] + b[f] (the extra columns dropped)."""
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    of = out.reshape(out.size)
    for f in range(f_):
        bias = b[f] if b.size > 0 else 0
        for rr in range(oh_):
            src = np.uint64(f * qs + rr * wq)
            dst = np.uint64(((n * f_ + f) * oh_ + rr) * ow_)
            for e in range(ow_):
                of[dst + np.uint64(e)] = wide[src + np.uint64(e)] + bias


@jit
def forward_direct(x, b, kernel, stride, pad, dilation, out, wpk, xp, wide, n0, n1):
    """out[n] = conv(x[n]) + b for n0 <= n < n1 (groups 1), wpk from pack_weights."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_ = out.shape[1], out.shape[2]
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    plane = hq * wq
    lanes = vlanes(xp)
    strip = 2 * lanes
    qs = (oh_ * wq + strip - 1) // strip * strip
    fp = (f_ + 7) // 8 * 8
    kh, kw = kernel
    k_ = c_ * kh * kw
    offs = np.empty(k_, np.int64)
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                offs[(c * kh + i) * kw + j] = (_tap_offset(i, j, c_, plane, wq, stride, dilation)
                                               + c * plane)
    for n in range(n0, n1):
        _split_sample(x, n, stride, pad, n == n0, xp)
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
        _from_wide_all(wide, qs, wq, b, n, out)
