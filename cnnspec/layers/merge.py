"""Merges of several tensors: element-wise `add` (residuals), channel `concat` (inception, U-Net;
flat vectors join along their features) and element-wise `mul` (squeeze-and-excitation gates)."""
from __future__ import annotations

import math

from cnnspec.layers.base import Layer, LayerError, fmt_shape


class Merge(Layer):
    n_inputs = None
    takes_names = True

    def check_inputs(self, in_shapes):
        if len(in_shapes) < 2:
            raise LayerError(f"`{self.op}` needs at least two operands, got {len(in_shapes)}")


class Add(Merge):
    op = "add"

    def output_shape(self, cfg, in_shapes):
        if any(tuple(s) != tuple(in_shapes[0]) for s in in_shapes):
            def message(names):
                return "`add` needs operands of exactly the same shape, got " + ", ".join(
                    f"`{n}` {fmt_shape(s)}" if n else fmt_shape(s) for n, s in zip(names, in_shapes))
            raise LayerError(message([None] * len(in_shapes)), hint=_add_hint(in_shapes), named=message)
        return tuple(in_shapes[0])


def _add_hint(in_shapes) -> str:
    """What can make the operands of `add` equal: padding for sizes, a 1x1 projection for channels."""
    ranks = {len(s) for s in in_shapes}
    channels = {s[0] for s in in_shapes}
    sizes = {tuple(s[1:]) for s in in_shapes}
    if len(ranks) > 1:
        return "the operands have different ranks: flatten both, or neither"
    if len(channels) == 1 and len(sizes) > 1:
        return ("they differ in size only, which a 1x1 projection cannot fix: give the convolutions on the "
                "way padding that keeps the size (pad=same, or pad=1 for 3x3), or stride/pool both paths alike")
    if len(sizes) == 1:
        return f"they differ in channels only: project the narrower one, e.g. conv({max(channels)}, 1x1)"
    return ("project the shortcut to the main path's channels and size, e.g. conv(C, 1x1, stride=S), "
            "or pad the main path's convolutions")


class Concat(Merge):
    op = "concat"

    def output_shape(self, cfg, in_shapes):
        first = in_shapes[0]
        if any(len(s) != len(first) or tuple(s[1:]) != tuple(first[1:]) for s in in_shapes):
            raise LayerError("`concat` joins along channels; the other axes must match, got "
                             + ", ".join(fmt_shape(s) for s in in_shapes))
        return (sum(s[0] for s in in_shapes), *first[1:])


def gate_of(shape, full) -> bool:
    """Whether ``shape`` is a gate of the shape ``full``: Cx1x1 over CxHxW, Cx1 over CxL, or a
    flat C over either."""
    channels, rank = full[0], len(full) - 1
    return rank > 0 and tuple(shape) in ((channels,) + (1,) * rank, (channels,))


class Mul(Merge):
    """Element-wise product. The operands have the shape of the output, or are gates (Cx1x1, Cx1
    or C) broadcast over every position of a CxHxW (CxL) operand, as squeeze-and-excitation does.

    Config key: ``broadcast``, per operand in order, "full" or "gate"."""
    op = "mul"

    def resolve(self, values, at, in_shapes):
        full = max(in_shapes, key=lambda s: (math.prod(s), len(s)))
        forms = []
        for shape in in_shapes:
            if tuple(shape) == tuple(full):
                forms.append("full")
            elif gate_of(shape, full):
                forms.append("gate")
            else:
                raise LayerError("`mul` needs operands of the same shape, or a gate (Cx1x1, Cx1 or C) "
                                 "of the same channels, got " + ", ".join(fmt_shape(s) for s in in_shapes),
                                 hint="a squeeze-and-excitation gate is in -> globalavgpool -> "
                                      "conv(...) ... -> conv(in.channels, 1x1) -> sigmoid")
        return {"broadcast": tuple(forms)}

    def output_shape(self, cfg, in_shapes):
        return tuple(in_shapes[cfg["broadcast"].index("full")])

    def field_inputs(self, cfg, in_shapes):
        return [i for i, form in enumerate(cfg["broadcast"]) if form == "full"]
