"""Transposed convolution (PyTorch's ConvTranspose1d/2d), forward and backward, on conv.py.

    out[n, f, h*sh + i*dh - top, w*sw + j*dw - left] += x[n, c, h, w] * w[c, f - g*Fg, i, j]

for input channel c in group g (Cg = C/groups input and Fg = F/groups output channels per group),
plus b[f]; w is (C, F/groups, KH, KW), PyTorch's layout.  Output size per axis:
``(in - 1)*stride - pad_before - pad_after + dilation*(k - 1) + output_pad + 1``: ``pad`` crops
the full output, ``output_pad`` adds rows and columns at the bottom and right.

A transposed convolution is the adjoint of a convolution with the same weights.  Read w as a
convolution's weights (filters = C, channels per group = F/groups); that convolution maps
(N, F, OH, OW) to (N, C, H, W) with the same stride, padding (top, bottom - oh_pad, left,
right - ow_pad) and dilation.  Then

* forward:  out = the input gradient of that convolution for ``dout = x`` (col2im: the conv's
  backward kernels, kn2row on stride phases, ...);
* backward: dx = that convolution of dout (a conv forward);
            dw = its weight gradient with input dout and output gradient x;
            db = the sums of dout over N, OH, OW.

When output_pad exceeds the bottom (right) padding, the last output_pad - pad rows (columns) are
beyond every input's reach: the convolution runs on the rows before them (``_view``) and they
only get the bias.  Its results go through a buffer of that size in the workspace, and so does dx
with ``accumulate=True`` (a conv forward overwrites its output).
"""
import numpy as np

from cnnspec.kernels._jit import jit, sum64
from cnnspec.kernels.conv import (_empty, conv2d_backward_into, conv2d_forward_into,
                                  conv2d_workspace_size)


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


def _view(out_shape, pad, output_pad):
    """The convolution this transposed convolution is the adjoint of: its input shape (out's
    rows and columns within some input's reach; a side may be 0 when the padding crops every
    one of them) and its padding."""
    n, f, oh, ow = out_shape
    zh, zw = max(0, output_pad[0] - pad[1]), max(0, output_pad[1] - pad[3])
    return ((n, f, max(0, oh - zh), max(0, ow - zw)),
            (pad[0], max(0, pad[1] - output_pad[0]), pad[2], max(0, pad[3] - output_pad[1])))


def conv_transpose2d_workspace_size(x_shape, w_shape, stride, pad, output_pad, dilation=(1, 1),
                                    groups=1):
    """Elements of the scratch ``workspace`` (x's dtype) that forward and backward need."""
    out_shape = conv_transpose2d_output_shape(x_shape, w_shape, stride, pad, output_pad,
                                              dilation, groups)
    view_shape, view_pad = _view(out_shape, pad, output_pad)
    size = conv2d_workspace_size(view_shape, w_shape, stride, view_pad, dilation, groups)
    if view_shape != out_shape:
        size += int(np.prod(view_shape))
    return size + int(np.prod(x_shape))


@jit
def _place(view, b, out):
    """out = view in its top-left corner and the bias everywhere (b empty: no bias)."""
    n_, f_, oh_, ow_ = out.shape
    vh, vw = view.shape[2], view.shape[3]
    for n in range(n_):
        for f in range(f_):
            bias = b[f] if b.size > 0 else 0.0
            for h in range(oh_):
                row = out[n, f, h]
                if h < vh:
                    src = view[n, f, h]
                    for e in range(vw):
                        row[e] = src[e] + bias
                    for e in range(vw, ow_):
                        row[e] = bias
                else:
                    for e in range(ow_):
                        row[e] = bias


@jit
def _add_bias(out, b):
    n_, f_ = out.shape[0], out.shape[1]
    p = out.shape[2] * out.shape[3]
    of = out.reshape(out.size)
    for n in range(n_):
        for f in range(f_):
            plane = of[(n * f_ + f) * p:(n * f_ + f + 1) * p]
            for e in range(p):
                plane[e] += b[f]


