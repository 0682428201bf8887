"""Winograd F(2x2, 3x3): 3x3 stride-1 convolutions of 64 filters on large planes (``_Plan.wino``,
``wino_dx``, ``wino_dw``: ``conv._use_wino``).

Each 2x2 block of outputs ("tile") is computed from the 4x4 input window around it as

    Y = A^T [ sum over c of (G g_fc G^T) * (B^T d_c B) ] A      (* element-wise)

(Lavin & Gray, 2015): the 16 products per tile and channel pair replace the direct loops' 36
multiply-adds (2.25x fewer), at the price of the transforms (additions only: B and A hold 0 and
+-1, G halves).  Per call the weights are transformed once, ``U[e, c, f]`` (e < 16 the element
of the 4x4 tile, filters padded to a block); per sample, tile rows in chunks:

* the input's 4x4 windows, ``V[e, c, t] = (B^T d B)[e]``, from the sample copied once into a
  zero-padded buffer with its even and odd columns apart (``xs[c, row, parity, k]`` = padded
  column 2k + parity): tile t's columns are then unit-stride runs over t (vector loads);
* 16 products ``M[e] (T, F) = V[e]^T (T, C) @ U[e] (C, F)``, blocks of 6 tiles x 4 vectors of
  filters (24 accumulators; per channel 4 vector loads of U and 6 broadcasts of V), as
  ``conv_direct.forward_lanes`` does; without AVX-512, 6 tiles x 2 half vectors (12
  accumulators of 8 lanes, filters padded to 16: ``_products_narrow``, chosen by U's shape,
  ``weights_shape``);
* ``Y = A^T M A`` with the filters in the lanes, into two output rows x OW x F, written to
  ``out`` by vector transposes (``_simd.vtranspose``), then the bias.

Without AVX-512, where a plane's rows hold few tiles (8x8 and 16x16 planes: 4 or 8 tiles, the
input transform's vectors a quarter or half full), the forward, dx and dw can lay each sample
out with its channels innermost instead (``hwc``: ``_fill_hwc``, xs[row, column, c], by vector
transposes; ``_input_tiles_hwc``, V[e, t, c]): the input transform then works on vectors of 16
channels, whatever the plane's width (C a multiple of 16), and AVX2's products read V with the
channels, not the tiles, adjacent.  The same terms in the same order: the same bits
(``conv._wino_hwc`` says where; tests/test_kernels.py).

dx of a stride-1 convolution is the convolution of dout by the flipped, transposed weights
(``conv_direct.backward_data_pad``): the same loops on U made from those.  dw: see the weight
gradient's section below (the same V, the products summed over the tiles instead).

Accuracy: the transforms add and subtract up to 4 inputs (B^T d B), the weights' transform
halves and sums 3 (G g G^T), and A^T M A adds up to 9 products' sums: each output is a sum of
the same 9*C terms as the direct convolution's, rounded differently, with errors at the scale
of the output, not of each element (an output that cancels to near zero keeps the absolute
error of its terms).  Measured against float64 NumPy, max error / max |output|: float32
1-4e-7 (the direct loops 1.4e-7 - 1e-6), float64 3e-16 - 1.7e-15 (tests/test_kernels.py).
F(2x2, 3x3)'s transforms have no constants beyond 1/2, unlike F(4x4, 3x3)'s (4, 5, 1/24).
"""
import numpy as np

from cnnspec.kernels._jit import jit, jit_inline
from cnnspec.kernels.conv import _bias_grad_add, _sum_pieces
from cnnspec.kernels.conv_lanes import _hwc
from cnnspec.kernels._simd import (vadd, vevens, vfma, vlanes, vload, vodds, vsplat, vstore, vsub,
                                   vtranspose, vzero, yload, ylanes, ysplat, yzero)

WINO_FILTERS = 64    # filters per block, float32 (4 vectors; float64: blocks of 32)
NARROW_FILTERS = 16  # AVX2's blocks: 2 half vectors (float64: blocks of 8)
WINO_POS = 6         # tiles per block
WINO_TILES = 96      # tiles per chunk (whole tile rows, at least one): V and M in L2
SLACK = 16           # elements past a buffer's rows that whole-vector loops may touch


