"""Winograd F(4, 5) along the rows: 5x5 stride-1 convolutions on small planes (``conv._use_c5``:
the forward, dx as the convolution of dout by the flipped weights, and dw).

Each run of 4 outputs of a row ("tile") is, per kernel row i, a 1-D F(4, 5) of the 8 inputs
around it, the kernel rows and channels summed in the transformed domain:

    Y = A^T [ sum over (i, c) of (G g_fci) * (B^T d_c,row+i) ]      (* element-wise)

with the interpolation points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity (B^T as F(6, 3)'s: see
``_bt``; A^T[a, e] = p_e^a; G[e, k] = p_e^k / prod over q != p_e of (p_e - q); ``_transforms``).
40 products per tile and channel pair instead of the direct loops' 100 (2.5x fewer; on 14-wide
rows 4 tiles compute 16 outputs for 14: 2.2x).  The forward and dx put 16 samples in the vector
lanes (float32; 8 in float64), as conv_lanes.py does: a chunk is copied once into
``xt[hp, wp, c, lane]`` (``conv_lanes.to_lanes``), so the transforms are plain vector
arithmetic with no shuffles.  Per chunk:

* ``V[e, tj, r*C + c, lane] = (B^T d)[e]`` for every padded row r and tile column tj, once
  (``_input_rows``): each row is shared by the 5 output rows that read it;
* ``M[e, t, f, lane] = sum over k = (i, c) of U[e, k, f] * V[e, tj, oh*C + k, lane]`` for groups
  of 3 tiles (``_products``): blocks of 3 tiles x 8 filters, 24 vector accumulators through the
  5*C terms, each step 3 vector loads of V (one run per tile) and 8 broadcasts of the
  transformed weights ``U`` (``c5_weights``, once per call, in float64 and rounded once);
  without AVX-512, each half of the lanes alone in blocks of 3 tiles x 4 filters (12
  accumulators of 8 lanes: ``_products_narrow``, chosen by U's shape, ``weights_shape``);
* ``Y = A^T M + b`` into a tile ``[f, position, lane]`` of the chunk's output plane
  (``_output_tiles``; outputs past the row's end not written), written to ``out`` by 16 x 16
  vector transposes (``_from_tile``).

dw (below) sums the same products over the tiles and samples instead, with the filters in the
lanes.  Measured first and dropped: the 2-D F(2x2, 5x5) (36 products per 2x2 tile instead of
100), the same layout: 0.55-0.70x of the direct loops it would replace, its 6x6 input transform
per tile and channel (0.72 ms of a 2.7 ms forward on the bench's row; dx with 32 channels
1.8 ms) costing more than the products it saved; then F(2, 5) along the rows (points 0, +-1,
+-2): 1.1-1.5x slower than F(4, 5) on forward, dx and dw.

Accuracy: each output is the sum of the same 25*C products as the direct convolution's, through
transforms whose constants reach 21/4 and 8 (B^T, A^T) and 1/90 (G), so the rounding errors
scale with the output's magnitude over a tile: measured against float64 NumPy (max error / max
|output|) float32 0.4-2e-6 forward and dx, 1-5e-6 dw (the direct loops 2e-7 - 1e-6), float64
2e-15 - 3e-15 (tests/test_conv_five.py).  Simulated in float32 (C = 16, sums of 80 terms), median error
of F(4, 5) at 0, +-1, +-2, +-1/2: 6.9e-7, F(2, 5) at 0, +-1, +-2: 5.1e-7; 0, +-1, +-2, +-3:
4.2e-6.
"""
import functools
from fractions import Fraction as Fr

import numpy as np

from cnnspec.kernels._jit import jit
from cnnspec.kernels._simd import (lanes_of, vadd, vfma, vlanes, vload, vprefetch, vsplat,
                                   vstore, vsub, vtranspose, vzero, ylanes, yload, ysplat, yzero)
from cnnspec.kernels.conv import _bias_grad_add, _sum_pieces
from cnnspec.kernels.conv_big import _yadd2
from cnnspec.kernels.conv_lanes import store_transposed, to_lanes

TILE = 4             # outputs per tile (F(4, 5): 8 transformed values per tile)
E = 8                # transformed values per tile
POINTS = (Fr(0), Fr(1), Fr(-1), Fr(2), Fr(-2), Fr(1, 2), Fr(-1, 2))   # and infinity
GROUP = 3            # tiles per block of the products
BLOCK_F = 8          # filters per block of the products (the filters are padded to a multiple)
DW_TILES = 14        # tiles per block of the weight gradient's sums


