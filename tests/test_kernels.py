"""The numba kernels against the plain NumPy reference (cnnspec/kernels/reference.py) and
against central differences of their own forward.

Every kernel is compiled once per dtype: all cases of a family share one numba signature
(C-contiguous arrays, tuples of ints), so the many configurations below cost no extra compiles.
"""
import itertools

import numpy as np
import pytest

from cnnspec import kernels as K
from conftest import numeric_grad
from cnnspec.kernels import reference as R
from cnnspec.kernels import conv, conv_direct
from cnnspec.kernels.conv import GATHER, IM2COL, KN2ROW, ROWTAP, _Plan

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-9, np.float32: 1e-4}


@pytest.fixture
def avx512_rules(monkeypatch):
    """The rules of a machine with AVX-512, whatever this one has: where the direct kernels run
    (``conv._wide_vector_cpu``); the plans are made, not run, so the rules are checked
    everywhere (the kernels themselves run on every machine: ``_DIRECT_ALL``)."""
    monkeypatch.setattr(conv, "_WIDE_VECTORS", True)


def test_without_avx512_the_rules_of_avx2(monkeypatch):
    """On a CPU without AVX-512 the direct forward and dx run AVX2's narrow blocks (4 filters x
    3 half vectors: 12 accumulators in its 16 registers) wherever AVX-512's would run, dx from
    3 input channels; the forward and dx with the filters in the lanes in AVX2's blocks (16
    filters) where the narrow wide grid computes >= 1.1x the outputs (5x5 on 14x14 planes,
    LeNet-5's conv2, 4x4 and 7x7 planes, 8x8 and 16x16 planes with padding 1: 1.125x; a
    strided layer's dx runs elsewhere), not on 32x32 or 56x56 (AVX-512's rules take those) nor
    where Winograd runs the layer; the weight gradient with the filters in the
    lanes for F a multiple of 16, else by the narrow blocks where they won (C*F <= 1024, or
    <= 4096 on planes of >= 2048 outputs) and for at most 4 channels, however few the filters
    (AVX-512's blocks: 8 or more); 3x3 stride-1 layers by Winograd in AVX2's blocks (forward,
    dx and dw; F a multiple of 16, C and F >= 16 on planes of >= 2048 outputs, >= 32 on >= 1024,
    >= 64 on >= 196), their dw by nothing else; also on planes of >= 256 outputs with C and
    F >= 16 and of >= 64 with >= 32 in the channels-innermost layout (C, dx: F, a multiple of
    16, rows of at most 16 outputs or C >= 64: ResNet-8's 16x16 and 8x8 layers, not its 32x32
    one), which also runs the other Winograd layers that it fits; 5x5 layers by the row
    Winograd (conv_five.py) in AVX2's blocks; nothing else (the samples in the lanes),
    whatever AVX-512's rules would take."""
    monkeypatch.setattr(conv, "_WIDE_VECTORS", False)
    # (x, w, stride, pad): (direct dx, direct dw, lanes forward, lanes dx, lanes dw, Winograd:
    # the forward's (and dw's) layout, dx's, dw by it: h the channels innermost, t the tiles',
    # - none)
    for (x, w, s, p), expected in (
            (((8, 64, 56, 56), (64, 64, 3, 3), 1, 1), (1, 0, 0, 0, 0, "hhd")),   # the bench's
            (((64, 16, 14, 14), (32, 16, 5, 5), 1, 2), (0, 0, 1, 1, 1, "---")),
            (((32, 3, 32, 32), (32, 3, 3, 3), 1, 1), (1, 0, 0, 0, 1, "---")),
            (((64, 16, 32, 32), (16, 16, 3, 3), 1, 1), (1, 0, 0, 0, 1, "---")),  # ResNet-8's
            (((64, 32, 16, 16), (32, 32, 3, 3), 1, 1), (1, 0, 0, 0, 0, "hhd")),
            (((16, 16, 64, 64), (16, 16, 3, 3), 1, 1), (1, 0, 0, 0, 0, "ttd")),  # the U-Net's
            (((16, 64, 32, 32), (32, 64, 3, 3), 1, 1), (1, 0, 0, 0, 0, "htd")),
            (((16, 32, 16, 16), (64, 32, 3, 3), 1, 1), (1, 0, 0, 0, 0, "hhd")),
            (((64, 16, 32, 32), (32, 16, 3, 3), 2, 1), (0, 0, 1, 0, 1, "---")),  # dx: BLAS
            (((64, 64, 8, 8), (64, 64, 3, 3), 1, 1), (1, 0, 0, 0, 0, "hhd")),
            (((16, 128, 16, 16), (128, 128, 3, 3), 1, 1), (1, 0, 0, 0, 0, "hhd")),
            (((64, 64, 4, 4), (64, 64, 3, 3), 1, 1), (0, 0, 1, 1, 1, "---")),
            (((64, 32, 7, 7), (32, 32, 3, 3), 1, 1), (0, 0, 1, 1, 1, "---")),
            (((64, 1, 32, 32), (6, 1, 5, 5), 1, 0), (0, 1, 0, 0, 0, "---")),     # LeNet-5's (F = 6)
            (((16, 64, 32, 32), (3, 64, 3, 3), 1, 1), (1, 1, 0, 0, 0, "---")),   # F = 3
            (((64, 6, 14, 14), (16, 6, 5, 5), 1, 0), (1, 0, 1, 0, 1, "---")),    # (C = 6)
            (((64, 3, 32, 32), (24, 3, 3, 3), 1, 1), (1, 1, 0, 0, 0, "---")),  # F = 24: blocked dw
            (((64, 24, 16, 16), (24, 24, 3, 3), 1, 1), (1, 1, 0, 0, 0, "---")),
            (((64, 48, 8, 8), (40, 48, 3, 3), 1, 1), (0, 0, 0, 1, 0, "---")),    # (dw on BLAS)
            (((64, 16, 16, 16), (32, 16, 3, 3), 1, 1), (1, 0, 0, 0, 0, "hhd")),  # C = 16 on 16x16
            (((4, 512, 7, 7), (512, 512, 3, 3), 1, 1), (0, 0, 0, 0, 1, "---")),  # C*F > 65536
            (((64, 16, 8, 8), (16, 16, 3, 3), 1, 1), (0, 0, 1, 1, 1, "---")),     # 16 on 8x8
            (((64, 32, 8, 8), (32, 32, 3, 3), 1, 1), (1, 0, 0, 0, 0, "hhd")),
            (((64, 16, 32, 32), (32, 16, 3, 3), 1, 1), (1, 0, 0, 0, 1, "---")),   # rows of 32
            (((32, 64, 28, 28), (64, 64, 3, 3), 1, 1), (1, 0, 0, 0, 0, "hhd"))):
        plan = _Plan(x, w, (s, s), (p,) * 4, (1, 1), 1)
        assert plan.narrow and plan.direct is not None, (x, w)
        def layout(per, hwc):
            return "-" if per is None else "h" if hwc else "t"
        wino = (layout(plan.wino, plan.wino_hwc[0]) + layout(plan.wino_dx, plan.wino_hwc[1])
                + ("-" if plan.wino_dw is None else "d"))
        assert (plan.direct_dx is not None, plan.direct_dw is not None,
                plan.lanes is not None, plan.lanes_dx is not None,
                plan.lanes_dw is not None) == tuple(map(bool, expected[:5])), (x, w)
        assert wino == expected[5], (x, w, wino)
        assert plan.direct_dwr is None
        assert not plan.slanes and not plan.slanes_dx
        # the row Winograd of 5x5 layers (tests/test_conv_five.py has its rules)
        assert (plan.c5 is not None) == (x == (64, 16, 14, 14))
        monkeypatch.setattr(conv, "_WIDE_VECTORS", True)
        assert not _Plan(x, w, (s, s), (p,) * 4, (1, 1), 1).narrow      # AVX-512's
        monkeypatch.setattr(conv, "_WIDE_VECTORS", False)
    # dx by Winograd needs C a multiple of 16 (its filters): 24 -> 32 runs only the forward's
    plan = _Plan((8, 24, 56, 56), (32, 24, 3, 3), (1, 1), (1,) * 4, (1, 1), 1)
    assert plan.wino is not None and plan.wino_dw is not None and plan.wino_dx is None
    # the packed weights' shape is what makes the drivers run the narrow blocks
    assert conv_direct.packed_shape((6, 3, 5, 5), True) == (2, 4 * 75)
    assert conv_direct.packed_shape((6, 3, 5, 5), False) == (8 * 75,)
    assert conv_direct.packed_shape((6, 3, 5, 5), True, flipped=True) == (1, 4 * 150)
    assert conv_direct.lanes_shape((20, 3, 5, 5), True) == (75, 32)
    assert conv_direct.lanes_shape((20, 3, 5, 5), False) == (75 * 64,)
    assert conv_direct.lanes_shape((20, 3, 5, 5), True, flipped=True) == (500, 16)


def rel_error(a, b):
    """CS231n's relative error: max |a - b| / max(1e-8, |a| + |b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def norm_error(a, b):
    """max |a - b| / max(|a| + |b|): float32 sums that cancel to near zero make the
    element-wise ratio meaningless, so float32 results are compared to the array's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(1e-8, np.max(np.abs(a) + np.abs(b))))


def close(a, b, dtype):
    err = rel_error(a, b) if dtype == np.float64 else norm_error(a, b)
    assert err < TOL[dtype], err


rng = np.random.default_rng(1234)


def forward_into_a_slice(x, wt, b, geometry, ws, dtype):
    """conv2d_forward_into with out the middle samples of a bigger array whose first and last
    samples are sentinels: the output, once checked that nothing around it was written."""
    shape = K.conv2d_output_shape(x.shape, wt.shape, *geometry[:3])
    big = np.full((len(x) + 2,) + tuple(shape[1:]), np.nan, dtype)
    big[0] = big[-1] = 7.0
    K.conv2d_forward_into(x, wt, b, *geometry, big[1:-1], ws)
    assert (big[0] == 7).all() and (big[-1] == 7).all()
    return big[1:-1]


def randn(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# -- convolution ---------------------------------------------------------------------------------

# (N, C, H, W, F, KH, KW, stride, pad (t, b, l, r), dilation, groups, bias)
CONV_CASES = [
    (2, 3, 7, 9, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),        # gather, same pad
    (3, 4, 8, 6, 6, 3, 2, (2, 1), (0, 2, 1, 0), (1, 1), 2, True),        # im2col, asym, groups
    (1, 1, 6, 6, 1, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1, False),       # batch 1, one channel
    (1, 32, 10, 11, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),    # kn2row
    (2, 32, 10, 11, 16, 3, 3, (1, 1), (2, 0, 1, 3), (2, 1), 1, True),    # kn2row, dilation
    (2, 64, 9, 9, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2, False),     # kn2row, groups
    (2, 16, 5, 5, 8, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, True),       # 1x1: x is the matrix
    (2, 16, 5, 7, 8, 1, 1, (2, 3), (0, 0, 0, 0), (1, 1), 2, True),       # 1x1 strided
    (2, 3, 5, 5, 4, 1, 1, (1, 1), (1, 0, 0, 2), (1, 1), 1, True),        # 1x1 padded
    (2, 1, 12, 12, 6, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1, True),      # LeNet conv1
    (3, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1, True),     # LeNet conv2
    (2, 5, 1, 17, 7, 1, 3, (1, 2), (0, 0, 1, 1), (1, 2), 1, True),       # 1-D as H = 1
    (2, 20, 1, 17, 20, 1, 3, (1, 1), (0, 0, 2, 1), (1, 2), 4, True),     # 1-D, groups
    (4, 18, 12, 12, 18, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 18, True),   # depthwise
    (2, 3, 13, 11, 5, 7, 5, (3, 2), (3, 2, 1, 4), (1, 2), 1, True),      # big kernel, strided
    (4, 32, 16, 16, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),    # split over threads
    (8, 3, 16, 16, 8, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, True),      # im2col, threads
    (1, 2, 3, 3, 2, 3, 3, (1, 1), (2, 2, 2, 2), (1, 1), 1, True),        # full padding
    (2, 4, 6, 5, 3, 2, 4, (1, 1), (0, 1, 3, 0), (2, 1), 1, True),        # even kernel, dilation
    (1, 32, 60, 60, 16, 3, 3, (1, 1), (2, 0, 1, 3), (2, 1), 1, True),    # kn2row: too big for rowtap
    (2, 32, 9, 9, 16, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, True),      # gather: strided, many channels
    (5, 4, 6, 7, 5, 3, 3, (1, 1), (1, 0, 2, 1), (1, 1), 1, True),        # direct dw: groups 2+2+1
]


def conv_id(case):
    n, c, h, w, f, kh, kw, s, p, d, g, bias = case
    return f"{n}x{c}x{h}x{w}-{f}f{kh}x{kw}-s{s[0]}{s[1]}-p{''.join(map(str, p))}-d{d[0]}{d[1]}-g{g}"


def run_conv(case, dtype):
    n, c, h, w, f, kh, kw, stride, pad, dil, groups, bias = case
    x, wt = randn(n, c, h, w, dtype=dtype), randn(f, c // groups, kh, kw, dtype=dtype)
    b = randn(f, dtype=dtype) if bias else None
    shape = K.conv2d_output_shape(x.shape, wt.shape, stride, pad, dil)
    ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, stride, pad, dil, groups), dtype)
    out = np.full(shape, np.nan, dtype)
    K.conv2d_forward_into(x, wt, b, stride, pad, dil, groups, out, ws)
    return x, wt, b, out, ws


