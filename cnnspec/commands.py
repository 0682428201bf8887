"""``cnnspec check``, ``summary`` and ``render``: the analysis commands (no numba is imported)."""
from __future__ import annotations

import json
import sys

from cnnspec.errors import CnnSpecError, plural


def register(sub) -> None:
    p = sub.add_parser("check", help="compile .cnn files and report errors (exit 1 if any is invalid)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument("--network", metavar="NAME", help="check only this network of each file (default: all)")
    p.set_defaults(func=check)

    p = sub.add_parser("summary", help="per-layer shapes, parameters, MACs, memory and receptive fields")
    p.add_argument("file", metavar="FILE")
    add_network_option(p)
    p.add_argument("--batch", type=int, default=1, help="batch size for memory totals (default 1)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--depth", type=int, metavar="N",
                   help="show N levels of blocks; deeper block instances are one row each "
                        "(1: the network's own statements)")
    p.add_argument("--columns", metavar="COLS",
                   help="columns to show, in order, comma-separated: op, input, output, kernel, params, "
                        "macs, activations, rf, connected (or all); default op,output,params,macs,"
                        "activations,rf (and connected for a network that branches)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=summary)

    p = sub.add_parser("render", help="draw the network with graphviz (.svg, .png, .pdf or .dot)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.svg, OUT.png, OUT.pdf or OUT.dot")
    p.add_argument("--until", metavar="LAYER", help="draw only LAYER and the layers that feed it")
    add_network_option(p)
    p.set_defaults(func=render)


def add_network_option(parser) -> None:
    """``--network NAME``: which network of the file a command acts on."""
    parser.add_argument("--network", metavar="NAME",
                        help="the network of the file to use, when it has several (default: the first)")


def check(args) -> int:
    from cnnspec.network import load, load_all

    status = 0
    for path in args.files:
        try:
            nets = {args.network: load(path, network=args.network)} if args.network else load_all(path)
        except CnnSpecError as err:
            print(err.render(), file=sys.stderr)
            status = 1
            continue
        for net in nets.values():
            for warning in net.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            if not args.quiet:
                t = net.summary()["totals"]
                print(f"{path}: ok ({net.name}: {plural(len(net.graph) - len(net.input_names), 'layer')}, "
                      f"{t['params']:,} params, {t['macs']:,} MACs)")
    return status


def summary(args) -> int:
    from cnnspec.network import load

    net = load(args.file, network=args.network)
    if args.json:
        if args.columns:
            raise CnnSpecError("--columns chooses the table's columns; --json prints every field")
        print(json.dumps(net.summary(args.batch, args.dtype, args.depth)))
    else:
        print(net.summary_table(args.batch, args.dtype, args.depth, args.columns))
    return 0


def render(args) -> int:
    from cnnspec.network import load

    net = load(args.file, network=args.network)
    print(f"wrote {net.render(args.output, until=args.until)}")
    return 0
