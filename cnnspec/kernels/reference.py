"""Plain NumPy reference for every kernel: straightforward slicing and einsum, float64.

Written to be obviously right rather than fast, and independently of the kernels (no im2col, no
wide grids); the tests hold the kernels to it.  Same argument conventions as ``cnnspec.api``
(pad (top, bottom, left, right), stride (sh, sw), kernel (kh, kw)), plus dilation and groups
for convolution and the output size for pooling (ceil mode).
"""
import numpy as np


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


# -- convolution --------------------------------------------------------------------------------


def _tap(xp, i, j, stride, dilation, oh, ow):
    """The (N, C, OH, OW) slice of padded input xp that kernel tap (i, j) multiplies."""
    h0, w0 = i * dilation[0], j * dilation[1]
    return xp[:, :, h0:h0 + stride[0] * (oh - 1) + 1:stride[0],
              w0:w0 + stride[1] * (ow - 1) + 1:stride[1]]


def conv2d_forward(x, w, b, stride, pad, dilation=(1, 1), groups=1):
    x, w, b = _f64(x, w, b)
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    n, c, hp, wp = xp.shape
    f, cg, kh, kw = w.shape
    oh = 1 + (hp - dilation[0] * (kh - 1) - 1) // stride[0]
    ow = 1 + (wp - dilation[1] * (kw - 1) - 1) // stride[1]
    fg = f // groups
    out = np.zeros((n, f, oh, ow))
    for g in range(groups):
        xg, wg = xp[:, g * cg:(g + 1) * cg], w[g * fg:(g + 1) * fg]
        for i in range(kh):
            for j in range(kw):
                out[:, g * fg:(g + 1) * fg] += np.einsum(
                    "nchw,fc->nfhw", _tap(xg, i, j, stride, dilation, oh, ow), wg[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv2d_backward(dout, x, w, b, stride, pad, dilation=(1, 1), groups=1):
    dout, x, w = _f64(dout, x, w)
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    n, f, oh, ow = dout.shape
    _, cg, kh, kw = w.shape
    fg = f // groups
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for g in range(groups):
        dg = dout[:, g * fg:(g + 1) * fg]
        for i in range(kh):
            for j in range(kw):
                window = _tap(xp[:, g * cg:(g + 1) * cg], i, j, stride, dilation, oh, ow)
                dw[g * fg:(g + 1) * fg, :, i, j] = np.einsum("nfhw,nchw->fc", dg, window)
                _tap(dxp[:, g * cg:(g + 1) * cg], i, j, stride, dilation, oh, ow)[...] += \
                    np.einsum("nfhw,fc->nchw", dg, w[g * fg:(g + 1) * fg, :, i, j])
    dx = dxp[:, :, pad[0]:dxp.shape[2] - pad[1], pad[2]:dxp.shape[3] - pad[3]]
    db = None if b is None else dout.sum(axis=(0, 2, 3))
    return dx, dw, db


def conv1d_forward(x, w, b, stride, pad, dilation=1, groups=1):
    out = conv2d_forward(np.asarray(x)[:, :, None, :], np.asarray(w)[:, :, None, :], b,
                         (1, stride), (0, 0, pad[0], pad[1]), (1, dilation), groups)
    return out[:, :, 0, :]


def conv1d_backward(dout, x, w, b, stride, pad, dilation=1, groups=1):
    dx, dw, db = conv2d_backward(np.asarray(dout)[:, :, None, :], np.asarray(x)[:, :, None, :],
                                 np.asarray(w)[:, :, None, :], b, (1, stride),
                                 (0, 0, pad[0], pad[1]), (1, dilation), groups)
    return dx[:, :, 0, :], dw[:, :, 0, :], db


# -- pooling ------------------------------------------------------------------------------------


def pool_output_size(size, k, s, before, after, ceil=False):
    """Output length; ceil mode keeps a last window only if it starts inside input + left pad."""
    span = size + before + after - k
    out = 1 + (-(-span // s) if ceil else span // s)
    if ceil and (out - 1) * s >= size + before:
        out -= 1
    return out


def _windows(x, kernel, stride, pad, out_hw, fill):
    """(N, C, OH, OW, kh*kw) windows over x padded with ``fill``, extended with ``fill`` for
    windows that hang past the padded input (ceil mode)."""
    oh, ow = out_hw
    n, c, h, w = x.shape
    need_h = (oh - 1) * stride[0] + kernel[0]
    need_w = (ow - 1) * stride[1] + kernel[1]
    bottom = max(pad[1], need_h - h - pad[0])
    right = max(pad[3], need_w - w - pad[2])
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], bottom), (pad[2], right)), constant_values=fill)
    win = np.empty((n, c, oh, ow, kernel[0] * kernel[1]))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            win[..., i * kernel[1] + j] = xp[:, :, i:i + stride[0] * (oh - 1) + 1:stride[0],
                                             j:j + stride[1] * (ow - 1) + 1:stride[1]]
    return win