# strided convolutions whose dx is the transposed convolution's products in lanes: ResNet's 3x3
# stride 2, DCGAN's discriminator 4x4 stride 2, an odd size (a last row that no window reads:
# output padding 1), dilation, a kernel narrower than its stride along one axis, 1x1 stride 2
STRIDED_DX_CASES = [
    (2, 8, 8, 8, 12, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 9, 8, 10, 6, 4, 4, (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 8, 9, 7, 5, 3, 3, (2, 2), (0, 0, 0, 0), (1, 1)),
    (1, 8, 11, 11, 4, 3, 2, (2, 3), (2, 1, 0, 1), (2, 1)),
    (1, 8, 6, 7, 4, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)),
]


@pytest.mark.parametrize("dtype, threads", [(np.float64, "1"), (np.float32, "2")])
@pytest.mark.parametrize("case", STRIDED_DX_CASES, ids=str)
def test_strided_dx_by_the_transposed_products(case, dtype, threads, monkeypatch):
    """A strided convolution's dx as the transposed convolution of dout by w (conv_transpose's
    forward products, the samples in the lanes for whole chunks, the last sample by the scalar
    col2im), however small the layer: alone, added to a dx (``accumulate``), with dw and db;
    against the reference, on 1 and 2 threads, into NaN buffers and workspace."""
    from cnnspec.kernels import conv_transpose
    from cnnspec.kernels._simd import lanes_of
    monkeypatch.setenv("CNNSPEC_THREADS", threads)
    monkeypatch.setattr(conv, "_TRANSPOSED_DX", True)
    monkeypatch.setattr(conv_transpose, "_LANE_PRODUCTS", True)
    monkeypatch.setattr(conv, "_SLANES", False)
    k, c, h, w_, f, kh, kw, stride, pad, dil = case
    n = k * lanes_of(dtype) + 1
    own = np.random.default_rng(8)            # not the module's stream: later tests keep their data
    x = own.standard_normal((n, c, h, w_)).astype(dtype)
    wt = own.standard_normal((f, c, kh, kw)).astype(dtype)
    shape = K.conv2d_output_shape(x.shape, wt.shape, stride, pad, dil)
    assert conv._transposed_dx(x.shape, shape, wt.shape, stride, pad, dil, 1, dtype) is not None
    ws = np.full(K.conv2d_workspace_size(x.shape, wt.shape, stride, pad, dil, 1), np.nan, dtype)
    dout = own.standard_normal(shape).astype(dtype)
    rdx, rdw, rdb = R.conv2d_backward(dout, x, wt, np.zeros(f, dtype), stride, pad, dil, 1)
    dx = np.full_like(x, np.nan)
    K.conv2d_backward_into(dout, x, wt, stride, pad, dil, 1, dx, None, None, ws)
    close(dx, rdx, dtype)
    K.conv2d_backward_into(dout, x, wt, stride, pad, dil, 1, dx, None, None, ws, accumulate=True)
    close(dx, 2 * rdx, dtype)
    dx, dw, db = np.full_like(x, np.nan), np.full_like(wt, np.nan), np.full(f, np.nan, dtype)
    K.conv2d_backward_into(dout, x, wt, stride, pad, dil, 1, dx, dw, db, ws)
    close(dx, rdx, dtype)
    close(dw, rdw, dtype)
    close(db, rdb, dtype)


def test_strided_dx_by_the_transposed_products_rule(monkeypatch):
    """Where a strided convolution's dx runs as the transposed convolution's products: taps
    that overlap, 8 input channels or more, a chunk of 16 samples (float32) per thread; not
    stride 1, nor 1x1 stride 2, nor a first layer's 3 channels, nor groups."""
    monkeypatch.setenv("CNNSPEC_THREADS", "2")

    def rule(n, c, hw, f, k, s, p, groups=1):
        x_shape, w_shape = (n, c, hw, hw), (f, c // groups, k, k)
        shape = K.conv2d_output_shape(x_shape, w_shape, (s, s), (p,) * 4, (1, 1))
        return conv._transposed_dx(x_shape, shape, w_shape, (s, s), (p,) * 4, (1, 1), groups,
                                   np.float32)
    assert rule(64, 16, 32, 32, 3, 2, 1) == (1, 1)          # ResNet-8's: 15*2 - 2 + 2 + 1 = 31
    assert rule(64, 64, 32, 128, 4, 2, 1) == (0, 0)         # DCGAN's discriminator
    assert rule(32, 32, 29, 64, 5, 2, 2) == (0, 0)
    assert rule(64, 16, 32, 16, 3, 1, 1) is None            # stride 1
    assert rule(64, 16, 32, 32, 1, 2, 0) is None            # 1x1: no overlap
    assert rule(64, 3, 64, 64, 4, 2, 1) is None             # 3 channels
    assert rule(64, 16, 32, 32, 3, 2, 1, groups=2) is None
    assert rule(16, 16, 32, 32, 3, 2, 1) is None            # one chunk for two threads
    assert rule(8, 16, 32, 32, 3, 2, 1) is None


def test_conv_cases_cover_every_mode():
    modes = {_Plan(c[:4], (c[4], c[1] // c[10], c[5], c[6]), c[7], c[8], c[9], c[10]).mode
             for c in CONV_CASES}
    assert modes == {IM2COL, GATHER, KN2ROW, ROWTAP}


@pytest.fixture(params=["blas", "direct", "narrow", "lanes"])
def forward(request, monkeypatch):
    """Every convolution case four times: the plan's BLAS forward, and conv_direct.py's
    register-blocked forward wherever it applies (groups 1, not IM2COL), however small, with the
    weight gradient by the blocked sums, in AVX-512's blocks (``direct``) and AVX2's
    (``narrow``: both run on any machine); or there conv_lanes.py's forward and dx (the samples
    in the lanes) and its weight gradient with the filters in the lanes (``lanes``:
    weight_grad_rows, dilated widths included)."""
    monkeypatch.setattr(conv, "_DIRECT", request.param != "blas")
    monkeypatch.setattr(conv, "_WIDE_VECTORS", request.param != "narrow")
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_DW_LANES", request.param == "lanes")
    monkeypatch.setattr(conv, "_SLANES", request.param == "lanes")
    monkeypatch.setattr(conv, "_LANES", False)          # forward_lanes: its own tests
    monkeypatch.setattr(conv, "_LANES_DW", False)       # weight_grad_lanes: its own tests
    monkeypatch.setattr(conv, "_WINO", False)           # conv_big's Winograd: its own tests
    if request.param in ("lanes", "narrow"):   # their own data: the shared stream, from which
        monkeypatch.setitem(globals(), "rng",   # the later tests draw, as before
                            np.random.default_rng(16 if request.param == "lanes" else 17))
    # the weight gradient's sample groups: one sample, several, all of the batch
    monkeypatch.setattr(conv_direct, "DW_GROUP_ELEMENTS", 2000)
    monkeypatch.setattr(conv_direct, "DW_FEW_FILTERS_ELEMENTS", 2000)   # (fewer than 8 filters)
    return request.param


@pytest.mark.parametrize("features, narrow", [
    ("+64bit,+avx,+avx2,+fma,+sse4.2,-avx512f,-avx512vl", True),   # AVX2: 16 registers
    ("+64bit,+avx,+avx2,+fma,+avx512f,+avx512vl,+avx512bw", False),
    ("+neon,+fp-armv8", True),
])
def test_the_wide_blocks_only_where_numba_compiles_avx512(features, narrow, monkeypatch):
    from numba.core import config
    monkeypatch.setattr(config, "CPU_FEATURES", features)
    monkeypatch.setattr(conv, "_WIDE_VECTORS", None)
    # ResNet-8's 3x3 32->32 layer at batch 64: 151 M multiply-adds, direct on every machine,
    # AVX-512's 16 accumulators of 512 bits with AVX-512 only (AVX2's rules:
    # test_without_avx512_the_rules_of_avx2)
    plan = _Plan((64, 32, 16, 16), (32, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert plan.direct is not None and plan.narrow is narrow
    monkeypatch.setattr(conv, "_WIDE_VECTORS", None)


def test_the_kernels_use_the_plan_of_the_switches_in_force(forward):
    """conv2d_*_into take their plans from a cache: a plan made with the direct kernels switched
    off must not be reused once they are on (nor the other way), nor one made with the blocked
    weight gradient once the lanes' is on, or one of the fixture's runs would test another's
    kernels."""
    x_shape, w_shape = (2, 8, 9, 9), (8, 8, 3, 3)
    workspace = np.empty(conv.conv2d_workspace_size(x_shape, w_shape, (1, 1), (1, 1, 1, 1)))
    for _ in range(2):
        plan = conv._plan_for(np.empty(x_shape), np.empty(w_shape), (1, 1), (1, 1, 1, 1), (1, 1), 1,
                              workspace, 1)
        assert (plan.direct is not None) is (forward != "blas")
        assert (plan.direct_dwr is not None) is (forward == "lanes")
        assert plan.slanes is plan.slanes_dx is (forward == "lanes")


def test_direct_forward_covers_its_cases(forward):
    plans = [_Plan(c[:4], (c[4], c[1] // c[10], c[5], c[6]), c[7], c[8], c[9], c[10])
             for c in CONV_CASES]
    direct = [p.direct is not None for p in plans]
    direct_dx = [p.direct_dx is not None for p in plans]
    if forward == "blas":
        assert not any(direct) and not any(direct_dx)
    else:                    # strided, dilated, padded unevenly, F not a multiple of 8, batch 1
        assert sum(direct) == 16, direct
        # dx as a convolution of dout: stride 1 and padding at most (K-1)*dilation on each side
        # (full padding included), C not a multiple of 8
        assert sum(direct_dx) == 9, direct_dx
        if forward in ("direct", "narrow"):
            groups = {(p.direct_dw[0], c[0]) for p, c in zip(plans, CONV_CASES) if p.direct_dw}
            assert {(1, 2), (1, 8), (2, 2), (2, 5)} <= groups, groups
            assert not any(p.direct_dwr for p in plans)
        else:                # the filters in the lanes: runs of KW*C taps, dilated widths too
            rows = [(p.direct_dwr.blocks, c[1] * c[6], c[9][1]) for p, c in zip(plans, CONV_CASES)
                    if p.direct_dwr]
            assert len(rows) == 16 and not any(p.direct_dw for p in plans), rows
            assert sum(d > 1 for *_, d in rows) == 2, rows
            assert {run % 12 == 0 for _, run, _ in rows} == {True, False}, rows


@pytest.mark.parametrize("kind", ["direct", "narrow", "lanes"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_kernels_write_only_their_output(dtype, kind, monkeypatch):
    """The direct forward and dx (conv_direct.py's in AVX-512's blocks or AVX2's ``narrow``
    ones, or conv_lanes.py's with ``lanes``: chunks of 16 or 8 samples, the last one partial),
    whose pieces of the batch are taken by whichever thread is free, on planes narrower than a
    vector (3 to 5 columns) and with F, C not multiples of 8 (or 4): every output is written
    (out starts NaN), none twice (accumulate), and nothing around out (its samples are a slice
    of a bigger array whose other samples are sentinels)."""
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_SLANES", kind == "lanes")
    monkeypatch.setattr(conv, "_WIDE_VECTORS", kind != "narrow")
    monkeypatch.setattr(conv, "_PARALLEL_MACS", 0)       # split however small: 2 threads,
    monkeypatch.setenv("CNNSPEC_THREADS", "2")           # 2 or 3 pieces of the batch
    gen = np.random.default_rng(16)       # its own stream: the shared one feeds the cases below

    def randn(*shape, dtype):
        return gen.standard_normal(shape).astype(dtype)

    for n, c, h, w, f, k, pad, stride in ((3, 5, 4, 3, 11, 3, 1, 1), (2, 9, 6, 5, 7, 2, 0, 1),
                                          (2, 3, 9, 7, 13, 3, 1, 2), (19, 9, 5, 4, 10, 3, 1, 1)):
        x, wt, b = randn(n, c, h, w, dtype=dtype), randn(f, c, k, k, dtype=dtype), randn(f, dtype=dtype)
        geometry = ((stride,) * 2, (pad,) * 4, (1, 1), 1)
        shape = K.conv2d_output_shape(x.shape, wt.shape, *geometry[:3])
        assert _Plan(x.shape, wt.shape, *geometry).direct is not None
        ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), dtype)
        close(forward_into_a_slice(x, wt, b, geometry, ws, dtype),
              R.conv2d_forward(x, wt, b, *geometry), dtype)
        if stride != 1:
            continue
        dout = randn(*shape, dtype=dtype)
        rdx = R.conv2d_backward(dout, x, wt, b, *geometry)[0]
        assert _Plan(x.shape, wt.shape, *geometry).direct_dx is not None
        bigx = np.full((n + 2, c, h, w), 1.0, dtype)
        bigx[0] = bigx[-1] = 7.0
        K.conv2d_backward_into(dout, x, wt, *geometry, bigx[1:-1], None, None, ws, accumulate=True)
        close(bigx[1:-1] - 1, rdx, dtype)
        assert (bigx[0] == 7).all() and (bigx[-1] == 7).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_narrow_blocks_sum_as_the_wide_ones(dtype, monkeypatch):
    """AVX2's narrow blocks (4 filters x 3 half vectors) sum each output's taps in the order of
    AVX-512's (8 x 2 vectors), one FMA a term: the forward and dx are the same bit for bit, on
    F and C not multiples of 4 or 8, strided and dilated; the weight gradient's lanes sum in
    another order (8 partial sums a vector, not 16): close to the reference."""
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_WINO", False)
    monkeypatch.setattr(conv, "_C5", False)
    gen = np.random.default_rng(5)
    for (n, c, h, w, f, k, stride, pad, dil) in ((3, 6, 11, 9, 10, 3, 1, 1, 1),
                                                   (2, 3, 13, 12, 5, 5, 1, 2, 1),
                                                   (2, 9, 12, 10, 7, 3, 2, 1, 1),
                                                   (2, 5, 12, 12, 6, 3, 1, 2, 2)):
        x = gen.standard_normal((n, c, h, w)).astype(dtype)
        wt = gen.standard_normal((f, c, k, k)).astype(dtype)
        b = gen.standard_normal(f).astype(dtype)
        geometry = ((stride,) * 2, (pad,) * 4, (dil,) * 2, 1)
        dout = gen.standard_normal(K.conv2d_output_shape(x.shape, wt.shape, *geometry[:3])
                                   ).astype(dtype)
        results = []
        for wide in (True, False):
            monkeypatch.setattr(conv, "_WIDE_VECTORS", wide)
            plan = _Plan(x.shape, wt.shape, *geometry)
            assert plan.narrow is not wide and plan.direct is not None
            assert (plan.direct_dx is not None) is (stride == 1) and plan.direct_dw is not None
            ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), dtype)
            out = forward_into_a_slice(x, wt, b, geometry, ws, dtype)
            dx, dw, db = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
            K.conv2d_backward_into(dout, x, wt, *geometry, dx, dw, db, ws)
            results.append((out, dx, dw, db))
        (out, dx, dw, db), (out_n, dx_n, dw_n, db_n) = results
        np.testing.assert_array_equal(out_n, out)
        if stride == 1:
            np.testing.assert_array_equal(dx_n, dx)
        rdx, rdw, rdb = R.conv2d_backward(dout, x, wt, b, *geometry)
        close(dw_n, rdw, dtype)
        close(db_n, rdb, dtype)
        close(dx_n, rdx, dtype)


# forward_lanes (filters in the vector lanes, blocks of 64; AVX2's of 16): F or, for dx, C a
# multiple of them
LANES_CASES = [   # (N, C, H, W, F, KH, KW, stride, pad, dilation, bias): forward, dx by lanes
    ((1, 5, 7, 6, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True), (True, False), (True, False)),
    ((3, 64, 5, 7, 64, 3, 3, (1, 1), (1, 0, 2, 1), (1, 1), True), (True, True), (True, True)),
    ((2, 7, 9, 8, 128, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), False), (True, False), (True, False)),
    ((2, 64, 6, 6, 13, 2, 3, (1, 1), (0, 1, 1, 2), (2, 1), True), (False, True), (False, True)),
    ((3, 64, 4, 4, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False), (True, True), (True, True)),
    ((2, 16, 9, 7, 48, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), True), (False, False), (True, True)),
    ((2, 32, 8, 9, 16, 3, 3, (2, 1), (1, 1, 0, 2), (1, 1), True), (False, False), (True, False)),
    ((2, 16, 3, 3, 16, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), True), (False, False), (True, True)),
]
# batch 1 and C = 5; uneven padding; strided, 2 blocks of 64; dilated, F = 13 (dx only); 4x4;
# 3 of AVX2's blocks (5x5) and its dx's one; F = 16 with stride (2, 1); one output position


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("narrow", [False, True], ids=["avx512", "avx2"])
@pytest.mark.parametrize("case, wide_runs, narrow_runs", LANES_CASES,
                         ids=[str(i) for i in range(len(LANES_CASES))])
def test_conv2d_lanes_matches_reference(case, wide_runs, narrow_runs, narrow, dtype, monkeypatch):
    """The forward and dx with the filters in the vector lanes (positions of 6 outputs across
    rows, the last block padded; 2 threads, pieces of the batch taken dynamically), in
    AVX-512's blocks and AVX2's (``narrow``: both run on any machine): the NumPy reference,
    the wide grid's direct forward bit for bit (the same sums in the same order), accumulation
    into dx, and nothing written around out (a slice of a bigger array)."""
    n, c, h, w, f, kh, kw, stride, pad, dil, bias = case
    fwd, bwd = narrow_runs if narrow else wide_runs
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_WIDE_VECTORS", not narrow)
    monkeypatch.setattr(conv, "_PARALLEL_MACS", 0)
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    x, wt = randn(n, c, h, w, dtype=dtype), randn(f, c, kh, kw, dtype=dtype)
    b = randn(f, dtype=dtype) if bias else None
    geometry = (stride, pad, dil, 1)
    shape = K.conv2d_output_shape(x.shape, wt.shape, stride, pad, dil)
    monkeypatch.setattr(conv, "_LANES", True)
    monkeypatch.setattr(conv, "_WINO", False)
    plan = _Plan(x.shape, wt.shape, *geometry)
    assert (plan.lanes is not None, plan.lanes_dx is not None) == (fwd, bwd)
    ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), dtype)
    out = forward_into_a_slice(x, wt, b, geometry, ws, dtype)
    close(out, R.conv2d_forward(x, wt, b, *geometry), dtype)
    dout = randn(*shape, dtype=dtype)
    rdx, rdw, _ = R.conv2d_backward(dout, x, wt, b, *geometry)
    dx, dw = np.ones_like(x), np.empty_like(wt)
    K.conv2d_backward_into(dout, x, wt, *geometry, dx, dw, None, ws, accumulate=True)
    close(dx - 1, rdx, dtype)
    close(dw, rdw, dtype)
    monkeypatch.setattr(conv, "_LANES", False)
    wide = np.empty(shape, dtype)
    K.conv2d_forward_into(x, wt, b, *geometry, wide, np.empty(
        K.conv2d_workspace_size(x.shape, wt.shape, *geometry), dtype))
    assert np.array_equal(wide, out) or not fwd


