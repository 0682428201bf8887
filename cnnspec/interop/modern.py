"""The translation table's entries for the layers of dsl.md §10 (registered in ``table``'s tables
by importing this module): transposed convolution, upsampling, reshape, mul, the modern
activations, adaptive pooling, channel slices and shuffles, droppath and the VAE's sample.

Some have no ONNX operator of their own: adaptive pooling to sizes that do not divide the input
is written as slices and reductions, droppath (the identity at inference) as ``Identity``, sample
(``mu`` at inference) as ``mu + 0*logvar`` (so that the log-variance head stays in the graph).
Their nodes carry the layer's kind and arguments in their metadata (``cnnspec.layer``), which
``cnnspec import`` reads back for files cnnspec wrote.
"""
from __future__ import annotations

import numpy as np

from cnnspec.interop.table import (Conv, Ctor, Kind, call_text, cnn_pads, number_text, onnx_pads,
                                   per_axis_text, register, spatial_of, squash)
from cnnspec.layers.values import Size

HELPERS = {
    "CropConvTranspose": '''
class CropConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d whose output is cropped by pad = (left, right), which may differ between
    the sides, then extended with zeros by output_pad (cnnspec's conv_transpose)."""

    def __init__(self, *args, pad, output_pad, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad, self.output_pad = pad, output_pad

    def forward(self, x):
        return crop_transposed(self, F.conv_transpose1d, x)


class CropConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d whose output is cropped by pad = (top, bottom, left, right), which may
    differ between the sides, then extended with zeros by output_pad (cnnspec's conv_transpose)."""

    def __init__(self, *args, pad, output_pad, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad, self.output_pad = pad, output_pad

    def forward(self, x):
        return crop_transposed(self, F.conv_transpose2d, x)


def crop_transposed(layer, conv, x):
    """The full transposed convolution, rows [before, before + out) of it per axis (zeros past its
    end), then the bias."""
    y = conv(x, layer.weight, None, layer.stride, 0, 0, layer.groups, layer.dilation)
    index, extend = [..., ], []
    for i, (n, extra) in enumerate(zip(y.shape[2:], layer.output_pad)):
        before, after = layer.pad[2 * i], layer.pad[2 * i + 1]
        out = n - before - after + extra
        index.append(slice(before, before + out))
        extend.append(max(0, before + out - n))
    y = y[tuple(index)]
    y = F.pad(y, [v for e in reversed(extend) for v in (0, e)])
    return y if layer.bias is None else y + layer.bias.view(1, -1, *[1] * (y.dim() - 2))
''',
    "ChannelShuffle": '''
class ChannelShuffle(nn.Module):
    """nn.ChannelShuffle (the channels in groups, read group by group across), written with
    unflatten, transpose and flatten: torch.onnx.export's TorchScript exporter has no
    aten::channel_shuffle, and every exporter writes these."""

    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)
''',
    "Reshape": '''
class Reshape(nn.Module):
    """The same values in another shape, per sample (cnnspec's reshape)."""

    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def extra_repr(self):
        return ", ".join(map(str, self.shape))

    def forward(self, x):
        return x.reshape(len(x), *self.shape)
''',
    "Channels": '''
class Channels(nn.Module):
    """The channel slice [start, stop) (cnnspec's channels)."""

    def __init__(self, start, stop):
        super().__init__()
        self.start, self.stop = start, stop

    def extra_repr(self):
        return f"{self.start}, {self.stop}"

    def forward(self, x):
        return x[:, self.start:self.stop]
''',
    "DropPath": '''
class DropPath(nn.Module):
    """Stochastic depth: in training each sample's whole input is zeroed with probability p and
    the others scaled by 1/(1-p); the identity in evaluation (cnnspec's droppath)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand((len(x),) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device) >= self.p
        return x * keep / (1 - self.p)
''',
    "Sample": '''
class Sample(nn.Module):
    """The VAE's reparameterisation: mu + exp(logvar/2)*eps (eps ~ N(0, 1)) in training, mu in
    evaluation. In training it keeps self.kl = beta * KL(N(mu, sigma^2) || N(0, 1)), summed over
    features and averaged over the batch: add it to the loss (cnnspec's sample does)."""

    def __init__(self, beta=1.0):
        super().__init__()
        self.beta = beta
        self.kl = None

    def forward(self, mu, logvar):
        if not self.training:
            return mu
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
        self.kl = self.beta * kl.reshape(len(kl), -1).sum(dim=1).mean()
        return mu + torch.exp(logvar / 2) * torch.randn_like(mu)
''',
}