def _default_out(x, kernel, stride, pad, out_hw):
    if out_hw is not None:
        return out_hw
    return (pool_output_size(x.shape[2], kernel[0], stride[0], pad[0], pad[1]),
            pool_output_size(x.shape[3], kernel[1], stride[1], pad[2], pad[3]))


def maxpool2d_forward(x, kernel, stride, pad, out_hw=None):
    (x,) = _f64(x)
    out_hw = _default_out(x, kernel, stride, pad, out_hw)
    return _windows(x, kernel, stride, pad, out_hw, -np.inf).max(axis=-1)


def maxpool2d_backward(dout, x, kernel, stride, pad, out_hw=None):
    dout, x = _f64(dout, x)
    out_hw = _default_out(x, kernel, stride, pad, out_hw)
    first = _windows(x, kernel, stride, pad, out_hw, -np.inf).argmax(axis=-1)  # first max
    # padding never wins: where it ties (input all -inf), the first input element takes it
    real = _windows(np.ones_like(x), kernel, stride, pad, out_hw, 0.0) > 0
    won_by_padding = ~np.take_along_axis(real, first[..., None], axis=-1)[..., 0]
    first = np.where(won_by_padding, real.argmax(axis=-1), first)
    dx = np.zeros_like(x)
    n, c, oh, ow = dout.shape
    for a in range(oh):
        for b in range(ow):
            i, j = np.divmod(first[:, :, a, b], kernel[1])
            h = a * stride[0] - pad[0] + i
            w = b * stride[1] - pad[2] + j
            for nn in range(n):
                for cc in range(c):
                    dx[nn, cc, h[nn, cc], w[nn, cc]] += dout[nn, cc, a, b]
    return dx


def _avg_divisors(size, k, s, before, after, out):
    """PyTorch's count_include_pad divisor along one axis: the window clipped to the padded
    input (start - before ... min(start + k, size + after))."""
    start = np.arange(out) * s - before
    return np.minimum(start + k, size + after) - start


def avgpool2d_forward(x, kernel, stride, pad, out_hw=None, divide=True):
    (x,) = _f64(x)
    oh, ow = _default_out(x, kernel, stride, pad, out_hw)
    total = _windows(x, kernel, stride, pad, (oh, ow), 0.0).sum(axis=-1)
    if not divide:
        return total
    dh = _avg_divisors(x.shape[2], kernel[0], stride[0], pad[0], pad[1], oh)
    dw = _avg_divisors(x.shape[3], kernel[1], stride[1], pad[2], pad[3], ow)
    return total / (dh[:, None] * dw[None, :])


def avgpool2d_backward(dout, x, kernel, stride, pad, out_hw=None, divide=True):
    dout, x = _f64(dout, x)
    n, c, oh, ow = dout.shape
    h, w = x.shape[2], x.shape[3]
    g = dout
    if divide:
        dh = _avg_divisors(h, kernel[0], stride[0], pad[0], pad[1], oh)
        dw = _avg_divisors(w, kernel[1], stride[1], pad[2], pad[3], ow)
        g = dout / (dh[:, None] * dw[None, :])
    big_h = max(h + pad[0] + pad[1], (oh - 1) * stride[0] + kernel[0])
    big_w = max(w + pad[2] + pad[3], (ow - 1) * stride[1] + kernel[1])
    dxp = np.zeros((n, c, big_h, big_w))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            dxp[:, :, i:i + stride[0] * (oh - 1) + 1:stride[0],
                j:j + stride[1] * (ow - 1) + 1:stride[1]] += g
    return dxp[:, :, pad[0]:pad[0] + h, pad[2]:pad[2] + w]


def sumpool2d_forward(x, kernel, stride, pad, out_hw=None):
    return avgpool2d_forward(x, kernel, stride, pad, out_hw, divide=False)


