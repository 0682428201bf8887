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
(~15-20 us measured with the cores shared), ~5 us of Python and two hand-offs of the GIL per
piece (a no-op call in 2 pieces: 7-13 us of CPU, in 8: 13-27 us), so only work above ~0.1 ms is
split.  :func:`elementwise` and :func:`by_samples` split the memory-bound kernels (activations,
add, copies, softmax, concat).  The pieces are fixed: results do not depend on timing (but a
reduction split over threads, conv's dw, may round differently for another thread count).

numba's cache checks only the source file of the function it compiles: after editing a helper
here (or ``_blas.py``) that kernels in other files call, delete ``cnnspec/kernels/__pycache__``.
"""
import itertools
import os
import threading

import numba
import numpy as np

jit = numba.njit(cache=True, nogil=True, error_model="numpy")
jit_sum = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
# a helper called per plane or row: numba inlines it where it is called.  A call from one jitted
# function to another stays a call when LLVM finds the callee too big to inline (branches,
# loops), and costs ~10-25 ns: the batchnorm's backward on 64x64x8x8 spent half its time calling
# its per-plane helper
jit_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")


_alone = threading.local()                 # .on: this thread runs a piece of a whole-batch split


# the machine's cores, counted once: os.cpu_count() reads /sys on every call (7 us, and a
# LeNet-5 step asks for the thread count a dozen times)
_CORES = max(1, min(8, os.cpu_count() or 1))


def num_threads() -> int:
    """Threads a split kernel uses: CNNSPEC_THREADS, else the machine's cores (at most 8); 1 inside
    :func:`alone` (a thread that runs its own share of samples through every layer)."""
    if getattr(_alone, "on", False):
        return 1
    value = os.environ.get("CNNSPEC_THREADS")
    return max(1, int(value)) if value else _CORES


def alone(steps) -> None:
    """Run ``steps`` (zero-argument callables) in order on this thread with :func:`num_threads` 1:
    the kernels they call neither split nor reserve workspace for other threads.  The engine's
    training by samples runs each thread's share of the batch so (``engine.plan.BySamples``)."""
    before = getattr(_alone, "on", False)
    _alone.on = True
    try:
        for step in steps:
            step()
    finally:
        _alone.on = before


class _Job:
    """One split call: the calling thread (index 0) takes its pieces from the front, the workers
    that join (index 1 .. helpers) from the back, so that with a worker on time each thread keeps
    the same end of the batch from one call to the next (its data stays in that core's cache: a
    LeNet-5 step's tensors fit in L2); the one that finishes the last piece releases ``done``."""

    __slots__ = ("fn", "args_for", "n", "pieces", "by_slot", "helpers", "front", "back", "lock",
                 "finished", "done", "errors")

    def __init__(self, fn, args_for, n, pieces, by_slot, helpers):
        self.fn, self.args_for, self.n, self.pieces = fn, args_for, n, pieces
        self.by_slot, self.helpers = by_slot, helpers
        self.front, self.back, self.lock = 0, pieces, threading.Lock()
        self.finished = itertools.count(1)
        self.done, self.errors = threading.Lock(), []
        self.done.acquire()

    def _take(self, index):
        """The next free piece from this thread's end, None when none is left."""
        with self.lock:
            if self.front >= self.back:
                return None
            if index == 0:
                self.front += 1
                return self.front - 1
            self.back -= 1
            return self.back

    def run(self, index):
        """Run pieces until none is left; ``index``: the thread's slot (0: the caller)."""
        fn, args_for, n, pieces = self.fn, self.args_for, self.n, self.pieces
        while (c := self._take(index)) is not None:
            try:
                fn(*args_for(index if self.by_slot else c, c * n // pieces, (c + 1) * n // pieces))
            except BaseException as error:         # handed to the caller, which raises it
                self.errors.append(error)
            if next(self.finished) == pieces:
                self.done.release()


_job = None
_WORKER_NAME = "cnnspec-kernels"


class _Worker:
    """A daemon thread that joins the posted calls: woken by ``wake`` (released by the caller),
    it runs what pieces are left of the current call, if any, and sleeps again."""

    def __init__(self, index):
        self.index = index
        self.wake = threading.Lock()
        self.wake.acquire()
        threading.Thread(target=self._loop, name=_WORKER_NAME, daemon=True).start()

    def _loop(self):
        while True:
            self.wake.acquire()
            job = _job
            if job is not None and self.index <= job.helpers:
                job.run(self.index)


_workers = []
_busy = threading.Lock()                          # held by the call whose pieces the workers run
_owner = None                                     # the thread that holds it


def _forget_workers():
    """A forked child has none of the parent's threads: it starts its own."""
    global _workers, _busy, _job, _owner
    _workers, _busy, _job, _owner = [], threading.Lock(), None, None


os.register_at_fork(after_in_child=_forget_workers)


_CHUNKS_PER_THREAD = 4                  # pieces of a dynamic split, per thread


def piece_count(n, threads, per_thread=_CHUNKS_PER_THREAD):
    """How many pieces a dynamic split of range(n) over ``threads`` threads makes."""
    return 1 if threads <= 1 else min(n, per_thread * threads)


def run_split(fn, n, threads, args_for, dynamic=False, pieces=None,
              per_thread=_CHUNKS_PER_THREAD, together=False):
    """Call ``fn(*args_for(t, lo, hi))`` over range(n) cut into contiguous [lo, hi) pieces, on
    ``threads`` threads (the calling one and the workers).

    Static (default): ``threads`` pieces, piece t [t*n//threads, (t+1)*n//threads) with slot t.
    ``dynamic``: ``piece_count(n, threads, per_thread)`` pieces, each passed the slot of the
    thread that runs it (0: the calling thread): for kernels whose pieces write disjoint outputs
    and use the slot only for scratch.  ``pieces=k``: k pieces, each passed its own index: for kernels that sum
    partial results (conv's dw), each piece into its own scratch, summed afterwards in piece
    order.  Every piece is taken by whichever thread is free, so the result never depends on
    which thread ran which piece; a thread that the OS deschedules (a busy machine) holds up one
    piece, not half the work, and the calling thread starts at once.  The caller waits only for
    pieces a worker started: a worker that wakes late finds none left.

    While the workers serve one call, another (from a second Python thread, or from inside a
    piece) runs its pieces one after the other in its own thread: the same results.

    ``together``: pieces that wait for each other (``plan.BySamples``' shares meet at a barrier)
    run at once, each on its own thread (``pieces`` at most ``threads``): such a call waits for
    the workers while another call has them, and cannot be made from inside a piece."""
    global _job, _owner
    if threads <= 1 and pieces is None:
        fn(*args_for(0, 0, n))
        return
    by_slot = dynamic and pieces is None
    if pieces is None:
        pieces = piece_count(n, threads, per_thread) if dynamic else threads
    helpers = min(threads, pieces) - 1
    if together:
        if pieces > threads or _owner == threading.get_ident() or \
                threading.current_thread().name == _WORKER_NAME:
            raise RuntimeError("pieces that run together need a thread each, outside a split call")
        _busy.acquire()
    elif helpers <= 0 or not _busy.acquire(blocking=False):
        for c in range(pieces):
            fn(*args_for(0 if by_slot else c, c * n // pieces, (c + 1) * n // pieces))
        return
    _owner = threading.get_ident()
    try:
        while len(_workers) < helpers:
            _workers.append(_Worker(len(_workers) + 1))
        _job = job = _Job(fn, args_for, n, pieces, by_slot, helpers)
        for worker in _workers[:helpers]:
            if worker.wake.locked():                 # else: woken already, not yet running
                worker.wake.release()
        job.run(0)
        job.done.acquire()                           # the pieces a worker started are done
        if job.errors:
            raise job.errors[0]
    finally:
        _owner = None
        _busy.release()


_PARALLEL_ELEMENTS = 1 << 18           # element-wise loops below this many elements: one thread
_BLOCK = 16                            # pieces start on 64-byte lines (float32): no line is shared
_SMALL_WORK = 1 << 21                  # below this many elements touched, 2 pieces per thread


def memory_pieces(n, threads, work):
    """Pieces of a memory-bound split of range(n) (``work``: elements touched): 4 per thread, 2
    for a call under 2M elements (each piece costs two hand-offs of the GIL, ~5 us each on a
    quiet machine and several times that on a busy one: a tenth of a 0.2 ms call in 8 pieces)."""
    return piece_count(n, threads, 2 if work < _SMALL_WORK else _CHUNKS_PER_THREAD)


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
    blocks = -(-n // _BLOCK)
    threads = min(num_threads(), blocks)
    run_split(kernel, blocks, threads, args_for, pieces=memory_pieces(blocks, threads, n))


def by_samples(kernel, work, *args, scratch=()):
    """``kernel(*args)`` for a kernel independent per sample (axis 0 of the arrays as long as the
    first argument): with ``work`` (elements touched) above the element-wise threshold, the
    threads take contiguous ranges of samples, each calling ``kernel`` on its slices.
    ``scratch``: (length, dtype) pairs; each call gets its own 1-D array of each after the
    arguments (a kernel's rows of work: allocating them inside the kernel cost ~0.3 s of its
    first compile)."""
    n = args[0].shape[0]
    threads = 1 if work < _PARALLEL_ELEMENTS else min(num_threads(), n)
    if threads <= 1:
        kernel(*args, *(np.empty(length, dtype) for length, dtype in scratch))
        return
    pieces = memory_pieces(n, threads, work)
    rows = [np.empty((pieces, length), dtype) for length, dtype in scratch]
    cut = tuple(isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] == n for a in args)
    run_split(kernel, n, threads, lambda t, lo, hi: tuple(a[lo:hi] if c else a
                                                          for a, c in zip(args, cut))
              + tuple(r[t] for r in rows), pieces=pieces)


@jit_sum
def sum64(a):
    """Sum of a 1-D array in float64 (vectorised: see ``jit_sum``)."""
    s = 0.0
    for e in range(a.size):
        s += a[e]
    return s

