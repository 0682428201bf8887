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
disjoint outputs (samples, planes, elements) and :func:`run_split` runs the ranges on a few
daemon worker threads; ``nogil=True`` lets them run at once.  Measured (float64, conv, 2 cores):
the ``prange`` drivers took 15.5 s (forward) + 23.6 s (backward) to compile against 11.1 + 11.2
s for the serial ones they call, per dtype, and the OpenMP layer's thread wake-up added
milliseconds per call when another process held a core; a split call costs the worker's wake-up
(~15-20 us measured with the cores shared) and ~5 us of Python, so only work above ~0.1 ms is
split.  :func:`elementwise` and :func:`by_samples` split the memory-bound kernels (activations,
add, copies, softmax, concat).  The split is static: results do not depend on timing (but a
reduction split over threads, conv's dw, may round differently for another thread count).

numba's cache checks only the source file of the function it compiles: after editing a helper
here (or ``_blas.py``) that kernels in other files call, delete ``cnnspec/kernels/__pycache__``.
"""
import os
import threading

import numba
import numpy as np

jit = numba.njit(cache=True, nogil=True, error_model="numpy")
jit_sum = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})


def num_threads() -> int:
    """Threads a split kernel uses: CNNSPEC_THREADS, else the machine's cores (at most 8)."""
    value = os.environ.get("CNNSPEC_THREADS")
    return max(1, int(value)) if value else max(1, min(8, os.cpu_count() or 1))


class _Worker:
    """A daemon thread that runs one piece per call: ``task`` is set, ``go`` released; it runs
    the piece and releases ``done``.  Two plain locks per call and no futures: a split call
    costs the threads' wake-up and ~5 us of Python (ThreadPoolExecutor's futures and queue
    added ~10 us)."""

    def __init__(self):
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.task, self.error = None, None
        threading.Thread(target=self._loop, name="cnnspec-kernels", daemon=True).start()

    def _loop(self):
        while True:
            self.go.acquire()
            fn, args = self.task
            self.task = None
            try:
                fn(*args)
            except BaseException as error:         # handed to the caller, which raises it
                self.error = error
            self.done.release()


_workers = []
_busy = threading.Lock()                          # held by the call whose pieces the workers run


def _forget_workers():
    """A forked child has none of the parent's threads: it starts its own."""
    global _workers, _busy
    _workers, _busy = [], threading.Lock()


os.register_at_fork(after_in_child=_forget_workers)


_CHUNKS_PER_THREAD = 4                  # pieces of a dynamic split, per thread


def _drain(fn, args_for, slot, claim, n, pieces):
    """Run the pieces claimed from ``claim`` (a shared iterator: ``next`` is atomic under the
    GIL) with the thread's ``slot`` (its scratch, e.g. its slice of a workspace), or with the
    piece's own index when ``slot`` is None."""
    for c in claim:
        fn(*args_for(c if slot is None else slot, c * n // pieces, (c + 1) * n // pieces))


def piece_count(n, threads, per_thread=_CHUNKS_PER_THREAD):
    """How many pieces a dynamic split of range(n) over ``threads`` threads makes."""
    return 1 if threads <= 1 else min(n, per_thread * threads)


def run_split(fn, n, threads, args_for, dynamic=False, pieces=None):
    """Call ``fn(*args_for(t, lo, hi))`` over range(n) cut into contiguous [lo, hi) pieces, on
    ``threads`` threads (the calling one and the workers).

    Static (default): piece t is [t*n//threads, (t+1)*n//threads) with slot t, piece 0 in the
    calling thread.  ``dynamic``: ``piece_count(n, threads)`` pieces, each thread taking the
    next free one and passing its own slot (0: the calling thread): for kernels whose pieces
    write disjoint outputs and use the slot only for scratch.  ``pieces=k``: dynamic over k
    pieces, passing the piece's index instead of a slot: for kernels that sum partial results
    (conv's dw), each piece into its own scratch, summed afterwards in piece order.  Either way
    the result does not depend on which thread ran which piece.  With dynamic pieces a thread
    that the OS deschedules (a busy machine) holds up one small piece, not half the work, and
    the calling thread starts at once instead of waiting for a worker to wake.

    While the workers serve one call, another (from a second Python thread, or from inside a
    piece) runs its pieces one after the other in its own thread: the same results."""
    if threads <= 1 and pieces is None:
        fn(*args_for(0, 0, n))
        return
    by_piece = pieces is not None
    if by_piece:
        dynamic = True
    elif dynamic:
        pieces = piece_count(n, threads)
    else:
        pieces = threads
    if threads <= 1:
        for c in range(pieces):
            fn(*args_for(c, c * n // pieces, (c + 1) * n // pieces))
        return
    if not _busy.acquire(blocking=False):
        for c in range(pieces):
            slot = 0 if dynamic and not by_piece else c
            fn(*args_for(slot, c * n // pieces, (c + 1) * n // pieces))
        return
    try:
        helpers = min(threads, pieces) - 1
        while len(_workers) < helpers:
            _workers.append(_Worker())
        claim = iter(range(pieces))
        started = []
        try:
            for t in range(1, helpers + 1):
                worker = _workers[t - 1]
                if dynamic:
                    slot = None if by_piece else t
                    worker.task = (_drain, (fn, args_for, slot, claim, n, pieces))
                else:
                    worker.task = (fn, args_for(t, t * n // threads, (t + 1) * n // threads))
                worker.go.release()
                started.append(worker)
            if dynamic:
                _drain(fn, args_for, None if by_piece else 0, claim, n, pieces)
            else:
                fn(*args_for(0, 0, n // threads))
        finally:
            for worker in started:                  # never leave a worker running a piece
                worker.done.acquire()
        errors = [worker.error for worker in started if worker.error is not None]
        for worker in started:
            worker.error = None
        if errors:
            raise errors[0]
    finally:
        _busy.release()


_PARALLEL_ELEMENTS = 1 << 18           # element-wise loops below this many elements: one thread
_BLOCK = 16                            # pieces start on 64-byte lines (float32): no line is shared


def elementwise(kernel, *args):
    """``kernel(*args)`` for an element-wise kernel whose array arguments are 1-D and as long as
    the first: a big call runs on the threads, each on its contiguous piece of every such array
    (other arguments passed as they are).  The result does not depend on the split."""
    n = args[0].shape[0]
    if n < _PARALLEL_ELEMENTS or num_threads() <= 1:
        kernel(*args)
        return
    cut = tuple(isinstance(a, np.ndarray) and a.ndim == 1 and a.shape[0] == n for a in args)

    def args_for(t, lo, hi):
        lo, hi = lo * _BLOCK, min(hi * _BLOCK, n)
        return tuple(a[lo:hi] if c else a for a, c in zip(args, cut))
    run_split(kernel, -(-n // _BLOCK), min(num_threads(), -(-n // _BLOCK)), args_for, dynamic=True)


def by_samples(kernel, work, *args):
    """``kernel(*args)`` for a kernel independent per sample (axis 0 of the arrays as long as the
    first argument): with ``work`` (elements touched) above the element-wise threshold, the
    threads take contiguous ranges of samples, each calling ``kernel`` on its slices."""
    n = args[0].shape[0]
    threads = 1 if work < _PARALLEL_ELEMENTS else min(num_threads(), n)
    if threads <= 1:
        kernel(*args)
        return
    cut = tuple(isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] == n for a in args)
    run_split(kernel, n, threads, lambda t, lo, hi: tuple(a[lo:hi] if c else a
                                                          for a, c in zip(args, cut)), dynamic=True)


@jit_sum
def sum64(a):
    """Sum of a 1-D array in float64 (vectorised: see ``jit_sum``)."""
    s = 0.0
    for e in range(a.size):
        s += a[e]
    return s

