"""An ONNX model as a ``.cnn`` network and its weights.

The graph is read node by node in its (topological) order:

* constants are folded: initializers, ``Constant``, and the shape arithmetic exporters emit
  around a flatten (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``), with the batch size
  kept symbolic;
* every other node goes to the translation table (``table.IMPORTERS``), which makes cnnspec
  layers; a few patterns fold into one layer: ``Pad`` into the ``Conv``/``MaxPool``/
  ``AveragePool`` after it, ``MatMul`` (or a bias-less ``Conv``) followed by ``Add`` of a constant
  into one layer with a bias, ``AveragePool`` times its window sizes into ``sumpool``,
  ``Identity``/``Cast`` into nothing;
* an operator without a translation is an error naming the node, the operator and the
  operators cnnspec reads.

The layers then go to :mod:`cnnspec.interop.writer`, which finds repeated structures and writes
the ``.cnn`` text; the text is compiled back, and its layers' names key the weights.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cnnspec.errors import CnnSpecError
from cnnspec.interop.deps import require
from cnnspec.interop.table import IMPORTERS, KINDS, pool_divisors
from cnnspec.layers import LAYERS, LayerError, fmt_shape
from cnnspec.layers.values import Size

SOFTPLUS = "PyTorch's softplus (Where(x > 20, x, Softplus(x)))"
MAX_BYTES = 2 ** 31 - 1          # protobuf's limit for one message; larger weights are external data


class _Batch:
    """The batch size in folded shape arithmetic: it may be moved around, never computed with."""

    def __repr__(self):
        return "N"

    def __index__(self):
        raise TypeError("the batch size is symbolic")

    __int__ = __float__ = __index__


BATCH = _Batch()


def _shape_text(shape) -> str:
    """A folded shape as a message shows it: [N, 8, 4, 4]."""
    return "[" + ", ".join("N" if v is BATCH else str(int(v)) for v in shape) + "]"


@dataclass
class Value:
    """A tensor of the graph: the output of ``layer`` (-1: the network input), per-sample
    ``shape``; ``pad``/``fill``/``pad_node`` describe a ``Pad`` waiting to fold into its consumer."""
    layer: int
    shape: tuple
    pad: tuple | None = None
    fill: float = 0.0
    pad_node: str | None = None
    pattern: tuple | None = None     # (stage, node name, data): part of a pattern that makes one layer


@dataclass
class Layer:
    """A cnnspec layer made from ONNX nodes: written arguments, inputs (layer indices, -1 for the
    network input), parameters and state in cnnspec's layouts, and the ONNX node's name."""
    op: str
    kwargs: dict
    inputs: list
    node: str
    shape: tuple
    params: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    unsqueeze: bool = False      # a reshape read from Unsqueeze (a gate viewed as Cx1x1)


# ---- reading the file ----------------------------------------------------------------------------

def read_model(path):
    """The ``onnx.ModelProto`` in ``path``, checked; every way the file can be wrong is a
    CnnSpecError naming it."""
    from cnnspec.limits import open_regular

    onnx = require("onnx")
    path = os.fspath(path)
    with open_regular(path, "ONNX file") as handle:        # a folder, a pipe, a device: said so
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_BYTES:
            raise CnnSpecError(f"the ONNX file is too large ({size:,} bytes; a model file holds at most 2 GiB)",
                               file=path, hint="save the weights as external data: onnx.save_model(model, path, "
                                               "save_as_external_data=True)")
        if size == 0:
            raise CnnSpecError("not an ONNX model: the file is empty", file=path)
        data = handle.read(size + 1)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:          # google.protobuf.message.DecodeError, RuntimeWarning, ...
        raise CnnSpecError(f"not an ONNX model (it does not decode as an ONNX protobuf; truncated or "
                           f"another format?): {_first_line(exc)}", file=path) from None
    if not model.graph.node or model.ir_version == 0:
        raise CnnSpecError("not an ONNX model: it has no graph (truncated, or another format?)", file=path)
    try:
        from onnx.external_data_helper import load_external_data_for_model, uses_external_data
        if any(uses_external_data(t) for t in model.graph.initializer):
            load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    except Exception as exc:
        raise CnnSpecError(f"cannot read the model's external weights: {_first_line(exc)}", file=path) from None
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise CnnSpecError(f"not a valid ONNX model: {_first_line(exc)}", file=path) from None
    return model


def _first_line(exc) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# ---- the importer --------------------------------------------------------------------------------

STRUCTURAL = ("Identity", "Cast", "Pad", "Mul", "Div", "Erf", "Unsqueeze", "Transpose", "Greater", "Where")


def supported_operators() -> tuple:
    """The ONNX operators ``cnnspec import`` reads: ``(on tensors, on constants and shapes only)``.
    The second are computed at import time (the shape arithmetic around a flatten)."""
    tensors = set(IMPORTERS) | set(STRUCTURAL)
    return sorted(tensors), sorted(set(FOLD) - tensors)


def supported_text() -> str:
    tensors, folded = supported_operators()
    return (f"cnnspec reads {', '.join(tensors)}; and, on constants and shapes only, "
            f"{', '.join(folded)}")


class Importer:
    """Reads one ONNX graph into :class:`Layer` s (see the module docstring). The table's
    ``from_onnx`` methods call ``tensor``, ``const``, ``attr``, ``layer``, ``alias`` and ``fail``."""

    def __init__(self, model, file: str | None = None):
        self.onnx = require("onnx")
        self.model = model
        self.file = file
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        if self.opset < 7:
            raise CnnSpecError(f"ONNX opset {self.opset} is too old (cnnspec reads opset 7 and later)", file=file)
        newest = self.onnx.defs.onnx_opset_version()
        if self.opset > newest:         # its operators' meaning is not known here (ONNX Runtime refuses it too)
            raise CnnSpecError(f"ONNX opset {self.opset} is newer than the installed onnx package knows "
                               f"(opset {newest})", file=file,
                               hint="upgrade onnx, or export with an older opset_version")
        graph = model.graph
        self.consts = {t.name: self._array(t) for t in graph.initializer}
        self.values = {}
        self.layers: list[Layer] = []
        self.uses = Counter(name for node in graph.node for name in node.input if name)
        self.uses.update(o.name for o in graph.output)
        props = {p.key: p.value for p in model.metadata_props}
        self.from_cnnspec = model.producer_name == "cnnspec"
        self.frozen = set(filter(None, props.get("cnnspec.frozen", "").split(","))) if self.from_cnnspec else set()
        inputs = [i for i in graph.input if i.name not in self.consts]
        if not inputs:
            raise CnnSpecError("the model has no input (every graph input is an initializer)", file=file)
        self.inputs = [(i.name, self._input_shape(i)) for i in inputs]       # input k is layer -(k+1)
        self.input_name, self.input_shape = self.inputs[0]
        self.input_shapes = {-(k + 1): shape for k, (_, shape) in enumerate(self.inputs)}
        for k, (name, shape) in enumerate(self.inputs):
            self.values[name] = Value(-(k + 1), shape)

    # -- helpers for the table -----------------------------------------------------------------
    def fail(self, node, what: str) -> CnnSpecError:
        return CnnSpecError(f"node `{node.name or '(unnamed)'}` ({node.op_type}): cnnspec cannot read {what}",
                            file=self.file)

    def attr(self, node, key, default=None):
        for a in node.attribute:
            if a.name == key:
                value = self.onnx.helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def has_input(self, node, i) -> bool:
        return len(node.input) > i and node.input[i] != ""

    def used(self, name) -> bool:
        return self.uses[name] > 0

    def const(self, node, i, what: str):
        name = node.input[i] if len(node.input) > i else ""
        if name not in self.consts:
            raise self.fail(node, f"{what} computed at run time (`{name}`): cnnspec needs constant weights")
        value = self.consts[name]
        if value.dtype == object:
            raise self.fail(node, f"{what} depending on the batch size")
        return value

    def tensor(self, node, i) -> Value:
        name = node.input[i]
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            raise self.fail(node, f"a constant as its input `{name}` (cnnspec layers take tensors computed "
                                  "from the network's input)")
        raise self.fail(node, f"its input `{name}`, which no node computes")

    def split_operands(self, node):
        tensors, consts = [], []
        for name in node.input:
            if name in self.values:
                tensors.append(self.values[name])
            elif name in self.consts:
                consts.append(self.consts[name])
            elif name:
                raise self.fail(node, f"its input `{name}`, which no node computes")
        return tensors, consts

    def check_rank(self, node, x: Value, rank) -> None:
        spatial = len(x.shape) - 1
        if (rank is None and spatial < 1) or (rank is not None and spatial != rank):
            raise self.fail(node, f"a (batch, {fmt_shape(x.shape)}) input"
                                  + ("" if rank is None else f" for a {rank}-D operation"))

    def alias(self, name: str, value: Value) -> None:
        self.values[name] = value

    def layer(self, op, kwargs, inputs, node, params=None, state=None, out="") -> Value:
        """Make the layer ``op`` and bind its output to ``out`` (default: the node's output)."""
        for x in inputs:
            if x.pad is not None:
                raise CnnSpecError(f"node `{x.pad_node}` (Pad): cnnspec reads Pad only right before a Conv, "
                                   f"MaxPool or AveragePool, not before {node.op_type} `{node.name}`",
                                   file=self.file)
            if x.pattern is not None:
                raise self.broken_pattern(x, node)
        shapes = [x.shape for x in inputs]
        try:
            cfg = LAYERS[op].configure((), dict(kwargs), shapes)
            shape = tuple(LAYERS[op].output_shape(cfg, shapes))
        except LayerError as err:
            raise self.fail(node, f"it as `{op}`: {err.message}") from None
        index = len(self.layers)
        self.layers.append(Layer(op, dict(kwargs), [x.layer for x in inputs], node.name, shape,
                                 params={k: np.asarray(v) for k, v in (params or {}).items()},
                                 state={k: np.asarray(v) for k, v in (state or {}).items()}))
        value = Value(index, shape)
        if out is not None:
            self.values[out or node.output[0]] = value
        return value

    # -- patterns that fold into one layer -----------------------------------------------------
    def window_pads(self, node, x: Value, kernel, stride, dilation, fill):
        """The padding of a Conv or pooling node, its own (``pads`` or ``auto_pad``) plus a ``Pad``
        folded in: (the unpadded input, cnnspec's (before, after) per axis)."""
        rank = len(kernel)
        sizes = [n + (x.pad[2 * i] + x.pad[2 * i + 1] if x.pad else 0) for i, n in enumerate(x.shape[1:])]
        auto = self.attr(node, "auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            own = []
            for n, k, s, d in zip(sizes, kernel, stride, dilation):
                total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
                small, large = total // 2, total - total // 2
                own += [small, large] if auto == "SAME_UPPER" else [large, small]
        elif auto in ("NOTSET", "VALID", ""):
            pads = self.attr(node, "pads", [0] * (2 * rank)) if auto != "VALID" else [0] * (2 * rank)
            if len(pads) != 2 * rank or any(p < 0 for p in pads):
                raise self.fail(node, f"pads {list(pads)}")
            own = [int(pads[i + j * rank]) for i in range(rank) for j in (0, 1)]
        else:
            raise self.fail(node, f"auto_pad={auto}")
        if x.pad is None:
            return x, tuple(own)
        ok = x.fill == fill or (fill == -math.inf and (x.fill <= -3.0e38 or (x.fill == 0 and self._nonnegative(x))))
        if not ok:
            raise CnnSpecError(f"node `{x.pad_node}` (Pad): padding with {x.fill:g} before {node.op_type} "
                               f"`{node.name}` (cnnspec pads a convolution with zeros and a max-pool with -inf)",
                               file=self.file)
        pad = tuple(a + b for a, b in zip(own, x.pad))
        return Value(x.layer, x.shape), pad

    def _nonnegative(self, x: Value) -> bool:
        return x.layer >= 0 and self.layers[x.layer].op in ("relu", "relu6", "sigmoid", "softmax", "hardsigmoid")

    def fuse_bias(self, node, x: Value, bias) -> None:
        """``Add`` of a constant right after a bias-less Conv or MatMul: that layer's bias."""
        layer = self.layers[x.layer] if x.layer >= 0 else None
        source = [name for name, v in self.values.items() if v is x]
        if layer is None or layer.op not in ("conv", "dense") or layer.kwargs.get("bias") \
                or x.pad is not None or any(self.uses[s] != 1 for s in source):
            raise self.fail(node, "Add of a constant other than the bias of the Conv, MatMul or Gemm "
                                  "right before it")
        channels = x.shape[0]
        full = np.broadcast_to(np.asarray(bias, np.float64), (1, *x.shape)) if np.ndim(bias) <= len(x.shape) + 1 \
            else None
        if full is None or not np.all(full == full.reshape(channels, -1)[:, :1].reshape(1, channels, *[1] * (len(x.shape) - 1))):
            raise self.fail(node, f"a bias of shape {fmt_shape(np.shape(bias))} that differs across positions")
        layer.kwargs["bias"] = True
        layer.params["bias"] = full.reshape(channels, -1)[:, 0].copy()
        self.values[node.output[0]] = x

    def reshape_target(self, node, x: Value) -> tuple:
        """The per-sample shape a Reshape asks for (its first axis must be the batch)."""
        shape = list(self.consts.get(node.input[1], np.array([])).reshape(-1)) if len(node.input) > 1 else None
        if shape is None or node.input[1] not in self.consts:
            raise self.fail(node, "a Reshape to a shape computed at run time from anything but the input's shape")
        full = [BATCH, *x.shape]
        allowzero = self.attr(node, "allowzero", 0)
        out = []
        for i, v in enumerate(shape):
            if v is BATCH:
                out.append(BATCH)
            elif int(v) == 0 and not allowzero:
                out.append(full[i] if i < len(full) else 0)
            else:
                out.append(int(v))
        rest = out[1:]
        size = math.prod(x.shape)
        if any(v is BATCH for v in rest):
            raise self.fail(node, f"a Reshape to {out} (the batch must stay the first axis)")
        if rest.count(-1) == 1:
            known = math.prod(v for v in rest if v != -1)
            if known == 0 or size % known:
                raise self.fail(node, f"a Reshape of {fmt_shape(x.shape)} to {out}")
            rest[rest.index(-1)] = size // known
        elif rest.count(-1) > 1 or (out[0] is not BATCH and out[0] != -1 and math.prod(rest) != size):
            raise self.fail(node, f"a Reshape of (batch, {fmt_shape(x.shape)}) to {out}")
        if math.prod(rest) != size:
            raise self.fail(node, f"a Reshape of (batch, {fmt_shape(x.shape)}) to {out} "
                                  "(the batch must stay the first axis)")
        return tuple(rest)

    # -- the structural operators ----------------------------------------------------------------
    def Identity(self, node):
        self.layer("identity", {}, [self.tensor(node, 0)], node)

    def Cast(self, node):
        to = self.attr(node, "to")
        if to not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE, self.onnx.TensorProto.FLOAT16):
            raise self.fail(node, "a Cast of a tensor to a type that is not floating point")
        self.values[node.output[0]] = self.tensor(node, 0)

    def Pad(self, node):
        x = self.tensor(node, 0)
        mode = self.attr(node, "mode", "constant")
        if mode != "constant":
            raise self.fail(node, f"Pad with mode={mode} (cnnspec pads with zeros, and -inf for max-pooling)")
        rank = len(x.shape) + 1
        if self.opset < 11:
            pads, value = list(self.attr(node, "pads")), float(self.attr(node, "value", 0.0))
        else:
            pads = self.const(node, 1, "the pads").reshape(-1).tolist()
            value = float(self.const(node, 2, "the value").reshape(-1)[0]) if self.has_input(node, 2) else 0.0
        axes = list(range(rank))
        if self.has_input(node, 3):
            axes = [int(a) % rank for a in self.const(node, 3, "the axes").reshape(-1)]
        full = [0] * (2 * rank)
        for j, a in enumerate(axes):
            full[a], full[rank + a] = int(pads[j]), int(pads[len(axes) + j])
        if full[0] or full[1] or full[rank] or full[rank + 1] or any(p < 0 for p in full):
            raise self.fail(node, f"Pad {full} (cnnspec pads the spatial axes only, by positive amounts)")
        spatial = tuple(v for i in range(2, rank) for v in (full[i], full[rank + i]))
        if x.pad is not None:
            if x.fill != value:
                raise self.fail(node, "two Pads with different values")
            spatial = tuple(a + b for a, b in zip(spatial, x.pad))
        self.values[node.output[0]] = Value(x.layer, x.shape, spatial, value, node.name)

    def Mul(self, node):
        tensors, consts = self.split_operands(node)
        if self.gelu_stage(node, tensors, consts):
            return
        if len(tensors) == 2 and "silu" in LAYERS:
            for gate, x in (tensors, tensors[::-1]):     # x * sigmoid(x): silu
                layer = self.layers[gate.layer] if gate.layer >= 0 else None
                if layer is not None and layer.op == "sigmoid" and layer.inputs == [x.layer] and \
                        gate.pattern is None and x.pattern is None and self._single_use(gate):
                    layer.op = "silu"
                    layer.node = node.name
                    self.values[node.output[0]] = gate
                    return
        if len(tensors) == 2 and "mul" in LAYERS:
            # x * g.expand_as(x): the Expand is Mul's own broadcast, written out
            for k, (t, other) in enumerate((tensors, tensors[::-1])):
                if t.pattern is not None and t.pattern[0] == "expand:to":
                    target = t.pattern[2]                  # Mul's result must be other's shape
                    if len(target) != len(other.shape) or any(a not in (1, b) for a, b in zip(target, other.shape)):
                        raise self.fail(node, f"Mul of a gate expanded to (batch, {fmt_shape(t.pattern[2])}) and "
                                              f"a (batch, {fmt_shape(other.shape)}) tensor")
                    tensors[k] = Value(t.layer, t.shape)
            for t in tensors:
                if t.pattern is not None:
                    raise self.broken_pattern(t, node)
            # cnnspec's mul takes a flat gate as it is: the Unsqueezes that viewed it as Cx1x1 go
            # (only those that add trailing axes: a gate viewed as 1xCx1 scales rows, not channels)
            if len(tensors[0].shape) != len(tensors[1].shape):
                raise self.fail(node, f"Mul of a (batch, {fmt_shape(tensors[0].shape)}) and a (batch, "
                                      f"{fmt_shape(tensors[1].shape)}) tensor: ONNX broadcasts the smaller one "
                                      "along the last axes (cnnspec's mul gates channels: view the gate as Cx1x1)")
            operands = []
            for t in tensors:
                while True:
                    layer = self.layers[t.layer] if t.layer >= 0 else None
                    if layer is None or not layer.unsqueeze:
                        break
                    source = layer.inputs[0]
                    shape = self.input_shapes[source] if source < 0 else self.layers[source].shape
                    if tuple(layer.shape[:len(shape)]) != tuple(shape) or any(n != 1 for n in layer.shape[len(shape):]):
                        break
                    t = Value(source, shape)
                operands.append(t)
            self.layer("mul", {}, operands, node)
            return
        if len(tensors) == 1 and len(consts) == 1:
            x, c = tensors[0], consts[0]
            layer = self.layers[x.layer] if x.layer >= 0 else None
            if layer is not None and layer.op == "avgpool" and self._single_use(x):
                node_view = self._node_view(x.layer)
                expected = pool_divisors(node_view)
                if np.ndim(c) <= expected.ndim and np.allclose(np.broadcast_to(c, expected.shape), expected):
                    layer.op = "sumpool"                    # average x window size = sum
                    self.values[node.output[0]] = x
                    return
        raise self.fail(node, "Mul other than an average pool times its window sizes (sum pooling)"
                              + (" or of two tensors" if "mul" in LAYERS else ""))

    # -- patterns of several nodes that make one layer ------------------------------------------------
    def broken_pattern(self, x: Value, node) -> CnnSpecError:
        stage, first, _ = x.pattern
        what = {"gelu": "GELU (x * 0.5 * (1 + erf(x / sqrt(2))))", "shuffle": "a channel shuffle "
                "(Reshape, Transpose, Reshape)", "softplus": SOFTPLUS,
            "expand": "a gate expanded to the shape of what it multiplies (Expand, then Mul)"}[stage.split(":")[0]]
        return CnnSpecError(f"node `{first}` starts what looks like {what}, but `{node.name}` ({node.op_type}) "
                            "uses a part of it: cnnspec reads only the whole pattern", file=self.file)

    def pattern(self, node, x: Value, stage: str, data=None, first=None):
        self.values[node.output[0]] = Value(x.layer, x.shape, pattern=(stage, first or node.name, data))

    def Div(self, node):                     # x / sqrt(2), the start of GELU's erf form
        tensors, consts = self.split_operands(node)
        if len(tensors) == 1 and len(consts) == 1 and node.input[0] in self.values and tensors[0].pattern is None \
                and abs(float(np.reshape(consts[0], -1)[0]) - math.sqrt(2)) < 1e-5 and "gelu" in LAYERS:
            self.pattern(node, tensors[0], "gelu:scaled")
            return
        raise self.fail(node, "Div of tensors (other than x / sqrt(2) in GELU's erf form)")

    def Greater(self, node):                 # x > 20, PyTorch's softplus threshold (the dynamo exporter)
        tensors, consts = self.split_operands(node)
        if len(tensors) == 1 and len(consts) == 1 and node.input[0] in self.values and tensors[0].pattern is None \
                and tensors[0].pad is None and np.size(consts[0]) == 1 and "softplus" in LAYERS:
            self.pattern(node, tensors[0], "softplus:above", float(np.reshape(consts[0], -1)[0]))
            return
        raise self.fail(node, f"Greater other than x > 20 in {SOFTPLUS}")

    def Where(self, node):                   # Where(x > 20, x, Softplus(x)): softplus
        cond, x, soft = (self.values.get(name) for name in node.input)
        if cond is not None and cond.pattern is not None and cond.pattern[0] == "softplus:above":
            layer = self.layers[soft.layer] if soft is not None and soft.layer >= 0 else None
            if x is None or x.pattern is not None or x.pad is not None or x.layer != cond.layer or layer is None \
                    or soft.pattern is not None or layer.op != "softplus" or layer.inputs != [x.layer]:
                raise self.broken_pattern(cond, node)
            if cond.pattern[2] != 20.0:
                raise self.fail(node, f"softplus with threshold {cond.pattern[2]:g} (cnnspec's softplus is "
                                      "PyTorch's default: beta 1, threshold 20)")
            self.values[node.output[0]] = soft
            return
        raise self.fail(node, f"Where on tensors other than in {SOFTPLUS}")

    def Erf(self, node):
        x = self.tensor(node, 0)
        if x.pattern is None or x.pattern[0] != "gelu:scaled":
            raise self.fail(node, "Erf other than in GELU's erf form x * 0.5 * (1 + erf(x / sqrt(2)))")
        self.pattern(node, x, "gelu:erf", first=x.pattern[1])

    def gelu_stage(self, node, tensors, consts) -> bool:
        """Add(erf, 1), Mul(x, ...), Mul(..., 0.5) in either order: GELU. True when ``node`` is a stage."""
        staged = [t for t in tensors if t.pattern is not None and t.pattern[0].startswith("gelu")]
        if not staged:
            return False
        (p,), plain = staged, [t for t in tensors if t.pattern is None]
        stage, first, data = p.pattern
        value = float(np.reshape(consts[0], -1)[0]) if len(consts) == 1 and np.size(consts[0]) == 1 else None
        x = Value(p.layer, p.shape)
        if node.op_type == "Add" and stage == "gelu:erf" and value == 1.0 and not plain:
            self.pattern(node, x, "gelu:plus1", first=first)
        elif node.op_type == "Mul" and stage in ("gelu:plus1", "gelu:half") and len(plain) == 1 and \
                plain[0].layer == p.layer and not consts:
            self.pattern(node, x, "gelu:x*" if stage == "gelu:plus1" else "gelu:done", first=first)
        elif node.op_type == "Mul" and stage in ("gelu:x*", "gelu:plus1") and value == 0.5 and not plain:
            self.pattern(node, x, "gelu:done" if stage == "gelu:x*" else "gelu:half", first=first)
        else:
            raise self.broken_pattern(p, node)
        if self.values[node.output[0]].pattern[0] == "gelu:done":
            del self.values[node.output[0]]
            self.layer("gelu", {}, [x], node)
        return True

    def Expand(self, node):                  # a gate expanded to its operand's shape: Mul broadcasts it
        x = self.tensor(node, 0)
        target = self.consts.get(node.input[1]) if len(node.input) > 1 else None
        if target is None:
            raise self.fail(node, "Expand to a shape computed from the input (cnnspec reads an Expand of a "
                                  "gate only to a shape known at import time)")
        target = list(np.reshape(target, -1))
        full = [BATCH, *x.shape]
        # the first axis: the batch, symbolic, or the fixed one of a model exported without dynamic axes
        if len(target) != len(full) or (target[0] is not BATCH and int(target[0]) < 1) or \
                any(int(t) < 1 or (n != 1 and int(t) != n) for n, t in zip(full[1:], target[1:])):
            raise self.fail(node, f"Expand of a (batch, {fmt_shape(x.shape)}) tensor to {_shape_text(target)} (cnnspec reads "
                                  "an Expand of a gate to the shape of the tensor it multiplies)")
        self.pattern(node, x, "expand:to", tuple(int(t) for t in target[1:]))

    def Unsqueeze(self, node):               # a flat gate viewed as Cx1x1: reshape
        x = self.tensor(node, 0)
        axes = self.attr(node, "axes", None)
        if axes is None:
            axes = self.const(node, 1, "the axes").reshape(-1).tolist()
        shape = list(x.shape)
        rank = len(shape) + 1 + len(axes)
        for a in sorted(int(a) % rank for a in axes):
            if a == 0:
                raise self.fail(node, "Unsqueeze of the batch axis")
            shape.insert(a - 1, 1)
        if "reshape" not in LAYERS or len(shape) > 3:
            raise self.fail(node, f"Unsqueeze of a (batch, {fmt_shape(x.shape)}) tensor")
        value = self.layer("reshape", {"shape": Size(shape) if len(shape) > 1 else shape[0]}, [x], node)
        self.layers[value.layer].unsqueeze = True

    def Transpose(self, node):               # the middle of a channel shuffle
        x = self.tensor(node, 0)
        perm = list(self.attr(node, "perm", []))
        if x.pattern is not None and x.pattern[0] == "shuffle:view" and perm == [0, 2, 1] + list(
                range(3, len(perm))):
            self.pattern(node, x, "shuffle:swapped", x.pattern[2], first=x.pattern[1])
            return
        raise self.fail(node, "Transpose other than the one of a channel shuffle (Reshape to (N, g, C/g, ...), "
                              "Transpose(0, 2, 1, ...), Reshape back)")

    def reshape_pattern(self, node, x: Value, target) -> bool:
        """Reshape into (groups, C/groups, ...) or back after the Transpose: a channel shuffle."""
        if "shuffle" not in LAYERS:
            return False
        if x.pattern is None and len(target) == len(x.shape) + 1 and target[0] * target[1] == x.shape[0] \
                and tuple(target[2:]) == tuple(x.shape[1:]):
            self.pattern(node, x, "shuffle:view", target[0])
            return True
        if x.pattern is not None and x.pattern[0] == "shuffle:swapped" and tuple(target) == tuple(x.shape):
            self.layer("shuffle", {"groups": x.pattern[2]}, [Value(x.layer, x.shape)], node)
            return True
        if x.pattern is not None:
            raise self.broken_pattern(x, node)
        return False

    def CnnspecLayer(self, node):
        """A layer of a file cnnspec wrote whose ONNX form reads as another kind (see ``opaque``)."""
        import json

        info = json.loads(node.doc_string)
        try:
            inputs = [self.values[name] for name in info["inputs"]]
            config = dict(info["config"], op=info["op"])
            KINDS[info["op"]].from_cnnspec(self, node, config, inputs)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._bad_metadata(node, f"{type(exc).__name__}: {exc}") from None

    def _bad_metadata(self, node, why: str) -> CnnSpecError:
        return CnnSpecError(f"node `{node.name or '(unnamed)'}` ({node.op_type}): its `cnnspec.layer` metadata is "
                            f"damaged ({why[:200]}); cnnspec reads its own files' layers from it",
                            file=self.file, hint="export the network again with cnnspec export, or remove "
                                                 "the node's metadata_props")

    def opaque_layers(self, nodes) -> list:
        """For files cnnspec wrote: the nodes of each layer of an ``opaque`` kind (its node and those
        named ``layer/...``) become one node that reads the layer from its metadata."""
        import json

        helper = self.onnx.helper
        layers = {}
        for node in nodes:
            meta = {p.key: p.value for p in node.metadata_props}
            if "cnnspec.layer" in meta:
                try:
                    info = json.loads(meta["cnnspec.layer"])
                except ValueError as exc:               # JSONDecodeError, UnicodeDecodeError
                    raise self._bad_metadata(node, str(exc)) from None
                if (not isinstance(info, dict) or not isinstance(info.get("op"), str)
                        or not isinstance(info.get("config"), dict) or not isinstance(info.get("inputs"), list)
                        or not all(isinstance(name, str) for name in info["inputs"])):
                    raise self._bad_metadata(node, "not a layer's op, config and inputs")
                if info["op"] in KINDS and getattr(KINDS[info["op"]], "opaque", False) and info["op"] in LAYERS:
                    layers[node.name] = info
        if not layers:
            return list(nodes)
        out, done = [], set()
        for node in nodes:
            owner = node.name if node.name in layers else node.name.split("/")[0]
            if owner not in layers:
                out.append(node)
            elif owner not in done:
                done.add(owner)
                pseudo = helper.make_node("CnnspecLayer", layers[owner]["inputs"], [owner], name=owner,
                                          domain="cnnspec.internal")
                pseudo.doc_string = json.dumps(layers[owner])
                out.append(pseudo)
        return out

    def _single_use(self, x: Value) -> bool:
        return all(self.uses[name] == 1 for name, v in self.values.items() if v is x)

    def _node_view(self, index) -> dict:
        """A layer as the table's functions see graph nodes: op, config and shapes."""
        layer = self.layers[index]
        shapes = [self.input_shape if i < 0 else self.layers[i].shape for i in layer.inputs]
        config = LAYERS[layer.op].configure((), dict(layer.kwargs), shapes)
        return {"op": layer.op, "config": config, "input_shapes": shapes, "output_shape": layer.shape}

    # -- constant folding --------------------------------------------------------------------------
    def fold(self, node) -> bool:
        """Compute ``node`` now when its inputs are known (constants, or the shape of a tensor)."""
        if node.op_type not in FOLD:
            return False
        f = FOLD[node.op_type]
        if node.op_type == "Shape":
            if node.input[0] in self.values:
                x = self.values[node.input[0]]
                shape = np.array([BATCH, *x.shape], dtype=object)
            elif node.input[0] in self.consts:
                shape = np.array(self.consts[node.input[0]].shape, np.int64)
            else:
                return False
            start, end = self.attr(node, "start", 0), self.attr(node, "end", None)
            self.consts[node.output[0]] = _known(shape[start:end])
            return True
        inputs = [self.consts.get(name) if name else None for name in node.input]
        if any(name and name not in self.consts for name in node.input):
            return False
        values = _folded_size(node.op_type, inputs)
        if values > MAX_FOLDED:
            raise CnnSpecError(f"the node `{node.name or node.output[0]}` ({node.op_type}) makes a constant of "
                               f"{values:,} values; cnnspec folds constants of at most {MAX_FOLDED:,}",
                               file=self.file)
        try:
            outputs = f(self, node, *inputs)
        except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, AttributeError):
            return False
        except MemoryError:
            raise CnnSpecError(f"the node `{node.name or node.output[0]}` ({node.op_type}) makes a constant "
                               "too large for this machine's memory", file=self.file) from None
        for name, value in zip(node.output, outputs if isinstance(outputs, tuple) else (outputs,)):
            self.consts[name] = _known(value)
        return True

    def _array(self, tensor):
        try:
            return self.onnx.numpy_helper.to_array(tensor)
        except Exception as exc:
            raise CnnSpecError(f"cannot read the initializer `{tensor.name}`: {_first_line(exc)}",
                               file=self.file) from None

    def _input_shape(self, value_info) -> tuple:
        t = value_info.type.tensor_type
        dims = list(t.shape.dim)
        name = value_info.name
        if t.elem_type not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE,
                               self.onnx.TensorProto.FLOAT16):
            raise CnnSpecError(f"the input `{name}` is not a floating-point tensor", file=self.file)
        if not 2 <= len(dims) <= 4:
            raise CnnSpecError(f"the input `{name}` has {len(dims)} axes; cnnspec reads (batch, D), "
                               "(batch, C, L) and (batch, C, H, W)", file=self.file)
        shape = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value < 1:
                raise CnnSpecError(f"the input `{name}` has a size that is not fixed ({d.dim_param or '?'}); "
                                   "cnnspec networks have fixed input sizes (only the batch may vary)",
                                   file=self.file,
                                   hint="export with fixed sizes: only the first axis dynamic")
            shape.append(int(d.dim_value))
        return tuple(shape)

    # -- the graph ---------------------------------------------------------------------------------
    def run(self) -> tuple:
        """Read every node; returns (layers that the output depends on, in order)."""
        graph = self.model.graph
        nodes = self.opaque_layers(graph.node) if self.from_cnnspec else graph.node
        for node in nodes:
            if node.domain == "cnnspec.internal":
                self.CnnspecLayer(node)
                continue
            if node.domain not in ("", "ai.onnx"):
                raise self.unsupported(node)
            if self.fold(node):
                continue
            if node.op_type in STRUCTURAL:
                getattr(self, node.op_type)(node)
            elif node.op_type in IMPORTERS:
                IMPORTERS[node.op_type].from_onnx(self, node)
            elif node.op_type == "Expand" and node.input[0] in self.values and "mul" in LAYERS:
                self.Expand(node)
            elif node.op_type in FOLD:
                tensor = next((i for i in node.input if i in self.values), None)
                what = (f"on a tensor computed from the input (`{tensor}`)" if tensor else
                        "on these inputs (they could not be computed at import time)")
                raise CnnSpecError(f"node `{node.name or '(unnamed)'}`: operator {node.op_type} {what} is not "
                                   f"supported: cnnspec computes {node.op_type} only on constants and shapes, "
                                   "at import time", file=self.file, hint=supported_text())
            else:
                raise self.unsupported(node)
        if len(graph.output) != 1:
            raise CnnSpecError(f"the model has {len(graph.output)} outputs; cnnspec reads models with one",
                               file=self.file)
        name = graph.output[0].name
        out = self.values.get(name)
        if out is not None and out.pattern is not None:
            raise self.broken_pattern(out, graph.output[0])
        if out is None or out.layer < 0 or out.pad is not None:
            raise CnnSpecError(f"the output `{name}` is not computed by a layer cnnspec reads "
                               "(a constant, the input itself, or a bare Pad)", file=self.file)
        return self._live(out.layer)

    def unsupported(self, node) -> CnnSpecError:
        domain = f" of domain `{node.domain}`" if node.domain not in ("", "ai.onnx") else ""
        return CnnSpecError(
            f"node `{node.name or '(unnamed)'}`: operator {node.op_type}{domain} is not supported",
            file=self.file, hint=supported_text())

    def _live(self, output: int) -> list:
        keep = {output}
        for i in range(output, -1, -1):
            if i in keep:
                keep.update(j for j in self.layers[i].inputs if j >= 0)
        index = {old: new for new, old in enumerate(sorted(keep))}
        layers = []
        for old in sorted(keep):
            layer = self.layers[old]
            layer.inputs = [index[j] if j >= 0 else j for j in layer.inputs]
            if layer.node in self.frozen and "trainable" in LAYERS[layer.op].params:
                layer.kwargs["trainable"] = False
            layers.append(layer)
        return layers


