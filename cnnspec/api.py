"""The layer API of layer-api.md, on the numba kernels of :mod:`cnnspec.kernels`.

Stateless functions on NumPy arrays, channels first, batch first.  Backward functions take the
forward inputs again (no cache object).  Inputs are never modified; outputs have the dtype of
x (of logits, pred or dout where there is no x): float32 or float64 (other dtypes compute in
float64).  ``db`` is None when ``b`` is None.  Bad shapes raise ValueError naming the function,
the argument and the shape.

The grader runs this module as if it were a student's submission; the engine's ``backend=``
mapping uses the same names.
"""
import threading

import numpy as np

from cnnspec import kernels as _k

__all__ = [
    "conv2d_forward", "conv2d_backward", "conv1d_forward", "conv1d_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "dense_forward", "dense_backward",
    "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward", "softmax_forward",
    "softmax_cross_entropy", "mse_loss",
    "batchnorm_forward", "batchnorm_backward", "dropout_forward", "dropout_backward",
    "conv_transpose2d_forward", "conv_transpose2d_backward",
    "upsample2d_forward", "upsample2d_backward",
    "bce_loss", "sigmoid_bce", "vae_sample_forward", "vae_sample_backward",
]


# -- scratch ------------------------------------------------------------------------------------

_scratch = threading.local()


def _workspace(size, dtype):
    """A scratch array of ``size`` elements, reused by this thread's later calls (the largest
    asked for is kept, per dtype).  A fresh one per call cost page faults: conv2d_backward on
    8x64x56x56, 3x3 64->64 (8 MB of workspace on 2 threads) took 767-991 per call, now 546 (its
    new dx and dw); its time against the engine's kernel calls moved within the noise of a
    shared machine (README, issue 16's fourth round)."""
    kept = getattr(_scratch, "arrays", None)
    if kept is None:
        kept = _scratch.arrays = {}
    dtype = np.dtype(dtype)
    if dtype not in kept or kept[dtype].size < size:
        kept[dtype] = np.empty(size, dtype)
    return kept[dtype][:size]


# -- argument checking, shared by every function -----------------------------------------------
# Each raises ValueError naming the function and the argument. Sizes are exact integers (a stride
# of 1.7 is refused, not truncated, as PyTorch refuses it), at most MAX_SIZE (the kernels index in
# 64-bit integers: products of larger sizes would overflow silently).

MAX_SIZE = 2 ** 31 - 1


def _dtype(a):
    dtype = np.asarray(a).dtype
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def _array(fn, name, a, dtype, ndim=None):
    """a as a C-contiguous array of dtype (a copy only if needed; never written to)."""
    if a is None:
        raise ValueError(f"{fn}: {name} is None")
    if np.iscomplexobj(a):
        raise ValueError(f"{fn}: {name} must be real, got complex values")
    a = np.asarray(a, dtype=dtype)         # not ascontiguousarray: it makes a 0-d array 1-D
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    if ndim is not None and a.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        want = ndim if isinstance(ndim, int) else " or ".join(map(str, ndim))
        raise ValueError(f"{fn}: {name} must be {want}-D, got shape {a.shape}")
    return a


def _number(fn, name, value):
    """A real number argument (eps, p, dkl; a 0-d array will do) as a Python float: anything else
    is refused by name."""
    kind = np.asarray(value).dtype.kind if np.ndim(value) == 0 and not isinstance(value, str) else ""
    if kind not in ("i", "u", "f"):
        raise ValueError(f"{fn}: {name} must be a number, got {value!r}")
    return float(value)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _ints(fn, name, value, n, minimum):
    """An int or a tuple of n ints (each >= minimum) as a tuple of n Python ints."""
    if type(value) is int and minimum <= value <= MAX_SIZE:      # the common cases, at once
        return (value,) * n
    if (type(value) is tuple and len(value) == n
            and all(type(v) is int and minimum <= v <= MAX_SIZE for v in value)):
        return value
    try:
        values = (value,) * n if np.ndim(value) == 0 else tuple(value)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: {name} must be an integer or {n} integers, got {value!r}") from None
    if len(values) != n:
        raise ValueError(f"{fn}: {name} must have {n} values, got {value!r}")
    if not all(_is_int(v) for v in values):
        raise ValueError(f"{fn}: {name} must be integers, got {value!r}")
    values = tuple(int(v) for v in values)
    if any(v < minimum for v in values):
        raise ValueError(f"{fn}: {name} values must be >= {minimum}, got {value!r}")
    if any(v > MAX_SIZE for v in values):
        raise ValueError(f"{fn}: {name} values must be at most {MAX_SIZE}, got {value!r}")
    return values


