"""Element-wise activations and softmax, forward and backward side by side.

Arrays of any shape (flattened to 1-D views; softmax works on (N, C, S) over C).  Backward
functions take the forward OUTPUT y where that suffices, so the forward may run in place
(``out is x``); with accumulate=False the backward may run in place (``dx is dout``).
Element-wise work is memory-bound: SIMD loops, a big array cut into contiguous pieces over the
threads (``_jit.elementwise``; softmax by samples), a small one on the calling thread.
"""
import numpy as np

from cnnspec.kernels._exp import exp
from cnnspec.kernels._jit import by_samples, elementwise, jit


# NaN goes through as PyTorch lets it (relu(NaN) = NaN, and its gradient passes): the tests are
# written `<= 0`, which NaN fails, so a NaN is never hidden as a 0


@jit
def _relu_forward(x, out):
    for i in range(x.size):
        out[i] = 0 if x[i] <= 0 else x[i]


@jit
def _relu_backward(dout, y, dx, accumulate):
    # the gradient at x == 0 is 0: test y <= 0, not y < 0
    if accumulate:
        for i in range(dx.size):
            dx[i] += 0 if y[i] <= 0 else dout[i]
    else:
        for i in range(dx.size):
            dx[i] = 0 if y[i] <= 0 else dout[i]


@jit
def _relu_backward_in_place(g, y):
    # g is dout and dx at once: with two arrays LLVM's overlap check passes and the loop stays
    # vectorised (with dx aliasing dout it fell back to a branchy scalar loop, 40x slower)
    for i in range(g.size):
        g[i] = 0 if y[i] <= 0 else g[i]


@jit
def _leaky_relu_forward(x, slope, out):
    for i in range(x.size):
        out[i] = x[i] if x[i] > 0 else x[i] * slope


@jit
def _leaky_relu_backward(dout, x, slope, dx, accumulate):
    if accumulate:
        for i in range(dx.size):
            dx[i] += dout[i] if x[i] > 0 else dout[i] * slope
    else:
        for i in range(dx.size):
            dx[i] = dout[i] if x[i] > 0 else dout[i] * slope


@jit
def _leaky_relu_backward_in_place(g, x, slope):
    for i in range(g.size):
        g[i] = g[i] if x[i] > 0 else g[i] * slope


@jit
def _sigmoid_forward(x, out):
    for i in range(x.size):
        v = x[i]
        e = exp(-abs(v))                 # never exp of a large positive number; float64, and
        out[i] = 1 / (1 + e) if v >= 0 else e / (1 + e)     # selects: the loop vectorises


@jit
def _sigmoid_backward(dout, y, dx, accumulate):
    if accumulate:
        for i in range(dx.size):
            dx[i] += dout[i] * y[i] * (1 - y[i])
    else:
        for i in range(dx.size):
            dx[i] = dout[i] * y[i] * (1 - y[i])


@jit
def _tanh_forward(x, out):
    for i in range(x.size):
        out[i] = np.tanh(x[i])


@jit
def _tanh_backward(dout, y, dx, accumulate):
    if accumulate:
        for i in range(dx.size):
            dx[i] += dout[i] * (1 - y[i] * y[i])
    else:
        for i in range(dx.size):
            dx[i] = dout[i] * (1 - y[i] * y[i])


@jit
def column_max(a, m):
    """m[p] = the largest a[k, p] over k, for a (K, P): the loops along P (vectorised).  The
    softmax and the per-position cross-entropy subtract it first."""
    for p in range(a.shape[1]):
        m[p] = a[0, p]
    for k in range(1, a.shape[0]):
        for p in range(a.shape[1]):
            m[p] = max(m[p], a[k, p])


@jit
def _softmax_forward(x, out, m, total):
    """x, out (N, C, S): softmax over C, minus the max first (stable for |x| up to 1e4); each
    position's exps rounded to out's type and summed in float64 in the order of C.  The loops
    run along S (the positions side by side: vectorised, ``_exp.exp``), C outside; m (S, x's
    type) and total (S, float64) are scratch."""
    n_, c_, s_ = x.shape
    for n in range(n_):
        xn, on = x[n], out[n]
        column_max(xn, m)
        for s in range(s_):
            total[s] = 0.0
        for c in range(c_):
            for s in range(s_):
                on[c, s] = exp(xn[c, s] - m[s])
                total[s] += on[c, s]
        for c in range(c_):
            for s in range(s_):
                on[c, s] = on[c, s] / total[s]


@jit
def _softmax_backward(dout, y, dx, accumulate):
    """dx = y * (dout - sum_c dout * y), per (n, s)."""
    n_, c_, s_ = y.shape
    for n in range(n_):
        for s in range(s_):
            dot = 0.0
            for c in range(c_):
                dot += dout[n, c, s] * y[n, c, s]
            for c in range(c_):
                g = y[n, c, s] * (dout[n, c, s] - dot)
                if accumulate:
                    dx[n, c, s] += g
                else:
                    dx[n, c, s] = g


def _flat(a):
    return a.reshape(-1)              # a view: every buffer is C-contiguous


def same_buffer(a, b):
    """a and b start at the same address (dx given as dout itself, or a view of it).  Arrays of
    different memory owners are told apart first, without the address (reading it costs ~5 us:
    8 calls in a LeNet-5 step); an element-wise kernel is correct either way, only slower."""
    if (a if a.base is None else a.base) is not (b if b.base is None else b.base):
        return False
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def _ncs(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def relu_forward_into(x, out):
    elementwise(_relu_forward, _flat(x), _flat(out))


def relu_backward_into(dout, y, dx, accumulate=False):
    if not accumulate and same_buffer(dx, dout):
        elementwise(_relu_backward_in_place, _flat(dx), _flat(y))
    else:
        elementwise(_relu_backward, _flat(dout), _flat(y), _flat(dx), bool(accumulate))


# slope is passed in x's dtype (x * slope rounds as NumPy's float32 arithmetic does)
def leaky_relu_forward_into(x, slope, out):
    elementwise(_leaky_relu_forward, _flat(x), x.dtype.type(slope), _flat(out))


def leaky_relu_backward_into(dout, x, slope, dx, accumulate=False):
    if not accumulate and same_buffer(dx, dout):
        elementwise(_leaky_relu_backward_in_place, _flat(dx), _flat(x), x.dtype.type(slope))
    else:
        elementwise(_leaky_relu_backward, _flat(dout), _flat(x), x.dtype.type(slope), _flat(dx),
                             bool(accumulate))


def sigmoid_forward_into(x, out):
    elementwise(_sigmoid_forward, _flat(x), _flat(out))


def sigmoid_backward_into(dout, y, dx, accumulate=False):
    elementwise(_sigmoid_backward, _flat(dout), _flat(y), _flat(dx), bool(accumulate))


def tanh_forward_into(x, out):
    elementwise(_tanh_forward, _flat(x), _flat(out))


def tanh_backward_into(dout, y, dx, accumulate=False):
    elementwise(_tanh_backward, _flat(dout), _flat(y), _flat(dx), bool(accumulate))


def softmax_forward_into(x, out):
    """Softmax over axis 1 of x (N, C, *spatial)."""
    spatial = _ncs(x).shape[2]
    by_samples(_softmax_forward, 2 * x.size, _ncs(x), _ncs(out),
               scratch=((spatial, x.dtype), (spatial, np.float64)))


def softmax_backward_into(dout, y, dx, accumulate=False):
    by_samples(_softmax_backward, 3 * y.size, _ncs(dout), _ncs(y), _ncs(dx), bool(accumulate))