# ---- constant folding: numpy versions of the shape operators exporters emit ---------------------------

def _axes(imp, node, data, i=1):
    axes = imp.attr(node, "axes", None)
    if axes is None and len(node.input) > i and node.input[i]:
        axes = imp.consts[node.input[i]].reshape(-1).tolist()
    return axes


def _constant(imp, node):
    for a in node.attribute:
        value = imp.onnx.helper.get_attribute_value(a)
        if a.name == "value":
            return imp.onnx.numpy_helper.to_array(value)
        if a.name in ("value_float", "value_int"):
            return np.array(value, np.float32 if a.name == "value_float" else np.int64)
        if a.name in ("value_floats", "value_ints"):
            return np.array(list(value), np.float32 if a.name == "value_floats" else np.int64)
    raise ValueError("unsupported Constant")


def _cast(imp, node, x, *_):
    if x.dtype == object:
        return x
    to = imp.attr(node, "to") if node.op_type == "Cast" else None
    dtype = imp.onnx.helper.tensor_dtype_to_np_dtype(to) if to is not None else _[0].dtype
    return x.astype(dtype)


def _unsqueeze(imp, node, x, *rest):
    out = x
    for a in sorted(int(a) % (x.ndim + len(_axes(imp, node, x))) for a in _axes(imp, node, x)):
        out = np.expand_dims(out, a)
    return out


