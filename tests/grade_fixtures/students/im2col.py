"""A correct submission in the im2col style (fast_layers.py of CS231n, Caffe): patches gathered
into a matrix with fancy indexing, convolutions as one matrix product, gradients scattered back
with np.add.at."""
import numpy as np


def _indices(C, H, W, kh, kw, stride, pad):
    sh, sw = stride
    top, bottom, left, right = pad
    oh = (H + top + bottom - kh) // sh + 1
    ow = (W + left + right - kw) // sw + 1
    i0 = np.tile(np.repeat(np.arange(kh), kw), C)
    i1 = sh * np.repeat(np.arange(oh), ow)
    j0 = np.tile(np.arange(kw), kh * C)
    j1 = sw * np.tile(np.arange(ow), oh)
    i = i0.reshape(-1, 1) + i1.reshape(1, -1)
    j = j0.reshape(-1, 1) + j1.reshape(1, -1)
    k = np.repeat(np.arange(C), kh * kw).reshape(-1, 1)
    return k, i, j, oh, ow


def im2col(x, kh, kw, stride, pad, fill=0.0):
    N, C, H, W = x.shape
    top, bottom, left, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    k, i, j, oh, ow = _indices(C, H, W, kh, kw, stride, pad)
    cols = xp[:, k, i, j]                                   # (N, C*kh*kw, oh*ow)
    return cols.transpose(1, 2, 0).reshape(C * kh * kw, -1), oh, ow


def col2im(cols, shape, kh, kw, stride, pad):
    N, C, H, W = shape
    top, bottom, left, right = pad
    xp = np.zeros((N, C, H + top + bottom, W + left + right), dtype=cols.dtype)
    k, i, j, _, _ = _indices(C, H, W, kh, kw, stride, pad)
    reshaped = cols.reshape(C * kh * kw, -1, N).transpose(2, 0, 1)
    np.add.at(xp, (slice(None), k, i, j), reshaped)
    return xp[:, :, top:top + H, left:left + W]


def conv2d_forward(x, w, b, stride, pad):
    F, C, kh, kw = w.shape
    cols, oh, ow = im2col(x, kh, kw, stride, pad)
    out = w.reshape(F, -1) @ cols
    if b is not None:
        out = out + b.reshape(-1, 1)
    return out.reshape(F, oh, ow, x.shape[0]).transpose(3, 0, 1, 2).astype(x.dtype)


def conv2d_backward(dout, x, w, b, stride, pad):
    F, C, kh, kw = w.shape
    cols, oh, ow = im2col(x, kh, kw, stride, pad)
    dout_r = dout.transpose(1, 2, 3, 0).reshape(F, -1)
    dw = (dout_r @ cols.T).reshape(w.shape)
    dcols = w.reshape(F, -1).T @ dout_r
    dx = col2im(dcols, x.shape, kh, kw, stride, pad)
    db = dout.sum(axis=(0, 2, 3)) if b is not None else None
    return dx, dw, db


def conv1d_forward(x, w, b, stride, pad):
    out = conv2d_forward(x[:, :, None, :], w[:, :, None, :], b, (1, stride[0]), (0, 0, pad[0], pad[1]))
    return out[:, :, 0, :]


def conv1d_backward(dout, x, w, b, stride, pad):
    dx, dw, db = conv2d_backward(dout[:, :, None, :], x[:, :, None, :], w[:, :, None, :], b,
                                 (1, stride[0]), (0, 0, pad[0], pad[1]))
    return dx[:, :, 0, :], dw[:, :, 0, :], db


def maxpool2d_forward(x, kernel, stride, pad):
    N, C, H, W = x.shape
    kh, kw = kernel
    cols, oh, ow = im2col(x.reshape(N * C, 1, H, W), kh, kw, stride, pad, fill=-np.inf)
    return cols.max(axis=0).reshape(oh, ow, N, C).transpose(2, 3, 0, 1)


def maxpool2d_backward(dout, x, kernel, stride, pad):
    N, C, H, W = x.shape
    kh, kw = kernel
    cols, oh, ow = im2col(x.reshape(N * C, 1, H, W), kh, kw, stride, pad, fill=-np.inf)
    winner = cols.argmax(axis=0)
    dcols = np.zeros_like(cols)
    dcols[winner, np.arange(cols.shape[1])] = dout.transpose(2, 3, 0, 1).ravel()
    return col2im(dcols, (N * C, 1, H, W), kh, kw, stride, pad).reshape(x.shape)


def avgpool2d_forward(x, kernel, stride, pad):
    N, C, H, W = x.shape
    kh, kw = kernel
    cols, oh, ow = im2col(x.reshape(N * C, 1, H, W), kh, kw, stride, pad)
    return cols.mean(axis=0).reshape(oh, ow, N, C).transpose(2, 3, 0, 1)


def avgpool2d_backward(dout, x, kernel, stride, pad):
    N, C, H, W = x.shape
    kh, kw = kernel
    flat = dout.transpose(2, 3, 0, 1).ravel() / (kh * kw)
    dcols = np.broadcast_to(flat, (kh * kw, flat.size)).astype(x.dtype)
    return col2im(dcols, (N * C, 1, H, W), kh, kw, stride, pad).reshape(x.shape)


def dense_forward(x, w, b):
    return x @ w + (0 if b is None else b)


def dense_backward(dout, x, w, b):
    return dout @ w.T, x.T @ dout, None if b is None else dout.sum(0)


def relu_forward(x):
    return x * (x > 0)


def relu_backward(dout, x):
    return np.where(x > 0, dout, 0).astype(dout.dtype)


def sigmoid_forward(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


def sigmoid_backward(dout, x):
    s = sigmoid_forward(x)
    return dout * s * (1 - s)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dout, x):
    t = np.tanh(x)
    return dout - dout * t * t


def softmax_forward(x):
    z = np.exp(x - x.max(1)[:, None])
    return z / z.sum(1)[:, None]


def softmax_cross_entropy(logits, y):
    n = len(y)
    p = softmax_forward(logits)
    logsumexp = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    loss = np.mean(logsumexp - logits[np.arange(n), y])
    p[np.arange(n), y] -= 1
    return float(loss), p / n


def mse_loss(pred, target):
    d = pred - target
    return float((d * d).sum() / d.size), (2.0 / d.size) * d


def batchnorm_forward(x, gamma, beta, eps):
    xt = np.moveaxis(x, 1, -1)
    flat = xt.reshape(-1, x.shape[1])
    xhat = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + eps)
    return np.moveaxis((xhat * gamma + beta).reshape(xt.shape), -1, 1)


def batchnorm_backward(dout, x, gamma, beta, eps):
    c = x.shape[1]
    flat = np.moveaxis(x, 1, -1).reshape(-1, c)
    d = np.moveaxis(dout, 1, -1).reshape(-1, c)
    m = flat.shape[0]
    inv = 1.0 / np.sqrt(flat.var(0) + eps)
    xhat = (flat - flat.mean(0)) * inv
    dbeta = d.sum(0)
    dgamma = (d * xhat).sum(0)
    dx = (gamma * inv / m) * (m * d - dbeta - xhat * dgamma)
    return np.moveaxis(dx.reshape(np.moveaxis(x, 1, -1).shape), -1, 1), dgamma, dbeta


def dropout_forward(x, p, mask):
    return np.where(mask, x / (1 - p), 0).astype(x.dtype)


def dropout_backward(dout, p, mask):
    return np.where(mask, dout / (1 - p), 0).astype(dout.dtype)
