"""Direct convolution loops with the samples in the vector lanes: for small planes.

conv_direct.py's loops put the output positions of one sample in the vector lanes, on the "wide"
grid of the padded sample: every row computes its padding columns too, and a plane is rounded up
to strips of 32 outputs.  On 8x8 planes that is 96 outputs computed per 64 (DCGAN's transposed
convolutions, ResNet's last stage).  Here the lanes are 16 samples (float32; 8 in float64) at one
position instead: a chunk of samples is copied once into ``xt[hp, wp, c, lane]`` (zero-padded,
channels innermost so that one tap's channels are consecutive vectors: 1.2-1.35x faster than
``xt[c, hp, wp, lane]``; ``to_lanes``, by 16 x 16 vector transposes), and

    out[n, f, oh, ow] = sum over (tap, c) of W[f, c, tap] * xt[row(oh) + dr(tap), col(ow) + dc(tap), c, n]

is computed for exactly the output positions there are: a block of 8 output channels x 2
positions is 16 vector accumulators through the whole sum over (c, tap), each step two vector
loads (one per position) and 8 weight broadcasts (``wpk[phase, f // 8, k, f % 8]``): the body of
conv_direct._direct_sample, with no wide grid.  The block's 16 vectors (plus the bias) go to a
tile ``[position, f, lane]`` of the whole plane, which 16 x 16 vector transposes
(``_simd.vtranspose``) write to ``out`` (scalar copies ran 3 cycles an element: 15% of the
time).

One description covers (``lanes_geometry``):

* a convolution (any stride, dilation, padding): one phase, every tap; row(oh) = oh*sh.  The
  transposed convolution's input gradient is one (the adjoint convolution of dout);
* a transposed convolution's forward: out[oh] gathers x[h] with oh = h*sh + i*dh - top, so the
  outputs with oh = a (mod sh) form phase a, which only the taps i with (a + top - i*dh) = 0
  (mod sh) reach: sh*sw phases, each a stride-1 gather with its own taps and packed weights.

A last, partial chunk computes its missing lanes on whatever xt holds and never writes them:
worth it for batches of 16 and more.  Threads take chunks (and, for fewer chunks than twice the
threads, blocks of filters within them).  The measurements are in conv.py's ``_use_slanes`` and
conv_transpose.py's rules.  The positions and tap offsets are tables made once per geometry
(``lanes_geometry``, cached); the weights are packed once per call through a table of indices.
"""
import functools

import numpy as np

from cnnspec.kernels._jit import jit
from cnnspec.kernels.conv import _bias_grad_add, _sum_pieces
from cnnspec.kernels._simd import (lanes_of, vadd, vfma, vlanes, vload, vprefetch, vsplat,
                                   vstore, vtranspose, vzero)

BLOCK_F = 8
PREFETCH = 8         # lanes_conv prefetches the lines of tap k + 8 (software prefetch: 1.05-1.11x
                     # faster on DCGAN's and the 5x5 row's gathers; 4 and 16 taps ahead the same)


