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

On AVX-512 (groups 1, at least a million multiply-adds; ``_lanes_geometry``, ``_rows_geometry``
and ``_adjoint_plan`` say where): the forward by conv_lanes.py with the samples in the vector
lanes (batches of 16 or more, output planes up to 32x32; one stride-1 gather per residue of the
stride), dx by conv_lanes.py too where the adjoint convolution's wide grid would waste 10% or
more (that convolution of dout by w with this stride and padding), else as that convolution's
direct forward (conv.py), dw by conv_lanes.weight_grad_rows on that convolution (dout
its input, x its output gradient, C >= 32 its filters).  The products stay for the rest, and
for dx with dw where dw does not run so (they share one im2col).
"""
import numpy as np

from cnnspec.kernels._blas import gemm
from cnnspec.kernels._jit import jit, num_threads, run_split, sum64
from cnnspec.kernels.conv import _empty, _span, _zero

_COL_ELEMENTS = 1 << 19           # elements of one chunk's col (2 MB in float32)
_PARALLEL_MACS = 1 << 21          # below this many multiply-adds one thread is faster
_LANES = None                     # tests: True / False, the forward and dx by conv_lanes.py
                                  # wherever groups is 1 / never; None: the rules (_lanes_geometry)
_LANES_MAX_PLANE = 1024           # planes (outputs of the gather) up to 32x32: its tile, 8 filters
                                  # x plane x lanes, stays within 512 KB
_DW_ROWS = None                   # tests: True / False, dw by conv_lanes.weight_grad_rows of the
                                  # adjoint convolution wherever it applies / never; None: the rules


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
    size = num_threads() * _layout(tuple(x_shape), tuple(w_shape), groups)[1]
    out_shape = conv_transpose2d_output_shape(x_shape, w_shape, stride, pad, output_pad,
                                              dilation, groups)
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
            size = max(size, conv_lanes.workspace_size(geo, num_threads()))
    rows = _rows_geometry(out_shape, x_shape, w_shape, stride, pad, dilation, groups)
    if rows is not None:
        size = max(size, conv_lanes.rows_workspace_size(rows, 2 * num_threads()))
    return size


def _lanes_geometry(kind, x_shape, w_shape, stride, pad, dilation, groups, out_shape, dtype):
    """conv_lanes.py's tables for the forward (``kind`` "forward": x -> out) or the input
    gradient ("dx": the adjoint convolution of dout -> x), or None where they do not run: they
    run for groups 1 on AVX-512, batches of at least the lanes (16 samples in float32) and
    gathers of at least a million multiply-adds onto planes of at most _LANES_MAX_PLANE.
    Measured against the batched products (forward) and the adjoint convolution's direct
    forward (dx; float32, one thread, CPU time): see the README's issue 16 fifth round."""
    from cnnspec.kernels import conv_lanes
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
        return conv_lanes.transposed_geometry(tuple(x_shape), tuple(w_shape), *geometry)
    return conv_lanes.conv_geometry(tuple(out_shape), tuple(w_shape), *geometry)


def _adjoint_plan(out_shape, x_shape, w_shape, stride, pad, dilation, groups):
    """conv.py's plan of the convolution of the output (N, F, OH, OW) by w (C, F, KH, KW) with
    this stride, padding and dilation, whose input gradient is this transposed convolution's
    forward: its forward is this one's dx.  Returned where its direct kernels run (groups 1,
    AVX-512, at least a million multiply-adds; output padding below the stride, so that it gives
    back x's size), else None.  Used for dx alone (a frozen layer, the input gradient of
    ``model.gradient``).  Measured against the batched products below (float32, one thread, CPU
    time per call, 40 pairs of calls in alternating order, load 4; median speed-up, quartiles):
    dx alone, DCGAN's 4x4 s2 128->64 at 64x8x8 1.04x (0.99-1.12), the U-Net's 2x2 s2 64->32 at
    16x16x16 1.28x (1.23-1.37), 32->16 at 16x32x32 1.63x (1.57-1.66).  Not used when dw is
    wanted too: the products below share one im2col of dout between dx and dw, and dx + dw by
    conv.py (its dw from its weight-gradient kernels) measured 0.96x, 0.96x, 1.06x; dw alone
    1.28x, 0.85x, 1.01x."""
    from cnnspec.kernels.conv import _cached_plan, _rules, conv2d_output_shape
    if groups != 1:
        return None
    geometry = (tuple(stride), tuple(pad), tuple(dilation))
    if tuple(conv2d_output_shape(out_shape, w_shape, *geometry)) != tuple(x_shape):
        return None
    plan = _cached_plan(tuple(out_shape), tuple(w_shape), *geometry, 1, _rules())
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
def _fill_bias(out, b, n0, n1):
    """out[n, f] = b[f] (0 without a bias) for n in [n0, n1)."""
    f_ = out.shape[1]
    p = out.shape[2] * out.shape[3]
    of = out.reshape(out.size)
    for n in range(n0, n1):
        for f in range(f_):
            v = b[f] if b.size > 0 else 0.0
            plane = of[(n * f_ + f) * p:(n * f_ + f + 1) * p]
            for e in range(p):
                plane[e] = v


