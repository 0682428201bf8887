"""``cnnspec check``, ``summary`` and ``render``: the analysis commands (no numba is imported)."""
from __future__ import annotations

import json
import sys

from cnnspec.errors import CnnSpecError


def register(sub) -> None:
    p = sub.add_parser("check", help="compile .cnn files and report errors (exit 1 if any is invalid)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.set_defaults(func=check)

    p = sub.add_parser("summary", help="per-layer shapes, parameters, MACs, memory and receptive fields")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--batch", type=int, default=1, help="batch size for memory totals (default 1)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=summary)

    p = sub.add_parser("render", help="draw the network with graphviz (.svg, .png, .pdf or .dot)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.svg, OUT.png, OUT.pdf or OUT.dot")
    p.add_argument("--until", metavar="LAYER", help="draw only LAYER and the layers that feed it")
    p.set_defaults(func=render)


def check(args) -> int:
    from cnnspec.network import load

    status = 0
    for path in args.files:
        try:
            net = load(path)
        except CnnSpecError as err:
            print(err.render(), file=sys.stderr)
            status = 1
            continue
        for warning in net.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if not args.quiet:
            t = net.summary()["totals"]
            print(f"{path}: ok ({net.name}: {len(net.graph) - 1} layers, {t['params']:,} params, "
                  f"{t['macs']:,} MACs)")
    return status


def summary(args) -> int:
    from cnnspec.network import load

    net = load(args.file)
    if args.json:
        print(json.dumps(net.summary(args.batch, args.dtype)))
    else:
        print(net.summary_table(args.batch, args.dtype))
    return 0


def render(args) -> int:
    from cnnspec.network import load

    net = load(args.file)
    print(f"wrote {net.render(args.output, until=args.until)}")
    return 0