def _kernel_of(fn, name, shape):
    """The kernel size an array's trailing axes give (w's KH, KW): every axis >= 1."""
    if any(k < 1 for k in shape):
        raise ValueError(f"{fn}: {name} has a {'x'.join(map(str, shape))} kernel: every kernel size "
                         f"must be >= 1")
    return tuple(shape)


def _pool_pad(fn, kernel, pad):
    """Padding smaller than the kernel on every side (else a window could hold only padding)."""
    for i, k in enumerate(kernel):
        if max(pad[2 * i], pad[2 * i + 1]) >= k:
            raise ValueError(f"{fn}: pad {pad} must be smaller than the kernel {kernel} on every side")
    return pad


def _pad2d(fn, pad):
    """pad (top, bottom, left, right); an int or (ph, pw) also accepted."""
    if np.ndim(pad) == 1 and len(pad) == 2:
        pad = (pad[0], pad[0], pad[1], pad[1])
    return _ints(fn, "pad", pad, 4, 0)


def _same_shape(fn, name, a, shape):
    if a.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} has shape {a.shape}, expected {tuple(shape)}")


def _out_size(fn, what, size, k, stride, before, after, dilation=1):
    out = _k.conv_output_size(size, k, stride, before, after, dilation)
    if out < 1:
        raise ValueError(f"{fn}: output {what} would be {out} < 1 (input {size}, kernel {k}, "
                         f"stride {stride}, padding {before}+{after}, dilation {dilation})")
    return out


# -- convolution ----------------------------------------------------------------------------------


def _conv_args(fn, x, w, b, stride, pad, dilation, groups):
    dtype = _dtype(x)
    x = _array(fn, "x", x, dtype, 4)
    w = _array(fn, "w", w, dtype, 4)
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive integer, got {groups!r}")
    groups = int(groups)
    n, c, h, width = x.shape
    f, cg, kh, kw = w.shape
    _kernel_of(fn, "w", (kh, kw))
    if cg * groups != c:
        raise ValueError(f"{fn}: x has {c} channels but w of shape {w.shape} expects "
                         f"{cg * groups} (w.shape[1] * groups = {cg} * {groups})")
    if f % groups:
        raise ValueError(f"{fn}: w has {f} filters, not divisible by groups={groups}")
    if b is not None:
        b = _array(fn, "b", b, dtype, 1)
        _same_shape(fn, "b", b, (f,))
    stride = _ints(fn, "stride", stride, 2, 1)
    pad = _pad2d(fn, pad)
    dilation = _ints(fn, "dilation", dilation, 2, 1)
    oh = _out_size(fn, "height", h, kh, stride[0], pad[0], pad[1], dilation[0])
    ow = _out_size(fn, "width", width, kw, stride[1], pad[2], pad[3], dilation[1])
    return x, w, b, stride, pad, dilation, groups, (n, f, oh, ow)


def conv2d_forward(x, w, b, stride, pad, dilation=1, groups=1):
    """out (N, F, OH, OW) = cross-correlation of x (N, C, H, W) with w (F, C/groups, KH, KW)
    + b (F,); stride (sh, sw), pad (top, bottom, left, right)."""
    x, w, b, stride, pad, dilation, groups, shape = _conv_args(
        "conv2d_forward", x, w, b, stride, pad, dilation, groups)
    out = np.empty(shape, x.dtype)
    workspace = _workspace(_k.conv2d_workspace_size(x.shape, w.shape, stride, pad, dilation,
                                                    groups), x.dtype)
    _k.conv2d_forward_into(x, w, b, stride, pad, dilation, groups, out, workspace)
    return out


