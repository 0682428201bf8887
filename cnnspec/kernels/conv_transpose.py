"""Transposed convolution (PyTorch's ConvTranspose1d/2d), forward and backward.

    out[n, f, h*sh + i*dh - top, w*sw + j*dw - left] += x[n, c, h, w] * w[c, f - g*Fg, i, j]

for input channel c in group g (Cg = C/groups input and Fg = F/groups output channels per group),
plus b[f]; w is (C, F/groups, KH, KW), PyTorch's layout.  Output size per axis:
``(in - 1)*stride - pad_before - pad_after + dilation*(k - 1) + output_pad + 1``: ``pad`` crops
the full output, ``output_pad`` adds rows and columns at the bottom and right (which only the
inputs within reach, or else the bias, fill).

A transposed convolution is the adjoint of a convolution with the same weights, and is computed
as one: matrix products with its columns.  Per group, with K = KH*KW and P the input positions
of a chunk of G samples (P = G*H*W, samples side by side):

* forward:  col (Fg*K, P) = w_g^T (Fg*K, Cg) @ xc (Cg, P), then col2im: every column entry is
            added at its output position (``_col2im``); xc is x channel-major (C, G, H*W);
* backward: colD (Fg*K, P) = dout at those positions (``_im2col``: the gather, zero outside),
            dxc (Cg, P) = w_g @ colD, and dw_g (Cg, Fg*K) += xc @ colD^T;  db = sums of dout.

Samples are batched into each product (G samples, col at most ~2^19 elements) because the
planes of a generator are small: DCGAN's 8x8 -> 16x16 gives products of 64 columns per sample.
Running the transposed convolution on conv.py's kernels (its forward a convolution's input
gradient) measured 0.65x PyTorch's speed on one thread (DCGAN's 4x4 stride-2 128 -> 64 at batch
64); with the samples batched the products run at BLAS's large-matrix speed (~90 GFLOP/s on one
Zen 4 core).  Samples are split over threads (each thread its chunks, its slice of the workspace
and a partial dw summed in thread order afterwards: results do not depend on timing).

Where the taps overlap (a kernel wider than its stride: DCGAN's 4x4 stride 2, every output the
sum of four taps) and the batch fills the lanes (16 samples in float32, one chunk per thread or
more), the forward runs the same products with the samples in the vector lanes
(``_forward_lanes``): xl (C, HW*L) holds L samples side by side at each position, so the col
entries of a tap and position are one vector of L samples, and each output position is the sum
of its taps' vectors (a table per layer, ``_tap_table``), transposed back to NCHW by vector
shuffles.  The scalar col2im above spent 2.2 of DCGAN's 14.6 ms (one thread, batch 64) on
stride-2 adds; this forward measured 1.07-1.12x faster there, 1.11x on 3x3 stride 2, 0.92-0.96x
on U-Net's 2x2 stride 2 (one tap an output: a copy, which the scalar col2im does faster), where
the products stay.  The samples past the last whole chunk run the products.

On AVX-512 (groups 1, at least a million multiply-adds; ``_lanes_geometry``, ``_rows_geometry``
and ``_adjoint_plan`` say where): the forward by conv_lanes.py with the samples in the vector
lanes (batches of 16 or more, output planes up to 32x32; one stride-1 gather per residue of the
stride), dx by conv_lanes.py too where the adjoint convolution's wide grid would waste 10% or
more (that convolution of dout by w with this stride and padding), else as that convolution's
direct forward (conv.py), dw by conv_lanes.weight_grad_rows on that convolution (dout
its input, x its output gradient, C >= 32 its filters).  The lanes' gathers skip the taps that
fall in the padding where that saves 3% or more (``SkipGather``, below).  The products stay for
the rest, and for dx with dw where dw does not run so (they share one im2col).
"""
import functools

import numpy as np

from cnnspec.kernels._blas import gemm
from cnnspec.kernels._jit import jit, num_threads, run_split, sum64
from cnnspec.kernels.conv import _empty, _span, _zero
from cnnspec.kernels.conv_lanes import PREFETCH, _from_tile, store_transposed
from cnnspec.kernels.conv_lanes import to_lanes as _to_lanes
from cnnspec.kernels._simd import lanes_of, vadd, vfma, vlanes, vload, vprefetch, vsplat, vstore
from cnnspec.kernels._simd import vtranspose, vzero

_COL_ELEMENTS = 1 << 19           # elements of one chunk's col (2 MB in float32)
_PARALLEL_MACS = 1 << 21          # below this many multiply-adds one thread is faster
_LANES = None                     # tests: True / False, the forward and dx by conv_lanes.py
                                  # wherever groups is 1 / never; None: the rules (_lanes_geometry)
_LANES_MAX_PLANE = 1024           # planes (outputs of the gather) up to 32x32: its tile, 8 filters
                                  # x plane x lanes, stays within 512 KB
_SKIP_AT_MOST = 0.97              # SkipGather where it computes at most this share of the taps
_DW_ROWS = None                   # tests: True / False, dw by conv_lanes.weight_grad_rows of the
                                  # adjoint convolution wherever it applies / never; None: the rules
_LANE_PRODUCTS = None             # tests: True / False, the forward's products with the samples
                                  # in the lanes for every whole chunk / never; None: the rules
_LANE_COL = 1 << 21               # elements of _forward_lanes' col at most (8 MB in float32): the
                                  # filters in blocks where all of them would take more


