"""numba options in one place (numba-stats' `_util.py` pattern).

* ``cache=True``: compiled machine code is stored in ``__pycache__`` next to the sources, so a
  second process loads every kernel from disk instead of compiling it again.
* ``nogil=True``: kernels release the GIL (the data loader can run beside them).
* ``error_model="numpy"``: no ZeroDivisionError checks inside loops (they block vectorisation);
  every divisor in the kernels is a validated stride, count or size.
* no ``fastmath``: results must be exact to rounding (no reassociation, no flush-to-zero).

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


@jit
def sum64(a):
    """Sum of a 1-D array in float64 with eight interleaved partial sums.

    Without fastmath LLVM must add in order (one add per FP latency, no SIMD); eight
    independent sums run 3x faster and are at least as accurate.  The order is fixed, so the
    result is deterministic.
    """
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n8 = a.size // 8 * 8
    for e in range(0, n8, 8):
        s0 += a[e]
        s1 += a[e + 1]
        s2 += a[e + 2]
        s3 += a[e + 3]
        s4 += a[e + 4]
        s5 += a[e + 5]
        s6 += a[e + 6]
        s7 += a[e + 7]
    s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for e in range(n8, a.size):
        s += a[e]
    return s