# weight_grad_lanes (AVX2's dw with the filters in the lanes, blocks of 16; runs of 256 positions)
LANES_DW_CASES = [   # (N, C, H, W, F, KH, KW, stride, pad, dilation)
    (1, 5, 7, 6, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),   # batch 1: 42 positions (2 x 16 + 10)
    (3, 16, 9, 7, 48, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),   # 3 blocks of filters
    (2, 7, 9, 8, 32, 3, 3, (2, 2), (1, 0, 2, 1), (1, 1)),    # strided, uneven padding
    (2, 4, 10, 11, 16, 2, 3, (1, 1), (0, 1, 1, 2), (2, 1)),  # dilated
    (2, 3, 21, 20, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # 420 positions: 2 runs
    (2, 5, 6, 6, 32, 1, 2, (1, 1), (0, 0, 0, 1), (1, 1)),    # 1x2: 10 taps (2 blocks of 6)
    (3, 6, 8, 9, 16, 3, 2, (2, 1), (1, 1, 0, 1), (1, 1)),    # stride (2, 1)
    (2, 8, 3, 3, 16, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1)),    # one position (no vector transpose)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LANES_DW_CASES, ids=[str(i) for i in range(len(LANES_DW_CASES))])
def test_weight_grad_lanes_matches_reference(case, dtype, monkeypatch):
    """dw and db with the filters in the vector lanes (AVX2's blocks: runs on any machine; 2
    threads, a partial per thread summed in order): the NumPy reference, dw alone, db alone and
    both with dx (which keeps its own kernel: the same dx as without); the rules take it
    wherever F is a multiple of 16 and the direct kernels run (here forced, however small)."""
    n, c, h, w, f, kh, kw, stride, pad, dil = case
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_WIDE_VECTORS", False)
    monkeypatch.setattr(conv, "_PARALLEL_MACS", 0)
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    x, wt, b = randn(n, c, h, w, dtype=dtype), randn(f, c, kh, kw, dtype=dtype), randn(f, dtype=dtype)
    geometry = (stride, pad, dil, 1)
    dout = randn(*K.conv2d_output_shape(x.shape, wt.shape, stride, pad, dil), dtype=dtype)
    rdx, rdw, rdb = R.conv2d_backward(dout, x, wt, b, *geometry)
    ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), dtype)
    assert _Plan(x.shape, wt.shape, *geometry).lanes_dw is not None
    dw, db = np.full_like(wt, np.nan), np.full_like(b, np.nan)
    K.conv2d_backward_into(dout, x, wt, *geometry, None, dw, None, ws)
    close(dw, rdw, dtype)
    K.conv2d_backward_into(dout, x, wt, *geometry, None, None, db, ws)
    close(db, rdb, dtype)
    dx, dw2, db2 = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    K.conv2d_backward_into(dout, x, wt, *geometry, dx, dw2, db2, ws)
    assert np.array_equal(dw2, dw) and np.array_equal(db2, db)
    close(dx, rdx, dtype)
    monkeypatch.setattr(conv, "_LANES_DW", False)
    assert _Plan(x.shape, wt.shape, *geometry).lanes_dw is None
    dx_without = np.empty_like(x)
    K.conv2d_backward_into(dout, x, wt, *geometry, dx_without, None, None, np.empty(
        K.conv2d_workspace_size(x.shape, wt.shape, *geometry), dtype))
    assert np.array_equal(dx_without, dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_grad_rows_on_dilated_widths(dtype, monkeypatch):
    """dw and db with the filters in the lanes (conv_lanes.weight_grad_rows) where the width is
    dilated: the padded input in dilation column phases, each kernel row's taps one run of one
    phase.  Stride 1 and 2, dilation 2 and 3, odd and uneven padding (the first column in phase
    1 or 2), C and F not multiples of the blocks, batch 1 and pieces on 2 threads: the NumPy
    reference, and the rules' plan takes it (the F >= 32 layers conv_direct.weight_grad_lanes,
    now deleted, served)."""
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_PARALLEL_MACS", 0)
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    monkeypatch.setattr(conv, "_DW_LANES", True)
    for n, c, h, w, f, kh, kw, stride, pad, dil in (
            (5, 5, 7, 11, 33, 3, 3, (1, 1), (1, 2, 3, 1), (1, 2)),
            (1, 7, 6, 13, 9, 2, 4, (1, 1), (0, 1, 2, 2), (2, 3)),
            (4, 13, 9, 12, 17, 3, 3, (2, 2), (2, 2, 1, 2), (2, 2)),
            (3, 16, 5, 9, 40, 1, 5, (1, 2), (0, 0, 4, 3), (1, 2))):
        x, wt, b = randn(n, c, h, w, dtype=dtype), randn(f, c, kh, kw, dtype=dtype), None
        geometry = (stride, pad, dil, 1)
        plan = _Plan(x.shape, wt.shape, *geometry)
        assert plan.direct_dwr is not None and plan.direct_dwr.wp % dil[1] == 0
        dout = randn(*K.conv2d_output_shape(x.shape, wt.shape, *geometry[:3]), dtype=dtype)
        _, rdw, rdb = R.conv2d_backward(dout, x, wt, randn(f, dtype=dtype), *geometry)
        ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), dtype)
        dw, db = np.full_like(wt, np.nan), np.full(f, np.nan, dtype)
        K.conv2d_backward_into(dout, x, wt, *geometry, None, dw, db, ws)
        close(dw, rdw, dtype)
        close(db, rdb, dtype)
    monkeypatch.setattr(conv, "_DW_LANES", None)          # the rules: F >= 32, plane * F small
    monkeypatch.setattr(conv, "_DIRECT_ALL", False)
    monkeypatch.setattr(conv, "_WIDE_VECTORS", True)      # (an AVX-512 machine's: see avx512_rules)
    assert _Plan((64, 32, 16, 16), (64, 32, 3, 3), (1, 1), (2,) * 4, (2, 2), 1).direct_dwr \
        is not None


