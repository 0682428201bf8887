"""Analysis of a built graph: shapes, parameters, MACs, memory and receptive field per layer.

``infer(graph)`` resolves every node's configuration through the layer catalogue and annotates
the node in place (see the attributes listed in :func:`infer`). Nothing here imports numba.
"""
from __future__ import annotations

import math

import networkx as nx

from cnnspec.analysis import receptive_field as rf
from cnnspec.errors import CnnSpecError, error_at
from cnnspec.layers import LAYERS, LayerError, fmt_shape


def looks_channels_last(shape) -> bool:
    """An input written height x width x channels (28x28x1, 32x32x3): a picture's size first and
    1, 3 or 4 last, where channels come first."""
    return len(shape) == 3 and shape[2] in (1, 3, 4) and shape[0] >= 8 and shape[1] >= 8


def channels_last_hint(name, shape) -> str:
    h, w, c = shape
    return (f"input `{name}` is {fmt_shape(shape)}, read as {h} channels of {w}x{c}: shapes are channels "
            f"first, CxHxW; a {h}x{w} picture with {c} channel{'s' * (c != 1)} is {c}x{h}x{w}")


def _operand_names(node, sources) -> list:
    """The operands of a merge as the file writes them (`in`, `main`), else their layer names."""
    names = []
    for i, layer in enumerate(node["inputs"]):
        pos = node.get("arg_pos", {}).get(i)
        text = (sources or {}).get(pos.file if pos is not None else None)
        lines = text.split("\n") if text is not None else []
        line = lines[pos.line - 1] if 0 < (pos.line if pos is not None else 0) <= len(lines) else None
        names.append(line[pos.col - 1:pos.col - 1 + pos.width] if line else layer)
    return names


def infer(graph: nx.DiGraph) -> nx.DiGraph:
    """Annotate every node with ``config``, ``input_shapes``, ``output_shape``, ``params``,
    ``state``, ``trainable``, ``n_params``, ``n_trainable``, ``macs``, ``activations``,
    ``receptive_field`` and ``loss_term`` (what the layer adds to the training loss, e.g.
    ``{"term": "kl", "weight": 1.0}`` for ``sample``; else None); collect
    ``graph.graph["warnings"]`` and ``graph.graph["loss_terms"]`` (the layers that have one).
    Raises a located CnnSpecError."""
    sources = graph.graph.get("sources", {})
    warnings, loss_terms = [], []
    nodes = graph.nodes
    for name in graph.nodes:                 # the builder adds nodes in a topological order
        node = nodes[name]
        if node["op"] == "input":
            shape = tuple(node["kwargs"]["shape"])
            if looks_channels_last(shape):
                warnings.append(f"{_where(node)}{channels_last_hint(name, shape)}")
            node.update(config={"shape": shape}, input_shapes=[], output_shape=shape, params={},
                        state={}, trainable=True, n_params=0, n_trainable=0, macs=0,
                        activations=math.prod(shape), loss_term=None,
                        receptive_field=rf.initial(len(shape) - 1) if len(shape) > 1 else None)
            continue
        in_shapes = [nodes[i]["output_shape"] for i in node["inputs"]]
        kind, config, out_shape = configure(graph, name, in_shapes, sources)
        params = kind.param_shapes(config, in_shapes)
        n_params = sum(math.prod(s) for s in params.values())
        trainable = kind.trainable(config)
        node.update(config=config, input_shapes=in_shapes, output_shape=out_shape, params=params,
                    state=kind.state_shapes(config, in_shapes), trainable=trainable,
                    n_params=n_params, n_trainable=n_params if trainable else 0,
                    macs=kind.macs(config, in_shapes, out_shape),
                    activations=0 if kind.in_place else math.prod(out_shape),
                    loss_term=kind.loss_term(config))
        if node["loss_term"] is not None:
            loss_terms.append(name)
        node["receptive_field"] = _field(kind, config, in_shapes, out_shape,
                                         [nodes[i]["receptive_field"] for i in node["inputs"]])
        field = node["receptive_field"]
        if field is not None and not field["aligned"] and all(
                nodes[i]["receptive_field"] is None or nodes[i]["receptive_field"]["aligned"]
                for i in node["inputs"]):
            warnings.append(f"{_where(node)}`{name}`: the receptive fields of its inputs are not aligned "
                            f"({_paths(nodes, [node['inputs'][i] for i in kind.field_inputs(config, in_shapes)])}); "
                            "outputs mix features centred at "
                            "different input positions")
    output = graph.graph.get("output")
    if output is not None:
        used = nx.ancestors(graph, output) | {output}
        for name in graph.nodes:
            if name not in used:
                what = "input" if nodes[name]["op"] == "input" else "computed but"
                warnings.append(f"{_where(nodes[name])}`{name}` is {what} never used by the output")
    graph.graph["warnings"] = warnings
    graph.graph["loss_terms"] = loss_terms
    return graph