def conv2d_backward(dout, x, w, b, stride, pad, dilation=1, groups=1):
    """(dx, dw, db) of conv2d_forward for upstream gradient dout; db is None when b is None."""
    fn = "conv2d_backward"
    x, w, b, stride, pad, dilation, groups, shape = _conv_args(
        fn, x, w, b, stride, pad, dilation, groups)
    dout = _array(fn, "dout", dout, x.dtype, 4)
    _same_shape(fn, "dout", dout, shape)
    dx, dw = np.empty_like(x), np.empty_like(w)
    db = None if b is None else np.empty_like(b)
    workspace = _workspace(_k.conv2d_workspace_size(x.shape, w.shape, stride, pad, dilation,
                                                    groups), x.dtype)
    _k.conv2d_backward_into(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace)
    return dx, dw, db


def _conv1d_as_2d(fn, x, w, stride, pad, dilation):
    dtype = _dtype(x)
    x = _array(fn, "x", x, dtype, 3)
    w = _array(fn, "w", w, dtype, 3)
    _kernel_of(fn, "w", w.shape[2:])
    (s,) = _ints(fn, "stride", stride, 1, 1)
    left, right = _ints(fn, "pad", pad, 2, 0)
    (d,) = _ints(fn, "dilation", dilation, 1, 1)
    return x[:, :, None, :], w[:, :, None, :], (1, s), (0, 0, left, right), (1, d)


def conv1d_forward(x, w, b, stride, pad, dilation=1, groups=1):
    """out (N, F, OL) for x (N, C, L), w (F, C/groups, K), b (F,); pad (left, right)."""
    x4, w4, stride, pad, dilation = _conv1d_as_2d("conv1d_forward", x, w, stride, pad, dilation)
    try:
        return conv2d_forward(x4, w4, b, stride, pad, dilation, groups)[:, :, 0, :]
    except ValueError as e:
        raise ValueError(str(e).replace("conv2d_forward", "conv1d_forward")) from None


def conv1d_backward(dout, x, w, b, stride, pad, dilation=1, groups=1):
    """(dx, dw, db) of conv1d_forward; db is None when b is None."""
    fn = "conv1d_backward"
    x4, w4, stride, pad, dilation = _conv1d_as_2d(fn, x, w, stride, pad, dilation)
    dout = _array(fn, "dout", dout, x4.dtype, 3)
    try:
        dx, dw, db = conv2d_backward(dout[:, :, None, :], x4, w4, b, stride, pad, dilation,
                                     groups)
    except ValueError as e:
        raise ValueError(str(e).replace("conv2d_backward", fn)) from None
    return dx[:, :, 0, :], dw[:, :, 0, :], db


# -- pooling --------------------------------------------------------------------------------------


def _pool_args(fn, x, kernel, stride, pad):
    x = _array(fn, "x", x, _dtype(x), 4)
    kernel = _ints(fn, "kernel", kernel, 2, 1)
    stride = _ints(fn, "stride", stride, 2, 1)
    pad = _pool_pad(fn, kernel, _pad2d(fn, pad))
    n, c, h, w = x.shape
    oh = _out_size(fn, "height", h, kernel[0], stride[0], pad[0], pad[1])
    ow = _out_size(fn, "width", w, kernel[1], stride[1], pad[2], pad[3])
    return x, kernel, stride, pad, (n, c, oh, ow)


def _maxpool(fn, x, kernel, stride, pad):
    x, kernel, stride, pad, shape = _pool_args(fn, x, kernel, stride, pad)
    out = np.empty(shape, x.dtype)
    argmax = np.empty(shape, np.int64)
    _k.maxpool2d_forward_into(x, kernel, stride, pad, out, argmax)
    return x, out, argmax


def maxpool2d_forward(x, kernel, stride, pad):
    """out (N, C, OH, OW): max over each window of x (N, C, H, W); padding never wins."""
    return _maxpool("maxpool2d_forward", x, kernel, stride, pad)[1]


def maxpool2d_backward(dout, x, kernel, stride, pad):
    """dx: dout routed to the first maximum (row-major) of each window."""
    fn = "maxpool2d_backward"
    x, out, argmax = _maxpool(fn, x, kernel, stride, pad)
    dout = _array(fn, "dout", dout, x.dtype, 4)
    _same_shape(fn, "dout", dout, out.shape)
    dx = np.empty_like(x)
    _k.maxpool2d_backward_into(dout, argmax, dx)
    return dx


