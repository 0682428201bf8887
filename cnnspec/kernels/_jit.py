"""numba options in one place (numba-stats' `_util.py` pattern).

* ``cache=True``: compiled machine code is stored in ``__pycache__`` next to the sources, so a
  second process loads every kernel from disk instead of compiling it again.
* ``nogil=True``: kernels release the GIL (the data loader can run beside them).
* ``error_model="numpy"``: no ZeroDivisionError checks inside loops (they block vectorisation);
  every divisor in the kernels is a validated stride, count or size.
* no ``fastmath``: results must be exact to rounding (no reassociation, no flush-to-zero).
  The one exception is :data:`jit_sum`, for float64 sums (reductions) only: it allows
  reassociation (nothing else), so LLVM vectorises the sum with several partial sums.  That is
  as accurate as a sum in order, and deterministic (the compiled order is fixed on a machine; a
  CPU with other vector widths may differ in the last bits, as BLAS does); measured 3.6x faster
  than eight hand-interleaved partial sums, which LLVM kept scalar.

Threads: no ``parallel=True``.  A big kernel is split by the caller into contiguous ranges of
disjoint outputs (samples, planes) and :func:`run_split` runs the ranges on a small pool of
Python threads; ``nogil=True`` lets them run at once.  Measured (float64, conv, 2 cores): the
``prange`` drivers took 15.5 s (forward) + 23.6 s (backward) to compile against 11.1 + 11.2 s
for the serial ones they call, per dtype, and the OpenMP layer's thread wake-up added
milliseconds per call when another process held a core; the thread pool costs ~20 us per call,
so only work above ~0.1 ms is split.  The split is static: results do not depend on timing.

numba's cache checks only the source file of the function it compiles: after editing a helper
here (or ``_blas.py``) that kernels in other files call, delete ``cnnspec/kernels/__pycache__``.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

jit = numba.njit(cache=True, nogil=True, error_model="numpy")
jit_sum = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})

_pool = None
_pool_lock = threading.Lock()


def num_threads() -> int:
    """Threads a split kernel uses: CNNSPEC_THREADS, else the machine's cores (at most 8)."""
    value = os.environ.get("CNNSPEC_THREADS")
    return max(1, int(value)) if value else max(1, min(8, os.cpu_count() or 1))


def run_split(fn, n, threads, args_for):
    """Call ``fn(*args_for(t, lo, hi))`` for t in range(threads), range(n) cut into contiguous
    [lo, hi) pieces; piece 0 runs in the calling thread, the others on the pool."""
    global _pool
    if threads <= 1:
        fn(*args_for(0, 0, n))
        return
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=num_threads() - 1 or 1,
                                       thread_name_prefix="cnnspec-kernels")
    futures = [_pool.submit(fn, *args_for(t, t * n // threads, (t + 1) * n // threads))
               for t in range(1, threads)]
    fn(*args_for(0, 0, n // threads))
    for f in futures:
        f.result()


@jit_sum
def sum64(a):
    """Sum of a 1-D array in float64 (vectorised: see ``jit_sum``)."""
    s = 0.0
    for e in range(a.size):
        s += a[e]
    return s