def configure(graph: nx.DiGraph, name: str, in_shapes: list, sources: dict):
    """(layer kind, resolved config, output shape) of the layer node ``name`` fed ``in_shapes``;
    a bad argument or shape is a CnnSpecError located at the argument or the layer."""
    node = graph.nodes[name]
    kind = LAYERS[node["op"]]
    try:
        config = kind.configure(tuple(node["args"]), dict(node["kwargs"]), in_shapes)
        out_shape = tuple(kind.output_shape(config, in_shapes))
    except LayerError as err:
        where = node.get("arg_pos", {}).get(err.arg) if err.arg is not None else None
        message = err.named(_operand_names(node, sources)) if err.named is not None else err.message
        raise error_at(where or node.get("pos"), f"in `{name}`: {message}", sources=sources,
                       hint=_channels_last_of(graph) or err.hint, file=graph.graph.get("file")) from None
    return kind, config, out_shape


def _channels_last_of(graph) -> str | None:
    """The hint for an input of the network written HxWxC, if there is one: the likely cause of a
    shape error further on."""
    for name in graph.nodes:
        node = graph.nodes[name]
        shape = tuple(node["kwargs"]["shape"]) if node["op"] == "input" else ()
        if looks_channels_last(shape):
            return channels_last_hint(name, shape)
    return None


def _field(kind, config, in_shapes, out_shape, fields):
    """The receptive field of a layer's output from its inputs' (None: the whole input)."""
    local = kind.field_inputs(config, in_shapes)          # a gate's global context is left out
    fields = [fields[i] for i in local]
    if len(out_shape) < 2 or any(f is None for f in fields):
        return None                               # no spatial axes: the field is the whole input
    terms = kind.window(config, in_shapes)
    if len(fields) > 1:
        field = rf.merge(fields, in_shapes[local[0]][1:])
    elif terms is None and tuple(in_shapes[local[0]][1:]) != tuple(out_shape[1:]):
        return None                               # a reshape that moves values across positions
    else:
        field = fields[0]
    if terms is None:
        return rf.finish(field["axes"], field["aligned"], out_shape[1:])
    return rf.through_window(field, terms, out_shape[1:])


def _paths(nodes, inputs) -> str:
    parts = []
    for i in inputs:
        f = nodes[i]["receptive_field"]
        parts.append(f"`{i}`: size {fmt_shape(f['size'])}, stride {fmt_shape(f['stride'])}, "
                     f"centre {'x'.join(str(float(c)) for c in rf.centre(f))}")
    return "; ".join(parts)


def _where(node) -> str:
    pos = node.get("pos")
    return f"{pos.file or '<string>'}:{pos.line}:{pos.col}: " if pos is not None else ""


def dtype_bytes(dtype: str) -> int:
    sizes = {"float16": 2, "float32": 4, "float64": 8}
    if dtype not in sizes:
        raise CnnSpecError(f"unknown dtype `{dtype}`; choose float32 or float64")
    return sizes[dtype]
