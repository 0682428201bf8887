"""Convolution (cross-correlation) forward and backward, 2-D; 1-D runs with H = 1.

    out[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j]
                                 * xpad[n, g*Cg + c, oh*sh + i*dh, ow*sw + j*dw]

for output channel f in group g = f // Fg (Cg = C / groups input and Fg = F / groups output
channels per group); xpad is x with (top, bottom, left, right) zeros around it.

On CPUs with AVX-512, groups-1 convolutions of at least a million multiply-adds run their forward, and where measured
faster their dx and dw, as the register-blocked direct loops of ``conv_direct.py`` (``_Plan.direct``,
``direct_dx``, ``direct_dw`` or ``direct_dwr``; ``_use_direct``, ``_use_dw_lanes`` and the rules in
``_Plan`` say where), or on small planes where their wide grid wastes much: the forward and dx
with the filters in the vector lanes (``conv_direct.forward_lanes``: ``_Plan.lanes``,
``lanes_dx``: ``_use_lanes``, tried first), else with the samples in the vector lanes
(``conv_lanes.py``: ``_Plan.slanes``, ``slanes_dx``: ``_use_slanes``), dw on the input laid out
channels innermost (``direct_dwr``: ``_use_dw_lanes``); 3x3 stride-1 layers of 64 filters on
large planes run forward, dx and dw by Winograd F(2x2, 3x3) (``conv_big.py``: ``_Plan.wino``,
``wino_dx``, ``wino_dw``: ``_use_wino``, tried before all of these); 5x5 stride-1 layers on
batches of 16 or more run forward, dx and dw by Winograd F(4, 5) along the rows
(``conv_five.py``: ``_Plan.c5``, ``c5_dx``, ``c5_dw``: ``_use_c5``, tried next).  Without
AVX-512 the direct loops, the filters-in-lanes forward and dx and both Winograds' products run
in AVX2's own blocks (Winograd F(2x2, 3x3) then on far more layers, on small planes with the
channels innermost: ``_use_wino``, ``_wino_hwc``), and dw with
the filters in the lanes wherever F is a multiple of 16 (``_Plan.lanes_dw``:
``conv_direct.weight_grad_lanes``; see ``_wide_vector_cpu``).  The dx of a strided
convolution whose taps overlap (ResNet's 3x3 stride 2, DCGAN's discriminator) is the transposed
convolution of dout by w, by ``conv_transpose.forward_products`` with the samples in the vector
lanes (``_transposed_dx``; not where AVX-512's ``slanes_dx`` runs).  The rest, and
every backward the direct kernels leave, is matrix products on BLAS (``_blas.gemm``), one sample at a time, output rows
in chunks small enough for the BLAS small-matrix kernels and the caches; samples are split over
threads from 4M multiply-adds (a backward's: dx's and dw's together) (``run_split``: the
forward's and dx's pieces, two per thread, taken by whichever thread is free, each with the
thread's slice of the workspace; the backward's pieces, two per thread, each with its own slice
and partial dw/db, summed in a fixed order afterwards, so results do not depend on timing).  Three ways to make the matrices:

* **kn2row**: copy the sample once into a zero-padded buffer xp (C, Hp, Wp); then for every tap
  (i, j) the input the tap sees is the 2-D window ``xp[c, i*dh*Wp + j*dw + q]``, q = oh*Wp + ow,
  a matrix with leading dimension Hp*Wp that BLAS reads in place.  The output is computed on the
  "wide" grid (OH, Wp) and the Wp - OW extra columns per row are dropped:
  ``wide (Fg, q) += w[:, :, i, j] (Fg, Cg) @ xp_tap (Cg, q)``.  No im2col copy at all; the wasted
  columns cost (KW - 1) * dw / Wp of the work.  Backward runs the same taps the other way:
  ``dw_tap += dwide @ xp_tap.T`` and ``dxp_tap += w_tap.T @ dwide`` (dwide is zero on the extra
  columns, so they contribute nothing).  **Strides** run the same way on the sample split into
  stride phases (``_split_sample``): phase (a, b) = xpad[:, a::sh, b::sw], and tap (i, j) is a
  stride-1 tap of phase ((i*dh) % sh, (j*dw) % sw) shifted by ((i*dh)//sh, (j*dw)//sw); the
  wide grid is a phase's width Wq = ceil(Wp / sw).  The split copies the sample once, where
  im2col copied KH*KW/(sh*sw) times as much element by element: 3x3 stride-2 convolutions ran
  1.6x faster forward and backward.
* **rowtap** (stride 1, groups 1): ``col (C*KW, Hp*OW)``, the KW column shifts of every padded
  row (``_row_col``, contiguous runs); kernel row i then reads col's rows from i*dh on in place:
  ``out (F, q) += w_i (F, C*KW) @ col_i (C*KW, q)``.  Nothing is wasted, the inner dimension is
  KW times kn2row's, and the output is written straight into out.  Backward: ``dw_i^T += col_i @
  dout^T`` over whole planes and ``dcol_i += w_i^T @ dout``, then the KW shifts are added back.
* **im2col** (any stride): ``col (Cg*KH*KW, rows*OW)`` then ``out = w (Fg, Cg*KH*KW) @ col``;
  backward ``dw += dout @ col.T``, ``dcol = w.T @ dout`` and col2im adds dcol back into dx.  A 1x1
  convolution with stride 1 and no padding needs no col: x itself is the matrix.

A depthwise convolution (groups == C > 1, one channel per group) does not come here: its
(1 x KH*KW) products are far too small for BLAS, and ``depthwise.py`` runs it as vectorised loops
on this file's stride phases (``_is_depthwise``).

Choice (``_Plan``): 1x1 with stride 1 and no padding, or a kernel smaller than the stride (whose
phases would be copied for nothing): IM2COL.  Stride 1, groups 1 and one sample's col of at
most 1 MB (every plane of CIFAR-sized networks): ROWTAP (``_use_rowtap`` has the measurements:
25% on 5x5 16->32 on 14x14, 10-45% for few channels, 10-30% against kn2row on ResNet's 3x3
layers).  Otherwise KN2ROW when Cg >= 16 and stride 1 (products with inner dimension Cg), else
GATHER (the taps' windows copied into col, inner dimension Cg*KH*KW; for strided layers too,
where it measured 14-25% faster than kn2row).  Measured (float32, 2 cores): on 3x3 64->64
kn2row ran 187 GFLOP/s against 128 for gather; on LeNet's conv2 gather ran 2.5x faster than
im2col (whose rows of OW = 10 elements cost more to copy than the wide grid's 40% extra
columns), rowtap 20% faster again.  dw is computed as dw^T = col @ dwide^T, BLAS's fast (NN)
case: 114 against 45 GFLOP/s for dw = dwide @ col^T on LeNet's conv2.  Performance table:
``cnnspec/kernels/__init__.py``.
"""
import functools
import math
import sys

import numpy as np

from cnnspec.kernels._blas import gemm
from cnnspec.kernels._jit import (in_turn, jit, none_array, num_threads, one_call, piece_count,
                                  run_split, sum64)
from cnnspec.layers.base import output_size

# Chunk sizes (measured): kn2row (and rowtap) products whose output and input panels,
# (Fg + Cg) x columns, hold about 32k elements (3x3 64->64: 256 columns, 105 GFLOP/s on one core
# against 80 for whole rows of 3248; 16->16 channels: 1024 columns, 15% faster than 128) and col
# chunks of about 32k elements stay on OpenBLAS's small-matrix path and in L2.  Rowtap's col
# holds a whole sample: at most _ROWTAP_MAX_COL elements (1 MB in float32).
_KN2ROW_ELEMENTS = 32768
_KN2ROW_CHANNELS = 16
_ROWTAP_ELEMENTS = 32768
_ROWTAP_MAX_COL = 1 << 18
_IM2COL_ELEMENTS = 32768

# -- shapes -----------------------------------------------------------------------------------


def conv_output_size(size, kernel, stride, pad_before, pad_after, dilation=1):
    """Output length along one axis: 1 + (size + pads - dilation*(kernel-1) - 1) // stride (the
    layer catalogue's one rule)."""
    return output_size(size, kernel, stride, pad_before, pad_after, dilation)


def conv2d_output_shape(x_shape, w_shape, stride, pad, dilation=(1, 1)):
    """(N, F, OH, OW) of a 2-D convolution of x (N, C, H, W) by w (F, C/groups, KH, KW)."""
    n, _, h, w = x_shape
    f, _, kh, kw = w_shape
    return (n, f, conv_output_size(h, kh, stride[0], pad[0], pad[1], dilation[0]),
            conv_output_size(w, kw, stride[1], pad[2], pad[3], dilation[1]))


# How a convolution runs (``_Plan.mode``).
IM2COL = 0        # 1x1/stride 1/no pad (x itself), or kernel < stride: col (Cg*KH*KW, rows*OW)
GATHER = 1        # Cg < 16 or strided: the taps' windows of the phases copied into col
                  # (contiguous). Strided, it beat kn2row forward+backward on every shape
                  # measured but one (one thread, CPU time): ResNet's 3x3 s2 16->32 on 32x32
                  # by 25%, 32->64 on 16x16 21%, 128->256 on 8x8 14%, 256->512 on 4x4 16%;
                  # 64->128 on 16x16 7% slower (its backward reads col once, kn2row each tap's
                  # window, many times over for a strided kernel)
KN2ROW = 2        # Cg >= 16, stride 1: BLAS reads every tap's window of the phases in place
ROWTAP = 3        # stride 1, groups 1, one sample's col of at most 1 MB: col (C*KW, Hp*OW), KH products


