"""The ``cnnspec`` command: a thin face over the Python API.

Each family of commands lives beside the code it drives and registers itself here through a
``register(subparsers)`` function. Those modules import nothing heavy at import time (no numba,
matplotlib or torch), so that ``cnnspec check`` and ``cnnspec summary`` start fast.
"""
from __future__ import annotations

# Only the standard library's lightest modules load before main() runs, so that a Ctrl-C at any
# point of the program lands where main() handles it; the rest is imported inside main().
import os
import signal
import sys
import threading

# module path -> it defines register(subparsers); order is the order of `cnnspec --help`.
COMMAND_MODULES = (
    "cnnspec.commands",        # check, summary, render
    "cnnspec.train.cli",       # train, evaluate, run
    "cnnspec.train.sampling",  # generate
    "cnnspec.explain.cli",     # explain, filters
    "cnnspec.report.cli",      # report, serve
    "cnnspec.engine.cli",      # bench
    "cnnspec.grade.cli",       # grade init | grade | grade batch | grade gradescope-bundle
    "cnnspec.interop.cli",     # export (pytorch, onnx), import (onnx)
)


def build_parser():
    import argparse
    import importlib

    from cnnspec import __version__

    parser = argparse.ArgumentParser(
        prog="cnnspec",
        description="Compile, analyse, draw, train and grade convolutional networks described in .cnn files.",
    )
    parser.add_argument("--version", action="version", version=f"cnnspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _test_wait("import")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("cnnspec"):
                continue                 # a command family not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status. Errors print as ``file:line:col: error: ...``,
    warnings as ``warning: ...``.

    A Ctrl-C stops the command with one line, ``interrupted``, and status 130, wherever it lands
    (loading the commands, reading, training); the Ctrl-Cs after it, in a burst, are absorbed
    while the program ends. When the program is the process (``argv`` is None), Ctrl-C is
    ignored from the moment main() returns, so that atexit handlers, thread joins and the
    interpreter's exit never print a ``KeyboardInterrupt`` traceback; an in-process caller, which
    passes ``argv``, gets its handler back."""
    interrupts = _Interrupts(main.__code__)
    try:
        status = _run(argv, interrupts)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    finally:
        interrupts.working = False
        interrupts.release(ignore=argv is None)
    if status == 130 and argv is None:
        _forget_unhandled_interrupt()
    return status


def _forget_unhandled_interrupt() -> None:
    """Clear CPython's record of an "unhandled" KeyboardInterrupt.

    A Ctrl-C that lands in code CPython runs through its ``PyRun_*`` functions (as some imports
    do) sets ``_Py_UnhandledKeyboardInterrupt`` even when the exception is then handled; under
    ``python -m cnnspec`` the interpreter then ends by killing itself with SIGINT (status -2)
    instead of exiting with 130. Seen in one run out of three with a burst 50 ms into a command."""
    try:
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ImportError, AttributeError, ValueError, OSError):
        pass                           # not CPython 3.8-3.11: the flag lives elsewhere or nowhere


class _Interrupts:
    """SIGINT while main() runs: the first Ctrl-C raises KeyboardInterrupt in the command's code;
    it is never raised in main()'s own frame (which handles it) nor after the command ended or
    was interrupted, so a burst cannot land in the handling of the first one."""

    def __init__(self, main_code):
        self.main_code = main_code
        self.working = True            # until main() has the command's result or its interruption
        self.raised = False
        self.pending = False           # a Ctrl-C that reached main()'s frame before the command ran
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum, frame):
        if not self.working or self.raised:
            return
        if frame is not None and frame.f_code is self.main_code:
            self.pending = True
            return
        self.raised = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise the Ctrl-C main() received before the command started."""
        if self.pending and not self.raised:
            self.raised = True
            raise KeyboardInterrupt

    def release(self, ignore: bool) -> None:
        """Ignore SIGINT from now on (``ignore``), or give the caller its handler back. Ctrl-Cs
        already received are first run through :meth:`handle` (absorbed), with SIGINT blocked
        meanwhile, so that none reaches Python after the switch ("signal ignored due to race
        condition")."""
        if self.previous is None:
            return
        block = hasattr(signal, "pthread_sigmask")
        if block:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN if ignore else self.previous)
        finally:
            if block:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _run(argv, interrupts: _Interrupts) -> int:
    """Parse the arguments and run the command (everything main() does but the Ctrl-C handling)."""
    interrupts.check()
    import functools
    import warnings

    from cnnspec.errors import CnnSpecError, CnnSpecWarning

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        _test_wait("command")
        if os.environ.get("CNNSPEC_TEST_WAIT") == "exit" and argv is None:
            _wait_at_exit()
        with warnings.catch_warnings():
            warnings.simplefilter("always", CnnSpecWarning)
            warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
            return int(args.func(args) or 0)
    except CnnSpecError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory (the machine has too little free memory for this)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


def _test_wait(point: str) -> None:
    """A fixed place for tests to interrupt: with ``CNNSPEC_TEST_WAIT=point[:seconds]`` (import:
    while the commands load; command: before the command runs) the program says so on stderr and
    waits (30 s by default)."""
    wanted, _, seconds = os.environ.get("CNNSPEC_TEST_WAIT", "").partition(":")
    if wanted == point:
        print(f"cnnspec: waiting at {point}", file=sys.stderr, flush=True)
        import time

        deadline = time.monotonic() + float(seconds or 30)
        while time.monotonic() < deadline:
            time.sleep(0.01)


def _wait_at_exit() -> None:
    """``CNNSPEC_TEST_WAIT=exit``: the interpreter's exit waits for a thread and an atexit
    handler, each saying so on stderr, for tests to interrupt it there."""
    import atexit
    import time

    def wait(what, seconds):
        print(f"cnnspec: waiting at {what}", file=sys.stderr, flush=True)
        time.sleep(seconds)

    threading.Thread(target=wait, args=("thread join", 3)).start()
    atexit.register(wait, "atexit", 1)


def _show_warning(default, message, category, filename, lineno, file=None, line=None):
    from cnnspec.errors import CnnSpecWarning

    if issubclass(category, CnnSpecWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        default(message, category, filename, lineno, file, line)


if __name__ == "__main__":
    raise SystemExit(main())
