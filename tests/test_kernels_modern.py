"""The kernels of dsl.md §10's layers against the plain NumPy reference (reference.py) and against
central differences of their own forward.

Every kernel compiles once per dtype: all cases of a family share one numba signature (tuples of
ints, C-contiguous arrays, the same argument types whether a bias or gradient is given or not).
"""
import numpy as np
import pytest

from cnnspec import kernels as K
from cnnspec.kernels import reference as R
from cnnspec.kernels.conv import _is_depthwise
from conftest import numeric_grad
from test_kernels import DTYPES, close, rel_error

rng = np.random.default_rng(2024)


def randn(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# -- transposed convolution ----------------------------------------------------------------------

# (N, C, H, W, F, KH, KW, stride, pad (t, b, l, r), output_pad, dilation, groups, bias)
CONVT_CASES = [
    (2, 3, 4, 5, 4, 3, 3, (1, 1), (0, 0, 0, 0), (0, 0), (1, 1), 1, True),      # plain
    (2, 8, 4, 4, 32, 4, 4, (2, 2), (1, 1, 1, 1), (0, 0), (1, 1), 1, True),     # DCGAN's 4x4/2
    (1, 4, 5, 3, 6, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), (1, 1), 1, True),      # auto-encoder's
    (2, 4, 3, 4, 6, 3, 2, (3, 2), (2, 0, 1, 0), (2, 1), (1, 1), 2, False),     # op > pad: crop
    (2, 6, 5, 5, 6, 3, 3, (2, 1), (1, 1, 1, 1), (1, 0), (1, 1), 6, True),      # depthwise
    (1, 4, 3, 5, 4, 2, 3, (1, 2), (0, 1, 2, 0), (1, 0), (3, 1), 2, True),      # op >= stride < dil
    (2, 5, 4, 3, 3, 1, 1, (2, 3), (0, 0, 0, 0), (1, 2), (1, 1), 1, True),      # 1x1 < stride
    (2, 3, 3, 4, 5, 2, 3, (3, 3), (0, 0, 1, 0), (0, 2), (1, 1), 1, True),      # kernel < stride
    (3, 32, 3, 3, 16, 3, 3, (1, 1), (1, 1, 1, 1), (0, 0), (2, 2), 1, True),    # wide, dilation
    (2, 3, 1, 7, 4, 1, 3, (1, 2), (0, 0, 1, 2), (0, 1), (1, 2), 1, True),      # 1-D as H = 1
    (1, 2, 1, 1, 2, 1, 1, (1, 1), (1, 0, 0, 0), (1, 0), (2, 1), 1, True),      # all cropped: bias
    (1, 1, 2, 2, 1, 2, 2, (2, 2), (0, 0, 0, 0), (0, 0), (1, 1), 1, False),     # lecture-sized
]


def convt_id(case):
    n, c, h, w, f, kh, kw, s, p, op, d, g, bias = case
    return (f"{n}x{c}x{h}x{w}-{f}f{kh}x{kw}-s{s[0]}{s[1]}-p{''.join(map(str, p))}"
            f"-op{op[0]}{op[1]}-d{d[0]}{d[1]}-g{g}{'' if bias else '-nobias'}")


def run_convt(case, dtype):
    n, c, h, w, f, kh, kw, stride, pad, op, dil, groups, bias = case
    x, wt = randn(n, c, h, w, dtype=dtype), randn(c, f // groups, kh, kw, dtype=dtype)
    b = randn(f, dtype=dtype) if bias else None
    shape = K.conv_transpose2d_output_shape(x.shape, wt.shape, stride, pad, op, dil, groups)
    ws = np.full(K.conv_transpose2d_workspace_size(x.shape, wt.shape, stride, pad, op, dil,
                                                   groups), np.nan, dtype)
    out = np.full(shape, np.nan, dtype)
    K.conv_transpose2d_forward_into(x, wt, b, stride, pad, op, dil, groups, out, ws)
    return x, wt, b, out, ws


def check_convt_backward(case, x, w, b, out, ws, dtype):
    """conv_transpose2d_backward_into against the reference: dx, dw, db (outputs start NaN), and
    dx accumulated (dw and db None: not computed); returns dout and the reference dw."""
    stride, pad, op, dil, groups = case[7:12]
    dout = randn(*out.shape, dtype=dtype)
    rdx, rdw, rdb = R.conv_transpose2d_backward(dout, x, w, b, stride, pad, op, dil, groups)
    dx, dw = np.full_like(x, np.nan), np.full_like(w, np.nan)
    db = None if b is None else np.full_like(b, np.nan)
    K.conv_transpose2d_backward_into(dout, x, w, stride, pad, op, dil, groups, dx, dw, db, ws)
    close(dx, rdx, dtype)
    close(dw, rdw, dtype)
    if b is not None:
        close(db, rdb, dtype)
    dx2 = np.ones_like(x)
    K.conv_transpose2d_backward_into(dout, x, w, stride, pad, op, dil, groups, dx2, None, None,
                                     ws, accumulate=True)
    close(dx2 - 1, rdx, dtype)
    return dout, rdw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONVT_CASES, ids=convt_id)
def test_conv_transpose_matches_reference(case, dtype):
    stride, pad, op, dil, groups = case[7:12]
    x, w, b, out, ws = run_convt(case, dtype)
    close(out, R.conv_transpose2d_forward(x, w, b, stride, pad, op, dil, groups), dtype)

    check_convt_backward(case, x, w, b, out, ws, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in CONVT_CASES if c[11] == 1], ids=convt_id)
def test_conv_transpose_input_gradient_by_the_direct_convolution_kernels(case, dtype,
                                                                          monkeypatch):
    """dx alone on conv.py's direct kernels (the adjoint convolution's forward), however small
    the layer: where the output padding reaches the stride (or the kernel is smaller than the
    stride) it stays on the products, as dx with dw and an accumulated dx do."""
    from cnnspec.kernels import conv, conv_transpose
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    n, c, h, w_, f, kh, kw, stride, pad, op, dil, groups, bias = case
    x, w, b, out, ws = run_convt(case, dtype)
    routed = conv_transpose._adjoint_plan(out.shape, x.shape, w.shape, stride, pad, dil, groups)
    # not where the convolution would be IM2COL (a kernel smaller than the stride)
    assert (routed is not None) is (op[0] < stride[0] <= kh and op[1] < stride[1] <= kw), case
    dout = randn(*out.shape, dtype=dtype)
    rdx, rdw, rdb = R.conv_transpose2d_backward(dout, x, w, b, stride, pad, op, dil, groups)
    dx = np.full_like(x, np.nan)
    db = None if b is None else np.full_like(b, np.nan)
    K.conv_transpose2d_backward_into(dout, x, w, stride, pad, op, dil, groups, dx, None, db, ws)
    close(dx, rdx, dtype)
    if b is not None:
        close(db, rdb, dtype)
    dx2 = np.ones_like(x)                    # accumulate: on the products, added
    K.conv_transpose2d_backward_into(dout, x, w, stride, pad, op, dil, groups, dx2, None, None,
                                     ws, accumulate=True)
    close(dx2 - 1, rdx, dtype)


# groups-1 cases whose input has a multiple of 16 channels (the adjoint convolution's filters)
ADJOINT_DW_CASES = [
    (3, 16, 5, 6, 7, 4, 4, (2, 2), (1, 1, 1, 1), (0, 0), (1, 1), 1, True),     # DCGAN's 4x4/2
    (2, 32, 4, 4, 16, 2, 2, (2, 2), (0, 0, 0, 0), (0, 0), (1, 1), 1, False),   # U-Net's 2x2/2
    (2, 16, 5, 4, 5, 3, 3, (2, 1), (1, 0, 1, 1), (1, 0), (1, 1), 1, True),     # odd, output pad
    (2, 16, 5, 5, 4, 3, 3, (1, 1), (1, 1, 2, 2), (0, 0), (1, 2), 1, True),     # dilated
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADJOINT_DW_CASES, ids=convt_id)
def test_conv_transpose_without_avx512_by_the_adjoint_convolution(case, dtype, monkeypatch):
    """Without AVX-512, dx with dw on the adjoint convolution's kernels, however small the layer:
    dx its direct forward, dw its weight gradient with the filters in the lanes (x's channels a
    multiple of 16: conv_direct.weight_grad_lanes); dw alone too; the same bits as the adjoint
    convolution's own calls, and the reference."""
    from cnnspec.kernels import conv, conv_transpose
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_WIDE_VECTORS", False)
    stride, pad, op, dil, groups = case[7:12]
    x, w, b, out, ws = run_convt(case, dtype)
    adjoint = conv_transpose._adjoint_plan(out.shape, x.shape, w.shape, stride, pad, dil, groups)
    assert adjoint is not None and adjoint.lanes_dw is not None
    dout, rdw = check_convt_backward(case, x, w, b, out, ws, dtype)
    dx, dw = np.empty_like(x), np.full_like(w, np.nan)
    K.conv_transpose2d_backward_into(dout, x, w, stride, pad, op, dil, groups, dx, dw, None, ws)
    want_dx, want_dw = np.empty_like(x), np.empty_like(w)
    K.conv2d_forward_into(dout, w, None, stride, pad, dil, 1, want_dx, ws)
    K.conv2d_backward_into(x, dout, w, stride, pad, dil, 1, None, want_dw, None, ws)
    assert np.array_equal(dx, want_dx) and np.array_equal(dw, want_dw)
    dw2 = np.full_like(w, np.nan)            # dw alone
    K.conv_transpose2d_backward_into(dout, x, w, stride, pad, op, dil, groups, None, dw2, None,
                                     ws)
    assert np.array_equal(dw2, want_dw)
    close(dw2, rdw, dtype)


