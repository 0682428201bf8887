"""Dense (fully connected) layer: out = x @ w + b, x (N, D), w (D, M), b (M,).

    dx = dout @ w.T      dw = x.T @ dout      db = sum over the batch of dout

Each product is one BLAS call; large ones are split over threads by blocks of output columns
(disjoint outputs; the BLAS numba calls runs one thread per call, see ``_blas``).
"""
import numpy as np

from cnnspec.kernels._blas import gemm
from cnnspec.kernels._jit import jit, num_threads, run_split

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
    """db = column sums of dout, in float64 (``acc``: M float64 zeros, made by the caller: an
    np.zeros here compiled numba's allocation machinery, 0.2 s of a first run)."""
    for i in range(dout.shape[0]):
        row = dout[i]
        for j in range(row.size):
            acc[j] += row[j]
    for j in range(db.size):
        db[j] = acc[j]


def _threads(macs, columns):
    return 1 if macs < _PARALLEL_MACS or columns < 64 else min(num_threads(), columns // 32)


def dense_forward_into(x, w, b, out):
    """out (N, M) = x (N, D) @ w (D, M) + b (M,) (b may be None)."""
    n, d = x.shape
    m = w.shape[1]
    _gemm_threads(False, False, n, m, d, x.reshape(-1), d, w.reshape(-1), m, 0.0,
                  out.reshape(-1), m, _threads(n * m * d, m))
    if b is not None:
        _add_bias(out, b)


def dense_backward_into(dout, x, w, dx, dw, db, accumulate=False):
    """dx (+)= dout @ w.T, dw = x.T @ dout, db = sum(dout, axis=0); None: not computed."""
    n, d = x.shape
    m = w.shape[1]
    g = dout.reshape(-1)
    if dx is not None:
        _gemm_threads(False, True, n, d, m, g, m, w.reshape(-1), m, 1.0 if accumulate else 0.0,
                      dx.reshape(-1), d, _threads(n * m * d, d))
    if dw is not None:
        _gemm_threads(True, False, d, m, n, x.reshape(-1), d, g, m, 0.0, dw.reshape(-1), m,
                      _threads(n * m * d, m))
    if db is not None:
        _bias_grad(dout, db, np.zeros(m))