@pytest.mark.parametrize("dtype", DTYPES)
def test_partial_sums_add_the_pieces_in_order(dtype):
    """conv._sum_partials (every layout of a piece's dw) and conv_lanes._rows_sum (dw^T by
    kernel rows, padded to blocks of 12 rows and Fp filters) against NumPy: dw and db = piece 0
    + piece 1 + ... in that order, bit for bit (the order fixes the rounding); odd F and C,
    1x1 to 5x5 kernels, 1 to 3 pieces, a partial's slot longer than its sums."""
    from cnnspec.kernels import conv_lanes
    rng = np.random.default_rng(5)

    def in_order(parts):
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        return total
    for f, c, kh, kw, pieces in ((7, 5, 3, 3, 3), (16, 3, 1, 1, 2), (33, 9, 5, 5, 1),
                                 (64, 16, 3, 3, 2), (6, 1, 5, 4, 3)):
        k = c * kh * kw
        for mode in (IM2COL, GATHER, ROWTAP, KN2ROW):
            strides = conv._partial_strides(mode, (f, c, kh, kw))
            shared, o_dw = 11, 5
            per = o_dw + f * k + f + 3
            ws = rng.standard_normal(shared + pieces * per).astype(dtype)
            fi, ci, ii, ji = np.ix_(*(np.arange(m) for m in (f, c, kh, kw)))
            at = fi * strides[0] + ci * strides[1] + ii * strides[2] + ji * strides[3]
            parts = [ws[shared + t * per + o_dw + at] for t in range(pieces)]
            dbs = [ws[shared + t * per + o_dw + f * k:][:f] for t in range(pieces)]
            want_dw, want_db = in_order(parts), in_order(dbs)
            dw, db = np.full((f, c, kh, kw), np.nan, dtype), np.full(f, np.nan, dtype)
            conv._sum_partials(ws.copy(), shared, per, pieces, (0, 0, 0, o_dw, o_dw + f * k),
                               strides, dw, db, True, True)
            assert np.array_equal(dw, want_dw) and np.array_equal(db, want_db), (mode, f, c)
        blocks, fp = -(-(kw * c) // 12), -(-f // 16) * 16
        rows = kh * blocks * 12
        per = rows * fp + fp + 7
        ws = rng.standard_normal(3 + pieces * per).astype(dtype)
        fi, ci, ii, ji = np.ix_(*(np.arange(m) for m in (f, c, kh, kw)))
        at = (ii * blocks * 12 + ji * c + ci) * fp + fi
        want_dw = in_order([ws[3 + t * per + at] for t in range(pieces)])
        want_db = in_order([ws[3 + t * per + rows * fp:][:f] for t in range(pieces)])
        dw, db = np.full((f, c, kh, kw), np.nan, dtype), np.full(f, np.nan, dtype)
        conv_lanes._rows_sum(ws.copy(), 3, per, pieces, blocks, fp, kh, True, True, dw, db)
        assert np.array_equal(dw, want_dw) and np.array_equal(db, want_db), (f, c)
        db = np.full(f, np.nan, dtype)                    # db alone: dw the empty stand-in
        conv_lanes._rows_sum(ws.copy(), 3, per, pieces, blocks, fp, kh, False, True,
                             np.empty((0, 0, 0, 0), dtype), db)
        assert np.array_equal(db, want_db), (f, c)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_weights_lanes_layout(dtype):
    """conv_direct.pack_weights_lanes against NumPy: wt[(c, i, j), f] = w[f, c, i, j] (forward),
    wt[(f, i, j), c] = w[f, c, KH-1-i, KW-1-j] (dx), rows of O rounded up to 64 (flat), or to
    16 (AVX2's blocks: wt 2-D, lanes_shape), zeros past O, nothing written past the rows (the
    buffer starts as NaN); odd F and C, KH != KW, 1x1."""
    rng = np.random.default_rng(3)
    for f, c, kh, kw in ((7, 5, 3, 2), (64, 3, 3, 3), (65, 33, 1, 1), (6, 1, 5, 5)):
        w = rng.standard_normal((f, c, kh, kw)).astype(dtype)
        for flipped, narrow in itertools.product((False, True), (False, True)):
            o, rows = (c, f * kh * kw) if flipped else (f, c * kh * kw)
            fp = -(-o // (16 if narrow else 64)) * (16 if narrow else 64)
            want = np.zeros((rows, fp), dtype)
            if flipped:
                want[:, :o] = w[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(rows, o)
            else:
                want[:, :o] = w.transpose(1, 2, 3, 0).reshape(rows, o)
            buf = np.full(rows * fp + 5, np.nan, dtype)
            shape = conv_direct.lanes_shape(w.shape, narrow, flipped)
            assert shape == ((rows, fp) if narrow else (rows * fp,))
            conv_direct.pack_weights_lanes(
                w, flipped, buf[:rows * fp].reshape(shape) if narrow else buf)
            assert np.array_equal(buf[:rows * fp].reshape(rows, fp), want), (f, c, flipped)
            assert np.isnan(buf[rows * fp:]).all()


def test_window_offsets_are_kept_per_geometry():
    """conv_direct.window_offsets keeps one table per geometry (making it was ~37 us a call):
    the kept table equals a fresh one, and another geometry (channels, plane, kernel, stride,
    padding, dilation, size) gets its own."""
    from cnnspec.kernels.conv_direct import _grid, _window_offsets
    cases = [((2, 3, 9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 27),
             ((1, 4, 9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 36),
             ((2, 3, 8, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 27),
             ((2, 3, 9, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 27),
             ((2, 3, 9, 9), (3, 3), (1, 1), (0, 2, 1, 1), (1, 1), 27),
             ((2, 3, 9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 27),
             ((2, 3, 9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 30),
             ((2, 3, 9, 9), (1, 5), (1, 1), (0, 0, 2, 2), (1, 1), 15)]
    tables = []
    for x_shape, kernel, stride, pad, dil, size in cases * 2:
        offs = conv_direct.window_offsets(x_shape, kernel, stride, pad, dil, size)
        wq, plane = _grid(x_shape[2], x_shape[3], stride, pad)
        fresh = np.zeros(size, np.int64)
        _window_offsets(x_shape[1], kernel, stride, pad, dil, wq, plane, fresh)
        assert np.array_equal(offs, fresh)
        tables.append(offs)
    assert all(a is b for a, b in zip(tables[:len(cases)], tables[len(cases):]))
    assert len({id(t) for t in tables}) == len(cases)

def test_samples_in_lanes_rules(avx512_rules):
    """Where the rules put conv_lanes.py's forward and dx (the samples in the lanes): the 5x5
    16->32 row and ResNet-8's 16x16 and strided layers at batch 64; not batches under 16, 32x32
    planes of ResNet-8's 16->16 (the wide grid wastes 3%), nor the forward of fewer than 8 input
    channels (LeNet-5's layers: the direct forward, one compiled forward for the network)."""
    def plan(n, c, hw, f, k, s, p):
        got = _Plan((n, c, hw, hw), (f, c, k, k), (s, s), (p,) * 4, (1, 1), 1)
        return got.slanes, got.slanes_dx
    assert plan(64, 16, 14, 32, 5, 1, 2) == (True, True)
    assert plan(64, 32, 16, 32, 3, 1, 1) == (True, True)
    assert plan(64, 16, 32, 32, 3, 2, 1) == (True, True)
    assert plan(8, 16, 14, 32, 5, 1, 2) == (False, False)
    assert plan(64, 16, 32, 16, 3, 1, 1) == (False, False)
    assert plan(64, 1, 32, 6, 5, 1, 0) == (False, False)       # LeNet-5's conv1, conv2
    assert plan(64, 6, 14, 16, 5, 1, 0) == (False, False)
    assert plan(256, 6, 14, 16, 5, 1, 0) == (False, False)


def test_the_kernels_use_the_plan_of_the_lanes_switch_in_force(monkeypatch):
    """A plan made with forward_lanes switched off is not reused once it is on (its results are
    the same bit for bit, so only the plan tells)."""
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    x_shape, w_shape = (2, 8, 5, 5), (64, 8, 3, 3)
    for lanes in (False, True, False):
        monkeypatch.setattr(conv, "_LANES", lanes)
        workspace = np.empty(conv.conv2d_workspace_size(x_shape, w_shape, (1, 1), (1, 1, 1, 1)))
        plan = conv._plan_for(np.empty(x_shape), np.empty(w_shape), (1, 1), (1, 1, 1, 1), (1, 1),
                              1, workspace, 1)
        assert (plan.lanes is not None) is lanes


def test_lanes_rules(avx512_rules):
    """Where the rules put forward_lanes: ResNet-8's 8x8 layers (64 filters: 3x3 64->64, the
    stride-2 32->64 and its dx) and planes of 32x32 and more with 64 filters, unless Winograd
    runs the layer (the bench's 3x3 64->64 on 56x56: its forward and dx), not ResNet-8's 16x16
    or 32x32 layers (32 and 16 filters), 64->64 on 16x16, nor 3x3 256->256 on 4x4 (K > 1536)."""
    def plan(x, w, s, p):
        return _Plan(x, w, (s, s), (p,) * 4, (1, 1), 1)
    p = plan((64, 64, 8, 8), (64, 64, 3, 3), 1, 1)
    assert p.lanes is not None and p.lanes_dx is not None
    assert plan((64, 32, 16, 16), (64, 32, 3, 3), 2, 1).lanes is not None
    p = plan((16, 64, 32, 32), (64, 64, 3, 3), 1, 1)
    assert p.lanes is not None and p.lanes_dx is not None
    p = plan((8, 64, 56, 56), (64, 64, 3, 3), 1, 1)
    assert p.wino is not None and p.wino_dx is not None
    assert p.lanes is None and p.lanes_dx is None
    for x, w in (((64, 32, 16, 16), (32, 32, 3, 3)), ((64, 16, 32, 32), (16, 16, 3, 3)),
                 ((16, 64, 16, 16), (64, 64, 3, 3)), ((16, 256, 4, 4), (256, 256, 3, 3))):
        p = plan(x, w, 1, 1)
        assert p.lanes is None and p.lanes_dx is None, (x, w)


# conv_big's Winograd F(2x2, 3x3): 3x3, stride 1 (N, C, H, W, F, pad, bias)
WINO_CASES = [
    (1, 5, 7, 9, 13, (1, 1, 1, 1), True),      # batch 1, 5 channels, 13 filters (one block)
    (3, 64, 10, 11, 70, (0, 2, 1, 0), False),  # uneven padding, 2 blocks of filters, dx of 64
    (2, 17, 16, 33, 64, (1, 1, 1, 1), True),   # OW = 33: the last vector overlaps; 2 chunks
    (2, 3, 5, 34, 5, (2, 2, 2, 2), True),      # padding 2 (even), dx's 0
    (1, 8, 4, 4, 64, (0, 1, 1, 0), False),     # a plane smaller than a vector
    (2, 32, 8, 8, 48, (1, 1, 1, 1), True),     # C and F multiples of 16: both layouts
    (3, 16, 5, 6, 16, (0, 2, 1, 0), False),    # 30 positions: a vector and a scalar tail
]
# Winograd's outputs are the direct sums rounded differently: the transforms add and subtract
# up to 4 inputs and up to 9 of the products' sums (dw: 4 and 9 the other way round), each
# rounding at the scale of its terms, so the error is a few units in the last place of the
# output's scale, not of each element:
# measured max |ours - float64 NumPy| / max |reference| 1e-7 - 4e-7 in float32 (the direct
# loops: 1.4e-7 - 1e-6, their sums of 9*C terms longer), 4e-16 - 7e-16 in float64; dw
# 1.7e-7 - 4.1e-7 and 3e-16 - 1.7e-15 (the BLAS and direct paths 1.3e-7 - 2.7e-7, 2e-16 - 2e-15)
WINO_TOL = {np.float32: 1e-5, np.float64: 1e-13}


def scale_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("blocks", ["wide", "narrow", "hwc"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WINO_CASES, ids=[str(i) for i in range(len(WINO_CASES))])
def test_conv2d_winograd_matches_reference(case, dtype, blocks, monkeypatch):
    """Winograd's forward, dx and dw (2 threads, pieces of the batch taken dynamically; dw's
    pieces summed in order) against the float64 NumPy reference, accumulation into dx, nothing
    written around out, db, and dw alone; in AVX-512's blocks and in AVX2's (``narrow``: U and
    the partial dU 2-D, filters padded to 16 rather than 64), and in AVX2's with the
    channels innermost (``hwc``: the forward where C, dx where F, is a multiple of 16), on any
    machine."""
    n, c, h, w, f, pad, bias = case
    monkeypatch.setattr(conv, "_WIDE_VECTORS", blocks == "wide")
    monkeypatch.setattr(conv, "_WINO_HWC", blocks == "hwc")
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_PARALLEL_MACS", 0)
    monkeypatch.setattr(conv, "_WINO", True)
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    x, wt = randn(n, c, h, w, dtype=dtype), randn(f, c, 3, 3, dtype=dtype)
    b = randn(f, dtype=dtype) if bias else None
    geometry = ((1, 1), pad, (1, 1), 1)
    plan = _Plan(x.shape, wt.shape, *geometry)
    assert None not in (plan.wino, plan.wino_dx, plan.wino_dw)
    assert plan.narrow == (blocks != "wide")
    assert plan.wino_hwc == (blocks == "hwc" and c % 16 == 0, blocks == "hwc" and f % 16 == 0)
    # NaN in the workspace: the kernels clear what they read (V's and dM's unused columns
    # reach only dropped outputs)
    ws = np.full(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), np.nan, dtype)
    out = forward_into_a_slice(x, wt, b, geometry, ws, dtype)
    f64 = [None if a is None else a.astype(np.float64) for a in (x, wt, b)]
    assert scale_error(out, R.conv2d_forward(*f64, *geometry)) < WINO_TOL[dtype]
    dout = randn(*out.shape, dtype=dtype)
    rdx, rdw, rdb = R.conv2d_backward(dout.astype(np.float64), *f64, *geometry)
    dx, dw, db = np.ones_like(x), np.empty_like(wt), np.empty(f, dtype)
    K.conv2d_backward_into(dout, x, wt, *geometry, dx, dw, db if bias else None, ws,
                           accumulate=True)
    assert scale_error(dx - 1, rdx) < WINO_TOL[dtype]
    assert scale_error(dw, rdw) < WINO_TOL[dtype]
    if bias:
        close(db, rdb, dtype)
    dw2 = np.empty_like(wt)
    K.conv2d_backward_into(dout, x, wt, *geometry, None, dw2, None, ws)
    assert np.array_equal(dw2, dw)


@pytest.mark.parametrize("case", WINO_CASES[:3], ids=[str(i) for i in range(3)])
def test_winograd_narrow_blocks_give_the_same_bits(case, monkeypatch):
    """AVX2's blocks of the products (6 tiles x 16 filters; dw 6 channels x 16 filters) sum the
    same terms in the same order as AVX-512's (6 x 64): forward, dx and dw bit for bit."""
    n, c, h, w, f, pad, bias = case
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_WINO", True)
    x, wt, b = (randn(n, c, h, w, dtype=np.float32), randn(f, c, 3, 3, dtype=np.float32),
                randn(f, dtype=np.float32))
    geometry = ((1, 1), pad, (1, 1), 1)
    results = []
    for wide in (True, False):
        monkeypatch.setattr(conv, "_WIDE_VECTORS", wide)
        ws = np.zeros(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), np.float32)
        out = np.empty(K.conv2d_output_shape(x.shape, wt.shape, (1, 1), pad), np.float32)
        K.conv2d_forward_into(x, wt, b, *geometry, out, ws)
        dout = np.random.default_rng(5).standard_normal(out.shape).astype(np.float32)
        dx, dw, db = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
        K.conv2d_backward_into(dout, x, wt, *geometry, dx, dw, db, ws)
        results.append((out, dx, dw, db))
    for a, b2 in zip(*results):
        assert np.array_equal(a, b2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in WINO_CASES if c[1] % 16 == 0 or c[4] % 16 == 0],
                         ids=str)
def test_winograd_channels_innermost_gives_the_same_bits(case, dtype, monkeypatch):
    """The channels-innermost layout (``conv_big._fill_hwc``, ``_input_tiles_hwc``) computes
    the tiles' layout's values in the same order: forward and dw (C a multiple of 16) and dx
    (F), accumulated, bit for bit; 2 threads (dw's pieces summed in order); NaN in the
    workspace (the padding, and dw's channels past C, are cleared)."""
    n, c, h, w, f, pad, bias = case
    monkeypatch.setattr(conv, "_WIDE_VECTORS", False)
    monkeypatch.setattr(conv, "_WINO", True)
    monkeypatch.setattr(conv, "_PARALLEL_MACS", 0)
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    x, wt = randn(n, c, h, w, dtype=dtype), randn(f, c, 3, 3, dtype=dtype)
    b = randn(f, dtype=dtype) if bias else None
    geometry = ((1, 1), pad, (1, 1), 1)
    dout = randn(*K.conv2d_output_shape(x.shape, wt.shape, *geometry[:3]), dtype=dtype)
    results = []
    for hwc in (False, True):
        monkeypatch.setattr(conv, "_WINO_HWC", hwc)
        plan = _Plan(x.shape, wt.shape, *geometry)
        assert plan.wino_hwc == (hwc and c % 16 == 0, hwc and f % 16 == 0)
        ws = np.full(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), np.nan, dtype)
        out = forward_into_a_slice(x, wt, b, geometry, ws, dtype)
        dx, dw = np.full_like(x, 0.5), np.empty_like(wt)
        K.conv2d_backward_into(dout, x, wt, *geometry, dx, dw, None, ws, accumulate=True)
        results.append((out, dx, dw))
    for a, b2 in zip(*results):
        assert not np.isnan(a).any() and np.array_equal(a, b2)


def test_winograd_hwc_rules(monkeypatch):
    """Without AVX-512, the channels-innermost layout runs the forward and dx of Winograd where
    the rows hold at most 8 tiles (16 outputs) or C >= 64, C (dx: F) a multiple of 16, and
    brings the layers of planes of >= 256 outputs with C and F >= 16, or >= 64 with >= 32, to
    Winograd, forward, dx and dw (ResNet-8's 32->32 on 16x16 and 64->64 on 8x8); not 16->16 on
    32x32 or 8x8, nor rows of 32 with fewer than 64 channels."""
    monkeypatch.setattr(conv, "_WIDE_VECTORS", False)

    def plan(x, w):
        return _Plan(x, w, (1, 1), (1,) * 4, (1, 1), 1)
    for x, w in (((64, 32, 16, 16), (32, 32, 3, 3)), ((64, 64, 8, 8), (64, 64, 3, 3)),
                 ((64, 32, 8, 8), (32, 32, 3, 3)), ((64, 16, 16, 16), (16, 16, 3, 3)),
                 ((64, 64, 8, 8), (128, 64, 3, 3))):
        p = plan(x, w)
        assert p.wino is not None and p.wino_dx is not None and p.wino_hwc == (True, True), x
        assert p.wino_dw is not None and p.lanes_dw is None, (x, w)
    for x, w in (((64, 16, 32, 32), (16, 16, 3, 3)), ((64, 16, 8, 8), (16, 16, 3, 3)),
                 ((64, 32, 4, 4), (32, 32, 3, 3)), ((64, 32, 16, 16), (24, 32, 3, 3))):
        p = plan(x, w)
        assert p.wino is None and p.wino_dx is None, (x, w)
    p = plan((16, 16, 64, 64), (16, 16, 3, 3))           # the U-Net's: the tiles' layout
    assert p.wino is not None and p.wino_hwc == (False, False) and p.wino_dw is not None
    p = plan((8, 64, 56, 56), (64, 64, 3, 3))            # the bench's: C >= 64
    assert p.wino_hwc == (True, True) and p.wino_dw is not None
    p = plan((16, 64, 32, 32), (32, 64, 3, 3))           # dx: 32 channels on rows of 32
    assert p.wino_hwc == (True, False)
    monkeypatch.setattr(conv, "_WIDE_VECTORS", True)     # AVX-512's blocks: never
    assert plan((8, 64, 56, 56), (64, 64, 3, 3)).wino_hwc == (False, False)


def test_winograd_rules(avx512_rules):
    """Where the rules put Winograd: 3x3 stride 1 with F (dx: C) a multiple of 64, C (dx: F)
    >= 32, C*F <= 4096 and planes of >= 2048 outputs (the bench's 64->64 on 56x56); not
    ResNet-8's or the U-Net's layers (8x8 to 32x32), 128->128, strides or other kernels."""
    def plan(x, w, s=1, p=1):
        return _Plan(x, w, (s, s), (p,) * 4, (1, 1), 1)
    for x, w in (((8, 64, 56, 56), (64, 64, 3, 3)), ((1, 32, 48, 50), (64, 32, 3, 3))):
        p = plan(x, w)
        assert p.wino is not None and p.wino_dw is not None, (x, w)
        assert (p.wino_dx is not None) == (x[1] == 64), (x, w)
    assert plan((8, 16, 56, 56), (64, 16, 3, 3)).wino is None        # C = 16 < 32
    assert plan((8, 64, 56, 56), (16, 64, 3, 3)).wino_dx is None     # dx: F = 16 < 32
    for x, w, s in (((64, 64, 8, 8), (64, 64, 3, 3), 1), ((64, 32, 16, 16), (32, 32, 3, 3), 1),
                    ((64, 16, 32, 32), (16, 16, 3, 3), 1), ((8, 64, 56, 56), (64, 64, 3, 3), 2),
                    ((8, 64, 56, 56), (64, 64, 5, 5), 1), ((16, 64, 32, 32), (64, 64, 3, 3), 1),
                    ((8, 128, 56, 56), (128, 128, 3, 3), 1)):
        p = plan(x, w, s)
        assert p.wino is None and p.wino_dx is None and p.wino_dw is None, (x, w, s)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_id)
def test_conv2d_matches_reference(case, dtype, forward):
    stride, pad, dil, groups = case[7:11]
    x, w, b, out, ws = run_conv(case, dtype)
    close(out, R.conv2d_forward(x, w, b, stride, pad, dil, groups), dtype)

    dout = randn(*out.shape, dtype=dtype)
    rdx, rdw, rdb = R.conv2d_backward(dout, x, w, b, stride, pad, dil, groups)
    dx, dw = np.full_like(x, np.nan), np.full_like(w, np.nan)
    db = None if b is None else np.full_like(b, np.nan)
    K.conv2d_backward_into(dout, x, w, stride, pad, dil, groups, dx, dw, db, ws)
    close(dx, rdx, dtype)
    close(dw, rdw, dtype)
    if b is not None:
        close(db, rdb, dtype)

    # accumulate adds into dx; None gradients are skipped
    dx2 = np.ones_like(x)
    K.conv2d_backward_into(dout, x, w, stride, pad, dil, groups, dx2, None, None, ws,
                           accumulate=True)
    close(dx2 - 1, rdx, dtype)
    dw2 = np.full_like(w, np.nan)
    K.conv2d_backward_into(dout, x, w, stride, pad, dil, groups, None, dw2, None, ws)
    close(dw2, rdw, dtype)
    if b is not None:              # db alone (its sums once read the size of the absent dw)
        db2 = np.full_like(b, np.nan)
        K.conv2d_backward_into(dout, x, w, stride, pad, dil, groups, None, None, db2, ws)
        close(db2, rdb, dtype)


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (0, 1, 3, 6, 11, 17)], ids=conv_id)
def test_conv2d_backward_matches_central_differences(case):
    n, c, h, w_, f, kh, kw, stride, pad, dil, groups, bias = case
    f = max(groups, min(f, 4) // groups * groups)
    x, w, b = randn(1, c, min(h, 6), min(w_, 6)), randn(f, c // groups, kh, kw), randn(f)
    shape = K.conv2d_output_shape(x.shape, w.shape, stride, pad, dil)
    ws = np.empty(K.conv2d_workspace_size(x.shape, w.shape, stride, pad, dil, groups))
    out = np.empty(shape)
    dout = randn(*shape)

    def loss():
        K.conv2d_forward_into(x, w, b, stride, pad, dil, groups, out, ws)
        return float(np.sum(out * dout))

    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    K.conv2d_backward_into(dout, x, w, stride, pad, dil, groups, dx, dw, db, ws)
    # the loss is linear in each of x, w, b: central differences are exact for any step, and a
    # step of 1e-3 keeps their rounding (eps * |loss| / h) off the small entries' relative error
    # (with 1e-5 it reached 1.05e-6 on some draws)
    assert rel_error(dx, numeric_grad(loss, x, h=1e-3)) < 1e-6
    assert rel_error(dw, numeric_grad(loss, w, h=1e-3)) < 1e-6
    assert rel_error(db, numeric_grad(loss, b, h=1e-3)) < 1e-6


def test_conv2d_workspace_too_small_is_an_error():
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="workspace"):
        K.conv2d_forward_into(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, np.empty((1, 3, 3, 3)),
                              np.empty(1))


# -- pooling -------------------------------------------------------------------------------------

# (N, C, H, W, kernel, stride, pad (t, b, l, r), ceil)
POOL_CASES = [
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0, 0, 0), False),
    (1, 1, 7, 9, (3, 3), (2, 2), (1, 1, 1, 1), False),
    (2, 2, 7, 9, (3, 3), (2, 2), (1, 1, 1, 1), True),       # ceil: last window hangs over
    (2, 2, 6, 5, (3, 2), (2, 3), (1, 0, 0, 1), True),       # asymmetric pad, non-square
    (1, 3, 5, 5, (2, 2), (1, 1), (0, 0, 0, 0), False),      # overlapping windows
    (2, 2, 10, 7, (4, 3), (3, 3), (2, 1, 1, 1), True),
    (2, 3, 1, 11, (1, 3), (1, 2), (0, 0, 1, 1), True),      # 1-D as H = 1
    (3, 2, 9, 9, (3, 3), (3, 3), (0, 0, 0, 0), True),       # ceil that changes nothing
    (16, 16, 32, 32, (2, 2), (2, 2), (0, 0, 0, 0), False),  # split over threads
    (16, 16, 33, 33, (3, 3), (2, 2), (1, 1, 1, 1), False),  # bordered windows, split over threads
    (2, 3, 9, 10, (3, 3), (1, 1), (0, 0, 0, 0), False),     # 3x3 stride 1, no padding
    (2, 3, 7, 9, (2, 2), (2, 2), (0, 0, 0, 0), False),      # 2x2 stride 2, odd sides: the last
                                                            # row and column in no window
]


def pool_id(case):
    n, c, h, w, k, s, p, ceil = case
    mode = "ceil" if ceil else "floor"
    return f"{n}x{c}x{h}x{w}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{''.join(map(str, p))}-{mode}"


def pool_shape(case):
    n, c, h, w, k, s, p, ceil = case
    return (n, c, R.pool_output_size(h, k[0], s[0], p[0], p[1], ceil),
            R.pool_output_size(w, k[1], s[1], p[2], p[3], ceil))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=pool_id)
def test_pooling_matches_reference(case, dtype):
    n, c, h, w, k, s, p, ceil = case
    shape = pool_shape(case)
    x = randn(n, c, h, w, dtype=dtype)
    dout = randn(*shape, dtype=dtype)
    hw = shape[2:]

    out, arg = np.full(shape, np.nan, dtype), np.empty(shape, np.int64)
    K.maxpool2d_forward_into(x, k, s, p, out, arg)
    close(out, R.maxpool2d_forward(x, k, s, p, hw), dtype)
    dx = np.full_like(x, np.nan)
    K.maxpool2d_backward_into(dout, arg, dx)
    close(dx, R.maxpool2d_backward(dout, x, k, s, p, hw), dtype)
    K.maxpool2d_backward_into(dout, arg, dx, accumulate=True)
    close(dx, 2 * R.maxpool2d_backward(dout, x, k, s, p, hw), dtype)
    # a relu before the pooling, fused (training): relu(max(x)) = max(relu(x)), and the gradient
    # of max(relu(x)) with respect to x, masked by the pooled output
    out, arg = np.full(shape, np.nan, dtype), np.empty(shape, np.int64)
    K.maxpool2d_forward_into(x, k, s, p, out, arg, relu=True)
    rx = R.relu_forward(x)
    close(out, R.maxpool2d_forward(rx, k, s, p, hw), dtype)
    dx = np.full_like(x, np.nan)
    K.maxpool2d_backward_into(dout, arg, dx, after_relu=out)
    close(dx, R.relu_backward(R.maxpool2d_backward(dout, rx, k, s, p, hw), x), dtype)

    for fwd, bwd, rf, rb in [
            (K.avgpool2d_forward_into, K.avgpool2d_backward_into, R.avgpool2d_forward,
             R.avgpool2d_backward),
            (K.sumpool2d_forward_into, K.sumpool2d_backward_into, R.sumpool2d_forward,
             R.sumpool2d_backward)]:
        out = np.full(shape, np.nan, dtype)
        fwd(x, k, s, p, out)
        close(out, rf(x, k, s, p, hw), dtype)
        dx = np.full_like(x, np.nan)
        bwd(dout, k, s, p, dx)
        close(dx, rb(dout, x, k, s, p, hw), dtype)
        bwd(dout, k, s, p, dx, accumulate=True)
        close(dx, 2 * rb(dout, x, k, s, p, hw), dtype)


def test_sum_pool_is_avg_pool_times_its_divisor():
    case = POOL_CASES[2]
    n, c, h, w, k, s, p, ceil = case
    x = randn(n, c, h, w)
    avg, total = np.empty(pool_shape(case)), np.empty(pool_shape(case))
    K.avgpool2d_forward_into(x, k, s, p, avg)
    K.sumpool2d_forward_into(x, k, s, p, total)
    # the divisor: the window clipped to the padded input, padded positions counted
    padded = np.ones((n, c, h + p[0] + p[1], w + p[2] + p[3]))
    divisor = np.empty(pool_shape(case))
    K.sumpool2d_forward_into(padded, k, s, (0, 0, 0, 0), divisor)
    assert rel_error(total, avg * divisor) < 1e-12


def test_padding_never_wins_a_max():
    x = -np.ones((1, 1, 2, 2)) * 5
    out, arg = np.empty((1, 1, 2, 2)), np.empty((1, 1, 2, 2), np.int64)
    K.maxpool2d_forward_into(x, (2, 2), (1, 1), (1, 0, 1, 0), out, arg)
    assert np.all(out == -5)
    assert np.all(arg >= 0)


def test_maxpool_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    out, arg = np.empty((1, 1, 1, 1)), np.empty((1, 1, 1, 1), np.int64)
    K.maxpool2d_forward_into(x, (2, 2), (2, 2), (0, 0, 0, 0), out, arg)
    dx = np.empty_like(x)
    K.maxpool2d_backward_into(np.ones((1, 1, 1, 1)), arg, dx)
    assert dx.ravel().tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("case", POOL_CASES, ids=pool_id)
def test_maxpool_ties_everywhere_go_to_the_first_maximum(case):
    """Inputs of a few integer levels tie in most windows: every kernel shape (the unrolled 3x3
    included) sends each window's gradient to its first maximum in row-major order, as the
    NumPy reference (argmax) does; padding never wins."""
    n, c, h, w, k, s, p, ceil = case
    shape = pool_shape(case)
    x = np.random.default_rng(7).integers(-2, 2, size=(n, c, h, w)).astype(np.float64)
    dout = randn(*shape)
    out, arg = np.empty(shape), np.empty(shape, np.int64)
    K.maxpool2d_forward_into(x, k, s, p, out, arg)
    dx = np.empty_like(x)
    K.maxpool2d_backward_into(dout, arg, dx)
    np.testing.assert_array_equal(out, R.maxpool2d_forward(x, k, s, p, shape[2:]))
    np.testing.assert_allclose(dx, R.maxpool2d_backward(dout, x, k, s, p, shape[2:]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("width", [12, 37])
@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("stride", [(2, 2), (1, 1), (2, 1), (1, 2), (3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_with_nans_and_ties_matches_a_window_by_window_reference(stride, dtype, kernel,
                                                                         width):
    """The one-pass 2x2 and 3x3 drivers (their windows' elements copied into runs; loops of
    their own for 2x2 with stride 2 along the rows: a row at a time, planes at a time for rows
    of fewer than 16 outputs) against windows taken one by one in Python: the max; its flat
    index, the first maximum in row-major order; a NaN wins its window (the last NaN in that
    order, as PyTorch's ``val > max || isnan(val)``)."""
    from cnnspec.kernels import pool
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 2, size=(3, 2, 9, width)).astype(dtype)
    x.reshape(-1)[rng.choice(x.size, 25 * width // 12, replace=False)] = np.nan
    k = kernel
    oh, ow = (9 - k) // stride[0] + 1, (width - k) // stride[1] + 1
    if k == 2 and stride[1] == 2:
        assert (pool._maxpool_driver(x, (k, k), stride, (0,) * 4, np.empty((3, 2, oh, ow)))[0]
                is (pool._maxpool_2x2_s2_planes if width == 12 else pool._maxpool_2x2_s2_forward))
    out, arg = np.empty((3, 2, oh, ow), dtype), np.empty((3, 2, oh, ow), np.int64)
    K.maxpool2d_forward_into(x, (k, k), stride, (0, 0, 0, 0), out, arg)
    for n, c, i, j in np.ndindex(out.shape):
        best, where = None, None
        for a, b in itertools.product(range(k), range(k)):
            h, w = i * stride[0] + a, j * stride[1] + b
            v = x[n, c, h, w]
            if best is None or v > best or np.isnan(v):
                best, where = v, h * width + w
        assert arg[n, c, i, j] == where
        assert out[n, c, i, j] == best or (np.isnan(best) and np.isnan(out[n, c, i, j]))


@pytest.mark.parametrize("shape", [(8, 16, 6, 10), (64, 16, 11, 10), (2, 1, 2, 2)])
def test_maxpool_planes_at_a_time_over_several_groups(shape):
    """2x2 stride-2 pooling of short rows, planes at a time: groups of planes (at most 1,024
    outputs each; a last, partial group; an odd height's last row unread) give the reference's
    values and indices, and its backward the reference's gradient."""
    from cnnspec.kernels import pool
    own = np.random.default_rng(9)            # not the module's stream: later tests keep their data
    x = own.standard_normal(shape).astype(np.float32)
    out_shape = shape[:2] + (shape[2] // 2, shape[3] // 2)
    assert pool._maxpool_driver(x, (2, 2), (2, 2), (0,) * 4, np.empty(out_shape))[0] is \
        pool._maxpool_2x2_s2_planes
    out, arg = np.full(out_shape, np.nan, np.float32), np.full(out_shape, -7, np.int64)
    K.maxpool2d_forward_into(x, (2, 2), (2, 2), (0,) * 4, out, arg)
    np.testing.assert_array_equal(out, R.maxpool2d_forward(x, (2, 2), (2, 2), (0,) * 4,
                                                           out_shape[2:]))
    dout, dx = own.standard_normal(out_shape).astype(np.float32), np.full_like(x, np.nan)
    K.maxpool2d_backward_into(dout, arg, dx)
    np.testing.assert_array_equal(dx, R.maxpool2d_backward(dout, x, (2, 2), (2, 2), (0,) * 4,
                                                           out_shape[2:]))


@pytest.mark.parametrize("geometry,driver", [
    (((2, 2), (2, 2), (0,) * 4, (4, 3, 9, 40)), "_maxpool_2x2_s2_forward"),
    (((2, 2), (2, 2), (0,) * 4, (40, 16, 11, 10)), "_maxpool_2x2_s2_planes"),   # several groups
    (((2, 2), (1, 1), (0,) * 4, (3, 2, 7, 9)), "_maxpool_2x2_forward"),
    (((3, 3), (1, 1), (0,) * 4, (3, 2, 7, 9)), "_maxpool_3x3_forward"),
    (((3, 3), (2, 2), (1,) * 4, (3, 2, 7, 9)), "_maxpool_small_forward"),
    (((5, 4), (2, 3), (2, 2, 1, 1), (3, 2, 9, 11)), "_maxpool_general_forward")])
def test_maxpool_with_relu_is_the_relu_of_the_pooling(geometry, driver):
    """``relu=True`` (the training step's relu -> maxpool pair), in every driver's own call:
    the outputs are the relu kernel's of the plain pooling's, bit for bit (NaN kept), the
    indices the same."""
    from cnnspec.kernels import pool
    kernel, stride, pad, shape = geometry
    own = np.random.default_rng(5)
    x = own.integers(-12, 2, size=shape).astype(np.float32)       # windows of all-negative values too
    x.reshape(-1)[own.choice(x.size, 7, replace=False)] = np.nan
    oh = (shape[2] + pad[0] + pad[1] - kernel[0]) // stride[0] + 1
    ow = (shape[3] + pad[2] + pad[3] - kernel[1]) // stride[1] + 1
    out_shape = shape[:2] + (oh, ow)
    assert pool._maxpool_driver(x, kernel, stride, pad, np.empty(out_shape))[0] is getattr(pool, driver)
    plain, arg = np.empty(out_shape, np.float32), np.empty(out_shape, np.int64)
    K.maxpool2d_forward_into(x, kernel, stride, pad, plain, arg)
    fused, arg2 = np.full(out_shape, 7.0, np.float32), np.empty(out_shape, np.int64)
    K.maxpool2d_forward_into(x, kernel, stride, pad, fused, arg2, relu=True)
    expected = np.empty_like(plain)
    K.relu_forward_into(plain, expected)
    np.testing.assert_array_equal(fused, expected)
    np.testing.assert_array_equal(arg2, arg)
    assert np.any(plain < 0) and np.any(fused == 0) and np.any(fused > 0) and np.any(np.isnan(fused))


@pytest.mark.parametrize("case", [POOL_CASES[i] for i in (1, 2, 3)], ids=pool_id)
def test_pooling_backward_matches_central_differences(case):
    n, c, h, w, k, s, p, ceil = case
    shape = pool_shape(case)
    x, dout = randn(1, 1, h, w), randn(1, 1, *shape[2:])
    out, arg = np.empty(dout.shape), np.empty(dout.shape, np.int64)
    dx = np.empty_like(x)
    for fwd, bwd in [(lambda: K.maxpool2d_forward_into(x, k, s, p, out, arg),
                      lambda: K.maxpool2d_backward_into(dout, arg, dx)),
                     (lambda: K.avgpool2d_forward_into(x, k, s, p, out),
                      lambda: K.avgpool2d_backward_into(dout, k, s, p, dx)),
                     (lambda: K.sumpool2d_forward_into(x, k, s, p, out),
                      lambda: K.sumpool2d_backward_into(dout, k, s, p, dx))]:
        fwd()
        bwd()

        def loss():
            fwd()
            return float(np.sum(out * dout))
        assert rel_error(dx, numeric_grad(loss, x)) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 4, 7), (3, 2, 1, 1)])
def test_global_pooling(shape, dtype):
    x = randn(*shape, dtype=dtype)
    out_shape = shape[:2] + (1,) * (len(shape) - 2)
    out = np.empty(out_shape, dtype)
    K.global_avgpool_forward_into(x, out)
    close(out.reshape(shape[:2]), R.global_avgpool_forward(x), dtype)
    dout = randn(*out_shape, dtype=dtype)
    dx = np.empty_like(x)
    K.global_avgpool_backward_into(dout, dx)
    close(dx, R.global_avgpool_backward(dout, x), dtype)

    arg = np.empty(shape[:2], np.int64)
    K.global_maxpool_forward_into(x, out, arg)
    close(out.reshape(shape[:2]), R.global_maxpool_forward(x), dtype)
    K.global_maxpool_backward_into(dout, arg, dx)
    close(dx, R.global_maxpool_backward(dout, x), dtype)


# -- dense ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,m,bias", [(1, 400, 120, True), (64, 400, 120, True),
                                        (5, 7, 3, False), (256, 300, 200, True)])
def test_dense_matches_reference(n, d, m, bias, dtype):
    x, w = randn(n, d, dtype=dtype), randn(d, m, dtype=dtype)
    b = randn(m, dtype=dtype) if bias else None
    out = np.empty((n, m), dtype)
    K.dense_forward_into(x, w, b, out)
    close(out, R.dense_forward(x, w, b), dtype)
    dout = randn(n, m, dtype=dtype)
    rdx, rdw, rdb = R.dense_backward(dout, x, w, b)
    dx, dw = np.empty_like(x), np.empty_like(w)
    db = None if b is None else np.empty_like(b)
    K.dense_backward_into(dout, x, w, dx, dw, db)
    close(dx, rdx, dtype)
    close(dw, rdw, dtype)
    if bias:
        close(db, rdb, dtype)
    K.dense_backward_into(dout, x, w, dx, None, None, accumulate=True)
    close(dx, 2 * rdx, dtype)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_dense_relu_pair_matches_reference(monkeypatch, split, dtype, bias):
    """The dense -> relu pair's kernels (the training step's fusion): forward relu(x @ w + b);
    backward from the relu's output gradient g, masked by y > 0 into ``masked`` (g unchanged),
    then dx (+)=, dw, db of it, against NumPy; in one call on one thread, and split over two
    threads (the threshold lowered)."""
    from cnnspec.kernels import dense

    monkeypatch.setenv("CNNSPEC_THREADS", "2" if split else "1")
    if split:
        monkeypatch.setattr(dense, "_PARALLEL_MACS", 0)
    n, d, m = 6, 70, 96                              # 96 columns: two threads' worth when split
    x, w = randn(n, d, dtype=dtype), randn(d, m, dtype=dtype)
    b = randn(m, dtype=dtype) if bias else None
    z = R.dense_forward(x, w, b)
    y = np.full((n, m), np.nan, dtype)
    K.dense_forward_into(x, w, b, y, True)
    close(y, np.maximum(z, 0), dtype)
    assert np.all(y >= 0) and np.any(y == 0) and np.any(y > 0)
    g = randn(n, m, dtype=dtype)
    g_before, mask = g.copy(), y > 0
    rdx, rdw, rdb = R.dense_backward(np.where(mask, g, 0), x, w, b)
    dx, dw, masked = np.full_like(x, 1.0), np.empty_like(w), np.full((n, m), np.nan, dtype)
    db = None if b is None else np.empty_like(b)
    K.dense_backward_into(g, x, w, dx, dw, db, True, y, masked)
    np.testing.assert_array_equal(masked, np.where(mask, g, 0))
    np.testing.assert_array_equal(g, g_before)
    close(dx, rdx + 1.0, dtype)
    close(dw, rdw, dtype)
    if bias:
        close(db, rdb, dtype)
    K.dense_backward_into(g, x, w, dx, None, None, False, y, masked)   # dx alone, not added
    close(dx, rdx, dtype)


@pytest.fixture(scope="module")
def gemm_call():
    """``_blas.gemm`` (callable from numba only) behind a jitted wrapper."""
    import numba
    from cnnspec.kernels._blas import gemm

    @numba.njit
    def call(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    return call


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k", [(1, 9, 7), (6, 1, 5), (1, 1, 4), (5, 6, 3), (1, 8, 1)])
def test_gemm_matches_numpy(gemm_call, m, n, k, dtype):
    """C = alpha op(A) @ op(B) + beta C with matrices inside wider rows (ld > width) or not, every
    transpose: the one-row and one-column products take BLAS's gemv where their vectors are
    contiguous (else gemm); with beta 0 an unwritten C (NaN) is not read."""
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    for trans_a, trans_b, wide, beta in itertools.product((False, True), (False, True), (0, 3), (0.0, 1.0)):
        a_rows, a_cols = (k, m) if trans_a else (m, k)
        b_rows, b_cols = (n, k) if trans_b else (k, n)
        lda, ldb, ldc = a_cols + wide, b_cols + wide, n + wide
        a = rng.standard_normal(a_rows * lda).astype(dtype)
        b = rng.standard_normal(b_rows * ldb).astype(dtype)
        c = rng.standard_normal(m * ldc).astype(dtype) if beta else np.full(m * ldc, np.nan, dtype)
        A = a.reshape(a_rows, lda)[:, :a_cols]
        B = b.reshape(b_rows, ldb)[:, :b_cols]
        before = c.reshape(m, ldc).copy()
        expected = 0.5 * (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
        if beta:
            expected += beta * before[:, :n]
        gemm_call(trans_a, trans_b, m, n, k, 0.5, a, lda, b, ldb, beta, c, ldc)
        got = c.reshape(m, ldc)
        close(got[:, :n], expected, dtype)
        # the padding between rows is never written
        np.testing.assert_array_equal(got[:, n:], before[:, n:])


def test_dense_backward_matches_central_differences():
    x, w, b, dout = randn(3, 5), randn(5, 4), randn(4), randn(3, 4)
    out = np.empty((3, 4))

    def loss():
        K.dense_forward_into(x, w, b, out)
        return float(np.sum(out * dout))
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    K.dense_backward_into(dout, x, w, dx, dw, db)
    for grad, param in [(dx, x), (dw, w), (db, b)]:
        assert rel_error(grad, numeric_grad(loss, param)) < 1e-6


# -- activations, softmax ------------------------------------------------------------------------

# (name, forward, backward, reference forward, derivative as a function of the output y)
ACTIVATIONS = [
    ("relu", K.relu_forward_into, K.relu_backward_into, R.relu_forward, lambda y: y > 0),
    ("sigmoid", K.sigmoid_forward_into, K.sigmoid_backward_into, R.sigmoid_forward,
     lambda y: y * (1 - y)),
    ("tanh", K.tanh_forward_into, K.tanh_backward_into, R.tanh_forward, lambda y: 1 - y * y),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,fwd,bwd,rf,deriv", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activations(name, fwd, bwd, rf, deriv, dtype):
    x = randn(3, 4, 5, dtype=dtype) * 3
    x[0, 0, :3] = [0.0, 40.0, -40.0]                # relu's kink; sigmoid/tanh saturation
    out = np.empty_like(x)
    fwd(x, out)
    close(out, rf(x), dtype)
    # the backward is a function of the forward's output; computing the derivative from y
    # (rather than x) is what it tests: 1 - y*y near saturation amplifies y's last-bit
    # differences between libm's and NumPy's tanh, so each side uses the same y.
    dout = randn(*x.shape, dtype=dtype)
    want = dout.astype(np.float64) * deriv(out.astype(np.float64))
    dx = np.empty_like(x)
    bwd(dout, out, dx)
    close(dx, want, dtype)
    bwd(dout, out, dx, accumulate=True)
    close(dx, 2 * want, dtype)
    g = dout.copy()
    bwd(g, out, g)                                   # in place: dx is dout
    close(g, want, dtype)
    y = x.copy()
    fwd(y, y)                                        # in place
    close(y, rf(x), dtype)


def test_relu_gradient_is_zero_at_zero():
    x = np.array([-1.0, 0.0, 2.0])
    dx = np.empty(3)
    K.relu_backward_into(np.ones(3), x, dx)
    assert dx.tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5])
def test_leaky_relu(slope, dtype):
    x = randn(4, 6, dtype=dtype)
    x[0, 0] = 0
    out = np.empty_like(x)
    K.leaky_relu_forward_into(x, slope, out)
    close(out, R.leaky_relu_forward(x, slope), dtype)
    dout, dx = randn(4, 6, dtype=dtype), np.empty_like(x)
    K.leaky_relu_backward_into(dout, x, slope, dx)
    close(dx, R.leaky_relu_backward(dout, x, slope), dtype)
    K.leaky_relu_backward_into(dout, x, slope, dout)         # in place
    close(dout, dx, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,scale", [((4, 10), 1.0), ((3, 5), 1e4), ((2, 3, 4, 5), 2.0),
                                         ((1, 7, 6), 1e4)])
def test_softmax(shape, scale, dtype):
    x = randn(*shape, dtype=dtype) * dtype(scale)
    out = np.empty_like(x)
    K.softmax_forward_into(x, out)
    assert np.all(np.isfinite(out))
    close(out, R.softmax_forward(x), dtype)
    dout, dx = randn(*shape, dtype=dtype), np.empty_like(x)
    K.softmax_backward_into(dout, out, dx)
    close(dx, R.softmax_backward(dout, x), dtype)


def test_activation_backward_matches_central_differences():
    x = randn(2, 3, 4)
    x[np.abs(x) < 1e-3] = 0.5                       # away from relu's kink
    dout = randn(2, 3, 4)
    out, dx = np.empty_like(x), np.empty_like(x)
    cases = [(K.relu_forward_into, K.relu_backward_into),
             (K.sigmoid_forward_into, K.sigmoid_backward_into),
             (K.tanh_forward_into, K.tanh_backward_into),
             (K.softmax_forward_into, K.softmax_backward_into),
             (lambda a, o: K.leaky_relu_forward_into(a, 0.1, o),
              lambda g, y, d: K.leaky_relu_backward_into(g, y, 0.1, d))]
    for fwd, bwd in cases:
        def loss():
            fwd(x, out)
            return float(np.sum(out * dout))
        fwd(x, out)
        bwd(dout, out, dx)
        assert rel_error(dx, numeric_grad(loss, x)) < 1e-6


# -- losses --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,scale", [(8, 10, 1.0), (1, 3, 1.0), (5, 4, 1e4)])
def test_softmax_cross_entropy(n, k, scale, dtype):
    z = randn(n, k, dtype=dtype) * dtype(scale)
    y = rng.integers(0, k, n)
    d = np.empty_like(z)
    loss = K.softmax_cross_entropy_into(z, y, d)
    rloss, rd = R.softmax_cross_entropy(z, y)
    assert np.isfinite(loss) and abs(loss - rloss) <= TOL[dtype] * max(1, abs(rloss))
    close(d, rd, dtype)


def test_softmax_cross_entropy_gradient_and_bad_labels():
    z, y = randn(4, 5), np.array([0, 4, 2, 2])
    d = np.empty_like(z)
    K.softmax_cross_entropy_into(z, y, d)
    assert rel_error(d, numeric_grad(lambda: K.softmax_cross_entropy_into(z, y, np.empty_like(z)),
                                     z)) < 1e-6
    with pytest.raises(ValueError, match="label 5"):
        K.softmax_cross_entropy_into(z, np.array([0, 5, 1, 1]), d)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse(dtype):
    p, t = randn(4, 3, 2, dtype=dtype), randn(4, 3, 2, dtype=dtype)
    d = np.empty_like(p)
    loss = K.mse_loss_into(p, t, d)
    rloss, rd = R.mse_loss(p, t)
    assert abs(loss - rloss) <= TOL[dtype] * rloss
    close(d, rd, dtype)
    if dtype == np.float64:
        assert rel_error(d, numeric_grad(lambda: K.mse_loss_into(p, t, np.empty_like(p)), p)) < 1e-6


# -- batch normalisation -------------------------------------------------------------------------

BN_SHAPES = [(8, 5), (4, 3, 5, 6), (2, 4, 9), (1, 2, 3, 3), (16, 8, 32, 32)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_training(shape, dtype):
    c = shape[1]
    x = randn(*shape, dtype=dtype) * dtype(3) + dtype(100)   # a large mean
    gamma, beta = randn(c, dtype=dtype), randn(c, dtype=dtype)
    rm, rv = randn(c, dtype=dtype), np.abs(randn(c, dtype=dtype)) + 1
    rm0, rv0 = rm.copy(), rv.copy()
    out, mean, invstd = np.empty_like(x), np.empty(c), np.empty(c)
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, rm, rv, out, mean, invstd)
    close(out, R.batchnorm_forward(x, gamma, beta, 1e-5), dtype)
    erm, erv = R.batchnorm_running_update(x, rm0, rv0, 0.1)
    close(rm, erm, dtype)
    close(rv, erv, dtype)

    dout = randn(*shape, dtype=dtype)
    rdx, rdg, rdb = R.batchnorm_backward(dout, x, gamma, beta, 1e-5)
    dx, dg, db = np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
    K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dg, db)
    close(dx, rdx, dtype)
    close(dg, rdg, dtype)
    close(db, rdb, dtype)
    K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, None, None, accumulate=True)
    close(dx, 2 * rdx, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_fused_relu(shape, dtype):
    """relu(batchnorm(x)) in one call, and its backward from the relu's output gradient: the
    NumPy references chained, and bit for bit the two kernels one after the other."""
    c = shape[1]
    x = randn(*shape, dtype=dtype) * dtype(3) + dtype(100)
    gamma, beta = randn(c, dtype=dtype), randn(c, dtype=dtype)
    beta[-1] = 0                                    # the last channel: some outputs <= 0, relu 0
    x.flat[1] = np.nan                              # NaN goes through, as relu lets it
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    y, mean, invstd = np.empty_like(x), np.empty(c), np.empty(c)
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, rm, rv, y, mean, invstd, relu=True)
    bn, y2, mean2, invstd2 = np.empty_like(x), np.empty_like(x), np.empty(c), np.empty(c)
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, rm2, rv2, bn, mean2, invstd2)
    K.relu_forward_into(bn, y2)
    assert np.array_equal(y, y2, equal_nan=True) and np.array_equal(rm, rm2, equal_nan=True)
    assert np.array_equal(mean, mean2, equal_nan=True) and np.array_equal(invstd, invstd2, equal_nan=True)
    assert (y >= 0).sum() + np.isnan(y).sum() == y.size and (y[:, -1] == 0).any()

    x.flat[1] = 0.5                                 # finite, for the references
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, None, None, y, mean, invstd, relu=True)
    close(y, R.relu_forward(R.batchnorm_forward(x, gamma, beta, 1e-5)), dtype)
    dout = randn(*shape, dtype=dtype)
    dbn = R.relu_backward(dout, R.batchnorm_forward(x, gamma, beta, 1e-5))
    rdx, rdg, rdb = R.batchnorm_backward(dbn, x, gamma, beta, 1e-5)
    dx, dg, db = np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
    K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dg, db, relu_y=y)
    close(dx, rdx, dtype)
    close(dg, rdg, dtype)
    close(db, rdb, dtype)
    g2, dx2, dg2, db2 = np.empty_like(x), np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
    K.relu_backward_into(dout, y, g2)
    K.batchnorm_backward_into(g2, x, gamma, mean, invstd, dx2, dg2, db2)
    assert np.array_equal(dx, dx2) and np.array_equal(dg, dg2) and np.array_equal(db, db2)
    K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, None, None, accumulate=True,
                              relu_y=y)
    close(dx, 2 * rdx, dtype)
    K.batchnorm_backward_into(dout, x, gamma, mean, invstd, None, dg, None, relu_y=y)
    assert np.array_equal(dg, dg2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_fused_relu6(shape, dtype):
    """relu6(batchnorm(x)) in one call (outputs on both sides of 0 and 6, a NaN) and its
    backward from relu6's output: bit for bit batchnorm, relu6_forward_into and
    relu6_backward_into (which takes relu6's input) then batchnorm's backward.  Its own random
    numbers (a failure does not depend on the tests before); the float64 gradients against NumPy
    relative to their scale, 1e-10: the input's mean of 100 costs ~3 digits (200 seeds: at most
    1.7e-12; element by element, gradients near 0 read 1e-9 and more)."""
    c = shape[1]
    local = np.random.default_rng(len(shape) * 100 + shape[-1])

    def draw(*size):
        return local.standard_normal(size).astype(dtype)

    def near(a, b):
        if dtype == np.float64:
            assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b)), np.max(np.abs(a - b))
        else:
            close(a, b, dtype)

    x = draw(*shape) * dtype(3) + dtype(100)
    gamma, beta = draw(c) * dtype(5), draw(c) + dtype(2)
    x.flat[1] = np.nan
    y, mean, invstd = np.empty_like(x), np.empty(c), np.empty(c)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, rm, rv, y, mean, invstd, relu6=True)
    bn, y2, mean2, invstd2 = np.empty_like(x), np.empty_like(x), np.empty(c), np.empty(c)
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, None, None, bn, mean2, invstd2)
    K.relu6_forward_into(bn, y2)
    assert np.array_equal(y, y2, equal_nan=True)
    assert np.array_equal(mean, mean2, equal_nan=True) and np.array_equal(invstd, invstd2, equal_nan=True)

    x.flat[1] = 0.5
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, None, None, y, mean, invstd, relu6=True)
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, None, None, bn, mean, invstd)
    if x.size > 100:
        assert (y == 6).any() and (y == 0).any() and ((y > 0) & (y < 6)).any()
    close(y, np.clip(R.batchnorm_forward(x, gamma, beta, 1e-5), 0, 6), dtype)
    dout = draw(*shape)
    dx, dg, db = np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
    K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dg, db, relu_y=y, relu6=True)
    g2, dx2, dg2, db2 = np.empty_like(x), np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
    K.relu6_backward_into(dout, bn, g2)
    K.batchnorm_backward_into(g2, x, gamma, mean, invstd, dx2, dg2, db2)
    assert np.array_equal(dx, dx2) and np.array_equal(dg, dg2) and np.array_equal(db, db2)
    rdx, rdg, rdb = R.batchnorm_backward(np.where((bn > 0) & (bn < 6), dout, 0), x, gamma, beta, 1e-5)
    near(dx, rdx)
    near(dg, rdg)
    near(db, rdb)
    K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, None, None, accumulate=True,
                              relu_y=y, relu6=True)
    near(dx, 2 * rdx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 3, 5, 7), (8, 96, 32, 32), (12, 7), (9, 4, 3, 1)], ids=str)