@pytest.fixture
def own_rng(monkeypatch):
    """The test's own random stream: the module's shared one, from which the later tests draw
    their data, stays as it was without the test."""
    monkeypatch.setitem(globals(), "rng", np.random.default_rng(16))


# groups-1 cases for the samples-in-lanes kernels: batches that are not a multiple of the lanes
# (16 float32, 8 float64), filters not a multiple of the block of 8, odd sizes, batch 1
LANES_CASES = [c for c in CONVT_CASES if c[11] == 1] + [
    (17, 8, 4, 4, 12, 4, 4, (2, 2), (1, 1, 1, 1), (0, 0), (1, 1), 1, True),     # DCGAN's, 2 chunks
    (9, 5, 3, 5, 7, 3, 2, (2, 3), (1, 0, 2, 1), (1, 2), (1, 1), 1, False),     # odd, op > pad
    (16, 3, 5, 4, 9, 2, 2, (2, 2), (0, 0, 0, 0), (0, 0), (1, 1), 1, True),     # U-Net's 2x2/2
]


@pytest.mark.parametrize("dtype, threads", [(np.float64, "1"), (np.float32, "2")])
@pytest.mark.parametrize("case", LANES_CASES, ids=convt_id)
def test_conv_transpose_by_the_lanes_kernels(case, dtype, threads, monkeypatch, own_rng):
    """The forward and dx by conv_lanes.py (samples in the vector lanes), dw by its
    weight_grad_rows on the adjoint convolution (the width not dilated), however small the
    layer, on 1 and 2 threads."""
    from cnnspec.kernels import conv_transpose
    monkeypatch.setenv("CNNSPEC_THREADS", threads)
    monkeypatch.setattr(conv_transpose, "_LANES", True)
    monkeypatch.setattr(conv_transpose, "_DW_ROWS", True)
    stride, pad, op, dil, groups = case[7:12]
    x, w, b, out, ws = run_convt(case, dtype)
    assert conv_transpose._lanes_geometry("forward", x.shape, w.shape, stride, pad, dil, 1,
                                          out.shape, dtype) is not None
    close(out, R.conv_transpose2d_forward(x, w, b, stride, pad, op, dil, groups), dtype)
    dout, rdw = check_convt_backward(case, x, w, b, out, ws, dtype)
    dw2 = np.full_like(w, np.nan)            # dw alone
    K.conv_transpose2d_backward_into(dout, x, w, stride, pad, op, dil, groups, None, dw2, None,
                                     ws)
    close(dw2, rdw, dtype)


@pytest.mark.parametrize("blocks", [False, True], ids=["whole", "blocks"])
@pytest.mark.parametrize("dtype, threads", [(np.float64, "1"), (np.float32, "2")])
@pytest.mark.parametrize("case", [c for c in CONVT_CASES if c[11] == 1], ids=convt_id)
def test_conv_transpose_forward_by_the_products_in_lanes(case, dtype, threads, blocks,
                                                          monkeypatch, own_rng):
    """The forward's products with the samples in the vector lanes (_forward_lanes) for the
    whole chunks of a batch one sample past them (the last sample by the products), on 1 and 2
    threads, with col for every filter at once and in blocks of two filters; against the
    reference, into a NaN output and workspace; the same values again, and added to an output
    (``accumulate``)."""
    from cnnspec.kernels import conv_transpose as T
    from cnnspec.kernels._simd import lanes_of
    monkeypatch.setenv("CNNSPEC_THREADS", threads)
    monkeypatch.setattr(T, "_LANES", False)
    monkeypatch.setattr(T, "_LANE_PRODUCTS", True)
    lanes = lanes_of(dtype)
    case = (lanes * (1 if dtype == np.float64 else 2) + 1,) + case[1:]
    stride, pad, op, dil, groups = case[7:12]
    if blocks:                  # col for two filters at a time (the last block may hold one)
        monkeypatch.setattr(T, "_LANE_COL", 2 * case[5] * case[6] * case[2] * case[3] * lanes)
    x, w, b, out, ws = run_convt(case, dtype)
    assert T._lane_chunks(x.shape, w.shape, stride, dil, groups, dtype)[0] == x.shape[0] // lanes
    ref = R.conv_transpose2d_forward(x, w, b, stride, pad, op, dil, groups)
    close(out, ref, dtype)
    again = np.full_like(out, np.nan)
    K.conv_transpose2d_forward_into(x, w, b, stride, pad, op, dil, groups, again, ws)
    assert np.array_equal(again, out)
    K.conv_transpose2d_forward_into(x, w, b, stride, pad, op, dil, groups, again, ws,
                                    accumulate=True)
    close(again, 2 * ref, dtype)


@pytest.mark.parametrize("lanes", [True, False])
def test_conv_transpose_workspace_too_small_is_refused(lanes, monkeypatch):
    """A workspace smaller than conv_transpose2d_workspace_size says so, with both sizes,
    whichever products run (the samples in the lanes or not); out is left as it was."""
    from cnnspec.kernels import conv_transpose as T
    monkeypatch.setattr(T, "_LANES", False)
    monkeypatch.setattr(T, "_LANE_PRODUCTS", lanes)
    x, w = np.ones((17, 8, 4, 4), np.float32), np.ones((8, 12, 4, 4), np.float32)
    geometry = ((2, 2), (1, 1, 1, 1), (0, 0), (1, 1), 1)
    need = K.conv_transpose2d_workspace_size(x.shape, w.shape, *geometry)
    out = np.full(K.conv_transpose2d_output_shape(x.shape, w.shape, *geometry), 7.0, np.float32)
    with pytest.raises(ValueError, match=r"conv_transpose2d workspace too small: 10 elements, "
                                         r"need \d+ \(conv_transpose2d_workspace_size\)"):
        K.conv_transpose2d_forward_into(x, w, None, *geometry, out, np.empty(10, np.float32))
    assert need > 10 and np.all(out == 7.0)


def test_conv_transpose_products_in_lanes_rules(monkeypatch):
    """Where the forward's products run with the samples in the lanes: overlapping taps (DCGAN's
    4x4 stride 2, 3x3 stride 2, a 4x4 kernel on a 1x1 input), whole chunks for each thread; not
    U-Net's 2x2 stride 2 (a tap an output), nor grouped layers, nor a batch below the lanes."""
    from cnnspec.kernels import conv_transpose as T
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    f32 = np.float32

    def chunks(x_shape, w_shape, stride, groups=1, dtype=f32, dilation=(1, 1)):
        return T._lane_chunks(x_shape, w_shape, stride, dilation, groups, dtype)[0]
    assert chunks((64, 128, 8, 8), (128, 64, 4, 4), (2, 2)) == 4
    assert chunks((64, 128, 8, 8), (128, 64, 4, 4), (2, 2), dtype=np.float64) == 8
    assert chunks((40, 64, 16, 16), (64, 32, 3, 3), (2, 2)) == 2
    assert chunks((32, 512, 1, 1), (512, 256, 4, 4), (1, 1)) == 2
    assert chunks((32, 64, 16, 16), (64, 32, 2, 2), (2, 2)) == 0          # U-Net's
    assert chunks((32, 64, 16, 16), (64, 32, 2, 2), (2, 2), dilation=(2, 1)) == 2
    assert chunks((64, 128, 8, 8), (32, 32, 4, 4), (2, 2), groups=4) == 0
    assert chunks((16, 128, 8, 8), (128, 64, 4, 4), (2, 2)) == 0          # a chunk, 2 threads
    assert chunks((15, 128, 8, 8), (128, 64, 4, 4), (2, 2)) == 0
    monkeypatch.setattr(T, "_LANE_PRODUCTS", False)
    assert chunks((64, 128, 8, 8), (128, 64, 4, 4), (2, 2)) == 0


