"""The activations of dsl.md §10.1 — relu6, hardswish, hardsigmoid, silu, gelu (exact, with erf),
softplus (beta 1, threshold 20) and elu(alpha) — forward and backward, element-wise.

Each formula is PyTorch's (``aten/src/ATen/native/cpu/Activation.cpp``, 2.13), gradients at the
kinks included, checked against autograd in the tests:

  relu6        min(max(x, 0), 6)              grad where 0 < x < 6 (0 at 0 and 6)
  hardswish    x * min(max(x + 3, 0), 6) / 6  0 for x <= -3, grad for x >= 3, else grad*(x/3 + 1/2)
  hardsigmoid  min(max(x + 3, 0), 6) / 6      grad*(1/6) where -3 < x < 3, else 0 (1/6 rounded
                                              to float32, as PyTorch, also in float64)
  silu         x / (1 + exp(-x))              grad * s * (1 + x*(1 - s)), s = sigmoid(x)
  gelu         x/2 * (1 + erf(x/sqrt 2))      grad * (Phi(x) + x * phi(x))
  softplus     log1p(exp(x)), x for x > 20    grad * z/(z + 1), z = exp(x); grad for x > 20
  elu          x > 0 ? x : alpha*(exp(x) - 1) x > 0 ? grad : grad*alpha*exp(x) (alpha at 0)

NaN propagates through every forward.  For the backward at x = NaN PyTorch's vectorised loops and
its scalar loop for the last few elements disagree (relu6 gives 0 or grad, hardswish and elu NaN
or grad); these kernels follow the vectorised loops, which handle nearly every element of a
tensor: NaN, except relu6 and hardsigmoid (0, as their range tests fail).

The backward takes the forward INPUT x (hardswish, silu and gelu cannot be recovered from their
output), so the forward must not run in place when the backward will be needed; with
accumulate=False the backward may run in place (``dx is dout``; the piecewise-linear ones have
in-place loops that stay vectorised, see activation._relu_backward_in_place).
"""
import math

import numpy as np

from cnnspec.kernels._exp import exp
from cnnspec.kernels._jit import elementwise, jit
from cnnspec.kernels.activation import _flat, same_buffer

_SQRT1_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
# PyTorch's hardsigmoid gradient multiplies by ``scalar_t(1.0f / 6.0f)``: the float32 value of
# 1/6, also in float64 (0.16666667163372040, not 0.16666666666666666)
_ONE_SIXTH = float(np.float32(1 / 6))


# -- relu6 -------------------------------------------------------------------------------------

