"""``cnnspec bench``: the engine's command. Imports nothing heavy until it runs."""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure the engine's speed (conv GFLOP/s, training samples/s, "
                                     "compile times), beside PyTorch when it is installed")
    p.add_argument("--quick", action="store_true", help="a short run (less precise)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--analysis", action="store_true", help="also time the analysis (summary of ResNet-50, "
                                                           "a 1,000-layer network)")
    p.add_argument("--no-torch", action="store_true", help="do not run PyTorch even if it is installed")
    p.add_argument("--no-compile", action="store_true", help="skip the compile-time child processes")
    p.add_argument("--rounds", type=int, default=None, metavar="N",
                   help="alternating rounds of cnnspec and PyTorch per measurement (default 5, 7 for the "
                        "layer rows, 15 for the layer API's; 3, 3 and 5 with --quick): more rounds, a truer "
                        "median on a busy machine")
    p.add_argument("--only", default=None, metavar="ROWS", type=_groups,
                   help="run only these groups of rows, comma-separated: conv, api, layers, training, "
                        "memory, compile (default: all)")
    p.set_defaults(func=bench)


def _groups(text):
    """--only's value: a list of the bench's groups of rows."""
    import argparse

    from cnnspec.engine.bench import GROUPS

    groups = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(f"unknown rows {', '.join(unknown) or repr(text)}: choose from "
                                         f"{', '.join(GROUPS)} (comma-separated)")
    return groups


def bench(args) -> int:
    from cnnspec.engine import bench as b

    progress = None if args.json else (lambda message: print(f"... {message}", file=sys.stderr, flush=True))
    results = b.run(quick=args.quick, analysis=args.analysis, use_torch=not args.no_torch,
                    compile_times=not args.no_compile, progress=progress,
                    rounds=args.rounds, only=args.only)
    print(json.dumps(results, indent=2) if args.json else b.report(results))
    return 0
