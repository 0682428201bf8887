"""The translation table: one entry per layer kind, read by the PyTorch exporter, the ONNX exporter
and the ONNX importer (and by the ``.cnn`` writer of the importer).

Each entry (a :class:`Kind`) says, for one layer kind of the layer catalogue (``cnnspec/layers``):

* ``torch(node)``: the ``torch.nn`` module that computes it (a :class:`Ctor`: class, arguments),
  or None for merges, which are written in ``forward`` (``torch_merge``);
* ``to_onnx(b, name, node, xs)``: the ONNX nodes that compute it (the last one named ``name``,
  its output the tensor ``name``, so that Netron shows the ``.cnn`` names);
* ``onnx_ops`` and ``from_onnx(imp, node)``: the ONNX operators it is read back from;
* ``text(kwargs)``: the ``.cnn`` call that writes it, from the resolved arguments;
* ``slots``: the arguments that may differ between instances of one block (block parameters).

Parameters keep cnnspec's layouts except dense weights, which PyTorch and ONNX (Gemm, transB=1)
keep as (out, in): :func:`framework_layout` is the one place that says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cnnspec.layers import LAYERS
from cnnspec.layers.base import fmt_shape, output_size
from cnnspec.layers.values import Size

KINDS: dict = {}             # cnnspec op -> Kind
IMPORTERS: dict = {}         # ONNX op_type -> the Kind method that reads it


def register(cls):
    """Enter a Kind in the tables; its ONNX operators are read only when the layer catalogue has
    its layers (dsl.md §10's arrive in the catalogue before the engine runs them)."""
    kind = cls()
    for op in cls.ops:
        KINDS[op] = kind
    if any(op in LAYERS for op in cls.ops):
        for op_type in cls.onnx_ops:
            IMPORTERS[op_type] = kind
    return cls


def framework_layout(op: str, key: str, array):
    """A parameter in the layout PyTorch and ONNX keep it, and back (its own inverse): dense
    weights (in, out) <-> (out, in)."""
    return np.ascontiguousarray(array.T) if op == "dense" and key == "weight" else array


# ---- shared formatting ---------------------------------------------------------------------------

def squash(values):
    """(3, 3) -> 3; (3, 1) -> (3, 1): how PyTorch's layers take a per-axis size."""
    values = tuple(int(v) for v in values)
    return values[0] if len(set(values)) == 1 else values


def onnx_pads(pad) -> list:
    """cnnspec's (before, after) per axis, flattened -> ONNX's [begins..., ends...]."""
    return [int(v) for v in pad[0::2]] + [int(v) for v in pad[1::2]]


def cnn_pads(pads) -> tuple:
    """ONNX's [begins..., ends...] -> cnnspec's (before, after) per axis."""
    rank = len(pads) // 2
    return tuple(int(v) for i in range(rank) for v in (pads[i], pads[rank + i]))


def torch_pad(pad) -> tuple:
    """cnnspec's (before, after) per axis -> F.pad's order (last axis first)."""
    rank = len(pad) // 2
    return tuple(int(v) for i in reversed(range(rank)) for v in (pad[2 * i], pad[2 * i + 1]))


def size_text(values) -> str:
    values = tuple(values)
    return "x".join(str(v) for v in values)


def per_axis_text(values) -> str:
    """stride or dilation: ``2`` when equal on every axis, else ``2x1``."""
    values = tuple(int(v) for v in values)
    return str(values[0]) if len(set(values)) == 1 else size_text(values)


def pad_text(pad) -> str | None:
    """None for no padding; ``1``, ``2x1`` or ``(0, 1, 0, 1)`` as the language writes it."""
    pad = tuple(int(v) for v in pad)
    if not any(pad):
        return None
    pairs = list(zip(pad[0::2], pad[1::2]))
    if all(a == b for a, b in pairs):
        befores = [a for a, _ in pairs]
        return str(befores[0]) if len(set(befores)) == 1 else size_text(befores)
    return "(" + ", ".join(str(v) for v in pad) + ")"


def number_text(value) -> str:
    """A float as the shortest text that reads back as the same float32 (ONNX keeps float32)."""
    value = float(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{value:.1f}"
    for digits in range(1, 18):
        text = f"{value:.{digits}g}"
        if np.float32(float(text)) == np.float32(value):
            return text if any(c in text for c in ".e") else text + ".0"
    return repr(value)


class Expr(str):
    """A block-parameter expression (``c``, ``4*c``) standing for a value in ``.cnn`` text."""


def value_text(value) -> str:
    if isinstance(value, Expr):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, Size):
        return size_text(value)
    return str(value)


def call_text(op: str, positional=(), keywords=()) -> str:
    """``op(a, b, key=value)``, or ``op`` alone without arguments."""
    parts = [value_text(v) for v in positional]
    parts += [f"{k}={v if isinstance(v, str) and not isinstance(v, Expr) else value_text(v)}"
              for k, v in keywords]
    return f"{op}({', '.join(parts)})" if parts else op


# ---- PyTorch -----------------------------------------------------------------------------------

@dataclass
class Ctor:
    """A ``torch.nn`` constructor call: ``cls(*args, **kwargs)``; ``helper`` names a class the
    generated file must define (HELPERS) when torch.nn has no layer that says it."""
    cls: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    helper: str | None = None


HELPERS = {
    "PadConv": '''
class PadConv1d(nn.Conv1d):
    """nn.Conv1d after zero padding that differs between the sides: pad = (left, right)."""

    def __init__(self, *args, pad, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = pad

    def forward(self, x):
        return super().forward(F.pad(x, self.pad))


class PadConv2d(nn.Conv2d):
    """nn.Conv2d after zero padding that differs between the sides: pad = (left, right, top,
    bottom), in F.pad's order (last axis first)."""

    def __init__(self, *args, pad, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = pad

    def forward(self, x):
        return super().forward(F.pad(x, self.pad))
''',
    "Pool": '''
class Pool(nn.Module):
    """Pooling as cnnspec defines it, where torch.nn's pooling layers cannot say it (padding that
    differs between the sides or exceeds half the kernel, sum pooling). kind is "max", "avg" or
    "sum"; pad = (before, after) per axis, first axis first. Padding is -inf for max and zeros
    (counted) for avg and sum; with ceil=True the last window must start inside the input or its
    left padding (Caffe's rule, as PyTorch's ceil_mode), and a window that hangs past the padding
    is clipped (avg divides by the clipped size). Written without ceil_mode and divisor_override,
    which torch.onnx.export does not carry into ONNX: the windows that hang past the padding get
    padding of their own (-inf, or zeros not counted)."""

    def __init__(self, kind, kernel, stride, pad, ceil=False):
        super().__init__()
        self.kind, self.kernel, self.stride, self.pad, self.ceil = kind, kernel, stride, pad, ceil

    def extra_repr(self):
        return f"{self.kind}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, ceil={self.ceil}"

    def forward(self, x):
        rank = len(self.kernel)
        sizes, extra, counts = [], [], []
        for n, k, s, before, after in zip(x.shape[2:], self.kernel, self.stride, self.pad[0::2], self.pad[1::2]):
            n = int(n)                                  # the spatial sizes are fixed
            span = n + before + after - k
            out = 1 + (-(-span // s) if self.ceil else span // s)
            if self.ceil and (out - 1) * s >= n + before:
                out -= 1
            sizes.append(out)
            extra.append(max(0, (out - 1) * s + k - (n + before + after)))
            counts.append([min(i * s + k, n + before + after) - i * s for i in range(out)])
        torch_pad = [v for i in reversed(range(rank)) for v in (self.pad[2 * i], self.pad[2 * i + 1] + extra[i])]
        x = F.pad(x, torch_pad, value=-math.inf if self.kind == "max" else 0.0)
        if rank == 1:
            x = x.unsqueeze(2)
        kernel, stride = (1,) * (2 - rank) + tuple(self.kernel), (1,) * (2 - rank) + tuple(self.stride)
        if self.kind == "max":
            y = F.max_pool2d(x, kernel, stride)
        else:
            y = F.avg_pool2d(x, kernel, stride)         # the window's sum over its full size
            if self.kind == "sum":
                y = y * math.prod(self.kernel)
            elif any(extra):                            # clipped windows: their own size
                size = torch.tensor(counts[0], dtype=y.dtype, device=y.device)
                for c in counts[1:]:
                    size = size[:, None] * torch.tensor(c, dtype=y.dtype, device=y.device)
                y = y * (math.prod(self.kernel) / size)
        if rank == 1:
            y = y.squeeze(2)
        return y[(..., *(slice(0, size) for size in sizes))]
''',
}


# ---- the entries -------------------------------------------------------------------------------

class Kind:
    ops: tuple = ()              # the cnnspec ops this entry translates
    onnx_ops: tuple = ()         # the ONNX operators it reads back
    slots: tuple = ()            # arguments that may become block parameters
    opaque = False               # its ONNX form reads back as another kind: files cnnspec wrote
                                 # are read through the layer's metadata (from_cnnspec)

    # .cnn text of resolved written arguments (what from_onnx passes to imp.layer)
    def text(self, op, kwargs) -> str:
        return call_text(op)

    def torch(self, node) -> Ctor | None:
        raise NotImplementedError

    def torch_merge(self, node, operands) -> str:
        raise NotImplementedError

    def to_onnx(self, b, name, node, xs) -> str:
        raise NotImplementedError

    def from_onnx(self, imp, node) -> None:
        raise NotImplementedError


def spatial_of(node) -> int:
    return len(node["input_shapes"][0]) - 1


@register
class Conv(Kind):
    ops = ("conv",)
    onnx_ops = ("Conv",)
    slots = ("filters", "stride", "groups")

    def text(self, op, kw):
        keys = []
        stride = kw.get("stride", 1)
        if isinstance(stride, Expr) or (isinstance(stride, int) and stride != 1):
            keys.append(("stride", stride))
        elif not isinstance(stride, int) and any(v != 1 for v in stride):
            keys.append(("stride", per_axis_text(stride)))
        pad = pad_text(kw.get("pad", (0,)))
        if pad:
            keys.append(("pad", pad))
        if any(v for v in kw.get("output_pad", (0,))):                # conv_transpose
            keys.append(("output_pad", per_axis_text(kw["output_pad"])))
        if any(v != 1 for v in kw.get("dilation", (1,))):
            keys.append(("dilation", per_axis_text(kw["dilation"])))
        if kw.get("groups", 1) != 1:
            keys.append(("groups", kw["groups"]))
        if not kw.get("bias", True):
            keys.append(("bias", False))
        if not kw.get("trainable", True):
            keys.append(("trainable", False))
        return call_text(op, [kw["filters"], Size(kw["kernel"])], keys)

    @staticmethod
    def torch_kwargs(cfg) -> dict:
        """torch.nn's keyword arguments of a convolution (padding where it is the same on both
        sides; the caller handles the other case)."""
        before, after = cfg["pad"][0::2], cfg["pad"][1::2]
        kwargs = {}
        if any(s != 1 for s in cfg["stride"]):
            kwargs["stride"] = squash(cfg["stride"])
        if before == after and any(before):
            kwargs["padding"] = squash(before)
        if before == after and any(cfg.get("output_pad", ())):
            kwargs["output_padding"] = squash(cfg["output_pad"])
        if any(d != 1 for d in cfg["dilation"]):
            kwargs["dilation"] = squash(cfg["dilation"])
        if cfg["groups"] != 1:
            kwargs["groups"] = cfg["groups"]
        if not cfg["bias"]:
            kwargs["bias"] = False
        return kwargs

    # torch.nn's class, the helper class for padding that differs between the sides, ONNX's operator
    torch_class, torch_helper, onnx_op = "Conv", "PadConv", "Conv"

    def uneven(self, cfg) -> dict:
        """The helper class's keyword arguments for padding that differs between the sides."""
        return {"pad": torch_pad(cfg["pad"])}

    def torch(self, node):
        cfg, rank = node["config"], spatial_of(node)
        kwargs = self.torch_kwargs(cfg)
        args = [node["input_shapes"][0][0], cfg["filters"], squash(cfg["kernel"])]
        if cfg["pad"][0::2] != cfg["pad"][1::2]:
            kwargs.update(self.uneven(cfg))
            return Ctor(f"{self.torch_helper}{rank}d", args, kwargs, helper=self.torch_helper)
        return Ctor(f"nn.{self.torch_class}{rank}d", args, kwargs)

    def to_onnx(self, b, name, node, xs):
        cfg = node["config"]
        inputs = [xs[0], b.param(name, "weight")] + ([b.param(name, "bias")] if cfg["bias"] else [])
        extra = {"output_padding": list(cfg["output_pad"])} if "output_pad" in cfg else {}
        return b.node(self.onnx_op, inputs, name, kernel_shape=list(cfg["kernel"]), strides=list(cfg["stride"]),
                      pads=onnx_pads(cfg["pad"]), dilations=list(cfg["dilation"]), group=cfg["groups"], **extra)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        w = imp.const(node, 1, "the weights")
        bias = imp.const(node, 2, "the bias") if imp.has_input(node, 2) else None
        rank = w.ndim - 2
        if rank not in (1, 2):
            raise imp.fail(node, f"a {rank}-D convolution (cnnspec has 1-D and 2-D)")
        imp.check_rank(node, x, rank)
        kernel = tuple(int(k) for k in w.shape[2:])
        if tuple(imp.attr(node, "kernel_shape", kernel)) != kernel:
            raise imp.fail(node, f"kernel_shape {imp.attr(node, 'kernel_shape')} differs from the weights' {kernel}")
        stride = tuple(imp.attr(node, "strides", (1,) * rank))
        dilation = tuple(imp.attr(node, "dilations", (1,) * rank))
        groups = int(imp.attr(node, "group", 1))
        x, pad = imp.window_pads(node, x, kernel, stride, dilation, fill=0.0)
        kwargs = {"filters": int(w.shape[0]), "kernel": Size(kernel), "stride": Size(stride), "pad": pad,
                  "dilation": Size(dilation), "groups": groups, "bias": bias is not None}
        params = {"weight": w}
        if bias is not None:
            params["bias"] = bias.reshape(-1)
        imp.layer("conv", kwargs, [x], node, params=params)


def pool_extra(n, k, s, before, after, ceil, always=False):
    """How much padding after the input ONNX's floor rule needs to give cnnspec's output size
    (None when ceil mode keeps no window that ONNX's shape rule would not, unless ``always``:
    the floor rule is then used on every axis, as soon as one axis needs it)."""
    out = output_size(n, k, s, before, after, 1, ceil)
    spec_ceil = 1 + -(-(n + before + after - k) // s)     # ONNX's ceil rule, without Caffe's drop
    if not always and (not ceil or spec_ceil == out):
        return None
    return max(0, (out - 1) * s + k - (n + before + after))


@register
class Pool(Kind):
    ops = ("maxpool", "avgpool", "sumpool")
    onnx_ops = ("MaxPool", "AveragePool")

    def text(self, op, kw):
        keys = []
        if tuple(kw["stride"]) != tuple(kw["kernel"]):
            keys.append(("stride", per_axis_text(kw["stride"])))
        pad = pad_text(kw.get("pad", (0,)))
        if pad:
            keys.append(("pad", pad))
        if kw.get("ceil"):
            keys.append(("ceil", True))
        return call_text(op, [Size(kw["kernel"])], keys)

    def torch(self, node):
        cfg, rank, op = node["config"], spatial_of(node), node["op"]
        kernel, stride, pad = cfg["kernel"], cfg["stride"], cfg["pad"]
        before, after = pad[0::2], pad[1::2]
        # sum pooling is never native: nn.AvgPool2d's divisor_override does not reach ONNX through
        # torch.onnx.export (it writes a plain AveragePool, an average)
        native = before == after and all(p <= k // 2 for p, k in zip(before, kernel)) and op != "sumpool"
        if not native:
            return Ctor("Pool", [op[:3], tuple(kernel), tuple(stride), tuple(pad)],
                        {"ceil": True} if cfg["ceil"] else {}, helper="Pool")
        kwargs = {}
        if tuple(stride) != tuple(kernel):
            kwargs["stride"] = squash(stride)
        if any(before):
            kwargs["padding"] = squash(before)
        if cfg["ceil"]:
            kwargs["ceil_mode"] = True
        cls = {"maxpool": "MaxPool", "avgpool": "AvgPool"}[op]
        return Ctor(f"nn.{cls}{rank}d", [squash(kernel)], kwargs)

    def to_onnx(self, b, name, node, xs):
        cfg, op = node["config"], node["op"]
        kernel, stride, pad = list(cfg["kernel"]), list(cfg["stride"]), list(cfg["pad"])
        sizes = node["input_shapes"][0][1:]
        rank = len(kernel)
        # ONNX's shape rule for ceil_mode lacks Caffe's "last window starts inside the input":
        # where the two differ, the window count is given by floor mode and explicit padding
        extra = [pool_extra(n, k, s, pad[2 * i], pad[2 * i + 1], cfg["ceil"])
                 for i, (n, k, s) in enumerate(zip(sizes, kernel, stride))]
        exact = all(e is None for e in extra)
        if not exact:               # floor mode on every axis: those that ceil mode widens too
            extra = [pool_extra(n, k, s, pad[2 * i], pad[2 * i + 1], cfg["ceil"], always=True)
                     for i, (n, k, s) in enumerate(zip(sizes, kernel, stride))]
        x = xs[0]
        pool_name = name if op != "sumpool" else f"{name}/avg"     # sumpool: average, then Mul
        if op == "maxpool":
            if exact:
                return b.node("MaxPool", [x], name, kernel_shape=kernel, strides=stride,
                              pads=onnx_pads(pad), ceil_mode=int(cfg["ceil"]))
            ends = [pad[2 * i + 1] + (e or 0) for i, e in enumerate(extra)]   # padding never wins a max
            return b.node("MaxPool", [x], name, kernel_shape=kernel, strides=stride,
                          pads=list(pad[0::2]) + ends, ceil_mode=0)
        if exact:
            y = b.node("AveragePool", [x], pool_name, kernel_shape=kernel, strides=stride,
                       pads=onnx_pads(pad), ceil_mode=int(cfg["ceil"]), count_include_pad=1)
        else:
            # zeros padded explicitly are counted; the windows past them are clipped (not counted)
            if any(pad):
                x = b.node("Pad", [x, b.const(f"{name}/pads", np.array(
                    [0, 0] + list(pad[0::2]) + [0, 0] + list(pad[1::2]), np.int64))], f"{name}/pad")
            y = b.node("AveragePool", [x], pool_name, kernel_shape=kernel, strides=stride,
                       pads=[0] * rank + [e or 0 for e in extra], ceil_mode=0, count_include_pad=0)
        if op == "avgpool":
            return y
        divisors = pool_divisors(node)                    # sum = average x the (clipped) window size
        return b.node("Mul", [y, b.const(f"{name}/window", divisors)], name)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        rank = len(imp.attr(node, "kernel_shape"))
        imp.check_rank(node, x, rank)
        if len(node.output) > 1 and imp.used(node.output[1]):
            raise imp.fail(node, "the indices output of MaxPool (max-unpooling is not a cnnspec layer)")
        kernel = tuple(int(k) for k in imp.attr(node, "kernel_shape"))
        stride = tuple(imp.attr(node, "strides", (1,) * rank))
        if any(d != 1 for d in imp.attr(node, "dilations", (1,) * rank)):
            raise imp.fail(node, "pooling with dilation (cnnspec pools have none)")
        ceil = bool(imp.attr(node, "ceil_mode", 0))
        is_max = node.op_type == "MaxPool"
        counted = bool(imp.attr(node, "count_include_pad", 0)) if not is_max else True
        explicit = x.pad                                   # a Pad node folded in: zeros, counted
        x, pad = imp.window_pads(node, x, kernel, stride, (1,) * rank, fill=-math.inf if is_max else 0.0)
        explicit = explicit if explicit is not None else (0,) * (2 * rank)
        own = tuple(p - e for p, e in zip(pad, explicit))   # the pool's own padding
        sizes = x.shape[1:]
        onnx_out = [output_size(n, k, s, pad[2 * i], pad[2 * i + 1], 1, ceil)
                    for i, (n, k, s) in enumerate(zip(sizes, kernel, stride))]
        op = "maxpool" if is_max else "avgpool"
        if not is_max and not counted and any(own):
            # ONNX does not count this padding: it can only be padding past the last window's
            # start, which ceil mode clips in cnnspec (what the ONNX export writes)
            if any(own[0::2]) or ceil:
                raise imp.fail(node, "AveragePool with count_include_pad=0 and padding (cnnspec's "
                                     "avgpool counts padded zeros, as PyTorch's default)")
            pad, ceil = explicit, True
        candidates = [(pad, ceil)]
        if is_max and not ceil:                            # padding past the last window: ceil mode
            candidates.append((tuple(v if i % 2 == 0 else min(v, k - 1) for i, (v, k) in
                                     enumerate(zip(pad, [k for k in kernel for _ in (0, 1)]))), True))
        for pad_c, ceil_c in candidates:
            out = [output_size(n, k, s, pad_c[2 * i], pad_c[2 * i + 1], 1, ceil_c)
                   for i, (n, k, s) in enumerate(zip(sizes, kernel, stride))]
            if out == onnx_out and all(max(pad_c[2 * i:2 * i + 2]) < k for i, k in enumerate(kernel)):
                kwargs = {"kernel": Size(kernel), "stride": Size(stride), "pad": pad_c, "ceil": ceil_c}
                imp.layer(op, kwargs, [x], node)
                return
        raise imp.fail(node, f"pooling with padding {list(pad)} and kernel {list(kernel)} "
                             "(cnnspec pools need padding smaller than the kernel)")


def pool_divisors(node) -> np.ndarray:
    """The window size of each output position of a pooling layer, clipped to the padded input
    (cnnspec's and PyTorch's avgpool divisor), shaped (1, 1, *output spatial)."""
    cfg = node["config"]
    sizes = node["input_shapes"][0][1:]
    outs = node["output_shape"][1:]
    per_axis = []
    for i, (n, k, s, o) in enumerate(zip(sizes, cfg["kernel"], cfg["stride"], outs)):
        start = np.arange(o) * s - cfg["pad"][2 * i]
        per_axis.append(np.minimum(start + k, n + cfg["pad"][2 * i + 1]) - start)
    grid = per_axis[0] if len(per_axis) == 1 else np.multiply.outer(per_axis[0], per_axis[1])
    return grid.reshape(1, 1, *outs).astype(np.float32)


@register
class GlobalPool(Kind):
    ops = ("globalavgpool", "globalmaxpool")
    onnx_ops = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax")

    def torch(self, node):
        rank = spatial_of(node)
        return Ctor(f"nn.Adaptive{'Avg' if node['op'] == 'globalavgpool' else 'Max'}Pool{rank}d", [1])

    def to_onnx(self, b, name, node, xs):
        return b.node("GlobalAveragePool" if node["op"] == "globalavgpool" else "GlobalMaxPool", [xs[0]], name)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        op = "globalavgpool" if node.op_type in ("GlobalAveragePool", "ReduceMean") else "globalmaxpool"
        if node.op_type.startswith("Global"):
            imp.check_rank(node, x, None)
            imp.layer(op, {}, [x], node)
            return
        # ReduceMean/ReduceMax over every spatial axis is global pooling (keepdims=0: then flatten)
        axes = imp.attr(node, "axes", None)
        if axes is None and imp.has_input(node, 1):
            axes = imp.const(node, 1, "the axes").reshape(-1).tolist()
        rank = len(x.shape) + 1
        axes = sorted(a % rank for a in (axes or []))
        if len(x.shape) < 2 or axes != list(range(2, rank)):
            raise imp.fail(node, f"{node.op_type} over axes {axes} of a {rank}-D tensor (cnnspec reads "
                                 "it as global pooling: the axes must be every spatial axis)")
        keep = bool(imp.attr(node, "keepdims", 1))
        y = imp.layer(op, {}, [x], node, out=None if not keep else node.output[0])
        if not keep:
            imp.layer("flatten", {}, [y], node)


@register
class Dense(Kind):
    ops = ("dense",)
    onnx_ops = ("Gemm", "MatMul")
    slots = ("units",)

    def text(self, op, kw):
        keys = [("bias", False)] if not kw.get("bias", True) else []
        if not kw.get("trainable", True):
            keys.append(("trainable", False))
        return call_text(op, [kw["units"]], keys)

    def torch(self, node):
        cfg = node["config"]
        return Ctor("nn.Linear", [node["input_shapes"][0][0], cfg["units"]], {} if cfg["bias"] else {"bias": False})

    def to_onnx(self, b, name, node, xs):
        inputs = [xs[0], b.param(name, "weight")] + ([b.param(name, "bias")] if node["config"]["bias"] else [])
        return b.node("Gemm", inputs, name, transB=1)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        if len(x.shape) != 1:
            raise imp.fail(node, f"{node.op_type} of a {fmt_shape(x.shape)} tensor per sample (cnnspec's "
                                 "dense takes a flat input: (batch, features))")
        if node.op_type == "MatMul":
            weight, bias, alpha, beta = imp.const(node, 1, "the weights"), None, 1.0, 1.0
        else:
            if imp.attr(node, "transA", 0):
                raise imp.fail(node, "Gemm with transA=1 (the batch must be the first axis)")
            weight = imp.const(node, 1, "the weights")
            if imp.attr(node, "transB", 0):
                weight = weight.T
            bias = imp.const(node, 2, "the bias") if imp.has_input(node, 2) else None
            alpha, beta = float(imp.attr(node, "alpha", 1.0)), float(imp.attr(node, "beta", 1.0))
        if weight.ndim != 2 or weight.shape[0] != x.shape[0]:
            raise imp.fail(node, f"weights of shape {fmt_shape(weight.shape)} for {x.shape[0]} input features")
        units = int(weight.shape[1])
        params = {"weight": np.ascontiguousarray(weight * alpha if alpha != 1 else weight)}
        if bias is not None:
            if bias.size not in (1, units):
                raise imp.fail(node, f"a bias of shape {fmt_shape(bias.shape)} for {units} outputs")
            params["bias"] = np.broadcast_to(bias.reshape(-1) * beta, (units,)).copy()
        imp.layer("dense", {"units": units, "bias": bias is not None}, [x], node, params=params)


@register
class Flatten(Kind):
    ops = ("flatten",)
    onnx_ops = ("Flatten", "Reshape", "Squeeze")

    def torch(self, node):
        return Ctor("nn.Flatten")

    def to_onnx(self, b, name, node, xs):
        return b.node("Flatten", [xs[0]], name, axis=1)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        size = math.prod(x.shape)
        if node.op_type == "Flatten":
            axis = int(imp.attr(node, "axis", 1)) % (len(x.shape) + 1)
            if axis != 1:
                raise imp.fail(node, f"Flatten with axis={axis} (cnnspec keeps the batch axis: axis=1)")
            target = (size,)
        elif node.op_type == "Squeeze":
            axes = imp.attr(node, "axes", None)
            if axes is None and imp.has_input(node, 1):
                axes = imp.const(node, 1, "the axes").reshape(-1).tolist()
            rank = len(x.shape) + 1
            axes = sorted(a % rank for a in axes) if axes is not None else [
                i + 1 for i, n in enumerate(x.shape) if n == 1]
            if 0 in axes or any(x.shape[a - 1] != 1 for a in axes):
                raise imp.fail(node, f"Squeeze of axes {axes} of a (batch, {fmt_shape(x.shape)}) tensor")
            target = tuple(n for i, n in enumerate(x.shape) if i + 1 not in axes)
        else:
            target = imp.reshape_target(node, x)
            if imp.reshape_pattern(node, x, target):
                return
        if target == (size,) and (node.op_type == "Flatten" or target != tuple(x.shape)):
            imp.layer("flatten", {}, [x], node)             # (a Flatten of a flat tensor stays a layer)
        elif target == tuple(x.shape):
            imp.alias(node.output[0], x)
        elif target == (size,):
            imp.layer("flatten", {}, [x], node)
        elif "reshape" in LAYERS:
            imp.layer("reshape", {"shape": Size(target) if len(target) > 1 else target[0]}, [x], node)
        else:
            raise imp.fail(node, f"a reshape of {fmt_shape(x.shape)} to {fmt_shape(target)} per sample "
                                 "(cnnspec reads a reshape to one axis as flatten)")


@register
class Dropout(Kind):
    ops = ("dropout",)
    onnx_ops = ("Dropout",)

    def text(self, op, kw):
        return call_text(op, [float(kw["p"])])

    def torch(self, node):
        return Ctor("nn.Dropout", [node["config"]["p"]])

    def to_onnx(self, b, name, node, xs):
        ratio = b.const(f"{name}/ratio", np.array(node["config"]["p"], np.float32))
        return b.node("Dropout", [xs[0], ratio], name)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        if imp.has_input(node, 2) and bool(imp.const(node, 2, "training_mode")):
            raise imp.fail(node, "Dropout in training mode (export the model in evaluation mode)")
        if len(node.output) > 1 and imp.used(node.output[1]):
            raise imp.fail(node, "the mask output of Dropout")
        p = float(imp.const(node, 1, "the ratio")) if imp.has_input(node, 1) else float(imp.attr(node, "ratio", 0.5))
        imp.layer("dropout", {"p": float(number_text(p))}, [x], node)


@register
class BatchNorm(Kind):
    ops = ("batchnorm",)
    onnx_ops = ("BatchNormalization",)

    def text(self, op, kw):
        keys = []
        if kw.get("eps", 1e-5) != 1e-5:
            keys.append(("eps", float(kw["eps"])))
        if kw.get("momentum", 0.1) != 0.1:
            keys.append(("momentum", float(kw["momentum"])))
        if not kw.get("trainable", True):
            keys.append(("trainable", False))
        return call_text(op, [], keys)

    def torch(self, node):
        cfg = node["config"]
        kwargs = {}
        if cfg["eps"] != 1e-5:
            kwargs["eps"] = cfg["eps"]
        if cfg["momentum"] != 0.1:
            kwargs["momentum"] = cfg["momentum"]
        return Ctor(f"nn.BatchNorm{2 if spatial_of(node) == 2 else 1}d", [node["input_shapes"][0][0]], kwargs)

    def to_onnx(self, b, name, node, xs):
        cfg = node["config"]
        inputs = [xs[0]] + [b.param(name, k) for k in ("weight", "bias", "running_mean", "running_var")]
        return b.node("BatchNormalization", inputs, name, epsilon=cfg["eps"], momentum=1.0 - cfg["momentum"])

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        if imp.attr(node, "training_mode", 0) or (len(node.output) > 1 and any(imp.used(o) for o in node.output[1:])):
            raise imp.fail(node, "BatchNormalization in training mode (export the model in evaluation mode)")
        arrays = [imp.const(node, i, what).reshape(-1) for i, what in
                  enumerate(("", "the scale", "the bias", "the running mean", "the running variance")) if i]
        channels = x.shape[0]
        if any(a.size != channels for a in arrays):
            raise imp.fail(node, f"statistics of {arrays[0].size} channels for {channels}")
        eps = float(number_text(imp.attr(node, "epsilon", 1e-5)))
        # ONNX keeps 1 - PyTorch's momentum in float32: 0.9f; round away the float32 error
        momentum = float(f"{round(1.0 - float(imp.attr(node, 'momentum', 0.9)), 7):.7g}")
        params = dict(zip(("weight", "bias"), arrays[:2]))
        state = dict(zip(("running_mean", "running_var"), arrays[2:]))
        imp.layer("batchnorm", {"eps": eps, "momentum": momentum}, [x], node, params=params, state=state)


@register
class Activation(Kind):
    ops = ("relu", "sigmoid", "tanh", "softmax", "identity", "leaky_relu")
    onnx_ops = ("Relu", "Sigmoid", "Tanh", "Softmax", "LeakyRelu")
    TORCH = {"relu": "nn.ReLU", "sigmoid": "nn.Sigmoid", "tanh": "nn.Tanh", "identity": "nn.Identity",
             "leaky_relu": "nn.LeakyReLU", "softmax": "nn.Softmax"}
    ONNX = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax",
            "identity": "Identity", "leaky_relu": "LeakyRelu"}

    def text(self, op, kw):
        if op == "leaky_relu" and float(kw.get("slope", 0.01)) != 0.01:
            return call_text(op, [float(kw["slope"])])
        return call_text(op)

    def torch(self, node):
        op = node["op"]
        if op == "softmax":
            return Ctor(self.TORCH[op], [], {"dim": 1})
        if op == "leaky_relu" and node["config"]["slope"] != 0.01:
            return Ctor(self.TORCH[op], [node["config"]["slope"]])
        return Ctor(self.TORCH[op])

    def to_onnx(self, b, name, node, xs):
        op = node["op"]
        attrs = {"axis": 1} if op == "softmax" else {"alpha": node["config"]["slope"]} if op == "leaky_relu" else {}
        return b.node(self.ONNX[op], [xs[0]], name, **attrs)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        op = {v: k for k, v in self.ONNX.items()}[node.op_type]
        kwargs = {}
        if op == "leaky_relu":
            kwargs["slope"] = float(number_text(imp.attr(node, "alpha", 0.01)))
        if op == "softmax":
            rank = len(x.shape) + 1
            axis = int(imp.attr(node, "axis", -1 if imp.opset >= 13 else 1)) % rank
            # before opset 13, Softmax ran over all the axes from `axis` on, flattened
            flattened = imp.opset < 13 and any(n != 1 for n in x.shape[1:])
            if axis != 1 or flattened:
                raise imp.fail(node, f"Softmax over axis {axis} of a (batch, {fmt_shape(x.shape)}) tensor "
                                     "(cnnspec's softmax runs over channels / features: axis 1)")
        imp.layer(op, kwargs, [x], node)


@register
class Add(Kind):
    ops = ("add",)
    onnx_ops = ("Add", "Sum")

    def torch(self, node):
        return None                                     # written in forward

    def torch_merge(self, node, operands):
        return " + ".join(operands)

    def to_onnx(self, b, name, node, xs):
        return b.node("Add" if len(xs) == 2 else "Sum", list(xs), name)

    def from_onnx(self, imp, node):
        tensors, consts = imp.split_operands(node)
        if imp.gelu_stage(node, tensors, consts):
            return
        if consts:
            if node.op_type != "Add" or len(tensors) != 1:
                raise imp.fail(node, "a sum with a constant (cnnspec reads Add of a constant as the bias "
                                     "of the Conv, MatMul or Gemm before it)")
            imp.fuse_bias(node, tensors[0], consts[0])
            return
        if len(tensors) == 1:                              # Sum of one input
            imp.alias(node.output[0], tensors[0])
            return
        imp.layer("add", {}, tensors, node)


@register
class Concat(Kind):
    ops = ("concat",)
    onnx_ops = ("Concat",)

    def torch(self, node):
        return None

    def torch_merge(self, node, operands):
        return f"torch.cat([{', '.join(operands)}], dim=1)"

    def to_onnx(self, b, name, node, xs):
        return b.node("Concat", list(xs), name, axis=1)

    def from_onnx(self, imp, node):
        tensors, consts = imp.split_operands(node)
        rank = len(tensors[0].shape) + 1 if tensors else 0
        if consts or int(imp.attr(node, "axis", 1)) % max(rank, 1) != 1:
            raise imp.fail(node, "Concat of constants or along another axis than channels (axis 1)")
        if len(tensors) == 1:
            imp.alias(node.output[0], tensors[0])
            return
        imp.layer("concat", {}, tensors, node)


# the layers of dsl.md §10, where the layer catalogue has them
from cnnspec.interop import modern  # noqa: E402  (registers its entries)

HELPERS.update(modern.HELPERS)


def kind(op: str) -> Kind:
    """The translation of the layer kind ``op``."""
    try:
        return KINDS[op]
    except KeyError:
        from cnnspec.errors import CnnSpecError
        raise CnnSpecError(f"layer kind `{op}` has no translation to PyTorch or ONNX yet") from None


def missing_kinds() -> list:
    """Layer kinds of the catalogue without an entry here (a test keeps this empty)."""
    return sorted(op for op in LAYERS if op not in KINDS)