@jit
def _relu6_forward(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = 0 if v <= 0 else (6 if v >= 6 else v)     # NaN falls through to v


@jit
def _relu6_backward(dout, x, dx, accumulate):
    for i in range(dx.size):
        g = dout[i] if (x[i] > 0) & (x[i] < 6) else 0
        dx[i] = dx[i] + g if accumulate else g


@jit
def _relu6_backward_in_place(g, x):
    for i in range(g.size):
        g[i] = g[i] if (x[i] > 0) & (x[i] < 6) else 0


# -- hardswish ---------------------------------------------------------------------------------

@jit
def _hardswish_forward(x, out):
    for i in range(x.size):
        v = x[i]
        r = v + 3
        r = 0 if r < 0 else (6 if r > 6 else r)
        out[i] = v * r / 6


@jit
def _hardswish_grad(g, v):
    return 0 if v <= -3 else (g if v >= 3 else g * (v / 3 + 0.5))


@jit
def _hardswish_backward(dout, x, dx, accumulate):
    for i in range(dx.size):
        d = _hardswish_grad(dout[i], x[i])
        dx[i] = dx[i] + d if accumulate else d


@jit
def _hardswish_backward_in_place(g, x):
    for i in range(g.size):
        g[i] = _hardswish_grad(g[i], x[i])


# -- hardsigmoid -------------------------------------------------------------------------------

@jit
def _hardsigmoid_forward(x, out):
    for i in range(x.size):
        r = x[i] + 3
        out[i] = (0 if r < 0 else (6 if r > 6 else r)) / 6


@jit
def _hardsigmoid_backward(dout, x, dx, accumulate):
    for i in range(dx.size):
        d = dout[i] * _ONE_SIXTH if (x[i] > -3) & (x[i] < 3) else 0
        dx[i] = dx[i] + d if accumulate else d


@jit
def _hardsigmoid_backward_in_place(g, x):
    for i in range(g.size):
        g[i] = g[i] * _ONE_SIXTH if (x[i] > -3) & (x[i] < 3) else 0


# -- silu, gelu, softplus, elu: one loop each (silu's exp is _exp.exp, in float64: vectorised;
# the others call libm, so their loops stay scalar) -------------------------------------------

@jit
def _silu_forward(x, out):
    for i in range(x.size):
        out[i] = x[i] / (1 + exp(-x[i]))


@jit
def _silu_backward(dout, x, dx, accumulate):
    for i in range(dx.size):
        v = x[i]
        s = 1 / (1 + exp(-v))
        d = dout[i] * s * (1 + v * (1 - s))
        dx[i] = dx[i] + d if accumulate else d


@jit
def _gelu_forward(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v * 0.5 * (1 + math.erf(v * _SQRT1_2))


@jit
def _gelu_backward(dout, x, dx, accumulate):
    for i in range(dx.size):
        v = x[i]
        cdf = 0.5 * (1 + math.erf(v * _SQRT1_2))
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * v * v)
        d = dout[i] * (cdf + v * pdf)
        dx[i] = dx[i] + d if accumulate else d


@jit
def _softplus_forward(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v if v > 20 else np.log1p(np.exp(v))


@jit
def _softplus_backward(dout, x, dx, accumulate):
    for i in range(dx.size):
        v = x[i]
        z = np.exp(v)
        d = dout[i] if v > 20 else dout[i] * z / (z + 1)
        dx[i] = dx[i] + d if accumulate else d


@jit
def _elu_forward(x, alpha, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v if v > 0 else alpha * np.expm1(v)


@jit
def _elu_backward(dout, x, alpha, dx, accumulate):
    for i in range(dx.size):
        v = x[i]
        d = dout[i] if v > 0 else dout[i] * alpha * np.exp(v)
        dx[i] = dx[i] + d if accumulate else d


# -- entry points (any shape; C-contiguous) ----------------------------------------------------

def _backward(kernel, in_place, dout, x, dx, accumulate):
    if in_place is not None and not accumulate and same_buffer(dx, dout):
        elementwise(in_place, _flat(dx), _flat(x))
    else:
        elementwise(kernel, _flat(dout), _flat(x), _flat(dx), bool(accumulate))


def relu6_forward_into(x, out):
    elementwise(_relu6_forward, _flat(x), _flat(out))


def relu6_backward_into(dout, x, dx, accumulate=False):
    _backward(_relu6_backward, _relu6_backward_in_place, dout, x, dx, accumulate)


def hardswish_forward_into(x, out):
    elementwise(_hardswish_forward, _flat(x), _flat(out))


def hardswish_backward_into(dout, x, dx, accumulate=False):
    _backward(_hardswish_backward, _hardswish_backward_in_place, dout, x, dx, accumulate)


def hardsigmoid_forward_into(x, out):
    elementwise(_hardsigmoid_forward, _flat(x), _flat(out))


def hardsigmoid_backward_into(dout, x, dx, accumulate=False):
    _backward(_hardsigmoid_backward, _hardsigmoid_backward_in_place, dout, x, dx, accumulate)


def silu_forward_into(x, out):
    elementwise(_silu_forward, _flat(x), _flat(out))


def silu_backward_into(dout, x, dx, accumulate=False):
    _backward(_silu_backward, None, dout, x, dx, accumulate)


def gelu_forward_into(x, out):
    elementwise(_gelu_forward, _flat(x), _flat(out))


def gelu_backward_into(dout, x, dx, accumulate=False):
    _backward(_gelu_backward, None, dout, x, dx, accumulate)


def softplus_forward_into(x, out):
    elementwise(_softplus_forward, _flat(x), _flat(out))


def softplus_backward_into(dout, x, dx, accumulate=False):
    _backward(_softplus_backward, None, dout, x, dx, accumulate)


# alpha in x's dtype, as leaky_relu's slope
def elu_forward_into(x, alpha, out):
    elementwise(_elu_forward, _flat(x), x.dtype.type(alpha), _flat(out))


def elu_backward_into(dout, x, alpha, dx, accumulate=False):
    elementwise(_elu_backward, _flat(dout), _flat(x), x.dtype.type(alpha), _flat(dx),
                bool(accumulate))
