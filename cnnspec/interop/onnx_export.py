"""A network as an ONNX model, built directly with ``onnx.helper`` (no PyTorch involved).

Opset 21 (IR version 10), which ONNX Runtime runs in full since 1.20. The batch dimension is
symbolic (``N``); every layer's last node is named by the layer (``basic1.conv1``) and so is its
output tensor, so Netron shows the ``.cnn`` names; parameters are initializers named
``layer.param`` (dense weights as (out, in), as Gemm with transB=1 and PyTorch keep them).
Model metadata records the network, its input, and the frozen layers (``trainable=false``), which
``cnnspec import`` reads back.
"""
from __future__ import annotations

import os

import numpy as np

from cnnspec import __version__
from cnnspec.errors import CnnSpecError
from cnnspec.interop.deps import require
from cnnspec.interop.table import framework_layout, kind

OPSET = 21
IR_VERSION = 10
LARGE = 1_800_000_000          # bytes of initializers beyond which they go to an external file


class Builder:
    """Collects nodes and initializers; the table's ``to_onnx`` methods call ``node``, ``param``
    and ``const``."""

    def __init__(self, graph, arrays: dict):
        self.onnx = require("onnx")
        self.graph = graph
        self.arrays = arrays
        self.nodes = []
        self.initializers = {}

    def node(self, op_type: str, inputs: list, name: str, output: str | None = None, **attrs) -> str:
        output = output or name
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], name=name, **attrs))
        return output

    def param(self, layer: str, key: str) -> str:
        name = f"{layer}.{key}"
        if name not in self.initializers:
            op = self.graph.nodes[layer]["op"]
            self.const(name, framework_layout(op, key, self.arrays[name]).astype(np.float32))
        return name

    def const(self, name: str, array) -> str:
        self.initializers[name] = self.onnx.numpy_helper.from_array(np.asarray(array), name)
        return name


def build_model(network, arrays: dict):
    """The ``onnx.ModelProto`` of ``network`` with the parameters ``arrays`` (``layer.param``)."""
    onnx = require("onnx")
    helper, TensorProto = onnx.helper, onnx.TensorProto
    graph = network.graph
    live = _live(graph)
    b = Builder(graph, arrays)
    outputs = {}
    value_info = []
    for name in live:
        node = graph.nodes[name]
        if node["op"] == "input":
            outputs[name] = name
            continue
        xs = [outputs[i] for i in node["inputs"]]
        outputs[name] = kind(node["op"]).to_onnx(b, name, node, xs)
        if name != network.output_name:
            value_info.append(helper.make_tensor_value_info(outputs[name], TensorProto.FLOAT,
                                                            ["N", *node["output_shape"]]))
    names = graph.graph.get("inputs") or [network.input_name]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *graph.nodes[n]["output_shape"]])
              for n in names]
    _describe_layers(b.nodes, graph, outputs)
    out = helper.make_tensor_value_info(outputs[network.output_name], TensorProto.FLOAT,
                                        ["N", *network.output_shape])
    onnx_graph = helper.make_graph(b.nodes, network.name, inputs, [out],
                                   initializer=list(b.initializers.values()), value_info=value_info)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="cnnspec", producer_version=__version__,
                              doc_string=f"{network.name}" + (f" from {network.file}" if network.file else ""))
    model.ir_version = IR_VERSION
    frozen = [n for n in live if graph.nodes[n].get("n_params") and not graph.nodes[n].get("trainable", True)]
    helper.set_model_props(model, {"cnnspec.network": network.name, "cnnspec.input": ",".join(names),
                                   "cnnspec.frozen": ",".join(frozen)})
    return model


def _describe_layers(nodes, graph, outputs) -> None:
    """Each layer's last node: its documentation (shown by Netron) is the layer as the summary
    writes it, ``conv(64, 3x3, pad 1)``; its metadata ``cnnspec.layer`` the kind, the resolved
    arguments and the input tensors, which ``cnnspec import`` reads back for the kinds whose ONNX
    form would read as another kind."""
    import json

    from cnnspec.layers import LAYERS

    by_name = {n.name: n for n in nodes}
    for name in outputs:
        node = graph.nodes[name]
        if node["op"] == "input" or name not in by_name:
            continue
        described = LAYERS[node["op"]].describe(node["config"])
        by_name[name].doc_string = f"{name}: {node['op']}" + (f"({described})" if described else "")
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in node["config"].items()
                  if isinstance(v, (int, float, str, bool, tuple)) or v is None}
        entry = by_name[name].metadata_props.add()
        entry.key, entry.value = "cnnspec.layer", json.dumps(
            {"op": node["op"], "config": config, "inputs": [outputs[i] for i in node["inputs"]]})


def to_onnx(network, path=None, weights=None, seed: int = 0, check: bool = True):
    """Export ``network`` to ONNX: returns the ``ModelProto`` and writes it to ``path`` when
    given. ``weights``: an ``.npz`` file or a dict ``{"layer.param": array}``; without it, the
    engine's initial weights for ``seed``. The model is checked with ``onnx.checker`` (full check,
    with shape inference)."""
    from cnnspec.interop.weights import network_arrays

    onnx = require("onnx")
    model = build_model(network, network_arrays(network, weights, seed))
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if check and size < LARGE:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:        # a bug here, not the user's: say what the checker said
            raise CnnSpecError(f"the ONNX model of `{network.name}` does not pass onnx.checker: {exc}") from None
    if path is not None:
        path = os.fspath(path)
        if size < LARGE:
            from cnnspec.atomic import write_bytes
            write_bytes(path, model.SerializeToString(), "ONNX file")
        else:                            # protobuf's 2 GB limit: the weights beside the model
            try:
                onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                                location=os.path.basename(path) + ".data")
            except OSError as exc:
                raise CnnSpecError(f"cannot write the ONNX file: {exc.strerror or exc}", file=path) from None
            if check:
                onnx.checker.check_model(path)
    return model


def _live(graph) -> list:
    """Nodes the output depends on, in the builder's (topological) order."""
    import networkx as nx

    from cnnspec.engine.model import topological

    output = graph.graph["output"]
    used = nx.ancestors(graph, output) | {output}
    return [n for n in topological(graph) if n in used]