def sumpool2d_backward(dout, x, kernel, stride, pad, out_hw=None):
    return avgpool2d_backward(dout, x, kernel, stride, pad, out_hw, divide=False)


def global_avgpool_forward(x):
    (x,) = _f64(x)
    return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2)


def global_avgpool_backward(dout, x):
    (x,) = _f64(x)
    s = x[0, 0].size
    return np.broadcast_to(np.asarray(dout, np.float64).reshape(x.shape[0], x.shape[1],
                                                                *([1] * (x.ndim - 2))) / s,
                           x.shape).copy()


def global_maxpool_forward(x):
    (x,) = _f64(x)
    return x.reshape(x.shape[0], x.shape[1], -1).max(axis=2)


def global_maxpool_backward(dout, x):
    (x,) = _f64(x)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    dx = np.zeros_like(flat)
    idx = flat.argmax(axis=2)
    np.put_along_axis(dx, idx[:, :, None],
                      np.asarray(dout, np.float64).reshape(x.shape[0], x.shape[1], 1), axis=2)
    return dx.reshape(x.shape)


# -- dense, activations, softmax -----------------------------------------------------------------


def dense_forward(x, w, b):
    x, w, b = _f64(x, w, b)
    return x @ w + (0 if b is None else b)


def dense_backward(dout, x, w, b):
    dout, x, w = _f64(dout, x, w)
    return dout @ w.T, x.T @ dout, None if b is None else dout.sum(axis=0)


def relu_forward(x):
    (x,) = _f64(x)
    return np.where(x <= 0, 0.0, x)              # NaN stays NaN, as in PyTorch


def relu_backward(dout, x):
    dout, x = _f64(dout, x)
    return np.where(x <= 0, 0.0, dout)


def leaky_relu_forward(x, slope=0.01):
    (x,) = _f64(x)
    return np.where(x > 0, x, slope * x)


def leaky_relu_backward(dout, x, slope=0.01):
    dout, x = _f64(dout, x)
    return np.where(x > 0, dout, slope * dout)


def sigmoid_forward(x):
    (x,) = _f64(x)
    return 0.5 * (1 + np.tanh(x / 2))            # = 1 / (1 + exp(-x)), without overflow


def sigmoid_backward(dout, x):
    s = sigmoid_forward(x)
    return np.asarray(dout, np.float64) * s * (1 - s)


def tanh_forward(x):
    (x,) = _f64(x)
    return np.tanh(x)


def tanh_backward(dout, x):
    t = tanh_forward(x)
    return np.asarray(dout, np.float64) * (1 - t * t)


def softmax_forward(x):
    (x,) = _f64(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dout, x):
    y = softmax_forward(x)
    dout = np.asarray(dout, np.float64)
    return y * (dout - (dout * y).sum(axis=1, keepdims=True))


# -- losses -------------------------------------------------------------------------------------


def softmax_cross_entropy(logits, y):
    (z,) = _f64(logits)
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(n), y].mean()
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1
    return loss, d / n


def mse_loss(pred, target):
    pred, target = _f64(pred, target)
    diff = pred - target
    return (diff ** 2).mean(), 2 * diff / diff.size


# -- batch normalisation, dropout, merges -------------------------------------------------------


def _bn_axes(x):
    return (0,) if x.ndim == 2 else (0,) + tuple(range(2, x.ndim))


def _bn_shape(x):
    return (1, -1) + (1,) * (x.ndim - 2)


def batchnorm_forward(x, gamma, beta, eps):
    x, gamma, beta = _f64(x, gamma, beta)
    axes = _bn_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(_bn_shape(x)) + \
        beta.reshape(_bn_shape(x))


def batchnorm_backward(dout, x, gamma, beta, eps):
    dout, x, gamma = _f64(dout, x, gamma)
    axes = _bn_axes(x)
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * gamma.reshape(_bn_shape(x))
    dx = (m * dxhat - dxhat.sum(axis=axes, keepdims=True)
          - xhat * (dxhat * xhat).sum(axis=axes, keepdims=True)) / (m * np.sqrt(var + eps))
    return dx, dgamma, dbeta


def batchnorm_running_update(x, running_mean, running_var, momentum):
    """PyTorch's update: running = (1 - momentum) running + momentum batch (unbiased var)."""
    (x,) = _f64(x)
    axes = _bn_axes(x)
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    var = x.var(axis=axes) * m / (m - 1)
    return ((1 - momentum) * np.asarray(running_mean) + momentum * mean,
            (1 - momentum) * np.asarray(running_var) + momentum * var)