def test_batchnorm_block_sums_in_memory_order_are_the_channel_order_bits(shape, dtype):
    """The backward's block sums read sample by sample (norm._grad_sums_blocks) add the same
    numbers in the same order as the sums channel by channel (norm._block_centred_sums): bit for
    bit, plain, after a relu and after a relu6, with planes that end in a partial vector."""
    from cnnspec.kernels import norm

    rng = np.random.default_rng(11)
    n, c = shape[0], shape[1]
    x3 = (rng.standard_normal(shape) * 3 + 1).astype(dtype).reshape(n, c, -1)
    g3 = rng.standard_normal(x3.shape).astype(dtype)
    y3 = (rng.standard_normal(x3.shape) * 4 + 2).astype(dtype)
    mean = rng.standard_normal(c)
    nb = min(n, 8)
    for y, six in ((np.empty((0, 0, 0), dtype), False), (y3, False), (y3, True)):
        part = np.full((nb, c, 2), np.nan)
        norm._grad_sums_blocks(g3, x3, mean, y, six, part, n, 0, nb, 0, nb)
        for b in range(nb):
            for ch in range(c):
                expect = norm._block_centred_sums(x3, ch, b * n // nb, (b + 1) * n // nb, mean[ch],
                                                  g3, y, six)
                assert (part[b, ch, 0], part[b, ch, 1]) == expect, (b, ch, six, y.size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES[:3], ids=str)
