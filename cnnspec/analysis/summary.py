"""The per-layer summary: as data (the ``summary --json`` schema) and as a table for people.

The table follows torchinfo and Keras: one row per layer, block instances as a header row with
their totals (in brackets) above their layers, or as one row of their own below ``depth`` levels
(``depth=1``: the network's own statements, every block instance collapsed), columns chosen by
name (``COLUMNS``), and for a layer that does not read the row above it (a merge, a branch) the
layers it reads ("Connected to", as Keras prints it).
"""
from __future__ import annotations

from cnnspec.analysis import dtype_bytes, fusions
from cnnspec.analysis import receptive_field as rf
from cnnspec.errors import CnnSpecError, nearest
from cnnspec.layers import LAYERS, fmt_shape

# column key -> (title, right-aligned); the layer's name always comes first
COLUMNS = {
    "op": ("Op", False),
    "input": ("Input shape", False),
    "output": ("Output shape", False),
    "kernel": ("Kernel", False),
    "params": ("Params", True),
    "macs": ("MACs", True),
    "activations": ("Activations", True),
    "rf": ("RF size/stride", False),
    "connected": ("Connected to", False),
}
DEFAULT_COLUMNS = ("op", "output", "params", "macs", "activations", "rf")   # + connected, for graphs


def optimizer_slots(train: dict | None) -> int:
    """Values of optimizer state per trainable parameter: SGD with momentum 1, Adam and AdamW 2,
    plain SGD 0 (1 under a one-cycle schedule, which cycles the momentum as torch's does)."""
    opt = (train or {}).get("optimizer") or {"name": "sgd"}
    if opt.get("name") in ("adam", "adamw"):
        return 2
    schedule = (train or {}).get("schedule") or {}
    cycles = schedule.get("name") == "onecycle" and schedule.get("cycle_momentum", True)
    return 1 if opt.get("momentum", 0) or cycles else 0


# What the engine allocates per training step beyond parameters (see README, "Counting
# conventions"): a buffer per layer output except views, a gradient per output a trainable layer
# depends on (an add or a view hands its single-use gradient through), and per-element side
# buffers: max-pooling's argmax (int64), dropout's mask and uniform draws (bool + float64),
# sample's eps and normal draws (dtype + float64).  The training step's fusions
# (engine.plan.Plan.relu_fusions, relu_pool_fusions) save gradients: a batchnorm whose only
# reader is a relu or relu6 takes its gradient as its own, and a maxpool that is a relu's only
# reader (the relu its input's only reader) writes the gradient of the relu's input: the relu's
# is never made.
_VIEWS = {"flatten", "identity", "reshape"}
_HANDS_THROUGH = _VIEWS | {"add"}
_SIDE_BYTES = {"maxpool": lambda size: 8, "adaptivemaxpool": lambda size: 8, "dropout": lambda size: 9,
               "sample": lambda size: size + 8}


def training_bytes(graph, batch: int, size: int) -> int:
    """Bytes of the activations, their gradients and the layers' side buffers that cnnspec's
    engine keeps for a training step of ``batch`` samples of ``size`` bytes (parameters, their
    gradients and optimizer state not included): the sum of :func:`training_buffers`."""
    return sum(training_buffers(graph, batch, size).values())