def batchnorm_forward_eval(x, gamma, beta, eps, running_mean, running_var):
    x, gamma, beta, rm, rv = _f64(x, gamma, beta, running_mean, running_var)
    s = _bn_shape(x)
    return (x - rm.reshape(s)) / np.sqrt(rv.reshape(s) + eps) * gamma.reshape(s) + beta.reshape(s)


def dropout_forward(x, p, mask):
    (x,) = _f64(x)
    return x * mask / (1 - p)


def dropout_backward(dout, p, mask):
    (dout,) = _f64(dout)
    return dout * mask / (1 - p)


def concat_forward(xs):
    return np.concatenate([np.asarray(x, np.float64) for x in xs], axis=1)


def concat_backward(dout, channels):
    return np.split(np.asarray(dout, np.float64), np.cumsum(channels)[:-1], axis=1)


# -- dsl.md §10: transposed convolution -----------------------------------------------------------


def conv_transpose2d_forward(x, w, b, stride, pad, output_pad, dilation=(1, 1), groups=1):
    """By the definition: every input element adds x * w[c, :, i, j] at output position
    (h*sh + i*dh - top, w*sw + j*dw - left); the full output is then cropped by the padding
    (top, left; output_pad extends the bottom and right)."""
    x, w, b = _f64(x, w, b)
    n, c, h, wd = x.shape
    _, fg, kh, kw = w.shape
    cg = c // groups
    full = ((h - 1) * stride[0] + dilation[0] * (kh - 1) + 1,
            (wd - 1) * stride[1] + dilation[1] * (kw - 1) + 1)
    oh = full[0] - pad[0] - pad[1] + output_pad[0]
    ow = full[1] - pad[2] - pad[3] + output_pad[1]
    big = np.zeros((n, fg * groups, max(full[0], pad[0] + oh), max(full[1], pad[2] + ow)))
    for g in range(groups):
        xg, wg = x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                h0, w0 = i * dilation[0], j * dilation[1]
                big[:, g * fg:(g + 1) * fg, h0:h0 + stride[0] * (h - 1) + 1:stride[0],
                    w0:w0 + stride[1] * (wd - 1) + 1:stride[1]] += \
                    np.einsum("nchw,cf->nfhw", xg, wg[:, :, i, j])
    out = big[:, :, pad[0]:pad[0] + oh, pad[2]:pad[2] + ow]
    if b is not None:
        out = out + b[None, :, None, None]
    return out


def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad, dilation=(1, 1), groups=1):
    """The adjoint of the forward's scatter: each input element collects dout over its taps."""
    dout, x, w = _f64(dout, x, w)
    n, c, h, wd = x.shape
    _, fg, kh, kw = w.shape
    cg = c // groups
    big_h = max((h - 1) * stride[0] + dilation[0] * (kh - 1) + 1, pad[0] + dout.shape[2])
    big_w = max((wd - 1) * stride[1] + dilation[1] * (kw - 1) + 1, pad[2] + dout.shape[3])
    big = np.zeros((n, dout.shape[1], big_h, big_w))
    big[:, :, pad[0]:pad[0] + dout.shape[2], pad[2]:pad[2] + dout.shape[3]] = dout
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                h0, w0 = i * dilation[0], j * dilation[1]
                window = big[:, g * fg:(g + 1) * fg, h0:h0 + stride[0] * (h - 1) + 1:stride[0],
                             w0:w0 + stride[1] * (wd - 1) + 1:stride[1]]
                dx[:, g * cg:(g + 1) * cg] += np.einsum("nfhw,cf->nchw", window,
                                                        w[g * cg:(g + 1) * cg, :, i, j])
                dw[g * cg:(g + 1) * cg, :, i, j] = np.einsum("nchw,nfhw->cf",
                                                             x[:, g * cg:(g + 1) * cg], window)
    db = None if b is None else dout.sum(axis=(0, 2, 3))
    return dx, dw, db


def conv_transpose1d_forward(x, w, b, stride, pad, output_pad, dilation=1, groups=1):
    out = conv_transpose2d_forward(np.asarray(x)[:, :, None, :], np.asarray(w)[:, :, None, :], b,
                                   (1, stride), (0, 0, pad[0], pad[1]), (0, output_pad),
                                   (1, dilation), groups)
    return out[:, :, 0, :]


