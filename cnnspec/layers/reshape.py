"""Layers that move values without computing: upsampling, reshape, channel slices and shuffles."""
from __future__ import annotations

import math
from fractions import Fraction

from cnnspec.errors import nearest
from cnnspec.layers.base import REQUIRED, Layer, LayerError, as_int, fmt_shape, spatial, spatial_rank
from cnnspec.layers.values import Size

MODES = {1: ("nearest", "linear"), 2: ("nearest", "bilinear")}


class Upsample(Layer):
    """Upsampling by an integer factor per axis, as ``torch.nn.functional.interpolate`` with
    ``scale_factor`` and ``align_corners=False``: ``nearest`` repeats each value; ``bilinear``
    (``linear`` in 1-D) reads the input at ``(o + 1/2)/scale - 1/2``, clamped to the input.

    Config keys: ``scale`` (per axis, ints) and ``mode`` ("nearest", "bilinear" or "linear")."""
    op = "upsample"
    params = {"scale": 2, "mode": "nearest"}
    n_positional = 1
    min_rank = 1
    example = "upsample(2)"

    def resolve(self, v, at, in_shapes):
        rank = spatial_rank(in_shapes[0])
        scale = spatial(v["scale"], rank, "scale", at["scale"])
        mode = v["mode"]
        modes = MODES[rank]
        if not isinstance(mode, str) or mode not in modes:
            other = {"bilinear": "linear", "linear": "bilinear"}.get(mode)
            if other in modes:
                hint = f"on a {'1-D (CxL)' if rank == 1 else '2-D (CxHxW)'} input the mode is `{other}`"
            else:
                guess = nearest(str(mode), modes)
                hint = f"did you mean `{guess}`?" if guess else f"choose {' or '.join(modes)}"
            raise LayerError(f"unknown upsampling mode `{mode}`", arg=at["mode"], hint=hint)
        return {"scale": scale, "mode": mode}

    def output_shape(self, cfg, in_shapes):
        shape = in_shapes[0]
        return (shape[0], *(n * s for n, s in zip(shape[1:], cfg["scale"])))

    def window(self, cfg, in_shapes):
        """nearest: unit o reads floor(o/s), the interval [(o-s+1)/s, o/s]; (bi)linear: the two
        neighbours of x = (o + 1/2)/s - 1/2, the interval [x - d, x + d] with d = 1 - 1/(2s)
        (whose whole points are exactly floor(x) and ceil(x))."""
        terms = []
        for s in cfg["scale"]:
            if cfg["mode"] == "nearest":
                terms.append((Fraction(s - 1, s), Fraction(1, s), Fraction(s - 1, s)))
            else:
                terms.append((2 - Fraction(1, s), Fraction(1, s), Fraction(3, 2) - Fraction(1, s)))
        return terms

    def describe(self, cfg):
        return fmt_shape(cfg["scale"]) + ("" if cfg["mode"] == "nearest" else f", {cfg['mode']}")


class Reshape(Layer):
    """The same values in another shape (row-major, as ``torch.reshape`` without the batch).

    Config key: ``shape``, the output shape (1 to 3 sizes)."""
    op = "reshape"
    params = {"shape": REQUIRED}
    n_positional = 1
    in_place = True              # a view: no new memory
    example = "reshape(64x7x7)"

    def resolve(self, v, at, in_shapes):
        value = v["shape"]
        if isinstance(value, int) and not isinstance(value, bool):
            shape = (value,)
        elif isinstance(value, (Size, tuple)) and all(isinstance(d, int) and not isinstance(d, bool) for d in value):
            shape = tuple(value)
        else:
            raise LayerError(f"reshape takes a shape such as 64x7x7 or 3136, received: {value!r}", arg=at["shape"])
        if not 1 <= len(shape) <= 3 or min(shape) < 1:
            raise LayerError(f"reshape to {fmt_shape(shape)}: a shape is CxHxW, CxL or D, every size >= 1",
                             arg=at["shape"])
        before, after = math.prod(in_shapes[0]), math.prod(shape)
        if before != after:
            raise LayerError(f"reshape cannot make {fmt_shape(in_shapes[0])} ({before:,} values) into "
                             f"{fmt_shape(shape)} ({after:,} values)", arg=at["shape"],
                             hint="the element counts must match")
        return {"shape": shape}

    def output_shape(self, cfg, in_shapes):
        return tuple(cfg["shape"])

    def describe(self, cfg):
        return fmt_shape(cfg["shape"])


class Channels(Layer):
    """The channel slice ``[start, stop)`` (features of a flat vector): ShuffleNet's split.

    Config keys: ``start``, ``stop``."""
    op = "channels"
    params = {"start": REQUIRED, "stop": REQUIRED}
    n_positional = 2
    example = "channels(0, in.channels // 2)"

    def resolve(self, v, at, in_shapes):
        channels = in_shapes[0][0]
        start = as_int(v["start"], "start", at["start"], minimum=0)
        stop = as_int(v["stop"], "stop", at["stop"], minimum=1)
        if stop > channels:
            raise LayerError(f"stop {stop} is beyond the {channels} channels of {fmt_shape(in_shapes[0])}",
                             arg=at["stop"], hint=f"channels are numbered 0 .. {channels - 1}; stop is excluded")
        if start >= stop:
            raise LayerError(f"the slice [{start}, {stop}) holds no channel", arg=at["start"],
                             hint="start must be below stop")
        return {"start": start, "stop": stop}

    def output_shape(self, cfg, in_shapes):
        return (cfg["stop"] - cfg["start"], *in_shapes[0][1:])

    def describe(self, cfg):
        return f"{cfg['start']}:{cfg['stop']}"


class Shuffle(Layer):
    """Channel shuffle (ShuffleNet): channels viewed as (groups, C/groups), transposed, flattened,
    so that output channel ``i*groups + g`` is input channel ``g*(C/groups) + i``.

    Config key: ``groups``."""
    op = "shuffle"
    params = {"groups": REQUIRED}
    n_positional = 1
    example = "shuffle(2)"

    def resolve(self, v, at, in_shapes):
        groups = as_int(v["groups"], "groups", at["groups"])
        channels = in_shapes[0][0]
        if channels % groups:
            raise LayerError(f"groups={groups} must divide the {channels} channels", arg=at["groups"])
        return {"groups": groups}

    def describe(self, cfg):
        return str(cfg["groups"])
