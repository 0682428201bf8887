"""Every function returns its inputs unchanged (the first, or one per gradient): must score nothing."""
import numpy as np


def conv2d_forward(x, w, b, stride, pad):
    return x


def conv2d_backward(dout, x, w, b, stride, pad):
    return x, w, b


def conv1d_forward(x, w, b, stride, pad):
    return x


def conv1d_backward(dout, x, w, b, stride, pad):
    return x, w, b


def maxpool2d_forward(x, kernel, stride, pad):
    return x


def maxpool2d_backward(dout, x, kernel, stride, pad):
    return x


def avgpool2d_forward(x, kernel, stride, pad):
    return x


def avgpool2d_backward(dout, x, kernel, stride, pad):
    return x


def dense_forward(x, w, b):
    return x


def dense_backward(dout, x, w, b):
    return x, w, b


def relu_forward(x):
    return x


def relu_backward(dout, x):
    return dout


def sigmoid_forward(x):
    return x


def sigmoid_backward(dout, x):
    return dout


def tanh_forward(x):
    return x


def tanh_backward(dout, x):
    return dout


def softmax_forward(x):
    return x


def softmax_cross_entropy(logits, y):
    return 0.0, logits


def mse_loss(pred, target):
    return 0.0, pred


def batchnorm_forward(x, gamma, beta, eps):
    return x


def batchnorm_backward(dout, x, gamma, beta, eps):
    return dout, gamma, beta


def dropout_forward(x, p, mask):
    return x


def dropout_backward(dout, p, mask):
    return dout


def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    return x


def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad):
    return x, w, b


def upsample2d_forward(x, scale, mode):
    return x


def upsample2d_backward(dout, x, scale, mode):
    return x


def bce_loss(pred, target):
    return 0.0, pred


def sigmoid_bce(logits, target):
    return 0.0, logits


def vae_sample_forward(mu, logvar, eps):
    return mu, 0.0


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    return dz, dz
