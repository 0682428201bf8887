"""What every layer kind shares: argument binding, spatial-argument parsing, the output-size rule.

A layer kind is a small class with pure functions of (config, input shapes): ``configure`` checks
and resolves the arguments written in the ``.cnn`` file, ``output_shape``, ``param_shapes``,
``state_shapes``, ``macs`` and ``window`` (its receptive-field terms) follow from the result.
The analyser, the renderer, the engine and the grader all read these definitions.
"""
from __future__ import annotations

import math

from cnnspec.errors import nearest
from cnnspec.layers.values import Size

REQUIRED = object()          # marks a positional argument without a default


class LayerError(Exception):
    """A bad argument or input shape; ``arg`` (index or keyword) says which argument to point at."""

    def __init__(self, message: str, arg=None, hint: str | None = None, named=None):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.hint = hint
        self.named = named      # for merges: names (as written) -> the message naming the operands


def fmt_shape(shape) -> str:
    return "x".join(str(v) for v in shape) if len(shape) else "scalar"


def spatial_rank(shape) -> int:
    """0 for a flat vector (D,), 1 for a sequence (C, L), 2 for an image (C, H, W)."""
    return len(shape) - 1


class Layer:
    """Base of the layer kinds. Subclasses set ``op``, ``params`` (argument names and defaults,
    positional ones first, in order) and override the rules that apply to them."""

    op: str = ""
    params: dict = {}            # name -> default (REQUIRED for required positional arguments)
    n_positional: int = 0        # how many of `params` may be given positionally
    n_inputs: int | None = 1     # None: any number >= 2 (merges)
    takes_names = False          # its operands are tensor names written as arguments: add(a, b)
    in_place = False             # element-wise: computed in place, adds no activation memory
    min_rank = 0                 # lowest spatial rank of the input it accepts

    # -- configuration --------------------------------------------------------------------------
    def bind(self, args, kwargs) -> tuple[dict, dict]:
        """Match positional and keyword arguments to names and fill defaults. Returns the values
        and, per name, where it was written (positional index, keyword, or None for a default)."""
        names = list(self.params)
        if len(args) > self.n_positional:
            if self.n_positional == 0:
                raise LayerError(f"`{self.op}` takes no positional arguments (got {len(args)})", arg=0)
            raise LayerError(f"`{self.op}` takes at most {self.n_positional} positional argument"
                             f"{'s' if self.n_positional > 1 else ''} ({', '.join(names[:self.n_positional])}), "
                             f"got {len(args)}", arg=self.n_positional)
        values = dict(zip(names, args))
        at = {name: i for i, name in enumerate(names[:len(args)])}
        for key, value in kwargs.items():
            if key not in self.params:
                guess = nearest(key, names)
                raise LayerError(f"`{self.op}` has no argument `{key}`", arg=key,
                                 hint=f"did you mean `{guess}`?" if guess else
                                 (f"its arguments are: {', '.join(names)}" if names else None))
            if key in values:
                raise LayerError(f"`{self.op}` got argument `{key}` twice", arg=key)
            values[key], at[key] = value, key
        for name, default in self.params.items():
            if name not in values:
                if default is REQUIRED:
                    raise LayerError(f"`{self.op}` needs argument `{name}`",
                                     hint=f"e.g. {self.example}" if getattr(self, "example", None) else None)
                values[name], at[name] = default, None
        return values, at

    def configure(self, args, kwargs, in_shapes) -> dict:
        """Bind and check the arguments against the input shapes; return the resolved config."""
        self.check_inputs(in_shapes)
        values, at = self.bind(args, kwargs)
        return self.resolve(values, at, in_shapes)

    def check_inputs(self, in_shapes) -> None:
        if self.n_inputs is not None and len(in_shapes) != self.n_inputs:
            raise LayerError(f"`{self.op}` takes {self.n_inputs} input, got {len(in_shapes)}")
        for shape in in_shapes:
            if spatial_rank(shape) < self.min_rank:
                raise LayerError(f"`{self.op}` needs an input with spatial axes (CxL or CxHxW), "
                                 f"got the flat shape {fmt_shape(shape)}")

    def resolve(self, values: dict, at: dict, in_shapes) -> dict:
        """Check and convert the bound values; ``at[name]`` locates an argument for errors."""
        return values

    # -- rules ----------------------------------------------------------------------------------
    def output_shape(self, cfg, in_shapes) -> tuple:
        return tuple(in_shapes[0])

    def param_shapes(self, cfg, in_shapes) -> dict:
        return {}

    def state_shapes(self, cfg, in_shapes) -> dict:
        return {}

    def trainable(self, cfg) -> bool:
        return bool(cfg.get("trainable", True))

    def macs(self, cfg, in_shapes, out_shape) -> int:
        return 0

    def window(self, cfg, in_shapes):
        """Receptive-field terms per spatial axis: a list of (span, stride, offset), meaning that
        output unit ``o`` reads the input units in ``[o*stride - offset, o*stride - offset + span]``
        (numbers or exact Fractions); None when the layer does not move values across positions
        (element-wise layers, merges, channel slices)."""
        return None

    def field_inputs(self, cfg, in_shapes) -> list:
        """Indices of the inputs whose receptive fields the output's field is the union of."""
        return list(range(len(in_shapes)))

    def loss_term(self, cfg) -> dict | None:
        """What the layer adds to the training loss (``sample``'s KL term), or None."""
        return None

    def describe(self, cfg) -> str:
        """Short text of the key arguments, for tables and drawings."""
        return ""