def _squeeze(imp, node, x, *rest):
    axes = _axes(imp, node, x)
    return np.squeeze(x, axis=tuple(int(a) % x.ndim for a in axes) if axes is not None else None)


def _slice(imp, node, x, starts=None, ends=None, axes=None, steps=None):
    if starts is None:                                      # opset < 10: attributes
        starts, ends, axes = imp.attr(node, "starts"), imp.attr(node, "ends"), imp.attr(node, "axes")
    axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in np.reshape(axes, -1)]
    steps = [1] * len(axes) if steps is None else np.reshape(steps, -1).tolist()
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, np.reshape(starts, -1).tolist(), np.reshape(ends, -1).tolist(), steps):
        n = x.shape[a]
        s, e = max(min(int(s), n), -n - 1), max(min(int(e), n), -n - 1)
        index[a] = slice(s, e, int(st))
    return x[tuple(index)]


def _reshape(imp, node, x, shape):
    shape = [int(v) for v in shape.reshape(-1)]
    shape = [x.shape[i] if v == 0 and not imp.attr(node, "allowzero", 0) else v for i, v in enumerate(shape)]
    return x.reshape(shape)


def _arith(f):
    def fold(imp, node, a, b):
        if a.dtype == object or b.dtype == object:
            raise TypeError("symbolic")
        out = f(a, b)
        return out.astype(a.dtype) if a.dtype.kind in "iu" and b.dtype.kind in "iu" else out
    return fold