def training_buffers(graph, batch: int, size: int) -> dict:
    """``{"values", "gradients", "side"}``: bytes of the layers' outputs, of their gradients and
    of the side buffers that cnnspec's engine keeps for a training step.  Mirrors
    ``engine.plan.Training``: a final softmax or sigmoid is fused with its loss (no gradient of
    its own), and the relu fusions share or skip gradients (above)."""
    import math

    import networkx as nx

    nodes = graph.nodes
    order = list(nx.topological_sort(graph))
    numel = {n: math.prod(nodes[n]["output_shape"]) for n in order}
    values = sum(numel[n] for n in order if nodes[n]["op"] not in _VIEWS)
    side = sum(numel[n] * _SIDE_BYTES[nodes[n]["op"]](size) for n in order if nodes[n]["op"] in _SIDE_BYTES)
    # the head: the output, the views before it and a final softmax/sigmoid (fused with the loss)
    output = graph.graph.get("output") or (order[-1] if order else None)
    head = [output] if output is not None else []
    while head and nodes[head[-1]]["op"] in _VIEWS and nodes[head[-1]]["inputs"]:
        head.append(nodes[head[-1]]["inputs"][0])
    fused = bool(head) and nodes[head[-1]]["op"] in ("softmax", "sigmoid") and bool(nodes[head[-1]]["inputs"])
    skip = set(head) if fused else set()
    score = nodes[head[-1]]["inputs"][0] if fused else (head[0] if head else None)
    bn_relu, pooled = _relu_fusions(graph, order, output, skip)
    need, received = {}, {}
    for n in order:
        node = nodes[n]
        need[n] = node["op"] != "input" and (node.get("n_trainable", 0) > 0
                                             or any(need[i] for i in node["inputs"]))
    for n in order:
        if need[n] and n not in skip:
            for i in nodes[n]["inputs"]:
                if need[i]:
                    received[i] = received.get(i, 0) + 1
    grads = set()
    if score is not None:
        received[score] = received.get(score, 0) + 1
        grads.add(score)
    shared = set()
    for n in reversed(order):
        if not need[n] or n in skip or n in pooled:
            continue
        if n in bn_relu:                               # the batchnorm's gradient is the relu's
            shared.add(bn_relu[n])
            continue
        sources = nodes[n]["inputs"]
        if sources and sources[0] in pooled:           # the maxpool writes the relu's input's
            sources = nodes[sources[0]]["inputs"]
        for i in sources:
            if need[i] and i not in grads and i not in shared:
                if nodes[n]["op"] in _HANDS_THROUGH and received.get(i) == 1:
                    shared.add(i)
                else:
                    grads.add(i)
    return {"values": batch * size * values, "gradients": batch * size * sum(numel[n] for n in grads),
            "side": batch * side}


def _relu_fusions(graph, order, output, skip) -> tuple:
    """({relu or relu6: its batchnorm}, {relu: its maxpool}): the pairs the engine's training
    step fuses (:mod:`cnnspec.analysis.fusions`, the rule the engine's plan runs too)."""
    with_relu = fusions.relu_fusions(graph, order, output, skip)
    bn_relu = {relu: src for src, relu in with_relu.items() if graph.nodes[src]["op"] == "batchnorm"}
    return bn_relu, fusions.relu_pool_fusions(graph, order, output, skip, set(with_relu.values()))


