"""The ``cnnspec`` command: a thin face over the Python API.

Each family of commands lives beside the code it drives and registers itself here through a
``register(subparsers)`` function. Those modules import nothing heavy at import time (no numba,
matplotlib or torch), so that ``cnnspec check`` and ``cnnspec summary`` start fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from cnnspec.errors import CnnSpecError

# module path -> it defines register(subparsers); order is the order of `cnnspec --help`.
COMMAND_MODULES = (
    "cnnspec.commands",        # check, summary, render
    "cnnspec.train.cli",       # train, evaluate, run
    "cnnspec.explain.cli",     # explain, filters
    "cnnspec.report.cli",      # report, serve
    "cnnspec.engine.cli",      # bench
    "cnnspec.grade.cli",       # grade init | grade | grade batch | grade gradescope-bundle
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CnnSpecError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
