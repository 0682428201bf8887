"""Convolution (cross-correlation, as every framework computes it), 1-D or 2-D by input rank."""
from __future__ import annotations

import math

from cnnspec.errors import nearest
from cnnspec.layers.base import (REQUIRED, Layer, LayerError, as_bool, as_int, fmt_shape, output_size,
                                 padding, spatial, spatial_rank)

# The lectures' classic 3x3 kernels (rows top to bottom), usable as `weights=NAME`.
NAMED_KERNELS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "edge_diag": [[1, 0, -1], [0, 0, 0], [-1, 0, 1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "laplacian8": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "box_blur": [[1 / 9] * 3] * 3,
    "gaussian_blur": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "vertical_line": [[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]],
    "horizontal_line": [[-1, -1, -1], [1, 1, 1], [-1, -1, -1]],
    "corner": [[-1, -1, -1], [-1, 1, 1], [-1, 1, 1]],
    "cross": [[-1, 1, -1], [1, 1, 1], [-1, 1, -1]],
    "x_shape": [[1, -1, 1], [-1, 1, -1], [1, -1, 1]],
}


def window_terms(cfg) -> list:
    """(span, stride, offset) per spatial axis, for the receptive field: dilation*(kernel-1),
    the stride and the padding before; and, when the dilation is above 1, the step between the
    taps (the positions read)."""
    dilation = cfg.get("dilation", (1,) * len(cfg["kernel"]))
    return [(d * (k - 1), s, cfg["pad"][2 * i]) + ((d,) if d > 1 else ())
            for i, (k, s, d) in enumerate(zip(cfg["kernel"], cfg["stride"], dilation))]


def sliding_output(op, cfg, shape, ceil=False) -> tuple:
    """Spatial output sizes of a sliding window; an output below 1 is an error with the terms."""
    sizes = []
    dilation = cfg.get("dilation", (1,) * len(cfg["kernel"]))
    for i, (n, k, s, d) in enumerate(zip(shape[1:], cfg["kernel"], cfg["stride"], dilation)):
        before, after = cfg["pad"][2 * i], cfg["pad"][2 * i + 1]
        out = output_size(n, k, s, before, after, d, ceil)
        if out < 1:
            axis = ("length", ) if len(shape) == 2 else ("height", "width")
            dil = f" - {d}*({k}-1)" if d != 1 else f" - ({k}-1)"
            raise LayerError(
                f"`{op}` output {axis[i]} would be {out} (below 1): input {axis[i]} {n}, "
                f"out = 1 + {'ceil' if ceil else 'floor'}(({n} + {before} + {after}{dil} - 1) / {s})",
                hint="use a smaller kernel or stride, or pad the input")
        sizes.append(out)
    return tuple(sizes)


class Conv(Layer):
    op = "conv"
    params = {"filters": REQUIRED, "kernel": REQUIRED, "stride": 1, "pad": 0, "dilation": 1,
              "groups": 1, "bias": True, "trainable": True, "weights": None}
    n_positional = 2
    min_rank = 1
    example = "conv(16, 3x3)"

    def resolve(self, v, at, in_shapes):
        shape = in_shapes[0]
        cfg = filter_arguments(v, at, shape)
        cfg["pad"] = padding(v["pad"], len(cfg["kernel"]), cfg["kernel"], cfg["stride"], cfg["dilation"], shape[1:],
                             at["pad"])
        cfg["weights"] = None
        if v["weights"] is not None:
            cfg["weights"] = fixed_weights(v["weights"], (cfg["filters"], shape[0] // cfg["groups"], *cfg["kernel"]),
                                           at["weights"])
        return cfg

    def output_shape(self, cfg, in_shapes):
        return (cfg["filters"], *sliding_output(self.op, cfg, in_shapes[0]))

    def param_shapes(self, cfg, in_shapes):
        shapes = {"weight": (cfg["filters"], in_shapes[0][0] // cfg["groups"], *cfg["kernel"])}
        if cfg["bias"]:
            shapes["bias"] = (cfg["filters"],)
        return shapes

    def macs(self, cfg, in_shapes, out_shape):
        per_output = in_shapes[0][0] // cfg["groups"] * math.prod(cfg["kernel"])
        return math.prod(out_shape) * per_output

    def window(self, cfg, in_shapes):
        return window_terms(cfg)

    def describe(self, cfg):
        text = describe_filters(cfg)
        if cfg["weights"] is not None:
            text += ", fixed weights" if not cfg["trainable"] else ", initial weights"
        elif not cfg["trainable"]:
            text += ", frozen"
        return text


def filter_arguments(v, at, shape) -> dict:
    """The arguments conv and conv_transpose share, checked against the input ``shape``: filters,
    kernel, stride, dilation, groups (dividing the channels and the filters), bias, trainable."""
    rank = spatial_rank(shape)
    channels = shape[0]
    filters = as_int(v["filters"], "filters", at["filters"])
    groups = as_int(v["groups"], "groups", at["groups"])
    if channels % groups or filters % groups:
        raise LayerError(f"groups={groups} must divide both the input channels ({channels}) "
                         f"and the filters ({filters})", arg=at["groups"])
    return {"filters": filters, "kernel": spatial(v["kernel"], rank, "kernel", at["kernel"]),
            "stride": spatial(v["stride"], rank, "stride", at["stride"]),
            "dilation": spatial(v["dilation"], rank, "dilation", at["dilation"]), "groups": groups,
            "bias": as_bool(v["bias"], "bias", at["bias"]),
            "trainable": as_bool(v["trainable"], "trainable", at["trainable"])}


def describe_filters(cfg, extra=()) -> str:
    """``16, 3x3, stride 2x2, pad 1, ...``: the arguments that differ from their defaults."""
    text = f"{cfg['filters']}, {fmt_shape(cfg['kernel'])}"
    if any(s != 1 for s in cfg["stride"]):
        text += f", stride {fmt_shape(cfg['stride'])}"
    if any(cfg["pad"]):
        text += f", pad {_pad_text(cfg['pad'])}"
    for key in extra:
        if any(cfg[key]):
            text += f", {key} {fmt_shape(cfg[key])}"
    if any(d != 1 for d in cfg["dilation"]):
        text += f", dilation {fmt_shape(cfg['dilation'])}"
    if cfg["groups"] != 1:
        text += f", groups {cfg['groups']}"
    return text


def _pad_text(pad) -> str:
    pairs = list(zip(pad[::2], pad[1::2]))
    if all(a == b for a, b in pairs):
        return "x".join(str(a) for a, _ in pairs) if len(set(pairs)) > 1 else str(pairs[0][0])
    return "(" + ", ".join(str(p) for p in pad) + ")"


def fixed_weights(value, shape, arg):
    """``weights=``: a named kernel, a list of named kernels (one filter each, applied to every
    input channel alike), or nested numbers: one filter ([kh][kw]), one per filter
    ([F][kh][kw], every channel alike) or the full [F][C][kh][kw]."""
    import numpy as np      # only here: analysis of networks without fixed weights skips numpy

    filters, channels, *kernel = shape

    def kernel_array(item):
        if isinstance(item, str):
            if item not in NAMED_KERNELS:
                guess = nearest(item, NAMED_KERNELS)
                raise LayerError(f"unknown kernel `{item}`", arg=arg,
                                 hint=f"did you mean `{guess}`?" if guess else
                                 "named kernels: " + ", ".join(NAMED_KERNELS))
            item = NAMED_KERNELS[item]
        try:
            array = np.array(item, dtype=np.float64)
        except (ValueError, TypeError):
            raise LayerError("weights must be numbers in nested lists of equal lengths", arg=arg) from None
        if array.dtype == object or not np.all(np.isfinite(array)):
            raise LayerError("weights must be finite numbers in nested lists of equal lengths", arg=arg)
        return array

    if isinstance(value, list) and value and any(isinstance(item, str) for item in value):
        array = np.stack([kernel_array(item) for item in value]) if all(
            isinstance(item, (str, list)) for item in value) else kernel_array(value)
        if array.ndim == len(kernel) + 1:                   # [F][k...]: every channel alike
            array = array[:, None]
    elif isinstance(value, (str, list)):
        array = kernel_array(value)
        if array.ndim == len(kernel):                       # one filter, every channel alike
            if filters != 1:
                raise LayerError(f"weights give one filter but the layer has {filters}", arg=arg,
                                 hint="give a list with one kernel per filter")
            array = array[None, None]
        elif array.ndim == len(kernel) + 1:
            array = array[:, None]
    else:
        raise LayerError(f"weights must be a kernel name or nested lists of numbers, received: {value!r}",
                         arg=arg)
    alike = array.ndim == len(kernel) + 2 and array.shape[1] == 1 and array.shape[0] == filters \
        and tuple(array.shape[2:]) == tuple(kernel)
    if array.shape != tuple(shape) and not alike:
        raise LayerError(f"weights have shape {fmt_shape(array.shape)} but the layer needs "
                         f"{fmt_shape(shape)} (filters x channels x kernel)", arg=arg)
    if math.prod(shape) > 2 ** 62:
        raise LayerError(f"weights of shape {fmt_shape(shape)} would have more values than an array can "
                         f"hold", arg=arg)
    # a kernel applied to every input channel alike stays one per filter: a read-only view over
    # the channels (stride 0), so analysing 10,000,000 input channels allocates nothing that size;
    # compiling copies it into the model's parameters
    return np.broadcast_to(array, shape) if alike else np.ascontiguousarray(array)


class ConvTranspose(Layer):
    """Transposed convolution, as PyTorch's ``ConvTranspose1d/2d``; 1-D or 2-D by input rank.

    Config keys (regular, like conv's): ``filters`` F; ``kernel``, ``stride``, ``dilation`` per
    axis; ``pad`` as (before, after) per axis flattened, (top, bottom, left, right) in 2-D,
    (left, right) in 1-D: rows/columns cropped from the full output; ``output_pad`` per axis:
    rows/columns added at the bottom/right end; ``groups``; ``bias``; ``trainable``. Weight
    (C, F/groups, *kernel) as PyTorch lays it out; bias (F,).

    ``out = (in-1)*stride - before - after + dilation*(k-1) + output_pad + 1``: the output is
    ``full[before : before + out]`` of the full transposed convolution, zero-extended at its end.
    ``pad=same`` gives ``out = in*stride``: with ``P = dilation*(k-1) + 1 - stride``, it crops
    ``ceil(P/2)`` before and ``floor(P/2)`` after (PyTorch's usual ``padding=ceil(P/2),
    output_padding=P % 2``: ``conv_transpose(c, 4x4, stride=2, pad=1)``,
    ``conv_transpose(c, 3x3, stride=2, pad=1, output_pad=1)``); when P < 0 it crops nothing and
    adds ``output_pad = -P``.
    """
    op = "conv_transpose"
    params = {"filters": REQUIRED, "kernel": REQUIRED, "stride": 1, "pad": 0, "output_pad": 0,
              "dilation": 1, "groups": 1, "bias": True, "trainable": True}
    n_positional = 2
    min_rank = 1
    example = "conv_transpose(16, 4x4, stride=2, pad=1)"

    def resolve(self, v, at, in_shapes):
        shape = in_shapes[0]
        cfg = filter_arguments(v, at, shape)
        kernel, stride, dilation = cfg["kernel"], cfg["stride"], cfg["dilation"]
        rank = len(kernel)
        if v["pad"] == "same":
            if at["output_pad"] is not None:
                raise LayerError("`pad=same` already sets the output to in*stride, so it takes no output_pad",
                                 arg=at["output_pad"], hint="drop output_pad, or give pad as numbers")
            pad, output_pad = [], []
            for k, s, d in zip(kernel, stride, dilation):
                total = d * (k - 1) + 1 - s
                pad += [-(-total // 2), total // 2] if total >= 0 else [0, 0]
                output_pad.append(max(-total, 0))
            pad, output_pad = tuple(pad), tuple(output_pad)
        else:
            pad = padding(v["pad"], rank, kernel, stride, dilation, shape[1:], at["pad"])
            output_pad = spatial(v["output_pad"], rank, "output_pad", at["output_pad"], minimum=0)
            for op_, s, d in zip(output_pad, stride, dilation):
                if op_ >= max(s, d):
                    raise LayerError(f"output_pad {fmt_shape(output_pad)} must be smaller than the stride "
                                     f"{fmt_shape(stride)} or the dilation {fmt_shape(dilation)} on every axis",
                                     arg=at["output_pad"],
                                     hint="as PyTorch: output_pad only chooses among the sizes a strided "
                                          "convolution maps to the same output size")
        cfg.update(pad=pad, output_pad=output_pad)
        return cfg

    def output_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        sizes = []
        for i, (n, k, s, d, op_) in enumerate(zip(shape[1:], cfg["kernel"], cfg["stride"], cfg["dilation"],
                                                  cfg["output_pad"])):
            before, after = cfg["pad"][2 * i], cfg["pad"][2 * i + 1]
            out = (n - 1) * s - before - after + d * (k - 1) + op_ + 1
            if out < 1:
                axis = ("length",) if len(shape) == 2 else ("height", "width")
                raise LayerError(
                    f"`conv_transpose` output {axis[i]} would be {out} (below 1): input {axis[i]} {n}, "
                    f"out = ({n}-1)*{s} - {before} - {after} + {d}*({k}-1) + {op_} + 1",
                    hint="crop less (a smaller pad)")
            sizes.append(out)
        return (cfg["filters"], *sizes)

    def param_shapes(self, cfg, in_shapes):
        shapes = {"weight": (in_shapes[0][0], cfg["filters"] // cfg["groups"], *cfg["kernel"])}
        if cfg["bias"]:
            shapes["bias"] = (cfg["filters"],)
        return shapes

    def macs(self, cfg, in_shapes, out_shape):
        """fvcore's (and torch.utils.flop_counter's) count: C*(F/groups)*k per input position."""
        channels = in_shapes[0][0]
        return channels * (cfg["filters"] // cfg["groups"]) * math.prod(cfg["kernel"]) * math.prod(in_shapes[0][1:])

    def window(self, cfg, in_shapes):
        """Output unit o reads the inputs i with i*s = o + before - t*d (t < k): the whole numbers
        among ``o/s - offset + j*d/s``, j = 0 .. k-1 (the 4th term, the step between taps)."""
        from fractions import Fraction

        terms = []
        for i, (k, s, d) in enumerate(zip(cfg["kernel"], cfg["stride"], cfg["dilation"])):
            span = d * (k - 1)
            terms.append((Fraction(span, s), Fraction(1, s), Fraction(span - cfg["pad"][2 * i], s), Fraction(d, s)))
        return terms

    def describe(self, cfg):
        return describe_filters(cfg, extra=("output_pad",)) + ("" if cfg["trainable"] else ", frozen")