def summarize(graph, batch: int = 1, dtype: str = "float32", depth: int | None = None) -> dict:
    """The summary of an analysed graph as plain data (see README, "summary --json"). With
    ``depth``, the layers nested in more than ``depth`` levels of blocks are replaced in
    ``layers`` by one entry per block instance at that level (``"op": "block"``); the totals are
    the same."""
    depth = check_depth(depth)
    size = dtype_bytes(dtype)
    nodes = graph.nodes
    layers = []
    for name in graph.nodes:
        node = nodes[name]
        field = node["receptive_field"]
        kernel = node["config"].get("kernel")
        layers.append({
            "name": name, "op": node["op"], "inputs": list(node["inputs"]),
            "output_shape": list(node["output_shape"]), "kernel": None if kernel is None else list(kernel),
            "block": ".".join(node.get("scope", ())) or None,
            "params": node["n_params"], "trainable_params": node["n_trainable"], "macs": node["macs"],
            "activations": node["activations"],
            "receptive_field": None if field is None else {
                "size": list(field["size"]), "stride": [rf.plain(v) for v in field["stride"]],
                "padding": [rf.plain(v) for v in field["padding"]], "aligned": bool(field["aligned"])},
        })
    params = sum(layer["params"] for layer in layers)
    trainable = sum(layer["trainable_params"] for layer in layers)
    state = sum(sum(_prod(s) for s in nodes[n]["state"].values()) for n in graph.nodes)
    macs = sum(layer["macs"] for layer in layers)
    activations = sum(layer["activations"] for layer in layers)
    forward = activations * batch * size
    param_bytes = (params + state) * size
    training = training_bytes(graph, batch, size) + param_bytes + params * size \
        + trainable * size * optimizer_slots(graph.graph.get("train"))
    inputs = [{"name": name, "shape": list(nodes[name]["output_shape"])}
              for name in graph.graph.get("inputs") or [graph.graph["input"]]]
    blocks = _blocks(graph, layers)
    if depth is not None:
        layers = _collapse(layers, blocks, depth)
    return {
        "network": graph.graph.get("network"), "file": graph.graph.get("file"),
        "input": inputs[0], "inputs": inputs,
        "batch": batch, "dtype": dtype, "layers": layers, "blocks": list(blocks.values()),
        "totals": {"params": params, "trainable_params": trainable, "frozen_params": params - trainable,
                   "macs": macs, "flops": 2 * macs, "activations": activations,
                   "memory_bytes": {"params": param_bytes, "forward": forward, "training": training}},
        "loss_terms": [{"layer": name, **nodes[name]["loss_term"]} for name in graph.graph.get("loss_terms", [])],
        "warnings": list(graph.graph.get("warnings", [])),
    }


def check_depth(depth):
    if depth is None:
        return None
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise CnnSpecError(f"depth must be a positive integer (1: the network's own statements, every "
                           f"block instance as one row), received: {depth!r}")
    return depth


def _blocks(graph, layers) -> dict:
    """Per block instance (dotted name, outer instances first): its type, arguments, nesting level
    (1 = called by the network), layers, totals, output (the layer read from outside) and the
    layers outside it that it reads."""
    info = graph.graph.get("blocks", {})
    members = {}
    for layer in layers:
        scope = (layer["block"] or "").split(".") if layer["block"] else []
        for level in range(1, len(scope) + 1):
            members.setdefault(".".join(scope[:level]), []).append(layer)
    output = graph.graph.get("output")
    out = {}
    for prefix, inside in members.items():
        names = {layer["name"] for layer in inside}
        last = [layer for layer in inside
                if layer["name"] == output or any(n not in names for n in graph.successors(layer["name"]))]
        result = (last or inside)[-1]
        sources = list(dict.fromkeys(i for layer in inside for i in layer["inputs"] if i not in names))
        meta = info.get(prefix, {})
        out[prefix] = {
            "name": prefix, "type": meta.get("type", "block"), "args": dict(meta.get("args", {})),
            "level": prefix.count(".") + 1, "layers": [layer["name"] for layer in inside],
            "inputs": sources, "output": result["name"], "output_shape": list(result["output_shape"]),
            "params": sum(x["params"] for x in inside),
            "trainable_params": sum(x["trainable_params"] for x in inside),
            "macs": sum(x["macs"] for x in inside), "activations": sum(x["activations"] for x in inside),
            "receptive_field": result["receptive_field"],
        }
    return out


def block_output(graph, instance: str) -> str:
    """The layer whose output is block ``instance``'s output (the one read from outside it)."""
    return _blocks(graph, summarize(graph)["layers"])[instance]["output"]


def _collapse(layers, blocks, depth) -> list:
    """``layers`` with every block instance at nesting level ``depth`` as one entry."""
    out, done = [], set()
    for layer in layers:
        scope = layer["block"].split(".") if layer["block"] else []
        if len(scope) < depth:
            out.append(layer)
            continue
        prefix = ".".join(scope[:depth])
        if prefix in done:
            continue
        done.add(prefix)
        b = blocks[prefix]
        out.append({"name": prefix, "op": "block", "block_type": b["type"], "args": b["args"],
                    "inputs": b["inputs"], "output_shape": b["output_shape"], "kernel": None,
                    "block": ".".join(scope[:depth - 1]) or None, "params": b["params"],
                    "trainable_params": b["trainable_params"], "macs": b["macs"],
                    "activations": b["activations"], "receptive_field": b["receptive_field"],
                    "output": b["output"], "layers": len(b["layers"])})
    return out


