"""The per-layer summary: as data (the ``summary --json`` schema) and as a table for people."""
from __future__ import annotations

from cnnspec.analysis import dtype_bytes
from cnnspec.analysis import receptive_field as rf
from cnnspec.layers import LAYERS, fmt_shape


def optimizer_slots(train: dict | None) -> int:
    """Values of optimizer state per trainable parameter: SGD with momentum 1, Adam and AdamW 2,
    plain SGD 0 (1 under a one-cycle schedule, which cycles the momentum as torch's does)."""
    opt = (train or {}).get("optimizer") or {"name": "sgd"}
    if opt.get("name") in ("adam", "adamw"):
        return 2
    schedule = (train or {}).get("schedule") or {}
    cycles = schedule.get("name") == "onecycle" and schedule.get("cycle_momentum", True)
    return 1 if opt.get("momentum", 0) or cycles else 0


def summarize(graph, batch: int = 1, dtype: str = "float32") -> dict:
    """The summary of an analysed graph as plain data (see README, "summary --json")."""
    size = dtype_bytes(dtype)
    nodes = graph.nodes
    layers = []
    for name in graph.nodes:
        node = nodes[name]
        field = node["receptive_field"]
        layers.append({
            "name": name, "op": node["op"], "inputs": list(node["inputs"]),
            "output_shape": list(node["output_shape"]), "params": node["n_params"],
            "trainable_params": node["n_trainable"], "macs": node["macs"],
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
    training = 2 * forward + param_bytes + trainable * size * (1 + optimizer_slots(graph.graph.get("train")))
    inputs = [{"name": name, "shape": list(nodes[name]["output_shape"])}
              for name in graph.graph.get("inputs") or [graph.graph["input"]]]
    return {
        "network": graph.graph.get("network"), "file": graph.graph.get("file"),
        "input": inputs[0], "inputs": inputs,
        "batch": batch, "dtype": dtype, "layers": layers,
        "totals": {"params": params, "trainable_params": trainable, "frozen_params": params - trainable,
                   "macs": macs, "flops": 2 * macs, "activations": activations,
                   "memory_bytes": {"params": param_bytes, "forward": forward, "training": training}},
        "loss_terms": [{"layer": name, **nodes[name]["loss_term"]} for name in graph.graph.get("loss_terms", [])],
        "warnings": list(graph.graph.get("warnings", [])),
    }


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


def table(graph, batch: int = 1, dtype: str = "float32") -> str:
    """The summary as the table torchinfo and Keras users know, blocks grouped, then totals."""
    data = summarize(graph, batch, dtype)
    blocks = graph.graph.get("blocks", {})
    header = ("Layer", "Op", "Output shape", "Params", "MACs", "Activations", "RF size/stride")
    rows, opened = [], ()
    inside = _block_totals(graph, data["layers"])
    for layer in data["layers"]:
        node = graph.nodes[layer["name"]]
        scope = tuple(node.get("scope", ()))
        common = 0
        while common < min(len(scope), len(opened)) and scope[common] == opened[common]:
            common += 1
        for depth in range(common, len(scope)):          # entering block instances
            prefix = ".".join(scope[:depth + 1])
            info = blocks.get(prefix, {})
            args = ", ".join(str(v) for v in info.get("args", {}).values())
            params, macs = inside.get(prefix, (0, 0))
            rows.append(("  " * depth + f"{scope[depth]}: {info.get('type', 'block')}({args})", "", "",
                         f"[{params:,}]" if params else "", f"[{macs:,}]" if macs else "", "", ""))
        opened = scope
        field = layer["receptive_field"]
        kind = LAYERS.get(layer["op"])
        detail = kind.describe(node["config"]) if kind is not None else ""
        rows.append((
            "  " * len(scope) + layer["name"].rsplit(".", 1)[-1],
            layer["op"] + (f"({detail})" if detail else ""),
            fmt_shape(layer["output_shape"]),
            _count(layer["params"], layer["trainable_params"]),
            f"{layer['macs']:,}" if layer["macs"] else "-",
            f"{layer['activations']:,}" if layer["activations"] else "-",
            "-" if field is None else f"{fmt_shape(field['size'])}/{_strides(field['stride'])}"
            + ("" if field["aligned"] else " !"),
        ))
    layer_rows = [r for r in rows if r[1]]                # block headers span the first columns
    widths = [max(len(r[i]) for r in layer_rows + [header]) for i in range(len(header))]
    right = {3, 4, 5}

    def line(row):
        if not row[1]:                                    # a block header: name, then its totals
            cells = [row[0].ljust(widths[0] + widths[1] + widths[2] + 4)]
            cells += [c.rjust(w) for c, w in zip(row[3:6], widths[3:6])]
            return "  ".join(cells).rstrip()
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "-" * len(line(header))
    t = data["totals"]
    mem = t["memory_bytes"]
    shown = ", ".join(f"{i['name']}: {fmt_shape(i['shape'])}" for i in data["inputs"])
    out = [f"{data['network']}  ({'inputs' if len(data['inputs']) > 1 else 'input'} {shown}, "
           f"batch {batch}, {dtype})", rule, line(header), rule, *map(line, rows), rule,
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


def _strides(strides) -> str:
    """Effective strides per axis, fractions in parentheses: ``2x2``, ``(1/2)x(1/2)``."""
    return "x".join(str(v) if "/" not in str(v) else f"({v})" for v in strides)


def _block_totals(graph, layers) -> dict:
    """{block instance prefix: (params, MACs) of the layers inside it}, in one pass over the
    layers (summing over every layer once per instance was quadratic: minutes for 20,000 blocks)."""
    totals = {}
    for layer in layers:
        scope = tuple(graph.nodes[layer["name"]].get("scope", ()))
        for depth in range(1, len(scope) + 1):
            prefix = ".".join(scope[:depth])
            params, macs = totals.get(prefix, (0, 0))
            totals[prefix] = (params + layer["params"], macs + layer["macs"])
    return totals


def _count(total: int, trainable: int) -> str:
    if not total:
        return "-"
    return f"{total:,}" + ("" if trainable == total else " (frozen)")