FOLD = {
    "Constant": lambda imp, node: _constant(imp, node),
    "Identity": lambda imp, node, x: x,
    "Cast": _cast,
    "CastLike": _cast,
    "Shape": None,                                          # handled in Importer.fold
    "Gather": lambda imp, node, x, i: np.asarray(np.take(x, i.astype(np.int64), axis=imp.attr(node, "axis", 0)),
                                                 dtype=x.dtype),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda imp, node, *xs: np.concatenate([np.atleast_1d(x) for x in xs], axis=imp.attr(node, "axis")),
    "Slice": _slice,
    "Reshape": _reshape,
    "Flatten": lambda imp, node, x: x.reshape(int(np.prod(x.shape[:imp.attr(node, "axis", 1)])), -1),
    "Transpose": lambda imp, node, x: np.transpose(x, imp.attr(node, "perm", None)),
    "Add": _arith(np.add),
    "Sub": _arith(np.subtract),
    "Mul": _arith(np.multiply),
    "Div": _arith(lambda a, b: a // b if a.dtype.kind in "iu" and b.dtype.kind in "iu" else a / b),
    # ONNX's Mod: the sign of the divisor (Python's %), or with fmod=1 of the dividend (C's fmod);
    # PyTorch's TorchScript exporter writes it for the axis of an nn.Unflatten
    "Mod": lambda imp, node, a, b: _arith(np.fmod if imp.attr(node, "fmod", 0) else np.mod)(imp, node, a, b),
    "Expand": lambda imp, node, x, shape: x * np.ones([int(v) for v in shape.reshape(-1)], x.dtype),
    "ConstantOfShape": lambda imp, node, shape: np.full(
        [int(v) for v in shape.reshape(-1)],
        imp.onnx.numpy_helper.to_array(imp.attr(node, "value")).reshape(-1)[0]
        if imp.attr(node, "value") is not None else np.float32(0)),
    "Range": lambda imp, node, s, e, d: np.arange(s, e, d).astype(s.dtype),
    "Equal": lambda imp, node, a, b: np.equal(a, b) if a.dtype != object and b.dtype != object else _no(),
    "Where": lambda imp, node, c, a, b: np.where(c, a, b),
}


MAX_FOLDED = 2 ** 26      # values in one folded constant (shape arithmetic needs a handful)


def _folded_size(op: str, inputs) -> int:
    """How many values ``op`` would make from ``inputs`` when it makes them out of a shape or a
    range (ConstantOfShape, Expand, Range), before any is allocated; 0 for other operators or
    inputs it cannot read (the fold then fails on them as it would)."""
    try:
        if op in ("ConstantOfShape", "Expand"):
            dims = [int(v) for v in np.asarray(inputs[-1]).reshape(-1)]
            return math.prod(max(d, 0) for d in dims)
        if op == "Range":
            start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in inputs)
            return max(0, math.ceil((limit - start) / delta)) if delta else 0
    except (TypeError, ValueError, IndexError, OverflowError):
        pass
    return 0