def wino_geometry(x_shape, w_shape, pad):
    """(tile rows, tile columns, padded rows, half width K2, tile rows per chunk, T6, OH, OW)."""
    _, c, h, w = x_shape
    oh, ow = h + pad[0] + pad[1] - 2, w + pad[2] + pad[3] - 2
    th, tw = -(-oh // 2), -(-ow // 2)
    rows = max(1, min(th, WINO_TILES // tw))
    t6 = -(-(rows * tw) // WINO_POS) * WINO_POS
    return th, tw, 2 * th + 2, tw + 1, rows, t6, oh, ow


def filters_padded(f, narrow):
    """Fp: F rounded up to the products' blocks of filters (AVX2's ``narrow`` ones or
    AVX-512's)."""
    block = NARROW_FILTERS if narrow else WINO_FILTERS
    return -(-f // block) * block


def weights_shape(r, f, narrow):
    """The shape of U for R input and F output channels: (16*R, Fp) for AVX2's blocks, flat for
    AVX-512's.  It is what chooses the blocks (forward_wino), as conv_direct's packed weights
    do."""
    fp = filters_padded(f, narrow)
    return (16 * r, fp) if narrow else (16 * r * fp,)


def wino_sizes(x_shape, w_shape, pad, narrow=False):
    """(U in the shared part, per-thread slice) in elements; the slice holds [xs | V | M | Y]."""
    _, c, _, _ = x_shape
    f = w_shape[0]
    th, tw, hp, k2, rows, t6, oh, ow = wino_geometry(x_shape, w_shape, pad)
    fp = filters_padded(f, narrow)
    xs = c * hp * 2 * k2 + SLACK
    v = 16 * c * (t6 + SLACK)
    m = 16 * t6 * fp
    y = 2 * (2 * tw + SLACK) * fp
    return 16 * c * fp, xs + v + m + y


@jit
def wino_weights(w, flipped, ushaped):
    """u[e, c, o] (rows of Fp = O rounded up to the blocks of filters, zero past O) = (G g
    G^T)[e] for g = w[o, c] (3x3), or (``flipped``, dx's convolution of dout) g = w[c, o] turned
    by 180 degrees; G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].  ``ushaped``:
    U in weights_shape's shape.  The input channels outermost, so that each of U's rows is
    written along memory (the filters outermost took 1.36 ms for 128 x 128, this 0.86-0.99)."""
    f_, c_ = w.shape[0], w.shape[1]
    o_, r_ = (c_, f_) if flipped else (f_, c_)
    fp = ushaped.size // (16 * r_)
    u = ushaped.reshape(ushaped.size)
    for e in range(16 * r_ * fp):
        u[e] = 0
    g = np.empty((3, 3), w.dtype)
    gg = np.empty((4, 3), w.dtype)
    half = w.dtype.type(0.5)
    for c in range(r_):
        for o in range(o_):
            for i in range(3):
                for j in range(3):
                    g[i, j] = w[c, o, 2 - i, 2 - j] if flipped else w[o, c, i, j]
            for j in range(3):
                gg[0, j] = g[0, j]
                gg[1, j] = (g[0, j] + g[1, j] + g[2, j]) * half
                gg[2, j] = (g[0, j] - g[1, j] + g[2, j]) * half
                gg[3, j] = g[2, j]
            for i in range(4):
                base = (i * 4 * r_ + c) * fp + o
                u[base] = gg[i, 0]
                u[base + r_ * fp] = (gg[i, 0] + gg[i, 1] + gg[i, 2]) * half
                u[base + 2 * r_ * fp] = (gg[i, 0] - gg[i, 1] + gg[i, 2]) * half
                u[base + 3 * r_ * fp] = gg[i, 2]


@jit
def _fill(x, n, pad, hp, k2, xs):
    """xs[c, r, parity, k] = x[n] padded at row r, column 2k + parity, and zeros around: every
    element of the rows, so nothing needs clearing first.  Pairs of columns (2m, 2m + 1) go to
    the two halves, lanes pairs at a time (two vector loads, two shuffles; flat indices, no
    views: a view per row made the copy 5x slower than NumPy's)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    lanes = vlanes(xs)
    pl = pad[2]
    odd = pl & 1
    # x's column 2m goes to half h0 at k = m + k0, column 2m + 1 to half h1 at m + k1
    h0, h1 = (k2, 0) if odd else (0, k2)
    k0 = (pl - 1) // 2 if odd else pl // 2
    k1 = (pl + 1) // 2 if odd else pl // 2
    m_ = w_ // 2
    last = w_ & 1                # an odd width's last column: to half h0 at m_ + k0
    xf = x.reshape(x.size)
    for e in range(c_ * hp * 2 * k2, xs.size):
        xs[e] = 0
    for c in range(c_):
        for r in range(hp):
            row = (c * hp + r) * 2 * k2
            h = r - pad[0]
            if h < 0 or h >= h_:
                for e in range(row, row + 2 * k2):
                    xs[e] = 0
                continue
            src = ((n * c_ + c) * h_ + h) * w_
            a, b = row + h0, row + h1
            for k in range(k0):
                xs[a + k] = 0
            for k in range(k1):
                xs[b + k] = 0
            mv = 0
            if m_ >= lanes:
                for m0 in range(0, m_, lanes):
                    m = min(m0, m_ - lanes)      # the last block overlaps: the same values
                    lo, hi = vload(xf, src + 2 * m), vload(xf, src + 2 * m + lanes)
                    ev, od = vevens(lo, hi), vodds(lo, hi)
                    vstore(xs, a + k0 + m, ev)
                    vstore(xs, b + k1 + m, od)
                mv = m_
            for m in range(mv, m_):
                xs[np.uint64(a + k0 + m)] = xf[np.uint64(src + 2 * m)]
                xs[np.uint64(b + k1 + m)] = xf[np.uint64(src + 2 * m + 1)]
            ne, no = k0 + m_, k1 + m_
            if last:
                xs[a + ne] = xf[src + w_ - 1]
                ne += 1
            for k in range(ne, k2):
                xs[a + k] = 0
            for k in range(no, k2):
                xs[b + k] = 0


@jit
def _input_tiles(xs, c_, cs, hp, k2, tw, ti0, ti1, vs, v):
    """v[e, c, t] = (B^T d B)[e] for the tiles of tile rows ti0 <= ti < ti1 (t from 0, row by
    row), B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]; cs rows of v per
    e (>= C), vs: v's row stride (a vector past the last tile: the loops run whole vectors)."""
    lanes = vlanes(xs)
    for ti in range(ti0, ti1):
        t = (ti - ti0) * tw
        for j0 in range(0, tw, lanes):
            for c in range(c_):          # innermost: every stream moves by one stride
                a = (c * hp + 2 * ti) * 2 * k2 + j0
                # rows 0..3 of the window, even (e) and odd (o) columns, at k = tj and tj + 1
                e0 = vload(xs, a)
                o0 = vload(xs, a + k2)
                f0 = vload(xs, a + 1)
                p0 = vload(xs, a + k2 + 1)
                e1 = vload(xs, a + 2 * k2)
                o1 = vload(xs, a + 3 * k2)
                f1 = vload(xs, a + 2 * k2 + 1)
                p1 = vload(xs, a + 3 * k2 + 1)
                e2 = vload(xs, a + 4 * k2)
                o2 = vload(xs, a + 5 * k2)
                f2 = vload(xs, a + 4 * k2 + 1)
                p2 = vload(xs, a + 5 * k2 + 1)
                e3 = vload(xs, a + 6 * k2)
                o3 = vload(xs, a + 7 * k2)
                f3 = vload(xs, a + 6 * k2 + 1)
                p3 = vload(xs, a + 7 * k2 + 1)
                # the window's columns 0..3: e, o, f, p
                _transform_window(v, c * vs + t + j0, cs * vs, e0, o0, f0, p0, e1, o1, f1, p1,
                                  e2, o2, f2, p2, e3, o3, f3, p3)


@jit_inline
def _transform_window(v, at, step, d00, d01, d02, d03, d10, d11, d12, d13, d20, d21, d22, d23,
                      d30, d31, d32, d33):
    """v[at + e*step] = (B^T d B)[e], e = 4*i + j, for the 4x4 window d (rows d0.., columns
    d.0..d.3; each a vector of tiles or of channels): B^T d's rows d0 - d2, d1 + d2, d2 - d1,
    d1 - d3, each times B (_row_tiles)."""
    _row_tiles(v, at, step, vsub(d00, d20), vsub(d01, d21), vsub(d02, d22), vsub(d03, d23))
    _row_tiles(v, at + 4 * step, step, vadd(d10, d20), vadd(d11, d21), vadd(d12, d22),
               vadd(d13, d23))
    _row_tiles(v, at + 8 * step, step, vsub(d20, d10), vsub(d21, d11), vsub(d22, d12),
               vsub(d23, d13))
    _row_tiles(v, at + 12 * step, step, vsub(d10, d30), vsub(d11, d31), vsub(d12, d32),
               vsub(d13, d33))


@jit
def _row_tiles(v, at, step, d0, d1, d2, d3):
    """(row of B^T d) B: columns d0 - d2, d1 + d2, d2 - d1, d1 - d3 into v[at + j*step]."""
    vstore(v, at, vsub(d0, d2))
    vstore(v, at + step, vadd(d1, d2))
    vstore(v, at + 2 * step, vsub(d2, d1))
    vstore(v, at + 3 * step, vsub(d1, d3))


@jit
def _fill_hwc(x, n, pad, hp, wq, zero, xs):
    """xs[(r*wq + k)*C + c] = x[n, c] padded at row r, column k: the channels innermost, so that
    the input transform's vectors are whole whatever the plane's width (``conv_lanes._hwc``:
    blocks of lanes channels x lanes positions transposed by vector shuffles).  Only the plane's
    positions are written: with ``zero`` (a call's first sample) the padding is cleared first."""
    if zero:
        for e in range(hp * wq * x.shape[1]):
            xs[e] = 0
    _hwc(x, n, pad[0], pad[2], wq, x.shape[1], xs)


@jit
def _input_tiles_hwc(xs, c_, cs, wq, tw, ti0, ti1, t6, v):
    """_input_tiles on _fill_hwc's layout: v[(e*T6 + t)*cs + c] (cs >= C: the weight
    gradient's channels padded to its blocks), a vector of channels at a time (the same
    values)."""
    lanes = vlanes(xs)
    es = t6 * cs
    rs = wq * c_
    for ti in range(ti0, ti1):
        for tj in range(tw):
            t = (ti - ti0) * tw + tj
            for c0 in range(0, c_, lanes):
                a = 2 * ti * rs + 2 * tj * c_ + c0
                d00, d01, d02, d03 = (vload(xs, a), vload(xs, a + c_), vload(xs, a + 2 * c_),
                                      vload(xs, a + 3 * c_))
                a += rs
                d10, d11, d12, d13 = (vload(xs, a), vload(xs, a + c_), vload(xs, a + 2 * c_),
                                      vload(xs, a + 3 * c_))
                a += rs
                d20, d21, d22, d23 = (vload(xs, a), vload(xs, a + c_), vload(xs, a + 2 * c_),
                                      vload(xs, a + 3 * c_))
                a += rs
                d30, d31, d32, d33 = (vload(xs, a), vload(xs, a + c_), vload(xs, a + 2 * c_),
                                      vload(xs, a + 3 * c_))
                _transform_window(v, t * cs + c0, es, d00, d01, d02, d03, d10, d11, d12, d13,
                                  d20, d21, d22, d23, d30, d31, d32, d33)


@jit
def _products(u, v, c_, fp, t6, vs, m):
    """m[e, t, f] = sum over c of v[e, c, t] * u[e, c, f]: blocks of 6 tiles x 4 vectors of
    filters, the channels in order, one FMA per term."""
    lanes = vlanes(u)
    for e in range(16):
        for fb in range(0, fp, 4 * lanes):
            for t0 in range(0, t6, 6):
                a00 = vzero(u)
                a01 = vzero(u)
                a02 = vzero(u)
                a03 = vzero(u)
                a10 = vzero(u)
                a11 = vzero(u)
                a12 = vzero(u)
                a13 = vzero(u)
                a20 = vzero(u)
                a21 = vzero(u)
                a22 = vzero(u)
                a23 = vzero(u)
                a30 = vzero(u)
                a31 = vzero(u)
                a32 = vzero(u)
                a33 = vzero(u)
                a40 = vzero(u)
                a41 = vzero(u)
                a42 = vzero(u)
                a43 = vzero(u)
                a50 = vzero(u)
                a51 = vzero(u)
                a52 = vzero(u)
                a53 = vzero(u)
                uu = e * c_ * fp + fb
                vv = e * c_ * vs + t0
                for c in range(c_):
                    w0 = vload(u, uu)
                    w1 = vload(u, uu + lanes)
                    w2 = vload(u, uu + 2 * lanes)
                    w3 = vload(u, uu + 3 * lanes)
                    s = vsplat(v, vv)
                    a00 = vfma(a00, s, w0)
                    a01 = vfma(a01, s, w1)
                    a02 = vfma(a02, s, w2)
                    a03 = vfma(a03, s, w3)
                    s = vsplat(v, vv + 1)
                    a10 = vfma(a10, s, w0)
                    a11 = vfma(a11, s, w1)
                    a12 = vfma(a12, s, w2)
                    a13 = vfma(a13, s, w3)
                    s = vsplat(v, vv + 2)
                    a20 = vfma(a20, s, w0)
                    a21 = vfma(a21, s, w1)
                    a22 = vfma(a22, s, w2)
                    a23 = vfma(a23, s, w3)
                    s = vsplat(v, vv + 3)
                    a30 = vfma(a30, s, w0)
                    a31 = vfma(a31, s, w1)
                    a32 = vfma(a32, s, w2)
                    a33 = vfma(a33, s, w3)
                    s = vsplat(v, vv + 4)
                    a40 = vfma(a40, s, w0)
                    a41 = vfma(a41, s, w1)
                    a42 = vfma(a42, s, w2)
                    a43 = vfma(a43, s, w3)
                    s = vsplat(v, vv + 5)
                    a50 = vfma(a50, s, w0)
                    a51 = vfma(a51, s, w1)
                    a52 = vfma(a52, s, w2)
                    a53 = vfma(a53, s, w3)
                    uu += fp
                    vv += vs
                d = (e * t6 + t0) * fp + fb
                vstore(m, d, a00)
                vstore(m, d + lanes, a01)
                vstore(m, d + 2 * lanes, a02)
                vstore(m, d + 3 * lanes, a03)
                vstore(m, d + fp, a10)
                vstore(m, d + fp + lanes, a11)
                vstore(m, d + fp + 2 * lanes, a12)
                vstore(m, d + fp + 3 * lanes, a13)
                vstore(m, d + 2 * fp, a20)
                vstore(m, d + 2 * fp + lanes, a21)
                vstore(m, d + 2 * fp + 2 * lanes, a22)
                vstore(m, d + 2 * fp + 3 * lanes, a23)
                vstore(m, d + 3 * fp, a30)
                vstore(m, d + 3 * fp + lanes, a31)
                vstore(m, d + 3 * fp + 2 * lanes, a32)
                vstore(m, d + 3 * fp + 3 * lanes, a33)
                vstore(m, d + 4 * fp, a40)
                vstore(m, d + 4 * fp + lanes, a41)
                vstore(m, d + 4 * fp + 2 * lanes, a42)
                vstore(m, d + 4 * fp + 3 * lanes, a43)
                vstore(m, d + 5 * fp, a50)
                vstore(m, d + 5 * fp + lanes, a51)
                vstore(m, d + 5 * fp + 2 * lanes, a52)
                vstore(m, d + 5 * fp + 3 * lanes, a53)


@jit
def _products_narrow(u, v, c_, fp, t6, vs, m, hwc):
    """_products in AVX2's blocks (16 registers of 8 float32): 6 tiles x 2 half vectors of
    filters, 12 accumulators, the 2 weight vectors and a broadcast in the other 3 registers.
    The same sums in the same order as _products (the same bits); ``hwc``: v in
    _input_tiles_hwc's layout."""
    lanes = ylanes(u)
    for e in range(16):
        for fb in range(0, fp, 2 * lanes):
            for t0 in range(0, t6, 6):
                a00 = yzero(u)
                a01 = yzero(u)
                a10 = yzero(u)
                a11 = yzero(u)
                a20 = yzero(u)
                a21 = yzero(u)
                a30 = yzero(u)
                a31 = yzero(u)
                a40 = yzero(u)
                a41 = yzero(u)
                a50 = yzero(u)
                a51 = yzero(u)
                uu = e * c_ * fp + fb
                # v[e, c, t] at (e*C + c)*vs + t, or (hwc) (e*T6 + t)*C + c
                vv = (e * t6 + t0) * c_ if hwc else e * c_ * vs + t0
                vt, vc = (c_, 1) if hwc else (1, vs)
                for c in range(c_):
                    w0 = yload(u, uu)
                    w1 = yload(u, uu + lanes)
                    s = ysplat(v, vv)
                    a00 = vfma(a00, s, w0)
                    a01 = vfma(a01, s, w1)
                    s = ysplat(v, vv + vt)
                    a10 = vfma(a10, s, w0)
                    a11 = vfma(a11, s, w1)
                    s = ysplat(v, vv + 2 * vt)
                    a20 = vfma(a20, s, w0)
                    a21 = vfma(a21, s, w1)
                    s = ysplat(v, vv + 3 * vt)
                    a30 = vfma(a30, s, w0)
                    a31 = vfma(a31, s, w1)
                    s = ysplat(v, vv + 4 * vt)
                    a40 = vfma(a40, s, w0)
                    a41 = vfma(a41, s, w1)
                    s = ysplat(v, vv + 5 * vt)
                    a50 = vfma(a50, s, w0)
                    a51 = vfma(a51, s, w1)
                    uu += fp
                    vv += vc
                d = (e * t6 + t0) * fp + fb
                vstore(m, d, a00)
                vstore(m, d + lanes, a01)
                vstore(m, d + fp, a10)
                vstore(m, d + fp + lanes, a11)
                vstore(m, d + 2 * fp, a20)
                vstore(m, d + 2 * fp + lanes, a21)
                vstore(m, d + 3 * fp, a30)
                vstore(m, d + 3 * fp + lanes, a31)
                vstore(m, d + 4 * fp, a40)
                vstore(m, d + 4 * fp + lanes, a41)
                vstore(m, d + 5 * fp, a50)
                vstore(m, d + 5 * fp + lanes, a51)


@jit
def _output_tiles(m, t6, fp, tw, ti0, ti1, ow_, y, b, n, accumulate, out):
    """Y = A^T M A (A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]) for tile rows ti0 <= ti < ti1, each
    into y (2 rows x 2*TW positions x Fp filters), then out[n, f, 2*ti + a, :] (+)= y + b."""
    lanes = vlanes(m)
    f_, oh_ = out.shape[1], out.shape[2]
    yw = 2 * tw + SLACK
    plane = oh_ * ow_
    of = out.reshape(out.size)
    for ti in range(ti0, ti1):
        for tj in range(tw):
            t = (ti - ti0) * tw + tj
            for fb in range(0, fp, lanes):
                a = t * fp + fb
                es = t6 * fp
                m0 = vload(m, a)
                m1 = vload(m, a + es)
                m2 = vload(m, a + 2 * es)
                m3 = vload(m, a + 3 * es)
                m4 = vload(m, a + 4 * es)
                m5 = vload(m, a + 5 * es)
                m6 = vload(m, a + 6 * es)
                m7 = vload(m, a + 7 * es)
                m8 = vload(m, a + 8 * es)
                m9 = vload(m, a + 9 * es)
                m10 = vload(m, a + 10 * es)
                m11 = vload(m, a + 11 * es)
                m12 = vload(m, a + 12 * es)
                m13 = vload(m, a + 13 * es)
                m14 = vload(m, a + 14 * es)
                m15 = vload(m, a + 15 * es)
                # A^T M: rows m0 + m1 + m2 and m1 - m2 - m3 of the 4x4 (row i: m[4i + j])
                s0 = vadd(vadd(m0, m4), m8)
                s1 = vadd(vadd(m1, m5), m9)
                s2 = vadd(vadd(m2, m6), m10)
                s3 = vadd(vadd(m3, m7), m11)
                r0 = vsub(vsub(m4, m8), m12)
                r1 = vsub(vsub(m5, m9), m13)
                r2 = vsub(vsub(m6, m10), m14)
                r3 = vsub(vsub(m7, m11), m15)
                d = (2 * tj) * fp + fb
                vstore(y, d, vadd(vadd(s0, s1), s2))
                vstore(y, d + fp, vsub(vsub(s1, s2), s3))
                vstore(y, d + yw * fp, vadd(vadd(r0, r1), r2))
                vstore(y, d + yw * fp + fp, vsub(vsub(r1, r2), r3))
        for a in range(2):
            oh = 2 * ti + a
            if oh >= oh_:
                continue
            base = n * f_ * plane + oh * ow_
            src = a * yw * fp
            # whole vectors of positions; the last one overlaps the one before it when it can
            # (the same values written twice), else the rest one by one
            last = ow_ - ow_ % lanes
            for p0 in range(0, last, lanes):
                for f0 in range(0, f_, lanes):
                    vtranspose(y, src + p0 * fp + f0, fp, of, base + f0 * plane + p0, plane, 0,
                               min(lanes, f_ - f0), accumulate)
            if last < ow_ and ow_ >= lanes and not accumulate:
                p0 = ow_ - lanes
                for f0 in range(0, f_, lanes):
                    vtranspose(y, src + p0 * fp + f0, fp, of, base + f0 * plane + p0, plane, 0,
                               min(lanes, f_ - f0), False)
                last = ow_
            for f in range(f_):              # flat unsigned indices: no view per row
                at = np.uint64(base + f * plane)
                for p in range(last, ow_):
                    if accumulate:
                        of[at + np.uint64(p)] += y[np.uint64(src + p * fp + f)]
                    else:
                        of[at + np.uint64(p)] = y[np.uint64(src + p * fp + f)]
                if b.size > 0:
                    bias = b[f]
                    for p in range(ow_):
                        of[at + np.uint64(p)] += bias


@jit
def forward_wino(x, b, pad, out, accumulate, ushaped, buf, hwc, n0, n1):
    """out[n] (+)= conv3x3(x[n]) + b for n0 <= n < n1 (stride 1, groups 1); ``ushaped`` from
    wino_weights (its shape chooses the products' blocks: 2-D AVX2's, a numba specialisation
    compiles only the one it calls), buf a thread's slice (wino_sizes); ``hwc``: the channels
    innermost (AVX2's blocks only, C a multiple of the lanes)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    th, tw = (oh_ + 1) // 2, (ow_ + 1) // 2
    hp, k2 = 2 * th + 2, tw + 1
    rows = max(1, min(th, WINO_TILES // tw))
    t6 = (rows * tw + WINO_POS - 1) // WINO_POS * WINO_POS
    fp = ushaped.size // (16 * c_)
    u = ushaped.reshape(ushaped.size)
    vs = t6 + SLACK
    o_v = c_ * hp * 2 * k2 + SLACK
    o_m = o_v + 16 * c_ * vs
    o_y = o_m + 16 * t6 * fp
    xs, v, m, y = buf[:o_v], buf[o_v:o_m], buf[o_m:o_y], buf[o_y:]
    for n in range(n0, n1):
        # V's columns past a chunk's tiles and M's rows of them are never cleared: whatever
        # they hold reaches only outputs past the plane, which are dropped
        if hwc:
            _fill_hwc(x, n, pad, hp, 2 * k2, n == n0, xs)
        else:
            _fill(x, n, pad, hp, k2, xs)
        for ti0 in range(0, th, rows):
            ti1 = min(th, ti0 + rows)
            if hwc:
                _input_tiles_hwc(xs, c_, c_, 2 * k2, tw, ti0, ti1, t6, v)
            else:
                _input_tiles(xs, c_, c_, hp, k2, tw, ti0, ti1, vs, v)
            if ushaped.ndim == 2:
                _products_narrow(u, v, c_, fp, t6, vs, m, hwc)
            else:
                _products(u, v, c_, fp, t6, vs, m)
            _output_tiles(m, t6, fp, tw, ti0, ti1, ow_, y, b, n, accumulate, out)


# -- the weight gradient ----------------------------------------------------------------------
# Y = A^T M A and M[e] = sum over c of U[e] * V[e] give dM = A dY A^T per tile (dY zero past the
# output's edge), dU[e][c, f] = sum over tiles of V[e, c, t] * dM[e, t, f] and dw = G^T dU G:
# the same 16 products as the forward, summed over the tiles instead of the channels.  Blocks of
# 6 channels x 4 vectors of filters (24 accumulators; per tile 4 vector loads of dM, 6
# broadcasts of V), added into the piece's partial dU after each chunk of tiles.


def wino_dw_sizes(x_shape, w_shape, pad, narrow=False):
    """(per-piece slice, offset of its partial dU (16, Cp, Fp), of its db, Fp) in elements: the
    slice holds [xs | V (16, Cp, T6 + SLACK) | dout^T (2*TH, 2*TW, Fp) | dM (16, T6, Fp) | dU |
    db]; Cp = C rounded up to 6 (the extra rows of V stay zero)."""
    _, c, _, _ = x_shape
    f = w_shape[0]
    th, tw, hp, k2, rows, t6, oh, ow = wino_geometry(x_shape, w_shape, pad)
    fp = filters_padded(f, narrow)
    cp = -(-c // WINO_POS) * WINO_POS
    xs = c * hp * 2 * k2 + SLACK
    o_du = xs + 16 * cp * (t6 + SLACK) + 4 * th * tw * fp + 16 * t6 * fp
    return o_du + 16 * cp * fp + f, o_du, o_du + 16 * cp * fp, fp


def partial_du(piece, o_du, c, fp, narrow):
    """The view of a piece's slice that weight_grad_wino sums dU into: (16*Cp, Fp) for AVX2's
    blocks, flat for AVX-512's (its shape chooses the blocks)."""
    cp = -(-c // WINO_POS) * WINO_POS
    du = piece[o_du:o_du + 16 * cp * fp]
    return du.reshape(16 * cp, fp) if narrow else du


@jit
def _dout_transposed(dout, n, th2, tw2, fp, dt):
    """dt[oh, ow, f] = dout[n, f, oh, ow] for oh < 2*TH, ow < 2*TW, zero past OH and OW (the
    filters past F are left as they are: they reach only dU's columns past F, dropped): blocks
    of lanes positions x lanes filters by vector transposes."""
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    lanes = vlanes(dt)
    plane = oh_ * ow_
    df = dout.reshape(dout.size)
    fv = f_ // lanes * lanes
    for oh in range(oh_):
        src = n * f_ * plane + oh * ow_
        dst = oh * tw2 * fp
        if ow_ >= lanes:
            for p0 in range(0, ow_, lanes):
                p = min(p0, ow_ - lanes)     # the last block overlaps: the same values again
                for f0 in range(0, fv, lanes):
                    vtranspose(df, src + f0 * plane + p, plane, dt, dst + p * fp + f0, fp, 0,
                               lanes, False)
            f1 = fv
        else:
            f1 = 0
        for f in range(f1, f_):
            for p in range(ow_):
                dt[dst + p * fp + f] = df[src + f * plane + p]
        for e in range(dst + ow_ * fp, dst + tw2 * fp):
            dt[e] = 0
    for e in range(oh_ * tw2 * fp, th2 * tw2 * fp):
        dt[e] = 0


@jit
def _dout_tiles(dt, tw, tw2, fp, ti0, ti1, t6, dm):
    """dm[e, t, f] = (A dY A^T)[e] for the tiles of tile rows ti0 <= ti < ti1, dY the 2x2 block
    of dt; A = [[1, 0], [1, 1], [1, -1], [0, -1]]."""
    lanes = vlanes(dt)
    es = t6 * fp
    for ti in range(ti0, ti1):
        for tj in range(tw):
            t = (ti - ti0) * tw + tj
            a = ((2 * ti) * tw2 + 2 * tj) * fp
            for fb in range(0, fp, lanes):
                y00 = vload(dt, a + fb)
                y01 = vload(dt, a + fp + fb)
                y10 = vload(dt, a + tw2 * fp + fb)
                y11 = vload(dt, a + tw2 * fp + fp + fb)
                zero = vzero(dt)
                d = t * fp + fb
                _dm_row(dm, d, es, y00, y01)
                _dm_row(dm, d + 4 * es, es, vadd(y00, y10), vadd(y01, y11))
                _dm_row(dm, d + 8 * es, es, vsub(y00, y10), vsub(y01, y11))
                _dm_row(dm, d + 12 * es, es, vsub(zero, y10), vsub(zero, y11))


@jit
def _dm_row(dm, at, step, p, q):
    """A row (p, q) of A dY times A^T: p, p + q, p - q, -q into dm[at + j*step]."""
    vstore(dm, at, p)
    vstore(dm, at + step, vadd(p, q))
    vstore(dm, at + 2 * step, vsub(p, q))
    vstore(dm, at + 3 * step, vsub(vzero(dm), q))


@jit
def _dw_products(v, dm, cp, fp, t_, t6, vs, du):
    """du[e, c, f] += sum over t < t_ of v[e, c, t] * dm[e, t, f]: blocks of 6 channels x 4
    vectors of filters, the tiles in order."""
    lanes = vlanes(v)
    for e in range(16):
        for cb in range(0, cp, 6):
            for fb in range(0, fp, 4 * lanes):
                a00 = vzero(v)
                a01 = vzero(v)
                a02 = vzero(v)
                a03 = vzero(v)
                a10 = vzero(v)
                a11 = vzero(v)
                a12 = vzero(v)
                a13 = vzero(v)
                a20 = vzero(v)
                a21 = vzero(v)
                a22 = vzero(v)
                a23 = vzero(v)
                a30 = vzero(v)
                a31 = vzero(v)
                a32 = vzero(v)
                a33 = vzero(v)
                a40 = vzero(v)
                a41 = vzero(v)
                a42 = vzero(v)
                a43 = vzero(v)
                a50 = vzero(v)
                a51 = vzero(v)
                a52 = vzero(v)
                a53 = vzero(v)
                mm = e * t6 * fp + fb
                vv = (e * cp + cb) * vs
                for t in range(t_):
                    w0 = vload(dm, mm)
                    w1 = vload(dm, mm + lanes)
                    w2 = vload(dm, mm + 2 * lanes)
                    w3 = vload(dm, mm + 3 * lanes)
                    s = vsplat(v, vv + t)
                    a00 = vfma(a00, s, w0)
                    a01 = vfma(a01, s, w1)
                    a02 = vfma(a02, s, w2)
                    a03 = vfma(a03, s, w3)
                    s = vsplat(v, vv + vs + t)
                    a10 = vfma(a10, s, w0)
                    a11 = vfma(a11, s, w1)
                    a12 = vfma(a12, s, w2)
                    a13 = vfma(a13, s, w3)
                    s = vsplat(v, vv + 2 * vs + t)
                    a20 = vfma(a20, s, w0)
                    a21 = vfma(a21, s, w1)
                    a22 = vfma(a22, s, w2)
                    a23 = vfma(a23, s, w3)
                    s = vsplat(v, vv + 3 * vs + t)
                    a30 = vfma(a30, s, w0)
                    a31 = vfma(a31, s, w1)
                    a32 = vfma(a32, s, w2)
                    a33 = vfma(a33, s, w3)
                    s = vsplat(v, vv + 4 * vs + t)
                    a40 = vfma(a40, s, w0)
                    a41 = vfma(a41, s, w1)
                    a42 = vfma(a42, s, w2)
                    a43 = vfma(a43, s, w3)
                    s = vsplat(v, vv + 5 * vs + t)
                    a50 = vfma(a50, s, w0)
                    a51 = vfma(a51, s, w1)
                    a52 = vfma(a52, s, w2)
                    a53 = vfma(a53, s, w3)
                    mm += fp
                d = (e * cp + cb) * fp + fb
                _vadd4(du, d, lanes, a00, a01, a02, a03)
                _vadd4(du, d + fp, lanes, a10, a11, a12, a13)
                _vadd4(du, d + 2 * fp, lanes, a20, a21, a22, a23)
                _vadd4(du, d + 3 * fp, lanes, a30, a31, a32, a33)
                _vadd4(du, d + 4 * fp, lanes, a40, a41, a42, a43)
                _vadd4(du, d + 5 * fp, lanes, a50, a51, a52, a53)


@jit
def _dw_products_narrow(v, dm, cp, fp, t_, t6, vs, du, hwc):
    """_dw_products in AVX2's blocks: 6 channels x 2 half vectors of filters, 12 accumulators
    (the same sums in the same order: the same bits); ``hwc``: v in _input_tiles_hwc's layout
    (the channels of a tile adjacent)."""
    lanes = ylanes(v)
    for e in range(16):
        for cb in range(0, cp, 6):
            for fb in range(0, fp, 2 * lanes):
                a00 = yzero(v)
                a01 = yzero(v)
                a10 = yzero(v)
                a11 = yzero(v)
                a20 = yzero(v)
                a21 = yzero(v)
                a30 = yzero(v)
                a31 = yzero(v)
                a40 = yzero(v)
                a41 = yzero(v)
                a50 = yzero(v)
                a51 = yzero(v)
                mm = e * t6 * fp + fb
                # v[e, c, t] at (e*Cp + c)*vs + t, or (hwc) (e*T6 + t)*Cp + c
                vv = e * t6 * cp + cb if hwc else (e * cp + cb) * vs
                vc, vt = (1, cp) if hwc else (vs, 1)
                for t in range(t_):
                    w0 = yload(dm, mm)
                    w1 = yload(dm, mm + lanes)
                    s = ysplat(v, vv)
                    a00 = vfma(a00, s, w0)
                    a01 = vfma(a01, s, w1)
                    s = ysplat(v, vv + vc)
                    a10 = vfma(a10, s, w0)
                    a11 = vfma(a11, s, w1)
                    s = ysplat(v, vv + 2 * vc)
                    a20 = vfma(a20, s, w0)
                    a21 = vfma(a21, s, w1)
                    s = ysplat(v, vv + 3 * vc)
                    a30 = vfma(a30, s, w0)
                    a31 = vfma(a31, s, w1)
                    s = ysplat(v, vv + 4 * vc)
                    a40 = vfma(a40, s, w0)
                    a41 = vfma(a41, s, w1)
                    s = ysplat(v, vv + 5 * vc)
                    a50 = vfma(a50, s, w0)
                    a51 = vfma(a51, s, w1)
                    mm += fp
                    vv += vt
                d = (e * cp + cb) * fp + fb
                _yadd2(du, d, lanes, a00, a01)
                _yadd2(du, d + fp, lanes, a10, a11)
                _yadd2(du, d + 2 * fp, lanes, a20, a21)
                _yadd2(du, d + 3 * fp, lanes, a30, a31)
                _yadd2(du, d + 4 * fp, lanes, a40, a41)
                _yadd2(du, d + 5 * fp, lanes, a50, a51)


@jit
def _yadd2(a, i, lanes, p, q):
    """a[i : i + 2*lanes] += (p, q), half vectors."""
    vstore(a, i, vadd(yload(a, i), p))
    vstore(a, i + lanes, vadd(yload(a, i + lanes), q))


@jit
def _vadd4(a, i, lanes, p, q, r, s):
    """a[i : i + 4*lanes] += (p, q, r, s)."""
    vstore(a, i, vadd(vload(a, i), p))
    vstore(a, i + lanes, vadd(vload(a, i + lanes), q))
    vstore(a, i + 2 * lanes, vadd(vload(a, i + 2 * lanes), r))
    vstore(a, i + 3 * lanes, vadd(vload(a, i + 3 * lanes), s))


@jit
def weight_grad_wino(dout, x, pad, need_dw, need_db, buf, dushaped, hwc, n0, n1):
    """The partial dU (16, Cp, Fp) and db (F) of samples n0 <= n < n1 in buf (wino_dw_sizes);
    ``dushaped``: the dU part of buf as partial_du gives it (its shape chooses the blocks: 2-D
    AVX2's); ``hwc``: x's channels innermost (AVX2's blocks only, C a multiple of the lanes);
    wino_dw_finish sums the pieces' partials and makes dw."""
    c_ = x.shape[1]
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    th, tw = (oh_ + 1) // 2, (ow_ + 1) // 2
    hp, k2 = 2 * th + 2, tw + 1
    rows = max(1, min(th, WINO_TILES // tw))
    t6 = (rows * tw + WINO_POS - 1) // WINO_POS * WINO_POS
    cp = (c_ + WINO_POS - 1) // WINO_POS * WINO_POS
    fp = dushaped.size // (16 * cp)
    vs = t6 + SLACK
    o_v = c_ * hp * 2 * k2 + SLACK
    o_dt = o_v + 16 * cp * vs
    o_dm = o_dt + 4 * th * tw * fp
    o_du = o_dm + 16 * t6 * fp
    o_db = o_du + 16 * cp * fp
    xs, v, dt, dm = buf[:o_v], buf[o_v:o_dt], buf[o_dt:o_dm], buf[o_dm:o_du]
    du, dbp = dushaped.reshape(dushaped.size), buf[o_db:o_db + f_]
    for e in range(16):                # V's extra rows (Cp > C): their dU rows are dropped, but
        for c in range(c_, cp):        # NaN left in the workspace would not be
            for t in range(vs):
                if hwc:
                    if t < t6:
                        v[(e * t6 + t) * cp + c] = 0
                else:
                    v[(e * cp + c) * vs + t] = 0
    for e in range(o_du, o_db + f_):
        buf[e] = 0
    for n in range(n0, n1):
        if need_db:
            _bias_grad_add(dout, n, dbp)
        if not need_dw:
            continue
        if hwc:
            _fill_hwc(x, n, pad, hp, 2 * k2, n == n0, xs)
        else:
            _fill(x, n, pad, hp, k2, xs)
        _dout_transposed(dout, n, 2 * th, 2 * tw, fp, dt)
        for ti0 in range(0, th, rows):
            ti1 = min(th, ti0 + rows)
            if hwc:
                _input_tiles_hwc(xs, c_, cp, 2 * k2, tw, ti0, ti1, t6, v)
            else:
                _input_tiles(xs, c_, cp, hp, k2, tw, ti0, ti1, vs, v)
            _dout_tiles(dt, tw, 2 * tw, fp, ti0, ti1, t6, dm)
            if dushaped.ndim == 2:
                _dw_products_narrow(v, dm, cp, fp, (ti1 - ti0) * tw, t6, vs, du, hwc)
            else:
                _dw_products(v, dm, cp, fp, (ti1 - ti0) * tw, t6, vs, du)


@jit
def wino_dw_finish(ws, base, per, pieces, o_du, o_db, fp, dw, db, need_dw, need_db):
    """dw[f, c] = G^T (sum of the pieces' dU[:, c, f], in piece order) G, db = the sum of their
    db; G^T = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]]."""
    f_, c_ = dw.shape[0], dw.shape[1]
    cp = (c_ + WINO_POS - 1) // WINO_POS * WINO_POS
    half = ws.dtype.type(0.5)
    d = np.empty(16, ws.dtype)
    h = np.empty((3, 4), ws.dtype)
    if need_dw:
        for c in range(c_):
            for f in range(f_):
                for e in range(16):
                    at = base + o_du + (e * cp + c) * fp + f
                    s = ws[at]
                    for t in range(1, pieces):
                        s += ws[at + t * per]
                    d[e] = s
                for j in range(4):
                    h[0, j] = d[j] + (d[4 + j] + d[8 + j]) * half
                    h[1, j] = (d[4 + j] - d[8 + j]) * half
                    h[2, j] = (d[4 + j] + d[8 + j]) * half + d[12 + j]
                for i in range(3):
                    dw[f, c, i, 0] = h[i, 0] + (h[i, 1] + h[i, 2]) * half
                    dw[f, c, i, 1] = (h[i, 1] - h[i, 2]) * half
                    dw[f, c, i, 2] = (h[i, 1] + h[i, 2]) * half + h[i, 3]
    if need_db:
        _sum_pieces(ws, base + o_db, per, pieces, db)