def avgpool2d_forward(x, kernel, stride, pad):
    """out (N, C, OH, OW): mean over each window, padded zeros counted."""
    x, kernel, stride, pad, shape = _pool_args("avgpool2d_forward", x, kernel, stride, pad)
    out = np.empty(shape, x.dtype)
    _k.avgpool2d_forward_into(x, kernel, stride, pad, out)
    return out


def avgpool2d_backward(dout, x, kernel, stride, pad):
    fn = "avgpool2d_backward"
    x, kernel, stride, pad, shape = _pool_args(fn, x, kernel, stride, pad)
    dout = _array(fn, "dout", dout, x.dtype, 4)
    _same_shape(fn, "dout", dout, shape)
    dx = np.empty_like(x)
    _k.avgpool2d_backward_into(dout, kernel, stride, pad, dx)
    return dx


# -- dense ----------------------------------------------------------------------------------------


def _dense_args(fn, x, w, b):
    dtype = _dtype(x)
    x = _array(fn, "x", x, dtype, 2)
    w = _array(fn, "w", w, dtype, 2)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"{fn}: x has {x.shape[1]} features but w of shape {w.shape} "
                         f"expects {w.shape[0]} (w is (D, M))")
    if b is not None:
        b = _array(fn, "b", b, dtype, 1)
        _same_shape(fn, "b", b, (w.shape[1],))
    return x, w, b


def dense_forward(x, w, b):
    """out (N, M) = x (N, D) @ w (D, M) + b (M,)."""
    x, w, b = _dense_args("dense_forward", x, w, b)
    out = np.empty((x.shape[0], w.shape[1]), x.dtype)
    _k.dense_forward_into(x, w, b, out)
    return out


def dense_backward(dout, x, w, b):
    """(dx, dw, db) of dense_forward; db is None when b is None."""
    fn = "dense_backward"
    x, w, b = _dense_args(fn, x, w, b)
    dout = _array(fn, "dout", dout, x.dtype, 2)
    _same_shape(fn, "dout", dout, (x.shape[0], w.shape[1]))
    dx, dw = np.empty_like(x), np.empty_like(w)
    db = None if b is None else np.empty_like(b)
    _k.dense_backward_into(dout, x, w, dx, dw, db)
    return dx, dw, db


# -- activations ----------------------------------------------------------------------------------


def _unary(fn, x):
    return _array(fn, "x", x, _dtype(x))


def _grad_pair(fn, dout, x):
    x = _unary(fn, x)
    dout = _array(fn, "dout", dout, x.dtype)
    _same_shape(fn, "dout", dout, x.shape)
    return dout, x


def relu_forward(x):
    x = _unary("relu_forward", x)
    out = np.empty_like(x)
    _k.relu_forward_into(x, out)
    return out


def relu_backward(dout, x):
    """dout where x > 0, else 0 (the gradient at 0 is 0)."""
    dout, x = _grad_pair("relu_backward", dout, x)
    dx = np.empty_like(x)
    _k.relu_backward_into(dout, x, dx)          # x and relu(x) have the same sign pattern
    return dx


def sigmoid_forward(x):
    x = _unary("sigmoid_forward", x)
    out = np.empty_like(x)
    _k.sigmoid_forward_into(x, out)
    return out


def sigmoid_backward(dout, x):
    dout, x = _grad_pair("sigmoid_backward", dout, x)
    y = np.empty_like(x)
    _k.sigmoid_forward_into(x, y)
    _k.sigmoid_backward_into(dout, y, y)        # in place: dx overwrites y
    return y


def tanh_forward(x):
    x = _unary("tanh_forward", x)
    out = np.empty_like(x)
    _k.tanh_forward_into(x, out)
    return out


def tanh_backward(dout, x):
    dout, x = _grad_pair("tanh_backward", dout, x)
    y = np.empty_like(x)
    _k.tanh_forward_into(x, y)
    _k.tanh_backward_into(dout, y, y)
    return y


def softmax_forward(x):
    """Softmax over axis 1 of x (N, C, ...)."""
    x = _array("softmax_forward", "x", x, _dtype(x), (2, 3, 4))
    out = np.empty_like(x)
    _k.softmax_forward_into(x, out)
    return out


# -- losses ---------------------------------------------------------------------------------------


