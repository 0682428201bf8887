"""``gemm``: BLAS sgemm/dgemm callable from numba kernels, with leading dimensions and beta.

numba's own ``np.dot`` calls BLAS through the exported helper ``numba_xxgemm`` (which forwards to
``scipy.linalg.cython_blas``) but only on whole contiguous matrices with beta = 0.  Convolution
needs more: a matrix that starts inside a buffer (``ld`` larger than its width), accumulation
(beta = 1) and transposes.  We call the same helper with our own arguments.  It is resolved by
symbol name at link time, so kernels that use it stay cacheable.

Threads: the kernels split samples over threads and call BLAS from each, so the BLAS library
numba calls must use one thread per call (BLAS's own threads nested in ours were measured 1.5x
slower on two cores).  :func:`single_threaded_blas` sets that once, at import of
:mod:`cnnspec.kernels`, with threadpoolctl, and only for scipy's BLAS when numpy has its own
copy (numpy's ``matmul`` keeps its threads).
"""
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable
from numba.np.linalg import ensure_blas

ensure_blas()  # imports scipy.linalg.cython_blas, which provides the symbols numba_xxgemm calls


def _xxgemm(dtype):
    ptr = types.CPointer(dtype)
    sig = types.intc(types.char, types.char, types.char,      # kind, transa, transb
                     types.intp, types.intp, types.intp,      # m, n, k
                     ptr, ptr, types.intp, ptr, types.intp,   # alpha, a, lda, b, ldb
                     ptr, ptr, types.intp)                    # beta, c, ldc
    return types.ExternalFunction("numba_xxgemm", sig)


_XXGEMM = {types.float32: (_xxgemm(types.float32), ord("s"), np.float32),
           types.float64: (_xxgemm(types.float64), ord("d"), np.float64)}


def _xxgemv(dtype):
    ptr = types.CPointer(dtype)
    sig = types.intc(types.char, types.char,                  # kind, trans
                     types.intp, types.intp,                  # m, n
                     ptr, ptr, types.intp,                    # alpha, a, lda
                     ptr, ptr, ptr)                           # x, beta, y (both stride 1)
    return types.ExternalFunction("numba_xxgemv", sig)


_XXGEMV = {types.float32: _xxgemv(types.float32), types.float64: _xxgemv(types.float64)}


@intrinsic
def _on_stack(typingctx, value):
    """A pointer to a copy of ``value`` on the stack (BLAS takes alpha and beta by reference): no
    heap array per call, and no np.empty to compile (0.15 s of a first run)."""
    def codegen(context, builder, signature, args):
        return cgutils.alloca_once_value(builder, args[0])

    return types.CPointer(value)(value), codegen


@register_jitable(inline="always")
def _clear(c, n, beta):
    """y = 0 before a gemv with beta 0: gemm's contract is that C is not read, and a BLAS that
    scales y by beta would make an unwritten buffer's NaN a NaN result (0 * NaN); the BLAS that
    scipy ships skips it, the tests check the contract."""
    if beta == 0:
        for j in range(n):
            c[j] = 0


def gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major ``C = alpha * op(A) @ op(B) + beta * C``, C (m, n), op(A) (m, k), op(B) (k, n).

    a, b, c are 1-D arrays whose first element is the matrix's first element; row i of a matrix
    starts ``i * ld`` elements later.  ``op(A) = A.T`` when ``trans_a`` (A stored (k, m)).
    With beta == 0, C is not read.  Callable from numba kernels only.

    A product with one row (m == 1) or one column (n == 1) whose vectors are contiguous is a
    matrix-vector product (BLAS gemv): OpenBLAS's gemm packs the whole other matrix on every call
    (a dense layer's 1x400 @ 400x120 at batch 1: 35 us by gemm, 3.5 us by gemv).
    """
    raise NotImplementedError("gemm is called from numba kernels only")


@overload(gemm)
def _gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    xxgemm, kind, scalar = _XXGEMM[c.dtype]
    xxgemv = _XXGEMV[c.dtype]
    N, T = ord("n"), ord("t")

    def impl(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        if m == 0 or n == 0:
            return
        if k == 0:                          # the product is empty: C = beta * C
            for i in range(m):
                for j in range(n):
                    c[i * ldc + j] = c[i * ldc + j] * beta if beta != 0 else 0
            return
        # column-major BLAS sees every row-major matrix transposed: C^T = op(B)^T @ op(A)^T
        if m == 1 and (lda == 1 or not trans_a):
            # C's row = op(A)'s row (contiguous) @ op(B): y = op(B)^T x, B's storage seen
            # column-major is B^T (not trans_b: n x k) or op(B) (trans_b: k x n)
            matrix, ld, x, length = b, ldb, a, n
            trans, rows, cols = (T, k, n) if trans_b else (N, n, k)
        elif n == 1 and ldc == 1 and (ldb == 1 or trans_b):
            # C's column = op(A) @ op(B)'s column (contiguous): y = op(A) x, A's storage seen
            # column-major is A^T (not trans_a: k x m) or op(A) (trans_a: m x k)
            matrix, ld, x, length = a, lda, b, m
            trans, rows, cols = (N, m, k) if trans_a else (T, k, m)
        else:
            xxgemm(kind, T if trans_b else N, T if trans_a else N, n, m, k,
                   _on_stack(scalar(alpha)), b.ctypes, ldb, a.ctypes, lda,
                   _on_stack(scalar(beta)), c.ctypes, ldc)
            return
        _clear(c, length, beta)
        xxgemv(kind, trans, rows, cols, _on_stack(scalar(alpha)), matrix.ctypes, ld, x.ctypes,
               _on_stack(scalar(beta)), c.ctypes)

    return impl


def single_threaded_blas():
    """Make the BLAS that numba's kernels call run one thread per call (see module docstring)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:                     # still correct, only slower on several cores
        return
    import os

    numpy_dir = os.path.dirname(np.__file__)
    controller = ThreadpoolController()
    blas = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
    # numpy's wheels bundle their own BLAS (in numpy.libs / numpy/.dylibs): leave that one alone
    own = [lib for lib in blas if not os.path.dirname(lib.filepath).startswith(numpy_dir)]
    for lib in own or blas:
        lib.set_num_threads(1)