def test_batchnorm_evaluation(shape, dtype):
    c = shape[1]
    x, gamma, beta = randn(*shape, dtype=dtype), randn(c, dtype=dtype), randn(c, dtype=dtype)
    rm, rv = randn(c, dtype=dtype), np.abs(randn(c, dtype=dtype)) + 0.5
    out = np.empty_like(x)
    K.batchnorm_forward_eval_into(x, gamma, beta, 1e-5, rm, rv, out)
    close(out, R.batchnorm_forward_eval(x, gamma, beta, 1e-5, rm, rv), dtype)


def test_batchnorm_backward_matches_central_differences():
    for shape in [(4, 3), (2, 3, 2, 2)]:
        c = shape[1]
        x, gamma, beta, dout = randn(*shape), randn(c), randn(c), randn(*shape)
        rm, rv = randn(c), np.abs(randn(c)) + 0.5
        out, mean, invstd = np.empty_like(x), np.empty(c), np.empty(c)

        def train_loss():
            K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, None, None, out, mean,
                                           invstd)
            return float(np.sum(out * dout))

        def eval_loss():
            K.batchnorm_forward_eval_into(x, gamma, beta, 1e-5, rm, rv, out)
            return float(np.sum(out * dout))

        train_loss()
        dx, dg, db = np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
        K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dg, db)
        for grad, param in [(dx, x), (dg, gamma), (db, beta)]:
            assert rel_error(grad, numeric_grad(train_loss, param)) < 1e-6
        K.batchnorm_backward_eval_into(dout, x, gamma, 1e-5, rm, rv, dx, dg, db)
        for grad, param in [(dx, x), (dg, gamma), (db, beta)]:
            assert rel_error(grad, numeric_grad(eval_loss, param)) < 1e-6


