"""Dense (fully connected) layer: out = x @ w + b, x (N, D), w (D, M), b (M,).

    dx = dout @ w.T      dw = x.T @ dout      db = sum over the batch of dout

Each product is one BLAS call; large ones are split over threads by blocks of output columns
(disjoint outputs; the BLAS numba calls runs one thread per call, see ``_blas``).
"""
import functools

import numpy as np

from cnnspec.kernels._blas import gemm
from cnnspec.kernels._jit import jit, none_array, num_threads, run_split
from cnnspec.kernels.activation import _relu_backward, _relu_forward

_PARALLEL_MACS = 1 << 23          # products below this run on one thread: measured (2 cores, wall
# clock, 2 threads against 1): LeNet-5's 64x400x120 (3.1M multiply-adds) 0.67x forward and 0.54x
# backward split, 256x400x120 (12.3M) 1.13x and 1.15x, 64x1024x512 1.65x and 1.58x


@jit
def _gemm_columns(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, j0, j1):
    """Columns [j0, j1) of C = op(A) @ op(B) + beta C."""
    gemm(trans_a, trans_b, m, j1 - j0, k, 1.0, a, lda, b[j0 * ldb if trans_b else j0:], ldb,
         beta, c[j0:], ldc)


def _gemm_threads(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, threads):
    run_split(_gemm_columns, n, threads, lambda t, lo, hi: (
        trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, lo, hi))


@jit
def _add_bias(out, b):
    for i in range(out.shape[0]):
        row = out[i]
        for j in range(row.size):
            row[j] += b[j]


@jit
def _bias_grad(dout, db, acc):
    """db = column sums of dout, in float64 (``acc``: M float64 of scratch, zeroed here; made
    by the caller: an np.zeros here compiled numba's allocation machinery, 0.2 s of a first run)."""
    acc[:] = 0.0
    for i in range(dout.shape[0]):
        row = dout[i]
        for j in range(row.size):
            acc[j] += row[j]
    for j in range(db.size):
        db[j] = acc[j]