def _prod(shape) -> int:
    out = 1
    for v in shape:
        out *= v
    return out


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:g}{unit}" if isinstance(n, float) else f"{n}{unit}"


def human_bytes(n: int) -> str:
    for scale, suffix in ((2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n} B"


def parse_columns(columns) -> list:
    """Column keys from ``"op,output,kernel"`` or a sequence of keys (``all``: every column).
    Unknown names are an error that lists the columns."""
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    keys = [key.strip() for item in columns for key in str(item).replace(",", " ").split()]
    if keys == ["all"]:
        return list(COLUMNS)
    for key in keys:
        if key not in COLUMNS:
            guess = nearest(key, COLUMNS)
            raise CnnSpecError(f"unknown summary column `{key}`",
                               hint=(f"did you mean `{guess}`? " if guess else "")
                               + f"the columns are: {', '.join(COLUMNS)} (or all)")
    if not keys:
        raise CnnSpecError("no summary column given", hint=f"the columns are: {', '.join(COLUMNS)} (or all)")
    return list(dict.fromkeys(keys))


def table(graph, batch: int = 1, dtype: str = "float32", depth: int | None = None, columns=None) -> str:
    """The summary as the table torchinfo and Keras users know, then totals. ``depth`` collapses
    block instances nested deeper (see :func:`summarize`); ``columns`` chooses and orders the
    columns (keys of ``COLUMNS``; default ``DEFAULT_COLUMNS``, and "connected" when the network
    is not a plain chain)."""
    data = summarize(graph, batch, dtype)
    depth = check_depth(depth)
    shown = _display_rows(graph, data, depth)
    keys = parse_columns(columns)
    if keys is None:
        keys = list(DEFAULT_COLUMNS)
        if any(row["connected"] for row in shown):
            keys.append("connected")
    header = ["Layer"] + [COLUMNS[k][0] for k in keys]
    right = [False] + [COLUMNS[k][1] for k in keys]
    cells = [[row["label"]] + [row["cells"].get(k, "") for k in keys] for row in shown]
    widths = [max(len(r[i]) for r in cells + [header]) for i in range(len(header))]

    def line(row):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()

    rule = "-" * max(len(line(header)), 1)
    t = data["totals"]
    mem = t["memory_bytes"]
    shown = ", ".join(f"{i['name']}: {fmt_shape(i['shape'])}" for i in data["inputs"])
    out = [f"{data['network']}  ({'inputs' if len(data['inputs']) > 1 else 'input'} {shown}, "
           f"batch {batch}, {dtype})", rule, line(header), rule, *map(line, cells), rule,
           f"Params:      {t['params']:,} ({human(t['params'])}): trainable {t['trainable_params']:,}, "
           f"frozen {t['frozen_params']:,}",
           f"MACs:        {t['macs']:,} ({human(t['macs'])}) per sample; FLOPs {human(t['flops'])}",
           f"Activations: {t['activations']:,} values per sample",
           f"Memory:      params {human_bytes(mem['params'])}, forward activations {human_bytes(mem['forward'])}, "
           f"training estimate {human_bytes(mem['training'])} (batch {batch})"]
    for term in data["loss_terms"]:
        out.append(f"Loss:        + {term['weight']:g} * {term['term'].upper()} of `{term['layer']}` (added to the "
                   "training loss)")
    for warning in data["warnings"]:
        out.append(f"warning: {warning}")
    return "\n".join(out)


def _display_rows(graph, data, depth) -> list:
    """The table's rows: ``label`` (indented short name) and ``cells`` (column key -> text).
    A block instance shown open gets a header row (its totals in brackets), one shown collapsed a
    row of its own; "connected" names the inputs of a row that does not read the row above."""
    blocks = {b["name"]: b for b in data["blocks"]}
    rows, opened, previous = [], [], None
    for layer in data["layers"]:
        scope = layer["block"].split(".") if layer["block"] else []
        node_scope = scope if depth is None else scope[:depth]
        collapsed = depth is not None and len(scope) >= depth
        if collapsed:
            prefix = ".".join(scope[:depth])
            node_scope = scope[:depth - 1]
            if rows and rows[-1].get("collapsed") == prefix:
                continue
        common = 0
        while common < min(len(node_scope), len(opened)) and node_scope[common] == opened[common]:
            common += 1
        for level in range(common, len(node_scope)):          # entering block instances
            b = blocks[".".join(node_scope[:level + 1])]
            rows.append({"label": "  " * level + node_scope[level], "cells": {
                "op": _block_call(b),
                "params": f"[{b['params']:,}]" if b["params"] else "",
                "macs": f"[{b['macs']:,}]" if b["macs"] else "",
                "activations": f"[{b['activations']:,}]" if b["activations"] else ""}, "connected": False})
        opened = node_scope
        indent = "  " * len(node_scope)
        if collapsed:
            b = blocks[prefix]
            reads, label, cells = b["inputs"], indent + scope[depth - 1], {"op": _block_call(b), "kernel": "-"}
            name, output = prefix, b["output"]
            entry = b
        else:
            reads, label = layer["inputs"], indent + layer["name"].rsplit(".", 1)[-1]
            kind = LAYERS.get(layer["op"])
            detail = kind.describe(graph.nodes[layer["name"]]["config"]) if kind is not None else ""
            kernel = layer["kernel"]
            cells = {"op": layer["op"] + (f"({detail})" if detail else ""),
                     "kernel": "-" if kernel is None else fmt_shape(kernel)}
            name = output = layer["name"]
            entry = layer
        shown_reads = [_shown_name(i, blocks, depth) for i in reads]
        connected = len(reads) > 1 or (bool(reads) and shown_reads != [previous])
        field = entry["receptive_field"]
        cells.update({
            "input": ", ".join(fmt_shape(graph.nodes[i]["output_shape"]) for i in reads) or "-",
            "output": fmt_shape(entry["output_shape"]),
            "params": _count(entry["params"], entry["trainable_params"]),
            "macs": f"{entry['macs']:,}" if entry["macs"] else "-",
            "activations": f"{entry['activations']:,}" if entry["activations"] else "-",
            "rf": "all" if field is None else f"{fmt_shape(field['size'])}/{_strides(field['stride'])}"
                  + ("" if field["aligned"] else " !"),
            "connected": ", ".join(shown_reads) if connected else "",
        })
        row = {"label": label, "cells": cells, "connected": connected}
        if collapsed:
            row["collapsed"] = prefix
        rows.append(row)
        previous = name if collapsed else output
    return rows


def _shown_name(name, blocks, depth) -> str:
    """The row that shows layer ``name``: itself, or the collapsed block instance holding it."""
    if depth is None:
        return name
    parts = name.split(".")
    if len(parts) - 1 >= depth:
        return ".".join(parts[:depth])
    return name


def _block_call(block) -> str:
    return f"{block['type']}({', '.join(str(v) for v in block['args'].values())})"


def _strides(strides) -> str:
    """Effective strides per axis, fractions in parentheses: ``2x2``, ``(1/2)x(1/2)``."""
    return "x".join(str(v) if "/" not in str(v) else f"({v})" for v in strides)


def _count(total: int, trainable: int) -> str:
    if not total:
        return "-"
    return f"{total:,}" + ("" if trainable == total else " (frozen)")