# -- upsampling, adaptive pooling ------------------------------------------------------------------


def _linear_taps(n_out, n_in, scale):
    """Per output index: the two source indices and weights of PyTorch's align_corners=False
    rule, src = max(0, (o + 0.5)/scale - 0.5)."""
    src = np.maximum((np.arange(n_out) + 0.5) / scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = src - i0
    return i0, i1, 1 - l1, l1


def _upsample_matrix(n_in, scale, mode):
    """The (n_out, n_in) matrix of 1-D upsampling: out = A @ x along one axis."""
    n_out = n_in * scale
    a = np.zeros((n_out, n_in))
    if mode == "nearest":
        a[np.arange(n_out), np.arange(n_out) // scale] = 1
        return a
    i0, i1, l0, l1 = _linear_taps(n_out, n_in, scale)
    np.add.at(a, (np.arange(n_out), i0), l0)
    np.add.at(a, (np.arange(n_out), i1), l1)
    return a


def upsample2d_forward(x, scale, mode):
    """out = A_h @ x @ A_w^T per plane (separable), A the 1-D upsampling matrices."""
    (x,) = _f64(x)
    mode = "bilinear" if mode == "linear" else mode
    ah = _upsample_matrix(x.shape[2], scale[0], mode)
    aw = _upsample_matrix(x.shape[3], scale[1], mode)
    return np.einsum("oh,nchw,pw->ncop", ah, x, aw)


def upsample2d_backward(dout, x, scale, mode):
    dout, x = _f64(dout, x)
    mode = "bilinear" if mode == "linear" else mode
    ah = _upsample_matrix(x.shape[2], scale[0], mode)
    aw = _upsample_matrix(x.shape[3], scale[1], mode)
    return np.einsum("oh,ncop,pw->nchw", ah, dout, aw)


def _adaptive_windows(n_in, n_out):
    return [(i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out)]


def adaptive_avgpool2d_forward(x, out_hw):
    (x,) = _f64(x)
    out = np.empty(x.shape[:2] + tuple(out_hw))
    for a, (h0, h1) in enumerate(_adaptive_windows(x.shape[2], out_hw[0])):
        for b, (w0, w1) in enumerate(_adaptive_windows(x.shape[3], out_hw[1])):
            out[:, :, a, b] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def adaptive_avgpool2d_backward(dout, x):
    dout, x = _f64(dout, x)
    dx = np.zeros_like(x)
    for a, (h0, h1) in enumerate(_adaptive_windows(x.shape[2], dout.shape[2])):
        for b, (w0, w1) in enumerate(_adaptive_windows(x.shape[3], dout.shape[3])):
            dx[:, :, h0:h1, w0:w1] += dout[:, :, a, b, None, None] / ((h1 - h0) * (w1 - w0))
    return dx


def adaptive_maxpool2d_forward(x, out_hw):
    (x,) = _f64(x)
    out = np.empty(x.shape[:2] + tuple(out_hw))
    for a, (h0, h1) in enumerate(_adaptive_windows(x.shape[2], out_hw[0])):
        for b, (w0, w1) in enumerate(_adaptive_windows(x.shape[3], out_hw[1])):
            out[:, :, a, b] = x[:, :, h0:h1, w0:w1].max(axis=(2, 3))
    return out


def adaptive_maxpool2d_backward(dout, x):
    """dout goes to the first maximum of each window in row-major order (argmax)."""
    dout, x = _f64(dout, x)
    dx = np.zeros_like(x)
    n, c = x.shape[:2]
    for a, (h0, h1) in enumerate(_adaptive_windows(x.shape[2], dout.shape[2])):
        for b, (w0, w1) in enumerate(_adaptive_windows(x.shape[3], dout.shape[3])):
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            i, j = np.divmod(window.argmax(axis=2), w1 - w0)
            for nn in range(n):
                for cc in range(c):
                    dx[nn, cc, h0 + i[nn, cc], w0 + j[nn, cc]] += dout[nn, cc, a, b]
    return dx


# -- activations of dsl.md §10.1 (gradients at the kinks as PyTorch's autograd) -----------------


def relu6_forward(x):
    (x,) = _f64(x)
    return np.clip(x, 0, 6)


def relu6_backward(dout, x):
    dout, x = _f64(dout, x)
    return np.where((x > 0) & (x < 6), dout, 0.0)


def hardswish_forward(x):
    (x,) = _f64(x)
    return x * np.clip(x + 3, 0, 6) / 6


def hardswish_backward(dout, x):
    dout, x = _f64(dout, x)
    return np.where(x <= -3, 0.0, np.where(x >= 3, dout, dout * (x / 3 + 0.5)))


def hardsigmoid_forward(x):
    (x,) = _f64(x)
    return np.clip(x + 3, 0, 6) / 6


def hardsigmoid_backward(dout, x):
    """PyTorch multiplies by 1/6 rounded to float32 (``scalar_t(1.0f / 6.0f)``)."""
    dout, x = _f64(dout, x)
    return np.where((x > -3) & (x < 3), dout * float(np.float32(1 / 6)), 0.0)


def _sigmoid(x):
    """Accurate in both tails (sigmoid_forward's 1 + tanh(x/2) cancels for x << 0)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def silu_forward(x):
    (x,) = _f64(x)
    return x * _sigmoid(x)


def silu_backward(dout, x):
    dout, x = _f64(dout, x)
    s = _sigmoid(x)
    return dout * (s + x * s * (1 - s))


def _erf(x):
    from math import erf

    return np.vectorize(erf, otypes=[float])(x)


def gelu_forward(x):
    (x,) = _f64(x)
    return x * 0.5 * (1 + _erf(x / np.sqrt(2)))


def gelu_backward(dout, x):
    dout, x = _f64(dout, x)
    return dout * (0.5 * (1 + _erf(x / np.sqrt(2))) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi))


def softplus_forward(x):
    (x,) = _f64(x)
    return np.where(x > 20, x, np.logaddexp(0, np.minimum(x, 20)))


def softplus_backward(dout, x):
    dout, x = _f64(dout, x)
    return np.where(x > 20, dout, dout * _sigmoid(x))


def elu_forward(x, alpha=1.0):
    (x,) = _f64(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def elu_backward(dout, x, alpha=1.0):
    dout, x = _f64(dout, x)
    return np.where(x > 0, dout, dout * alpha * np.exp(np.minimum(x, 0)))


# -- channel operations, droppath, the VAE's sample --------------------------------------------


def gate_forward(x, gate):
    x, gate = _f64(x, gate)
    return x * gate.reshape(gate.shape[:2] + (1,) * (x.ndim - 2))


def gate_backward(dout, x, gate):
    dout, x, gate = _f64(dout, x, gate)
    g = gate.reshape(gate.shape[:2] + (1,) * (x.ndim - 2))
    return dout * g, (dout * x).sum(axis=tuple(range(2, x.ndim))).reshape(gate.shape)


def channel_shuffle(x, groups):
    (x,) = _f64(x)
    n, c = x.shape[:2]
    rest = x.shape[2:]
    return x.reshape(n, groups, c // groups, *rest).swapaxes(1, 2).reshape(x.shape)


def droppath_forward(x, p, keep):
    (x,) = _f64(x)
    return x * np.asarray(keep, float).reshape((-1,) + (1,) * (x.ndim - 1)) / (1 - p)


def vae_sample_forward(mu, logvar, eps):
    mu, logvar, eps = _f64(mu, logvar, eps)
    z = mu + np.exp(logvar / 2) * eps
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar)) / mu.shape[0]
    return z, kl


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    dz, mu, logvar, eps = _f64(dz, mu, logvar, eps)
    n = mu.shape[0]
    return (dz + dkl * mu / n,
            dz * eps * np.exp(logvar / 2) / 2 + dkl * (np.exp(logvar) - 1) / (2 * n))


# -- losses of dsl.md §10.4 ----------------------------------------------------------------------


def bce_loss(pred, target):
    """PyTorch's binary_cross_entropy: logs clamped at -100, the gradient's divisor p(1 - p) at
    least EPSILON = 1e-12, a float32 constant there (9.99999996e-13)."""
    p, t = _f64(pred, target)
    with np.errstate(divide="ignore"):
        loss = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))
    return loss.mean(), (p - t) / np.maximum(p * (1 - p), float(np.float32(1e-12))) / p.size


def sigmoid_bce(logits, target):
    """From the logits: log(1 + exp(-|x|)) never overflows."""
    x, t = _f64(logits, target)
    loss = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    return loss.mean(), (_sigmoid(x) - t) / x.size


def l1_loss(pred, target):
    p, t = _f64(pred, target)
    return np.abs(p - t).mean(), np.sign(p - t) / p.size