def test_conv_transpose_workspace_size_cached_per_rules(monkeypatch):
    """The workspace size is worked out once per layer, thread count and switch settings: the
    cached value is the one worked out anew under the same settings, and a change of threads or
    switches gets its own."""
    from cnnspec.kernels import conv_transpose as T
    layers = [((17, 8, 4, 4), (8, 12, 4, 4), (2, 2), (1, 1, 1, 1), (0, 0)),
              ((16, 32, 32, 32), (32, 16, 2, 2), (2, 2), (0, 0, 0, 0), (0, 0))]

    def fresh(layer):
        return T._workspace_size.__wrapped__(*layer, (1, 1), 1, None, None)
    for threads, lanes in [("1", None), ("2", None), ("2", False), ("3", True)]:
        monkeypatch.setenv("CNNSPEC_THREADS", threads)
        monkeypatch.setattr(T, "_LANES", lanes)
        for layer in layers:
            assert T.conv_transpose2d_workspace_size(*layer) == fresh(layer)
    monkeypatch.setenv("CNNSPEC_THREADS", "1")
    one = T.conv_transpose2d_workspace_size(*layers[1])
    monkeypatch.setenv("CNNSPEC_THREADS", "3")
    assert T.conv_transpose2d_workspace_size(*layers[1]) > one


