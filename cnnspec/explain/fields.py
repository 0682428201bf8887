"""A unit's receptive field on the input: the analysis's box beside the effective one.

The theoretical field comes from the analysis (``receptive_field``: size r, jump j, effective
padding p per axis): the unit at index i sees input positions [i*j - p, i*j - p + r - 1], clipped
here to the input (the rest is padding). The effective field (Luo et al., "Understanding the
Effective Receptive Field in Deep CNNs", 2016) is |d unit / d input| for a given input, summed over
the input's channels, the unit's value summed over the layer's channels at that position: the
pixels that actually move the unit, usually a blob much smaller than the box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from cnnspec.errors import CnnSpecError


@dataclass
class FieldView:
    layer: str
    position: tuple                # the unit's (row, col) or (pos,)
    box: tuple                     # per axis (first, last) input index, inclusive, clipped
    unclipped: tuple               # the same before clipping (may reach into the padding)
    effective: np.ndarray          # |d unit / d input| summed over input channels, input's spatial shape

    def inside(self) -> bool:
        """Every nonzero of the effective field lies in the box."""
        mask = np.zeros(self.effective.shape, bool)
        mask[tuple(slice(a, b + 1) for a, b in self.box)] = True
        return not np.any(self.effective[~mask] != 0)


def parse_unit(text: str) -> tuple:
    """``"conv2:4,5"`` -> ("conv2", (4, 5)); ``"conv1:7"`` -> ("conv1", (7,))."""
    layer, sep, where = str(text).rpartition(":")
    try:
        position = tuple(int(v) for v in where.split(","))
    except ValueError:
        position = ()
    if not sep or not layer or not position:
        raise CnnSpecError(f"--rf takes LAYER:ROW,COL (or LAYER:POS for sequences), got {text!r}",
                           hint="for example --rf conv2:4,4")
    return layer, position


def field_box(node, position) -> tuple:
    """Per axis, the (first, last) input index that unit ``position`` of the analysed ``node``
    sees, inclusive, before clipping to the input."""
    field = node["receptive_field"]
    shape = node["output_shape"][1:]
    if field is None:
        raise CnnSpecError(f"`{node.get('name', 'this layer')}` has no spatial receptive field "
                           f"(it sees the whole input)")
    if len(position) != len(shape) or not all(0 <= i < n for i, n in zip(position, shape)):
        raise CnnSpecError(f"position {','.join(map(str, position))} is outside the layer's "
                           f"{'x'.join(map(str, shape))} positions (counting from 0)")
    if "axes" in field:                 # the analysis's exact per-unit tables (periodic after upsampling)
        from cnnspec.analysis.receptive_field import interval

        return tuple(interval(field, position))
    box = []
    for i, r, j, p in zip(position, field["size"], field["stride"], field["padding"]):
        first = i * Fraction(j) - Fraction(p)
        box.append((math.ceil(first), math.floor(first + Fraction(r) - 1)))
    return tuple(box)


def check_unit(model, layer: str, position) -> tuple:
    """(layer's name, node, position, unclipped box) of a unit, or a CnnSpecError saying what is
    wrong (no such layer, no positions, a position outside the layer), before anything runs."""
    layer = model.tensor_name(layer, "layer")
    node = dict(model.graph.nodes[layer], name=layer)
    shape = tuple(node["output_shape"])
    if len(shape) < 2 or node["receptive_field"] is None:
        raise CnnSpecError(f"`{layer}` outputs {'x'.join(map(str, shape))}: no positions on the input to draw",
                           hint="choose a conv or pooling layer")
    position = tuple(int(i) for i in position)
    return layer, node, position, field_box(node, position)


def receptive_field(model, x, layer: str, position) -> FieldView:
    """The analysis's box and the effective field of unit ``position`` of ``layer`` for input ``x``."""
    layer, node, position, unclipped = check_unit(model, layer, position)
    shape = tuple(node["output_shape"])
    size = model.input_shape[1:]
    box = tuple((max(a, 0), min(b, n - 1)) for (a, b), n in zip(unclipped, size))
    x = np.asarray(x, dtype=model.dtype)
    seed = np.zeros((1, *shape), model.dtype)
    seed[(0, slice(None), *position)] = 1.0
    g = model.gradient(x[None], of=seed, wrt=["input"], layer=layer)
    effective = np.abs(g[model.input_name][0].astype(np.float64)).sum(axis=0)
    return FieldView(layer, position, box, unclipped, effective)
