"""A submission that computes nothing: every function returns an array of the right shape and
dtype, filled by _fill (zeros here; the tests also fill it with ones, random numbers or the
input unchanged). Such a file must score (almost) nothing."""
import numpy as np


def _fill(shape, like):
    return np.zeros(shape, dtype=like.dtype)


def _conv_out(x, w, stride, pad):
    h = 1 + (x.shape[2] + pad[0] + pad[1] - w.shape[2]) // stride[0]
    v = 1 + (x.shape[3] + pad[2] + pad[3] - w.shape[3]) // stride[1]
    return h, v


def conv2d_forward(x, w, b, stride, pad):
    return _fill((x.shape[0], w.shape[0]) + _conv_out(x, w, stride, pad), x)


def conv2d_backward(dout, x, w, b, stride, pad):
    return _fill(x.shape, x), _fill(w.shape, w), None if b is None else _fill(b.shape, b)


def conv1d_forward(x, w, b, stride, pad):
    return _fill((x.shape[0], w.shape[0], 1 + (x.shape[2] + pad[0] + pad[1] - w.shape[2]) // stride[0]), x)


def conv1d_backward(dout, x, w, b, stride, pad):
    return _fill(x.shape, x), _fill(w.shape, w), None if b is None else _fill(b.shape, b)


def maxpool2d_forward(x, kernel, stride, pad):
    return _fill(x.shape[:2] + _conv_out(x, np.empty((1, 1) + tuple(kernel)), stride, pad), x)


def maxpool2d_backward(dout, x, kernel, stride, pad):
    return _fill(x.shape, x)


avgpool2d_forward = maxpool2d_forward
avgpool2d_backward = maxpool2d_backward


def dense_forward(x, w, b):
    return _fill((x.shape[0], w.shape[1]), x)


def dense_backward(dout, x, w, b):
    return _fill(x.shape, x), _fill(w.shape, w), None if b is None else _fill(b.shape, b)


def relu_forward(x):
    return _fill(x.shape, x)


def relu_backward(dout, x):
    return _fill(x.shape, x)


sigmoid_forward = tanh_forward = softmax_forward = relu_forward
sigmoid_backward = tanh_backward = relu_backward


def softmax_cross_entropy(logits, y):
    return 0.0, _fill(logits.shape, logits)


def mse_loss(pred, target):
    return 0.0, _fill(pred.shape, pred)


def batchnorm_forward(x, gamma, beta, eps):
    return _fill(x.shape, x)


def batchnorm_backward(dout, x, gamma, beta, eps):
    return _fill(x.shape, x), _fill(gamma.shape, gamma), _fill(beta.shape, beta)


def dropout_forward(x, p, mask):
    return _fill(x.shape, x)


def dropout_backward(dout, p, mask):
    return _fill(dout.shape, dout)


def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    oh = (x.shape[2] - 1) * stride[0] - pad[0] - pad[1] + w.shape[2] + output_pad[0]
    ow = (x.shape[3] - 1) * stride[1] - pad[2] - pad[3] + w.shape[3] + output_pad[1]
    return _fill((x.shape[0], w.shape[1], oh, ow), x)


conv_transpose2d_backward = conv2d_backward


def upsample2d_forward(x, scale, mode):
    return _fill((x.shape[0], x.shape[1], x.shape[2] * scale[0], x.shape[3] * scale[1]), x)


def upsample2d_backward(dout, x, scale, mode):
    return _fill(x.shape, x)


def bce_loss(pred, target):
    return 0.0, _fill(pred.shape, pred)


sigmoid_bce = bce_loss


def vae_sample_forward(mu, logvar, eps):
    return _fill(mu.shape, mu), 0.0


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    return _fill(mu.shape, mu), _fill(mu.shape, mu)
