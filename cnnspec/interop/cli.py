"""``cnnspec export`` and ``cnnspec import``: thin faces over :mod:`cnnspec.interop` (nothing heavy
is imported until a command runs)."""
from __future__ import annotations

import os

from cnnspec.errors import CnnSpecError, plural
from cnnspec.atomic import write_npz, write_text


def register(sub) -> None:
    p = sub.add_parser("export", help="write the network as a PyTorch module (.py + .pt state dict) "
                                      "or an ONNX model")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--to", required=True, choices=["pytorch", "onnx"], help="the format")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="OUT.py (pytorch: the state dict goes to OUT.pt) or OUT.onnx")
    p.add_argument("--network", metavar="NAME", help="export only this network of the file (default: all)")
    p.add_argument("--weights", metavar="W.npz", action="append",
                   help="weights to carry (default: the engine's initial weights for --seed); with "
                        "several networks, once per network as NAME=W.npz")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    p.set_defaults(func=export)

    p = sub.add_parser("import", help="read an ONNX model as a .cnn file and a weights file")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", metavar="OUT.cnn", help="the .cnn file to write (default: print it)")
    p.add_argument("--weights-out", metavar="W.npz",
                   help="the weights file to write (default: OUT.npz beside OUT.cnn)")
    p.add_argument("--name", help="the network's name (default: the ONNX graph's or the file's)")
    p.set_defaults(func=import_)


def export(args) -> int:
    networks = _networks(args.file, args.network)
    weights = _weights(args.weights or [], networks)
    if args.to == "pytorch":
        from cnnspec.interop.torch_export import export_torch

        written = export_torch(networks, args.output, weights=[weights.get(n.name) for n in networks],
                               seed=args.seed)
        for net, (cls, pt) in zip(networks, written):
            print(f"wrote {args.output} (class {cls}) and {pt} (its state dict: "
                  f"{net.summary()['totals']['params']:,} parameters)")
        return 0
    from cnnspec.interop.onnx_export import OPSET, to_onnx

    stem, ext = os.path.splitext(args.output)
    for net in networks:
        path = args.output if len(networks) == 1 else f"{stem}.{net.name}{ext or '.onnx'}"
        model = to_onnx(net, path, weights=weights.get(net.name), seed=args.seed)
        print(f"wrote {path} ({net.name}: ONNX opset {OPSET}, {len(model.graph.node)} nodes named "
              f"as the layers; open it in Netron: https://netron.app)")
    return 0


def _networks(path, name) -> list:
    """The networks of the file to export: the one called ``name``, or all of them."""
    from cnnspec.network import load, load_all

    return [load(path, network=name)] if name is not None else list(load_all(path).values())


def _weights(given: list, networks: list) -> dict:
    """{network name: weights file} from ``--weights W.npz`` (one network) or ``NAME=W.npz``."""
    names = [n.name for n in networks]
    out = {}
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or (name not in names and len(networks) == 1):
            if len(networks) > 1:
                raise CnnSpecError(f"this file has several networks ({', '.join(names)}): give --weights "
                                   "NAME=W.npz for each, or choose one with --network NAME")
            name, path = names[0], item
        elif name not in names:
            raise CnnSpecError(f"--weights {item}: no network `{name}` here (the networks: {', '.join(names)})")
        if name in out:
            raise CnnSpecError(f"--weights given twice for `{name}`")
        out[name] = path
    return out


def import_(args) -> int:
    from cnnspec.interop.onnx_import import import_onnx

    net, weights, text = import_onnx(args.model, name=args.name)
    if args.output is None:
        print(text, end="")
        if args.weights_out:
            write_npz(args.weights_out, weights, "weights file")
        return 0
    weights_out = args.weights_out or os.path.splitext(args.output)[0] + ".npz"
    if os.path.abspath(weights_out) == os.path.abspath(args.output):
        raise CnnSpecError("the .cnn file and the weights file are the same file", file=args.output)
    write_text(args.output, text, ".cnn file")
    write_npz(weights_out, weights, "weights file")
    totals = net.summary()["totals"]
    blocks = {v["type"] for v in net.graph.graph.get("blocks", {}).values()}
    print(f"wrote {args.output} ({net.name}: {plural(len(net.graph) - len(net.input_names), 'layer')}"
          + (f", blocks {', '.join(sorted(blocks))}" if blocks else "")
          + f"; {totals['params']:,} parameters, {totals['macs']:,} MACs) and {weights_out}")
    return 0