def _threads(macs, columns):
    return 1 if macs < _PARALLEL_MACS or columns < 64 else min(num_threads(), columns // 32)


def dense_forward_into(x, w, b, out, relu=False):
    """out (N, M) = x (N, D) @ w (D, M) + b (M,) (b may be None); ``relu``: out = relu of that
    (the training step's dense -> relu pair, ``engine.plan.Plan.relu_fusions``)."""
    n, d = x.shape
    m = w.shape[1]
    threads = _threads(n * m * d, m)
    if threads == 1:                   # one call: a share's step returns to Python once a layer
        _forward_one(*_forward_one_args(x, w, b, out, relu))
        return
    _gemm_threads(False, False, n, m, d, x.reshape(-1), d, w.reshape(-1), m, 0.0,
                  out.reshape(-1), m, threads)
    if b is not None:
        _add_bias(out, b)
    if relu:
        flat = out.reshape(-1)
        _relu_forward(flat, flat)


def dense_forward_step(x, w, b, out, relu=False):
    """``dense_forward_into`` with these arguments as a step for a thread of its own (a training
    share's layer): where it is one compiled call, that call bound once (as ``_jit.one_call``)."""
    n, d = x.shape
    if _threads(n * w.shape[1] * d, w.shape[1]) > 1:
        return lambda: dense_forward_into(x, w, b, out, relu)
    return functools.partial(_forward_one, *_forward_one_args(x, w, b, out, relu))


def _forward_one_args(x, w, b, out, relu):
    n, d = x.shape
    return (x.reshape(-1), w.reshape(-1), none_array(x.dtype) if b is None else b,
            out.reshape(-1), n, w.shape[1], d, bool(relu))


def dense_backward_into(dout, x, w, dx, dw, db, accumulate=False, relu_y=None, masked=None):
    """dx (+)= dout @ w.T, dw = x.T @ dout, db = sum(dout, axis=0); None: not computed.
    ``relu_y`` (the dense -> relu pair's backward): ``dout`` is the gradient of the relu's output
    y, first masked by y > 0 into ``masked`` (the dense output's gradient, N x M), which the
    products then read."""
    n, d = x.shape
    m = w.shape[1]
    macs = n * m * d
    if _backward_in_one_call(n, m, d):
        _backward_one(*_backward_one_args(dout, x, w, dx, dw, db, accumulate, relu_y, masked))
        return
    if relu_y is not None:
        _relu_backward(dout.reshape(-1), relu_y.reshape(-1), masked.reshape(-1), False)
        dout = masked
    g = dout.reshape(-1)
    if dx is not None:
        _gemm_threads(False, True, n, d, m, g, m, w.reshape(-1), m, 1.0 if accumulate else 0.0,
                      dx.reshape(-1), d, _threads(macs, d))
    if dw is not None:
        _gemm_threads(True, False, d, m, n, x.reshape(-1), d, g, m, 0.0, dw.reshape(-1), m,
                      _threads(macs, m))
    if db is not None:
        _bias_grad(dout, db, np.zeros(m))


def dense_backward_step(dout, x, w, dx, dw, db, accumulate=False, relu_y=None, masked=None):
    """``dense_backward_into`` as a step, bound once where it is one call (as
    ``dense_forward_step``)."""
    n, d = x.shape
    if not _backward_in_one_call(n, w.shape[1], d):
        return lambda: dense_backward_into(dout, x, w, dx, dw, db, accumulate, relu_y, masked)
    return functools.partial(_backward_one, *_backward_one_args(dout, x, w, dx, dw, db, accumulate,
                                                                relu_y, masked))


def _backward_in_one_call(n, m, d):
    """Whether the backward of an (n, d) x (d, m) dense runs on one thread, as one call."""
    return _threads(n * m * d, d) == 1 and _threads(n * m * d, m) == 1


def _backward_one_args(dout, x, w, dx, dw, db, accumulate, relu_y, masked):
    n, d = x.shape
    m = w.shape[1]
    empty = none_array(x.dtype)
    return (dout.reshape(-1), x.reshape(-1), w.reshape(-1), n, m, d,
            empty if dx is None else dx.reshape(-1), 1.0 if accumulate else 0.0,
            empty if dw is None else dw.reshape(-1), empty if db is None else db,
            np.zeros(0 if db is None else m), empty if relu_y is None else relu_y.reshape(-1),
            empty if relu_y is None else masked.reshape(-1))


@jit
def _forward_one(a, w, bias, c, n, m, d, relu):
    """One thread's dense forward in one call (flat row-major arrays): c (n, m) = a (n, d) @
    w (d, m) + bias (0 elements: none), then its relu (``relu``), in the order and with the
    roundings of the separate calls (``_add_bias``, ``activation._relu_forward``)."""
    gemm(False, False, n, m, d, 1.0, a, d, w, m, 0.0, c, m)
    if bias.size:
        _add_bias(c.reshape(n, m), bias)
    if relu:
        _relu_forward(c, c)


@jit
def _backward_one(g, a, w, n, m, d, dx, beta, dw, db, acc, relu_y, masked):
    """One thread's dense backward in one call (flat row-major arrays; 0 elements: not
    computed): with ``relu_y``, g masked by relu_y > 0 into ``masked`` first; dx (n, d) = g @
    w.T + beta dx, dw (d, m) = a.T @ g, db = column sums of g (in float64 ``acc``, m of scratch)."""
    if relu_y.size:
        _relu_backward(g, relu_y, masked, False)
        src = masked
    else:
        src = g
    if dx.size:
        gemm(False, True, n, d, m, 1.0, src, m, w, m, beta, dx, d)
    if dw.size:
        gemm(True, False, d, m, n, 1.0, a, d, src, m, 0.0, dw, m)
    if db.size:
        _bias_grad(src.reshape(n, m), db, acc)
