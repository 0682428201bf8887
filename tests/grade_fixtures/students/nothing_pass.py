"""Every function left as `pass` (returns None): must score nothing."""
import numpy as np


def conv2d_forward(x, w, b, stride, pad):
    pass


def conv2d_backward(dout, x, w, b, stride, pad):
    pass


def conv1d_forward(x, w, b, stride, pad):
    pass


def conv1d_backward(dout, x, w, b, stride, pad):
    pass


def maxpool2d_forward(x, kernel, stride, pad):
    pass


def maxpool2d_backward(dout, x, kernel, stride, pad):
    pass


def avgpool2d_forward(x, kernel, stride, pad):
    pass


def avgpool2d_backward(dout, x, kernel, stride, pad):
    pass


def dense_forward(x, w, b):
    pass


def dense_backward(dout, x, w, b):
    pass


def relu_forward(x):
    pass


def relu_backward(dout, x):
    pass


def sigmoid_forward(x):
    pass


def sigmoid_backward(dout, x):
    pass


def tanh_forward(x):
    pass


def tanh_backward(dout, x):
    pass


def softmax_forward(x):
    pass


def softmax_cross_entropy(logits, y):
    pass


def mse_loss(pred, target):
    pass


def batchnorm_forward(x, gamma, beta, eps):
    pass


def batchnorm_backward(dout, x, gamma, beta, eps):
    pass


def dropout_forward(x, p, mask):
    pass


def dropout_backward(dout, p, mask):
    pass


def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    pass


def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad):
    pass


def upsample2d_forward(x, scale, mode):
    pass


def upsample2d_backward(dout, x, scale, mode):
    pass


def bce_loss(pred, target):
    pass


def sigmoid_bce(logits, target):
    pass


def vae_sample_forward(mu, logvar, eps):
    pass


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    pass