def softmax_cross_entropy(logits, y):
    """(loss, dlogits): mean cross-entropy of softmax(logits (N, K)) against int labels y (N,)."""
    fn = "softmax_cross_entropy"
    logits = _array(fn, "logits", logits, _dtype(logits), 2)
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{fn}: y must have shape ({logits.shape[0]},), got {labels.shape}")
    whole = labels.dtype.kind in "biu" or (labels.dtype.kind == "f" and bool(
        np.all(np.isfinite(labels)) and np.all(np.mod(labels, 1) == 0)))
    if not whole:
        raise ValueError(f"{fn}: y must hold integer class labels")
    dlogits = np.empty_like(logits)
    loss = _k.softmax_cross_entropy_into(logits, labels.astype(np.int64), dlogits)
    return loss, dlogits


def mse_loss(pred, target):
    """(loss, dpred): mean of (pred - target)^2 over all elements."""
    fn = "mse_loss"
    pred = _array(fn, "pred", pred, _dtype(pred))
    target = _array(fn, "target", target, pred.dtype)
    _same_shape(fn, "target", target, pred.shape)
    dpred = np.empty_like(pred)
    loss = _k.mse_loss_into(pred, target, dpred)
    return loss, dpred


# -- batch normalisation, dropout -----------------------------------------------------------------


def _bn_args(fn, x, gamma, beta, eps):
    dtype = _dtype(x)
    x = _array(fn, "x", x, dtype, (2, 3, 4))
    gamma = _array(fn, "gamma", gamma, dtype, 1)
    beta = _array(fn, "beta", beta, dtype, 1)
    _same_shape(fn, "gamma", gamma, (x.shape[1],))
    _same_shape(fn, "beta", beta, (x.shape[1],))
    eps = _number(fn, "eps", eps)
    if x.shape[1] and x.size // x.shape[1] < 2:
        raise ValueError(f"{fn}: batch statistics need more than one value per channel, "
                         f"got x of shape {x.shape}")
    if not eps > 0:
        raise ValueError(f"{fn}: eps must be positive, got {eps!r}")
    mean = np.empty(x.shape[1])
    invstd = np.empty(x.shape[1])
    out = np.empty_like(x)
    if x.shape[1] == 0:                         # no channels: nothing to normalise, as PyTorch
        return x, gamma, out, mean, invstd
    _k.batchnorm_forward_train_into(x, gamma, beta, eps, 0.0, None, None, out, mean,
                                    invstd)
    return x, gamma, out, mean, invstd


def batchnorm_forward(x, gamma, beta, eps):
    """Training-mode batch normalisation of x (N, D) per feature or (N, C, ...) per channel."""
    return _bn_args("batchnorm_forward", x, gamma, beta, eps)[2]


def batchnorm_backward(dout, x, gamma, beta, eps):
    """(dx, dgamma, dbeta) of batchnorm_forward."""
    fn = "batchnorm_backward"
    x, gamma, _, mean, invstd = _bn_args(fn, x, gamma, beta, eps)
    dout = _array(fn, "dout", dout, x.dtype)
    _same_shape(fn, "dout", dout, x.shape)
    dx = np.empty_like(x)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(gamma)
    if x.shape[1] == 0:
        return dx, dgamma, dbeta
    _k.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dgamma, dbeta)
    return dx, dgamma, dbeta


def _dropout_args(fn, name, a, p, mask):
    a = _array(fn, name, a, _dtype(a))
    mask = np.ascontiguousarray(mask, dtype=bool)
    _same_shape(fn, "mask", mask, a.shape)
    p = _number(fn, "p", p)
    if not 0 <= p < 1:
        raise ValueError(f"{fn}: p must be in [0, 1), got {p!r}")
    return a, mask, p


def dropout_forward(x, p, mask):
    """out = x * mask / (1 - p); mask is the boolean keep-mask (same shape as x)."""
    x, mask, p = _dropout_args("dropout_forward", "x", x, p, mask)
    out = np.empty_like(x)
    _k.dropout_forward_into(x, mask, p, out)
    return out


def dropout_backward(dout, p, mask):
    dout, mask, p = _dropout_args("dropout_backward", "dout", dout, p, mask)
    dx = np.empty_like(dout)
    _k.dropout_backward_into(dout, mask, p, dx)
    return dx


# -- encoder-decoders and generative networks (dsl.md §10) ----------------------------------------