class _Plan:
    """How one convolution runs: mode, row-chunk size and workspace layout (in elements).

    The workspace holds ``shared`` elements (KN2ROW: the weights, tap-major; ROWTAP: by kernel
    row) and then one ``per_thread`` slice per thread with the offsets
    ``layout = (xp, wide, col, dw, db)``:
    GATHER/KN2ROW  [xp (phases) | dxp | wide chunk | its transpose | col (GATHER) | partial dw | db]
    ROWTAP         [col | dcol | dout^T (OH*OW, F) | partial dw | db]   (xp, wide = their ends)
    IM2COL         [col | partial dw | partial db]                (xp = wide = col = 0)
    Partial dw layouts: IM2COL (F, Cg*KH*KW) like w; GATHER (Cg*KH*KW, F); KN2ROW (taps, Cg, F);
    ROWTAP (KH, C*KW, F).
    """

    __slots__ = ("mode", "identity", "rows", "shared", "per_thread", "layout", "direct",
                 "direct_dx", "direct_dw", "direct_dwr", "slanes", "slanes_dx",
                 "slanes_size")
    __slots__ += ("lanes", "lanes_dx")          # conv_direct.forward_lanes (_use_lanes)
    __slots__ += ("wino", "wino_dx", "wino_dw")  # conv_big.py's Winograd (_use_wino)
    __slots__ += ("wino_hwc",)                  # its layout: forward and dw, dx (_wino_hwc)
    __slots__ += ("c5", "c5_dx", "c5_dw")        # conv_five.py's row Winograd (_use_c5)
    __slots__ += ("narrow",)                    # AVX2: conv_direct's narrow blocks
    __slots__ += ("lanes_dw",)                  # AVX2: conv_direct.weight_grad_lanes

    def __init__(self, x_shape, w_shape, stride, pad, dilation, groups):
        n, c, h, w = x_shape
        f, cg, kh, kw = w_shape
        k = cg * kh * kw
        oh, ow = conv2d_output_shape(x_shape, w_shape, stride, pad, dilation)[2:]
        self.identity = (kh == 1 and kw == 1 and stride == (1, 1) and pad == (0, 0, 0, 0))
        if self.identity or kh < stride[0] or kw < stride[1]:
            self.mode = IM2COL
            self.rows = max(1, min(oh, _IM2COL_ELEMENTS // max(1, k * ow)))
            self.shared = 0
            o_dw = 0 if self.identity else k * self.rows * ow
            self.layout = (0, 0, 0, o_dw, o_dw + f * k)
        elif _use_rowtap(x_shape, w_shape, stride, pad, dilation, groups, ow):
            self.mode = ROWTAP
            kc = c * kw                      # inner dimension of the products
            big_l = (h + pad[0] + pad[1]) * ow
            self.rows = max(1, min(oh, _ROWTAP_ELEMENTS // ((f + kc) * ow)))
            o_dcol = c * kw * big_l
            o_doutt = 2 * o_dcol
            o_dw = o_doutt + oh * ow * f
            self.shared = f * k
            self.layout = (o_dcol, o_doutt, o_dw, o_dw, o_dw + f * k)
        else:
            self.mode = KN2ROW if cg >= _KN2ROW_CHANNELS and stride == (1, 1) else GATHER
            hq, wq = _phase_shape(h, w, stride, pad)
            if self.mode == KN2ROW:
                fg = f // groups
                self.rows = max(1, min(oh, _KN2ROW_ELEMENTS // ((fg + cg) * wq)))
            else:
                self.rows = max(1, min(oh, _IM2COL_ELEMENTS // (k * wq)))
            q = self.rows * wq
            xp = stride[0] * stride[1] * c * hq * wq + (kw - 1) * dilation[1] // stride[1]
            o_col = 2 * xp + 2 * f * q
            o_dw = o_col + (k * q if self.mode == GATHER else 0)
            self.shared = kh * kw * f * cg if self.mode == KN2ROW else 0
            self.layout = (xp, 2 * xp, o_col, o_dw, o_dw + f * k)
        self.per_thread = self.layout[4] + f
        # the forward by conv_direct.py instead (the backward keeps the mode): its packed
        # weights in the shared part, its phase and wide buffers in each thread's slice
        self.direct = None
        # without AVX-512, the direct forward and dx run AVX2's narrow blocks (_use_direct)
        self.narrow = not _wide_vector_cpu()
        avx512 = _DIRECT_ALL or not self.narrow
        from cnnspec.kernels.conv_direct import NARROW_STRIP
        strip = NARROW_STRIP if self.narrow else 32     # the wide grid's strips (waste gates)
        if _use_direct(x_shape, w_shape, stride, pad, dilation, groups, self.mode, oh, ow):
            from cnnspec.kernels.conv_direct import direct_sizes
            wpk, xp, wide = direct_sizes(x_shape, w_shape, stride, pad, dilation, oh,
                                         self.narrow)
            self.direct = (xp, xp + wide)
            self.shared = max(self.shared, wpk)
            self.per_thread = max(self.per_thread, xp + wide)
        # dx of a stride-1 convolution is a convolution of dout by the flipped weights: by
        # conv_direct.py too (dw: below)
        self.direct_dx = None
        if self.direct is not None and stride == (1, 1) and (
                c >= (_NARROW_DX_CHANNELS if self.narrow else 8) or _DIRECT_ALL):
            from cnnspec.kernels.conv_direct import backward_data_pad, direct_sizes
            pad_dx = backward_data_pad((kh, kw), pad, dilation)
            if pad_dx is not None and (_DIRECT_ALL or
                                       wide_waste(ow + max(pad_dx[2:]), h, w, strip) <= 1.35):
                wpk, xp, wide = direct_sizes((n, f, oh, ow), (c, f, kh, kw), stride, pad_dx,
                                             dilation, h, self.narrow)
                self.direct_dx = (xp, xp + wide, pad_dx)
                self.shared = max(self.shared, wpk)
                self.per_thread = max(self.per_thread, xp + wide)
        # 3x3 stride 1 with many channels: Winograd F(2x2, 3x3) (conv_big.py), before the lanes
        # (AVX2's own blocks without AVX-512: its U's shape, conv_big.weights_shape, says which)
        self.wino = self.wino_dx = None
        self.wino_hwc = (_wino_hwc(c, ow, self.narrow), _wino_hwc(f, w, self.narrow))
        if self.direct is not None and _use_wino(c, f, (kh, kw), stride, dilation, oh * ow,
                                                 self.narrow, ow):
            from cnnspec.kernels.conv_big import wino_sizes
            u, per = wino_sizes(x_shape, w_shape, pad, self.narrow)
            self.wino = per
            self.shared = max(self.shared, u)
            self.per_thread = max(self.per_thread, per)
        if self.direct is not None and _use_wino(f, c, (kh, kw), stride, dilation, h * w,
                                                 self.narrow, w):
            from cnnspec.kernels.conv_big import wino_sizes
            from cnnspec.kernels.conv_direct import backward_data_pad
            pad_dx = backward_data_pad((kh, kw), pad, dilation)
            if pad_dx is not None:
                u, per = wino_sizes((n, f, oh, ow), (c, f, kh, kw), pad_dx, self.narrow)
                self.wino_dx = (per, pad_dx)
                self.shared = max(self.shared, u)
                self.per_thread = max(self.per_thread, per)
        # on small planes (and large ones), the forward and dx with the filters in the vector lanes
        # (where Winograd does not run them)
        self.lanes = self.lanes_dx = None
        if self.direct is not None and self.wino is None and _use_lanes(
                f, k, wide_waste(_direct_pitch(w, stride, pad), oh, ow, strip), oh * ow,
                self.narrow):
            from cnnspec.kernels.conv_direct import lanes_positions, lanes_sizes
            wpk, xp, tile = lanes_sizes(x_shape, w_shape, stride, pad, dilation, oh, ow,
                                        self.narrow)
            xp = -(-xp // 16) * 16                  # the tile on a line too
            self.lanes = (xp, xp + tile, lanes_positions(x_shape, stride, pad, oh, ow))
            self.shared = max(self.shared, wpk)
            self.per_thread = max(self.per_thread, xp + tile)
        if self.direct is not None and self.wino_dx is None and stride == (1, 1):
            from cnnspec.kernels.conv_direct import (backward_data_pad, lanes_positions,
                                                     lanes_sizes)
            pad_dx = backward_data_pad((kh, kw), pad, dilation)
            if pad_dx is not None and _use_lanes(c, f * kh * kw,
                                                 wide_waste(w + max(pad_dx[2:]), h, w, strip),
                                                 h * w, self.narrow):
                wpk, xp, tile = lanes_sizes((n, f, oh, ow), (c, f, kh, kw), stride, pad_dx,
                                            dilation, h, w, self.narrow)
                xp = -(-xp // 16) * 16
                self.lanes_dx = (xp, xp + tile, pad_dx,
                                 lanes_positions((n, f, oh, ow), stride, pad_dx, h, w))
                self.direct_dx = None
                self.shared = max(self.shared, wpk)
                self.per_thread = max(self.per_thread, xp + tile)
        self.wino_dw = None
        if self.wino is not None:
            from cnnspec.kernels.conv_big import wino_dw_sizes
            self.wino_dw = wino_dw_sizes(x_shape, w_shape, pad, self.narrow)
            self.per_thread = max(self.per_thread, self.wino_dw[0])
        # 5x5 stride 1, batches of 16+: Winograd F(4, 5) along the rows (conv_five.py)
        self.c5 = self.c5_dx = self.c5_dw = None
        if self.direct is not None and (kh, kw) == (5, 5):
            from cnnspec.kernels.conv_direct import backward_data_pad
            from cnnspec.kernels.conv_five import C5DwGeometry, C5Geometry
            geo = C5Geometry(x_shape, f, pad, oh, ow, 16)
            if _use_c5(n, c, f, stride, dilation, geo.per):
                self.c5 = geo.per
                self.shared = max(self.shared, geo.u)
                self.per_thread = max(self.per_thread, geo.per)
            geo = C5DwGeometry(x_shape, f, pad, oh, ow, 16)
            if _use_c5(n, c, f, stride, dilation, geo.per, dw=True, narrow=self.narrow):
                self.c5_dw = geo.per
                self.per_thread = max(self.per_thread, geo.per)
            pad_dx = backward_data_pad((kh, kw), pad, dilation)
            if pad_dx is not None:
                geo = C5Geometry((n, f, oh, ow), c, pad_dx, h, w, 16)
                if _use_c5(n, f, c, stride, dilation, geo.per, dx=True):
                    self.c5_dx = (geo.per, pad_dx)
                    self.shared = max(self.shared, geo.u)
                    self.per_thread = max(self.per_thread, geo.per)
        # dw and db by conv_direct.py's blocked sums over the wide grid
        self.direct_dw = None
        if self.direct is not None and _DIRECT_DW and self.wino_dw is None and (_DIRECT_ALL or (
                (c * f <= 256 and avx512 or c <= 4 or self.narrow and _narrow_dw(c, f, oh * ow))
                and (f >= 8 or self.narrow) and wide_waste(_direct_pitch(w, stride, pad), oh, ow,
                                          8 if self.narrow else 32) <= 1.35)):
            from cnnspec.kernels.conv_direct import weight_grad_sizes
            from cnnspec.kernels.conv_direct import DW_FEW_FILTERS_ELEMENTS
            self.direct_dw = weight_grad_sizes(x_shape, w_shape, stride, pad, dilation, oh,
                                               DW_FEW_FILTERS_ELEMENTS if f < 8 else None)
            self.per_thread = max(self.per_thread, self.direct_dw[3])
        # or with the filters in the vector lanes, on the input laid out channels innermost
        # (conv_lanes.weight_grad_rows): see _use_dw_lanes
        self.direct_dwr = None
        if self.direct is not None and avx512 and _DIRECT_DW and _use_dw_lanes(c, f, oh * ow,
                                                                    self.direct_dw):
            from cnnspec.kernels.conv_lanes import rows_geometry
            self.direct_dw = None
            self.direct_dwr = rows_geometry(x_shape, w_shape, stride, pad, dilation, oh, ow)
            self.per_thread = max(self.per_thread, self.direct_dwr.per + 16)
        # without AVX-512: dw with the filters in the vector lanes (conv_direct.weight_grad_lanes)
        self.lanes_dw = None
        if (self.direct is not None and self.narrow and _DIRECT_DW and _use_lanes_dw(f)
                and self.wino_dw is None):
            from cnnspec.kernels.conv_direct import lanes_dw_sizes
            self.direct_dw = None
            self.lanes_dw = lanes_dw_sizes(x_shape, w_shape, stride, pad, dilation, oh, ow)
            self.per_thread = max(self.per_thread, self.lanes_dw[0])
        if (self.wino is not None or self.wino_dx is not None or self.c5 is not None
                or self.c5_dx is not None or self.c5_dw is not None or self.lanes is not None
                or self.lanes_dx is not None or self.lanes_dw is not None):
            # Winograd's buffers start on 64-byte lines (_line_base): 5-6% faster each, U and
            # the slices (NumPy's large arrays start 16 bytes past a line); the lanes' packed
            # weights and tiles ~5% (AVX2's, the bench's 5x5)
            self.shared = -(-self.shared // 16) * 16 + 16
            self.per_thread = -(-self.per_thread // 16) * 16
        # the forward and dx with the samples in the vector lanes (conv_lanes.py) where the
        # wide grid wastes much: see _use_slanes
        self.slanes, self.slanes_dx = _use_slanes(x_shape, w_shape, stride, pad, dilation, oh, ow,
                                               self.direct, self.direct_dx)
        self.slanes = self.slanes and self.lanes is None and avx512   # forward_lanes goes first
        self.slanes_dx = self.slanes_dx and self.lanes_dx is None and avx512
        self.slanes_size = (0, 0)
        if self.slanes or self.slanes_dx:
            from cnnspec.kernels import conv_lanes as L
            geometry = (tuple(stride), tuple(pad), tuple(dilation))
            fwd = (L.workspace_size(L.conv_geometry(x_shape, w_shape, *geometry, oh, ow, 16), 0),
                   L.workspace_size(L.conv_geometry(x_shape, w_shape, *geometry, oh, ow, 16), 1))
            dx = (L.workspace_size(L.transposed_geometry((n, f, oh, ow), w_shape, *geometry, h,
                                                         w, 16), 0),
                  L.workspace_size(L.transposed_geometry((n, f, oh, ow), w_shape, *geometry, h,
                                                         w, 16), 1))
            self.slanes_size = (max(fwd[0] if self.slanes else 0, dx[0] if self.slanes_dx else 0),
                               max(fwd[1] - fwd[0] if self.slanes else 0,
                                   dx[1] - dx[0] if self.slanes_dx else 0))

    def workspace_size(self, threads):
        return max(self.shared + threads * self.per_thread,
                   self.slanes_size[0] + threads * self.slanes_size[1])


def _use_rowtap(x_shape, w_shape, stride, pad, dilation, groups, ow):
    """ROWTAP for every stride-1, groups-1 convolution whose col holds at most _ROWTAP_MAX_COL
    elements (one sample's input, C*KW x Hp*OW).  Measured (float32, one thread, CPU time,
    forward / backward): LeNet conv1 1->6 15% / 20% faster than gather, 3x3 3->32 on 32x32
    5% / 45%; and against kn2row, at batch 64, 3x3 32->32 on 16x16 13% / 30% faster, 32->32 on
    32x32 4% / 20%, at batch 16 64->64 on 16x16 9% / 25%, 128->128 on 8x8 15% / 11%, 256->256
    on 4x4 30% / 26%; 16->16 on 32x32 as fast as gather.  Big planes (3x3 64->64 on 56x56: col
    over the limit) stay with kn2row, which keeps its lead there."""
    c, h = x_shape[1], x_shape[2]
    kw = w_shape[3]
    col = c * kw * (h + pad[0] + pad[1]) * ow
    return stride == (1, 1) and groups == 1 and col <= _ROWTAP_MAX_COL


_DIRECT = True         # False: every forward on BLAS products (the tests run both)
_DIRECT_DW = True       # False: dw on the BLAS modes
_DIRECT_ALL = False     # True: the direct kernels wherever they apply (tests), not where faster
_DIRECT_MACS = 1 << 20  # below, the BLAS modes (LeNet-5's conv2 at batch 1: 0.76x with direct)
_DW_LANES = None        # tests: True / False, dw by conv_lanes.weight_grad_rows /
                        # conv_direct.weight_grad_direct wherever the direct forward runs (with
                        # _DIRECT_ALL); None: the rules


def _use_dw_lanes(c, f, plane, blocked):
    """The weight gradient with the filters in the vector lanes (conv_lanes.weight_grad_rows)
    where the blocked sums (``blocked``: few channels) do not run, F fills the lanes (F >= 32:
    blocks of 32 filters) and a sample's dout^T (plane x F) holds at most _DW_LANES_ELEMENTS
    (512 KB in float32; 3x3 64->64 on 56x56, 800 KB, stays with kn2row: see below).  Measured
    against the rules before it (the BLAS modes; float32, one thread, CPU time per call, 40
    pairs of calls in alternating order, load 4; median speed-up, quartiles): 5x5 16->32 on
    64x14x14 1.15x (1.11-1.18), 3x3 64->64 on 8x56x56 1.04x (1.01-1.12), ResNet-8's 32->32 on
    64x16x16 1.24x (1.20-1.29) and 64->64 on 64x8x8 1.16x (1.13-1.20), the U-Net's 32->32 on
    16x32x32 1.36x (1.29-1.42) and 64->64 on 16x16x16 1.29x (1.25-1.32); with F = 16 (half the lanes idle) 0.87x, where the blocked sums run anyway.
    On 3x3 64->64 at 8x56x56 the whole fwd+bwd row then measured 0.97x (0.93-1.05): kn2row's dw,
    already 1.1-1.45x PyTorch's there, stays.  These figures are of the first version of those
    sums (conv_direct.weight_grad_lanes, on the wide grid's buffer, 12 taps from a table of
    offsets); weight_grad_rows, on the input laid out channels innermost, replaced it (float32,
    one thread, CPU time per call, 9 rounds alternating, load 2-2.6; median speed-up, min-max):
    5x5 16->32 on 64x14x14 1.12x (0.97-1.37), ResNet-8's 64->64 on 64x8x8 1.20x (0.83-2.30) and
    32->32 on 64x16x16 1.19x (0.86-1.53), DCGAN's transposed convolution's (the adjoint, 64->128
    4x4 s2 on 16x16) 1.26x (0.86-1.96); dilated widths: see the README's issue 16, sixth
    round."""
    if _DW_LANES is not None:
        return _DW_LANES
    return blocked is None and f >= 32 and plane * f <= _DW_LANES_ELEMENTS


_DW_LANES_ELEMENTS = 1 << 17


_SLANES = None           # tests: True / False, the forward and dx by conv_lanes.py wherever the
                        # direct forward runs / never; None: the rules (_use_slanes)
_SLANES_WASTE = 1.1      # the wide grid's extra work from which the lanes run
_SLANES_MAX_PLANE = 1024  # planes up to 32x32 (the tile: 8 filters x plane x 16 lanes, 512 KB)


def _use_slanes(x_shape, w_shape, stride, pad, dilation, oh, ow, direct, direct_dx):
    """(forward, dx) by conv_lanes.py (the samples in the vector lanes: no wide grid), where the
    direct forward runs, the batch fills the lanes (N >= 16), C >= 8 and the plane (the output's
    for the forward, the input's for dx) is at most _SLANES_MAX_PLANE: the forward where the wide
    grid wastes at least _SLANES_WASTE of the work, dx where conv_direct's dx would waste as much
    or does not run (strided, padding beyond the kernel: BLAS); C is dx's filters, in blocks of
    8.  Measured against the kernels before (float32, one thread, CPU time per call,
    7 rounds alternating, load ~2; median speed-up, quartiles), forward / dx: 5x5 16->32 on
    64x14x14 (waste 1.14) 1.17x / 1.15x; ResNet-8 at batch 64: 3x3 32->32 on 16x16 (1.125)
    1.10x / 1.20x, 64->64 on 8x8 (1.5) 1.49x / 1.10x, stride 2 16->32 on 32x32 1.04x / 1.77x
    (dx was BLAS), 32->64 on 16x16 1.76x / 1.96x; U-Net 64->64 on 16x16 at batch 16 1.07x /
    1.06x.  Not used: 16->16 and 32->32 on 32x32 (waste 1.03: 0.83-0.90x / 0.75-0.88x), dx of 3
    or 6 channels (0.53x, 0.73x: a block of 8 filters mostly empty), and since the sixth round
    the forward of fewer than 8 channels: LeNet-5's conv1 (1->6 5x5 on 32x32, waste 1.14) 0.83x
    at batch 64, 1.06x at 256, 3->32 3x3 on 64x16x16 (waste 1.125) 0.83x; its conv2 (6->16 on
    14x14, waste 1.6) gained 1.57x at batch 64 and 1.42x at 256 (0.27 ms of a ~7 ms step), but
    taking it alone would compile both forwards for LeNet-5, and the lanes' forward costs LeNet-5's
    first training step ~1.5 s more compile than the direct one (see the README's sixth round).  In float64 (8 samples a vector): 5x5 16->32 1.20x /
    1.22x, 64->64 on 8x8 1.36x / 1.18x, stride 2 32->64 1.51x / 1.73x."""
    n, c, h, w = x_shape
    if direct is None or _SLANES is False or (_SLANES is None and n < 16):
        return False, False
    if _SLANES:
        return True, True
    forward = c >= 8 and oh * ow <= _SLANES_MAX_PLANE and wide_waste(
        _direct_pitch(w, stride, pad), oh, ow) >= _SLANES_WASTE
    dx = h * w <= _SLANES_MAX_PLANE and c >= 8 and (direct_dx is None or wide_waste(
        w + max(direct_dx[2][2:]), h, w) >= _SLANES_WASTE)
    return forward, dx


def _wide_vector_cpu() -> bool:
    """Whether numba compiles for AVX-512 (the host's features, or NUMBA_CPU_FEATURES).  The
    direct kernels' AVX-512 blocks keep 16 accumulators of 512 bits in its 32 vector registers;
    with AVX2's 16 registers of 256 bits they spill.  Without it the plans take AVX2's narrow
    blocks instead (``_Plan.narrow``: conv_direct._direct_sample_narrow, 4 filters x 3 half
    vectors, and _dw_blocks_narrow, 2 filters x 6 taps; with the filters in the lanes
    _lanes_sample_narrow, 6 positions x 16 filters (_use_lanes), and weight_grad_lanes, 6 taps x
    16 filters (_use_lanes_dw, ``_Plan.lanes_dw``): 12 accumulators each), and none of the
    kernels written for AVX-512 alone.  Measured on an AMD EPYC (Zen 3, AVX2; float32, one
    thread, 7 rounds in one process against the BLAS modes; median speed-up, quartiles), the
    narrow forward won on every layer tried: 3x3 16->16 on 64x32x32 2.50x (2.40-2.54), 3->16
    2.29x, 3->32 1.89x, 32->32 on 16x16 1.79x, 5x5 16->32 on 14x14 1.61x, stride 2 16->32 1.76x,
    64->64 on 8x8 1.39x, 128->128 on 4x4 1.28x, 256->256 on 8x8 1.21x, LeNet-5's conv1 2.58x and
    conv2 1.94x; dx from 3 channels (3->16 on 32x32 2.56x; conv2 1.02x); the dw: see
    _narrow_dw.  Winograd's products in AVX-512's blocks fell from 0.68x PyTorch to 0.53x on
    the bench's 3x3 64->64, conv_five's 5x5 backward 0.92x: both now have AVX2's own blocks
    (conv_big._products_narrow, conv_five._products_narrow and their dw's), chosen by the shape
    of their transformed weights and partial dU, 1.2-1.7x the kernels before (_use_wino,
    _use_c5).  The samples in the lanes (0.67-0.87x) stay off without AVX-512.  The tests run
    every kernel on every machine (_DIRECT_ALL, and _WIDE_VECTORS set either way)."""
    global _WIDE_VECTORS
    if _WIDE_VECTORS is None:
        from numba.core import config
        features = config.CPU_FEATURES
        if features is None:
            from llvmlite import binding
            features = binding.get_host_cpu_features().flatten()
        _WIDE_VECTORS = "+avx512f" in features.split(",")
    return _WIDE_VECTORS


_WIDE_VECTORS = None
_NARROW_DX_CHANNELS = 3     # AVX2: dx by the direct kernel from this many input channels
_NARROW_DW_WEIGHTS = 1024   # AVX2: the direct dw for C*F up to this, ...
_NARROW_DW_PLANE = 2048     # ... or up to 4x this on planes of at least this many outputs


def _narrow_dw(c, f, plane):
    """Whether AVX2's direct dw (conv_direct._dw_blocks_narrow) runs; measured against the
    BLAS modes (float32, one thread, 7 rounds in one process; median speed-up, quartiles): 3x3
    16->16 on 64x32x32 1.67-1.80x (1.64-1.88), 64->64 on 8x56x56 1.43x (1.32-1.51), LeNet-5's
    conv2 (6->16 5x5 on 64x14x14) 1.49x, 5x5 16->32 on 64x14x14 1.13x, 32->32 on 64x16x16
    1.05-1.10x, stride 2 16->32 1.00x; not 64->64 on 16x16x16 (0.81-0.87x), on 64x8x8
    (0.63-0.75x) or 128->128 on 16x16 and 8x8 planes (0.46-0.65x): each block of 2 filters x 6
    taps sums a short run of the plane, then 12 vectors lane by lane.  Unlike AVX-512's blocks
    of 4 filters it also runs for fewer than 8 filters (BLAS's products of so few rows ran at
    ~5 GFLOP/s): LeNet-5's conv1 (1->6 5x5 on 64x32x32) 3.46x (3.43-3.65), at batch 256 4.22x,
    3->6 3.39x, 1->6 on 28x28 with padding 2 3.73x, 3->4 3x3 3.11x, 64->3 on 16x32x32 2.87x,
    32->1 on 16x64x64 3.29x, 16->2 on 64x16x16 2.69x, 8->5 5x5 on 64x14x14 2.23x."""
    return c * f <= _NARROW_DW_WEIGHTS or (c * f <= 4 * _NARROW_DW_WEIGHTS
                                           and plane >= _NARROW_DW_PLANE)


def _use_direct(x_shape, w_shape, stride, pad, dilation, groups, mode, oh, ow):
    """The register-blocked direct forward (conv_direct.py) for groups-1 convolutions of at
    least _DIRECT_MACS multiply-adds that are not a bare matrix product (1x1, stride 1, no
    padding) or a kernel smaller than its stride (IM2COL).  Measured against the mode's BLAS
    forward (float32, one thread, CPU time, median of 7 rounds at load 3-7): faster on every
    layer of ResNet-8 (batch 64: 1.2-1.7x, the strided ones by gather 1.3x and 1.7x), the
    U-Net (batch 16: 1.2-1.5x), LeNet-5 at batch 64 (1.4x, 1.1x) and the bench rows (1.0-1.35x);
    LeNet-5 at batch 1 (0.1-0.2 M multiply-adds) 0.98x and 0.76x.  Without AVX-512 the same
    rule, in AVX2's narrow blocks (see _wide_vector_cpu)."""
    if not _DIRECT or groups != 1 or mode == IM2COL:
        return False
    if _DIRECT_ALL:
        return True
    macs = x_shape[0] * w_shape[0] * oh * ow * w_shape[1] * w_shape[2] * w_shape[3]
    if macs < _DIRECT_MACS:
        return False
    return True


_LANES = None           # tests: True / False, the forward and dx by forward_lanes wherever the
                        # direct kernels run / never; None: the rules (_use_lanes)
_LANES_WASTE = 1.25     # the wide grid's extra work from which forward_lanes runs
_LANES_TAPS = 1536      # at most this many C*KH*KW (the weights of a block of filters, 384 KB)
_LANES_PLANE = 1024     # and on planes of at least this many outputs (32x32), whatever the waste
_NARROW_LANES_WASTE = 1.1    # AVX2's blocks (16 filters): from this waste of its wide grid


def _use_lanes(f, k, waste, plane, narrow=False):
    """The forward (or dx) by conv_direct.forward_lanes, filters in the vector lanes: where the
    wide grid would compute at least _LANES_WASTE times the outputs (small planes: 8x8 with
    padding 1, 1.5x; 4x4, 2x) or the plane has at least _LANES_PLANE outputs, F is a multiple
    of its blocks of 64 filters and K = C*KH*KW is at most _LANES_TAPS (each sample reads a
    block's K x 64 weights once: beyond L2 on 3x3 256->256, 0.5-0.75x).  Measured against the
    wide grid's direct loops (float32, one thread, CPU time, 9 rounds, the machine shared;
    median speed-up, min-max): 3x3 64->64 on 64x8x8 1.29-1.48x, stride 2 32->64 on 64x16x16
    (8x8 out) 1.26-1.40x, 128->128 on 16x8x8 1.16-1.29x; on 16x16 planes (1.125x of wide work)
    64->64 at batch 16 0.90-1.09x, left to the wide grid.  Large planes (sixth round, after
    the tile went to ``out`` by vector transposes; 21 rounds, quartiles), forward / dx: 3x3
    64->64 on 8x56x56 1.10x (1.03-1.18) / 1.12x (1.09-1.27), on 16x32x32 1.14x / 1.08x; not
    on 16x16 (1.00x / 1.01x) or 128->128 on 8x28x28 (1.07x / 0.92x).

    Without AVX-512 (``narrow``: blocks of 16 filters, 6 positions x 2 half vectors) F a
    multiple of 16 and the narrow wide grid's waste (strips of 24) at least
    _NARROW_LANES_WASTE, whatever the plane.  Measured on AVX2 (Zen 3) against the narrow wide
    grid's loops (float32, one thread, 7 rounds; median, quartiles): the bench's 5x5 16->32 on
    64x14x14 (waste 1.22) 1.19x (1.16-1.20), its dx's 5x5 32->16 1.22x (1.21-1.23), LeNet-5's
    5x5 6->16 on 64x14x14 (1.44) 1.53x (1.51-1.61), 3x3 64->64 on 64x4x4 (1.50) 1.45x, 32->32
    on 64x7x7 (1.47) 1.34x, on 64x10x10 (1.20) 1.17x, 16->16 on 64x12x12 (1.17) 1.33x.  The
    threshold was 1.15 until the fifteenth round, when 3x3 with padding 1 on 8x8 and 16x16
    planes (waste 1.125) measured (7 rounds of 7 calls, medians, forward / dx): ResNet-8's
    64->64 on 64x8x8 1.11-1.14x / 1.13-1.15x, 32->32 on 64x16x16 1.12-1.13x / 1.12-1.13x, 16->16
    on 64x16x16 1.16x / 1.14x, 48->48 on 32x16x16 1.12x, 64->64 on 16x8x8 1.08x / 1.10x,
    128->128 on 64x8x8 1.05x, 64->64 on 16x16x16 and 64x16x16 0.99-1.01x; ResNet-8's step
    1.011x (1.006-1.028, five process pairs; 1.013x on two threads).  Below 1.1 the wide grid
    stays: 32x32 planes (waste 1.03: 16->16 0.96-0.99x), 5x5 on 28x28 (1.07: 1.00x), 56x56
    (3x3 64->64: 0.92x then, 1.00x now)."""
    if _LANES is not None:
        return _LANES and f % (16 if narrow else 64) == 0
    if narrow:
        return f % 16 == 0 and k <= _LANES_TAPS and waste >= _NARROW_LANES_WASTE
    return f % 64 == 0 and k <= _LANES_TAPS and (waste >= _LANES_WASTE or plane >= _LANES_PLANE)


_LANES_DW = None        # tests: True / False, dw by conv_direct.weight_grad_lanes wherever F is a
                        # multiple of 16 on AVX2 / never; None: the rules (_use_lanes_dw)


def _use_lanes_dw(f):
    """AVX2's weight gradient with the filters in the vector lanes (conv_direct.weight_grad_lanes)
    wherever F is a multiple of 16 (its blocks).  Measured on AVX2 (Zen 3) against the kernels
    the rules chose before (float32, one thread, 7 rounds, dw and db; median, quartiles): the
    bench's 5x5 16->32 on 64x14x14 1.54x (1.50-1.54; the narrow blocked sums), LeNet-5's 6->16
    2.24x (BLAS), ResNet-8's 3x3 16->16 on 32x32 1.17x, 16->32 stride 2 1.56x, 32->32 on 16x16
    1.33x, 32->64 stride 2 1.46x (BLAS), 64->64 on 8x8 1.52x (BLAS), the bench's 64->64 on
    8x56x56 1.18x, 16->16 on 16x64x64 1.10x, 32->32 on 16x32x32 1.21x; 3 channels (the blocked
    sums' best case) 1.01x and 1.06x."""
    if _LANES_DW is not None:
        return _LANES_DW and f % 16 == 0
    return f % 16 == 0


_WINO = None            # tests: True / False, conv_big's Winograd wherever it can run / never;
                        # None: the rules (_use_wino)
_WINO_HWC = None        # tests: True / False, conv_big's channels-innermost layout wherever
                        # it can run (C a multiple of 16, AVX2) / never; None: _wino_hwc
_WINO_PLANE = 2048      # outputs per plane from which it runs (56x56: 3136)
_WINO_CHANNELS = 32     # input channels, at least (the products' inner dimension)
_WINO_WEIGHTS = 4096    # C*F at most: the 16 transformed weight matrices (256 KB) stay in L2
# AVX2's blocks (see _use_wino): (outputs per plane at least, C and F at least), and C*F at
# most (U: 4 MB in float32)
_NARROW_WINO_PLANES = ((2048, 16), (1024, 32), (196, 64))
_NARROW_WINO_WEIGHTS = 1 << 16
# and, in the channels-innermost layout (_wino_hwc), forward and dx on smaller planes too
_NARROW_HWC_PLANES = ((256, 16), (64, 32))
_HWC_WIDTH = 16         # output rows up to this wide (8 tiles), or C >= _HWC_CHANNELS
_HWC_CHANNELS = 64


def _line_base(workspace, shared):
    """(the shared part, where the threads' slices start) for the kernels whose buffers start on
    64-byte lines (Winograd, conv_five, the lanes): the first element of the workspace on a
    line, and the slices from the line-aligned element in the last 16 of the shared part
    (_Plan rounded it up to 16 and added 16; the slices' size is a multiple of 16)."""
    shift = (-(workspace.ctypes.data // workspace.itemsize)) % (64 // workspace.itemsize)
    return workspace[shift:shared - 16 + shift], shared - 16 + shift


def _use_wino(c, f, kernel, stride, dilation, plane, narrow=False, width=None):
    """Forward, dx (c and f swapped, the input's plane) and dw by Winograd F(2x2, 3x3)
    (conv_big.py) for 3x3 kernels, stride 1, no dilation, F a multiple of its blocks of 64
    filters, C >= _WINO_CHANNELS, C*F <= _WINO_WEIGHTS and planes of >= _WINO_PLANE outputs.
    Measured against the kernels the rules chose before (float32, one thread, CPU time, 15
    rounds alternating, load 4-5; median speed-up, quartiles), forward / dx / dw: 3x3 64->64 on
    8x56x56 1.21x (1.13-1.22) / 1.18x (0.96-1.20) / 1.62x (1.50-1.68) (another run: forward
    1.36x, 1.35-1.38); not on smaller planes: 64->64 on 16x32x32 0.94x / 1.00x / 1.03x, on
    16x16x16 0.80x / 0.85x / 0.94x (the input transform runs whole vectors of 16 tiles: half
    empty on rows of 8), 128->128 on 8x28x28 0.98x / 0.90x / 1.17x; nor with many channels (256
    ->256 on 4x14x14 0.63x / 0.67x / 1.13x: each sample reads 4 MB of transformed weights) or
    32 or 16 filters (a block of 64 half or three quarters empty: 0.68x, 0.46x forward).

    Without AVX-512 (``narrow``: AVX2's blocks of the products, 6 tiles x 16 filters, U padded
    to 16 filters) it wins far more widely, since AVX2's direct loops run further from the
    FMA units' peak: F a multiple of 16, C*F <= 65536, and C and F >= 16 on planes of >= 2048
    outputs, >= 32 on planes of >= 1024, >= 64 on planes of >= 196 (_NARROW_WINO_PLANES).
    Measured on an AMD EPYC (Zen 3) against the kernels the rules chose before (float32, one
    thread, 7 rounds in one process; median speed-up), forward / dx / dw: 3x3 64->64 on
    8x56x56 1.60x / 1.58x / 1.64x, on 16x64x64 1.66x, on 2x112x112 1.63x, on 8x28x28 1.25x /
    1.25x / 1.40x, on 16x16x16 1.38x / 1.38x / 1.34x; 128->128 on 8x28x28 1.38x / 1.39x /
    1.68x, 256->256 on 8x14x14 1.18x / 1.23x / 1.48x; 32->32 on 8x56x56 1.21x / 1.21x /
    1.34x, on 16x32x32 1.18x / 1.20x / 1.26x; 16->16 on 16x64x64 1.13x / 1.12x / 1.09x; the
    U-Net's 64->32 on 16x32x32 1.38x / 1.23x / 1.42x and 32->16 on 16x64x64 1.17x / 1.10x /
    1.20x.  Not: ResNet-8's layers, 16->16 on 64x32x32 and 32->32 on 64x16x16 (0.95-1.10x
    from run to run, on 1 and 2 threads; its training step 1.00x on one thread, 0.94x on two),
    nor 64->64 on 64x8x8 (1.04x / 1.08x / 1.01x), 128->128 on 16x8x8 (0.89x / 0.89x / 1.17x),
    512->512 on 4x7x7 (0.52x forward: 16 MB of U), 16->32 on 64x16x16 (0.99x / 0.81x /
    0.93x), 8->16 (0.74x / 0.58x / 0.85x), 3->16 (0.57x / 0.37x / 0.63x), 16->16 on 64x8x8
    (0.53x / 0.70x / 0.66x).  ``width`` (the output's): also the smaller planes that the
    channels-innermost layout takes (``_wino_hwc``, _NARROW_HWC_PLANES)."""
    if kernel != (3, 3) or stride != (1, 1) or dilation != (1, 1):
        return False
    if _WINO is not None:
        return _WINO
    if narrow:
        if f % 16 or c * f > _NARROW_WINO_WEIGHTS:
            return False
        if width is not None and _wino_hwc(c, width, narrow) and any(
                plane >= least and min(c, f) >= channels for least, channels in _NARROW_HWC_PLANES):
            return True
        return any(plane >= least and min(c, f) >= channels
                   for least, channels in _NARROW_WINO_PLANES)
    return (f % 64 == 0 and c >= _WINO_CHANNELS and c * f <= _WINO_WEIGHTS
            and plane >= _WINO_PLANE)


def _wino_hwc(c, width, narrow):
    """Winograd's forward and dw (dx: c the output gradient's channels) in conv_big's
    channels-innermost layout (``_fill_hwc``, ``_input_tiles_hwc``: the input transform's vectors
    hold 16 channels rather than 16 tiles of a row, half or three quarters empty on rows of 8 or
    4 tiles): AVX2 (its products' blocks read either layout), C a multiple of 16, output rows
    of at most _HWC_WIDTH or C >= _HWC_CHANNELS.  The same values as the tiles' layout, bit for bit.
    Measured on an AMD EPYC (Zen 3), float32, one thread, 3 rounds in one process; forward / dx
    against the direct loops that ran them before: 16->16 on 64x16x16 1.18x / 1.17x, 32->32 on
    64x8x8 1.24x / 1.24x, on 64x16x16 1.51x / 1.52x, 16->32 on 64x16x16 1.26x / 1.24x, 64->64
    on 64x8x8 1.46x / 1.47x, 64->128 on 64x8x8 1.48x / 1.58x, 128->128 on 64x8x8 1.58x / 1.57x
    (the tiles' layout on these: 0.75x, 0.75x, 1.07x, 1.01x, 1.01x, 1.19x, 1.25x forward);
    against the tiles' layout on the layers that it ran: 64->64 on 64x14x14 1.29x, on 32x28x28
    1.11x, on 8x56x56 1.02-1.08x, 32->64 on 64x16x16 1.23x.  Not: 16->16 on 64x32x32 (0.87x
    the tiles' layout), 16->32 and 32->16 on 64x32x32 (0.97x, 0.86x), 16->16 on 16x64x64
    (0.86x), 32->32 on 16x64x64 (0.90x), where rows of 16 or 32 tiles fill the tiles' vectors;
    nor 16->16 on 64x8x8 (0.89x the direct loops).  dw (Winograd's on x, in x's layout):
    against the filters in the lanes that ran it before, 32->32 on 64x16x16 1.30x, 64->64 on
    64x8x8 1.33x, 16->16 on 64x16x16 1.13x, 32->32 on 64x8x8 1.02x (the tiles' layout: 1.03x,
    0.98x, 0.80x, 0.67x); against the tiles' layout, 64->64 on 64x14x14 1.16x, 128->128 on
    64x8x8 1.20x, 32->64 on 64x16x16 1.10x, 128->128 on 16x16x16 1.06x, 64->64 on 32x28x28
    1.03x, on 8x56x56 0.99x.  float64 (8 lanes a vector) against the direct loops: 32->32 on
    64x16x16 1.51x / 1.50x / 1.27x (forward / dx / dw), 64->64 on 64x8x8 1.53x / 1.53x /
    1.45x, 16->16 on 64x16x16 1.21x / 1.22x / 1.08x."""
    if not narrow or c % 16:
        return False
    if _WINO_HWC is not None:
        return _WINO_HWC
    return width <= _HWC_WIDTH or c >= _HWC_CHANNELS


_C5 = None              # tests: True / False, conv_five's row Winograd wherever it can run /
                        # never; None: the rules (_use_c5)
_C5_ELEMENTS = 1 << 22  # a thread's slice at most (16 MB in float32; 5x5 32->32 on 28x28: 8 MB)
_C5_CHANNELS = 8        # channels from which it runs (LeNet-5: compile; see _use_c5)


def _use_c5(n, c, f, stride, dilation, elements, dx=False, dw=False, narrow=False):
    """The forward, dx (``dx``: c and f swapped) or dw of a 5x5 convolution by Winograd F(4, 5)
    along the rows (conv_five.py): float32 (the calls check; float64 keeps the kernels before,
    and the tests compile one signature less), stride 1, no dilation, batches of >= 16 samples
    (a chunk of lanes, and a chunk per thread: the calls check), a thread's slice (``elements``) of at most _C5_ELEMENTS, and C >= _C5_CHANNELS or
    F >= 32 (forward), C and F >= _C5_CHANNELS (dx), C >= _C5_CHANNELS and F >= 16 (dw: blocks
    of 32 filters).  Measured against the kernels the rules chose before (float32, one thread,
    CPU time, 7-13 rounds alternating, load 4-7; median speed-up, quartiles), forward / dx /
    dw + db: 5x5 16->32 on 64x14x14 1.69x (1.52-1.78) / 1.32x (1.18-1.41) / 1.36x (1.24-1.45),
    forward+backward 1.47x (1.38-1.78); 16->32 on 16x14x14 1.50x / 1.25x / 1.16x; 16->16 on
    64x14x14 1.45x / 1.49x / 1.05x, on 32x28x28 1.63x / 1.66x / 1.04x; 8->8 on 64x14x14 1.36x /
    1.27x / 0.64x (8 filters: dw's blocks three quarters empty); 3->32 on 64x32x32 1.37x / 0.89x
    / 0.76x (3 channels); LeNet-5's 1->6 on 64x32x32 1.14x / 0.47x / 0.24x and 6->16 on
    64x14x14 2.27x / 1.23x / 1.21x (step 1.39x), but LeNet-5's first training step then
    compiled these kernels: 20.7-23.7 s of CPU against 10.5-13.5 (3 fresh processes each, load
    7): so not below 8 channels and 32 filters.  F(2, 5), first: 0.85-0.87x of F(4, 5) on the
    bench's row, 0.68-0.79x on 32->32 on 64x28x28.

    Without AVX-512 (``narrow``) the same rules, the products in AVX2's blocks, but dw from
    32 filters (its blocks of 16 filters read dM padded to 32).  Measured on an AMD EPYC
    (Zen 3) against the kernels the rules chose before (float32, one thread, 7 rounds in one
    process; median speed-up, quartiles), forward / dx / dw: 5x5 16->32 on 64x14x14 1.61x
    (1.57-1.64) / 1.18x / 1.22x (1.20-1.23), on 256x14x14 1.74x / 1.38x / 1.32x, on 16x14x14
    1.36x / 1.00x / 1.02x; 32->32 on 64x28x28 1.53x / 1.55x / 1.44x; 32->64 on 64x14x14
    1.64x / 1.37x / 1.39x; 16->16 on 64x14x14 1.43x / 1.42x and on 32x28x28 1.58x / 1.59x
    (dw 0.64x and 0.68x: not taken); 8->8 1.27x / 1.21x; 3->32 forward 1.15x.  Before, AVX-512's
    blocks (24 accumulators of 16 lanes, spilling on AVX2) had measured 1.00x forward and 0.93x
    backward on the bench's row."""
    if stride != (1, 1) or dilation != (1, 1) or n < 16:
        return False
    if _C5 is not None:
        return _C5
    if dx:          # c, f = dx's channels, filters: the layer's F and C
        ok = min(c, f) >= _C5_CHANNELS
    elif dw:
        ok = f >= (32 if narrow else 16) and c >= _C5_CHANNELS
    else:
        ok = c >= _C5_CHANNELS or f >= 32
    return ok and elements <= _C5_ELEMENTS


def _is_depthwise(x_shape, w_shape, groups):
    """One input channel per group and several groups: the direct loops of depthwise.py (a
    (1 x KH*KW) matrix per group is far too small for BLAS).  A one-channel convolution with
    groups=1 (LeNet's first layer) stays here."""
    return groups > 1 and groups == x_shape[1] and w_shape[1] == 1


def conv2d_workspace_size(x_shape, w_shape, stride, pad, dilation=(1, 1), groups=1):
    """Elements of the scratch ``workspace`` that conv2d_forward_into/backward_into need."""
    if _is_depthwise(x_shape, w_shape, groups):
        from cnnspec.kernels import depthwise
        return depthwise.workspace_size(tuple(x_shape), tuple(w_shape), tuple(stride),
                                        tuple(pad), tuple(dilation), num_threads())
    plan = _layer_plan(x_shape, w_shape, stride, pad, dilation, groups)
    # at least one piece: an empty batch still runs (and checks) one thread's slice
    size = plan.workspace_size(max(1, _backward_pieces(x_shape[0], num_threads())))
    if not plan.slanes_dx:
        out_shape = conv2d_output_shape(x_shape, w_shape, stride, pad, dilation)
        for dtype in (np.float32, np.float64):
            output_pad = _transposed_dx(tuple(x_shape), tuple(out_shape), tuple(w_shape),
                                        tuple(stride), tuple(pad), tuple(dilation), groups, dtype)
            if output_pad is not None:
                from cnnspec.kernels.conv_transpose import forward_products_workspace_size
                size = max(size, forward_products_workspace_size(
                    tuple(out_shape), tuple(w_shape), tuple(x_shape), tuple(stride),
                    tuple(dilation), 1))
    return size


_TRANSPOSED_DX = None             # tests: True / False, a strided convolution's dx as the
                                  # transposed convolution's products in lanes wherever those run
                                  # (conv_transpose._lane_chunks) / never; None: the rule


def _transposed_dx(x_shape, dout_shape, w_shape, stride, pad, dilation, groups, dtype):
    """The output padding with which dx (N, C, H, W) is the transposed convolution of dout by
    w, where conv_transpose.py's products with the samples in the lanes compute it (its
    ``_lane_chunks``: taps that overlap, a chunk of lanes samples per thread), else None.  The
    rule: strided, groups 1, 8 input channels or more.  Measured against this module's strided
    dx (float32, AMD EPYC, AVX2, one thread, 7 rounds): ResNet-8's 3x3 stride 2 16 -> 32 at
    64x32x32 1.08x, 32 -> 64 at 64x16x16 1.29x; 64 -> 128 at 32x56x56 1.89x, 256 -> 512 at
    16x14x14 3.3x; DCGAN's discriminator 4x4 stride 2 64 -> 128 at 64x32x32 2.35x, 128 -> 256
    at 64x16x16 3.66x; 5x5 stride 2 32 -> 64 at 32x28x28 1.76x; its first layer (3 channels)
    0.90x: left out."""
    from cnnspec.kernels import conv_transpose as T
    if _TRANSPOSED_DX is False or stride == (1, 1) or groups != 1 or (
            _TRANSPOSED_DX is None and w_shape[1] < 8):
        return None
    if not T._lane_chunks(dout_shape, w_shape, stride, dilation, 1, dtype)[0]:
        return None
    return tuple(x_shape[2 + a] - T.conv_transpose_output_size(
        dout_shape[2 + a], w_shape[2 + a], stride[a], pad[2 * a], pad[2 * a + 1], 0, dilation[a])
        for a in (0, 1))


# -- small loops ------------------------------------------------------------------------------
# numba idiom used throughout: take a 1-D view at the offset and index it with the bare loop
# variable (``d = col[dst:]; d[e] = s[e]``).  ``col[dst + e]`` makes numba test every index for
# negative wrap-around, which blocks vectorisation: the gather below ran 17x slower that way.


@jit
def _zero(a):
    """a[:] = 0 for a 1-D array, as a loop: numba's slice assignment compiles its general
    broadcasting code (seconds of first-call compile time for the kernels that use it)."""
    for e in range(a.size):
        a[e] = 0


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


def _direct_pitch(w, stride, pad):
    """Row pitch of conv_direct.py's wide grid (its _grid)."""
    return w + max(pad[2], pad[3]) if stride == (1, 1) else -(-(w + pad[2] + pad[3]) // stride[1])


def wide_waste(wq, oh, ow, strip=32):
    """Work on the wide grid (OH rows of Wq, in strips of 32 outputs, or ``strip``) over the
    output's OH*OW."""
    return -(-(oh * wq) // strip) * strip / (oh * ow)


def _phase_shape(h_, w_, stride, pad):
    """(Hq, Wq): rows and columns of one phase plane of the padded input (see _split_sample)."""
    hp, wp = h_ + pad[0] + pad[1], w_ + pad[2] + pad[3]
    return -(-hp // stride[0]), -(-wp // stride[1])


_phase_shape_jit = jit(_phase_shape)


@jit
def _phase_runs(size, before, step, phase):
    """Input positions p = p0 + e*step (e < count) whose padded position p + before lies in
    ``phase`` (= (p + before) % step); their index in the phase is s0 + e.  Returns p0, s0, count."""
    p0 = (phase - before) % step
    if p0 >= size:
        return 0, 0, 0
    return p0, (p0 + before) // step, (size - p0 + step - 1) // step


@jit
def _split_sample(x, n, stride, pad, zero, xp):
    """xp (flat) = x[n] zero-padded and split into stride phases (sh*sw, C, Hq, Wq):
    xp[(a*sw + b), c, r, s] = xpad[c, r*sh + a, s*sw + b].  With stride 1 that is just the padded
    sample (C, Hp, Wp).  A strided convolution is then a sum of stride-1 taps over the phases
    (tap (i, j) reads phase ((i*dh) % sh, (j*dw) % sw) shifted by ((i*dh)//sh, (j*dw)//sw)), so
    every stride runs on the wide-grid products without an im2col copy.  The borders are the
    same for every sample: ``zero`` (first sample of a call) clears the whole buffer, including
    the tail after it that the wide grid's last row reads."""
    _, c_, h_, w_ = x.shape
    sh, sw = stride
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    plane = hq * wq
    if zero:
        _zero(xp)
    xf = x.reshape(x.size)
    if sh == 1 and sw == 1:                  # flat arrays, unsigned indices: see _to_wide
        for c in range(c_):
            for h in range(h_):
                src = np.uint64(((n * c_ + c) * h_ + h) * w_)
                dst = np.uint64((c * hq + h + pad[0]) * wq + pad[2])
                for e in range(w_):
                    xp[dst + np.uint64(e)] = xf[src + np.uint64(e)]
        return
    # row phase by row phase, so that the divisions are out of the loops (one per row cost 3x)
    be = pad[2] % sw                         # the column phase that even columns of x go to
    _, se, _ = _phase_runs(w_, pad[2], sw, be)
    _, so, _ = _phase_runs(w_, pad[2], sw, 1 - be)
    half = w_ // 2
    one, two = np.uint64(1), np.uint64(2)
    for a in range(sh):
        h0, r0, rows = _phase_runs(h_, pad[0], sh, a)
        for c in range(c_):
            for rr in range(rows):
                # flat arrays and unsigned indices, no views: a row view cost as much as the
                # copy of its few elements, and unsigned indices skip the negative-index test
                src = np.uint64(((n * c_ + c) * h_ + h0 + rr * sh) * w_)
                at = (a * sw * c_ + c) * plane + (r0 + rr) * wq
                if sw == 2:                  # even and odd columns in one loop
                    de = np.uint64(at + be * c_ * plane + se)
                    do = np.uint64(at + (1 - be) * c_ * plane + so)
                    for e in range(half):
                        u = np.uint64(e)
                        xp[de + u] = xf[src + two * u]
                        xp[do + u] = xf[src + two * u + one]
                    if w_ % 2:
                        xp[de + np.uint64(half)] = xf[src + np.uint64(w_ - 1)]
                    continue
                for b in range(sw):
                    pb, sb, nb = _phase_runs(w_, pad[2], sw, b)
                    dst = np.uint64(at + b * c_ * plane + sb)
                    for e in range(nb):
                        xp[dst + np.uint64(e)] = xf[src + np.uint64(pb + sw * e)]


@jit
def _merge_phases(dxp, stride, pad, n, accumulate, dx):
    """dx[n] (+)= dxp (phases, as _split_sample lays them out) without the padding (flat arrays
    and unsigned indices, as in _split_sample)."""
    _, c_, h_, w_ = dx.shape
    sh, sw = stride
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    plane = hq * wq
    dxf = dx.reshape(dx.size)
    be = pad[2] % sw                         # the column phase of x's even columns
    _, se, _ = _phase_runs(w_, pad[2], sw, be)
    _, so, _ = _phase_runs(w_, pad[2], sw, 1 - be)
    half = w_ // 2
    one, two = np.uint64(1), np.uint64(2)
    for a in range(sh):
        h0, r0, rows = _phase_runs(h_, pad[0], sh, a)
        for c in range(c_):
            for rr in range(rows):
                dst = np.uint64(((n * c_ + c) * h_ + h0 + rr * sh) * w_)
                at = (a * sw * c_ + c) * plane + (r0 + rr) * wq
                if sw == 2 and w_ % 2 == 0:  # even and odd columns in one loop
                    de = np.uint64(at + be * c_ * plane + se)
                    do = np.uint64(at + (1 - be) * c_ * plane + so)
                    if accumulate:
                        for e in range(half):
                            u = np.uint64(e)
                            dxf[dst + two * u] += dxp[de + u]
                            dxf[dst + two * u + one] += dxp[do + u]
                    else:
                        for e in range(half):
                            u = np.uint64(e)
                            dxf[dst + two * u] = dxp[de + u]
                            dxf[dst + two * u + one] = dxp[do + u]
                    continue
                for b in range(sw):
                    pb, sb, nb = _phase_runs(w_, pad[2], sw, b)
                    src = np.uint64(at + b * c_ * plane + sb)
                    if accumulate:
                        for e in range(nb):
                            dxf[dst + np.uint64(pb + sw * e)] += dxp[src + np.uint64(e)]
                    else:
                        for e in range(nb):
                            dxf[dst + np.uint64(pb + sw * e)] = dxp[src + np.uint64(e)]


@jit
def _tap_offset(i, j, c_, plane, wq, stride, dilation):
    """Offset in the phase buffer of tap (i, j)'s window for output (0, 0) of channel 0."""
    ai, aj = i * dilation[0], j * dilation[1]
    phase = (ai % stride[0]) * stride[1] + aj % stride[1]
    return phase * c_ * plane + (ai // stride[0]) * wq + aj // stride[1]


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
    """col[(c, i, j), (oh - oh0)*OW + ow] = xpad[n, c0 + c, oh*sh + i*dh, ow*sw + j*dw].

    Flat arrays and unsigned indices instead of a view per output row: the rows are short
    (1x1 stride-2 convolutions: 16 elements) and a view costs about as much as copying them
    (measured 2.5x faster)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    sw = np.uint64(stride[1])
    pc = (oh1 - oh0) * ow_
    xf = x.reshape(x.size)
    for c in range(cg):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                row = ((c * kernel[0] + i) * kernel[1] + j) * pc
                off = j * dilation[1] - pad[2]
                lo, hi = _span(ow_, w_, stride[1], off)
                for oh in range(oh0, oh1):
                    d = np.uint64(row + (oh - oh0) * ow_)
                    ih = oh * stride[0] + i * dilation[0] - pad[0]
                    if ih < 0 or ih >= h_:
                        for e in range(ow_):
                            col[d + np.uint64(e)] = 0
                        continue
                    for e in range(lo):
                        col[d + np.uint64(e)] = 0
                    src = np.uint64((((n * c_ + c0 + c) * h_ + ih) * w_) + lo * stride[1] + off)
                    d += np.uint64(lo)
                    for e in range(hi - lo):
                        col[d + np.uint64(e)] = xf[src + sw * np.uint64(e)]
                    d += np.uint64(hi - lo)
                    for e in range(ow_ - hi):
                        col[d + np.uint64(e)] = 0


@jit
def _col2im_add(col, kernel, stride, pad, dilation, oh0, oh1, ow_, n, c0, cg, dx):
    """The adjoint of _im2col: dx[n, c0 + c, ih, iw] += col[(c, i, j), q] (padding dropped)."""
    h_, w_ = dx.shape[2], dx.shape[3]
    sw = stride[1]
    pc = (oh1 - oh0) * ow_
    c_ = dx.shape[1]
    dxf = dx.reshape(dx.size)
    step = np.uint64(sw)
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
                    src = np.uint64(row + (oh - oh0) * ow_ + lo)
                    dst = np.uint64(((n * c_ + c0 + c) * h_ + ih) * w_ + lo * sw + off)
                    for e in range(hi - lo):
                        dxf[dst + step * np.uint64(e)] += col[src + np.uint64(e)]


@jit
def _gather_taps(xp, c_, g, cg, kernel, stride, dilation, plane, wq, oh0, q, col):
    """col[(c, i, j), :q] = xp[tap (i, j) window of channel g*cg + c from row oh0] (contiguous
    runs; c_ channels in all, see _tap_offset)."""
    for c in range(cg):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                src = xp[_tap_offset(i, j, c_, plane, wq, stride, dilation)
                         + (g * cg + c) * plane + oh0 * wq:]
                dst = col[((c * kernel[0] + i) * kernel[1] + j) * q:]
                for e in range(q):
                    dst[e] = src[e]


@jit
def _scatter_taps(col, c_, g, cg, kernel, stride, dilation, plane, wq, oh0, q, dxp):
    """The adjoint of _gather_taps: dxp[tap window] += col[(c, i, j), :q]."""
    for c in range(cg):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                dst = dxp[_tap_offset(i, j, c_, plane, wq, stride, dilation)
                          + (g * cg + c) * plane + oh0 * wq:]
                src = col[((c * kernel[0] + i) * kernel[1] + j) * q:]
                for e in range(q):
                    dst[e] += src[e]


# The small copies below use flat arrays and unsigned indices (np.uint64) rather than a view per
# row: rows are short (8 to 32 elements in ResNet-8), a view costs about as much as copying
# them, and an unsigned index needs no negative-index test (measured: stride-2 phase split 2.8x,
# merge 2.8x, 1x1 stride-2 im2col 2x faster).


@jit
def _to_wide(dout, n, oh0, r, wp, wide):
    """wide[f, rr*Wp + ow] = dout[n, f, oh0 + rr, ow]; zero on the Wp - OW extra columns."""
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    q = r * wp
    df = dout.reshape(dout.size)
    for f in range(f_):
        for rr in range(r):
            src = np.uint64(((n * f_ + f) * oh_ + oh0 + rr) * ow_)
            dst = np.uint64(f * q + rr * wp)
            for e in range(ow_):
                wide[dst + np.uint64(e)] = df[src + np.uint64(e)]
            for e in range(ow_, wp):
                wide[dst + np.uint64(e)] = 0


@jit
def _to_wide_t(dout, n, oh0, r, wp, wide_t):
    """wide_t[rr*Wp + ow, f] = dout[n, f, oh0 + rr, ow]: the transpose of _to_wide's matrix."""
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    df = dout.reshape(dout.size)
    step = np.uint64(oh_ * ow_)
    for rr in range(r):
        for ow in range(wp):
            dst = np.uint64((rr * wp + ow) * f_)
            if ow < ow_:
                src = np.uint64((n * f_ * oh_ + oh0 + rr) * ow_ + ow)
                for f in range(f_):
                    wide_t[dst + np.uint64(f)] = df[src + step * np.uint64(f)]
            else:
                for f in range(f_):
                    wide_t[dst + np.uint64(f)] = 0


@jit
def _from_wide(wide, b, n, oh0, r, wp, out):
    """out[n, f, oh0 + rr, :] = wide[f, rr*Wp : rr*Wp + OW] + b[f] (the extra columns dropped)."""
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    q = r * wp
    of = out.reshape(out.size)
    for f in range(f_):
        bias = b[f] if b.size > 0 else 0
        for rr in range(r):
            src = np.uint64(f * q + rr * wp)
            dst = np.uint64(((n * f_ + f) * oh_ + oh0 + rr) * ow_)
            for e in range(ow_):
                of[dst + np.uint64(e)] = wide[src + np.uint64(e)] + bias


# -- one sample -------------------------------------------------------------------------------


@jit
def _wide_forward(x, n, w, wt, b, kernel, stride, pad, dilation, groups, out, gather, rows,
                  zero, xp, wide, col):
    """out[n] on the wide grid (OH, Wq) of the phase planes, taps read in place (kn2row) or
    gathered."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    cg, fg = c_ // groups, f_ // groups
    k = cg * kernel[0] * kernel[1]
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    plane = hq * wq
    wf = w.reshape(w.size)
    _split_sample(x, n, stride, pad, zero, xp)
    for oh0 in range(0, oh_, rows):
        r = min(rows, oh_ - oh0)
        q = r * wq
        for g in range(groups):
            if gather:
                _gather_taps(xp, c_, g, cg, kernel, stride, dilation, plane, wq, oh0, q, col)
                gemm(False, False, fg, q, k, 1.0, wf[g * fg * k:], k, col, q,
                     0.0, wide[g * fg * q:], q)
                continue
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    tap = i * kernel[1] + j
                    shift = (_tap_offset(i, j, c_, plane, wq, stride, dilation)
                             + g * cg * plane + oh0 * wq)
                    gemm(False, False, fg, q, cg, 1.0, wt[(tap * f_ + g * fg) * cg:], cg,
                         xp[shift:], plane, 0.0 if tap == 0 else 1.0, wide[g * fg * q:], q)
        _from_wide(wide, b, n, oh0, r, wq, out)


@jit
def _wide_backward(dout, x, n, w, wt, kernel, stride, pad, dilation, groups, dx, accumulate,
                   need_dx, need_dw, gather, rows, zero, xp, dxp, wide, wide_t, col, dwp):
    """dx (+)= and dw^T += for sample n (dwp: GATHER (K, F), KN2ROW (taps, Cg, F))."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_, ow_ = dout.shape[1], dout.shape[2], dout.shape[3]
    cg, fg = c_ // groups, f_ // groups
    k = cg * kernel[0] * kernel[1]
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    plane = hq * wq
    wf = w.reshape(w.size)
    if need_dw:
        _split_sample(x, n, stride, pad, zero, xp)
    if need_dx:
        _zero(dxp)
    for oh0 in range(0, oh_, rows):
        r = min(rows, oh_ - oh0)
        q = r * wq
        if need_dx:
            _to_wide(dout, n, oh0, r, wq, wide)
        if need_dw:                          # dw^T = col @ dwide^T is BLAS's fast (NN) case
            _to_wide_t(dout, n, oh0, r, wq, wide_t)
        for g in range(groups):
            if gather:
                if need_dw:
                    _gather_taps(xp, c_, g, cg, kernel, stride, dilation, plane, wq, oh0, q, col)
                    gemm(False, False, k, fg, q, 1.0, col, q, wide_t[g * fg:], f_,
                         1.0, dwp[g * fg:], f_)
                if need_dx:
                    gemm(True, False, k, q, fg, 1.0, wf[g * fg * k:], k, wide[g * fg * q:], q,
                         0.0, col, q)
                    _scatter_taps(col, c_, g, cg, kernel, stride, dilation, plane, wq, oh0, q,
                                  dxp)
                continue
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    tap = i * kernel[1] + j
                    shift = (_tap_offset(i, j, c_, plane, wq, stride, dilation)
                             + g * cg * plane + oh0 * wq)
                    if need_dw:
                        gemm(False, False, cg, fg, q, 1.0, xp[shift:], plane, wide_t[g * fg:],
                             f_, 1.0, dwp[tap * cg * f_ + g * fg:], f_)
                    if need_dx:
                        gemm(True, False, cg, q, fg, 1.0, wt[(tap * f_ + g * fg) * cg:], cg,
                             wide[g * fg * q:], q, 1.0, dxp[shift:], plane)
    if need_dx:
        _merge_phases(dxp, stride, pad, n, accumulate, dx)


@jit
def _row_major_taps(w, wr):
    """wr[i, f, (c, j)] = w[f, c, i, j] (flat): each kernel row i is a BLAS matrix (F, C*KW)."""
    f_, c_, kh, kw = w.shape
    for f in range(f_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    wr[((i * f_ + f) * c_ + c) * kw + j] = w[f, c, i, j]


@jit
def _row_col(x, n, pad, dilation, kw, ow_, col):
    """col[(c, j), hp, ow] = xpad[n, c, hp, ow + j*dw] for every padded row hp (C*KW, Hp*OW)."""
    _, c_, h_, w_ = x.shape
    hp = h_ + pad[0] + pad[1]
    xf = x.reshape(x.size)
    for c in range(c_):
        for j in range(kw):
            base = (c * kw + j) * hp * ow_
            off = j * dilation[1] - pad[2]
            lo, hi = _span(ow_, w_, 1, off)
            for r in range(hp):
                dst = np.uint64(base + r * ow_)
                h = r - pad[0]
                if h < 0 or h >= h_:
                    for e in range(ow_):
                        col[dst + np.uint64(e)] = 0
                    continue
                for e in range(lo):
                    col[dst + np.uint64(e)] = 0
                src = np.uint64(((n * c_ + c) * h_ + h) * w_ + lo + off)
                inner = dst + np.uint64(lo)
                for e in range(hi - lo):
                    col[inner + np.uint64(e)] = xf[src + np.uint64(e)]
                for e in range(hi, ow_):
                    col[dst + np.uint64(e)] = 0


@jit
def _row_col_add(dcol, pad, dilation, kw, ow_, n, accumulate, dx):
    """The adjoint of _row_col: dx[n] (+)= the sum of dcol's windows (padding dropped)."""
    _, c_, h_, w_ = dx.shape
    hp = h_ + pad[0] + pad[1]
    if not accumulate:
        _zero(dx[n].reshape(dx[n].size))
    dxf = dx.reshape(dx.size)
    for c in range(c_):
        for j in range(kw):
            base = (c * kw + j) * hp * ow_
            off = j * dilation[1] - pad[2]
            lo, hi = _span(ow_, w_, 1, off)
            for h in range(h_):
                src = np.uint64(base + (h + pad[0]) * ow_ + lo)
                dst = np.uint64(((n * c_ + c) * h_ + h) * w_ + lo + off)
                for e in range(hi - lo):
                    dxf[dst + np.uint64(e)] += dcol[src + np.uint64(e)]


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
        _zero(dx[n].reshape(dx[n].size))
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


@jit
def _sum_pieces(ws, at, per, pieces, out):
    """out[i] = the sum over t < pieces of ws[at + i + t * per], in piece order (the threads'
    partial sums, laid ``per`` apart in the workspace: results do not depend on timing)."""
    for i in range(out.shape[0]):
        s = ws[at + i]
        for t in range(1, pieces):
            s += ws[at + i + t * per]
        out[i] = s


# -- drivers: samples split over threads ------------------------------------------------------
# ``layout`` = per-thread buffer offsets (see _Plan); ``wt`` = tap-major weights (KN2ROW) or
# weights by kernel row (ROWTAP).  One driver per way of making the matrices, all with the same
# arguments: a network compiles only the ways its layers use (a driver branching on the mode
# compiled all of them, LLVM inlining every branch: LeNet-5's first step took 4 s longer).


@jit
def _forward_im2col(x, w, b, kernel, stride, pad, dilation, groups, out, mode, identity, rows,
                    layout, wt, buf, n0, n1):
    for n in range(n0, n1):
        _im2col_forward(x, n, w, b, kernel, stride, pad, dilation, groups, out, identity, rows,
                        buf[:layout[3]])


@jit
def _rowtap_sizes(x, y, kernel, pad):
    """(F, OH, OW, C*KW, OH*OW, Hp*OW) of a rowtap convolution of x giving y: the products' sizes."""
    f_, oh_, ow_ = y.shape[1], y.shape[2], y.shape[3]
    return f_, oh_, ow_, x.shape[1] * kernel[1], oh_ * ow_, (x.shape[2] + pad[0] + pad[1]) * ow_


@jit
def _forward_rowtap(x, w, b, kernel, stride, pad, dilation, groups, out, mode, identity, rows,
                    layout, wt, buf, n0, n1):
    """out[n] = sum over kernel rows i of wt[i] (F, C*KW) @ col shifted by i*dh rows, for the
    samples n0 <= n < n1.  Driver and per-sample loop in one function: each level of jitted
    calls is compiled again inside its caller (LeNet-5's first step: 0.9 s per level)."""
    f_, oh_, ow_, kc, p, big_l = _rowtap_sizes(x, out, kernel, pad)
    of = out.reshape(out.size)
    col = buf[:layout[0]]
    for n in range(n0, n1):
        _row_col(x, n, pad, dilation, kernel[1], ow_, col)
        for oh0 in range(0, oh_, rows):
            q = min(rows, oh_ - oh0) * ow_
            dst = of[n * f_ * p + oh0 * ow_:]
            for i in range(kernel[0]):
                gemm(False, False, f_, q, kc, 1.0, wt[i * f_ * kc:], kc,
                     col[(oh0 + i * dilation[0]) * ow_:], big_l, 0.0 if i == 0 else 1.0, dst, p)
        if b.size > 0:
            for f in range(f_):
                plane = of[(n * f_ + f) * p:(n * f_ + f + 1) * p]
                for e in range(p):
                    plane[e] += b[f]


@jit
def _forward_wide(x, w, b, kernel, stride, pad, dilation, groups, out, mode, identity, rows,
                  layout, wt, buf, n0, n1):
    xp, o_wide, o_col, o_dw, _ = layout
    for n in range(n0, n1):
        _wide_forward(x, n, w, wt, b, kernel, stride, pad, dilation, groups, out,
                      mode == GATHER, rows, n == n0, buf[:xp],
                      buf[o_wide:(o_wide + o_col) // 2], buf[o_col:o_dw])


@jit
def _backward_im2col(dout, x, w, kernel, stride, pad, dilation, groups, dx, accumulate, need_dx,
                     need_dw, need_db, mode, identity, rows, layout, wt, buf, n0, n1):
    o_dw, o_db = layout[3], layout[4]
    dwp, dbp = buf[o_dw:o_db], buf[o_db:o_db + dout.shape[1]]
    _zero(dwp)
    _zero(dbp)
    for n in range(n0, n1):
        _im2col_backward(dout, x, n, w, kernel, stride, pad, dilation, groups, dx, accumulate,
                         need_dx, need_dw, identity, rows, buf[:o_dw], dwp)
        if need_db:
            _bias_grad_add(dout, n, dbp)


@jit
def _backward_rowtap(dout, x, w, kernel, stride, pad, dilation, groups, dx, accumulate, need_dx,
                     need_dw, need_db, mode, identity, rows, layout, wt, buf, n0, n1):
    """Per sample n0 <= n < n1: dx (+)= and the partial dw^T += col_i @ dout^T, dwp laid out
    (KH, C*KW, F), partial db (driver and per-sample loop in one function: see _forward_rowtap)."""
    xp, o_wide, o_col, o_dw, o_db = layout
    dwp, dbp = buf[o_dw:o_db], buf[o_db:o_db + dout.shape[1]]
    col, dcol, doutt = buf[:xp], buf[xp:o_wide], buf[o_wide:o_col]
    _zero(dwp)
    _zero(dbp)
    f_, oh_, ow_, kc, p, big_l = _rowtap_sizes(x, dout, kernel, pad)
    df = dout.reshape(dout.size)
    for n in range(n0, n1):
        if need_dw:
            _row_col(x, n, pad, dilation, kernel[1], ow_, col)
            for f in range(f_):              # dout^T (P, F): the products' fast (NN) case
                src = df[(n * f_ + f) * p:(n * f_ + f + 1) * p]
                for e in range(p):
                    doutt[np.uint64(e * f_ + f)] = src[e]
            for i in range(kernel[0]):       # whole planes: a long inner dimension is fast
                gemm(False, False, kc, f_, p, 1.0, col[i * dilation[0] * ow_:], big_l, doutt, f_,
                     1.0, dwp[i * kc * f_:], f_)
        if need_dx:
            _zero(dcol[:kc * big_l])
            for oh0 in range(0, oh_, rows):
                q = min(rows, oh_ - oh0) * ow_
                for i in range(kernel[0]):
                    gemm(True, False, kc, q, f_, 1.0, wt[i * f_ * kc:], kc, df[n * f_ * p + oh0 * ow_:],
                         p, 1.0, dcol[(oh0 + i * dilation[0]) * ow_:], big_l)
            _row_col_add(dcol, pad, dilation, kernel[1], ow_, n, accumulate, dx)
        if need_db:
            _bias_grad_add(dout, n, dbp)


@jit
def _backward_wide(dout, x, w, kernel, stride, pad, dilation, groups, dx, accumulate, need_dx,
                   need_dw, need_db, mode, identity, rows, layout, wt, buf, n0, n1):
    xp, o_wide, o_col, o_dw, o_db = layout
    dwp, dbp = buf[o_dw:o_db], buf[o_db:o_db + dout.shape[1]]
    _zero(dwp)
    _zero(dbp)
    half = (o_col - o_wide) // 2
    for n in range(n0, n1):
        _wide_backward(dout, x, n, w, wt, kernel, stride, pad, dilation, groups, dx, accumulate,
                       need_dx, need_dw, mode == GATHER, rows, n == n0, buf[:xp],
                       buf[xp:o_wide], buf[o_wide:o_wide + half], buf[o_wide + half:o_col],
                       buf[o_col:o_dw], dwp)
        if need_db:
            _bias_grad_add(dout, n, dbp)


@jit
def _rowtap_backward_whole(dout, x, w, kernel, stride, pad, dilation, groups, dx, accumulate,
                           need_dx, need_dw, need_db, mode, identity, rows, layout, wt, buf, n,
                           ws, shared, per, strides, dw, db):
    """The row-of-taps backward of the whole batch as one piece, in one call: the weights'
    rows, ``_backward_rowtap``, the partials' sum (a training share's layer returns to Python
    once, not three times)."""
    _row_major_taps(w, wt)
    _backward_rowtap(dout, x, w, kernel, stride, pad, dilation, groups, dx, accumulate, need_dx,
                     need_dw, need_db, mode, identity, rows, layout, wt, buf, 0, n)
    if need_dw or need_db:
        _sum_partials(ws, shared, per, 1, layout, strides, dw, db, need_dw, need_db)


_FORWARD = {IM2COL: _forward_im2col, ROWTAP: _forward_rowtap, GATHER: _forward_wide,
            KN2ROW: _forward_wide}
_BACKWARD = {IM2COL: _backward_im2col, ROWTAP: _backward_rowtap, GATHER: _backward_wide,
             KN2ROW: _backward_wide}


@jit
def _sum_partials(ws, shared, per_thread, threads, layout, strides, dw, db, need_dw, need_db):
    """dw, db = the sums of the pieces' partials, in piece order (deterministic).  dw[f, c, i, j]
    is at offset f*sf + c*sc + i*si + j*sj of a partial (``_PARTIAL_STRIDES``), whose F*Cg*KH*KW
    elements lie together: the pieces are added into the first one along memory (vectorised),
    then copied to dw in the partial's order where F is innermost there (GATHER, ROWTAP,
    KN2ROW), in dw's order else (IM2COL); one loop for every layout (a branch per layout inside
    the loops cost 0.6 s of compile time).  Reading each partial along dw's order (a stride of F
    elements) took 23 us for 3x3 16->16 in 2 pieces, 254 us for 32->64 in 4 (ResNet-8: serial,
    5 calls a step)."""
    o_dw, o_db = layout[3], layout[4]
    f_, cg, kh, kw = dw.shape
    sf, sc, si, sj = strides
    if need_db:
        f_ = db.shape[0]                         # dw may be the empty stand-in (not computed)
    if need_dw:
        at = shared + o_dw
        size = f_ * cg * kh * kw
        acc = ws[at:at + size]
        for t in range(1, threads):              # piece 0 += piece t, in order (streaming)
            part = ws[at + t * per_thread:at + t * per_thread + size]
            for e in range(size):
                acc[e] += part[e]
        if sf < sj:
            for c in range(cg):
                for i in range(kh):
                    for j in range(kw):
                        e = c * sc + i * si + j * sj
                        for f in range(f_):
                            dw[f, c, i, j] = acc[e + f * sf]
        else:
            for f in range(f_):
                for c in range(cg):
                    for i in range(kh):
                        for j in range(kw):
                            dw[f, c, i, j] = acc[f * sf + c * sc + i * si + j * sj]
    if need_db:
        for f in range(f_):
            s = ws[shared + o_db + f]
            for t in range(1, threads):
                s += ws[shared + t * per_thread + o_db + f]
            db[f] = s


def _partial_strides(mode, w_shape):
    """(sf, sc, si, sj): where dw[f, c, i, j] lies in a thread's partial dw (see _Plan)."""
    f_, cg, kh, kw = w_shape
    if mode == IM2COL:                   # (F, Cg, KH, KW) like w
        return cg * kh * kw, kh * kw, kw, 1
    if mode == GATHER:                   # (Cg, KH, KW, F)
        return 1, kh * kw * f_, kw * f_, f_
    if mode == ROWTAP:                   # (KH, Cg, KW, F)
        return 1, kw * f_, cg * kw * f_, f_
    return 1, f_, kw * cg * f_, cg * f_  # KN2ROW: (KH, KW, Cg, F)


# -- entry points -----------------------------------------------------------------------------

# Below _PARALLEL_MACS multiply-adds (a backward's: dx's and dw's together) one thread runs the
# call: LeNet-5's convolutions, alone, 2 threads / 1 thread from 2M to 4M: forward 0.89-1.04x
# (1->6 5x5 32x32, batch 24-32), 0.96-0.98x (6->16 5x5 14x14, batch 16); in a training step
# (the worker woken from sleep) a split conv2 backward at batch 8 (3.8M) made the step 0.94x of
# one thread's.  _FORWARD_PIECES: pieces per thread of the forward's and dx's dynamic split; two
# against four (alone, 2 threads, one process alternating): 1.03-1.13x on 0.2-1 ms calls (LeNet
# forward at batch 32-64, 16->16 3x3 32x32 at batch 8-16), equal on larger calls and in the
# ResNet-8, MobileNetV2-S and U-Net-S training steps (each piece: ~5-10 us of Python and GIL
# hand-offs).
_PARALLEL_MACS = 1 << 22
_FORWARD_PIECES = 2


def _empty(dtype):
    """(empty 1-D, empty 4-D): stand-ins for None."""
    return none_array(dtype, 1), none_array(dtype, 4)


def _threads(n, macs):
    return 1 if macs < _PARALLEL_MACS else min(num_threads(), n)


def _backward_pieces(n, threads):
    """The backward's pieces of the batch: 2 per thread, taken by whichever thread is free, each
    with its own slice of the workspace (scratch and partial dw, db), summed in piece order: on a
    busy machine a descheduled thread holds up a quarter of the batch, not half, and the sums do
    not depend on which thread ran which piece."""
    return piece_count(n, threads, 2)


@functools.lru_cache(maxsize=512)
def _cached_plan(x_shape, w_shape, stride, pad, dilation, groups, rules=None):
    """A layer's _Plan, made once (a plan is ~10 us of Python: a LeNet-5 step at batch 1 made 4).
    ``rules`` (the module's switches, _rules()) is only part of the key: a plan made under other
    switches (the tests run every case with and without the direct kernels) is another plan."""
    return _Plan(x_shape, w_shape, stride, pad, dilation, groups)


def _rules():
    """The switches and limits _Plan reads: the cache key's part that is not the layer's."""
    direct = sys.modules.get("cnnspec.kernels.conv_direct")
    return (_DIRECT, _DIRECT_DW, _DIRECT_ALL, _DIRECT_MACS, _WIDE_VECTORS, _NARROW_DX_CHANNELS,
            _NARROW_DW_WEIGHTS, _NARROW_DW_PLANE, _ROWTAP_MAX_COL,
            _SLANES, _SLANES_WASTE, _SLANES_MAX_PLANE,
            _ROWTAP_ELEMENTS, _DW_LANES, _DW_LANES_ELEMENTS,
            # (getattr: another thread may be importing it, the attribute not yet made; the
            # plan made then imports it in full)
            getattr(direct, "DW_GROUP_ELEMENTS", None))


def _layer_plan(x_shape, w_shape, stride, pad, dilation, groups):
    """The layer's cached _Plan under the module's current switches (conv2d_workspace_size's
    too: making it anew took ~65 us of the layer API's call)."""
    return _cached_plan(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(pad),
                        tuple(dilation), groups,
                        _rules() + (_LANES, _LANES_WASTE, _LANES_TAPS, _LANES_PLANE,
                                    _NARROW_LANES_WASTE, _LANES_DW, _WINO, _WINO_PLANE,
                                    _WINO_CHANNELS, _WINO_WEIGHTS, _NARROW_WINO_PLANES,
                                    _NARROW_WINO_WEIGHTS, _WINO_HWC, _NARROW_HWC_PLANES,
                                    _HWC_WIDTH, _HWC_CHANNELS, _C5, _C5_ELEMENTS,
                                    _C5_CHANNELS))


def _plan_for(x, w, stride, pad, dilation, groups, workspace, threads):
    plan = _layer_plan(x.shape, w.shape, stride, pad, dilation, groups)
    if workspace.size < plan.workspace_size(threads):
        raise ValueError(f"conv2d workspace too small: {workspace.size} elements, "
                         f"need {plan.workspace_size(threads)} (conv2d_workspace_size)")
    return plan


def _blocked_route(plan, x, threads, part):
    """The first of the blocked kernels that ``plan`` has for ``part`` ("" the forward, "_dx",
    "_dw"): "wino", "c5" (float32, a chunk of 16 samples for each thread), "lanes", "slanes";
    None if none."""
    if getattr(plan, "wino" + part) is not None:
        return "wino"
    if (getattr(plan, "c5" + part) is not None and x.dtype == np.float32
            and -(-x.shape[0] // 16) >= threads):
        return "c5"
    if getattr(plan, "lanes" + part) is not None:
        return "lanes"
    if getattr(plan, "slanes" + part, False):
        return "slanes"
    return None


def _forward_route(plan, x, stride, threads):
    """Which of its kernels the forward runs for ``plan``: a blocked one, "direct" (by
    pieces), "direct one" (one call on one thread: a training share's layer), or None (the
    plan's mode, by pieces)."""
    route = _blocked_route(plan, x, threads, "")
    if route is None and plan.direct is not None:
        return "direct one" if tuple(stride) == (1, 1) and threads <= 1 else "direct"
    return route


def _forward_setup(x, w, b, stride, pad, dilation, groups, out, workspace):
    """(route, plan, threads, b) of a forward that is not depthwise (b None: an empty bias)."""
    f_, cg, kh, kw = w.shape
    threads = _threads(x.shape[0], out.size * cg * kh * kw)
    plan = _plan_for(x, w, stride, pad, dilation, groups, workspace, threads)
    return (_forward_route(plan, x, stride, threads), plan, threads,
            _empty(x.dtype)[0] if b is None else b)


def _direct_one_call(x, w, b, pad, dilation, out, workspace, plan):
    """(kernel, arguments) of the direct forward in one call: pack the weights, then every
    sample (``conv_direct.pack_and_forward``)."""
    from cnnspec.kernels import conv_direct as D
    f_, cg, kh, kw = w.shape
    shared = plan.shared
    xp, end = plan.direct
    offs = D.window_offsets(x.shape, (kh, kw), (1, 1), pad, dilation, cg * kh * kw)
    wt = _packed(workspace[:shared], D.packed_shape(w.shape, plan.narrow))
    return D.pack_and_forward, (w, x, b, (kh, kw), pad, dilation, out, False, wt, offs,
                                workspace[shared:shared + xp], workspace[shared + xp:shared + end],
                                0, x.shape[0])


def _lanes_args(x, w, b, stride, pad, dilation, out, accumulate, workspace, plan, flipped):
    """(packed weights, args_for(t, lo, hi)) of ``conv_direct.forward_lanes`` on ``plan``'s
    slices of the workspace: the forward of x by w (``flipped`` False), or dx (``flipped``: x is
    dout, out is dx, w flipped; stride 1 and ``plan.lanes_dx``'s padding, ``stride`` and
    ``pad`` not read)."""
    from cnnspec.kernels import conv_direct as D
    f_, cg, kh, kw = w.shape
    u, base = _line_base(workspace, plan.shared)
    per, accumulate = plan.per_thread, bool(accumulate)
    wl = _packed(u, D.lanes_shape(w.shape, plan.narrow, flipped))
    if flipped:
        xp, end, pad, pos = plan.lanes_dx
        offs = D.window_offsets(x.shape, (kh, kw), (1, 1), pad, dilation, f_ * kh * kw)
        stride, phases = (1, 1), None
    else:
        xp, end, pos = plan.lanes
        offs = D.window_offsets(x.shape, (kh, kw), stride, pad, dilation, cg * kh * kw)
        stride, pad, phases = tuple(stride), tuple(pad), D.phases_of(stride)
    return wl, lambda t, lo, hi: (
        x, b, stride, phases, pad, out, accumulate, wl, offs, pos,
        workspace[base + t * per:base + t * per + xp],
        workspace[base + t * per + xp:base + t * per + end], lo, hi)


def _dx_direct_args(dout, w, dilation, dx, accumulate, workspace, plan):
    """(packed weights, args_for(t, lo, hi)) of dx by ``conv_direct.forward_direct``: dout by
    the flipped w (``pack_weights_flipped``) on ``plan``'s slices of the workspace."""
    from cnnspec.kernels import conv_direct as D
    f_, cg, kh, kw = w.shape
    shared, per, accumulate = plan.shared, plan.per_thread, bool(accumulate)
    wpk = _packed(workspace[:shared], D.packed_shape(w.shape, plan.narrow, True))
    xp, end, pad_dx = plan.direct_dx
    offs = D.window_offsets(dout.shape, (kh, kw), (1, 1), pad_dx, dilation, f_ * kh * kw)
    empty1 = _empty(dout.dtype)[0]
    return wpk, lambda t, lo, hi: (
        dout, empty1, (kh, kw), pad_dx, dilation, dx, accumulate, wpk, offs,
        workspace[shared + t * per:shared + t * per + xp],
        workspace[shared + t * per + xp:shared + t * per + end], lo, hi)


def _dw_sums(workspace, start, per, o_dw, o_db, w_shape, dw, db):
    """``sums(pieces)``: the arguments of ``_sum_partials`` for dw and db (each may be None)
    from that many pieces' partials laid out as ``conv_direct``'s dw kernels write them."""
    empty1, empty4 = _empty(workspace.dtype)
    strides = _partial_strides(GATHER, w_shape)
    return lambda pieces: (workspace, start, per, pieces, (0, 0, 0, o_dw, o_db), strides,
                           empty4 if dw is None else dw, empty1 if db is None else db,
                           dw is not None, db is not None)


def _dw_lanes_args(dout, x, w, stride, pad, dilation, dw, db, workspace, plan):
    """(args_for(t, lo, hi) of ``conv_direct.weight_grad_lanes``, ``_dw_sums``' sums)."""
    from cnnspec.kernels import conv_direct as D
    f_, cg, kh, kw = w.shape
    per = plan.per_thread
    size, o_dw, o_db = plan.lanes_dw
    _, base = _line_base(workspace, plan.shared)
    offs = D.window_offsets(x.shape, (kh, kw), stride, pad, dilation, -(-(cg * kh * kw) // 6) * 6)
    stride_, pad_, phases = tuple(stride), tuple(pad), D.phases_of(stride)
    return (lambda t, lo, hi: (dout, x, stride_, phases, pad_, dw is not None, db is not None,
                               offs, workspace[base + t * per:base + t * per + size], o_dw,
                               o_db, lo, hi),
            _dw_sums(workspace, base, per, o_dw, o_db, w.shape, dw, db))


def _dw_direct_args(dout, x, w, stride, pad, dilation, dw, db, workspace, plan):
    """(args_for(t, lo, hi) of ``conv_direct.weight_grad_direct``, ``_dw_sums``' sums)."""
    from cnnspec.kernels import conv_direct as D
    f_, cg, kh, kw = w.shape
    shared, per = plan.shared, plan.per_thread
    group, xp, wide, total = plan.direct_dw
    offs = D.window_offsets(x.shape, (kh, kw), stride, pad, dilation, -(-(cg * kh * kw) // 6) * 6)
    if plan.narrow:                          # AVX2's blocks (weight_grad_direct)
        offs = offs.reshape(-1, 6)
    phases = D.phases_of(stride)
    o_dw = D.weight_grad_dw_offset(group, xp, wide)
    return (lambda t, lo, hi: (dout, x, (kh, kw), stride, phases, pad, dilation, dw is not None,
                               db is not None, group, xp, wide, offs,
                               workspace[shared + t * per:shared + t * per + total], lo, hi),
            _dw_sums(workspace, shared, per, o_dw, o_dw + f_ * cg * kh * kw, w.shape, dw, db))


def conv2d_forward_step(x, w, b, stride, pad, dilation, groups, out, workspace):
    """``conv2d_forward_into`` with these arguments as a step, a function of no arguments, for a
    thread of its own (a training share's layer, run ``_jit.alone``): where the plan chosen now
    is one compiled call, that call with its arguments bound once, so that the layer's Python
    (the plan's lookup and checks, 10-20 us a call) is not run again: two shares take the GIL in
    turn between their kernels (LeNet-5 at batch 64 on two threads, its four convolutions bound:
    1.05-1.07x); else the call itself."""
    if not _is_depthwise(x.shape, w.shape, groups):
        route, plan, threads, b_ = _forward_setup(x, w, b, stride, pad, dilation, groups, out,
                                                  workspace)
        if route == "direct one":
            kernel, args = _direct_one_call(x, w, b_, pad, dilation, out, workspace, plan)
            return functools.partial(kernel, *args)
        if route == "lanes" and threads <= 1:
            from cnnspec.kernels import conv_direct as D
            wl, args_for = _lanes_args(x, w, b_, stride, pad, dilation, out, False, workspace,
                                       plan, False)
            return in_turn(functools.partial(D.pack_weights_lanes, w, False, wl),
                           one_call(D.forward_lanes, x.shape[0], args_for))
        if route is None and threads <= 1:
            layout, kernel, args_for = _mode_forward(x, w, b_, stride, pad, dilation, groups, out,
                                                     workspace, plan)
            return in_turn(*[layout] * (layout is not None), one_call(kernel, x.shape[0], args_for))
    return lambda: conv2d_forward_into(x, w, b, stride, pad, dilation, groups, out, workspace)


def conv2d_forward_into(x, w, b, stride, pad, dilation, groups, out, workspace):
    """out (N, F, OH, OW) = conv2d(x, w) + b.  See the package docstring for conventions."""
    if _is_depthwise(x.shape, w.shape, groups):
        from cnnspec.kernels import depthwise
        depthwise.forward_into(x, w, b, stride, pad, dilation, out, workspace,
                               _empty(x.dtype)[0])
        return
    f_, cg, kh, kw = w.shape
    route, plan, threads, b = _forward_setup(x, w, b, stride, pad, dilation, groups, out, workspace)
    if route == "direct one":
        kernel, args = _direct_one_call(x, w, b, pad, dilation, out, workspace, plan)
        kernel(*args)
        return
    shared, per = plan.shared, plan.per_thread
    wt = workspace[:shared]
    if route == "wino":
        from cnnspec.kernels import conv_big
        u, base = _line_base(workspace, shared)
        u = _packed(u, conv_big.weights_shape(cg, f_, plan.narrow))
        conv_big.wino_weights(w, False, u)
        run_split(conv_big.forward_wino, x.shape[0], threads, lambda t, lo, hi: (
            x, b, tuple(pad), out, False, u,
            workspace[base + t * per:base + t * per + plan.wino], plan.wino_hwc[0], lo, hi),
            dynamic=True, per_thread=_FORWARD_PIECES)
        return
    if route == "c5":
        from cnnspec.kernels import conv_five
        conv_five.run(x, w, False, b, pad, out, False, workspace, plan.shared, per, plan.c5,
                      threads, plan.narrow)
        return
    if route == "lanes":
        from cnnspec.kernels import conv_direct as D
        wl, args_for = _lanes_args(x, w, b, stride, pad, dilation, out, False, workspace, plan,
                                   False)
        D.pack_weights_lanes(w, False, wl)
        run_split(D.forward_lanes, x.shape[0], threads, args_for, dynamic=True,
                  per_thread=_FORWARD_PIECES)
        return
    if route == "slanes":
        from cnnspec.kernels import conv_lanes as L
        from cnnspec.kernels._simd import lanes_of
        geo = L.conv_geometry(x.shape, w.shape, tuple(stride), tuple(pad), tuple(dilation),
                              out.shape[2], out.shape[3], lanes_of(x.dtype))
        L.run(geo, x, w, b if b.size else None, False, out, workspace, threads)
        return
    if route == "direct":
        from cnnspec.kernels import conv_direct as D
        wt = _packed(wt, D.packed_shape(w.shape, plan.narrow))
        xp, end = plan.direct
        offs = D.window_offsets(x.shape, (kh, kw), stride, pad, dilation, cg * kh * kw)
        D.pack_weights(w, wt)
        if stride == (1, 1):
            run_split(D.forward_direct, x.shape[0], threads, lambda t, lo, hi: (
                x, b, (kh, kw), pad, dilation, out, False, wt, offs,
                workspace[shared + t * per:shared + t * per + xp],
                workspace[shared + t * per + xp:shared + t * per + end], lo, hi),
                dynamic=True, per_thread=_FORWARD_PIECES)
        else:
            run_split(D.forward_direct_strided, x.shape[0], threads, lambda t, lo, hi: (
                x, b, (kh, kw), stride, pad, dilation, out, wt, offs,
                workspace[shared + t * per:shared + t * per + xp],
                workspace[shared + t * per + xp:shared + t * per + end], lo, hi),
                dynamic=True, per_thread=_FORWARD_PIECES)
        return
    layout, kernel, args_for = _mode_forward(x, w, b, stride, pad, dilation, groups, out,
                                             workspace, plan)
    if layout is not None:
        layout()
    run_split(kernel, x.shape[0], threads, args_for, dynamic=True, per_thread=_FORWARD_PIECES)


def _weights_layout(w, wt, mode):
    """The call that lays the weights out in ``wt`` for a plan's own kernels of ``mode``
    (KN2ROW: tap-major, ROWTAP: row-major taps), bound; None for a mode that reads w."""
    if mode == KN2ROW:
        return functools.partial(_tap_major, w, wt)
    if mode == ROWTAP:
        return functools.partial(_row_major_taps, w, wt)
    return None


def _mode_forward(x, w, b, stride, pad, dilation, groups, out, workspace, plan):
    """(the weights' layout call or None, kernel, args_for(t, lo, hi)) of the plan's own
    forward (its mode: im2col, kn2row, row of taps)."""
    f_, cg, kh, kw = w.shape
    shared, per = plan.shared, plan.per_thread
    wt = workspace[:shared]
    return (_weights_layout(w, wt, plan.mode), _FORWARD[plan.mode], lambda t, lo, hi: (
        x, w, b, (kh, kw), stride, pad, dilation, groups, out, plan.mode, plan.identity,
        plan.rows, plan.layout, wt, workspace[shared + t * per:shared + (t + 1) * per], lo, hi))


def _packed(wt, shape):
    """The view of the workspace's shared part that conv_direct's packed weights fill (its
    shape chooses AVX-512's or AVX2's blocks: conv_direct.packed_shape, lanes_shape)."""
    return wt[:math.prod(shape)].reshape(shape)       # (np.prod: 8 us a call)


def _dx_route(plan, dout, x, w, stride, pad, dilation, groups, threads):
    """Which of its own kernels computes dx for ``plan``: a blocked one, "transposed",
    "direct", or None: the plan's mode, with dw."""
    route = _blocked_route(plan, x, threads, "_dx")
    if route is None and _transposed_dx(x.shape, dout.shape, w.shape, tuple(stride), tuple(pad),
                                        tuple(dilation), groups, x.dtype) is not None:
        return "transposed"
    return "direct" if route is None and plan.direct_dx is not None else route


def _dw_route(plan, x, threads):
    """Which of its own kernels computes dw and db for ``plan``: a blocked one ("wino", "c5",
    "lanes"), "rows" (before "lanes"), "direct", or None: the plan's mode, with dx."""
    route = _blocked_route(plan, x, threads, "_dw")
    if route in ("wino", "c5"):
        return route
    if plan.direct_dwr is not None:
        return "rows"
    return route if route is not None else "direct" if plan.direct_dw is not None else None


def _backward_setup(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace):
    """(plan, threads, pieces, dx route, dw route) of a backward that is not depthwise (a
    route None for what is not asked for)."""
    f_, cg, kh, kw = w.shape
    threads = _threads(x.shape[0], 2 * dout.size * cg * kh * kw)
    pieces = _backward_pieces(x.shape[0], threads)
    plan = _plan_for(x, w, stride, pad, dilation, groups, workspace, pieces)
    dx_route = None if dx is None else _dx_route(plan, dout, x, w, stride, pad, dilation, groups,
                                                 threads)
    dw_route = None if dw is None and db is None else _dw_route(plan, x, threads)
    return plan, threads, pieces, dx_route, dw_route


def _rowtap_whole(plan, pieces):
    """Whether the plan's own backward (what no other kernel took) is the row-of-taps one in
    one call: a training share's layer, on one thread."""
    return plan.mode == ROWTAP and pieces == 1


def _rowtap_one_call(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace, accumulate,
                     plan):
    """(kernel, arguments) of the row-of-taps backward in one call (dx, dw and db on one
    thread: ``_rowtap_backward_whole``)."""
    f_, cg, kh, kw = w.shape
    empty1, empty4 = _empty(x.dtype)
    shared, per = plan.shared, plan.per_thread
    return _rowtap_backward_whole, (
        dout, x, w, (kh, kw), stride, pad, dilation, groups, empty4 if dx is None else dx,
        bool(accumulate), dx is not None, dw is not None, db is not None, plan.mode,
        plan.identity, plan.rows, plan.layout, workspace[:shared], workspace[shared:shared + per],
        x.shape[0], workspace, shared, per, _partial_strides(plan.mode, w.shape),
        empty4 if dw is None else dw, empty1 if db is None else db)


def conv2d_backward_step(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace,
                         accumulate=False):
    """``conv2d_backward_into`` with these arguments as a step (as ``conv2d_forward_step``):
    where the plan chosen now is one compiled call (the row-of-taps backward on one thread),
    that call with its arguments bound once; else the call itself."""
    if not _is_depthwise(x.shape, w.shape, groups):
        plan, threads, pieces, dx_route, dw_route = _backward_setup(
            dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace)
        if threads <= 1 and pieces == 1:
            steps = _backward_steps(dout, x, w, stride, pad, dilation, groups, dx, dw, db,
                                    workspace, accumulate, plan, dx_route, dw_route)
            if steps is not None:
                return in_turn(*steps)
    return lambda: conv2d_backward_into(dout, x, w, stride, pad, dilation, groups, dx, dw, db,
                                        workspace, accumulate)


def _backward_steps(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace, accumulate,
                    plan, dx_route, dw_route):
    """The calls of ``conv2d_backward_into`` on one thread, in its order, each bound with its
    arguments (``functools.partial``): dx by the lanes or the direct loops, dw and db by the
    lanes or the direct loops and their sum, the rest by the plan's own kernels (the row of taps
    in one call); None where a part takes another route (a blocked one, the transposed dx)."""
    from cnnspec.kernels import conv_direct as D
    n, steps = x.shape[0], []
    if dx_route == "lanes":
        wl, args_for = _lanes_args(dout, w, _empty(x.dtype)[0], None, None, dilation, dx,
                                   accumulate, workspace, plan, True)
        steps += [functools.partial(D.pack_weights_lanes, w, True, wl),
                  one_call(D.forward_lanes, n, args_for)]
        dx = None
    elif dx_route == "direct":
        wpk, args_for = _dx_direct_args(dout, w, dilation, dx, accumulate, workspace, plan)
        steps += [functools.partial(D.pack_weights_flipped, w, wpk),
                  one_call(D.forward_direct, n, args_for)]
        dx = None
    elif dx_route is not None:
        return None
    if dw_route in ("lanes", "direct"):
        kernel, made = ((D.weight_grad_lanes, _dw_lanes_args) if dw_route == "lanes"
                        else (D.weight_grad_direct, _dw_direct_args))
        args_for, sums = made(dout, x, w, stride, pad, dilation, dw, db, workspace, plan)
        steps += [one_call(kernel, n, args_for), functools.partial(_sum_partials, *sums(1))]
        dw = db = None
    elif dw_route is not None:
        return None
    if dx is None and dw is None and db is None:
        return steps
    if _rowtap_whole(plan, 1):
        kernel, args = _rowtap_one_call(dout, x, w, stride, pad, dilation, groups, dx, dw, db,
                                        workspace, accumulate, plan)
        return steps + [functools.partial(kernel, *args)]
    layout, kernel, args_for, sums = _mode_backward(dout, x, w, stride, pad, dilation, groups,
                                                    dx, dw, db, workspace, accumulate, plan)
    return (steps + [layout] * (layout is not None) + [one_call(kernel, n, args_for)]
            + [functools.partial(_sum_partials, *sums(1))] * (sums is not None))


def conv2d_backward_into(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace,
                         accumulate=False):
    """dx (+)= dL/dx, dw = dL/dw, db = dL/db (each may be None: not computed)."""
    if _is_depthwise(x.shape, w.shape, groups):
        from cnnspec.kernels import depthwise
        depthwise.backward_into(dout, x, w, stride, pad, dilation, dx, dw, db, workspace,
                                accumulate, *_empty(x.dtype))
        return
    f_, cg, kh, kw = w.shape
    plan, threads, pieces, dx_route, dw_route = _backward_setup(
        dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace)
    empty1, empty4 = _empty(x.dtype)
    shared, per = plan.shared, plan.per_thread
    if dx_route == "wino":
        from cnnspec.kernels import conv_big
        u, base = _line_base(workspace, shared)
        u = _packed(u, conv_big.weights_shape(f_, cg, plan.narrow))
        conv_big.wino_weights(w, True, u)
        size, pad_dx = plan.wino_dx
        run_split(conv_big.forward_wino, x.shape[0], threads, lambda t, lo, hi: (
            dout, empty1, pad_dx, dx, bool(accumulate), u,
            workspace[base + t * per:base + t * per + size], plan.wino_hwc[1], lo, hi),
            dynamic=True, per_thread=_FORWARD_PIECES)
        if dw is None and db is None:
            return
        dx = None
    if dx_route == "c5":
        from cnnspec.kernels import conv_five
        size, pad_dx = plan.c5_dx
        conv_five.run(dout, w, True, empty1, pad_dx, dx, bool(accumulate), workspace, shared,
                      per, size, threads, plan.narrow)
        if dw is None and db is None:
            return
        dx = None
    if dx_route == "lanes":
        from cnnspec.kernels import conv_direct as D
        wl, args_for = _lanes_args(dout, w, empty1, None, None, dilation, dx, accumulate,
                                   workspace, plan, True)
        D.pack_weights_lanes(w, True, wl)
        run_split(D.forward_lanes, x.shape[0], threads, args_for, dynamic=True,
                  per_thread=_FORWARD_PIECES)
        if dw is None and db is None:
            return
        dx = None
    if dx_route == "slanes":
        # dx = the transposed convolution of dout by w: conv_lanes.py's phases
        from cnnspec.kernels import conv_lanes as L
        from cnnspec.kernels._simd import lanes_of
        geo = L.transposed_geometry(dout.shape, w.shape, tuple(stride), tuple(pad),
                                    tuple(dilation), x.shape[2], x.shape[3], lanes_of(x.dtype))
        L.run(geo, dout, w, None, accumulate, dx, workspace, threads)
        if dw is None and db is None:
            return
        dx = None
    if dx_route == "transposed":
        # dx = the transposed convolution of dout by w: conv_transpose.py's products with the
        # samples in the lanes
        from cnnspec.kernels.conv_transpose import forward_products
        forward_products(dout, w, None, tuple(stride), tuple(pad), tuple(dilation), 1, dx,
                         workspace, accumulate)
        if dw is None and db is None:
            return
        dx = None
    if dx_route == "direct":
        from cnnspec.kernels import conv_direct as D
        wpk, args_for = _dx_direct_args(dout, w, dilation, dx, accumulate, workspace, plan)
        D.pack_weights_flipped(w, wpk)
        run_split(D.forward_direct, x.shape[0], threads, args_for, dynamic=True,
                  per_thread=_FORWARD_PIECES)
        if dw is None and db is None:
            return
        dx = None
    if dw_route == "wino":
        from cnnspec.kernels import conv_big
        size, o_du, o_db, fp = plan.wino_dw
        _, base = _line_base(workspace, shared)

        def piece(t, lo, hi):
            buf = workspace[base + t * per:base + t * per + size]
            return (dout, x, tuple(pad), dw is not None, db is not None, buf,
                    conv_big.partial_du(buf, o_du, cg, fp, plan.narrow), plan.wino_hwc[0], lo,
                    hi)
        run_split(conv_big.weight_grad_wino, x.shape[0], threads, piece, pieces=pieces)
        conv_big.wino_dw_finish(workspace, base, per, pieces, o_du, o_db, fp,
                                empty4 if dw is None else dw, empty1 if db is None else db,
                                dw is not None, db is not None)
        if dx is None:
            return
        dw = db = None
    if dw_route == "c5":
        from cnnspec.kernels import conv_five
        conv_five.weight_grad(dout, x, pad, dw, db, workspace, shared, per, threads, pieces,
                              plan.narrow)
        if dx is None:
            return
        dw = db = None
    if dw_route == "rows":
        from cnnspec.kernels import conv_lanes
        conv_lanes.weight_grad(plan.direct_dwr, dout, x, w.shape, dilation, dw, db,
                               workspace[shared:], threads)
        if dx is None:
            return
        dw = db = None
    if dw_route == "lanes":
        from cnnspec.kernels import conv_direct as D
        args_for, sums = _dw_lanes_args(dout, x, w, stride, pad, dilation, dw, db, workspace, plan)
        run_split(D.weight_grad_lanes, x.shape[0], threads, args_for)
        _sum_partials(*sums(threads))
        if dx is None:
            return
        dw = db = None
    if dw_route == "direct":
        from cnnspec.kernels import conv_direct as D
        args_for, sums = _dw_direct_args(dout, x, w, stride, pad, dilation, dw, db, workspace,
                                         plan)
        run_split(D.weight_grad_direct, x.shape[0], threads, args_for)
        _sum_partials(*sums(threads))
        if dx is None:
            return
        dw = db = None
    if _rowtap_whole(plan, pieces):
        kernel, args = _rowtap_one_call(dout, x, w, stride, pad, dilation, groups, dx, dw, db,
                                        workspace, accumulate, plan)
        kernel(*args)
        return
    layout, kernel, args_for, sums = _mode_backward(dout, x, w, stride, pad, dilation, groups,
                                                    dx, dw, db, workspace, accumulate, plan)
    if layout is not None:
        layout()
    run_split(kernel, x.shape[0], threads, args_for, pieces=pieces)
    if sums is not None:
        _sum_partials(*sums(pieces))


def _mode_backward(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace, accumulate,
                   plan):
    """(the weights' layout call or None, kernel, args_for(t, lo, hi), sums(pieces) or None:
    ``_sum_partials``' arguments where dw or db is asked for) of the plan's own backward."""
    f_, cg, kh, kw = w.shape
    shared, per = plan.shared, plan.per_thread
    empty1, empty4 = _empty(x.dtype)
    wt = workspace[:shared]
    dx_, need = empty4 if dx is None else dx, (dx is not None, dw is not None, db is not None)
    strides = _partial_strides(plan.mode, w.shape)
    sums = None if dw is None and db is None else lambda pieces: (
        workspace, shared, per, pieces, plan.layout, strides, empty4 if dw is None else dw,
        empty1 if db is None else db, dw is not None, db is not None)
    return (_weights_layout(w, wt, plan.mode), _BACKWARD[plan.mode], lambda t, lo, hi: (
        dout, x, w, (kh, kw), stride, pad, dilation, groups, dx_, bool(accumulate), *need,
        plan.mode, plan.identity, plan.rows, plan.layout, wt,
        workspace[shared + t * per:shared + (t + 1) * per], lo, hi), sums)