@jit
def _crop(src, dst):
    """dst = src's top-left corner (dst's shape)."""
    n_, f_, vh, vw = dst.shape
    for n in range(n_):
        for f in range(f_):
            for h in range(vh):
                s, d = src[n, f, h], dst[n, f, h]
                for e in range(vw):
                    d[e] = s[e]


@jit
def _add_into(src, dst):
    s, d = src.reshape(src.size), dst.reshape(dst.size)
    for e in range(d.size):
        d[e] += s[e]


@jit
def _bias_grad(dout, db):
    """db[f] = the sum of dout[:, f] (float64 sums)."""
    n_, f_ = dout.shape[0], dout.shape[1]
    p = dout.shape[2] * dout.shape[3]
    df = dout.reshape(dout.size)
    for f in range(f_):
        s = 0.0
        for n in range(n_):
            s += sum64(df[(n * f_ + f) * p:(n * f_ + f + 1) * p])
        db[f] = s


def _split_workspace(x, out_shape, view_shape, workspace):
    """(conv workspace, view buffer or None, dx buffer) carved from the workspace."""
    extra = 0 if view_shape == out_shape else int(np.prod(view_shape))
    conv_ws = workspace[:workspace.size - extra - x.size]
    view = None
    if view_shape != out_shape:
        view = workspace[conv_ws.size:conv_ws.size + extra].reshape(view_shape)
    return conv_ws, view, workspace[workspace.size - x.size:].reshape(x.shape)


def _check(x, w, stride, pad, output_pad, dilation, groups, workspace):
    need = conv_transpose2d_workspace_size(x.shape, w.shape, stride, pad, output_pad, dilation,
                                           groups)
    if workspace.size < need:
        raise ValueError(f"conv_transpose2d workspace too small: {workspace.size} elements, "
                         f"need {need} (conv_transpose2d_workspace_size)")
    return workspace[:need]


def conv_transpose2d_forward_into(x, w, b, stride, pad, output_pad, dilation, groups, out,
                                  workspace):
    """out (N, F, OH, OW) = the transposed convolution of x (N, C, H, W) by w (C, F/groups,
    KH, KW), + b (F,) or None.  See the package docstring for conventions."""
    workspace = _check(x, w, stride, pad, output_pad, dilation, groups, workspace)
    view_shape, view_pad = _view(out.shape, pad, output_pad)
    conv_ws, view, _ = _split_workspace(x, out.shape, view_shape, workspace)
    target = out if view is None else view
    if min(view_shape[2:]) > 0:
        # the conv's backward with x as its output gradient; ``target`` stands in for the conv's
        # input, which a backward without dw never reads (only its shape)
        conv2d_backward_into(x, target, w, stride, view_pad, dilation, groups, target, None, None,
                             conv_ws)
    if view is not None:                    # rows/columns beyond the inputs' reach: bias only
        _place(view, _empty(out.dtype)[0] if b is None else b, out)
    elif b is not None:
        _add_bias(out, b)


def conv_transpose2d_backward_into(dout, x, w, stride, pad, output_pad, dilation, groups, dx, dw,
                                   db, workspace, accumulate=False):
    """dx (+)= dL/dx, dw = dL/dw, db = dL/db (each may be None: not computed)."""
    workspace = _check(x, w, stride, pad, output_pad, dilation, groups, workspace)
    view_shape, view_pad = _view(dout.shape, pad, output_pad)
    conv_ws, view, dx_buf = _split_workspace(x, dout.shape, view_shape, workspace)
    if db is not None:
        _bias_grad(dout, db)
    if min(view_shape[2:]) == 0:            # no input reaches any output
        if dx is not None and not accumulate:
            dx[...] = 0
        if dw is not None:
            dw[...] = 0
        return
    source = dout
    if view is not None:
        _crop(dout, view)
        source = view
    if dx is not None:
        target = dx_buf if accumulate else dx
        conv2d_forward_into(source, w, None, stride, view_pad, dilation, groups, target, conv_ws)
        if accumulate:
            _add_into(target, dx)
    if dw is not None:
        conv2d_backward_into(x, source, w, stride, view_pad, dilation, groups, None, dw, None,
                             conv_ws)
