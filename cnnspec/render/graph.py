"""Graphviz drawings of a network: a node per layer (op, key arguments, output shape), blocks as
clusters, branches and merges visible."""
from __future__ import annotations

import os
import shutil

from cnnspec.errors import CnnSpecError
from cnnspec.layers import LAYERS, fmt_shape

STYLE = {   # op family -> node fill colour
    "input": "#d9d9d9", "conv": "#9ecae1", "dense": "#fdae6b", "pool": "#a1d99b",
    "batchnorm": "#dadaeb", "dropout": "#f0f0f0", "merge": "#fdd0a2", "act": "#ffffff",
    "sample": "#fcbba1",
}
FAMILIES = {
    "pool": ("maxpool", "avgpool", "sumpool", "globalavgpool", "globalmaxpool", "adaptiveavgpool",
             "adaptivemaxpool", "upsample"),
    "merge": ("add", "concat", "mul"),
    "conv": ("conv", "conv_transpose"),
    "dropout": ("dropout", "droppath"),
}
INSTALL_HINT = ("install graphviz to draw pictures: `apt-get install graphviz` (Debian/Ubuntu), "
                "`brew install graphviz` (macOS) or `conda install graphviz`; then "
                "`dot -T{fmt} {dot} -o {out}`")


def _family(op: str) -> str:
    for family, ops in FAMILIES.items():
        if op in ops:
            return family
    return op if op in STYLE else "act"


def _edge_style(graph, u, v) -> dict:
    """How the edge u -> v is drawn: the operands of ``sample`` are labelled mu and logvar; a gate
    broadcast by ``mul`` (squeeze-and-excitation) is dashed and labelled with its shape."""
    node = graph.nodes[v]
    index = node["inputs"].index(u)
    if node["op"] == "sample":
        return {"label": ("mu", "logvar")[index], "fontsize": "9"}
    if node["op"] == "mul" and node["config"]["broadcast"][index] == "gate":
        return {"label": f"gate {fmt_shape(graph.nodes[u]['output_shape'])}", "style": "dashed",
                "fontsize": "9", "color": "#c04000", "fontcolor": "#c04000"}
    return {}


def digraph(network, until: str | None = None):
    """The drawing as a ``graphviz.Digraph``; ``until`` keeps only that layer (or block instance)
    and what feeds it."""
    import graphviz
    import networkx as nx

    graph = network.graph
    if until is not None and until not in graph and until in graph.graph.get("blocks", {}):
        from cnnspec.analysis.summary import block_output

        until = block_output(graph, until)             # a block instance: up to its output
    if until is not None:
        if until not in graph:
            from cnnspec.errors import nearest

            guess = nearest(until, graph.nodes)
            raise CnnSpecError(f"no layer named `{until}` in {network.name}",
                               hint=f"did you mean `{guess}`?" if guess else "see `cnnspec summary` for names")
        graph = graph.subgraph(nx.ancestors(graph, until) | {until})
    blocks = network.graph.graph.get("blocks", {})
    root = graphviz.Digraph(network.name, graph_attr={"rankdir": "TB", "fontname": "Helvetica",
                                                      "fontsize": "11", "nodesep": "0.25", "ranksep": "0.3"},
                            node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                                       "fontsize": "10"},
                            edge_attr={"arrowsize": "0.6", "color": "#555555"})
    tree: dict = {}                      # nested block instances: {"nodes": [...], name: subtree}
    for name in graph.nodes:
        here = tree
        for part in graph.nodes[name].get("scope", ()):
            here = here.setdefault(part, {})
        here.setdefault("nodes", []).append(name)

    def emit(target, branch, path):
        for name in branch.get("nodes", []):
            node = graph.nodes[name]
            family = "input" if node["op"] == "input" else _family(node["op"])
            kind = LAYERS.get(node["op"])
            detail = kind.describe(node["config"]) if kind is not None else ""
            op = {"mul": "mul ×"}.get(node["op"], node["op"])
            label = f"{name}\\n{op}{'(' + detail + ')' if detail else ''}\\n{fmt_shape(node['output_shape'])}"
            term = node.get("loss_term")
            if term is not None:
                label += f"\\n+ {term['weight']:g}·{term['term'].upper()} to the loss"
            target.node(name, label, shape={"input": "ellipse", "merge": "hexagon", "sample": "octagon"}.get(
                family, "box"), fillcolor=STYLE[family])
        for part, child in branch.items():
            if part == "nodes":
                continue
            info = blocks.get(".".join(path + (part,)), {})
            args = ", ".join(str(v) for v in info.get("args", {}).values())
            with target.subgraph(name="cluster_" + ".".join(path + (part,))) as cluster:
                cluster.attr(label=f"{part}: {info.get('type', 'block')}({args})", style="rounded,dashed",
                             color="#888888", fontsize="10", labeljust="l")
                emit(cluster, child, path + (part,))

    emit(root, tree, ())
    for u, v in graph.edges:
        root.edge(u, v, **_edge_style(graph, u, v))
    return root


def dot_source(network, until: str | None = None) -> str:
    """The DOT text of the drawing."""
    return digraph(network, until).source


def render(network, path: str, fmt: str | None = None, until: str | None = None) -> str:
    """Write the drawing to ``path``; the format comes from ``fmt`` or the file's extension
    (svg, png, pdf or dot). Without graphviz's ``dot`` program, writes the .dot file and raises a
    CnnSpecError saying how to install graphviz."""
    fmt = (fmt or os.path.splitext(path)[1].lstrip(".") or "svg").lower()
    if fmt not in ("svg", "png", "pdf", "dot", "gv"):
        raise CnnSpecError(f"cannot draw to `.{fmt}`: choose .svg, .png, .pdf or .dot", file=path)
    source = dot_source(network, until)
    if fmt in ("dot", "gv"):
        _write(path, source.encode())
        return path
    dot = shutil.which("dot")
    if dot is None:
        dot_path = os.path.splitext(path)[0] + ".dot"
        _write(dot_path, source.encode())
        raise CnnSpecError(f"graphviz's `dot` program was not found; wrote {dot_path} instead of {path}",
                           hint=INSTALL_HINT.format(dot=dot_path, out=path, fmt=fmt))
    _write(path, _run_dot(dot, source, fmt))
    return path


def svg(network) -> str | None:
    """SVG text for notebooks (None when graphviz is missing)."""
    dot = shutil.which("dot")
    return _run_dot(dot, dot_source(network), "svg").decode() if dot else None


def _run_dot(dot: str, source: str, fmt: str) -> bytes:
    import subprocess

    try:
        done = subprocess.run([dot, f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise CnnSpecError("graphviz's dot took more than 120 s to lay out this drawing",
                           hint="draw a part of the network with --until LAYER, or write .dot and run dot "
                                "yourself") from None
    if done.returncode != 0:
        raise CnnSpecError(f"graphviz's dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _write(path: str, data: bytes) -> None:
    """Write atomically (:func:`cnnspec.atomic.write_bytes`): a half-written picture never replaces
    a good one, and a failure (no space, no permission) is an error naming the file."""
    from cnnspec import atomic

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as err:
        raise atomic.write_error(err, path, "file") from None
    atomic.write_bytes(path, data, what="file")