class LanesGeometry:
    """Tables of one convolution-like gather (see the module docstring), for ``lanes`` lanes.

    offs (phases, kmax): where tap k of a phase reads in xt, relative to a position's base;
    kcount (phases,); pin (positions, grouped by phase, each phase padded to an even count):
    the base of a position in xt; pslot: its index in an output plane (OH*OW for the padding);
    pstart (phases + 1); wbase (phases, kmax): the flat index into w of tap k's weight of filter
    0, wf: w's stride per filter (``pack``; a table of every packed weight's index took 8 bytes
    per weight: 19 MB for a 3x3 512->512 layer, kept per layer shape); pt, pl, hp, wp: xt's padding and plane; tile: elements of the
    tile; xt: elements of xt; wpk: elements of the packed weights."""

    def __init__(self, c, h, w, f, oh, ow, taps_of_phase, lanes):
        # taps_of_phase: list over phases of (rows, cols, taps) with rows: list of (oh, base row),
        # cols: list of (ow, base col), taps: list of (dr, dc, index into w for channel 0 and
        # filter 0, w's stride per channel, w's stride per filter)
        rmin = min([r + t[0] for rows, _, taps in taps_of_phase for _, r in rows[:1] for t in taps]
                   + [0])
        cmin = min([q + t[1] for _, cols, taps in taps_of_phase for _, q in cols[:1] for t in taps]
                   + [0])
        self.pt, self.pl = -rmin, -cmin
        rmax = max([r + t[0] for rows, _, taps in taps_of_phase for _, r in rows[-1:] for t in taps]
                   + [h - 1])
        cmax = max([q + t[1] for _, cols, taps in taps_of_phase for _, q in cols[-1:] for t in taps]
                   + [w - 1])
        self.hp, self.wp = rmax + 1 + self.pt, cmax + 1 + self.pl
        self.kmax = c * max(1, max(len(taps) for _, _, taps in taps_of_phase))
        phases = len(taps_of_phase)
        self.fp = -(-f // BLOCK_F) * BLOCK_F
        self.offs = np.zeros((phases, self.kmax), np.int64)
        self.kcount = np.zeros(phases, np.int64)
        self.wbase = np.zeros((phases, self.kmax), np.int64)
        self.wf = next((t[4] for _, _, taps in taps_of_phase for t in taps), 0)
        self.f = f
        pin, pstart, pslot = [], [0], []
        for ph, (rows, cols, taps) in enumerate(taps_of_phase):
            nt = len(taps)
            self.kcount[ph] = c * nt
            for ci in range(c):
                for t, (dr, dc, w0, wc, wf) in enumerate(taps):
                    k = t * c + ci
                    self.offs[ph, k] = (((dr + self.pt) * self.wp + dc + self.pl) * c
                                        + ci) * lanes
                    self.wbase[ph, k] = w0 + ci * wc
            here_in = [(r * self.wp + q) * c * lanes for _, r in rows for _, q in cols]
            here_out = [o * ow + q for o, _ in rows for q, _ in cols]
            if len(here_in) % 2:
                here_in.append(here_in[-1])
                here_out.append(oh * ow)
            pin += here_in
            pslot += here_out
            pstart.append(len(pin))
        self.offs = np.concatenate([self.offs.reshape(-1), np.zeros(PREFETCH, np.int64)])
        self.wbase = self.wbase.reshape(-1)
        self.pin = np.array(pin, np.int64)
        self.pslot = np.array(pslot, np.int64)
        self.pstart = np.array(pstart, np.int64)
        self.tile = (oh * ow + 1) * BLOCK_F * lanes
        self.xt = c * self.hp * self.wp * lanes
        self.wpk = phases * self.fp * self.kmax
        self.lanes = lanes


@functools.lru_cache(maxsize=128)
def conv_geometry(x_shape, w_shape, stride, pad, dilation, oh, ow, lanes):
    """A convolution's gather: out (F, OH, OW) from x (C, H, W) by w (F, C, KH, KW)."""
    _, c, h, w = x_shape
    f, _, kh, kw = w_shape
    rows = [(o, o * stride[0] - pad[0]) for o in range(oh)]
    cols = [(o, o * stride[1] - pad[2]) for o in range(ow)]
    taps = [(i * dilation[0], j * dilation[1], i * kw + j, kh * kw, c * kh * kw)
            for i in range(kh) for j in range(kw)]
    return LanesGeometry(c, h, w, f, oh, ow, [(rows, cols, taps)], lanes)


@functools.lru_cache(maxsize=128)
def transposed_geometry(x_shape, w_shape, stride, pad, dilation, oh, ow, lanes):
    """A transposed convolution's forward: out (F, OH, OW) from x (C, H, W) by w (C, F, KH, KW),
    one phase per (oh mod sh, ow mod sw)."""
    _, c, h, w = x_shape
    _, f, kh, kw = w_shape
    sh, sw = stride
    phases = []
    for a in range(min(sh, oh)):
        ti = [i for i in range(kh) if (a + pad[0] - i * dilation[0]) % sh == 0]
        rows = [(o, (o - a) // sh) for o in range(a, oh, sh)]
        for b in range(min(sw, ow)):
            tj = [j for j in range(kw) if (b + pad[2] - j * dilation[1]) % sw == 0]
            cols = [(o, (o - b) // sw) for o in range(b, ow, sw)]
            taps = [((a + pad[0] - i * dilation[0]) // sh, (b + pad[2] - j * dilation[1]) // sw,
                     i * kw + j, f * kh * kw, kh * kw) for i in ti for j in tj]
            phases.append((rows, cols, taps))
    return LanesGeometry(c, h, w, f, oh, ow, phases, lanes)


def chunks(n, dtype):
    """Chunks of samples (of the lanes each) of a batch of n."""
    lanes = lanes_of(dtype)
    return -(-n // lanes)


@jit
def pack(w, wbase, wf, f_, fp, kmax, wpk):
    """wpk[phase, f // 8, k, f % 8] = w.flat[wbase[phase, k] + f*wf] for f < F, 0 past F."""
    wflat = w.reshape(w.size)
    nfb = fp // 8
    for ph in range(wbase.size // kmax):
        for fb in range(nfb):
            for k in range(kmax):
                i = wbase[ph * kmax + k]
                d = ((ph * nfb + fb) * kmax + k) * 8
                for r in range(8):
                    f = fb * 8 + r
                    wpk[d + r] = wflat[i + f * wf] if f < f_ else 0


@jit
def to_lanes(x, n0, pt, pl, hp, wp, zero, xt):
    """xt[(((h + pt)*wp + w + pl)*C + c)*L + l] = x[n0 + l, c, h, w] for the samples there are;
    with ``zero`` (a thread's first chunk) the rest of xt is cleared first: the padding is never
    written, and the lanes past the batch (a last, partial chunk) are never read back.  Blocks of
    lanes x lanes (samples x positions of a plane) are transposed by vector shuffles."""
    n_, c_, h_, w_ = x.shape
    lanes = vlanes(xt)
    nl = min(lanes, n_ - n0)
    if zero:
        for e in range(c_ * hp * wp * lanes):
            xt[e] = 0
    xf = x.reshape(x.size)
    hw = h_ * w_
    chw = c_ * hw
    for c in range(c_):
        src = (n0 * c_ + c) * hw
        q = 0
        if nl == lanes:
            while q + lanes <= hw:          # positions q.. of the plane, one run per row
                h = q // w_
                w = q - h * w_
                k = 0
                while k < lanes:
                    run = min(lanes - k, w_ - w)
                    at = (((h + pt) * wp + w + pl - k) * c_ + c) * lanes
                    vtranspose(xf, src + q, chw, xt, at, c_ * lanes, k, k + run, False)
                    k += run
                    h += 1
                    w = 0
                q += lanes
        for e in range(q, hw):
            h = e // w_
            w = e - h * w_
            d = np.uint64((((h + pt) * wp + w + pl) * c_ + c) * lanes)
            for l in range(nl):
                xt[d + np.uint64(l)] = xf[np.uint64(src + e + l * chw)]


@jit
def lanes_conv(xt, wpk, offs, kmax, kcount, pin, pslot, pstart, b, accumulate, n0, fb0, fb1,
               tile, out):
    """out[n0 + l, f, position p] (+)= sum over k < kcount[phase] of wpk[phase, f // 8, k, f % 8]
    * xt[pin[p] + offs[phase, k] + l] (+ b[f]) for the chunk's samples and the filters of
    blocks fb0 <= f // 8 < fb1 (see the module docstring)."""
    n_, f_ = out.shape[0], out.shape[1]
    plane = out.shape[2] * out.shape[3]
    lanes = vlanes(xt)
    nl = min(lanes, n_ - n0)
    fp = (f_ + 7) // 8 * 8
    of = out.reshape(out.size)
    for fb in range(fb0 * 8, min(fp, fb1 * 8), 8):
        for ph in range(kcount.size):
            k_ = kcount[ph]
            p0, p1 = pstart[ph], pstart[ph + 1]
            ob = offs[ph * kmax:]    # ob[k + PREFETCH]: the next phase's (or padding)
            wb = wpk[((ph * (fp // 8)) + fb // 8) * kmax * 8:]
            for p in range(p0, p1, 2):
                t0 = pin[p]
                t1 = pin[p + 1]
                a0 = vzero(xt)
                a1 = vzero(xt)
                a2 = vzero(xt)
                a3 = vzero(xt)
                a4 = vzero(xt)
                a5 = vzero(xt)
                a6 = vzero(xt)
                a7 = vzero(xt)
                c0 = vzero(xt)
                c1 = vzero(xt)
                c2 = vzero(xt)
                c3 = vzero(xt)
                c4 = vzero(xt)
                c5 = vzero(xt)
                c6 = vzero(xt)
                c7 = vzero(xt)
                u = 0
                for k in range(k_):
                    t = ob[k]
                    tp = ob[k + PREFETCH]
                    vprefetch(xt, t0 + tp)
                    vprefetch(xt, t1 + tp)
                    x0 = vload(xt, t0 + t)
                    x1 = vload(xt, t1 + t)
                    s = vsplat(wb, u)
                    a0 = vfma(a0, s, x0)
                    c0 = vfma(c0, s, x1)
                    s = vsplat(wb, u + 1)
                    a1 = vfma(a1, s, x0)
                    c1 = vfma(c1, s, x1)
                    s = vsplat(wb, u + 2)
                    a2 = vfma(a2, s, x0)
                    c2 = vfma(c2, s, x1)
                    s = vsplat(wb, u + 3)
                    a3 = vfma(a3, s, x0)
                    c3 = vfma(c3, s, x1)
                    s = vsplat(wb, u + 4)
                    a4 = vfma(a4, s, x0)
                    c4 = vfma(c4, s, x1)
                    s = vsplat(wb, u + 5)
                    a5 = vfma(a5, s, x0)
                    c5 = vfma(c5, s, x1)
                    s = vsplat(wb, u + 6)
                    a6 = vfma(a6, s, x0)
                    c6 = vfma(c6, s, x1)
                    s = vsplat(wb, u + 7)
                    a7 = vfma(a7, s, x0)
                    c7 = vfma(c7, s, x1)
                    u += 8
                s = vsplat(b, fb)
                a0 = vadd(a0, s)
                c0 = vadd(c0, s)
                s = vsplat(b, fb + 1)
                a1 = vadd(a1, s)
                c1 = vadd(c1, s)
                s = vsplat(b, fb + 2)
                a2 = vadd(a2, s)
                c2 = vadd(c2, s)
                s = vsplat(b, fb + 3)
                a3 = vadd(a3, s)
                c3 = vadd(c3, s)
                s = vsplat(b, fb + 4)
                a4 = vadd(a4, s)
                c4 = vadd(c4, s)
                s = vsplat(b, fb + 5)
                a5 = vadd(a5, s)
                c5 = vadd(c5, s)
                s = vsplat(b, fb + 6)
                a6 = vadd(a6, s)
                c6 = vadd(c6, s)
                s = vsplat(b, fb + 7)
                a7 = vadd(a7, s)
                c7 = vadd(c7, s)
                d = pslot[p] * 8 * lanes
                vstore(tile, d, a0)
                vstore(tile, d + lanes, a1)
                vstore(tile, d + 2 * lanes, a2)
                vstore(tile, d + 3 * lanes, a3)
                vstore(tile, d + 4 * lanes, a4)
                vstore(tile, d + 5 * lanes, a5)
                vstore(tile, d + 6 * lanes, a6)
                vstore(tile, d + 7 * lanes, a7)
                d = pslot[p + 1] * 8 * lanes
                vstore(tile, d, c0)
                vstore(tile, d + lanes, c1)
                vstore(tile, d + 2 * lanes, c2)
                vstore(tile, d + 3 * lanes, c3)
                vstore(tile, d + 4 * lanes, c4)
                vstore(tile, d + 5 * lanes, c5)
                vstore(tile, d + 6 * lanes, c6)
                vstore(tile, d + 7 * lanes, c7)
        _from_tile(tile, fb, accumulate, n0, nl, of, f_, plane)


@jit
def _from_tile(tile, fb, accumulate, n0, nl, of, f_, plane):
    """out[n0 + l, fb + r, p] (+)= tile[(p, r), l]: blocks of lanes positions transposed by
    vector shuffles (``vtranspose``), the last few one by one."""
    lanes = vlanes(tile)
    for r in range(min(8, f_ - fb)):
        store_transposed(tile, r * lanes, 8 * lanes, of, ((n0 * f_) + fb + r) * plane, plane,
                         f_ * plane, nl, accumulate)


@jit
def store_transposed(tile, t0, tstride, of, base, plane, step, nl, accumulate):
    """of[base + p + l * step] (+)= tile[t0 + p * tstride + l] for p < plane, l < nl (a plane of
    lanes samples back to NCHW): blocks of lanes positions by vector shuffles (``vtranspose``),
    the last few one by one."""
    lanes = vlanes(tile)
    p = 0
    while p + lanes <= plane:
        vtranspose(tile, t0 + p * tstride, tstride, of, base + p, step, 0, nl, accumulate)
        p += lanes
    for q in range(p, plane):
        src = t0 + q * tstride
        d = np.uint64(base + q)
        for l in range(nl):
            if accumulate:
                of[d + np.uint64(l * step)] += tile[src + l]
            else:
                of[d + np.uint64(l * step)] = tile[src + l]


@jit
def lanes_driver(x, wpk, offs, kmax, kcount, pin, pslot, pstart, pt, pl, hp, wp, b, accumulate,
                 xt, tile, out, parts, i0, i1):
    """Pieces i0 <= i < i1: chunk i // parts of the batch, part i % parts of its blocks of
    filters (to_lanes once per chunk), then lanes_conv."""
    lanes = vlanes(xt)
    blocks = (out.shape[1] + 7) // 8
    last = -1
    for i in range(i0, i1):
        ch, part = i // parts, i % parts
        if ch != last:
            to_lanes(x, ch * lanes, pt, pl, hp, wp, last < 0, xt)
            last = ch
        lanes_conv(xt, wpk, offs, kmax, kcount, pin, pslot, pstart, b, accumulate, ch * lanes,
                   part * blocks // parts, (part + 1) * blocks // parts, tile, out)


_ZEROS = {}


def _zeros(n, dtype):
    """A zero bias of n elements (read only; the bias is padded to the blocks of filters)."""
    key = (n, np.dtype(dtype))
    if key not in _ZEROS:
        _ZEROS[key] = np.zeros(n, dtype)
    return _ZEROS[key]


def _round(n):
    return -(-n // 16) * 16


def workspace_size(geo, threads):
    """Elements: the packed weights, then per thread xt and the tile, each on 64-byte lines
    (a vector load across two lines costs two)."""
    return 16 + _round(geo.wpk) + threads * (_round(geo.xt) + _round(geo.tile))


def run(geo, x, w, b, accumulate, out, workspace, threads):
    """out (+)= the gather of ``geo`` over x by w (+ b, or None), on ``threads`` threads."""
    from cnnspec.kernels._jit import run_split
    at = (-(workspace.ctypes.data // workspace.itemsize)) % (64 // workspace.itemsize)
    wpk = workspace[at:at + geo.wpk]
    pack(w, geo.wbase, geo.wf, geo.f, geo.fp, geo.kmax, wpk)
    xt, tile = _round(geo.xt), _round(geo.tile)
    base, per = at + _round(geo.wpk), xt + tile
    bp = _zeros(geo.fp, x.dtype)
    if b is not None:
        bp = np.zeros(geo.fp, x.dtype)
        bp[:b.size] = b
    n = chunks(x.shape[0], x.dtype)
    # a batch of few chunks is also split by blocks of filters, so that every thread has work
    parts = 1 if threads <= 1 else min(-(-2 * threads // n), geo.fp // BLOCK_F)
    run_split(lanes_driver, n * parts, threads, lambda t, lo, hi: (
        x, wpk, geo.offs, geo.kmax, geo.kcount, geo.pin, geo.pslot, geo.pstart, geo.pt, geo.pl,
        geo.hp, geo.wp, bp, bool(accumulate), workspace[base + t * per:base + t * per + geo.xt],
        workspace[base + t * per + xt:base + t * per + xt + geo.tile], out, parts, lo, hi),
        dynamic=True)


# -- the weight gradient, filters in the lanes, input channels innermost -----------------------
# dw^T[(i, j, c), f] = sum over samples and outputs p of xs[pin(p) + (i*dh*wp + j)*C + c] *
# g^T[p, f], xs the sample padded and channel-innermost ([hp, wp, C]), g^T the output gradient
# transposed ([OH*OW, Fp]).  A kernel row's KW*C taps are one contiguous run of xs: a block of
# 12 consecutive taps is 12 broadcasts at one base (no table of offsets, whose 12 entries the
# filters-in-lanes loops on the wide grid kept in registers: 1.12-1.26x slower), times 2 vectors
# of filters = 24 accumulators, added as vectors into the piece's partial dw^T after each sample.
# A width dilated by dw is laid out in dw column phases ([hp, dw, wq, C], padded column q at
# phase q % dw, index q // dw): tap j of an output at column q0 reads column q0 + j*dw, index
# q0 // dw + j of phase q0 % dw, so the run stays contiguous.  A run that is not a multiple of
# 12 reads a few values past it in its last block: those accumulators are never read back.

ROWS_TAPS = 12


class RowsGeometry:
    """Sizes and tables of weight_grad_rows for x (N, C, H, W), w (F, C, KH, KW) and an output
    (OH, OW): xs (padded plane, channels innermost, its width in dilation[1] column phases of wq
    columns, wp = dilation[1]*wq positions a row; + one block of slack; with phases, + the
    sample unpadded for to_hwc), g^T, the partial
    dw^T [KH, blocks * 12, Fp] and db; pin: each output's base in xs."""

    def __init__(self, x_shape, w_shape, stride, pad, dilation, oh, ow):
        _, c, h, w = x_shape
        f, _, kh, kw = w_shape
        dc = dilation[1]
        self.pt, self.pl = pad[0], pad[2]
        self.hp = max(h + pad[0], (oh - 1) * stride[0] + (kh - 1) * dilation[0] + 1)
        self.wq = -(-max(w + pad[2], (ow - 1) * stride[1] + (kw - 1) * dc + 1) // dc)
        self.wp = dc * self.wq
        self.blocks = -(-(kw * c) // ROWS_TAPS)
        self.fp = -(-f // 32) * 32
        self.xs = _round(self.hp * self.wp * c + ROWS_TAPS + (h * w * c if dc > 1 else 0))
        self.gt = _round(oh * ow * self.fp)
        self.dw = kh * self.blocks * ROWS_TAPS * self.fp
        self.per = self.xs + self.gt + _round(self.dw + f)
        self.pin = np.array([(o * stride[0] * self.wp + q * stride[1] % dc * self.wq
                              + q * stride[1] // dc) * c for o in range(oh) for q in range(ow)],
                            np.int64)


@functools.lru_cache(maxsize=64)
def rows_geometry(x_shape, w_shape, stride, pad, dilation, oh, ow):
    return RowsGeometry(x_shape, w_shape, stride, pad, dilation, oh, ow)


@jit
def to_hwc(x, n, pt, pl, wp, dc, wq, cs, dst):
    """dst[((h + pt)*wp + (w + pl) % dc * wq + (w + pl) // dc)*cs + c] = x[n, c, h, w] (dc: the
    column phases, 1 for none, wp = dc*wq).  With phases (cs = C), x[n] goes to dst's last
    H*W*C elements first (channels innermost, _hwc), whose rows of C are then moved to their
    phases (scalar copies with a division per element ran 1.6x slower than the lanes' loops on
    dilated widths)."""
    if dc == 1:
        _hwc(x, n, pt, pl, wp, cs, dst)
        return
    _, c_, h_, w_ = x.shape
    at = dst.size - h_ * w_ * c_
    _hwc(x, n, 0, 0, w_, c_, dst[at:])
    for h in range(h_):
        row = (h + pt) * wp
        ph, q = pl % dc, pl // dc
        for w in range(w_):
            src = dst[at + (h * w_ + w) * c_:]
            d = dst[(row + ph * wq + q) * c_:]
            for c in range(c_):
                d[c] = src[c]
            ph += 1
            if ph == dc:
                ph = 0
                q += 1


@jit
def _hwc(x, n, pt, pl, wp, cs, dst):
    """dst[((h + pt)*wp + w + pl)*cs + c] = x[n, c, h, w]: blocks of lanes channels x lanes
    positions transposed by vector shuffles, the rest one by one."""
    _, c_, h_, w_ = x.shape
    lanes = vlanes(dst)
    xf = x.reshape(x.size)
    hw = h_ * w_
    c0 = 0
    while c0 + lanes <= c_:
        src = (n * c_ + c0) * hw
        q = 0
        while q + lanes <= hw:
            h = q // w_
            w = q - h * w_
            k = 0
            while k < lanes:
                run = min(lanes - k, w_ - w)
                at = ((h + pt) * wp + w + pl - k) * cs + c0
                vtranspose(xf, src + q, hw, dst, at, cs, k, k + run, False)
                k += run
                h += 1
                w = 0
            q += lanes
        for e in range(q, hw):
            h = e // w_
            d = ((h + pt) * wp + e - h * w_ + pl) * cs + c0
            for c in range(lanes):
                dst[np.uint64(d + c)] = xf[np.uint64(src + c * hw + e)]
        c0 += lanes
    for c in range(c0, c_):
        src = (n * c_ + c) * hw
        for e in range(hw):
            h = e // w_
            dst[np.uint64(((h + pt) * wp + e - h * w_ + pl) * cs + c)] = xf[np.uint64(src + e)]


@jit
def _vadd2(a, i, u, v):
    """a[i : i + 2*lanes] += (u, v)."""
    lanes = vlanes(a)
    vstore(a, i, vadd(vload(a, i), u))
    vstore(a, i + lanes, vadd(vload(a, i + lanes), v))


@jit
def weight_grad_rows(dout, x, kernel, dilation, pt, pl, hp, wp, wq, fp, blocks, pin, need_dw,
                     need_db, xs_size, gt_size, buf, n0, n1):
    """The partial dw^T [KH, blocks*12, Fp] and db (F) of samples n0 <= n < n1 in buf
    ([xs | g^T | dw^T | db], see RowsGeometry)."""
    c_, f_ = x.shape[1], dout.shape[1]
    kh = kernel[0]
    p_ = dout.shape[2] * dout.shape[3]
    ow_ = dout.shape[3]
    lanes = vlanes(buf)
    xs = buf[:xs_size]
    gt = buf[xs_size:xs_size + gt_size]
    o_dw = xs_size + gt_size
    run = kh * blocks * 12 * fp
    dwp = buf[o_dw:o_dw + run]
    dbp = buf[o_dw + run:o_dw + run + f_]
    for e in range(run):
        dwp[e] = 0
    for e in range(f_):
        dbp[e] = 0
    if need_dw:
        for e in range(xs_size):
            xs[e] = 0
        for e in range(gt_size):
            gt[e] = 0
    for n in range(n0, n1):
        if need_db:              # float64 sums, vectorised (a plain loop ran ~8 us a sample on
            _bias_grad_add(dout, n, dbp)          # the 5x5 row: one add's latency per term)
        if not need_dw:
            continue
        to_hwc(x, n, pt, pl, wp, dilation[1], wq, c_, xs)
        to_hwc(dout, n, 0, 0, ow_, 1, ow_, fp, gt)
        for fb in range(0, fp, 2 * lanes):
            for i in range(kh):
                oi = i * dilation[0] * wp * c_
                for kb in range(blocks):
                    k0 = oi + kb * 12
                    a0 = vzero(buf)
                    a1 = vzero(buf)
                    a2 = vzero(buf)
                    a3 = vzero(buf)
                    a4 = vzero(buf)
                    a5 = vzero(buf)
                    a6 = vzero(buf)
                    a7 = vzero(buf)
                    a8 = vzero(buf)
                    a9 = vzero(buf)
                    a10 = vzero(buf)
                    a11 = vzero(buf)
                    b0 = vzero(buf)
                    b1 = vzero(buf)
                    b2 = vzero(buf)
                    b3 = vzero(buf)
                    b4 = vzero(buf)
                    b5 = vzero(buf)
                    b6 = vzero(buf)
                    b7 = vzero(buf)
                    b8 = vzero(buf)
                    b9 = vzero(buf)
                    b10 = vzero(buf)
                    b11 = vzero(buf)
                    for p in range(p_):
                        t = pin[p] + k0
                        g = p * fp + fb
                        y0 = vload(gt, g)
                        y1 = vload(gt, g + lanes)
                        s = vsplat(xs, t)
                        a0 = vfma(a0, s, y0)
                        b0 = vfma(b0, s, y1)
                        s = vsplat(xs, t + 1)
                        a1 = vfma(a1, s, y0)
                        b1 = vfma(b1, s, y1)
                        s = vsplat(xs, t + 2)
                        a2 = vfma(a2, s, y0)
                        b2 = vfma(b2, s, y1)
                        s = vsplat(xs, t + 3)
                        a3 = vfma(a3, s, y0)
                        b3 = vfma(b3, s, y1)
                        s = vsplat(xs, t + 4)
                        a4 = vfma(a4, s, y0)
                        b4 = vfma(b4, s, y1)
                        s = vsplat(xs, t + 5)
                        a5 = vfma(a5, s, y0)
                        b5 = vfma(b5, s, y1)
                        s = vsplat(xs, t + 6)
                        a6 = vfma(a6, s, y0)
                        b6 = vfma(b6, s, y1)
                        s = vsplat(xs, t + 7)
                        a7 = vfma(a7, s, y0)
                        b7 = vfma(b7, s, y1)
                        s = vsplat(xs, t + 8)
                        a8 = vfma(a8, s, y0)
                        b8 = vfma(b8, s, y1)
                        s = vsplat(xs, t + 9)
                        a9 = vfma(a9, s, y0)
                        b9 = vfma(b9, s, y1)
                        s = vsplat(xs, t + 10)
                        a10 = vfma(a10, s, y0)
                        b10 = vfma(b10, s, y1)
                        s = vsplat(xs, t + 11)
                        a11 = vfma(a11, s, y0)
                        b11 = vfma(b11, s, y1)
                    d = ((i * blocks + kb) * 12) * fp + fb
                    _vadd2(dwp, d, a0, b0)
                    _vadd2(dwp, d + fp, a1, b1)
                    _vadd2(dwp, d + 2 * fp, a2, b2)
                    _vadd2(dwp, d + 3 * fp, a3, b3)
                    _vadd2(dwp, d + 4 * fp, a4, b4)
                    _vadd2(dwp, d + 5 * fp, a5, b5)
                    _vadd2(dwp, d + 6 * fp, a6, b6)
                    _vadd2(dwp, d + 7 * fp, a7, b7)
                    _vadd2(dwp, d + 8 * fp, a8, b8)
                    _vadd2(dwp, d + 9 * fp, a9, b9)
                    _vadd2(dwp, d + 10 * fp, a10, b10)
                    _vadd2(dwp, d + 11 * fp, a11, b11)


@jit
def _rows_sum(ws, at, per, pieces, blocks, fp, kh, need_dw, need_db, dw, db):
    """dw[f, c, i, j] = the pieces' dw^T[i, j*C + c, f] summed in piece order; db likewise (KH
    given: dw may be the empty stand-in)."""
    f_, c_, _, kw = dw.shape
    o_db = kh * blocks * 12 * fp
    if need_dw:
        acc = ws[at:at + o_db]
        for t in range(1, pieces):              # piece 0 += piece t, in order (streaming)
            part = ws[at + t * per:at + t * per + o_db]
            for e in range(o_db):
                acc[e] += part[e]
        for i in range(kh):                     # acc's rows in order, filters innermost:
            for j in range(kw):                 # 1.4-2x faster than dw's order (ResNet-8's)
                for c in range(c_):
                    r = (i * blocks * 12 + j * c_ + c) * fp
                    for f in range(f_):
                        dw[f, c, i, j] = acc[r + f]
    if need_db:
        _sum_pieces(ws, at + o_db, per, pieces, db)


def rows_workspace_size(geo, pieces):
    return 16 + pieces * geo.per


def weight_grad(geo, dout, x, w_shape, dilation, dw, db, workspace, threads):
    """dw (F, C, KH, KW) and db (F,) (either may be None) of the convolution of x giving dout,
    by weight_grad_rows over pieces of the batch (two per thread), summed in piece order."""
    from cnnspec.kernels._jit import piece_count, run_split
    from cnnspec.kernels.conv import _empty
    n = x.shape[0]
    pieces = piece_count(n, threads, 2)
    at = (-(workspace.ctypes.data // workspace.itemsize)) % (64 // workspace.itemsize)
    per = geo.per
    empty1, empty4 = _empty(x.dtype)
    run_split(weight_grad_rows, n, threads, lambda t, lo, hi: (
        dout, x, (w_shape[2], w_shape[3]), tuple(dilation), geo.pt, geo.pl, geo.hp, geo.wp, geo.wq,
        geo.fp, geo.blocks, geo.pin, dw is not None, db is not None, geo.xs, geo.gt,
        workspace[at + t * per:at + (t + 1) * per], lo, hi), pieces=pieces)
    _rows_sum(workspace, at + geo.xs + geo.gt, per, pieces, geo.blocks, geo.fp, w_shape[2],
              dw is not None, db is not None, empty4 if dw is None else dw,
              empty1 if db is None else db)
