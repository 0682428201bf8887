"""Merges of several tensors: element-wise `add` (residuals) and channel `concat` (inception)."""
from __future__ import annotations

from cnnspec.layers.base import Layer, LayerError, fmt_shape


class Merge(Layer):
    n_inputs = None

    def check_inputs(self, in_shapes):
        if len(in_shapes) < 2:
            raise LayerError(f"`{self.op}` needs at least two operands, got {len(in_shapes)}")


class Add(Merge):
    op = "add"

    def output_shape(self, cfg, in_shapes):
        if any(tuple(s) != tuple(in_shapes[0]) for s in in_shapes):
            raise LayerError("`add` needs operands of exactly the same shape, got "
                             + ", ".join(fmt_shape(s) for s in in_shapes),
                             hint="project the shortcut, e.g. conv(C, 1x1, stride=S), to match")
        return tuple(in_shapes[0])


class Concat(Merge):
    op = "concat"

    def output_shape(self, cfg, in_shapes):
        first = in_shapes[0]
        if any(len(s) != len(first) or tuple(s[1:]) != tuple(first[1:]) for s in in_shapes):
            raise LayerError("`concat` joins along channels; the other axes must match, got "
                             + ", ".join(fmt_shape(s) for s in in_shapes))
        return (sum(s[0] for s in in_shapes), *first[1:])
