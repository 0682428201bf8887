"""``cnnspec report`` and ``cnnspec serve``: thin faces over :mod:`cnnspec.report` (nothing heavy
is imported at import time)."""
from __future__ import annotations

import sys

from cnnspec.commands import add_network_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page of a network: drawing, table, layer details",
        description="Write one HTML file that needs nothing else (no network access): the drawing with "
                    "blocks that fold and unfold, the summary table, and for the layer clicked its arguments, "
                    "shapes, parameters, MACs, memory and receptive field on the input grid.")
    p.add_argument("file", metavar="FILE", help="the .cnn file")
    add_network_option(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.html")
    p.set_defaults(func=report_command)

    p = subparsers.add_parser(
        "serve", help="the network page with an editor, re-analysed as you type (localhost)",
        description="Serve the page of `cnnspec report` with an editor: the .cnn text on one side, analysed "
                    "again as it is typed, errors marked at their line and column, the drawing and the table "
                    "following. Serves only files inside the folder it is started in.")
    p.add_argument("file", metavar="FILE", nargs="?", help="the .cnn file to open (inside the current folder)")
    add_network_option(p)
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--root", default=".", metavar="DIR",
                   help="the folder whose files may be read and written (default: the current folder)")
    p.set_defaults(func=serve_command)


def report_command(args) -> int:
    from cnnspec.network import load
    from cnnspec.report.build import drawing, write_report

    network = load(args.file, network=args.network)
    path = write_report(network, args.output)
    _, note = drawing(network)
    if note:
        print(f"note: the page has no drawing: {note}", file=sys.stderr)
    print(f"wrote {path}")
    return 0


def serve_command(args) -> int:
    from cnnspec.report.server import serve

    return serve(args.root, args.file, host=args.host, port=args.port, network=args.network)