def _conv_transpose_args(fn, x, w, b, stride, pad, output_pad, dilation, groups):
    dtype = _dtype(x)
    x = _array(fn, "x", x, dtype, 4)
    w = _array(fn, "w", w, dtype, 4)
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive integer, got {groups!r}")
    groups = int(groups)
    n, c, h, width = x.shape
    cw, fg, kh, kw = w.shape
    if cw != c:
        raise ValueError(f"{fn}: x has {c} channels but w of shape {w.shape} expects {cw} "
                         f"(w is (C, F/groups, KH, KW), PyTorch's ConvTranspose2d layout)")
    if c % groups:
        raise ValueError(f"{fn}: x has {c} channels, not divisible by groups={groups}")
    if min(fg, kh, kw) < 1:
        raise ValueError(f"{fn}: w of shape {w.shape} has no filters or an empty kernel")
    if b is not None:
        b = _array(fn, "b", b, dtype, 1)
        _same_shape(fn, "b", b, (fg * groups,))
    stride = _ints(fn, "stride", stride, 2, 1)
    pad = _pad2d(fn, pad)
    output_pad = _ints(fn, "output_pad", output_pad, 2, 0)
    dilation = _ints(fn, "dilation", dilation, 2, 1)
    for axis in range(2):
        if output_pad[axis] >= stride[axis] and output_pad[axis] >= dilation[axis]:
            raise ValueError(f"{fn}: output_pad must be smaller than the stride or the dilation "
                             f"(as PyTorch), got output_pad={output_pad} with stride={stride}, "
                             f"dilation={dilation}")
    shape = _k.conv_transpose2d_output_shape(x.shape, w.shape, stride, pad, output_pad,
                                             dilation, groups)
    for size, what, axis in ((shape[2], "height", 0), (shape[3], "width", 1)):
        if size < 1:
            raise ValueError(f"{fn}: output {what} would be {size} < 1 (input {x.shape[2 + axis]}, "
                             f"kernel {w.shape[2 + axis]}, stride {stride[axis]}, padding "
                             f"{pad[2 * axis]}+{pad[2 * axis + 1]} cropped, output_pad "
                             f"{output_pad[axis]})")
    workspace = _workspace(_k.conv_transpose2d_workspace_size(x.shape, w.shape, stride, pad,
                                                              output_pad, dilation, groups), dtype)
    return x, w, b, (stride, pad, output_pad, dilation, groups), shape, workspace


def conv_transpose2d_forward(x, w, b, stride, pad, output_pad, dilation=1, groups=1):
    """out (N, F, OH, OW): the transposed convolution of x (N, C, H, W) by w (C, F/groups, KH, KW)
    + b (F,); stride (sh, sw); pad (top, bottom, left, right) cropped from the output;
    output_pad (oh, ow) added at the bottom and right; OH = (H-1)*sh - top - bottom + KH + oh."""
    x, w, b, geometry, shape, workspace = _conv_transpose_args(
        "conv_transpose2d_forward", x, w, b, stride, pad, output_pad, dilation, groups)
    out = np.empty(shape, x.dtype)
    _k.conv_transpose2d_forward_into(x, w, b, *geometry, out, workspace)
    return out


def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad, dilation=1, groups=1):
    """(dx, dw, db) of conv_transpose2d_forward for upstream gradient dout; db is None when b
    is None."""
    fn = "conv_transpose2d_backward"
    x, w, b, geometry, shape, workspace = _conv_transpose_args(
        fn, x, w, b, stride, pad, output_pad, dilation, groups)
    dout = _array(fn, "dout", dout, x.dtype, 4)
    _same_shape(fn, "dout", dout, shape)
    dx, dw = np.empty_like(x), np.empty_like(w)
    db = None if b is None else np.empty_like(b)
    _k.conv_transpose2d_backward_into(dout, x, w, *geometry, dx, dw, db, workspace)
    return dx, dw, db


_UPSAMPLE_MODES = ("nearest", "bilinear")


def _upsample_args(fn, x, scale, mode):
    x = _array(fn, "x", x, _dtype(x), 4)
    scale = _ints(fn, "scale", scale, 2, 1)
    if mode not in _UPSAMPLE_MODES:
        raise ValueError(f"{fn}: mode must be \"nearest\" or \"bilinear\", got {mode!r}")
    n, c, h, w = x.shape
    return x, scale, (n, c, h * scale[0], w * scale[1])


