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
(~15-20 us measured with the cores shared on an Intel machine; 55-60 us on a virtual machine
whose idle vCPUs halt, hence the spinning waits below), ~5 us of Python and two hand-offs of the
GIL per piece (a no-op call in 2 pieces: 7-13 us of CPU, in 8: 13-27 us), so only work above
~0.1 ms is split.  :func:`elementwise` and :func:`by_samples` split the memory-bound kernels (activations,
add, copies, softmax, concat).  The pieces are fixed: results do not depend on timing (but a
reduction split over threads, conv's dw, may round differently for another thread count).

numba's cache checks only the source file of the function it compiles: after editing a helper
here (or ``_blas.py``) that kernels in other files call, delete ``cnnspec/kernels/__pycache__``.
"""
import functools
import itertools
import os
import platform
import threading
import time

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from cnnspec.errors import CnnSpecError

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
    if not value:
        return _CORES
    try:
        return max(1, int(value))
    except ValueError:
        raise CnnSpecError(f"CNNSPEC_THREADS must be a whole number of threads, not {value!r}",
                           hint="unset it to use every core, or set it to 1 for one thread") from None


_NONE = {}


def none_array(dtype, ndim: int = 1) -> np.ndarray:
    """A 0-element array of ``dtype`` and ``ndim`` axes, made once: what a compiled kernel is
    given for an argument its caller leaves out (numba types None apart, a compile each)."""
    key = (np.dtype(dtype), ndim)
    if key not in _NONE:
        _NONE[key] = np.zeros((0,) * ndim, dtype)
    return _NONE[key]


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


def one_call(fn, n, args_for):
    """``run_split(fn, n, 1, args_for)`` as a step (a function of no arguments) for a thread of
    its own (a training share's layer, built and run :func:`alone`): ``fn``'s one call over
    range(n), its arguments made now and bound once (``functools.partial``).  Between a share's
    kernels no Python runs but the calls, so the shares' threads wait less for the GIL, which
    each needs after every kernel: LeNet-5 at batch 64 on two threads, every step so bound,
    1.00-1.07x, a median near 1.03x (six processes, 16 rounds each; the performance log's
    twenty-second round)."""
    return functools.partial(fn, *args_for(0, 0, n))


def in_turn(*steps):
    """Steps (functions of no arguments) as one step that calls them in order; one step as it
    is.  A layer on one thread whose kernels are several calls (pack the weights, run the
    samples, sum the partials) is its calls bound once, as :func:`one_call`'s."""
    return steps[0] if len(steps) == 1 else functools.partial(_in_turn, steps)


def _in_turn(steps):
    for step in steps:
        step()


class _Job:
    """One split call: the calling thread (index 0) takes its pieces from the front, the workers
    that join (index 1 .. helpers) from the back, so that with a worker on time each thread keeps
    the same end of the batch from one call to the next (its data stays in that core's cache: a
    LeNet-5 step's tensors fit in L2); the one that finishes the last piece releases ``done``."""

    __slots__ = ("fn", "args_for", "n", "pieces", "by_slot", "helpers", "front", "back", "lock",
                 "finished", "done", "errors", "number")

    def __init__(self, fn, args_for, n, pieces, by_slot, helpers, number):
        self.number = number                          # what _signals[_POSTED] says of it
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

    def run(self, index, post=None) -> bool:
        """Run pieces until none is left; ``index``: the thread's slot (0: the caller).
        ``post``: called once the first piece's arguments are made, just before it runs.
        Whether this thread finished the last piece: a worker that did tells the spinning
        caller from compiled code, the GIL released (``_Worker._loop``), else the caller would
        wake to a GIL the worker still holds, and sleep on it."""
        fn, args_for, n, pieces = self.fn, self.args_for, self.n, self.pieces
        last = False
        while (c := self._take(index)) is not None:
            try:
                args = args_for(index if self.by_slot else c, c * n // pieces, (c + 1) * n // pieces)
                if post is not None:
                    post()
                    post = None
                fn(*args)
            except BaseException as error:         # handed to the caller, which raises it
                self.errors.append(error)
            if next(self.finished) == pieces:
                self.done.release()                   # before the signal: the caller's acquire
                last = True
                if index == 0:
                    _signals[_FINISHED] = self.number
        return last


_job = None
_WORKER_NAME = "cnnspec-kernels"


class _Worker:
    """A daemon thread that joins the posted calls: it runs what pieces are left of the current
    call, if any, then waits for the next one, first by spinning (``_spin_while``, the GIL
    released) for up to CNNSPEC_SPIN_US microseconds, then asleep on ``wake`` (released by the
    caller that finds it ``sleeping``)."""

    def __init__(self, index):
        self.index, self.sleeping = index, False
        self.wake = threading.Lock()
        self.wake.acquire()
        seen = int(_signals[_POSTED])                 # made before the call it is made for
        threading.Thread(target=self._loop, args=(seen,), name=_WORKER_NAME, daemon=True).start()

    def _loop(self, seen):
        finished = -1                                 # the call whose last piece it ran
        while True:
            if not _spin_while(_signals, _POSTED, seen, True, _spins(), _FINISHED, finished):
                self.sleeping = True
                if _signals[_POSTED] == seen:         # else posted since the spin: no sleep
                    self.wake.acquire()
                self.sleeping = False
            seen, finished = int(_signals[_POSTED]), -1
            job = _job
            if job is not None and self.index <= job.helpers and job.run(self.index):
                finished = job.number


_workers = []
_busy = threading.Lock()                          # held by the call whose pieces the workers run
_owner = None                                     # the thread that holds it


def _forget_workers():
    """A forked child has none of the parent's threads: it starts its own."""
    global _workers, _busy, _job, _owner
    _workers, _busy, _job, _owner = [], threading.Lock(), None, None


os.register_at_fork(after_in_child=_forget_workers)


# Waiting by spinning.  On a virtual machine a thread woken from sleep (a lock, a condition)
# starts late: this one's vCPUs halt when idle, and the woken thread ran 55-60 us after the
# release (a split call of two 33 us pieces took 92 us; the caller also slept on ``done`` for the
# worker's piece).  So the workers, between calls, and the caller, for the pieces a worker runs,
# first spin on _signals in compiled code without the GIL (the same call: 74 us, 41 us in a
# prototype whose pieces ran no Python), as OpenMP's threads spin (GOMP_SPINCOUNT,
# KMP_BLOCKTIME) before they sleep.  What is left is the GIL: a thread that returns from a
# kernel while another runs Python waits for it asleep.
_POSTED, _FINISHED = 0, 8                  # _signals' slots, a 64-byte line apart
_signals = np.zeros(16, np.int64)          # the last call posted, the last call finished
_SPIN_DEFAULT_US = 1000


def _item(context, builder, signature, args):
    """The address of ``args[0][args[1]]`` (an intrinsic's array and index)."""
    view = context.make_array(signature.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, signature.args[0], view, [args[1]])


@intrinsic
def _load_acquire(typingctx, array, index):
    """``array[index]`` of an int64 array, read from memory on every call (an atomic load:
    LLVM may not keep it in a register across the spin loop)."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_item(context, builder, signature, args), "acquire", 8)
    return types.int64(array, index), codegen


@intrinsic
def _cpu_relax(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``, ARM ``yield``), else nothing."""
    machine = platform.machine().lower()

    def codegen(context, builder, signature, args):
        if machine in ("x86_64", "amd64", "i686", "x86"):
            hint = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(hint, [])
        elif machine in ("aarch64", "arm64"):
            hint = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]),
                "llvm.aarch64.hint")
            builder.call(hint, [ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    """``array[index] = value`` for an int64 array, an atomic store (seen by _load_acquire)."""
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _item(context, builder, signature, args), "release", 8)
        return context.get_dummy_value()
    return types.none(array, index, types.int64), codegen


@jit
def _spin_while(signals, slot, value, equal, spins, tell=-1, told=-1):
    """Spin while ``signals[slot] == value`` (``equal``) or ``!= value`` (not ``equal``), at
    most ``spins`` times; whether the wait ended before then.  First, with ``tell`` and
    ``told`` both 0 or more, ``signals[tell] = told`` (a signal given without the GIL)."""
    if 0 <= tell < signals.size and told >= 0:
        _store_release(signals, tell, told)
    for _ in range(spins):
        if (_load_acquire(signals, slot) == value) != equal:
            return True
        _cpu_relax()
    return False


@intrinsic
def _compare_exchange(typingctx, array, index, expected, value):
    """``array[index] = value`` if it holds ``expected`` (int64, sequentially consistent);
    returns what it held."""
    def codegen(context, builder, signature, args):
        pair = builder.cmpxchg(_item(context, builder, signature, args), args[2], args[3],
                               "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)
    return types.int64(array, index, types.int64, types.int64), codegen


@intrinsic
def _fetch_add(typingctx, array, index, value):
    """``array[index] += value`` (int64, sequentially consistent); returns what it held."""
    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _item(context, builder, signature, args), args[2], "seq_cst")
    return types.int64(array, index, types.int64), codegen


# a Barrier's signals (int64, a 64-byte line apart): the rounds it completed (-1: broken), the
# parties arrived in the round under way, the parties asleep waiting
_ROUND, _ARRIVED, _SLEEPERS = 0, 8, 16
# what an arrival (_arrive) came to, besides the round it stopped spinning in
MET, MET_NOTIFY, BROKEN = -1, -2, -3


@jit
def _arrive(signals, parties, spins):
    """One party's arrival at a Barrier's ``signals``: ``MET`` once every party came (the last
    to come lets the others go), ``MET_NOTIFY`` when it let them go and one sleeps
    (``Barrier.settle`` wakes it), ``BROKEN``; or, after ``spins`` turns, the round it waits
    for (``Barrier.settle`` sleeps).  Compiled, so a kernel can meet the others inside one call
    (``norm.batchnorm_share_forward_step``)."""
    number = _load_acquire(signals, _ROUND)
    if number < 0:
        return BROKEN
    if _fetch_add(signals, _ARRIVED, 1) + 1 == parties:
        _store_release(signals, _ARRIVED, 0)          # before the round: no one arrives earlier
        if _compare_exchange(signals, _ROUND, number, number + 1) != number:
            return BROKEN
        return MET_NOTIFY if _fetch_add(signals, _SLEEPERS, 0) > 0 else MET
    if not _spin_while(signals, _ROUND, number, True, spins):
        return number
    return BROKEN if _load_acquire(signals, _ROUND) < 0 else MET


@jit
def _compare_signal(signals, slot, expected, value):
    """``_compare_exchange`` for Python."""
    return _compare_exchange(signals, slot, expected, value)


@jit
def _add_signal(signals, slot, add):
    """``signals[slot] += add`` atomically (0: a read); what it holds then.  For Python."""
    return _fetch_add(signals, slot, add) + add


class Barrier:
    """``threading.Barrier``'s ``wait``, ``abort``, ``reset`` and ``broken`` for ``parties``
    threads, whose waiters spin in compiled code before they sleep: the shares of a training
    step meet at every batchnorm, each way (``plan.BySamples``), and a waiter woken from sleep
    started 55-60 us late on the 2-core virtual machine of the measurements.  A kernel can also
    arrive itself (``_arrive`` on ``signals``, then ``settle`` with what it came to): the
    batchnorm's share steps compute their partial sums, meet and normalise in one compiled call,
    so that the two shares, leaving the meeting together, do not both ask for the GIL (the one
    that waits for it sleeps; in ResNet-8's step on two threads the meetings and the calls after
    them cost each share ~4 ms of 45).  A broken barrier (``abort``) raises
    ``threading.BrokenBarrierError`` in every waiter, as threading's does."""

    def __init__(self, parties: int):
        self.parties = parties
        self.signals = np.zeros(_SLEEPERS + 8, np.int64)
        self._cond = threading.Condition()

    @property
    def broken(self) -> bool:
        return _add_signal(self.signals, _ROUND, 0) < 0

    def wait(self) -> None:
        self.settle(_arrive(self.signals, self.parties, _spins()))

    def settle(self, came) -> None:
        """What is left of an arrival that came to ``came`` (``_arrive``'s value): sleep until
        the round ``came`` ends, wake the sleepers, or raise for a broken barrier."""
        if came == MET:
            return
        if came == MET_NOTIFY:
            with self._cond:
                self._cond.notify_all()
            return
        if came >= 0:
            signals = self.signals
            _add_signal(signals, _SLEEPERS, 1)       # before the round is read: seen, or woken
            try:
                with self._cond:
                    self._cond.wait_for(lambda: _add_signal(signals, _ROUND, 0) != came)
            finally:
                _add_signal(signals, _SLEEPERS, -1)
        if self.broken:
            raise threading.BrokenBarrierError

    def abort(self) -> None:
        """Break the barrier: every thread waiting at it, or coming to it, raises."""
        with self._cond:
            while True:                               # the round to -1, unless a party moves it on
                number = _add_signal(self.signals, _ROUND, 0)
                if number < 0 or _compare_signal(self.signals, _ROUND, number, -1) == number:
                    break
            self._cond.notify_all()

    def reset(self) -> None:
        """Whole again (no thread may be waiting)."""
        with self._cond:
            self.signals[:] = 0


_spin_count = None


def _spins() -> int:
    """How many turns of _spin_while make CNNSPEC_SPIN_US microseconds (default 1000; 0: no
    spinning, every wait sleeps), measured once (a ``pause`` takes 10-150 cycles by CPU)."""
    global _spin_count
    if _spin_count is None:
        text = os.environ.get("CNNSPEC_SPIN_US", str(_SPIN_DEFAULT_US))
        try:
            us = float(text)
        except ValueError:
            us = -1.0
        if not 0 <= us < float("inf"):
            raise CnnSpecError(f"CNNSPEC_SPIN_US must be a number of microseconds, 0 or more, "
                               f"not {text!r}", hint="0: waiting threads sleep at once, without "
                               f"spinning; unset: {_SPIN_DEFAULT_US}")
        probe = np.ones(1, np.int64)
        _spin_while(probe, 0, 1, True, 1)
        turns, start = 20000, time.perf_counter()
        _spin_while(probe, 0, 1, True, turns)
        per_us = turns / max(1e-6, (time.perf_counter() - start) * 1e6)
        _spin_count = min(max(0, int(us * per_us)), 1 << 62)     # (an int64 for the kernel)
    return _spin_count


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
            _spins()                                 # measured before a worker spins
            _workers.append(_Worker(len(_workers) + 1))
        number = int(_signals[_POSTED]) + 1
        _job = job = _Job(fn, args_for, n, pieces, by_slot, helpers, number)

        def post():
            _signals[_POSTED] = number               # the spinning workers start
            for worker in _workers[:helpers]:
                if worker.sleeping and worker.wake.locked():   # else: woken, or spinning
                    worker.wake.release()
        job.run(0, post)
        # the pieces a worker started are done: spin for the last, then sleep on the lock
        _spin_while(_signals, _FINISHED, number, False, _spins())
        job.done.acquire()
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

