"""The web page of a network: one self-contained HTML file (inline SVG, CSS, JavaScript and data;
nothing is fetched), as ``cnnspec report`` writes it and ``cnnspec serve`` serves it.

The page's data is :func:`report_data`: the summary (``Network.summary()``) and, per layer, what
the details panel shows (the call as written, where, resolved arguments, parameter shapes,
memory, the receptive field as exact fractions); per block instance, its type, arguments and
totals. The drawing is graphviz's SVG of :func:`cnnspec.render.graph.digraph`.
"""
from __future__ import annotations

import html
import json
import os
import shutil
import string
from fractions import Fraction
from importlib import resources

from cnnspec.analysis import dtype_bytes
from cnnspec.errors import CnnSpecError
from cnnspec.layers import LAYERS

MAX_DRAWN_LAYERS = 3000          # larger networks are not drawn (graphviz would take minutes)


def _plain(value):
    """A configuration value as JSON: tuples as lists, fractions as [numerator, denominator] when
    not whole, other objects (sizes such as 3x3) as their text."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else [value.numerator, value.denominator]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _written(value) -> str:
    """A value as a .cnn file writes it (sizes as 5x5, tuples in parentheses, lists in brackets)."""
    from cnnspec.layers.values import Size

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Size):
        return str(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_written(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_written(v) for v in value) + "]"
    return str(value)


def call_text(node) -> str:
    """``conv(16, 5x5, stride=2)``: the layer as written in the file."""
    args = [_written(a) for a in node.get("args", ())]
    args += [f"{k}={_written(v)}" for k, v in node.get("kwargs", {}).items()]
    return f"{node['op']}({', '.join(args)})" if args else node["op"]


def _fraction_pairs(values) -> list:
    return [[Fraction(v).numerator, Fraction(v).denominator] for v in values]


def _field(field) -> dict | None:
    if field is None:
        return None
    out = {"size": [int(v) for v in field["size"]], "extent": _fraction_pairs(field["size"]),
           "stride": _fraction_pairs(field["stride"]), "padding": _fraction_pairs(field["padding"]),
           "aligned": bool(field["aligned"])}
    if any(a.period > 1 for a in field.get("axes", ())):
        # the field depends on the unit's position: per axis, unit o sees
        # [low[o % period], high[o % period]] + (o // period) * shift
        out["units"] = [{"period": a.period, "shift": int(a.shift), "low": [int(v) for v in a.low],
                         "high": [int(v) for v in a.high]} for a in field["axes"]]
    return out


def _where(pos, graph) -> dict | None:
    if pos is None:
        return None
    file, line, col = pos[0], pos[1], pos[2]
    text = (graph.graph.get("sources") or {}).get(file)
    source = None
    if text is not None:
        lines = text.split("\n")
        if 1 <= line <= len(lines):
            source = lines[line - 1]
    return {"file": os.path.basename(file) if file else None, "line": line, "col": col, "source": source}


def report_data(network, dtype: str = "float32") -> dict:
    """Everything the page shows, as JSON-able data (see the module text)."""
    graph = network.graph
    size = dtype_bytes(dtype)
    summary = network.summary(1, dtype)
    layers = []
    for row in summary["layers"]:
        node = graph.nodes[row["name"]]
        kind = LAYERS.get(node["op"])
        detail = kind.describe(node["config"]) if kind is not None and node["op"] != "input" else ""
        state = sum(_count(s) for s in node.get("state", {}).values())
        layers.append({
            **row,
            "short": row["name"].rsplit(".", 1)[-1],
            "describe": node["op"] + (f"({detail})" if detail else ""),
            "call": call_text(node) if node["op"] != "input" else f"input {row['name']}",
            "where": _where(node.get("pos"), graph),
            "config": _plain(node.get("config", {})),
            "input_shapes": _plain(node.get("input_shapes", [])),
            "param_shapes": _plain(node.get("params", {})),
            "state_shapes": _plain(node.get("state", {})),
            "trainable": bool(node.get("trainable", True)),
            "scope": list(node.get("scope", ())),
            "memory": {"output": row["activations"] * size, "params": (row["params"] + state) * size},
            "field": _field(node.get("receptive_field")),
        })
    blocks = {}
    for path, info in (graph.graph.get("blocks") or {}).items():
        members = [layer for layer in layers if layer["name"].startswith(path + ".")]
        if not members:
            continue
        last = members[-1]
        blocks[path] = {"type": info.get("type", "block"), "args": _plain(info.get("args", {})),
                        "scope": list(info.get("scope", ())), "where": _where(info.get("pos"), graph),
                        "layers": [layer["name"] for layer in members],
                        "params": sum(layer["params"] for layer in members),
                        "macs": sum(layer["macs"] for layer in members),
                        "activations": sum(layer["activations"] for layer in members),
                        "output": last["name"], "output_shape": last["output_shape"]}
    return {"network": summary["network"], "file": os.path.basename(network.file) if network.file else None,
            "input": summary["input"], "output": network.output_name, "dtype": dtype,
            "bytes": size, "totals": summary["totals"], "warnings": summary["warnings"],
            "layers": layers, "blocks": blocks}


def _count(shape) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


def drawing(network) -> tuple[str | None, str | None]:
    """(SVG text, None), or (None, why there is no drawing)."""
    from cnnspec.render.graph import INSTALL_HINT, _run_dot, dot_source

    if len(network.graph) > MAX_DRAWN_LAYERS:
        return None, f"{len(network.graph):,} layers: too many to draw (at most {MAX_DRAWN_LAYERS:,})"
    dot = shutil.which("dot")
    if dot is None:
        return None, "graphviz's dot program was not found: " + INSTALL_HINT.split(";")[0]
    svg = _run_dot(dot, dot_source(network), "svg").decode("utf-8", errors="replace")
    start = svg.find("<svg")
    return (svg[start:] if start >= 0 else None), (None if start >= 0 else "graphviz returned no SVG")


def asset(name: str) -> str:
    return resources.files("cnnspec.report").joinpath("assets", name).read_text(encoding="utf-8")


def script_json(data) -> str:
    """JSON safe inside <script type="application/json">: no "</", no "<!--"."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
       "base-uri 'none'; form-action 'none'")


def page(network=None, *, serve: bool = False, data: dict | None = None, svg: str | None = None,
         note: str | None = None, extra: dict | None = None) -> str:
    """The HTML page of ``network`` (the report), or with ``serve`` the editor page (its data come
    from the server; ``network`` may be None). ``extra`` is added to the page's JSON payload.
    A Content-Security-Policy forbids the page every request (the editor: to its own server)."""
    if network is not None:
        data = report_data(network)
        svg, note = drawing(network)
    title = (data or {}).get("network") or "cnnspec"
    scripts = asset("report.js") + ("\n" + asset("editor.js") if serve else "")
    return string.Template(asset("page.html")).substitute(
        title=html.escape(f"{title} — cnnspec"),
        csp=CSP + ("; connect-src 'self'" if serve else "; connect-src 'none'"),
        css=asset("report.css"),
        mode="serve" if serve else "report",
        data=script_json({"data": data, "note": note, **(extra or {})}),
        svg=svg or "",
        script=scripts.replace("</script", "<\\/script"),
    )


def write_report(network, path) -> str:
    """Write the report of ``network`` to ``path`` (atomically); returns the path."""
    from cnnspec.render.graph import _write

    path = os.fspath(path)
    if not path.lower().endswith((".html", ".htm")):
        raise CnnSpecError("the report is an HTML file: give -o NAME.html", file=path)
    _write(path, page(network).encode("utf-8"))
    return path
