"""``cnnspec check``, ``summary``, ``render`` and ``help``: the analysis commands and the manual (no numba)."""
from __future__ import annotations

import argparse
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

    p = sub.add_parser("help", help="read the manual: `cnnspec help language`, `cnnspec help layer-api`",
                       description="Print a part of the manual shipped with cnnspec, or a command's help.")
    p.add_argument("topic", nargs="?", metavar="TOPIC",
                   help="language (the .cnn language), layer-api (the layer functions), or a command")
    p.add_argument("--path", action="store_true", help="print where the file is instead of its text")
    p.set_defaults(func=help_command)

    p = sub.add_parser("render", help="draw the network with graphviz (.svg, .png, .pdf or .dot)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.svg, OUT.png, OUT.pdf or OUT.dot")
    p.add_argument("--until", metavar="LAYER",
                   help="draw only LAYER (or a block instance) and the layers that feed it")
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
        try:
            first = next(iter(nets.values()))           # one train section per file
            _check_data(first)
            if first.train_config:                      # every setting as `cnnspec train` checks it
                from cnnspec.train.config import resolve_config
                resolve_config(first)
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


def _check_data(net) -> None:
    """The train section's data set, as far as it can be checked without reading it (a folder or
    file that exists, a known kind), an error pointing at its `data =` line."""
    data = net.train_config.get("data")
    if data is None:
        return
    from pathlib import Path

    from cnnspec.data.datasets import check_spec
    from cnnspec.train.config import located

    section, shape = net.train_config, net.input_shape
    if section.get("task") == "gan":            # the data are the pictures the generator learns to make
        if net.name == section.get("generator"):
            shape = net.output_shape
        elif net.name == section.get("discriminator"):
            shape = next((s for name, s in net.input_shapes.items() if name != "label"), net.input_shape)
        else:
            return
    with located(net, "data", ["data"]):
        check_spec(str(data), shape, Path(net.file).resolve().parent if net.file else None)


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


def help_command(args) -> int:
    from cnnspec import docs
    from cnnspec.cli import build_parser
    from cnnspec.errors import nearest

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if args.topic is None:
        print("cnnspec help TOPIC prints a part of the manual:")
        for topic, (_, what) in docs.TOPICS.items():
            print(f"  {topic:10}  {what}")
        print(f"and cnnspec help COMMAND a command's options ({', '.join(c for c in commands if c != 'help')}).")
        return 0
    if args.topic in docs.TOPICS:
        print(docs.path(args.topic) if args.path else docs.read(args.topic).rstrip("\n"))
        return 0
    if args.topic in commands and not args.path:
        commands[args.topic].print_help()
        return 0
    guess = nearest(args.topic, [*docs.TOPICS, *commands])
    raise CnnSpecError(f"no help topic `{args.topic}`",
                       hint=(f"did you mean `{guess}`? " if guess else "")
                       + f"topics: {', '.join(docs.TOPICS)}, or a command")