def upsample2d_forward(x, scale, mode):
    """out (N, C, H*sh, W*sw): x (N, C, H, W) upsampled by integer factors scale (sh, sw);
    mode "nearest", or "bilinear" with align_corners=False (PyTorch's interpolate)."""
    x, scale, shape = _upsample_args("upsample2d_forward", x, scale, mode)
    out = np.empty(shape, x.dtype)
    _k.upsample2d_forward_into(x, scale, mode, out)
    return out


def upsample2d_backward(dout, x, scale, mode):
    """dx of upsample2d_forward for upstream gradient dout."""
    fn = "upsample2d_backward"
    x, scale, shape = _upsample_args(fn, x, scale, mode)
    dout = _array(fn, "dout", dout, x.dtype, 4)
    _same_shape(fn, "dout", dout, shape)
    dx = np.empty_like(x)
    _k.upsample2d_backward_into(dout, scale, mode, dx)
    return dx


def _pair(fn, first, a, second, b):
    a = _array(fn, first, a, _dtype(a))
    b = _array(fn, second, b, a.dtype)
    _same_shape(fn, second, b, a.shape)
    return a, b


def _in_unit_interval(fn, name, a):
    if not np.all((a >= 0) & (a <= 1)):
        bad = np.flatnonzero(~((a >= 0) & (a <= 1)))[0]
        raise ValueError(f"{fn}: {name} must hold values in [0, 1], got {a.reshape(-1)[bad]!r} "
                         f"at flat index {bad}")


def bce_loss(pred, target):
    """(loss, dpred): mean binary cross-entropy of probabilities pred against target (both in
    [0, 1], same shape); each log clamped at -100, as PyTorch's binary_cross_entropy."""
    fn = "bce_loss"
    pred, target = _pair(fn, "pred", pred, "target", target)
    _in_unit_interval(fn, "pred", pred)
    _in_unit_interval(fn, "target", target)
    dpred = np.empty_like(pred)
    loss = _k.bce_loss_into(pred, target, dpred)
    return loss, dpred


def sigmoid_bce(logits, target):
    """(loss, dlogits): mean binary cross-entropy of sigmoid(logits) against target, computed
    from the logits (PyTorch's binary_cross_entropy_with_logits): stable for |logits| up to 1e4."""
    logits, target = _pair("sigmoid_bce", "logits", logits, "target", target)
    dlogits = np.empty_like(logits)
    loss = _k.sigmoid_bce_into(logits, target, dlogits)
    return loss, dlogits


def _sample_args(fn, mu, logvar, eps):
    dtype = _dtype(mu)
    mu = _array(fn, "mu", mu, dtype)
    if mu.ndim < 1 or mu.shape[0] < 1:
        raise ValueError(f"{fn}: mu must be (N, ...) with a batch of at least 1, got shape "
                         f"{mu.shape}")
    logvar = _array(fn, "logvar", logvar, dtype)
    eps = _array(fn, "eps", eps, dtype)
    _same_shape(fn, "logvar", logvar, mu.shape)
    _same_shape(fn, "eps", eps, mu.shape)
    return mu, logvar, eps


def vae_sample_forward(mu, logvar, eps):
    """(z, kl): z = mu + exp(logvar/2) * eps; kl = the mean over the batch of
    sum(-(1 + logvar - mu^2 - exp(logvar))/2) over each sample's features (a float)."""
    mu, logvar, eps = _sample_args("vae_sample_forward", mu, logvar, eps)
    z = np.empty_like(mu)
    kl = _k.vae_sample_forward_into(mu, logvar, eps, z)
    return z, kl


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    """(dmu, dlogvar) of vae_sample_forward for the gradients dz (of z) and dkl (of kl, a
    number)."""
    fn = "vae_sample_backward"
    mu, logvar, eps = _sample_args(fn, mu, logvar, eps)
    dz = _array(fn, "dz", dz, mu.dtype)
    _same_shape(fn, "dz", dz, mu.shape)
    dkl = _number(fn, "dkl", dkl)
    dmu, dlogvar = np.empty_like(mu), np.empty_like(mu)
    _k.vae_sample_backward_into(dz, dkl, mu, logvar, eps, dmu, dlogvar)
    return dmu, dlogvar
