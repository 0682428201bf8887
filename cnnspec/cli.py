"""The ``cnnspec`` command: a thin face over the Python API.

Each family of commands lives beside the code it drives and registers itself here through a
``register(subparsers)`` function. Those modules import nothing heavy at import time (no numba,
matplotlib or torch), so that ``cnnspec check`` and ``cnnspec summary`` start fast.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings

from cnnspec.errors import CnnSpecError, CnnSpecWarning

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


def build_parser() -> argparse.ArgumentParser:
    from cnnspec import __version__

    parser = argparse.ArgumentParser(
        prog="cnnspec",
        description="Compile, analyse, draw, train and grade convolutional networks described in .cnn files.",
    )
    parser.add_argument("--version", action="version", version=f"cnnspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    warnings as ``warning: ...``. After a Ctrl-C the program is ending: further Ctrl-Cs are
    ignored, so a burst of them never prints a traceback (an in-process caller, which passes
    ``argv``, gets its handler back)."""
    previous = signal.getsignal(signal.SIGINT)
    try:                                # from the start: a Ctrl-C while the commands load is one too
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        with warnings.catch_warnings():
            warnings.simplefilter("always", CnnSpecWarning)
            warnings.showwarning = _show_warning
            status = int(args.func(args) or 0)
        if argv is None:                # the program is ending: a late Ctrl-C has nothing to stop
            _ignore_interrupts()
        return status
    except CnnSpecError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _ignore_interrupts()
        print("interrupted", file=sys.stderr)
        if argv is not None:
            _restore_interrupts(previous)
        return 130
    except MemoryError:
        print("error: out of memory (the machine has too little free memory for this)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


def _ignore_interrupts() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _restore_interrupts(handler) -> None:
    if threading.current_thread() is threading.main_thread() and handler is not None:
        signal.signal(signal.SIGINT, handler)


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, CnnSpecWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


if __name__ == "__main__":
    raise SystemExit(main())