@register
class ConvTranspose(Conv):
    ops = ("conv_transpose",)
    onnx_ops = ("ConvTranspose",)

    torch_class, torch_helper, onnx_op = "ConvTranspose", "CropConvTranspose", "ConvTranspose"

    def uneven(self, cfg) -> dict:
        return {"pad": tuple(cfg["pad"]), "output_pad": tuple(cfg["output_pad"])}

    def to_onnx(self, b, name, node, xs):
        """ONNX Runtime takes an output_padding smaller than the stride only (PyTorch: than the
        stride or the dilation). output_pad first gives back rows the end padding crops (the same
        values); what still reaches past the full output, by the stride or more, is zeros padded
        after a ConvTranspose without bias, then the bias added."""
        cfg = node["config"]
        pad, extra = list(cfg["pad"]), list(cfg["output_pad"])
        for i, e in enumerate(extra):
            given = min(e, pad[2 * i + 1])
            pad[2 * i + 1] -= given
            extra[i] -= given
        zeros = [e if e >= s else 0 for e, s in zip(extra, cfg["stride"])]
        extra = [e - z for e, z in zip(extra, zeros)]
        attrs = dict(kernel_shape=list(cfg["kernel"]), strides=list(cfg["stride"]), pads=onnx_pads(pad),
                     dilations=list(cfg["dilation"]), group=cfg["groups"], output_padding=extra)
        weights = [xs[0], b.param(name, "weight")]
        if not any(zeros):
            bias = [b.param(name, "bias")] if cfg["bias"] else []
            return b.node("ConvTranspose", weights + bias, name, **attrs)
        y = b.node("ConvTranspose", weights, f"{name}/conv", **attrs)
        y = b.node("Pad", [y, b.const(f"{name}/pads", np.array([0, 0] + [0] * len(zeros) + [0, 0] + zeros, np.int64))],
                   name if not cfg["bias"] else f"{name}/pad")
        if not cfg["bias"]:
            return y
        bias = b.arrays[f"{name}.bias"].astype(np.float32).reshape(-1, *([1] * len(zeros)))
        return b.node("Add", [y, b.const(f"{name}.bias", bias)], name)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        w = imp.const(node, 1, "the weights")
        bias = imp.const(node, 2, "the bias") if imp.has_input(node, 2) else None
        rank = w.ndim - 2
        imp.check_rank(node, x, rank)
        if imp.attr(node, "output_shape") is not None or imp.attr(node, "auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise imp.fail(node, "ConvTranspose with output_shape or auto_pad (give pads and output_padding)")
        groups = int(imp.attr(node, "group", 1))
        kwargs = {"filters": int(w.shape[1]) * groups, "kernel": Size(int(k) for k in w.shape[2:]),
                  "stride": Size(imp.attr(node, "strides", (1,) * rank)),
                  "pad": cnn_pads(imp.attr(node, "pads", [0] * (2 * rank))),
                  "output_pad": Size(imp.attr(node, "output_padding", (0,) * rank)),
                  "dilation": Size(imp.attr(node, "dilations", (1,) * rank)), "groups": groups,
                  "bias": bias is not None}
        params = {"weight": w}
        if bias is not None:
            params["bias"] = bias.reshape(-1)
        imp.layer("conv_transpose", kwargs, [x], node, params=params)


@register
class Upsample(Kind):
    ops = ("upsample",)
    onnx_ops = ("Resize", "Upsample")

    def text(self, op, kw):
        scale = kw.get("scale", (2,))
        keys = [("mode", kw["mode"])] if kw.get("mode", "nearest") != "nearest" else []
        return call_text(op, [per_axis_text(scale)] if tuple(scale) != (2,) * len(scale) or keys else [], keys)

    def torch(self, node):
        cfg = node["config"]
        scale = squash(cfg["scale"])
        scale = float(scale) if isinstance(scale, int) else tuple(float(s) for s in scale)
        kwargs = {"scale_factor": scale, "mode": cfg["mode"]}
        if cfg["mode"] != "nearest":
            kwargs["align_corners"] = False
        return Ctor("nn.Upsample", [], kwargs)

    def to_onnx(self, b, name, node, xs):
        cfg = node["config"]
        scales = b.const(f"{name}/scales", np.array([1.0, 1.0, *cfg["scale"]], np.float32))
        if cfg["mode"] == "nearest":                    # PyTorch's nearest: floor(o / scale)
            attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        else:                                           # align_corners=False
            attrs = dict(mode="linear", coordinate_transformation_mode="half_pixel")
        return b.node("Resize", [xs[0], "", scales], name, **attrs)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        rank = len(x.shape) - 1
        if node.op_type == "Upsample" or imp.opset < 11:
            scales = imp.const(node, 1, "the scales") if imp.has_input(node, 1) else np.array(imp.attr(node, "scales"))
            coordinates, nearest = "asymmetric", "floor"
        else:
            scales = imp.const(node, 2, "the scales") if imp.has_input(node, 2) else None
            if scales is None or scales.size == 0:
                from cnnspec.interop.onnx_import import BATCH
                sizes = imp.consts.get(node.input[3]) if imp.has_input(node, 3) else None
                if sizes is not None and sizes.dtype == object and sizes.size and sizes.reshape(-1)[0] is BATCH \
                        and not any(v is BATCH for v in sizes.reshape(-1)[1:]):
                    # F.interpolate(x, size=...) with the batch read from x.shape: (N, C, H', W')
                    sizes = np.array([1, *sizes.reshape(-1)[1:]], dtype=object)
                else:
                    sizes = imp.const(node, 3, "the sizes")
                sizes = sizes.reshape(-1).astype(np.float64)
                scales = sizes / np.array([1, x.shape[0], *x.shape[1:]], np.float64)
                scales[0] = 1.0
            coordinates = imp.attr(node, "coordinate_transformation_mode", "half_pixel")
            nearest = imp.attr(node, "nearest_mode", "round_prefer_floor")
        scales = [float(s) for s in np.reshape(scales, -1)]
        mode = imp.attr(node, "mode", "nearest")
        per_axis = scales[2:]
        if len(scales) != rank + 2 or scales[:2] != [1.0, 1.0] or any(s != int(s) or s < 1 for s in per_axis):
            raise imp.fail(node, f"a {node.op_type} by {scales} (cnnspec's upsample scales the spatial axes "
                                 "by whole numbers)")
        if mode == "nearest":
            # for a whole-number scale these all pick input floor(o / scale)
            ok = (coordinates == "asymmetric" and nearest == "floor") or (
                coordinates in ("half_pixel", "pytorch_half_pixel") and nearest in ("round_prefer_floor",
                                                                                     "round_prefer_ceil"))
            kind = "nearest"
        elif mode == "linear":
            ok, kind = coordinates in ("half_pixel", "pytorch_half_pixel"), "bilinear" if rank == 2 else "linear"
        else:
            ok, kind = False, mode
        if not ok:
            raise imp.fail(node, f"{node.op_type} with mode={mode}, coordinate_transformation_mode={coordinates}"
                                 + (f", nearest_mode={nearest}" if mode == "nearest" else "")
                                 + " (cnnspec's upsample is PyTorch's nearest, or (bi)linear with align_corners=False)")
        imp.layer("upsample", {"scale": Size(int(s) for s in per_axis), "mode": kind}, [x], node)


@register
class Reshape(Kind):
    ops = ("reshape",)
    opaque = True                         # a Reshape to one axis would read back as flatten

    def text(self, op, kw):
        shape = kw["shape"]
        return call_text(op, [Size(shape) if len(shape) > 1 else shape[0]])

    def torch(self, node):
        shape = tuple(node["config"]["shape"])
        if len(node["input_shapes"][0]) == 1 and len(shape) > 1:
            return Ctor("nn.Unflatten", [1, shape])
        if len(shape) == 1:
            return Ctor("nn.Flatten")
        return Ctor("Reshape", list(shape), helper="Reshape")

    def to_onnx(self, b, name, node, xs):
        shape = b.const(f"{name}/shape", np.array([0, *node["config"]["shape"]], np.int64))  # 0: the batch
        return b.node("Reshape", [xs[0], shape], name)

    def from_cnnspec(self, imp, node, config, inputs):
        shape = tuple(config["shape"])
        imp.layer("reshape", {"shape": Size(shape) if len(shape) > 1 else shape[0]}, inputs, node)


@register
class Mul(Kind):
    ops = ("mul",)

    def torch(self, node):
        return None

    def torch_merge(self, node, operands):
        full = len(node["output_shape"])
        terms = []
        for value, shape in zip(operands, node["input_shapes"]):
            missing = full - len(shape)             # a flat gate C on CxHxW: view it as Cx1x1
            terms.append(value + ("[:, :" + ", None" * missing + "]" if missing else ""))
        return " * ".join(terms)

    def to_onnx(self, b, name, node, xs):
        full = len(node["output_shape"])
        operands = []
        for i, (x, shape) in enumerate(zip(xs, node["input_shapes"])):
            if len(shape) < full:
                axes = b.const(f"{name}/axes{i}", np.arange(len(shape) + 1, full + 1, dtype=np.int64))
                x = b.node("Unsqueeze", [x, axes], f"{name}/gate{i}")
            operands.append(x)
        out = operands[0]
        for i, x in enumerate(operands[1:], 1):
            last = i == len(operands) - 1
            out = b.node("Mul", [out, x], name if last else f"{name}/mul{i}")
        return out


class Simple(Kind):
    """An element-wise activation: one torch.nn module, one ONNX operator (or a short formula)."""
    TORCH = {"relu6": "nn.ReLU6", "hardswish": "nn.Hardswish", "hardsigmoid": "nn.Hardsigmoid",
             "silu": "nn.SiLU", "gelu": "nn.GELU", "softplus": "nn.Softplus", "elu": "nn.ELU"}


@register
class Activation10(Simple):
    ops = tuple(Simple.TORCH)
    onnx_ops = ("Clip", "HardSwish", "HardSigmoid", "Gelu", "Softplus", "Elu")

    def text(self, op, kw):
        if op == "elu" and float(kw.get("alpha", 1.0)) != 1.0:
            return call_text(op, [float(kw["alpha"])])
        return call_text(op)

    def torch(self, node):
        op = node["op"]
        if op == "elu" and node["config"]["alpha"] != 1.0:
            return Ctor("nn.ELU", [node["config"]["alpha"]])
        return Ctor(self.TORCH[op])

    def to_onnx(self, b, name, node, xs):
        op, x = node["op"], xs[0]
        if op == "relu6":
            return b.node("Clip", [x, b.const(f"{name}/min", np.array(0, np.float32)),
                                   b.const(f"{name}/max", np.array(6, np.float32))], name)
        if op == "silu":                                # x * sigmoid(x): no ONNX operator before opset 24
            return b.node("Mul", [x, b.node("Sigmoid", [x], f"{name}/sigmoid")], name)
        if op == "hardsigmoid":                         # relu6(x + 3) / 6, as PyTorch
            return b.node("HardSigmoid", [x], name, alpha=1 / 6, beta=0.5)
        if op == "gelu":
            return b.node("Gelu", [x], name, approximate="none")
        if op == "elu":
            return b.node("Elu", [x], name, alpha=node["config"]["alpha"])
        return b.node({"hardswish": "HardSwish", "softplus": "Softplus"}[op], [x], name)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        kind, kwargs = {"HardSwish": "hardswish", "Gelu": "gelu", "Softplus": "softplus", "Elu": "elu",
                        "HardSigmoid": "hardsigmoid", "Clip": None}[node.op_type], {}
        if node.op_type == "Clip":
            if imp.opset < 11:
                low, high = imp.attr(node, "min", None), imp.attr(node, "max", None)
            else:
                low = float(imp.const(node, 1, "the minimum")) if imp.has_input(node, 1) else None
                high = float(imp.const(node, 2, "the maximum")) if imp.has_input(node, 2) else None
            if (low, high) == (0.0, 6.0):
                kind = "relu6"
            elif (low, high) == (0.0, None):
                kind = "relu"
            else:
                raise imp.fail(node, f"Clip to [{low}, {high}] (cnnspec reads [0, 6] as relu6, [0, inf) as relu)")
        elif node.op_type == "HardSigmoid":
            alpha, beta = float(imp.attr(node, "alpha", 0.2)), float(imp.attr(node, "beta", 0.5))
            if abs(alpha - 1 / 6) > 1e-6 or beta != 0.5:
                raise imp.fail(node, f"HardSigmoid with alpha={alpha:g}, beta={beta:g} (cnnspec's hardsigmoid is "
                                     "PyTorch's: alpha=1/6, beta=0.5)")
        elif node.op_type == "Gelu" and imp.attr(node, "approximate", "none") != "none":
            raise imp.fail(node, "Gelu with the tanh approximation (cnnspec's gelu is the exact one, with erf)")
        elif node.op_type == "Elu":
            kwargs["alpha"] = float(number_text(imp.attr(node, "alpha", 1.0)))
        imp.layer(kind, kwargs, [x], node)


@register
class AdaptivePool(Kind):
    ops = ("adaptiveavgpool", "adaptivemaxpool")
    opaque = True                         # an AveragePool would read back as avgpool

    def text(self, op, kw):
        size = kw["size"]
        return call_text(op, [size if isinstance(size, int) else Size(size) if len(size) > 1 else size[0]])

    def torch(self, node):
        cls = "AdaptiveAvgPool" if node["op"] == "adaptiveavgpool" else "AdaptiveMaxPool"
        return Ctor(f"nn.{cls}{spatial_of(node)}d", [squash(node["config"]["size"])])

    def to_onnx(self, b, name, node, xs):
        avg = node["op"] == "adaptiveavgpool"
        sizes, outs = node["input_shapes"][0][1:], node["config"]["size"]
        if all(m == 1 for m in outs):
            return b.node("GlobalAveragePool" if avg else "GlobalMaxPool", [xs[0]], name)
        if all(n % m == 0 for n, m in zip(sizes, outs)):
            kernel = [n // m for n, m in zip(sizes, outs)]
            return b.node("AveragePool" if avg else "MaxPool", [xs[0]], name, kernel_shape=kernel, strides=kernel)
        # PyTorch's windows [floor(i*n/m), ceil((i+1)*n/m)) per axis: pooling is separable, so
        # slice and reduce one axis after the other
        x = xs[0]
        for axis, (n, m) in enumerate(zip(sizes, outs), start=2):
            if n == m:
                continue
            last = all(nn == mm for nn, mm in zip(sizes[axis - 1:], outs[axis - 1:]))
            parts = []
            for i in range(m):
                start, end = (i * n) // m, -(-((i + 1) * n) // m)
                part = b.node("Slice", [x, b.const(f"{name}/a{axis}s{i}", np.array([start], np.int64)),
                                        b.const(f"{name}/a{axis}e{i}", np.array([end], np.int64)),
                                        b.const(f"{name}/axis{axis}", np.array([axis], np.int64))],
                              f"{name}/a{axis}slice{i}")
                parts.append(b.node("ReduceMean" if avg else "ReduceMax",
                                    [part, b.const(f"{name}/axis{axis}", np.array([axis], np.int64))],
                                    f"{name}/a{axis}pool{i}", keepdims=1))
            x = b.node("Concat", parts, name if last else f"{name}/a{axis}", axis=axis)
        return x

    def from_cnnspec(self, imp, node, config, inputs):
        size = tuple(config["size"])
        imp.layer(config["op"], {"size": Size(size) if len(size) > 1 else size[0]}, inputs, node)


@register
class Channels(Kind):
    ops = ("channels",)
    onnx_ops = ("Slice", "Split")
    slots = ("start", "stop")

    def text(self, op, kw):
        return call_text(op, [kw["start"], kw["stop"]])

    def torch(self, node):
        return Ctor("Channels", [node["config"]["start"], node["config"]["stop"]], helper="Channels")

    def to_onnx(self, b, name, node, xs):
        cfg = node["config"]
        return b.node("Slice", [xs[0], b.const(f"{name}/start", np.array([cfg["start"]], np.int64)),
                                b.const(f"{name}/stop", np.array([cfg["stop"]], np.int64)),
                                b.const(f"{name}/axis", np.array([1], np.int64))], name)

    def from_onnx(self, imp, node):
        x = imp.tensor(node, 0)
        rank = len(x.shape) + 1
        channels = x.shape[0]
        if node.op_type == "Split":
            axis = int(imp.attr(node, "axis", 0)) % rank
            if imp.has_input(node, 1):
                sizes = [int(v) for v in imp.const(node, 1, "the split").reshape(-1)]
            elif imp.attr(node, "split") is not None:
                sizes = [int(v) for v in imp.attr(node, "split")]
            else:
                k = len(node.output)
                sizes = [-(-channels // k)] * (k - 1) + [channels - (k - 1) * -(-channels // k)]
            if axis != 1 or sum(sizes) != channels:
                raise imp.fail(node, f"Split along axis {axis} into {sizes} (cnnspec slices channels: axis 1)")
            start = 0
            for size, out in zip(sizes, node.output):
                imp.layer("channels", {"start": start, "stop": start + size}, [x], node, out=out)
                start += size
            return
        starts, ends = (imp.const(node, i, what).reshape(-1) for i, what in ((1, "the starts"), (2, "the ends")))
        axes = imp.const(node, 3, "the axes").reshape(-1) if imp.has_input(node, 3) else np.arange(len(starts))
        steps = imp.const(node, 4, "the steps").reshape(-1) if imp.has_input(node, 4) else np.ones(len(starts))
        if len(starts) != 1 or int(axes[0]) % rank != 1 or int(steps[0]) != 1:
            raise imp.fail(node, "a Slice of other axes than channels (axis 1, step 1)")
        start, stop = (int(v) for v in (starts[0], ends[0]))
        start, stop = (v + channels if v < 0 else v for v in (start, stop))
        start, stop = max(0, min(start, channels)), max(0, min(stop, channels))
        if start == 0 and stop == channels:
            imp.alias(node.output[0], x)
            return
        imp.layer("channels", {"start": start, "stop": stop}, [x], node)


@register
class Shuffle(Kind):
    ops = ("shuffle",)

    def text(self, op, kw):
        return call_text(op, [kw["groups"]])

    def torch(self, node):
        return Ctor("ChannelShuffle", [node["config"]["groups"]], helper="ChannelShuffle")

    def to_onnx(self, b, name, node, xs):
        shape = node["input_shapes"][0]
        g = node["config"]["groups"]
        view = b.node("Reshape", [xs[0], b.const(f"{name}/groups", np.array([0, g, shape[0] // g, *shape[1:]],
                                                                             np.int64))], f"{name}/view")
        perm = [0, 2, 1] + list(range(3, len(shape) + 2))
        swapped = b.node("Transpose", [view], f"{name}/transpose", perm=perm)
        return b.node("Reshape", [swapped, b.const(f"{name}/shape", np.array([0, *shape], np.int64))], name)


@register
class DropPath(Kind):
    ops = ("droppath",)
    opaque = True

    def text(self, op, kw):
        return call_text(op, [float(kw["p"])])

    def torch(self, node):
        return Ctor("DropPath", [node["config"]["p"]], helper="DropPath")

    def to_onnx(self, b, name, node, xs):
        return b.node("Identity", [xs[0]], name)            # the identity at inference

    def from_cnnspec(self, imp, node, config, inputs):
        imp.layer("droppath", {"p": config["p"]}, inputs, node)


@register
class Sample(Kind):
    ops = ("sample",)
    opaque = True

    def text(self, op, kw):
        beta = float(kw.get("beta", 1.0))
        return call_text(op, [], [("beta", beta)] if beta != 1.0 else [])

    def torch(self, node):
        beta = node["config"]["beta"]
        return Ctor("Sample", [beta] if beta != 1.0 else [], helper="Sample")

    def to_onnx(self, b, name, node, xs):
        mu, logvar = xs                                     # mu at inference; logvar kept in the graph
        zero = b.node("Mul", [logvar, b.const(f"{name}/zero", np.array(0, np.float32))], f"{name}/logvar")
        return b.node("Add", [mu, zero], name)

    def from_cnnspec(self, imp, node, config, inputs):
        imp.layer("sample", {"beta": config["beta"]}, inputs, node)