def conv_transpose_output_size(size, kernel, stride, pad_before, pad_after, output_pad=0,
                               dilation=1):
    """Output length along one axis (PyTorch's ConvTranspose rule)."""
    return ((size - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + output_pad
            + 1)


def conv_transpose2d_output_shape(x_shape, w_shape, stride, pad, output_pad, dilation=(1, 1),
                                  groups=1):
    """(N, F, OH, OW) of x (N, C, H, W) through w (C, F/groups, KH, KW)."""
    n, _, h, w = x_shape
    _, fg, kh, kw = w_shape
    return (n, fg * groups,
            conv_transpose_output_size(h, kh, stride[0], pad[0], pad[1], output_pad[0],
                                       dilation[0]),
            conv_transpose_output_size(w, kw, stride[1], pad[2], pad[3], output_pad[1],
                                       dilation[1]))


def _layout(x_shape, w_shape, groups):
    """(samples per chunk G, elements per thread): a thread's slice of the workspace holds
    [xc (C, G*HW) | col (F*K, G*HW) | dxc (C, G*HW) | partial dw (C, Fg*K) | partial db (F)]."""
    _, c, h, w = x_shape
    _, fg, kh, kw = w_shape
    hw, fk = h * w, fg * groups * kh * kw
    g = max(1, min(x_shape[0], _COL_ELEMENTS // max(1, fk * hw)))
    return g, 2 * c * g * hw + fk * g * hw + c * fg * kh * kw + fg * groups


def _threads(n, macs):
    return 1 if macs < _PARALLEL_MACS else min(num_threads(), n)


def conv_transpose2d_workspace_size(x_shape, w_shape, stride, pad, output_pad, dilation=(1, 1),
                                    groups=1):
    """Elements of the scratch ``workspace`` (x's dtype) that forward and backward need (for
    the current thread count); one workspace may be shared by all layers."""
    from cnnspec.kernels.conv import _rules
    return _workspace_size(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(pad),
                           tuple(output_pad), tuple(dilation), groups, num_threads(),
                           (_LANES, _DW_ROWS, _LANES_MAX_PLANE, _LANE_PRODUCTS) + _rules())


@functools.lru_cache(maxsize=256)
def _workspace_size(x_shape, w_shape, stride, pad, output_pad, dilation, groups, threads, rules):
    """conv_transpose2d_workspace_size, once per layer, thread count and the switches its rules
    read (``rules``; working it out took ~46 us of the layer API's call)."""
    del threads, rules                  # in the key only: the functions below read them
    out_shape = conv_transpose2d_output_shape(x_shape, w_shape, stride, pad, output_pad,
                                              dilation, groups)
    size = products_workspace_size(x_shape, w_shape, out_shape, stride, dilation, groups)
    if _adjoint_plan(out_shape, x_shape, w_shape, stride, pad, dilation, groups) is not None:
        from cnnspec.kernels.conv import conv2d_workspace_size
        size = max(size, conv2d_workspace_size(out_shape, w_shape, stride, pad, dilation, 1))
    from cnnspec.kernels import conv_lanes
    for kind in ("forward", "dx"):      # float32's lanes: float64's tables are smaller
        geo = _lanes_geometry(kind, x_shape, w_shape, stride, pad, dilation, groups, out_shape,
                              np.float32)
        if geo is None and x_shape[0] >= 8:
            geo = _lanes_geometry(kind, (16, *x_shape[1:]), w_shape, stride, pad, dilation,
                                  groups, (16, *out_shape[1:]), np.float32)
        if geo is not None:
            size = max(size, conv_lanes.workspace_size(geo.geo, num_threads()))
    rows = _rows_geometry(out_shape, x_shape, w_shape, stride, pad, dilation, groups)
    if rows is not None:
        size = max(size, conv_lanes.rows_workspace_size(rows, 2 * num_threads()))
    return size


def _lanes_geometry(kind, x_shape, w_shape, stride, pad, dilation, groups, out_shape, dtype):
    """The SkipGather (conv_lanes.py's gather without its padding taps, below) of the forward
    (``kind`` "forward": x -> out) or the input gradient ("dx": the adjoint convolution of dout
    -> x), or None where it does not run: it runs for groups 1 on AVX-512, batches of at least
    the lanes (16 samples in float32) and gathers of at least a million multiply-adds onto
    planes of at most _LANES_MAX_PLANE.
    Measured against the batched products (forward) and the adjoint convolution's direct
    forward (dx; float32, one thread, CPU time): see the README's issue 16 fifth round."""
    from cnnspec.kernels._simd import lanes_of
    from cnnspec.kernels.conv import _DIRECT_MACS, _wide_vector_cpu
    if groups != 1 or _LANES is False:
        return None
    lanes = lanes_of(dtype)
    oh, ow = (out_shape[2], out_shape[3]) if kind == "forward" else (x_shape[2], x_shape[3])
    if _LANES is None:
        from cnnspec.kernels.conv import _SLANES_WASTE, _direct_pitch, wide_waste
        macs = x_shape[0] * x_shape[1] * x_shape[2] * x_shape[3] * w_shape[1] * w_shape[2] \
            * w_shape[3]
        if (x_shape[0] < lanes or oh * ow > _LANES_MAX_PLANE or macs < _DIRECT_MACS
                or not _wide_vector_cpu()):
            return None
        # dx: where the adjoint convolution's direct forward wastes much on its wide grid
        # (DCGAN's 4x4 stride 2 on 8x8: 1.5); U-Net's 2x2 stride 2 wastes nothing there, and
        # the lanes measured 0.54-0.71x of it
        if kind == "dx" and wide_waste(_direct_pitch(out_shape[3], tuple(stride), tuple(pad)),
                                       oh, ow) < _SLANES_WASTE:
            return None
    geometry = (tuple(stride), tuple(pad), tuple(dilation), oh, ow, lanes)
    if kind == "forward":
        return skip_geometry("forward", tuple(x_shape), tuple(w_shape), *geometry)
    return skip_geometry("conv", tuple(out_shape), tuple(w_shape), *geometry)


def _lane_chunks(x_shape, w_shape, stride, dilation, groups, dtype):
    """(chunks, threads): the whole chunks of lanes samples whose forward runs as products in
    the lanes (``_forward_lanes``; 0: none), and the threads they run on.  The rules: groups 1,
    taps that overlap (a kernel's extent wider than its stride along an axis), at least a
    chunk per thread, and x's chunk in the lanes (C*H*W*L) within _LANE_COL.  Measured against the products with the scalar col2im (float32, AMD EPYC,
    AVX2, 7 rounds of 5 calls, median speed-up, 1 / 2 threads): DCGAN's 4x4 stride 2 128 -> 64
    at 64x8x8 1.10x / 1.07x, 64 -> 32 at 64x16x16 1.13x / 1.08x, 3x3 stride 2 at 32x64x16x16
    1.11x / 1.09x, 4x4 on 1x1 (a generator's first layer, 16x512) 1.32x; 3x3 stride 1 0.99x /
    1.01x; U-Net's 2x2 stride 2 (no overlap) 0.96x / 0.93x."""
    macs = int(np.prod(x_shape)) * w_shape[1] * w_shape[2] * w_shape[3]
    threads = _threads(x_shape[0], macs)
    chunks = x_shape[0] // lanes_of(dtype)
    if groups != 1 or _LANE_PRODUCTS is False or chunks == 0:
        return 0, threads
    if _LANE_PRODUCTS is None:
        overlap = any((k - 1) * d + 1 > s for k, s, d in zip(w_shape[2:], stride, dilation))
        xl = x_shape[1] * x_shape[2] * x_shape[3] * lanes_of(dtype)
        if not overlap or chunks < threads or xl > _LANE_COL:
            return 0, threads
    return chunks, threads


def products_workspace_size(x_shape, w_shape, out_shape, stride, dilation, groups):
    """Elements of the workspace that the products of the forward and the backward need
    (either dtype)."""
    return max(num_threads() * _layout(tuple(x_shape), tuple(w_shape), groups)[1],
               forward_products_workspace_size(x_shape, w_shape, out_shape, stride, dilation,
                                               groups))


def forward_products_workspace_size(x_shape, w_shape, out_shape, stride, dilation, groups):
    """Elements of the workspace that ``forward_products`` alone needs (either dtype): the
    lanes' slices for its whole chunks, the scalar products' for the samples after them (none
    where the chunks take the batch): what a strided convolution's dx by these products
    (``conv._transposed_dx``) reserves."""
    size = 0
    for dtype in (np.float32, np.float64):
        chunks, threads = _lane_chunks(x_shape, w_shape, stride, dilation, groups, dtype)
        if chunks:
            size = max(size, threads * _lanes_per_thread(x_shape, w_shape, out_shape,
                                                         lanes_of(dtype)))
        tail = x_shape[0] - chunks * lanes_of(dtype)
        if tail:
            size = max(size, num_threads() * _layout((tail, *x_shape[1:]), tuple(w_shape),
                                                     groups)[1])
    return size


def _lane_filters(x_shape, w_shape, lanes):
    """Filters per block of _forward_lanes' products: all of them where their col holds at most
    _LANE_COL elements, else as many as fit: a 3x3 stride-2 convolution's dx of 64 -> 128 at
    32x56x56 took 34 MB of workspace with col whole, 14 MB in four blocks, which run at 0.91x
    its speed (two blocks: 22 MB, 0.96x); still 1.7x the strided dx before them."""
    per_filter = w_shape[2] * w_shape[3] * x_shape[2] * x_shape[3] * lanes
    return max(1, min(w_shape[1], _LANE_COL // per_filter))


def _lanes_per_thread(x_shape, w_shape, out_shape, lanes):
    """A thread's slice of the workspace for _forward_lanes: [xl (C, HW*L) | col (Fb*K, HW*L) |
    tile (OH*OW*L)], Fb filters a block (_lane_filters)."""
    pl = x_shape[2] * x_shape[3] * lanes
    fb = _lane_filters(x_shape, w_shape, lanes)
    return (x_shape[1] + fb * w_shape[2] * w_shape[3]) * pl + out_shape[2] * out_shape[3] * lanes


@functools.lru_cache(maxsize=64)
def _tap_table(h_, w_, oh_, ow_, kernel, stride, pad, dilation, lanes):
    """For each output position o (of OH*OW): the offsets in a filter's rows of col, (i*KW +
    j)*HW*L + (h*W + w)*L, of the taps that land there, in (i, j) order: offs[start[o] :
    start[o + 1]] (positions that no tap reaches, output padding, have none)."""
    (kh, kw), pl = kernel, h_ * w_ * lanes
    oy = np.arange(h_)[:, None] * stride[0] + np.arange(kh)[None, :] * dilation[0] - pad[0]
    ox = np.arange(w_)[:, None] * stride[1] + np.arange(kw)[None, :] * dilation[1] - pad[2]
    lists = [[] for _ in range(oh_ * ow_)]
    for i in range(kh):
        for j in range(kw):
            for h in range(h_):
                if not 0 <= oy[h, i] < oh_:
                    continue
                for w in range(w_):
                    if 0 <= ox[w, j] < ow_:
                        lists[oy[h, i] * ow_ + ox[w, j]].append((i * kw + j) * pl
                                                                 + (h * w_ + w) * lanes)
    start = np.zeros(oh_ * ow_ + 1, np.int64)
    start[1:] = np.cumsum([len(taps) for taps in lists])
    offs = np.array([o for taps in lists for o in taps], np.int64)
    return start, offs


@jit
def _lanes_major(x, n0, xl):
    """xl[c, p*L + l] = x[n0 + l, c, p] (lanes past the batch: 0); blocks of lanes positions
    by vector shuffles (``vtranspose``), the rest one by one."""
    n_, c_ = x.shape[0], x.shape[1]
    hw = x.shape[2] * x.shape[3]
    lanes = vlanes(xl)
    nl = min(lanes, n_ - n0)
    xf = x.reshape(x.size)
    chw = c_ * hw
    for c in range(c_):
        src = (n0 * c_ + c) * hw
        dst = c * hw * lanes
        q = 0
        if nl == lanes:
            while q + lanes <= hw:
                vtranspose(xf, src + q, chw, xl, dst + q * lanes, lanes, 0, lanes, False)
                q += lanes
        for p in range(q, hw):
            d = np.uint64(dst + p * lanes)
            for l in range(nl):
                xl[d + np.uint64(l)] = xf[np.uint64(src + p + l * chw)]
            for l in range(nl, lanes):
                xl[d + np.uint64(l)] = 0


@jit
def _forward_lanes(x, w, b, accumulate, out, start, offs, fblock, buf, c0, c1):
    """Chunks [c0, c1) of lanes samples: per block of ``fblock`` filters col (Fb*K, HW*L) =
    w_b^T @ xl, then each output position is b[f] plus its taps' vectors (``_tap_table``), in a
    tile (OH*OW, L) stored back to NCHW (added there with ``accumulate``)."""
    n_, c_, h_, w_ = x.shape
    _, f_, kh, kw = w.shape
    k = kh * kw
    lanes = vlanes(buf)
    pl = h_ * w_ * lanes
    plane = out.shape[2] * out.shape[3]
    xl = buf[:c_ * pl]
    col = buf[c_ * pl:(c_ + fblock * k) * pl]
    tile = buf[(c_ + fblock * k) * pl:(c_ + fblock * k) * pl + plane * lanes]
    wf = w.reshape(w.size)
    of = out.reshape(out.size)
    for ch in range(c0, c1):
        n0 = ch * lanes
        _lanes_major(x, n0, xl)
        for fb in range(0, f_, fblock):
            fe = min(f_, fb + fblock)
            gemm(True, False, (fe - fb) * k, pl, c_, 1.0, wf[fb * k:], f_ * k, xl, pl, 0.0, col,
                 pl)
            for f in range(fb, fe):
                base = (f - fb) * k * pl
                for o in range(plane):
                    acc = vsplat(b, f) if b.size > 0 else vzero(tile)
                    for t in range(start[o], start[o + 1]):
                        acc = vadd(acc, vload(col, base + offs[t]))
                    vstore(tile, o * lanes, acc)
                store_transposed(tile, 0, lanes, of, (n0 * f_ + f) * plane, plane, f_ * plane,
                                 min(lanes, n_ - n0), accumulate)


def _gather_run(sg, x, w, b, accumulate, out, workspace, threads):
    """out (+)= the gather of SkipGather ``sg``: by skip_run where it skips at least 3% of the
    multiply-adds (DCGAN's 4x4 stride 2: 8-20%), else by conv_lanes.run on the same tables
    (U-Net's 2x2 stride 2 has no padding taps; the blocks of three measured 0.99x there)."""
    if sg.macs <= _SKIP_AT_MOST * sg.full:
        skip_run(sg, x, w, b, accumulate, out, workspace, threads)
    else:
        from cnnspec.kernels import conv_lanes
        conv_lanes.run(sg.geo, x, w, b, accumulate, out, workspace, threads)


def _adjoint_plan(out_shape, x_shape, w_shape, stride, pad, dilation, groups):
    """conv.py's plan of the convolution of the output (N, F, OH, OW) by w (C, F, KH, KW) with
    this stride, padding and dilation, whose input gradient is this transposed convolution's
    forward: its forward is this one's dx.  Returned where its direct kernels run (groups 1,
    at least a million multiply-adds; output padding below the stride, so that it gives
    back x's size), else None.  Used for dx alone (a frozen layer, the input gradient of
    ``model.gradient``).  Measured against the batched products below (float32, one thread, CPU
    time per call, 40 pairs of calls in alternating order, load 4; median speed-up, quartiles):
    dx alone, DCGAN's 4x4 s2 128->64 at 64x8x8 1.04x (0.99-1.12), the U-Net's 2x2 s2 64->32 at
    16x16x16 1.28x (1.23-1.37), 32->16 at 16x32x32 1.63x (1.57-1.66); without AVX-512 (AVX2's
    narrow blocks, AMD EPYC, 9 rounds in one process) 1.29x (1.16-1.38), 1.29x (1.27-1.32) and
    1.34x (1.33-1.53).  Not used when dw is
    wanted too: the products below share one im2col of dout between dx and dw, and dx + dw by
    conv.py (its dw from its weight-gradient kernels) measured 0.96x, 0.96x, 1.06x; dw alone
    1.28x, 0.85x, 1.01x.  Except without AVX-512 where the plan's dw has the filters in the
    lanes (conv_direct.weight_grad_lanes: x's channels a multiple of 16): dx + dw 1.30x
    (1.28-1.31), 1.05x (1.03-1.11), 1.14x (1.08-1.14); dw alone 1.36x, 1.25x, 1.20x (AMD EPYC,
    one thread, 9 rounds in one process)."""
    from cnnspec.kernels.conv import _layer_plan, conv2d_output_shape
    if groups != 1:
        return None
    geometry = (tuple(stride), tuple(pad), tuple(dilation))
    if tuple(conv2d_output_shape(out_shape, w_shape, *geometry)) != tuple(x_shape):
        return None
    plan = _layer_plan(out_shape, w_shape, *geometry, 1)    # the plan conv.py's calls take
    return plan if plan.direct is not None else None


def _rows_geometry(out_shape, x_shape, w_shape, stride, pad, dilation, groups):
    """conv_lanes.weight_grad_rows's tables for dw, as the weight gradient of the adjoint
    convolution (dout its input, x its output gradient, x's channels its filters), or None where
    it does not run: groups 1, the width not dilated, AVX-512, at least a million
    multiply-adds and x's channels filling the lanes (C >= 32).  Measured against the batched
    products (float32, one thread, CPU time): see the README's issue 16 fifth round."""
    from cnnspec.kernels import conv_lanes
    from cnnspec.kernels.conv import _DIRECT_MACS, _wide_vector_cpu
    if groups != 1 or dilation[1] != 1 or _DW_ROWS is False:
        return None
    if _DW_ROWS is None:
        macs = x_shape[0] * x_shape[1] * x_shape[2] * x_shape[3] * w_shape[1] * w_shape[2] \
            * w_shape[3]
        if x_shape[1] < 32 or macs < _DIRECT_MACS or not _wide_vector_cpu():
            return None
    return conv_lanes.rows_geometry(tuple(out_shape), tuple(w_shape), tuple(stride), tuple(pad),
                                    tuple(dilation), x_shape[2], x_shape[3])


# Flat arrays and unsigned indices in the copies below, as in conv.py: an unsigned index needs
# no negative-index test.


@jit
def _channel_major(x, n0, g_, xc):
    """xc[c, (n - n0)*HW + p] = x[n, c, p] for the chunk's samples."""
    c_ = x.shape[1]
    hw = x.shape[2] * x.shape[3]
    xf = x.reshape(x.size)
    ld = g_ * hw
    for n in range(g_):
        for c in range(c_):
            src = np.uint64(((n0 + n) * c_ + c) * hw)
            dst = np.uint64(c * ld + n * hw)
            for e in range(hw):
                xc[dst + np.uint64(e)] = xf[src + np.uint64(e)]


@jit
def _from_channel_major(xc, n0, g_, accumulate, dx):
    """dx[n, c, p] (+)= xc[c, (n - n0)*HW + p]."""
    c_ = dx.shape[1]
    hw = dx.shape[2] * dx.shape[3]
    df = dx.reshape(dx.size)
    ld = g_ * hw
    for n in range(g_):
        for c in range(c_):
            dst = np.uint64(((n0 + n) * c_ + c) * hw)
            src = np.uint64(c * ld + n * hw)
            if accumulate:
                for e in range(hw):
                    df[dst + np.uint64(e)] += xc[src + np.uint64(e)]
            else:
                for e in range(hw):
                    df[dst + np.uint64(e)] = xc[src + np.uint64(e)]


@jit
def _col2im(col, kernel, stride, pad, dilation, h_, w_, n0, g_, out):
    """out[n, f, h*sh + i*dh - top, w*sw + j*dw - left] += col[(f, i, j), (n - n0)*HW + h*W + w]
    for the positions inside out (the rest is cropped)."""
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    kh, kw = kernel
    hw = h_ * w_
    ld = g_ * hw
    of = out.reshape(out.size)
    sw = np.uint64(stride[1])
    for f in range(f_):
        for i in range(kh):
            offh = i * dilation[0] - pad[0]
            h0, h1 = _span(h_, oh_, stride[0], offh)
            for j in range(kw):
                offw = j * dilation[1] - pad[2]
                lo, hi = _span(w_, ow_, stride[1], offw)
                row = ((f * kh + i) * kw + j) * ld
                for n in range(g_):
                    for h in range(h0, h1):
                        src = np.uint64(row + n * hw + h * w_ + lo)
                        dst = np.uint64((((n0 + n) * f_ + f) * oh_ + h * stride[0] + offh) * ow_
                                        + lo * stride[1] + offw)
                        for e in range(hi - lo):
                            u = np.uint64(e)
                            of[dst + sw * u] += col[src + u]


@jit
def _im2col(dout, kernel, stride, pad, dilation, h_, w_, n0, g_, col):
    """col[(f, i, j), (n - n0)*HW + h*W + w] = dout[n, f, h*sh + i*dh - top, w*sw + j*dw - left],
    0 outside dout: the adjoint of _col2im."""
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    kh, kw = kernel
    hw = h_ * w_
    ld = g_ * hw
    df = dout.reshape(dout.size)
    sw = np.uint64(stride[1])
    for f in range(f_):
        for i in range(kh):
            offh = i * dilation[0] - pad[0]
            h0, h1 = _span(h_, oh_, stride[0], offh)
            for j in range(kw):
                offw = j * dilation[1] - pad[2]
                lo, hi = _span(w_, ow_, stride[1], offw)
                row = ((f * kh + i) * kw + j) * ld
                for n in range(g_):
                    base = row + n * hw
                    for h in range(h_):
                        dst = np.uint64(base + h * w_)
                        if h < h0 or h >= h1:
                            for e in range(w_):
                                col[dst + np.uint64(e)] = 0
                            continue
                        src = np.uint64((((n0 + n) * f_ + f) * oh_ + h * stride[0] + offh) * ow_
                                        + lo * stride[1] + offw)
                        for e in range(lo):
                            col[dst + np.uint64(e)] = 0
                        inner = dst + np.uint64(lo)
                        for e in range(hi - lo):
                            u = np.uint64(e)
                            col[inner + u] = df[src + sw * u]
                        for e in range(hi, w_):
                            col[dst + np.uint64(e)] = 0


@jit
def _fill_bias(out, b, accumulate, n0, n1):
    """out[n, f] = b[f] (0 without a bias) for n in [n0, n1); with ``accumulate`` out[n, f] +=
    b[f] (nothing without a bias)."""
    f_ = out.shape[1]
    p = out.shape[2] * out.shape[3]
    of = out.reshape(out.size)
    if accumulate and b.size == 0:
        return
    for n in range(n0, n1):
        for f in range(f_):
            v = b[f] if b.size > 0 else 0.0
            plane = of[(n * f_ + f) * p:(n * f_ + f + 1) * p]
            if accumulate:
                for e in range(p):
                    plane[e] += v
            else:
                for e in range(p):
                    plane[e] = v


@jit
def _forward(x, w, b, stride, pad, dilation, groups, accumulate, out, g_max, buf, n0, n1):
    """Samples [n0, n1) in chunks of at most g_max."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    _, fg, kh, kw = w.shape
    cg = c_ // groups
    fk = fg * kh * kw
    hw = h_ * w_
    xc = buf[:c_ * g_max * hw]
    col = buf[c_ * g_max * hw:(c_ + fk * groups) * g_max * hw]
    wf = w.reshape(w.size)
    _fill_bias(out, b, accumulate, n0, n1)
    for s0 in range(n0, n1, g_max):
        g_ = min(g_max, n1 - s0)
        p = g_ * hw
        _channel_major(x, s0, g_, xc)
        for g in range(groups):
            # col_g (Fg*K, P) = w_g^T @ xc_g; w_g is rows g*Cg.. of w as a (C, Fg*K) matrix
            gemm(True, False, fk, p, cg, 1.0, wf[g * cg * fk:], fk, xc[g * cg * p:], p, 0.0,
                 col[g * fk * p:], p)
        _col2im(col, (kh, kw), stride, pad, dilation, h_, w_, s0, g_, out)


@jit
def _backward(dout, x, w, stride, pad, dilation, groups, dx, accumulate, need_dx, need_dw,
              need_db, g_max, buf, n0, n1):
    """dx for samples [n0, n1) and this thread's partial dw, db (at the end of buf)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_ = dout.shape[1]
    _, fg, kh, kw = w.shape
    cg = c_ // groups
    fk = fg * kh * kw
    hw = h_ * w_
    big = c_ * g_max * hw
    xc = buf[:big]
    col = buf[big:big + fk * groups * g_max * hw]
    dxc = buf[big + fk * groups * g_max * hw:2 * big + fk * groups * g_max * hw]
    dwp = buf[2 * big + fk * groups * g_max * hw:2 * big + fk * groups * g_max * hw + c_ * fk]
    dbp = buf[2 * big + fk * groups * g_max * hw + c_ * fk:
              2 * big + fk * groups * g_max * hw + c_ * fk + f_]
    _zero(dwp)
    _zero(dbp)
    wf, df = w.reshape(w.size), dout.reshape(dout.size)
    po = dout.shape[2] * dout.shape[3]
    if need_db:
        for n in range(n0, n1):
            for f in range(f_):
                dbp[f] += sum64(df[(n * f_ + f) * po:(n * f_ + f + 1) * po])
    if not (need_dx or need_dw):
        return
    for s0 in range(n0, n1, g_max):
        g_ = min(g_max, n1 - s0)
        p = g_ * hw
        _im2col(dout, (kh, kw), stride, pad, dilation, h_, w_, s0, g_, col)
        if need_dw:
            _channel_major(x, s0, g_, xc)
        for g in range(groups):
            if need_dx:         # dxc_g (Cg, P) = w_g (Cg, Fg*K) @ colD_g (Fg*K, P)
                gemm(False, False, cg, p, fk, 1.0, wf[g * cg * fk:], fk, col[g * fk * p:], p,
                     0.0, dxc[g * cg * p:], p)
            if need_dw:         # dw_g (Cg, Fg*K) += xc_g (Cg, P) @ colD_g^T
                gemm(False, True, cg, fk, p, 1.0, xc[g * cg * p:], p, col[g * fk * p:], p,
                     1.0, dwp[g * cg * fk:], fk)
        if need_dx:
            _from_channel_major(dxc, s0, g_, accumulate, dx)


@jit
def _sum_partials(ws, per, at_dw, at_db, threads, dw, db, need_dw, need_db):
    """dw, db = the threads' partial sums (at at_dw, at_db in each slice), in thread order."""
    dwf = dw.reshape(dw.size)
    if need_dw:
        for e in range(dwf.size):
            s = ws[at_dw + e]
            for t in range(1, threads):
                s += ws[t * per + at_dw + e]
            dwf[e] = s
    if need_db:
        for f in range(db.size):
            s = ws[at_db + f]
            for t in range(1, threads):
                s += ws[t * per + at_db + f]
            db[f] = s


def _plan(x, w, groups, workspace, macs):
    n = x.shape[0]
    threads = _threads(n, macs)
    g_max, per = _layout(x.shape, w.shape, groups)
    _check(workspace, threads * per)
    return threads, g_max, per


def _check(workspace, need):
    if workspace.size < need:
        raise ValueError(f"conv_transpose2d workspace too small: {workspace.size} elements, "
                         f"need {need} (conv_transpose2d_workspace_size)")


def _check_lanes(sg, workspace, threads):
    from cnnspec.kernels import conv_lanes
    _check(workspace, conv_lanes.workspace_size(sg.geo, threads))


def conv_transpose2d_forward_into(x, w, b, stride, pad, output_pad, dilation, groups, out,
                                  workspace, accumulate=False):
    """out (N, F, OH, OW) (+)= the transposed convolution of x (N, C, H, W) by w (C,
    F/groups, KH, KW), + b (F,) or None (added to out with ``accumulate``: conv.py's input
    gradient of a strided convolution, by this).  ``output_pad`` only sets out's size (given by
    the caller's buffer).  See the package docstring for conventions."""
    macs = x.size * w.shape[1] * w.shape[2] * w.shape[3]
    geo = _lanes_geometry("forward", x.shape, w.shape, stride, pad, dilation, groups, out.shape,
                          x.dtype)
    if geo is not None:
        threads = _threads(x.shape[0], macs)
        _check_lanes(geo, workspace, threads)
        _gather_run(geo, x, w, b, bool(accumulate), out, workspace, threads)
        return
    forward_products(x, w, b, stride, pad, dilation, groups, out, workspace, accumulate)


def forward_products(x, w, b, stride, pad, dilation, groups, out, workspace, accumulate=False):
    """conv_transpose2d_forward_into by the products: the whole chunks of lanes samples with
    the samples in the lanes where ``_lane_chunks`` says, the rest with the scalar col2im."""
    macs = x.size * w.shape[1] * w.shape[2] * w.shape[3]
    b = _empty(x.dtype)[0] if b is None else b
    chunks, threads = _lane_chunks(x.shape, w.shape, stride, dilation, groups, x.dtype)
    done = chunks * lanes_of(x.dtype)
    if chunks:
        per = _lanes_per_thread(x.shape, w.shape, out.shape, lanes_of(x.dtype))
        _check(workspace, threads * per)
        start, offs = _tap_table(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                 (w.shape[2], w.shape[3]), tuple(stride), tuple(pad),
                                 tuple(dilation), lanes_of(x.dtype))
        fblock = _lane_filters(x.shape, w.shape, lanes_of(x.dtype))
        run_split(_forward_lanes, chunks, threads, lambda t, lo, hi: (
            x, w, b, bool(accumulate), out, start, offs, fblock,
            workspace[t * per:(t + 1) * per], lo, hi), dynamic=True)
    if done == x.shape[0]:
        return
    threads, g_max, per = _plan(x[done:], w, groups, workspace, macs)   # chunks of the rest
    run_split(_forward, x.shape[0] - done, threads, lambda t, lo, hi: (
        x, w, b, stride, pad, dilation, groups, bool(accumulate), out, g_max,
        workspace[t * per:(t + 1) * per], done + lo, done + hi), dynamic=True)


def conv_transpose2d_backward_into(dout, x, w, stride, pad, output_pad, dilation, groups, dx, dw,
                                   db, workspace, accumulate=False):
    """dx (+)= dL/dx, dw = dL/dw, db = dL/db (each may be None: not computed)."""
    macs = x.size * w.shape[1] * w.shape[2] * w.shape[3]
    geo = None if dx is None else _lanes_geometry("dx", x.shape, w.shape, stride, pad, dilation,
                                                  groups, dout.shape, x.dtype)
    if geo is not None:
        # dx: the gather of the adjoint convolution (see _lanes_geometry)
        threads = _threads(x.shape[0], macs)
        _check_lanes(geo, workspace, threads)
        _gather_run(geo, dout, w, None, accumulate, dx, workspace, threads)
        dx = None
    rows = None if dw is None else _rows_geometry(dout.shape, x.shape, w.shape, stride, pad,
                                                  dilation, groups)
    adjoint = _adjoint_plan(dout.shape, x.shape, w.shape, stride, pad, dilation, groups)
    # without AVX-512: dw as the adjoint convolution's, by AVX2's filters in the lanes
    lanes_dw = dw is not None and rows is None and adjoint is not None and \
        adjoint.lanes_dw is not None
    if (dx is not None and not accumulate and (dw is None or rows is not None or lanes_dw)
            and adjoint is not None):
        # dx: conv.py's direct forward of the adjoint convolution (see _adjoint_plan)
        from cnnspec.kernels.conv import conv2d_forward_into
        conv2d_forward_into(dout, w, None, tuple(stride), tuple(pad), tuple(dilation), 1, dx,
                            workspace)
        dx = None
    if dx is None and lanes_dw:
        from cnnspec.kernels.conv import conv2d_backward_into
        conv2d_backward_into(x, dout, w, tuple(stride), tuple(pad), tuple(dilation), 1, None,
                             dw, None, workspace)
        dw = None
    if dx is None and rows is not None:
        # dw: conv_lanes.weight_grad_rows on the adjoint convolution (db, which is not that
        # convolution's bias gradient, below)
        from cnnspec.kernels import conv_lanes
        conv_lanes.weight_grad(rows, x, dout, w.shape, dilation, dw, None, workspace,
                               _threads(x.shape[0], macs))
        dw = None
    if dx is None and dw is None and db is None:
        return
    threads, g_max, per = _plan(x, w, groups, workspace, 2 * macs)
    empty1, empty4 = _empty(x.dtype)
    run_split(_backward, x.shape[0], threads, lambda t, lo, hi: (
        dout, x, w, stride, pad, dilation, groups, empty4 if dx is None else dx,
        bool(accumulate), dx is not None, dw is not None, db is not None, g_max,
        workspace[t * per:(t + 1) * per], lo, hi))
    if dw is not None or db is not None:
        c, hw = x.shape[1], x.shape[2] * x.shape[3]
        fk = w.shape[1] * groups * w.shape[2] * w.shape[3]
        at_dw = 2 * c * g_max * hw + fk * g_max * hw
        _sum_partials(workspace, per, at_dw, at_dw + w.size, threads,
                      empty4 if dw is None else dw, empty1 if db is None else db,
                      dw is not None, db is not None)


# -- the gathers without their padding taps -----------------------------------------------------
# conv_lanes.py's gathers compute every tap of a phase at every position, reading the zero
# padding of xt where a tap falls outside x: DCGAN's 4x4 stride 2 pad 1 on 8x8 spends 12% of its
# multiply-adds on zeros (forward and dx alike: (30/32)^2 of them are real).  Here the positions
# of a phase are sorted by the set of taps that land inside x and cut into blocks of three; a
# block runs only the taps of its positions (runs of consecutive taps: segments of k), on
# conv_lanes' packed weights, xt and tile.  Three positions a block (24 accumulators) rather
# than conv_lanes' two: 1.01-1.11x faster on DCGAN's forward and dx (see the performance log's
# seventh round).

_BLOCK = 3


class SkipGather:
    """conv_lanes' LanesGeometry ``geo`` plus blocks of three positions: pin (3 per block: the
    bases in xt), pslot (their output slots, OH*OW for a padding position), phase (per block),
    seg (block i's segments are seg[i]..seg[i + 1] of segs: [k0, k1) pairs); macs: the
    multiply-adds per filter and lane, full: conv_lanes' (every tap at every position)."""

    def __init__(self, c, h, w, f, oh, ow, taps_of_phase, lanes):
        from cnnspec.kernels import conv_lanes
        block = _BLOCK
        self.geo = conv_lanes.LanesGeometry(c, h, w, f, oh, ow, taps_of_phase, lanes)
        wp = self.geo.wp
        pin, pslot, phase, seg, segs = [], [], [], [0], []
        for ph, (rows, cols, taps) in enumerate(taps_of_phase):
            here = []
            for o, r in rows:
                for q, s in cols:
                    mask = tuple(0 <= r + dr < h and 0 <= s + dc < w for dr, dc, *_ in taps)
                    here.append((mask, (r * wp + s) * c * lanes, o * ow + q))
            here.sort(key=lambda e: e[0], reverse=True)      # stable: same taps side by side
            while len(here) % block:
                here.append((here[-1][0], here[-1][1], oh * ow))
            for i in range(0, len(here), block):
                mask = [any(e[0][t] for e in here[i:i + block]) for t in range(len(taps))]
                t = 0
                while t < len(mask):
                    if mask[t]:
                        t1 = t
                        while t1 < len(mask) and mask[t1]:
                            t1 += 1
                        segs += [t * c, t1 * c]
                        t = t1
                    else:
                        t += 1
                pin += [e[1] for e in here[i:i + block]]
                pslot += [e[2] for e in here[i:i + block]]
                phase.append(ph)
                seg.append(len(segs) // 2)
        self.pin = np.array(pin, np.int64)
        self.pslot = np.array(pslot, np.int64)
        self.phase = np.array(phase, np.int64)
        self.seg = np.array(seg, np.int64)
        self.segs = np.array(segs + [0, 0], np.int64)
        self.macs = sum(segs[i + 1] - segs[i] for i in range(0, len(segs), 2)) * block
        self.full = int(self.geo.kcount @ (self.geo.pstart[1:] - self.geo.pstart[:-1]))


@functools.lru_cache(maxsize=32)
def skip_geometry(kind, x_shape, w_shape, stride, pad, dilation, oh, ow, lanes):
    """The SkipGather of a transposed convolution's forward (``kind`` "forward": out (F, OH, OW)
    from x (C, H, W) by w (C, F, KH, KW), one phase per residue of the stride, as
    conv_lanes.transposed_geometry) or of a convolution ("conv": out from x by w (F, C, KH,
    KW), as conv_lanes.conv_geometry).  Taps are (dr, dc, index of w for channel 0 and filter
    0, w's stride per channel, w's stride per filter)."""
    _, c, h, w = x_shape
    if kind == "conv":
        f, _, kh, kw = w_shape
        rows = [(o, o * stride[0] - pad[0]) for o in range(oh)]
        cols = [(o, o * stride[1] - pad[2]) for o in range(ow)]
        taps = [(i * dilation[0], j * dilation[1], i * kw + j, kh * kw, c * kh * kw)
                for i in range(kh) for j in range(kw)]
        return SkipGather(c, h, w, f, oh, ow, [(rows, cols, taps)], lanes)
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
    return SkipGather(c, h, w, f, oh, ow, phases, lanes)


@jit
def _skip_conv(xt, wpk, offs, kmax, pin, pslot, phase, seg, segs, b, accumulate, n0, fb0, fb1,
               tile, out):
    """out[n0 + l, f, position] (+)= the gather of conv_lanes.lanes_conv for the chunk's samples
    and the filters of blocks fb0 <= f // 8 < fb1, over the blocks of three positions of a
    SkipGather: each block sums only its segments of k (8 filters x 3 positions = 24 vector
    accumulators, each step 3 vector loads and 8 weight broadcasts)."""
    n_, f_ = out.shape[0], out.shape[1]
    plane = out.shape[2] * out.shape[3]
    lanes = vlanes(xt)
    nl = min(lanes, n_ - n0)
    fp = (f_ + 7) // 8 * 8
    of = out.reshape(out.size)
    for fb in range(fb0 * 8, min(fp, fb1 * 8), 8):
        for i in range(phase.size):
            ph = phase[i]
            ob = offs[ph * kmax:]
            wb = wpk[((ph * (fp // 8)) + fb // 8) * kmax * 8:]
            t0 = pin[3 * i]
            t1 = pin[3 * i + 1]
            t2 = pin[3 * i + 2]
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
            e0 = vzero(xt)
            e1 = vzero(xt)
            e2 = vzero(xt)
            e3 = vzero(xt)
            e4 = vzero(xt)
            e5 = vzero(xt)
            e6 = vzero(xt)
            e7 = vzero(xt)
            for sg in range(seg[i], seg[i + 1]):
                for k in range(segs[2 * sg], segs[2 * sg + 1]):
                    t = ob[k]
                    tp = ob[k + PREFETCH]
                    vprefetch(xt, t0 + tp)
                    vprefetch(xt, t1 + tp)
                    vprefetch(xt, t2 + tp)
                    x0 = vload(xt, t0 + t)
                    x1 = vload(xt, t1 + t)
                    x2 = vload(xt, t2 + t)
                    u = 8 * k
                    s = vsplat(wb, u)
                    a0 = vfma(a0, s, x0)
                    c0 = vfma(c0, s, x1)
                    e0 = vfma(e0, s, x2)
                    s = vsplat(wb, u + 1)
                    a1 = vfma(a1, s, x0)
                    c1 = vfma(c1, s, x1)
                    e1 = vfma(e1, s, x2)
                    s = vsplat(wb, u + 2)
                    a2 = vfma(a2, s, x0)
                    c2 = vfma(c2, s, x1)
                    e2 = vfma(e2, s, x2)
                    s = vsplat(wb, u + 3)
                    a3 = vfma(a3, s, x0)
                    c3 = vfma(c3, s, x1)
                    e3 = vfma(e3, s, x2)
                    s = vsplat(wb, u + 4)
                    a4 = vfma(a4, s, x0)
                    c4 = vfma(c4, s, x1)
                    e4 = vfma(e4, s, x2)
                    s = vsplat(wb, u + 5)
                    a5 = vfma(a5, s, x0)
                    c5 = vfma(c5, s, x1)
                    e5 = vfma(e5, s, x2)
                    s = vsplat(wb, u + 6)
                    a6 = vfma(a6, s, x0)
                    c6 = vfma(c6, s, x1)
                    e6 = vfma(e6, s, x2)
                    s = vsplat(wb, u + 7)
                    a7 = vfma(a7, s, x0)
                    c7 = vfma(c7, s, x1)
                    e7 = vfma(e7, s, x2)
            s = vsplat(b, fb)
            a0 = vadd(a0, s)
            c0 = vadd(c0, s)
            e0 = vadd(e0, s)
            s = vsplat(b, fb + 1)
            a1 = vadd(a1, s)
            c1 = vadd(c1, s)
            e1 = vadd(e1, s)
            s = vsplat(b, fb + 2)
            a2 = vadd(a2, s)
            c2 = vadd(c2, s)
            e2 = vadd(e2, s)
            s = vsplat(b, fb + 3)
            a3 = vadd(a3, s)
            c3 = vadd(c3, s)
            e3 = vadd(e3, s)
            s = vsplat(b, fb + 4)
            a4 = vadd(a4, s)
            c4 = vadd(c4, s)
            e4 = vadd(e4, s)
            s = vsplat(b, fb + 5)
            a5 = vadd(a5, s)
            c5 = vadd(c5, s)
            e5 = vadd(e5, s)
            s = vsplat(b, fb + 6)
            a6 = vadd(a6, s)
            c6 = vadd(c6, s)
            e6 = vadd(e6, s)
            s = vsplat(b, fb + 7)
            a7 = vadd(a7, s)
            c7 = vadd(c7, s)
            e7 = vadd(e7, s)
            d = pslot[3 * i] * 8 * lanes
            vstore(tile, d, a0)
            vstore(tile, d + lanes, a1)
            vstore(tile, d + 2 * lanes, a2)
            vstore(tile, d + 3 * lanes, a3)
            vstore(tile, d + 4 * lanes, a4)
            vstore(tile, d + 5 * lanes, a5)
            vstore(tile, d + 6 * lanes, a6)
            vstore(tile, d + 7 * lanes, a7)
            d = pslot[3 * i + 1] * 8 * lanes
            vstore(tile, d, c0)
            vstore(tile, d + lanes, c1)
            vstore(tile, d + 2 * lanes, c2)
            vstore(tile, d + 3 * lanes, c3)
            vstore(tile, d + 4 * lanes, c4)
            vstore(tile, d + 5 * lanes, c5)
            vstore(tile, d + 6 * lanes, c6)
            vstore(tile, d + 7 * lanes, c7)
            d = pslot[3 * i + 2] * 8 * lanes
            vstore(tile, d, e0)
            vstore(tile, d + lanes, e1)
            vstore(tile, d + 2 * lanes, e2)
            vstore(tile, d + 3 * lanes, e3)
            vstore(tile, d + 4 * lanes, e4)
            vstore(tile, d + 5 * lanes, e5)
            vstore(tile, d + 6 * lanes, e6)
            vstore(tile, d + 7 * lanes, e7)
        _from_tile(tile, fb, accumulate, n0, nl, of, f_, plane)


@jit
def _skip_driver(x, wpk, offs, kmax, pin, pslot, phase, seg, segs, pt, pl, hp, wp, b, accumulate,
                 xt, tile, out, parts, i0, i1):
    """conv_lanes.lanes_driver with _skip_conv."""
    lanes = vlanes(xt)
    blocks = (out.shape[1] + 7) // 8
    last = -1
    for i in range(i0, i1):
        ch, part = i // parts, i % parts
        if ch != last:
            _to_lanes(x, ch * lanes, pt, pl, hp, wp, last < 0, xt)
            last = ch
        _skip_conv(xt, wpk, offs, kmax, pin, pslot, phase, seg, segs, b, accumulate, ch * lanes,
                   part * blocks // parts, (part + 1) * blocks // parts, tile, out)


def skip_run(sg, x, w, b, accumulate, out, workspace, threads):
    """out (+)= the gather of SkipGather ``sg`` over x by w (+ b, or None), on ``threads``
    threads; the workspace as conv_lanes.run's (conv_lanes.workspace_size(sg.geo, threads))."""
    from cnnspec.kernels import conv_lanes
    geo = sg.geo
    at = (-(workspace.ctypes.data // workspace.itemsize)) % (64 // workspace.itemsize)
    wpk = workspace[at:at + geo.wpk]
    conv_lanes.pack(w, geo.wbase, geo.wf, geo.f, geo.fp, geo.kmax, wpk)
    xt, tile = conv_lanes._round(geo.xt), conv_lanes._round(geo.tile)
    base, per = at + conv_lanes._round(geo.wpk), xt + tile
    bp = conv_lanes._zeros(geo.fp, x.dtype)
    if b is not None:
        bp = np.zeros(geo.fp, x.dtype)
        bp[:b.size] = b
    n = conv_lanes.chunks(x.shape[0], x.dtype)
    parts = 1 if threads <= 1 else min(-(-2 * threads // n), geo.fp // conv_lanes.BLOCK_F)
    run_split(_skip_driver, n * parts, threads, lambda t, lo, hi: (
        x, wpk, geo.offs, geo.kmax, sg.pin, sg.pslot, sg.phase, sg.seg, sg.segs, geo.pt, geo.pl,
        geo.hp, geo.wp, bp, bool(accumulate), workspace[base + t * per:base + t * per + geo.xt],
        workspace[base + t * per + xt:base + t * per + xt + geo.tile], out, parts, lo, hi),
        dynamic=True)