def _known(value):
    """Shape arithmetic without the symbolic batch size is plain integers again."""
    value = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if value.dtype == object and not any(v is BATCH for v in value.reshape(-1)):
        return value.astype(np.int64)
    return value


def _no():
    raise TypeError("symbolic")


# ---- the public entry point ----------------------------------------------------------------------------

def import_onnx(path, name: str | None = None):
    """Read the ONNX model at ``path``: returns ``(network, weights, text)``, the analysed
    :class:`cnnspec.Network`, its weights ``{"layer.param": float32 array}`` and the ``.cnn``
    text it was compiled from."""
    from cnnspec.interop.writer import write

    path = os.fspath(path)
    model = read_model(path)
    importer = Importer(model, file=path)
    layers = importer.run()
    from cnnspec.interop.weights import refuse_non_finite

    net, weights, text = write(layers, importer, path, name)
    refuse_non_finite(weights, path)                # as a weights file holding them is
    return net, weights, text


def from_onnx(path, name: str | None = None):
    """``(network, weights)`` of the ONNX model at ``path`` (see :func:`import_onnx`)."""
    net, weights, _ = import_onnx(path, name)
    return net, weights


def describe(model) -> str:
    """``producer version, opset N`` for the header comment of an imported file."""
    producer = " ".join(filter(None, [model.producer_name, model.producer_version])) or "an unknown producer"
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
    return f"{producer}, opset {opset}"


__all__ = ["BATCH", "FOLD", "Importer", "Layer", "Value", "describe", "from_onnx", "import_onnx", "read_model",
           "supported_operators", "supported_text"]
