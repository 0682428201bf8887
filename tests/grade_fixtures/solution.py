"""A complete, correct student submission of the layer API in plain NumPy.

The grader's tests use it as a good submission; the mutant fixtures (mutant_*.py) are appended to
it to make submissions with one known mistake each. Public functions never call each other (they
share private helpers), so that a mutant replacing one function changes that function only.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _windows(xp, kh, kw, sh, sw, oh, ow):
    """(N, C, Hp, Wp) -> view (N, C, OH, OW, kh, kw) of the pooling/convolution windows."""
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]


def _pad(x, pad, value=0.0):
    top, bottom, left, right = pad
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _out_size(h, w, kh, kw, stride, pad):
    top, bottom, left, right = pad
    return 1 + (h + top + bottom - kh) // stride[0], 1 + (w + left + right - kw) // stride[1]


def _unpad(dxp, pad, h, w):
    top, _, left, _ = pad
    return dxp[:, :, top:top + h, left:left + w]


def conv2d_forward(x, w, b, stride, pad):
    return _conv2d_forward(x, w, b, stride, pad)


def conv2d_backward(dout, x, w, b, stride, pad):
    return _conv2d_backward(dout, x, w, b, stride, pad)


def _conv2d_forward(x, w, b, stride, pad):
    f, c, kh, kw = w.shape
    oh, ow = _out_size(x.shape[2], x.shape[3], kh, kw, stride, pad)
    cols = _windows(_pad(x, pad), kh, kw, stride[0], stride[1], oh, ow)
    out = np.einsum("ncyxij,fcij->nfyx", cols, w)
    if b is not None:
        out = out + b.reshape(1, f, 1, 1)
    return out.astype(x.dtype, copy=False)


def _conv2d_backward(dout, x, w, b, stride, pad):
    f, c, kh, kw = w.shape
    n, _, h, wd = x.shape
    oh, ow = dout.shape[2:]
    sh, sw = stride
    xp = _pad(x, pad)
    cols = _windows(xp, kh, kw, sh, sw, oh, ow)
    dw = np.einsum("nfyx,ncyxij->fcij", dout, cols)
    db = dout.sum(axis=(0, 2, 3)) if b is not None else None
    dxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += np.einsum("nfyx,fc->ncyx", dout, w[:, :, i, j])
    return _unpad(dxp, pad, h, wd).copy(), dw.astype(x.dtype, copy=False), db


def _as2d(x, w, stride, pad):
    return x[:, :, None, :], w[:, :, None, :], (1, _int(stride)), (0, 0, pad[0], pad[1])


def _int(s):
    return int(s[0]) if isinstance(s, (tuple, list)) else int(s)


def conv1d_forward(x, w, b, stride, pad):
    x4, w4, stride4, pad4 = _as2d(x, w, stride, pad)
    return _conv2d_forward(x4, w4, b, stride4, pad4)[:, :, 0, :]


def conv1d_backward(dout, x, w, b, stride, pad):
    x4, w4, stride4, pad4 = _as2d(x, w, stride, pad)
    dx, dw, db = _conv2d_backward(dout[:, :, None, :], x4, w4, b, stride4, pad4)
    return dx[:, :, 0, :], dw[:, :, 0, :], db


def maxpool2d_forward(x, kernel, stride, pad):
    kh, kw = kernel
    oh, ow = _out_size(x.shape[2], x.shape[3], kh, kw, stride, pad)
    cols = _windows(_pad(x, pad, -np.inf), kh, kw, stride[0], stride[1], oh, ow)
    return cols.max(axis=(4, 5))


def maxpool2d_backward(dout, x, kernel, stride, pad):
    kh, kw = kernel
    sh, sw = stride
    oh, ow = dout.shape[2:]
    xp = _pad(x, pad, -np.inf)
    cols = _windows(xp, kh, kw, sh, sw, oh, ow)
    first = cols.reshape(*cols.shape[:4], kh * kw).argmax(axis=4)   # first maximum, row-major
    dxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += dout * (first == i * kw + j)
    return _unpad(dxp, pad, x.shape[2], x.shape[3]).copy()


def avgpool2d_forward(x, kernel, stride, pad):
    kh, kw = kernel
    oh, ow = _out_size(x.shape[2], x.shape[3], kh, kw, stride, pad)
    cols = _windows(_pad(x, pad), kh, kw, stride[0], stride[1], oh, ow)
    return (cols.sum(axis=(4, 5)) / (kh * kw)).astype(x.dtype, copy=False)


def avgpool2d_backward(dout, x, kernel, stride, pad):
    kh, kw = kernel
    sh, sw = stride
    oh, ow = dout.shape[2:]
    dxp = np.zeros_like(_pad(x, pad))
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += dout / (kh * kw)
    return _unpad(dxp, pad, x.shape[2], x.shape[3]).copy()


def dense_forward(x, w, b):
    out = x @ w
    return out + b if b is not None else out


def dense_backward(dout, x, w, b):
    db = dout.sum(axis=0) if b is not None else None
    return dout @ w.T, x.T @ dout, db


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(dout, x):
    return dout * (x > 0)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def sigmoid_forward(x):
    return _sigmoid(x)


def sigmoid_backward(dout, x):
    s = _sigmoid(x)
    return dout * s * (1 - s)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dout, x):
    return dout * (1 - np.tanh(x) ** 2)


def softmax_forward(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, y):
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(n), y].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), y] -= 1
    return float(loss), dlogits / n


def mse_loss(pred, target):
    diff = pred - target
    return float(np.mean(diff ** 2)), 2 * diff / diff.size


def _bn_axes(x):
    return (0,) if x.ndim == 2 else (0, *range(2, x.ndim))


def _bn_shape(x):
    return (1, -1) + (1,) * (x.ndim - 2)


def batchnorm_forward(x, gamma, beta, eps):
    axes = _bn_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    return gamma.reshape(_bn_shape(x)) * xhat + beta.reshape(_bn_shape(x))


def batchnorm_backward(dout, x, gamma, beta, eps):
    axes = _bn_axes(x)
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) * inv_std
    dgamma = (dout * xhat).sum(axis=axes)
    dbeta = dout.sum(axis=axes)
    dxhat = dout * gamma.reshape(_bn_shape(x))
    dx = inv_std / m * (m * dxhat - dxhat.sum(axis=axes, keepdims=True)
                        - xhat * (dxhat * xhat).sum(axis=axes, keepdims=True))
    return dx, dgamma, dbeta


def dropout_forward(x, p, mask):
    return x * mask / (1 - p)


def dropout_backward(dout, p, mask):
    return dout * mask / (1 - p)


# -- encoder-decoders and generative networks (layer-api.md) ---------------------------------------

def _ct_crop(full_h, full_w, pad, output_pad):
    """Output size, and the rows/columns of the full result that land in it."""
    top, bottom, left, right = pad
    oh = full_h - top - bottom + output_pad[0]
    ow = full_w - left - right + output_pad[1]
    return oh, ow, min(oh, full_h - top), min(ow, full_w - left)


def _ct_forward(x, w, b, stride, pad, output_pad):
    n, c, h, wd = x.shape
    _, f, kh, kw = w.shape
    sh, sw = stride
    full = np.zeros((n, f, (h - 1) * sh + kh, (wd - 1) * sw + kw), dtype=x.dtype)
    for i in range(kh):                       # each input value times the kernel, added on
        for j in range(kw):
            full[:, :, i:i + sh * (h - 1) + 1:sh, j:j + sw * (wd - 1) + 1:sw] += np.einsum(
                "nchw,cf->nfhw", x, w[:, :, i, j])
    oh, ow, rows, cols = _ct_crop(full.shape[2], full.shape[3], pad, output_pad)
    out = np.zeros((n, f, oh, ow), dtype=x.dtype)
    out[:, :, :rows, :cols] = full[:, :, pad[0]:pad[0] + rows, pad[2]:pad[2] + cols]
    if b is not None:
        out += b.reshape(1, f, 1, 1)
    return out


def _ct_backward(dout, x, w, b, stride, pad, output_pad):
    n, c, h, wd = x.shape
    _, f, kh, kw = w.shape
    sh, sw = stride
    dfull = np.zeros((n, f, (h - 1) * sh + kh, (wd - 1) * sw + kw), dtype=x.dtype)
    _, _, rows, cols = _ct_crop(dfull.shape[2], dfull.shape[3], pad, output_pad)
    dfull[:, :, pad[0]:pad[0] + rows, pad[2]:pad[2] + cols] = dout[:, :, :rows, :cols]
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            window = dfull[:, :, i:i + sh * (h - 1) + 1:sh, j:j + sw * (wd - 1) + 1:sw]
            dx += np.einsum("nfhw,cf->nchw", window, w[:, :, i, j])
            dw[:, :, i, j] = np.einsum("nchw,nfhw->cf", x, window)
    db = dout.sum(axis=(0, 2, 3)) if b is not None else None
    return dx, dw, db


def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    return _ct_forward(x, w, b, stride, pad, output_pad)


def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad):
    return _ct_backward(dout, x, w, b, stride, pad, output_pad)


def _nearest(o, n_in, scale):
    return o // scale


def _source(o, n_in, scale):
    """Where bilinear output o reads the input: pixel centres, clamped at 0."""
    return max((o + 0.5) / scale - 0.5, 0.0)


def _interpolation(n_in, scale, mode):
    """(n_in * scale, n_in): the weights of each output on the inputs, along one axis."""
    n_out = n_in * scale
    a = np.zeros((n_out, n_in))
    for o in range(n_out):
        if mode == "nearest":
            a[o, _nearest(o, n_in, scale)] = 1
            continue
        src = _source(o, n_in, scale)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        a[o, i0] += 1 - frac
        a[o, i1] += frac
    return a


def _upsample_matrices(x, scale, mode):
    return (_interpolation(x.shape[2], scale[0], mode).astype(x.dtype),
            _interpolation(x.shape[3], scale[1], mode).astype(x.dtype))


def upsample2d_forward(x, scale, mode):
    ah, aw = _upsample_matrices(x, scale, mode)
    return np.einsum("oh,nchw,pw->ncop", ah, x, aw)


def upsample2d_backward(dout, x, scale, mode):
    ah, aw = _upsample_matrices(x, scale, mode)
    return np.einsum("oh,ncop,pw->nchw", ah, dout, aw)


def bce_loss(pred, target):
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(pred), -100)
        log_q = np.maximum(np.log(1 - pred), -100)
    loss = -np.mean(target * log_p + (1 - target) * log_q)
    dpred = (pred - target) / np.maximum(pred * (1 - pred), 1e-12) / pred.size
    return float(loss), dpred


def sigmoid_bce(logits, target):
    log_sigmoid = np.minimum(logits, 0) - np.log1p(np.exp(-np.abs(logits)))
    loss = np.mean((1 - target) * logits - log_sigmoid)
    e = np.exp(-np.abs(logits))
    sigmoid = np.where(logits >= 0, 1 / (1 + e), e / (1 + e))
    return float(loss), (sigmoid - target) / logits.size


def vae_sample_forward(mu, logvar, eps):
    z = mu + np.exp(logvar / 2) * eps
    per_sample = -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).reshape(len(mu), -1).sum(axis=1)
    return z, float(per_sample.mean())


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    n = len(mu)
    dmu = dz + dkl * mu / n
    dlogvar = dz * eps * np.exp(logvar / 2) / 2 + dkl * (np.exp(logvar) - 1) / (2 * n)
    return dmu, dlogvar