class C5Geometry:
    """Sizes (elements) of one row-Winograd convolution of x (N, C, H, W) by (F, C, 5, 5) with
    padding ``pad`` into (OH, OW), for ``lanes`` lanes: tw tiles a row (OH*TW tiles); xt's
    padding pt, pl and plane hp x wp; fp: F rounded up to BLOCK_F; u: the transformed weights
    (6, 5*C, Fp); per: a thread's slice [xt | V (6, TW, hp*C) | M (6, 3, Fp) | tile (F, OH*OW)],
    in vectors of lanes."""

    def __init__(self, x_shape, f, pad, oh, ow, lanes):
        _, c, h, w = x_shape
        self.c, self.f, self.oh, self.ow = c, f, oh, ow
        self.tw = -(-ow // TILE)
        self.pt, self.pl = pad[0], pad[2]
        self.hp = max(h + pad[0], oh + 4)
        self.wp = max(w + pad[2], TILE * self.tw + 4)
        self.fp = -(-f // BLOCK_F) * BLOCK_F
        self.u = E * 5 * c * self.fp
        self.xt = self.hp * self.wp * c * lanes
        self.v = E * self.tw * self.hp * c * lanes
        self.m = E * GROUP * self.fp * lanes
        self.tile = f * oh * ow * lanes
        self.per = self.xt + self.v + self.m + self.tile


def _transforms():
    """(G (E, 5), A^T (TILE, E)) of F(TILE, 5) at POINTS and infinity, in float64."""
    g = np.zeros((E, 5))
    at = np.zeros((TILE, E))
    for j, p in enumerate(POINTS):
        den = Fr(1)
        for q in POINTS:
            if q != p:
                den *= p - q
        for k in range(5):
            g[j, k] = float(p ** k / den)
        for i in range(TILE):
            at[i, j] = float(p ** i)
    g[E - 1, 4] = 1
    at[TILE - 1, E - 1] = 1
    return g, at


GM, AT = _transforms()


def weights_shape(r, f, narrow):
    """The shape of U for R input and F output channels: (E*5*R, Fp) for AVX2's blocks of the
    products, flat for AVX-512's (it chooses them, as conv_direct's packed weights do)."""
    fp = -(-f // BLOCK_F) * BLOCK_F
    return (E * 5 * r, fp) if narrow else (E * 5 * r * fp,)


@jit
def c5_weights(w, flipped, gm, ushaped):
    """u[e, i*C + c, o] (rows of Fp = O rounded up to BLOCK_F, zero past O) = (G g_i)[e] for
    kernel row i of g = w[o, c] or (``flipped``: dx's convolution of dout) of g = w[c, o]
    turned by 180 degrees; G = gm, computed in float64, rounded once; ``ushaped``: U in
    weights_shape's shape."""
    u = ushaped.reshape(ushaped.size)
    f_, c_ = w.shape[0], w.shape[1]
    o_, r_ = (c_, f_) if flipped else (f_, c_)
    fp = (o_ + BLOCK_F - 1) // BLOCK_F * BLOCK_F
    e_ = gm.shape[0]
    g = np.empty(5)
    for e in range(e_ * 5 * r_ * fp):
        u[e] = 0
    for o in range(o_):
        for c in range(r_):
            for i in range(5):
                for j in range(5):
                    g[j] = w[c, o, 4 - i, 4 - j] if flipped else w[o, c, i, j]
                for e in range(e_):
                    s = 0.0
                    for k in range(5):
                        s += gm[e, k] * g[k]
                    u[(e * 5 * r_ + i * r_ + c) * fp + o] = s


@jit
def _bt(d0, d1, d2, d3, d4, d5, d6, d7, consts):
    """B^T (d0..d7) of F(4, 5) (the points 0, +-1, +-2, +-1/2):
    [-1, 0, 21/4, 0, -21/4, 0, 1, 0], [0, +-1, 1, -+17/4, -17/4, +-1, 1, 0],
    [0, +-1/2, 1/4, -+5/2, -5/4, +-2, 1, 0], [0, +-2, 4, -+5/2, -5, +-1/2, 1, 0],
    [0, -1, 0, 21/4, 0, -21/4, 0, 1]."""
    c21 = vsplat(consts, 0)
    c17 = vsplat(consts, 1)
    c54 = vsplat(consts, 2)
    c14 = vsplat(consts, 3)
    c12 = vsplat(consts, 4)
    c52 = vsplat(consts, 5)
    c5 = vsplat(consts, 6)
    c4 = vsplat(consts, 7)
    a1 = vfma(vadd(d2, d6), c17, d4)
    b1 = vfma(vadd(d1, d5), c17, d3)
    a3 = vfma(vfma(d6, c14, d2), c54, d4)
    b3 = vfma(vfma(vadd(d5, d5), c12, d1), c52, d3)
    a5 = vfma(vfma(d6, c4, d2), c5, d4)
    b5 = vfma(vfma(vadd(d1, d1), c12, d5), c52, d3)
    return (vfma(vsub(d6, d0), c21, vsub(d2, d4)), vadd(a1, b1), vsub(a1, b1),
            vadd(a3, b3), vsub(a3, b3), vadd(a5, b5), vsub(a5, b5),
            vfma(vsub(d7, d1), c21, vsub(d3, d5)))


@jit
def _input_rows(xt, c_, hp, wp, tw, ts, ks, consts, v):
    """v[e, tj, r*C + c, lane] = (B^T d)[e], d = xt[r, 2*tj : 2*tj + 6, c] (every padded row r
    and tile column tj), at vector e*TW*hp*C + tj*ts + (r*C + c)*ks: the forward's layout
    (ts = hp*C, ks = 1: a tile's (i, c) one run) or the weight gradient's (ts = 1, ks = TW: a
    row's tiles one run)."""
    lanes = vlanes(xt)
    col = c_ * lanes
    es = tw * hp * c_ * lanes
    for tj in range(tw):
        for r in range(hp):
            src = (r * wp + TILE * tj) * c_ * lanes
            for c in range(c_):
                b = src + c * lanes
                d = (tj * ts + (r * c_ + c) * ks) * lanes
                r0, r1, r2, r3, r4, r5, r6, r7 = _bt(
                    vload(xt, b), vload(xt, b + col), vload(xt, b + 2 * col),
                    vload(xt, b + 3 * col), vload(xt, b + 4 * col), vload(xt, b + 5 * col),
                    vload(xt, b + 6 * col), vload(xt, b + 7 * col), consts)
                _store8(v, d, es, r0, r1, r2, r3, r4, r5, r6, r7)


@jit
def _products(u, v, c_, fp, hp, tw, tiles, g0, m):
    """m[e, t, f, lane] = sum over (i, c) of u[e, i*C + c, f] * v[e, tj, (oh + i)*C + c, lane]
    for the tiles g0 + t = oh*TW + tj (t < GROUP; past the last tile, the last again: never
    written out): blocks of 3 tiles x 8 filters, the terms in order, one FMA each."""
    lanes = vlanes(v)
    k_ = 5 * c_
    es = tw * hp * c_ * lanes
    t0 = min(g0, tiles - 1)
    t1 = min(g0 + 1, tiles - 1)
    t2 = min(g0 + 2, tiles - 1)
    o0, o1, o2 = t0 // tw, t1 // tw, t2 // tw
    p0 = ((t0 - o0 * tw) * hp + o0) * c_ * lanes
    p1 = ((t1 - o1 * tw) * hp + o1) * c_ * lanes
    p2 = ((t2 - o2 * tw) * hp + o2) * c_ * lanes
    for e in range(E):
        for fb in range(0, fp, BLOCK_F):
            a0 = vzero(v)
            a1 = vzero(v)
            a2 = vzero(v)
            a3 = vzero(v)
            a4 = vzero(v)
            a5 = vzero(v)
            a6 = vzero(v)
            a7 = vzero(v)
            b0 = vzero(v)
            b1 = vzero(v)
            b2 = vzero(v)
            b3 = vzero(v)
            b4 = vzero(v)
            b5 = vzero(v)
            b6 = vzero(v)
            b7 = vzero(v)
            c0 = vzero(v)
            c1 = vzero(v)
            c2 = vzero(v)
            c3 = vzero(v)
            c4 = vzero(v)
            c5 = vzero(v)
            c6 = vzero(v)
            c7 = vzero(v)
            uu = e * k_ * fp + fb
            q0 = e * es + p0
            q1 = e * es + p1
            q2 = e * es + p2
            for k in range(k_):
                vprefetch(v, q0 + es)
                vprefetch(v, q1 + es)
                vprefetch(v, q2 + es)
                x0 = vload(v, q0)
                x1 = vload(v, q1)
                x2 = vload(v, q2)
                s = vsplat(u, uu)
                a0 = vfma(a0, s, x0)
                b0 = vfma(b0, s, x1)
                c0 = vfma(c0, s, x2)
                s = vsplat(u, uu + 1)
                a1 = vfma(a1, s, x0)
                b1 = vfma(b1, s, x1)
                c1 = vfma(c1, s, x2)
                s = vsplat(u, uu + 2)
                a2 = vfma(a2, s, x0)
                b2 = vfma(b2, s, x1)
                c2 = vfma(c2, s, x2)
                s = vsplat(u, uu + 3)
                a3 = vfma(a3, s, x0)
                b3 = vfma(b3, s, x1)
                c3 = vfma(c3, s, x2)
                s = vsplat(u, uu + 4)
                a4 = vfma(a4, s, x0)
                b4 = vfma(b4, s, x1)
                c4 = vfma(c4, s, x2)
                s = vsplat(u, uu + 5)
                a5 = vfma(a5, s, x0)
                b5 = vfma(b5, s, x1)
                c5 = vfma(c5, s, x2)
                s = vsplat(u, uu + 6)
                a6 = vfma(a6, s, x0)
                b6 = vfma(b6, s, x1)
                c6 = vfma(c6, s, x2)
                s = vsplat(u, uu + 7)
                a7 = vfma(a7, s, x0)
                b7 = vfma(b7, s, x1)
                c7 = vfma(c7, s, x2)
                uu += fp
                q0 += lanes
                q1 += lanes
                q2 += lanes
            d = (e * GROUP * fp + fb) * lanes
            _store8(m, d, lanes, a0, a1, a2, a3, a4, a5, a6, a7)
            _store8(m, d + fp * lanes, lanes, b0, b1, b2, b3, b4, b5, b6, b7)
            _store8(m, d + 2 * fp * lanes, lanes, c0, c1, c2, c3, c4, c5, c6, c7)


@jit
def _products_narrow(u, v, c_, fp, hp, tw, tiles, g0, m):
    """_products in AVX2's blocks (16 registers of 8 float32): each half of the lanes alone,
    3 tiles x 4 filters, 12 accumulators; per term 3 half-vector loads of V and 4 broadcasts
    of U.  The same sums in the same order (the same bits)."""
    lanes = vlanes(v)
    half = ylanes(v)
    k_ = 5 * c_
    es = tw * hp * c_ * lanes
    t0 = min(g0, tiles - 1)
    t1 = min(g0 + 1, tiles - 1)
    t2 = min(g0 + 2, tiles - 1)
    o0, o1, o2 = t0 // tw, t1 // tw, t2 // tw
    p0 = ((t0 - o0 * tw) * hp + o0) * c_ * lanes
    p1 = ((t1 - o1 * tw) * hp + o1) * c_ * lanes
    p2 = ((t2 - o2 * tw) * hp + o2) * c_ * lanes
    for e in range(E):
        for fb in range(0, fp, 4):
            for h in range(0, lanes, half):
                a0 = yzero(v)
                a1 = yzero(v)
                a2 = yzero(v)
                a3 = yzero(v)
                b0 = yzero(v)
                b1 = yzero(v)
                b2 = yzero(v)
                b3 = yzero(v)
                c0 = yzero(v)
                c1 = yzero(v)
                c2 = yzero(v)
                c3 = yzero(v)
                uu = e * k_ * fp + fb
                q0 = e * es + p0 + h
                q1 = e * es + p1 + h
                q2 = e * es + p2 + h
                for k in range(k_):
                    x0 = yload(v, q0)
                    x1 = yload(v, q1)
                    x2 = yload(v, q2)
                    s = ysplat(u, uu)
                    a0 = vfma(a0, s, x0)
                    b0 = vfma(b0, s, x1)
                    c0 = vfma(c0, s, x2)
                    s = ysplat(u, uu + 1)
                    a1 = vfma(a1, s, x0)
                    b1 = vfma(b1, s, x1)
                    c1 = vfma(c1, s, x2)
                    s = ysplat(u, uu + 2)
                    a2 = vfma(a2, s, x0)
                    b2 = vfma(b2, s, x1)
                    c2 = vfma(c2, s, x2)
                    s = ysplat(u, uu + 3)
                    a3 = vfma(a3, s, x0)
                    b3 = vfma(b3, s, x1)
                    c3 = vfma(c3, s, x2)
                    uu += fp
                    q0 += lanes
                    q1 += lanes
                    q2 += lanes
                d = (e * GROUP * fp + fb) * lanes + h
                _store4(m, d, lanes, a0, a1, a2, a3)
                _store4(m, d + fp * lanes, lanes, b0, b1, b2, b3)
                _store4(m, d + 2 * fp * lanes, lanes, c0, c1, c2, c3)


@jit
def _store4(m, d, step, a0, a1, a2, a3):
    """Four vectors to m[d], m[d + step], m[d + 2 * step], m[d + 3 * step]."""
    vstore(m, d, a0)
    vstore(m, d + step, a1)
    vstore(m, d + 2 * step, a2)
    vstore(m, d + 3 * step, a3)


@jit
def _store8(m, d, step, a0, a1, a2, a3, a4, a5, a6, a7):
    """Eight vectors to m[d], m[d + step], ..., m[d + 7 * step]."""
    vstore(m, d, a0)
    vstore(m, d + step, a1)
    vstore(m, d + 2 * step, a2)
    vstore(m, d + 3 * step, a3)
    vstore(m, d + 4 * step, a4)
    vstore(m, d + 5 * step, a5)
    vstore(m, d + 6 * step, a6)
    vstore(m, d + 7 * step, a7)


@jit
def _output_tiles(m, fp, f_, ow_, tw, g0, g1, b, consts, tile):
    """tile[f, position, lane] = (A^T M)[.] + b[f] for the tiles g0 <= t < g1 (of the group
    starting at g0), the outputs inside the plane; A^T = [[1, 1, 1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 1/2, -1/2, 0], [0, 1, 1, 4, 4, 1/4, 1/4, 0],
    [0, 1, -1, 8, -8, 1/8, -1/8, 1]]."""
    lanes = vlanes(m)
    c14 = vsplat(consts, 3)
    c12 = vsplat(consts, 4)
    c4 = vsplat(consts, 7)
    c2 = vsplat(consts, 8)
    c18 = vsplat(consts, 9)
    c8 = vsplat(consts, 10)
    plane_ = tile.size // (f_ * lanes)
    es = GROUP * fp * lanes
    for t in range(g0, g1):
        oh = t // tw
        ow = TILE * (t - oh * tw)
        n_ = min(TILE, ow_ - ow)
        for f in range(f_):
            a = ((t - g0) * fp + f) * lanes
            m1 = vload(m, a + es)
            m2 = vload(m, a + 2 * es)
            m3 = vload(m, a + 3 * es)
            m4 = vload(m, a + 4 * es)
            m5 = vload(m, a + 5 * es)
            m6 = vload(m, a + 6 * es)
            s1 = vadd(m1, m2)
            t1 = vsub(m1, m2)
            s2 = vadd(m3, m4)
            t2 = vsub(m3, m4)
            s3 = vadd(m5, m6)
            t3 = vsub(m5, m6)
            y0 = vadd(vadd(vload(m, a), s1), vadd(s2, s3))
            y1 = vfma(vfma(t1, c2, t2), c12, t3)
            y2 = vfma(vfma(s1, c4, s2), c14, s3)
            y3 = vfma(vfma(vadd(t1, vload(m, a + 7 * es)), c8, t2), c18, t3)
            if b.size > 0:
                s = vsplat(b, f)
                y0 = vadd(y0, s)
                y1 = vadd(y1, s)
                y2 = vadd(y2, s)
                y3 = vadd(y3, s)
            d = (f * plane_ + oh * ow_ + ow) * lanes
            vstore(tile, d, y0)
            if n_ > 1:
                vstore(tile, d + lanes, y1)
            if n_ > 2:
                vstore(tile, d + 2 * lanes, y2)
            if n_ > 3:
                vstore(tile, d + 3 * lanes, y3)


@jit
def _from_tile(tile, accumulate, n0, nl, of, f_, plane):
    """out[n0 + l, f, p] (+)= tile[f, p, l]: blocks of lanes positions by vector transposes, the
    last few one by one."""
    lanes = vlanes(tile)
    for f in range(f_):
        store_transposed(tile, f * plane * lanes, lanes, of, (n0 * f_ + f) * plane, plane,
                         f_ * plane, nl, accumulate)


@jit
def c5_driver(x, ushaped, b, pad, hp, wp, consts, accumulate, buf, out, i0, i1):
    """out[n] (+)= conv5x5(x[n]) + b (stride 1) for the samples of chunks i0 <= i < i1 (of the
    lanes each); ``ushaped`` from c5_weights (its shape chooses the products' blocks: 2-D
    AVX2's), buf a thread's slice (C5Geometry.per)."""
    u = ushaped.reshape(ushaped.size)
    n_, c_ = x.shape[0], x.shape[1]
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    lanes = vlanes(buf)
    fp = (f_ + BLOCK_F - 1) // BLOCK_F * BLOCK_F
    tw = (ow_ + TILE - 1) // TILE
    o_v = hp * wp * c_ * lanes
    o_m = o_v + E * tw * hp * c_ * lanes
    o_t = o_m + E * GROUP * fp * lanes
    xt, v, m, tile = buf[:o_v], buf[o_v:o_m], buf[o_m:o_t], buf[o_t:o_t + f_ * oh_ * ow_ * lanes]
    of = out.reshape(out.size)
    tiles = oh_ * tw
    for i in range(i0, i1):
        n0 = i * lanes
        to_lanes(x, n0, pad[0], pad[2], hp, wp, i == i0, xt)
        _input_rows(xt, c_, hp, wp, tw, hp * c_, 1, consts, v)
        for g0 in range(0, tiles, GROUP):
            if ushaped.ndim == 2:
                _products_narrow(u, v, c_, fp, hp, tw, tiles, g0, m)
            else:
                _products(u, v, c_, fp, hp, tw, tiles, g0, m)
            _output_tiles(m, fp, f_, ow_, tw, g0, min(tiles, g0 + GROUP), b, consts, tile)
        _from_tile(tile, accumulate, n0, min(lanes, n_ - n0), of, f_, oh_ * ow_)


# -- the weight gradient -----------------------------------------------------------------------
# Y = A^T M and M[e] = sum over (i, c) of U[e, i*C + c] * V[e, row + i, c] give dM = A dY per tile
# (dY its 2 outputs; A = (A^T)^T: dM[e] = dy0 + a_e dy1, a = 0, 1, -1, 2, -2, and dM[5] = dy1),
# dU[e, k, f] = sum over tiles and samples of V[e, tile's row + k] * dM[e, tile, f] and
# dw[f, c, i, j] = sum over e of G[e, j] dU[e, i*C + c, f]: the forward's products summed over the
# tiles and samples instead of (i, c).  Here the filters are in the lanes: dM of each sample
# from its dout transposed ([position, f], _dout_t), V as the forward's (the
# samples in the lanes, each one broadcast), blocks of 12 k x 2 vectors of filters (24
# accumulators; per tile and sample 2 vector loads of dM and 12 broadcasts of V), added into the
# piece's dU after each chunk.


class C5DwGeometry:
    """Sizes (elements) of the weight gradient of a 5x5 convolution of x (N, C, H, W) into dout
    (N, F, OH, OW), padding ``pad``, for ``lanes`` lanes: fp = F rounded up to 2 vectors; a
    piece's slice [xt | V (+ slack) | dout^T of the chunk's samples (lanes, OH*OW, Fp) | dM of
    one e (OH*TW, lanes, Fp) | dU (6, 5*C, Fp) | db (F)], with the offsets o_dt, o_dm, o_du,
    o_db."""

    def __init__(self, x_shape, f, pad, oh, ow, lanes):
        g = C5Geometry(x_shape, f, pad, oh, ow, lanes)
        c = x_shape[1]
        self.hp, self.wp, self.tw = g.hp, g.wp, g.tw
        self.fp = -(-f // (2 * lanes)) * 2 * lanes
        self.o_dt = g.xt + g.v + 12 * lanes          # V's slack: a last block of 12 k
        self.o_dm = self.o_dt + lanes * oh * ow * self.fp
        self.o_du = self.o_dm + oh * g.tw * lanes * self.fp
        self.o_db = self.o_du + E * 5 * c * self.fp
        self.per = self.o_db + f


@jit
def _dout_t(dout, n, fp, dt):
    """dt[p, f] = dout[n, f, p] (p a position of the plane; filters F.. Fp left as they are: they
    reach only dU's columns past F, dropped): blocks of lanes positions x lanes filters by vector
    transposes (the last block of positions overlapping the one before it), the rest one by
    one."""
    f_ = dout.shape[1]
    plane = dout.shape[2] * dout.shape[3]
    lanes = vlanes(dt)
    df = dout.reshape(dout.size)
    fv = f_ // lanes * lanes if plane >= lanes else 0
    src = n * f_ * plane
    for f0 in range(0, fv, lanes):
        for p0 in range(0, plane, lanes):
            p = min(p0, plane - lanes)
            vtranspose(df, src + f0 * plane + p, plane, dt, p * fp + f0, fp, 0, lanes, False)
    for f in range(fv, f_):
        for p in range(plane):
            dt[p * fp + f] = df[src + f * plane + p]


@jit
def _dout_tiles(dtt, fp, oh_, ow_, tw, nl, e, consts, dm):
    """dm[t, l, f] = (A dY)[e] = sum over a of A^T[a, e] dY[a] for the tiles t = oh*TW + tj and
    the chunk's samples l < nl, dY[a] = dtt[l, oh*OW + TILE*tj + a, f] (zero past OW)."""
    lanes = vlanes(dtt)
    k0 = vsplat(consts, 11 + e)
    k1 = vsplat(consts, 11 + E + e)
    k2 = vsplat(consts, 11 + 2 * E + e)
    k3 = vsplat(consts, 11 + 3 * E + e)
    plane = oh_ * ow_ * fp
    for t in range(oh_ * tw):
        oh = t // tw
        ow = TILE * (t - oh * tw)
        a0 = (oh * ow_ + ow) * fp
        n_ = min(TILE, ow_ - ow)
        for l in range(nl):
            a = l * plane + a0
            d = (t * lanes + l) * fp
            for f0 in range(0, fp, lanes):
                s = vfma(vzero(dtt), k0, vload(dtt, a + f0))
                if n_ > 1:
                    s = vfma(s, k1, vload(dtt, a + fp + f0))
                if n_ > 2:
                    s = vfma(s, k2, vload(dtt, a + 2 * fp + f0))
                if n_ > 3:
                    s = vfma(s, k3, vload(dtt, a + 3 * fp + f0))
                vstore(dm, d + f0, s)


@jit
def _dw_products(v, dm, c_, fp, hp, tiles, tw, nl, e, du):
    """du[e, k, f] += sum over the tiles t = oh*TW + tj and samples l < nl of
    v[e, tj, oh*C + k, l] * dm[t, l, f]: blocks of DW_TILES tiles (their dM stays in L1 through
    the blocks of k; sums of at most DW_TILES*lanes terms added into du), in them blocks of 12 k x
    2 vectors of filters (a last block past 5*C reads V's slack or the next row: dropped)."""
    for t0 in range(0, tiles, DW_TILES):
        _dw_block(v, dm, c_, fp, hp, t0, min(tiles, t0 + DW_TILES), tw, nl, e, du)


@jit
def _dw_products_narrow(v, dm, c_, fp, hp, tiles, tw, nl, e, du):
    """_dw_products in AVX2's blocks (_dw_block_narrow)."""
    for t0 in range(0, tiles, DW_TILES):
        _dw_block_narrow(v, dm, c_, fp, hp, t0, min(tiles, t0 + DW_TILES), tw, nl, e, du)


@jit
def _dw_block_narrow(v, dm, c_, fp, hp, t0, t1, tw, nl, e, du):
    """_dw_block in AVX2's blocks: 6 k x 2 half vectors of filters, 12 accumulators; per tile
    and sample 2 half-vector loads of dM and 6 broadcasts of V (the same sums in the same
    order: the same bits)."""
    lanes = vlanes(v)
    half = ylanes(v)
    k_ = 5 * c_
    for fb in range(0, fp, 2 * half):
        for k0 in range(0, k_, 6):
            a0 = yzero(v)
            a1 = yzero(v)
            a2 = yzero(v)
            a3 = yzero(v)
            a4 = yzero(v)
            a5 = yzero(v)
            b0 = yzero(v)
            b1 = yzero(v)
            b2 = yzero(v)
            b3 = yzero(v)
            b4 = yzero(v)
            b5 = yzero(v)
            for t in range(t0, t1):
                oh = t // tw
                pv = ((e * tw + t - oh * tw) * hp + oh) * c_ * lanes + k0 * lanes
                pm = t * lanes * fp + fb
                for l in range(nl):
                    w0 = yload(dm, pm)
                    w1 = yload(dm, pm + half)
                    s = ysplat(v, pv + l)
                    a0 = vfma(a0, s, w0)
                    b0 = vfma(b0, s, w1)
                    s = ysplat(v, pv + lanes + l)
                    a1 = vfma(a1, s, w0)
                    b1 = vfma(b1, s, w1)
                    s = ysplat(v, pv + 2 * lanes + l)
                    a2 = vfma(a2, s, w0)
                    b2 = vfma(b2, s, w1)
                    s = ysplat(v, pv + 3 * lanes + l)
                    a3 = vfma(a3, s, w0)
                    b3 = vfma(b3, s, w1)
                    s = ysplat(v, pv + 4 * lanes + l)
                    a4 = vfma(a4, s, w0)
                    b4 = vfma(b4, s, w1)
                    s = ysplat(v, pv + 5 * lanes + l)
                    a5 = vfma(a5, s, w0)
                    b5 = vfma(b5, s, w1)
                    pm += fp
            d = (e * k_ + k0) * fp + fb
            _add2y(du, d, k0 < k_, half, a0, b0)
            _add2y(du, d + fp, k0 + 1 < k_, half, a1, b1)
            _add2y(du, d + 2 * fp, k0 + 2 < k_, half, a2, b2)
            _add2y(du, d + 3 * fp, k0 + 3 < k_, half, a3, b3)
            _add2y(du, d + 4 * fp, k0 + 4 < k_, half, a4, b4)
            _add2y(du, d + 5 * fp, k0 + 5 < k_, half, a5, b5)


@jit
def _add2y(a, d, inside, half, p, q):
    """conv_big._yadd2 (a[d : d + 2*half] += (p, q), half vectors) if ``inside``."""
    if inside:
        _yadd2(a, d, half, p, q)


@jit
def _dw_block(v, dm, c_, fp, hp, t0, t1, tw, nl, e, du):
    """_dw_products for the tiles t0 <= t < t1."""
    lanes = vlanes(v)
    k_ = 5 * c_
    for fb in range(0, fp, 2 * lanes):
        for k0 in range(0, k_, 12):
            a0 = vzero(v)
            a1 = vzero(v)
            a2 = vzero(v)
            a3 = vzero(v)
            a4 = vzero(v)
            a5 = vzero(v)
            a6 = vzero(v)
            a7 = vzero(v)
            a8 = vzero(v)
            a9 = vzero(v)
            a10 = vzero(v)
            a11 = vzero(v)
            b0 = vzero(v)
            b1 = vzero(v)
            b2 = vzero(v)
            b3 = vzero(v)
            b4 = vzero(v)
            b5 = vzero(v)
            b6 = vzero(v)
            b7 = vzero(v)
            b8 = vzero(v)
            b9 = vzero(v)
            b10 = vzero(v)
            b11 = vzero(v)
            for t in range(t0, t1):
                oh = t // tw
                pv = ((e * tw + t - oh * tw) * hp + oh) * c_ * lanes + k0 * lanes
                pm = t * lanes * fp + fb
                for l in range(nl):
                    w0 = vload(dm, pm)
                    w1 = vload(dm, pm + lanes)
                    s = vsplat(v, pv + l)
                    a0 = vfma(a0, s, w0)
                    b0 = vfma(b0, s, w1)
                    s = vsplat(v, pv + lanes + l)
                    a1 = vfma(a1, s, w0)
                    b1 = vfma(b1, s, w1)
                    s = vsplat(v, pv + 2 * lanes + l)
                    a2 = vfma(a2, s, w0)
                    b2 = vfma(b2, s, w1)
                    s = vsplat(v, pv + 3 * lanes + l)
                    a3 = vfma(a3, s, w0)
                    b3 = vfma(b3, s, w1)
                    s = vsplat(v, pv + 4 * lanes + l)
                    a4 = vfma(a4, s, w0)
                    b4 = vfma(b4, s, w1)
                    s = vsplat(v, pv + 5 * lanes + l)
                    a5 = vfma(a5, s, w0)
                    b5 = vfma(b5, s, w1)
                    s = vsplat(v, pv + 6 * lanes + l)
                    a6 = vfma(a6, s, w0)
                    b6 = vfma(b6, s, w1)
                    s = vsplat(v, pv + 7 * lanes + l)
                    a7 = vfma(a7, s, w0)
                    b7 = vfma(b7, s, w1)
                    s = vsplat(v, pv + 8 * lanes + l)
                    a8 = vfma(a8, s, w0)
                    b8 = vfma(b8, s, w1)
                    s = vsplat(v, pv + 9 * lanes + l)
                    a9 = vfma(a9, s, w0)
                    b9 = vfma(b9, s, w1)
                    s = vsplat(v, pv + 10 * lanes + l)
                    a10 = vfma(a10, s, w0)
                    b10 = vfma(b10, s, w1)
                    s = vsplat(v, pv + 11 * lanes + l)
                    a11 = vfma(a11, s, w0)
                    b11 = vfma(b11, s, w1)
                    pm += fp
            d = (e * k_ + k0) * fp + fb
            _add2(du, d, k0 < k_, lanes, a0, b0)
            _add2(du, d + fp, k0 + 1 < k_, lanes, a1, b1)
            _add2(du, d + 2 * fp, k0 + 2 < k_, lanes, a2, b2)
            _add2(du, d + 3 * fp, k0 + 3 < k_, lanes, a3, b3)
            _add2(du, d + 4 * fp, k0 + 4 < k_, lanes, a4, b4)
            _add2(du, d + 5 * fp, k0 + 5 < k_, lanes, a5, b5)
            _add2(du, d + 6 * fp, k0 + 6 < k_, lanes, a6, b6)
            _add2(du, d + 7 * fp, k0 + 7 < k_, lanes, a7, b7)
            _add2(du, d + 8 * fp, k0 + 8 < k_, lanes, a8, b8)
            _add2(du, d + 9 * fp, k0 + 9 < k_, lanes, a9, b9)
            _add2(du, d + 10 * fp, k0 + 10 < k_, lanes, a10, b10)
            _add2(du, d + 11 * fp, k0 + 11 < k_, lanes, a11, b11)


@jit
def _add2(a, d, inside, lanes, p, q):
    """a[d : d + 2*lanes] += (p, q) if ``inside``."""
    if inside:
        vstore(a, d, vadd(vload(a, d), p))
        vstore(a, d + lanes, vadd(vload(a, d + lanes), q))


@jit
def c5_dw_driver(dout, x, pad, hp, wp, consts, need_dw, need_db, buf, dushaped, o_dt, o_dm,
                 o_du, o_db, i0, i1):
    """The partial dU (6, 5*C, Fp) and db (F) of the samples of chunks i0 <= i < i1 in buf
    (C5DwGeometry); ``dushaped``: buf's dU as partial_du gives it (2-D: AVX2's blocks);
    c5_dw_finish sums the pieces' partials and makes dw."""
    n_, c_ = x.shape[0], x.shape[1]
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    lanes = vlanes(buf)
    fp = (f_ + 2 * lanes - 1) // (2 * lanes) * 2 * lanes
    tw = (ow_ + TILE - 1) // TILE
    o_v = hp * wp * c_ * lanes
    xt, v, dtt, dm = buf[:o_v], buf[o_v:o_dt], buf[o_dt:o_dm], buf[o_dm:o_du]
    du, dbp = dushaped.reshape(dushaped.size), buf[o_db:o_db + f_]
    for e in range(o_du, o_db + f_):
        buf[e] = 0
    plane = oh_ * ow_ * fp
    for i in range(i0, i1):
        n0 = i * lanes
        nl = min(lanes, n_ - n0)
        if need_db:
            for n in range(n0, n0 + nl):
                _bias_grad_add(dout, n, dbp)
        if not need_dw:
            continue
        to_lanes(x, n0, pad[0], pad[2], hp, wp, i == i0, xt)
        _input_rows(xt, c_, hp, wp, tw, hp * c_, 1, consts, v)
        for l in range(nl):
            _dout_t(dout, n0 + l, fp, dtt[l * plane:(l + 1) * plane])
        for e in range(E):
            _dout_tiles(dtt, fp, oh_, ow_, tw, nl, e, consts, dm)
            if dushaped.ndim == 2:
                _dw_products_narrow(v, dm, c_, fp, hp, oh_ * tw, tw, nl, e, du)
            else:
                _dw_products(v, dm, c_, fp, hp, oh_ * tw, tw, nl, e, du)


@jit
def c5_dw_finish(ws, base, per, pieces, o_du, o_db, gm, dw, db, need_dw, need_db):
    """dw[f, c, i, j] = sum over e of G[e, j] * (the sum of the pieces' dU[e, i*C + c, f], in
    piece order), G = gm, in float64; db = the sum of their db."""
    f_, c_ = dw.shape[0], dw.shape[1]
    lanes = vlanes(ws)
    fp = (f_ + 2 * lanes - 1) // (2 * lanes) * 2 * lanes
    e_ = gm.shape[0]
    d = np.empty(e_)
    if need_dw:
        for f in range(f_):
            for c in range(c_):
                for i in range(5):
                    for e in range(e_):
                        at = base + o_du + (e * 5 * c_ + i * c_ + c) * fp + f
                        s = ws[at]
                        for t in range(1, pieces):
                            s += ws[at + t * per]
                        d[e] = s
                    for j in range(5):
                        s = 0.0
                        for e in range(e_):
                            s += gm[e, j] * d[e]
                        dw[f, c, i, j] = s
    if need_db:
        _sum_pieces(ws, base + o_db, per, pieces, db)


@functools.lru_cache(maxsize=64)
def _geometry(x_shape, f, pad, oh, ow):
    return C5Geometry(x_shape, f, pad, oh, ow, 16)


@functools.lru_cache(maxsize=64)
def dw_geometry(x_shape, f, pad, oh, ow):
    return C5DwGeometry(x_shape, f, pad, oh, ow, 16)


def weight_grad(dout, x, pad, dw, db, workspace, shared, per, threads, pieces, narrow=False):
    """dw and db (each may be None) of a 5x5 stride-1 convolution by the row Winograd (in
    AVX2's blocks where ``narrow``): pieces of the batch's chunks, each into its own slice
    (``per`` apart, from conv._line_base's start), summed in piece order."""
    from cnnspec.kernels._jit import run_split
    from cnnspec.kernels.conv import _empty, _line_base
    _, base = _line_base(workspace, shared)
    pad = tuple(pad)
    geo = dw_geometry(x.shape, dout.shape[1], pad, dout.shape[2], dout.shape[3])
    k = consts(x.dtype)

    def piece(t, lo, hi):
        buf = workspace[base + t * per:base + t * per + geo.per]
        du = buf[geo.o_du:geo.o_db]
        return (dout, x, pad, geo.hp, geo.wp, k, dw is not None, db is not None, buf,
                du.reshape(-1, geo.fp) if narrow else du, geo.o_dt, geo.o_dm, geo.o_du,
                geo.o_db, lo, hi)
    run_split(c5_dw_driver, -(-x.shape[0] // lanes_of(x.dtype)), threads, piece, pieces=pieces)
    empty1, empty4 = _empty(x.dtype)
    c5_dw_finish(workspace, base, per, pieces, geo.o_du, geo.o_db, GM,
                 empty4 if dw is None else dw, empty1 if db is None else db, dw is not None,
                 db is not None)


def run(x, w, flipped, b, pad, out, accumulate, workspace, shared, per, size, threads,
        narrow=False):
    """out (+)= the convolution of x (N, C, H, W) by w (``flipped``: dx's, w (C, F, 5, 5)
    turned) + b (empty: none), padding ``pad``, on ``threads`` threads (``narrow``: AVX2's
    blocks): the transformed weights at the workspace's first 64-byte line, then one slice of
    ``per`` elements a thread (``size`` used), as conv._line_base lays them out."""
    from cnnspec.kernels._jit import run_split
    from cnnspec.kernels.conv import _line_base, _packed
    u, base = _line_base(workspace, shared)
    u = _packed(u, weights_shape(x.shape[1], out.shape[1], narrow))
    c5_weights(w, flipped, GM, u)
    pad = tuple(pad)
    geo = _geometry(x.shape, out.shape[1], pad, out.shape[2], out.shape[3])
    k = consts(x.dtype)
    run_split(c5_driver, -(-x.shape[0] // lanes_of(x.dtype)), threads, lambda t, lo, hi: (
        x, u, b, pad, geo.hp, geo.wp, k, bool(accumulate),
        workspace[base + t * per:base + t * per + size], out, lo, hi), dynamic=True)


_CONSTS = {}


def consts(dtype):
    """The transforms' constants as an array of ``dtype`` (vsplat reads memory): B^T's 21/4,
    -17/4, -5/4, 1/4, 1/2, -5/2, -5, 4; A^T's 2, 1/8, 8; then A^T by rows (dM's coefficients)."""
    key = np.dtype(dtype)
    if key not in _CONSTS:
        _CONSTS[key] = np.concatenate([[5.25, -4.25, -1.25, 0.25, 0.5, -2.5, -5, 4, 2, 0.125, 8],
                                       AT.reshape(-1)]).astype(dtype)
    return _CONSTS[key]