# -- dropout, add, concat ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_relu(dtype):
    """relu(a + b) in one pass: the references chained, and bit for bit add then relu (a big
    tensor runs on the threads)."""
    for shape in [(3, 5, 7), (1, 2), (2, 16, 91, 93)]:
        a, b = randn(*shape, dtype=dtype), randn(*shape, dtype=dtype)
        a.flat[0] = np.nan
        a.flat[-1] = -b.flat[-1]                          # a sum of exactly 0
        out, y, y2 = np.empty_like(a), np.empty_like(a), np.empty_like(a)
        K.add_relu_into(a, b, out)
        K.add_into(a, b, y)
        K.relu_forward_into(y, y2)
        assert np.array_equal(out, y2, equal_nan=True) and np.isnan(out.flat[0]) and out.flat[-1] == 0
        close(out.reshape(-1)[1:], R.relu_forward(a.astype(np.float64) + b).reshape(-1)[1:], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dropout(p, dtype):
    x = randn(3, 4, 5, dtype=dtype)
    mask = rng.random(x.shape) >= p
    out, dx = np.empty_like(x), np.empty_like(x)
    K.dropout_forward_into(x, mask, p, out)
    close(out, R.dropout_forward(x, p, mask), dtype)
    K.dropout_backward_into(x, mask, p, dx)
    close(dx, R.dropout_backward(x, p, mask), dtype)
    K.dropout_backward_into(x, mask, p, dx, accumulate=True)
    close(dx, 2 * R.dropout_backward(x, p, mask), dtype)
    g = x.copy()
    K.dropout_backward_into(g, mask, p, g)                   # in place
    close(g, R.dropout_backward(x, p, mask), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_and_concat(dtype):
    a, b = randn(2, 3, 4, 4, dtype=dtype), randn(2, 3, 4, 4, dtype=dtype)
    out = np.empty_like(a)
    K.add_into(a, b, out)
    close(out, a + b, dtype)
    K.accumulate_into(a, out)
    close(out, 2 * a + b, dtype)

    xs = [randn(2, c, 4, 4, dtype=dtype) for c in (1, 3, 2)]
    cat = np.empty((2, 6, 4, 4), dtype)
    K.concat_forward_into(xs, cat)
    close(cat, R.concat_forward(xs), dtype)
    dout = randn(2, 6, 4, 4, dtype=dtype)
    dxs = [np.empty_like(x) for x in xs]
    K.concat_backward_into(dout, dxs)
    for got, want in zip(dxs, R.concat_backward(dout, [1, 3, 2])):
        close(got, want, dtype)
    K.concat_backward_into(dout, [1, dxs[1], dxs[2]], accumulate=True)   # int: skip input 0
    close(dxs[1], 2 * R.concat_backward(dout, [1, 3, 2])[1], dtype)


def test_threads_give_reproducible_results(monkeypatch):
    """Static split, partial sums added in thread order: two runs give identical bits, and
    one thread agrees with two to rounding."""
    case = CONV_CASES[15]
    stride, pad, dil, groups = case[7:11]
    x, w, b, out, ws = run_conv(case, np.float64)
    dout = randn(*out.shape)
    grads = []
    for threads in ("2", "2", "1"):
        monkeypatch.setenv("CNNSPEC_THREADS", threads)
        o = np.empty_like(out)
        ws2 = np.empty(K.conv2d_workspace_size(x.shape, w.shape, stride, pad, dil, groups))
        K.conv2d_forward_into(x, w, b, stride, pad, dil, groups, o, ws2)
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        K.conv2d_backward_into(dout, x, w, stride, pad, dil, groups, dx, dw, db, ws2)
        grads.append((o, dx, dw, db))
    for a, b_, c in zip(*grads):
        assert np.array_equal(a, b_)
        assert rel_error(a, c) < 1e-9
