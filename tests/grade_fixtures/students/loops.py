"""A correct submission written the way CS231n's assignment 2 teaches: explicit Python loops over
the batch, the filters and the output positions (the "naive" versions), vectorised NumPy for the
element-wise layers. The slowest correct style a student hands in: the grader's time limits must
let it pass with a wide margin (tests/test_grade_students.py measures it)."""
import numpy as np


def conv2d_forward(x, w, b, stride, pad):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="constant")
    H_out = 1 + (H + top + bottom - HH) // sh
    W_out = 1 + (W + left + right - WW) // sw
    out = np.zeros((N, F, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, :, i * sh:i * sh + HH, j * sw:j * sw + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + (b[f] if b is not None else 0)
    return out


def conv2d_backward(dout, x, w, b, stride, pad):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="constant")
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    H_out, W_out = dout.shape[2], dout.shape[3]
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, :, i * sh:i * sh + HH, j * sw:j * sw + WW]
                    dw[f] += window * dout[n, f, i, j]
                    dx_pad[n, :, i * sh:i * sh + HH, j * sw:j * sw + WW] += w[f] * dout[n, f, i, j]
    dx = dx_pad[:, :, top:top + H, left:left + W]
    db = np.sum(dout, axis=(0, 2, 3)) if b is not None else None
    return dx, dw, db


def conv1d_forward(x, w, b, stride, pad):
    N, C, L = x.shape
    F, _, K = w.shape
    s = stride[0]
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1])), mode="constant")
    L_out = 1 + (L + pad[0] + pad[1] - K) // s
    out = np.zeros((N, F, L_out), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(L_out):
                out[n, f, i] = np.sum(x_pad[n, :, i * s:i * s + K] * w[f]) + (b[f] if b is not None else 0)
    return out


def conv1d_backward(dout, x, w, b, stride, pad):
    N, C, L = x.shape
    F, _, K = w.shape
    s = stride[0]
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1])), mode="constant")
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for i in range(dout.shape[2]):
                dw[f] += x_pad[n, :, i * s:i * s + K] * dout[n, f, i]
                dx_pad[n, :, i * s:i * s + K] += w[f] * dout[n, f, i]
    db = np.sum(dout, axis=(0, 2)) if b is not None else None
    return dx_pad[:, :, pad[0]:pad[0] + L], dw, db


def maxpool2d_forward(x, kernel, stride, pad):
    N, C, H, W = x.shape
    ph, pw = kernel
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    H_out = 1 + (H + top + bottom - ph) // sh
    W_out = 1 + (W + left + right - pw) // sw
    out = np.zeros((N, C, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    out[n, c, i, j] = np.max(x_pad[n, c, i * sh:i * sh + ph, j * sw:j * sw + pw])
    return out


def maxpool2d_backward(dout, x, kernel, stride, pad):
    N, C, H, W = x.shape
    ph, pw = kernel
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    dx_pad = np.zeros_like(x_pad)
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    window = x_pad[n, c, i * sh:i * sh + ph, j * sw:j * sw + pw]
                    k = np.argmax(window)
                    dx_pad[n, c, i * sh + k // pw, j * sw + k % pw] += dout[n, c, i, j]
    return dx_pad[:, :, top:top + H, left:left + W]


def avgpool2d_forward(x, kernel, stride, pad):
    N, C, H, W = x.shape
    ph, pw = kernel
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="constant")
    H_out = 1 + (H + top + bottom - ph) // sh
    W_out = 1 + (W + left + right - pw) // sw
    out = np.zeros((N, C, H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            out[:, :, i, j] = np.mean(x_pad[:, :, i * sh:i * sh + ph, j * sw:j * sw + pw], axis=(2, 3))
    return out


def avgpool2d_backward(dout, x, kernel, stride, pad):
    N, C, H, W = x.shape
    ph, pw = kernel
    sh, sw = stride
    top, bottom, left, right = pad
    dx_pad = np.zeros((N, C, H + top + bottom, W + left + right), dtype=x.dtype)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            dx_pad[:, :, i * sh:i * sh + ph, j * sw:j * sw + pw] += dout[:, :, i:i + 1, j:j + 1] / (ph * pw)
    return dx_pad[:, :, top:top + H, left:left + W]


def dense_forward(x, w, b):
    out = x.reshape(x.shape[0], -1).dot(w)
    if b is not None:
        out += b
    return out


def dense_backward(dout, x, w, b):
    dx = dout.dot(w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T.dot(dout)
    db = np.sum(dout, axis=0) if b is not None else None
    return dx, dw, db


def relu_forward(x):
    return np.maximum(0, x)


def relu_backward(dout, x):
    dx = dout.copy()
    dx[x <= 0] = 0
    return dx


def sigmoid_forward(x):
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1 / (1 + np.exp(-x[positive]))
    z = np.exp(x[~positive])
    out[~positive] = z / (1 + z)
    return out


def sigmoid_backward(dout, x):
    s = sigmoid_forward(x)
    return dout * s * (1 - s)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dout, x):
    return dout * (1 - np.tanh(x) ** 2)


def softmax_forward(x):
    shifted = x - np.max(x, axis=1, keepdims=True)
    exps = np.exp(shifted)
    return exps / np.sum(exps, axis=1, keepdims=True)


def softmax_cross_entropy(logits, y):
    shifted_logits = logits - np.max(logits, axis=1, keepdims=True)
    Z = np.sum(np.exp(shifted_logits), axis=1, keepdims=True)
    log_probs = shifted_logits - np.log(Z)
    probs = np.exp(log_probs)
    N = logits.shape[0]
    loss = -np.sum(log_probs[np.arange(N), y]) / N
    dx = probs.copy()
    dx[np.arange(N), y] -= 1
    dx /= N
    return loss, dx


def mse_loss(pred, target):
    diff = pred - target
    return np.mean(diff ** 2), 2 * diff / diff.size


def _bn_axes(x):
    return (0,) if x.ndim == 2 else tuple([0] + list(range(2, x.ndim)))


def _bn_view(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def batchnorm_forward(x, gamma, beta, eps):
    axes = _bn_axes(x)
    mu = np.mean(x, axis=axes, keepdims=True)
    var = np.var(x, axis=axes, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return _bn_view(gamma, x) * x_hat + _bn_view(beta, x)


def batchnorm_backward(dout, x, gamma, beta, eps):
    axes = _bn_axes(x)
    m = x.size / x.shape[1]
    mu = np.mean(x, axis=axes, keepdims=True)
    var = np.var(x, axis=axes, keepdims=True)
    std = np.sqrt(var + eps)
    x_hat = (x - mu) / std
    dbeta = np.sum(dout, axis=axes)
    dgamma = np.sum(dout * x_hat, axis=axes)
    dx_hat = dout * _bn_view(gamma, x)
    dvar = np.sum(dx_hat * (x - mu) * -0.5 * std ** -3, axis=axes, keepdims=True)
    dmu = np.sum(-dx_hat / std, axis=axes, keepdims=True) + dvar * np.mean(-2 * (x - mu), axis=axes, keepdims=True)
    dx = dx_hat / std + dvar * 2 * (x - mu) / m + dmu / m
    return dx, dgamma, dbeta


def dropout_forward(x, p, mask):
    return x * mask / (1 - p)


def dropout_backward(dout, p, mask):
    return dout * mask / (1 - p)