# (N, C, H, W, F, KH, KW, stride, pad, dilation): convolutions by conv_lanes.conv_geometry
LANES_CONV_CASES = [
    (3, 5, 7, 6, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (17, 4, 6, 9, 8, 3, 2, (2, 3), (2, 0, 1, 1), (1, 2)),
    (1, 2, 5, 5, 3, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LANES_CONV_CASES)
def test_lanes_convolution_matches_reference(case, dtype, own_rng):
    """conv_lanes.py's gather as a plain convolution (strides, padding, dilation, a batch over
    the lanes and of one sample), into a bias and added to an output."""
    from cnnspec.kernels import conv_lanes
    from cnnspec.kernels._simd import lanes_of
    n, c, h, w_, f, kh, kw, stride, pad, dil = case
    x, w, b = randn(n, c, h, w_, dtype=dtype), randn(f, c, kh, kw, dtype=dtype), randn(f, dtype=dtype)
    shape = K.conv2d_output_shape(x.shape, w.shape, stride, pad, dil)
    geo = conv_lanes.conv_geometry(x.shape, w.shape, stride, pad, dil, shape[2], shape[3],
                                   lanes_of(dtype))
    ws = np.full(conv_lanes.workspace_size(geo, 1), np.nan, dtype)
    out = np.full(shape, np.nan, dtype)
    conv_lanes.run(geo, x, w, b, False, out, ws, 1)
    ref = R.conv2d_forward(x, w, b, stride, pad, dil, 1)
    close(out, ref, dtype)
    conv_lanes.run(geo, x, w, None, True, out, ws, 1)
    close(out - b[:, None, None], 2 * (ref - b[:, None, None]), dtype)


# (kind, x shape, w shape, stride, pad, dilation, output plane): gathers with padding taps
SKIP_CASES = [
    ("forward", (17, 8, 4, 4), (8, 12, 4, 4), (2, 2), (1, 1, 1, 1), (1, 1), (8, 8)),  # DCGAN's
    ("forward", (9, 5, 3, 5), (5, 7, 3, 2), (2, 3), (1, 0, 2, 1), (1, 1), (7, 13)),  # op > 0
    ("conv", (17, 12, 8, 8), (8, 12, 4, 4), (2, 2), (1, 1, 1, 1), (1, 1), (4, 4)),    # its dx
    ("conv", (1, 4, 6, 9), (5, 4, 3, 2), (2, 3), (2, 0, 1, 1), (1, 2), (3, 3)),
    ("conv", (3, 5, 7, 6), (9, 5, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (7, 6)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SKIP_CASES)
def test_gather_without_padding_taps(case, dtype, own_rng):
    """conv_transpose's SkipGather: against the reference, equal to conv_lanes.run's gather,
    which sums the same products plus the padding's zeros (a sum of x and +-0 is x), into a
    bias and added to an output; and fewer multiply-adds than the taps times the positions."""
    from cnnspec.kernels import conv_lanes, conv_transpose
    from cnnspec.kernels._simd import lanes_of
    kind, xs, ws_, stride, pad, dil, (oh, ow) = case
    x, w = randn(*xs, dtype=dtype), randn(*ws_, dtype=dtype)
    f = ws_[1] if kind == "forward" else ws_[0]
    b = randn(f, dtype=dtype)
    args = (xs, ws_, stride, pad, dil, oh, ow, lanes_of(dtype))
    sg = conv_transpose.skip_geometry(kind, *args)
    geo = (conv_lanes.transposed_geometry if kind == "forward" else conv_lanes.conv_geometry)(
        *args)
    taps = geo.kcount @ (geo.pstart[1:] - geo.pstart[:-1])
    assert sg.macs < taps
    ws = np.full(conv_lanes.workspace_size(sg.geo, 2), np.nan, dtype)
    out, lanes = np.full((xs[0], f, oh, ow), np.nan, dtype), np.full((xs[0], f, oh, ow), 0, dtype)
    conv_transpose.skip_run(sg, x, w, b, False, out, ws, 2)
    conv_lanes.run(geo, x, w, b, False, lanes, ws, 1)
    assert np.array_equal(out, lanes)
    if kind == "forward":
        base = K.conv_transpose2d_output_shape(xs, ws_, stride, pad, (0, 0), dil)
        ref = R.conv_transpose2d_forward(x, w, b, stride, pad, (oh - base[2], ow - base[3]), dil,
                                         1)
    else:
        ref = R.conv2d_forward(x, w, b, stride, pad, dil, 1)
    close(out, ref, dtype)
    conv_transpose.skip_run(sg, x, w, None, True, out, ws, 1)
    close(out - b[:, None, None], 2 * (ref - b[:, None, None]), dtype)


def test_vtranspose_moves_every_lane(own_rng):
    from cnnspec.kernels._jit import jit
    from cnnspec.kernels._simd import vtranspose

    @jit
    def transpose(src, si, ss, dst, di, ds, lo, hi, accumulate):
        vtranspose(src, si, ss, dst, di, ds, lo, hi, accumulate)

    for dtype, lanes in ((np.float32, 16), (np.float64, 8)):
        src = randn(600, dtype=dtype)
        dst = np.zeros(900, dtype)
        transpose(src, 3, 37, dst, 5, 50, 2, lanes - 3, False)
        ref = np.zeros(900, dtype)
        for k in range(2, lanes - 3):        # only the vectors lo <= k < hi are stored
            ref[5 + 50 * k:5 + 50 * k + lanes] = src[3 + k:3 + k + 37 * lanes:37]
        assert np.array_equal(dst, ref)
        transpose(src, 3, 37, dst, 5, 50, 0, lanes, True)
        for k in range(lanes):
            ref[5 + 50 * k:5 + 50 * k + lanes] += src[3 + k:3 + k + 37 * lanes:37]
        assert np.array_equal(dst, ref)


def test_conv_transpose_output_sizes_are_pytorchs():
    # (in, kernel, stride, pad, pad, output_pad, dilation) -> PyTorch's ConvTranspose size
    assert K.conv_transpose_output_size(8, 4, 2, 1, 1, 0, 1) == 16           # DCGAN
    assert K.conv_transpose_output_size(7, 3, 2, 1, 1, 1, 1) == 14           # auto-encoder
    assert K.conv_transpose_output_size(5, 3, 1, 0, 0, 0, 2) == 9
    assert K.conv_transpose2d_output_shape((2, 3, 4, 5), (3, 2, 3, 3), (2, 1), (1, 0, 0, 2),
                                           (1, 0), (1, 1), 2) == (2, 4, 9, 5)


@pytest.mark.parametrize("case", [CONVT_CASES[i] for i in (0, 3, 5, 9)], ids=convt_id)
def test_conv_transpose_backward_matches_central_differences(case):
    n, c, h, w_, f, kh, kw, stride, pad, op, dil, groups, bias = case
    x, w, b = randn(1, c, h, w_), randn(c, f // groups, kh, kw), randn(f)
    shape = K.conv_transpose2d_output_shape(x.shape, w.shape, stride, pad, op, dil, groups)
    ws = np.empty(K.conv_transpose2d_workspace_size(x.shape, w.shape, stride, pad, op, dil,
                                                    groups))
    out, dout = np.empty(shape), randn(*shape)

    def loss():
        K.conv_transpose2d_forward_into(x, w, b, stride, pad, op, dil, groups, out, ws)
        return float(np.sum(out * dout))

    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    K.conv_transpose2d_backward_into(dout, x, w, stride, pad, op, dil, groups, dx, dw, db, ws)
    for grad, param in [(dx, x), (dw, w), (db, b)]:
        assert rel_error(grad, numeric_grad(loss, param)) < 1e-6


def test_conv_transpose_workspace_too_small_is_an_error():
    x, w = randn(1, 2, 3, 3), randn(2, 3, 2, 2)
    with pytest.raises(ValueError, match="workspace"):
        K.conv_transpose2d_forward_into(x, w, None, (2, 2), (0, 0, 0, 0), (0, 0), (1, 1), 1,
                                        np.empty((1, 3, 6, 6)), np.empty(1))


# -- depthwise convolution (the conv2d entry points' direct loops) --------------------------------

# (N, C, H, W, m, KH, KW, stride, pad, dilation, bias): F = m*C filters, groups = C
DEPTHWISE_CASES = [
    (2, 6, 9, 9, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False),      # MobileNet's, stride 1
    (2, 5, 9, 8, 1, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), True),       # stride 2, odd/even sizes
    (1, 3, 11, 10, 1, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1), True),     # EfficientNet's 5x5
    (2, 4, 8, 7, 2, 5, 3, (2, 1), (2, 0, 1, 2), (1, 2), True),       # multiplier 2, asymmetric
    (3, 2, 6, 11, 3, 2, 4, (1, 3), (0, 1, 3, 0), (2, 1), False),     # multiplier 3, even kernel
    (2, 3, 10, 10, 1, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), True),     # any kernel size
    (2, 4, 1, 13, 1, 1, 3, (1, 2), (0, 0, 1, 1), (1, 1), True),      # 1-D as H = 1
    (4, 64, 12, 12, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),    # split over threads
]


def dw_id(case):
    n, c, h, w, m, kh, kw, s, p, d, bias = case
    return f"{n}x{c}x{h}x{w}-m{m}-{kh}x{kw}-s{s[0]}{s[1]}-p{''.join(map(str, p))}-d{d[0]}{d[1]}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=dw_id)
def test_depthwise_matches_reference(case, dtype):
    n, c, h, w_, m, kh, kw, stride, pad, dil, bias = case
    x, w = randn(n, c, h, w_, dtype=dtype), randn(c * m, 1, kh, kw, dtype=dtype)
    assert _is_depthwise(x.shape, w.shape, c)
    b = randn(c * m, dtype=dtype) if bias else None
    shape = K.conv2d_output_shape(x.shape, w.shape, stride, pad, dil)
    ws = np.full(K.conv2d_workspace_size(x.shape, w.shape, stride, pad, dil, c), np.nan, dtype)
    out = np.full(shape, np.nan, dtype)
    K.conv2d_forward_into(x, w, b, stride, pad, dil, c, out, ws)
    close(out, R.conv2d_forward(x, w, b, stride, pad, dil, c), dtype)
    dout = randn(*shape, dtype=dtype)
    rdx, rdw, rdb = R.conv2d_backward(dout, x, w, b, stride, pad, dil, c)
    dx, dw = np.full_like(x, np.nan), np.full_like(w, np.nan)
    db = None if b is None else np.full_like(b, np.nan)
    K.conv2d_backward_into(dout, x, w, stride, pad, dil, c, dx, dw, db, ws)
    close(dx, rdx, dtype)
    close(dw, rdw, dtype)
    if bias:
        close(db, rdb, dtype)
    K.conv2d_backward_into(dout, x, w, stride, pad, dil, c, dx, None, None, ws, accumulate=True)
    close(dx, 2 * rdx, dtype)
    dw2 = np.full_like(w, np.nan)            # dw alone: no dx computed
    K.conv2d_backward_into(dout, x, w, stride, pad, dil, c, None, dw2, None, ws)
    close(dw2, rdw, dtype)


# the flat kernels (depthwise.flat_ok: one filter per channel, ceil(W / sw) <= OW): blocks of four
# samples and single ones (N = 5, 9), planes of one vector or less and of several with a partial
# last one, strides (2, 2), (1, 2), (3, 3) and odd widths (the phase copies' vector tails),
# dilation, more padding than the kernel needs, a row (H = 1);
# (N, C, H, W, KH, KW, stride, pad, dilation)
FLAT_CASES = [
    (5, 3, 9, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 2, 28, 28, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (9, 3, 8, 8, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (6, 5, 8, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (4, 2, 17, 35, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (3, 2, 11, 10, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1)),
    (2, 3, 10, 12, 3, 3, (1, 2), (2, 1, 1, 2), (1, 1)),
    (4, 2, 9, 9, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    (4, 2, 9, 9, 3, 3, (1, 1), (2, 2, 3, 3), (1, 1)),
    (5, 2, 13, 6, 3, 3, (3, 3), (1, 1, 1, 1), (1, 1)),
    (2, 3, 1, 13, 1, 3, (1, 2), (0, 0, 1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FLAT_CASES, ids=str)
def test_depthwise_flat_kernels(case, dtype, monkeypatch):
    """The flat kernels, strided ones by gathers and by their stride phases' copies, planes of
    up to 8x8 by the small planes' forward and without it, against the reference and against
    the wide grid's loops (depthwise._FLAT off), with outputs between sentinels: nothing
    written outside them."""
    from cnnspec.kernels import depthwise as D
    n, c, h, w_, kh, kw, stride, pad, dil = case
    x, w = randn(n, c, h, w_, dtype=dtype), randn(c, 1, kh, kw, dtype=dtype)
    b = randn(c, dtype=dtype)
    assert D.flat_ok(x.shape, w.shape, stride, pad, dil)
    shape = K.conv2d_output_shape(x.shape, w.shape, stride, pad, dil)
    dout = randn(*shape, dtype=dtype)
    results = []
    modes = [(True, True, True), (True, True, False), (True, False, False)]
    if stride == (1, 1):
        modes = [(True, None, True), (True, None, False)]
    for flat, gathers, small in modes + [(False, None, False)]:
        monkeypatch.setattr(D, "_FLAT", flat)
        monkeypatch.setattr(D, "_GATHERS", gathers)
        monkeypatch.setattr(D, "_SMALL", small)
        ws = np.full(K.conv2d_workspace_size(x.shape, w.shape, stride, pad, dil, c) + 64, np.nan,
                     dtype)
        big = np.full((n + 2,) + shape[1:], 7.0, dtype)      # sentinels: samples 0 and n + 1
        out = big[1:n + 1]
        K.conv2d_forward_into(x, w, b, stride, pad, dil, c, out, ws)
        assert np.all(big[0] == 7.0) and np.all(big[n + 1] == 7.0)
        bigx = np.full((n + 2, c, h, w_), 7.0, dtype)
        dx, dw, db = bigx[1:n + 1], np.full_like(w, np.nan), np.full_like(b, np.nan)
        K.conv2d_backward_into(dout, x, w, stride, pad, dil, c, dx, dw, db, ws)
        assert np.all(bigx[0] == 7.0) and np.all(bigx[n + 1] == 7.0)
        dx2 = dx.copy()
        K.conv2d_backward_into(dout, x, w, stride, pad, dil, c, dx2, None, None, ws,
                               accumulate=True)
        dw2 = np.full_like(w, np.nan)
        K.conv2d_backward_into(dout, x, w, stride, pad, dil, c, None, dw2, None, ws)
        results.append((out.copy(), dx.copy(), dw, db, dx2, dw2))
    rdx, rdw, rdb = R.conv2d_backward(dout, x, w, b, stride, pad, dil, c)
    refs = (R.conv2d_forward(x, w, b, stride, pad, dil, c), rdx, rdw, rdb, 2 * rdx, rdw)
    for results_flat in results[:-1]:
        for got, old, ref in zip(results_flat, results[-1], refs):
            close(got, ref, dtype)
            close(got, old, dtype)


# batches of 8+ split by samples (depthwise._sample_pieces): pieces of whole blocks of four and
# of 4 + 1, the flat kernels (stride 1 and 2, gathers on 8x8), the wide grid (multiplier 2)
SAMPLE_SPLIT_CASES = [
    (10, 3, 9, 9, 1, (1, 1)), (33, 5, 8, 8, 1, (2, 2)), (16, 4, 11, 10, 1, (2, 2)),
    (9, 3, 7, 7, 2, (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SAMPLE_SPLIT_CASES, ids=str)
def test_depthwise_split_by_samples(case, dtype, monkeypatch):
    """Split by samples: out and dx bit for bit those of the split by channels (the same loops
    per plane), dw and db within rounding of it (the pieces' partial sums, each rounded to the
    dtype, added in float64) and of the reference; bit for bit the same on 1 and 3 threads."""
    from cnnspec.kernels import depthwise as D
    n, c, h, w_, m, stride = case
    pad, dil = (1, 1, 1, 1), (1, 1)
    x, w = randn(n, c, h, w_, dtype=dtype), randn(c * m, 1, 3, 3, dtype=dtype)
    b = randn(c * m, dtype=dtype)
    shape = K.conv2d_output_shape(x.shape, w.shape, stride, pad, dil)
    dout = randn(*shape, dtype=dtype)
    results = []
    monkeypatch.setattr(D, "_PARALLEL_MACS", 0)                    # split even these sizes
    for by_samples, threads in [(False, "3"), (True, "1"), (True, "3")]:
        monkeypatch.setattr(D, "_BY_SAMPLES", by_samples)
        monkeypatch.setenv("CNNSPEC_THREADS", threads)
        assert (D._backward_pieces(x.shape) > 1) == by_samples
        ws = np.full(K.conv2d_workspace_size(x.shape, w.shape, stride, pad, dil, c), np.nan, dtype)
        out = np.full(shape, np.nan, dtype)
        K.conv2d_forward_into(x, w, b, stride, pad, dil, c, out, ws)
        dx, dw, db = np.full_like(x, np.nan), np.full_like(w, np.nan), np.full_like(b, np.nan)
        K.conv2d_backward_into(dout, x, w, stride, pad, dil, c, dx, dw, db, ws)
        dw2 = np.full_like(w, np.nan)                               # dw alone
        K.conv2d_backward_into(dout, x, w, stride, pad, dil, c, None, dw2, None, ws)
        results.append((out, dx, dw, db, dw2))
    channels, one, three = results
    for a, b_ in zip(one, three):
        assert np.array_equal(a, b_)
    assert np.array_equal(one[0], channels[0]) and np.array_equal(one[1], channels[1])
    assert np.array_equal(one[2], one[4])
    rdx, rdw, rdb = R.conv2d_backward(dout, x, w, b, stride, pad, dil, c)
    for got, old, ref in zip(one[2:4], channels[2:4], (rdw, rdb)):
        close(got, ref, dtype)
        close(got, old, dtype)
    close(one[0], R.conv2d_forward(x, w, b, stride, pad, dil, c), dtype)
    close(one[1], rdx, dtype)


# stride-1 depthwise layers of one filter per channel: MobileNet's 3x3, EfficientNet's 5x5, no
# padding (dout smaller than x), asymmetric padding, dilation, a row (H = 1)
DX_BY_FORWARD_CASES = [
    (3, 6, 9, 9, 3, 3, (1, 1, 1, 1), (1, 1)),
    (2, 4, 11, 10, 5, 5, (2, 2, 2, 2), (1, 1)),
    (2, 5, 8, 9, 3, 3, (0, 0, 0, 0), (1, 1)),
    (2, 3, 9, 8, 3, 2, (2, 0, 1, 0), (1, 1)),
    (2, 3, 10, 10, 3, 3, (2, 1, 2, 2), (2, 2)),
    (2, 4, 1, 13, 1, 3, (0, 0, 1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DX_BY_FORWARD_CASES, ids=str)
def test_depthwise_dx_by_the_forward_of_dout(case, dtype, monkeypatch, own_rng):
    """dx of a stride-1 depthwise layer as the forward of dout by the turned weights
    (depthwise._dx_pad), with dw and db and alone, against the reference and against the wide
    grid's own backward; added to a dx (accumulate) the wide grid's backward runs."""
    from cnnspec.kernels import depthwise as D
    n, c, h, w_, kh, kw, pad, dil = case
    x, w, b = randn(n, c, h, w_, dtype=dtype), randn(c, 1, kh, kw, dtype=dtype), randn(c, dtype=dtype)
    shape = K.conv2d_output_shape(x.shape, w.shape, (1, 1), pad, dil)
    dout = randn(*shape, dtype=dtype)
    rdx, rdw, rdb = R.conv2d_backward(dout, x, w, b, (1, 1), pad, dil, c)
    results = []
    for on in (True, False):
        monkeypatch.setattr(D, "_DX_BY_FORWARD", on)
        assert (D._dx_pad(x.shape, w.shape, (1, 1), pad, dil) is not None) == on
        ws = np.full(K.conv2d_workspace_size(x.shape, w.shape, (1, 1), pad, dil, c), np.nan, dtype)
        dx, dw, db = np.full_like(x, np.nan), np.full_like(w, np.nan), np.full_like(b, np.nan)
        K.conv2d_backward_into(dout, x, w, (1, 1), pad, dil, c, dx, dw, db, ws)
        close(dx, rdx, dtype)
        close(dw, rdw, dtype)
        close(db, rdb, dtype)
        alone = np.full_like(x, np.nan)
        K.conv2d_backward_into(dout, x, w, (1, 1), pad, dil, c, alone, None, None, ws)
        assert np.array_equal(alone, dx)
        K.conv2d_backward_into(dout, x, w, (1, 1), pad, dil, c, alone, None, None, ws,
                               accumulate=True)
        close(alone, 2 * rdx, dtype)
        results.append(dx)
    close(results[0], results[1], dtype)


def test_depthwise_dx_by_the_forward_rule(monkeypatch):
    """dx by the forward of dout: stride 1, one filter per channel, no padding beyond the
    kernel's reach; not strided layers, depth multipliers, or where the flat kernels run (which
    layers those are depends on the CPU's vector width: both cases are checked on any CPU)."""
    from cnnspec.kernels import depthwise as D
    monkeypatch.setattr(D, "_DX_BY_FORWARD", True)          # the padding rule alone
    assert D._dx_pad((32, 144, 28, 28), (144, 1, 3, 3), (1, 1), (1,) * 4, (1, 1)) == (1,) * 4
    assert D._dx_pad((32, 144, 28, 28), (144, 1, 5, 5), (1, 1), (1,) * 4, (1, 1)) == (3,) * 4
    assert D._dx_pad((32, 144, 28, 28), (144, 1, 3, 3), (1, 1), (0, 2, 1, 1), (1, 1)) == (2, 0, 1, 1)
    assert D._dx_pad((32, 144, 28, 28), (144, 1, 3, 3), (2, 2), (1,) * 4, (1, 1)) is None
    assert D._dx_pad((32, 144, 28, 28), (288, 1, 3, 3), (1, 1), (1,) * 4, (1, 1)) is None
    assert D._dx_pad((32, 144, 28, 28), (144, 1, 3, 3), (1, 1), (3, 1, 1, 1), (1, 1)) is None
    monkeypatch.setattr(D, "_DX_BY_FORWARD", None)          # and not where the flat kernels run
    for shape, c in (((32, 144, 28, 28), 144), ((64, 192, 8, 8), 192)):
        flat = D._use_flat(shape, (c, 1, 3, 3), (1, 1), (1,) * 4, (1, 1))
        assert D._dx_pad(shape, (c, 1, 3, 3), (1, 1), (1,) * 4, (1, 1)) == (None if flat else (1,) * 4)
    monkeypatch.setattr(D, "_DX_BY_FORWARD", False)
    assert D._dx_pad((32, 144, 28, 28), (144, 1, 3, 3), (1, 1), (1,) * 4, (1, 1)) is None


# 3x3 stride-1 planes by depthwise._rows_3x3: output rows of 4k, 4k + 1, 4k + 2, 4k + 3 (the
# four-row blocks and the rows after them), widths of exactly a half vector (8 float32, 4
# float64), between whole vectors (the last one overlapping) and wide, no padding (OW = W - 2),
# asymmetric padding, batches split by samples (N = 9), depth multiplier 2 (dx by the wide grid,
# dw by the rows), a tall plane (dw's float32 sums folded into float64 mid-plane), padding 3
# (N, C, H, W, m, pad, bias)
ROWS_3X3_CASES = [
    (2, 3, 8, 8, 1, (1, 1, 1, 1), True), (3, 2, 9, 13, 1, (1, 1, 1, 1), False),
    (2, 2, 12, 10, 1, (0, 0, 0, 0), True), (1, 3, 7, 30, 1, (2, 1, 0, 2), True),
    (9, 2, 14, 28, 1, (1, 1, 1, 1), True), (2, 2, 1, 11, 1, (1, 1, 1, 1), False),
    (2, 3, 6, 9, 2, (1, 1, 1, 1), True), (2, 2, 70, 9, 1, (1, 1, 1, 1), True),
    (2, 2, 5, 6, 1, (3, 3, 3, 3), False),          # padding past the kernel's reach: dx elsewhere
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROWS_3X3_CASES, ids=str)
def test_depthwise_3x3_rows_straight_from_the_plane(case, dtype, monkeypatch, own_rng):
    """The forward (and so the dx by the forward of dout) of 3x3 stride-1 layers by _rows_3x3
    and their dw by _dw_rows_3x3 (with dx, alone, beside an accumulated dx), against the
    reference and the wide grid's loops, with outputs between sentinels: nothing written
    outside them, every output written."""
    from cnnspec.kernels import depthwise as D
    n, c, h, w_, m, pad, bias = case
    x, w = randn(n, c, h, w_, dtype=dtype), randn(c * m, 1, 3, 3, dtype=dtype)
    b = randn(c * m, dtype=dtype) if bias else None
    shape = K.conv2d_output_shape(x.shape, w.shape, (1, 1), pad, (1, 1))
    dout = randn(*shape, dtype=dtype)
    monkeypatch.setattr(D, "_FLAT", False)
    results = []
    for on in (None, False):
        monkeypatch.setattr(D, "_ROWS_3X3", on)
        lanes = 32 // np.dtype(dtype).itemsize
        assert D._use_rows_3x3(x.shape, w.shape, (1, 1), pad, (1, 1), dtype) == (
            on is None and shape[3] >= lanes)
        ws = np.full(K.conv2d_workspace_size(x.shape, w.shape, (1, 1), pad, (1, 1), c), np.nan,
                     dtype)
        big = np.full((n + 2,) + shape[1:], 7.0, dtype)      # sentinels: samples 0 and n + 1
        out = big[1:n + 1]
        out[...] = np.nan
        K.conv2d_forward_into(x, w, b, (1, 1), pad, (1, 1), c, out, ws)
        assert np.all(big[0] == 7.0) and np.all(big[n + 1] == 7.0)
        dx, dw = np.full_like(x, np.nan), np.full_like(w, np.nan)
        K.conv2d_backward_into(dout, x, w, (1, 1), pad, (1, 1), c, dx, dw, None, ws)
        dw_alone = np.full_like(w, np.nan)
        K.conv2d_backward_into(dout, x, w, (1, 1), pad, (1, 1), c, None, dw_alone, None, ws)
        assert np.array_equal(dw_alone, dw)
        dx2, dw2 = dx.copy(), np.full_like(w, np.nan)
        K.conv2d_backward_into(dout, x, w, (1, 1), pad, (1, 1), c, dx2, dw2, None, ws,
                               accumulate=True)
        assert np.array_equal(dw2, dw)
        results.append((out.copy(), dx, dw, dx2))
    rdx, rdw, _ = R.conv2d_backward(dout, x, w, b, (1, 1), pad, (1, 1), c)
    refs = (R.conv2d_forward(x, w, b, (1, 1), pad, (1, 1), c), rdx, rdw, 2 * rdx)
    for got, old, ref in zip(results[0], results[1], refs):
        close(got, ref, dtype)
        close(got, old, dtype)


def test_depthwise_3x3_rows_rule():
    from cnnspec.kernels import depthwise as D
    mobile = ((32, 144, 28, 28), (144, 1, 3, 3), (1, 1), (1,) * 4, (1, 1))
    assert D._use_rows_3x3(*mobile, np.float32)
    assert D._use_rows_3x3((32, 144, 4, 4), (144, 1, 3, 3), (1, 1), (1,) * 4, (1, 1), np.float64)
    assert not D._use_rows_3x3((32, 144, 7, 7), (144, 1, 3, 3), (1, 1), (1,) * 4, (1, 1),
                               np.float32)                          # rows under a half vector
    assert not D._use_rows_3x3((32, 144, 28, 28), (144, 1, 3, 3), (2, 2), (1,) * 4, (1, 1),
                               np.float32)
    assert not D._use_rows_3x3((32, 144, 28, 28), (144, 1, 3, 3), (1, 1), (2,) * 4, (2, 2),
                               np.float32)
    assert not D._use_rows_3x3((32, 144, 28, 28), (144, 1, 5, 5), (1, 1), (2,) * 4, (1, 1),
                               np.float32)
    assert D._use_rows_3x3((32, 144, 28, 28), (288, 1, 3, 3), (1, 1), (1,) * 4, (1, 1),
                           np.float32)                              # depth multiplier 2


def test_narrow_lanes_rule():
    """AVX2's forward and dx with the filters in the lanes: 3x3 with padding 1 on 8x8 and 16x16
    planes (the narrow wide grid's waste 1.125) and smaller, not on 32x32 or 56x56 (waste 1.03,
    1.02), nor for filters that do not fill its blocks of 16."""
    from cnnspec.kernels.conv import _direct_pitch, _use_lanes, wide_waste
    from cnnspec.kernels.conv_direct import NARROW_STRIP as strip

    def lanes(f, c, hw):
        pitch = _direct_pitch(hw, (1, 1), (1, 1, 1, 1))
        return _use_lanes(f, 9 * c, wide_waste(pitch, hw, hw, strip), hw * hw, narrow=True)
    assert lanes(64, 64, 8) and lanes(32, 32, 16) and lanes(16, 16, 16) and lanes(64, 64, 4)
    assert not lanes(16, 16, 32) and not lanes(64, 64, 56)
    assert not lanes(24, 24, 8)                                     # F not a multiple of 16


def test_depthwise_sample_split_rule():
    from cnnspec.kernels import depthwise as D
    assert D._sample_pieces((64, 96, 32, 32)) == 8 and D._sample_pieces((10, 3, 9, 9)) == 2
    assert D._sample_pieces((7, 96, 32, 32)) == 0                  # batch under 8: by channels
    assert D._backward_pieces((64, 144, 16, 16)) == 8
    assert D._backward_pieces((64, 96, 32, 32)) == 0               # big planes: by channels


def test_depthwise_flat_rule():
    from cnnspec.kernels.depthwise import flat_ok
    assert flat_ok((8, 16, 32, 32), (16, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1))   # MobileNet's
    assert flat_ok((8, 16, 32, 32), (16, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    assert flat_ok((8, 16, 7, 7), (16, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1))      # 4 columns
    assert not flat_ok((8, 16, 32, 32), (16, 1, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1))  # 30 < 32
    assert not flat_ok((8, 16, 32, 32), (32, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1))  # m = 2


def test_depthwise_flat_kernels_on_avx2_only_for_small_planes(monkeypatch):
    """With AVX-512 the flat kernels take every layer flat_ok allows; without it only planes up
    to 8x8, strided ones by gathers (their 16-lane masked vectors lost to the wide grid's loops
    elsewhere), and not 3x3 stride-1 layers whose output rows hold 8 elements (_rows_3x3 takes
    those); the workspace is sized for the kernels that run."""
    from cnnspec.kernels import conv, depthwise as D
    layers = [((8, 16, 32, 32), (1, 1)), ((8, 16, 8, 8), (1, 1)), ((8, 16, 8, 8), (2, 2)),
              ((8, 16, 7, 7), (1, 1)), ((8, 16, 16, 16), (2, 2))]
    for wide, expected in ((True, [True] * 5), (False, [False, False, True, True, False])):
        monkeypatch.setattr(conv, "_WIDE_VECTORS", wide)
        got = [D._use_flat(x, (16, 1, 3, 3), s, (1, 1, 1, 1), (1, 1)) for x, s in layers]
        assert got == expected, wide
        assert D._use_gathers("backward", (8, 16, 8, 8), (2, 2))
        assert D._use_gathers("forward", (8, 16, 16, 16), (2, 2)) is wide
        for x, s in layers:
            per = (D._flat_per_thread(x, (16, 1, 3, 3), s, (1, 1, 1, 1), (1, 1))
                   if D._use_flat(x, (16, 1, 3, 3), s, (1, 1, 1, 1), (1, 1)) else
                   D._layout(x, (16, 1, 3, 3), s, (1, 1, 1, 1), (1, 1))[2])
            assert D.workspace_size(x, (16, 1, 3, 3), s, (1, 1, 1, 1), (1, 1), 1) >= per
    monkeypatch.setattr(conv, "_WIDE_VECTORS", False)
    monkeypatch.setattr(D, "_FLAT", True)           # the tests' switch: wherever flat_ok
    assert D._use_flat((8, 16, 32, 32), (16, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1))


def test_one_channel_convolution_stays_on_the_general_path():
    assert not _is_depthwise((8, 1, 32, 32), (6, 1, 5, 5), 1)      # LeNet's conv1
    assert not _is_depthwise((8, 4, 32, 32), (8, 2, 3, 3), 2)      # two channels per group
    assert _is_depthwise((8, 4, 32, 32), (8, 1, 3, 3), 4)


# -- upsampling ----------------------------------------------------------------------------------

# (N, C, H, W, scale, mode)
UPSAMPLE_CASES = [
    (2, 3, 4, 5, (2, 2), "nearest"), (1, 2, 3, 3, (3, 2), "nearest"),
    (2, 3, 4, 5, (2, 2), "bilinear"), (1, 2, 3, 7, (3, 2), "bilinear"),
    (2, 2, 1, 1, (2, 4), "bilinear"), (1, 3, 5, 2, (1, 3), "bilinear"),
    (2, 3, 1, 6, (1, 2), "linear"), (2, 2, 1, 5, (1, 3), "nearest"),
    (16, 8, 16, 16, (2, 2), "bilinear"),                            # split over threads
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UPSAMPLE_CASES, ids=str)
def test_upsample_matches_reference(case, dtype):
    n, c, h, w, scale, mode = case
    x = randn(n, c, h, w, dtype=dtype)
    out = np.full((n, c, h * scale[0], w * scale[1]), np.nan, dtype)
    K.upsample2d_forward_into(x, scale, mode, out)
    close(out, R.upsample2d_forward(x, scale, mode), dtype)
    dout = randn(*out.shape, dtype=dtype)
    want = R.upsample2d_backward(dout, x, scale, mode)
    dx = np.full_like(x, np.nan)
    K.upsample2d_backward_into(dout, scale, mode, dx)
    close(dx, want, dtype)
    K.upsample2d_backward_into(dout, scale, mode, dx, accumulate=True)
    close(dx, 2 * want, dtype)


def test_upsample_backward_matches_central_differences():
    x = randn(1, 2, 3, 4)
    for mode, scale in [("nearest", (2, 3)), ("bilinear", (3, 2))]:
        out = np.empty((1, 2, 3 * scale[0], 4 * scale[1]))
        dout = randn(*out.shape)

        def loss():
            K.upsample2d_forward_into(x, scale, mode, out)
            return float(np.sum(out * dout))
        dx = np.empty_like(x)
        K.upsample2d_backward_into(dout, scale, mode, dx)
        assert rel_error(dx, numeric_grad(loss, x)) < 1e-6


def test_upsample_mode_is_checked():
    with pytest.raises(ValueError, match="mode"):
        K.upsample2d_forward_into(np.zeros((1, 1, 2, 2)), (2, 2), "bicubic",
                                  np.zeros((1, 1, 4, 4)))


# -- adaptive pooling ----------------------------------------------------------------------------

# (N, C, H, W, OH, OW): even splits, uneven overlapping windows, output larger than the input
ADAPTIVE_CASES = [(2, 3, 8, 8, 4, 4), (2, 2, 7, 10, 3, 4), (1, 3, 5, 5, 7, 3),
                  (2, 2, 6, 9, 1, 1), (2, 3, 1, 11, 1, 4), (8, 16, 16, 16, 5, 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=str)
def test_adaptive_pooling_matches_reference(case, dtype):
    n, c, h, w, oh, ow = case
    x = randn(n, c, h, w, dtype=dtype)
    dout = randn(n, c, oh, ow, dtype=dtype)
    out = np.full((n, c, oh, ow), np.nan, dtype)
    K.adaptive_avgpool2d_forward_into(x, out)
    close(out, R.adaptive_avgpool2d_forward(x, (oh, ow)), dtype)
    dx = np.full_like(x, np.nan)
    K.adaptive_avgpool2d_backward_into(dout, dx)
    close(dx, R.adaptive_avgpool2d_backward(dout, x), dtype)
    K.adaptive_avgpool2d_backward_into(dout, dx, accumulate=True)
    close(dx, 2 * R.adaptive_avgpool2d_backward(dout, x), dtype)

    arg = np.empty((n, c, oh, ow), np.int64)
    K.adaptive_maxpool2d_forward_into(x, out, arg)
    close(out, R.adaptive_maxpool2d_forward(x, (oh, ow)), dtype)
    K.adaptive_maxpool2d_backward_into(dout, arg, dx)
    close(dx, R.adaptive_maxpool2d_backward(dout, x), dtype)


def test_adaptive_maxpool_ties_go_to_the_first_maximum():
    x = np.random.default_rng(3).integers(-1, 2, size=(2, 3, 7, 9)).astype(np.float64)
    dout = randn(2, 3, 3, 4)
    out, arg = np.empty(dout.shape), np.empty(dout.shape, np.int64)
    K.adaptive_maxpool2d_forward_into(x, out, arg)
    dx = np.empty_like(x)
    K.adaptive_maxpool2d_backward_into(dout, arg, dx)
    np.testing.assert_array_equal(dx, R.adaptive_maxpool2d_backward(dout, x))


# -- activations -----------------------------------------------------------------------------------

ACTIVATIONS = ["relu6", "hardswish", "hardsigmoid", "silu", "gelu", "softplus", "elu"]


def activation(name):
    if name == "elu":
        return (lambda x, o: K.elu_forward_into(x, 0.7, o),
                lambda g, x, d, accumulate=False: K.elu_backward_into(g, x, 0.7, d, accumulate),
                lambda x: R.elu_forward(x, 0.7), lambda g, x: R.elu_backward(g, x, 0.7))
    return (getattr(K, f"{name}_forward_into"), getattr(K, f"{name}_backward_into"),
            getattr(R, f"{name}_forward"), getattr(R, f"{name}_backward"))


# the kinks and thresholds, saturation, and ordinary values
SPECIAL = [0.0, -3.0, 3.0, 6.0, -6.0, 20.0, 20.5, 19.5, -20.0, 40.0, -40.0, 1e-3, -1e-3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_reference(name, dtype):
    fwd, bwd, rf, rb = activation(name)
    x = randn(3, 4, 7, dtype=dtype) * dtype(4)
    x.reshape(-1)[:len(SPECIAL)] = SPECIAL
    out = np.full_like(x, np.nan)
    fwd(x, out)
    close(out, rf(x), dtype)
    dout = randn(*x.shape, dtype=dtype)
    want = rb(dout, x)
    dx = np.full_like(x, np.nan)
    bwd(dout, x, dx)
    close(dx, want, dtype)
    bwd(dout, x, dx, accumulate=True)
    close(dx, 2 * want, dtype)
    g = dout.copy()
    bwd(g, x, g)                                          # in place: dx is dout
    close(g, want, dtype)
    y = x.copy()
    fwd(y, y)                                             # the forward in place
    close(y, rf(x), dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradients_match_central_differences(name):
    fwd, bwd, _, _ = activation(name)
    x = randn(2, 3, 4) * 4
    x[np.abs(np.abs(x) - 3) < 1e-3] = 1.0                 # away from the kinks at +-3, 0, 6
    x[np.abs(x) < 1e-3] = 0.5
    x[np.abs(x - 6) < 1e-3] = 5.5
    dout, out, dx = randn(2, 3, 4), np.empty_like(x), np.empty_like(x)

    def loss():
        fwd(x, out)
        return float(np.sum(out * dout))
    bwd(dout, x, dx)
    # relative error 1e-6, or 1e-9 absolute: central differences of a loss of ~10 resolve a
    # gradient to ~ulp(10) / 2h = 1e-10, so in gelu's and silu's far tails (x < -6: gradients
    # below 1e-8) they return 0 (x = -8.2 failed with relative error alone on some draws)
    num = numeric_grad(loss, x)
    err = np.abs(dx - num)
    assert np.all(err <= 1e-6 * (np.abs(dx) + np.abs(num)) + 1e-9), (x, dx, num)


def test_activation_kinks_by_hand():
    x = np.array([-3.0, 0.0, 3.0, 6.0, 20.0])
    dx = np.empty(5)
    K.relu6_backward_into(np.ones(5), x, dx)
    assert dx.tolist() == [0, 0, 1, 0, 0]                 # 0 at both kinks of relu6
    K.hardswish_backward_into(np.ones(5), x, dx)
    assert dx.tolist() == [0, 0.5, 1, 1, 1]               # 0 at -3, 1 at 3 (PyTorch 2.13)
    K.hardsigmoid_backward_into(np.ones(5), x, dx)
    assert dx.tolist() == [0, float(np.float32(1 / 6)), 0, 0, 0]     # PyTorch's float32 1/6
    K.elu_backward_into(np.ones(5), x, 0.5, dx)
    assert dx.tolist() == [0.5 * np.exp(-3), 0.5, 1, 1, 1]  # alpha at 0
    out = np.empty(5)
    K.softplus_forward_into(x, out)
    assert out[4] == np.log1p(np.exp(20.0))               # threshold: x > 20, not >=


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_propagate_nan(dtype):
    x = np.full(40, np.nan, dtype)
    out = np.empty_like(x)
    for name in ACTIVATIONS:
        fwd, bwd, _, _ = activation(name)
        fwd(x, out)
        assert np.all(np.isnan(out)), name


# -- channel operations, droppath, sample ----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate_shape", ["NC11", "NC1", "NC"])
def test_gate_and_mul(gate_shape, dtype):
    x = randn(3, 5, 7, dtype=dtype) if gate_shape == "NC1" else randn(3, 5, 4, 6, dtype=dtype)
    shape = {"NC11": (3, 5, 1, 1), "NC1": (3, 5, 1), "NC": (3, 5)}[gate_shape]
    gate = randn(*shape, dtype=dtype)
    out = np.empty_like(x)
    K.gate_forward_into(x, gate, out)
    close(out, R.gate_forward(x, gate), dtype)
    dout = randn(*x.shape, dtype=dtype)
    rdx, rdg = R.gate_backward(dout, x, gate)
    dx, dg = np.empty_like(x), np.empty_like(gate)
    K.gate_backward_into(dout, x, gate, dx, dg)
    close(dx, rdx, dtype)
    close(dg, rdg, dtype)
    K.gate_backward_into(dout, x, gate, dx, dg, accumulate_dx=True, accumulate_dgate=True)
    close(dx, 2 * rdx, dtype)
    close(dg, 2 * rdg, dtype)
    dg2 = np.full_like(gate, np.nan)
    K.gate_backward_into(dout, x, gate, None, dg2)
    close(dg2, rdg, dtype)

    b = randn(*x.shape, dtype=dtype)
    K.mul_forward_into(x, b, out)
    close(out, x.astype(np.float64) * b, dtype)
    K.mul_backward_into(dout, b, dx)
    close(dx, dout.astype(np.float64) * b, dtype)
    K.mul_backward_into(dout, b, dx, accumulate=True)
    close(dx, 2 * dout.astype(np.float64) * b, dtype)


def test_gate_backward_matches_central_differences():
    x, gate, dout = randn(2, 3, 4, 5), randn(2, 3, 1, 1), randn(2, 3, 4, 5)
    out = np.empty_like(x)

    def loss():
        K.gate_forward_into(x, gate, out)
        return float(np.sum(out * dout))
    dx, dg = np.empty_like(x), np.empty_like(gate)
    K.gate_backward_into(dout, x, gate, dx, dg)
    assert rel_error(dx, numeric_grad(loss, x)) < 1e-6
    assert rel_error(dg, numeric_grad(loss, gate)) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_slice_and_shuffle(dtype):
    x = randn(2, 12, 3, 4, dtype=dtype)
    out = np.empty((2, 5, 3, 4), dtype)
    K.channel_slice_forward_into(x, 4, out)
    close(out, x[:, 4:9], dtype)
    dout = randn(2, 5, 3, 4, dtype=dtype)
    dx = np.full_like(x, np.nan)
    K.channel_slice_backward_into(dout, 4, dx)
    want = np.zeros_like(x, np.float64)
    want[:, 4:9] = dout
    close(dx, want, dtype)
    K.channel_slice_backward_into(dout, 4, dx, accumulate=True)
    want[:, 4:9] *= 2
    close(dx, want, dtype)

    for groups in (1, 2, 3, 4, 12):
        out = np.empty_like(x)
        K.channel_shuffle_forward_into(x, groups, out)
        close(out, R.channel_shuffle(x, groups), dtype)
        back = np.full_like(x, np.nan)
        K.channel_shuffle_backward_into(out, groups, back)   # the inverse permutation
        close(back, x, dtype)
        K.channel_shuffle_backward_into(out, groups, back, accumulate=True)
        close(back, 2 * x.astype(np.float64), dtype)


def test_channel_shuffle_by_hand():
    x = np.arange(6, dtype=np.float64).reshape(1, 6, 1, 1)
    out = np.empty_like(x)
    K.channel_shuffle_forward_into(x, 2, out)               # (2, 3) -> (3, 2)
    assert out.ravel().tolist() == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("dtype", DTYPES)
def test_droppath(dtype):
    x = randn(4, 3, 2, 2, dtype=dtype)
    keep = np.array([True, False, True, False])
    out = np.full_like(x, np.nan)
    K.droppath_forward_into(x, keep, 0.25, out)
    close(out, R.droppath_forward(x, 0.25, keep), dtype)
    assert np.all(out[1] == 0) and np.all(out[3] == 0)
    dx = np.full_like(x, np.nan)
    K.droppath_backward_into(x, keep, 0.25, dx)
    close(dx, R.droppath_forward(x, 0.25, keep), dtype)
    K.droppath_backward_into(x, keep, 0.25, dx, accumulate=True)
    close(dx, 2 * R.droppath_forward(x, 0.25, keep), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 8), (1, 3), (2, 4, 3, 3)])
def test_vae_sample(shape, dtype):
    mu, logvar, eps = randn(*shape, dtype=dtype), randn(*shape, dtype=dtype), randn(*shape,
                                                                                   dtype=dtype)
    z = np.empty_like(mu)
    kl = K.vae_sample_forward_into(mu, logvar, eps, z)
    rz, rkl = R.vae_sample_forward(mu, logvar, eps)
    close(z, rz, dtype)
    assert abs(kl - rkl) <= 1e-4 * abs(rkl) if dtype == np.float32 else abs(kl - rkl) <= 1e-12
    dz = randn(*shape, dtype=dtype)
    rdmu, rdlv = R.vae_sample_backward(dz, 0.7, mu, logvar, eps)
    dmu, dlv = np.empty_like(mu), np.empty_like(mu)
    K.vae_sample_backward_into(dz, 0.7, mu, logvar, eps, dmu, dlv)
    close(dmu, rdmu, dtype)
    close(dlv, rdlv, dtype)
    K.vae_sample_backward_into(dz, 0.7, mu, logvar, eps, dmu, dlv, True, True)
    close(dmu, 2 * rdmu, dtype)
    close(dlv, 2 * rdlv, dtype)
    K.vae_sample_backward_into(None, 1.0, mu, logvar, eps, dmu, None)   # the KL term alone
    close(dmu, R.vae_sample_backward(np.zeros(shape), 1.0, mu, logvar, eps)[0], dtype)


def test_vae_sample_gradients_match_central_differences():
    mu, logvar, eps, dz = randn(3, 4), randn(3, 4), randn(3, 4), randn(3, 4)
    z = np.empty_like(mu)

    def loss():                                           # L = <z, dz> + 0.6 * kl
        kl = K.vae_sample_forward_into(mu, logvar, eps, z)
        return float(np.sum(z * dz)) + 0.6 * kl
    dmu, dlv = np.empty_like(mu), np.empty_like(mu)
    K.vae_sample_backward_into(dz, 0.6, mu, logvar, eps, dmu, dlv)
    assert rel_error(dmu, numeric_grad(loss, mu)) < 1e-6
    assert rel_error(dlv, numeric_grad(loss, logvar)) < 1e-6


def test_kl_of_the_standard_normal_is_zero():
    z = np.empty((2, 3))
    assert K.vae_sample_forward_into(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3)), z) == 0
    assert z.tolist() == [[1, 1, 1], [1, 1, 1]]


# -- losses --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_match_reference(dtype):
    p = rng.uniform(0.01, 0.99, (4, 6)).astype(dtype)
    p[0, :3] = [0.0, 1.0, 1e-30]                           # clamped logs
    t = rng.uniform(0, 1, (4, 6)).astype(dtype)
    t[1, :2] = [0, 1]
    for kernel, ref, args in [(K.bce_loss_into, R.bce_loss, (p, t)),
                              (K.sigmoid_bce_into, R.sigmoid_bce, (randn(4, 6, dtype=dtype)
                                                                   * dtype(1e4), t)),
                              (K.sigmoid_bce_into, R.sigmoid_bce, (randn(4, 6, dtype=dtype), t)),
                              (K.l1_loss_into, R.l1_loss, (p, t))]:
        d = np.empty_like(args[0])
        loss = kernel(*args, d)
        rloss, rd = ref(*args)
        assert np.isfinite(loss) and abs(loss - rloss) <= 1e-6 * max(1, abs(rloss))
        close(d, rd, dtype)


def test_loss_gradients_match_central_differences():
    p, t = rng.uniform(0.05, 0.95, (3, 4)), rng.uniform(0, 1, (3, 4))
    z = randn(3, 4)
    p[np.abs(p - t) < 1e-3] += 0.01                        # away from l1's kink
    for kernel, arg in [(K.bce_loss_into, p), (K.sigmoid_bce_into, z), (K.l1_loss_into, p)]:
        d = np.empty_like(arg)
        kernel(arg, t, d)
        numeric = numeric_grad(lambda: kernel(arg, t, np.empty_like(arg)), arg)
        assert rel_error(d, numeric) < 1e-6


def test_l1_gradient_is_zero_where_equal():
    d = np.empty(3)
    K.l1_loss_into(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 4.0]), d)
    assert d.tolist() == [1 / 3, 0, -1 / 3]