# ---- argument parsing shared by conv and pooling --------------------------------------------------

def as_int(value, what: str, arg, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LayerError(f"{what} must be an integer, received: {value!r}", arg=arg)
    if value < minimum:
        raise LayerError(f"{what} must be >= {minimum}, received: {value}", arg=arg)
    return value


def as_bool(value, what: str, arg) -> bool:
    if not isinstance(value, bool):
        raise LayerError(f"{what} must be true or false, received: {value!r}", arg=arg)
    return value


def as_float(value, what: str, arg, low=None, high=None, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LayerError(f"{what} must be a number, received: {value!r}", arg=arg)
    value = float(value)
    if not math.isfinite(value) or (low is not None and (value < low or (low_open and value == low))) \
            or (high is not None and (value > high or (high_open and value == high))):
        if high is None:
            bound = f"above {low}" if low_open else f"at least {low}"
        elif low is None:
            bound = f"below {high}" if high_open else f"at most {high}"
        else:
            bound = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise LayerError(f"{what} must be {bound}, received: {value}", arg=arg)
    return value


def spatial(value, rank: int, what: str, arg, minimum: int = 1) -> tuple:
    """A per-axis size: a bare int (same on every axis), a size literal ``3x1`` or a tuple."""
    if isinstance(value, bool):
        raise LayerError(f"{what} must be a size such as 3 or 3x3, received: {value}", arg=arg)
    if isinstance(value, int):
        values = (value,) * rank
    elif isinstance(value, (Size, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        values = tuple(value)
        if len(values) != rank:
            axes = {1: "1-D (CxL)", 2: "2-D (CxHxW)"}.get(rank, f"{rank}-D")
            raise LayerError(f"{what} {fmt_shape(values)} has {len(values)} axes but the input is {axes}",
                             arg=arg, hint=f"write it with {rank} number{'s' if rank > 1 else ''}, e.g. "
                                           f"{'x'.join(['3'] * rank)}")
    else:
        raise LayerError(f"{what} must be a size such as 3 or 3x3, received: {value!r}", arg=arg)
    for v in values:
        if v < minimum:
            raise LayerError(f"{what} must be >= {minimum} on every axis, received: {fmt_shape(values)}", arg=arg)
    return values


def padding(value, rank: int, kernel, stride, dilation, sizes, arg) -> tuple:
    """Resolve ``pad`` to ``(before, after)`` per axis, flattened: (top, bottom, left, right) in
    2-D, (left, right) in 1-D. ``sizes`` are the input's spatial sizes (needed by ``same``)."""
    effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if isinstance(value, str):
        if value == "valid":
            pairs = [(0, 0)] * rank
        elif value == "full":                       # "wide convolution": kernel-1 on each side
            pairs = [(e - 1, e - 1) for e in effective]
        elif value == "same":                       # TensorFlow's rule: the odd one goes after
            pairs = []
            for n, s, e in zip(sizes, stride, effective):
                total = max((-(-n // s) - 1) * s + e - n, 0)
                pairs.append((total // 2, total - total // 2))
        else:
            guess = nearest(value, ["same", "valid", "full"])
            raise LayerError(f"unknown padding `{value}`", arg=arg,
                             hint=f"did you mean `{guess}`?" if guess else
                             "pad takes an integer, a size such as 2x1, same, valid, full, or a tuple")
        return tuple(v for pair in pairs for v in pair)
    if isinstance(value, tuple) and not isinstance(value, Size) and len(value) == 2 * rank and rank > 0:
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise LayerError(f"padding must be non-negative integers, received: {value}", arg=arg)
        return tuple(value)
    if isinstance(value, tuple) and not isinstance(value, Size):
        names = "(top, bottom, left, right)" if rank == 2 else "(left, right)"
        raise LayerError(f"a padding tuple on a {rank}-D input has {2 * rank} numbers {names}, "
                         f"received {len(value)}: {value}", arg=arg)
    per_axis = spatial(value, rank, "padding", arg, minimum=0)
    return tuple(v for p in per_axis for v in (p, p))


def output_size(n: int, k: int, s: int, before: int, after: int, d: int = 1, ceil: bool = False) -> int:
    """Lecture 003's rule: 1 + floor((n + before + after - d*(k-1) - 1) / s), or ceil with
    Caffe's rule that the last window must start inside the input or its left padding."""
    span = n + before + after - d * (k - 1) - 1
    out = 1 + (-(-span // s) if ceil else span // s)  # below 1: the caller reports it
    if out < 1:
        return out
    if ceil and (out - 1) * s >= n + before:
        out -= 1
    return out