@jit
def _forward(x, w, b, stride, pad, dilation, groups, out, g_max, buf, n0, n1):
    """Samples [n0, n1) in chunks of at most g_max."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    _, fg, kh, kw = w.shape
    cg = c_ // groups
    fk = fg * kh * kw
    hw = h_ * w_
    xc = buf[:c_ * g_max * hw]
    col = buf[c_ * g_max * hw:(c_ + fk * groups) * g_max * hw]
    wf = w.reshape(w.size)
    _fill_bias(out, b, n0, n1)
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
    if workspace.size < threads * per:
        raise ValueError(f"conv_transpose2d workspace too small: {workspace.size} elements, "
                         f"need {threads * per} (conv_transpose2d_workspace_size)")
    return threads, g_max, per


def _check_lanes(geo, workspace, threads):
    from cnnspec.kernels import conv_lanes
    need = conv_lanes.workspace_size(geo, threads)
    if workspace.size < need:
        raise ValueError(f"conv_transpose2d workspace too small: {workspace.size} elements, "
                         f"need {need} (conv_transpose2d_workspace_size)")


def conv_transpose2d_forward_into(x, w, b, stride, pad, output_pad, dilation, groups, out,
                                  workspace):
    """out (N, F, OH, OW) = the transposed convolution of x (N, C, H, W) by w (C, F/groups,
    KH, KW), + b (F,) or None.  ``output_pad`` only sets out's size (given by the caller's
    buffer).  See the package docstring for conventions."""
    macs = x.size * w.shape[1] * w.shape[2] * w.shape[3]
    geo = _lanes_geometry("forward", x.shape, w.shape, stride, pad, dilation, groups, out.shape,
                          x.dtype)
    if geo is not None:
        from cnnspec.kernels import conv_lanes
        threads = _threads(x.shape[0], macs)
        _check_lanes(geo, workspace, threads)
        conv_lanes.run(geo, x, w, b, False, out, workspace, threads)
        return
    threads, g_max, per = _plan(x, w, groups, workspace, macs)
    b = _empty(x.dtype)[0] if b is None else b
    run_split(_forward, x.shape[0], threads, lambda t, lo, hi: (
        x, w, b, stride, pad, dilation, groups, out, g_max,
        workspace[t * per:(t + 1) * per], lo, hi), dynamic=True)


def conv_transpose2d_backward_into(dout, x, w, stride, pad, output_pad, dilation, groups, dx, dw,
                                   db, workspace, accumulate=False):
    """dx (+)= dL/dx, dw = dL/dw, db = dL/db (each may be None: not computed)."""
    macs = x.size * w.shape[1] * w.shape[2] * w.shape[3]
    geo = None if dx is None else _lanes_geometry("dx", x.shape, w.shape, stride, pad, dilation,
                                                  groups, dout.shape, x.dtype)
    if geo is not None:
        # dx: conv_lanes.py's gather of the adjoint convolution (see _lanes_geometry)
        from cnnspec.kernels import conv_lanes
        threads = _threads(x.shape[0], macs)
        _check_lanes(geo, workspace, threads)
        conv_lanes.run(geo, dout, w, None, accumulate, dx, workspace, threads)
        dx = None
    rows = None if dw is None else _rows_geometry(dout.shape, x.shape, w.shape, stride, pad,
                                                  dilation, groups)
    if (dx is not None and not accumulate and (dw is None or rows is not None) and _adjoint_plan(
            dout.shape, x.shape, w.shape, stride, pad, dilation, groups) is not None):
        # dx: conv.py's direct forward of the adjoint convolution (see _adjoint_plan)
        from cnnspec.kernels.conv import conv2d_forward_into
        conv2d_forward_into(dout, w, None, tuple(stride), tuple(pad), tuple(dilation), 1, dx,
                            workspace)
        dx = None
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
