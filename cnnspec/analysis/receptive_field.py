"""Receptive fields: per spatial axis, the input positions each unit of a tensor depends on.

The field of unit ``o`` of a tensor, on one axis, is the whole-number interval
``[L(o), H(o)]`` of input positions (positions outside the input are padding; they count, as in
Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill
2019). A layer's window, per axis, is (span, stride, offset): its unit ``o`` reads the units of
its input inside the real interval ``[o*stride - offset, o*stride - offset + span]`` -- for a
convolution or pooling ``span = dilation*(kernel-1)``, ``stride`` its stride and ``offset`` its
padding before; layers that enlarge have a fractional stride (``upsample(2)``: 1/2). So

    L'(o) = L(ceil(o*stride - offset)),     H'(o) = H(floor(o*stride - offset + span))

For strided convolutions and pooling this is Araujo et al.'s recurrence (L(o) = o*j - p,
H(o) = L(o) + r - 1). Through upsampling and transposed convolutions the field of a unit depends
on its position modulo the upsampling factor, so L and H are kept as exact periodic tables:
``L(o + P) = L(o) + P*J`` with J the effective stride (jump), an exact ``Fraction``.

Reported per axis: ``size``, the most input positions any unit of the tensor depends on;
``stride``, J (``1/2`` after a 2x upsampling); ``padding``, ``-L(0)``. Where paths meet the
field is their union, unit by unit (``L = min``, ``H = max``). Paths whose jumps differ, or
whose fields are centred at different points though each is the same for every unit, are "not
aligned" (a path through an upsampling, as a U-Net's decoder, is centred on its coarse grid by
design, so only its jump is compared). A field whose period would exceed ``MAX_PERIOD`` units (a chain of
upsamplings by more than 4096 overall) is not computed (None).
"""
from __future__ import annotations

import math
from fractions import Fraction

MAX_PERIOD = 4096


class Axis:
    """L and H on one axis: ``L(o) = low[o % period] + (o // period) * shift`` (H alike), where
    ``shift = period * jump`` is a whole number."""

    __slots__ = ("jump", "period", "shift", "low", "high")

    def __init__(self, jump, period: int, low: tuple, high: tuple):
        self.jump = jump
        self.period = period
        self.shift = period * jump if type(jump) is int else int(period * jump)
        self.low = low
        self.high = high

    def L(self, o: int) -> int:
        q, r = divmod(o, self.period)
        return self.low[r] + q * self.shift

    def H(self, o: int) -> int:
        q, r = divmod(o, self.period)
        return self.high[r] + q * self.shift

    def centres(self, units: int) -> list:
        return [self.L(o) + self.H(o) for o in range(units)]


def initial(rank: int) -> dict:
    """The field of an input itself: every position sees one pixel."""
    return finish([Axis(1, 1, (0,), (0,)) for _ in range(rank)], True, [1] * rank)


def finish(axes: list, aligned: bool, sizes) -> dict | None:
    """The field dict of ``axes`` for a tensor of spatial ``sizes``."""
    if any(axis is None for axis in axes):
        return None
    size = []
    for axis, n in zip(axes, sizes):
        if axis.period == 1:
            size.append(max(0, axis.high[0] - axis.low[0] + 1))
        else:
            size.append(max(0, max(axis.H(o) - axis.L(o) + 1 for o in range(min(n, axis.period)))))
    return {"size": size, "stride": [axis.jump for axis in axes], "padding": [-axis.L(0) for axis in axes],
            "aligned": aligned, "axes": axes}


def through_window(field: dict, terms, sizes) -> dict | None:
    """The field after a window with per-axis ``terms`` (span, stride, offset); ``sizes`` are the
    output's spatial sizes."""
    return finish([window_axis(axis, *term) for axis, term in zip(field["axes"], terms)], field["aligned"], sizes)


def window_axis(axis: Axis, span, stride, offset, step=None) -> Axis | None:
    """``step`` (a Fraction, optional): the unit reads only the positions ``o*stride - offset +
    j*step`` (j = 0, 1, ...) that are whole numbers -- a transposed convolution's taps, ``d/s``
    apart -- instead of every whole position of the interval."""
    if all(type(v) is int for v in (span, stride, offset, 1 if step is None else step)):
        if axis.period == 1:                                          # Araujo et al.'s recurrence
            shift = axis.shift
            low = axis.low[0] - offset * shift
            if axis.high[0] < axis.low[0]:                            # every unit empty: stays so
                return Axis(axis.jump * stride, 1, (low,), (low - 1,))
            return Axis(axis.jump * stride, 1, (low,), (axis.high[0] + (span - offset) * shift,))
        period = axis.period // math.gcd(stride, axis.period)
        low, high = zip(*(_reads(axis, o * stride - offset, span, step) for o in range(period)))
        return Axis(axis.jump * stride, period, low, high)
    stride, offset, span = Fraction(stride), Fraction(offset), Fraction(span)
    period = stride.denominator * axis.period // math.gcd(stride.numerator, axis.period)
    if period > MAX_PERIOD:
        return None
    step = None if step is None else Fraction(step)
    low, high = zip(*(_reads(axis, o * stride - offset, span, step) for o in range(period)))
    jump = axis.jump * stride
    return Axis(jump.numerator if jump.denominator == 1 else jump, period, low, high)


def _reads(axis: Axis, start, span, step) -> tuple:
    """(L, H) of a unit that reads the input units at ``start + [0, span]`` (every whole position,
    or with ``step`` only the whole numbers among ``start + j*step``): the union of the fields of
    the units it reads that are not empty. A unit that reads only empty units (or none) is empty:
    ``H = L - 1``. At most one period of units is looked at from each end."""
    if step is None:
        first, last, inc = math.ceil(start), math.floor(start + span), 1
    else:
        start, step = Fraction(start), Fraction(step)
        taps = int(span / step)                       # j = 0 .. taps
        t, period = start * step.denominator, step.denominator    # start + j*step whole: j = j0 mod period
        j0 = (-t.numerator * pow(step.numerator, -1, period)) % period if t.denominator == 1 else taps + 1
        if j0 > taps:
            first, last, inc = 1, 0, 1
        else:
            first = int(start + j0 * step)
            last = int(start + (j0 + (taps - j0) // period * period) * step)
            inc = step.numerator
    count = (last - first) // inc + 1 if first <= last else 0
    look = min(count, axis.period)    # the units read fall in at most `period` classes mod period,
    lows = [axis.L(i) for i in (first + m * inc for m in range(look)) if axis.L(i) <= axis.H(i)]
    if not lows:                      # and L, H grow within a class: its first unit has its
        marker = axis.L(math.ceil(start))           # lowest L, its last unit its highest H
        return marker, marker - 1
    highs = [axis.H(i) for i in (last - m * inc for m in range(look)) if axis.L(i) <= axis.H(i)]
    return min(lows), max(highs)


def merge(fields: list, sizes) -> dict | None:
    """Where paths meet: the union, unit by unit and per axis, of the paths' fields (a path whose
    unit is empty adds nothing to it). ``sizes`` are the merged tensors' spatial sizes (on an axis
    of size 1 the jump means nothing).

    Where the jumps differ (an unaligned merge, warned about) the union is exact on the tensor's
    units and continued beyond them with the largest jump."""
    axes = []
    for a, n in enumerate(sizes):
        paths = [f["axes"][a] for f in fields]
        jumps = {p.jump for p in paths}
        if len(jumps) == 1 and all(p.period == 1 for p in paths):
            full = [p for p in paths if p.low[0] <= p.high[0]] or paths[:1]
            axes.append(Axis(paths[0].jump, 1, (min(p.low[0] for p in full),), (max(p.high[0] for p in full),)))
            continue
        if len(jumps) == 1:
            period = math.lcm(*(p.period for p in paths))
            jump = paths[0].jump
        else:
            jump = max(jumps)
            period = n * Fraction(jump).denominator
        if period > MAX_PERIOD:
            return None
        low, high = [], []
        for o in range(period):
            ivs = [(p.L(o), p.H(o)) for p in paths]
            full = [v for v in ivs if v[0] <= v[1]] or ivs[:1]
            low.append(min(v[0] for v in full))
            high.append(max(v[1] for v in full))
        axes.append(Axis(jump, period, tuple(low), tuple(high)))
    first = fields[0]

    def agrees(f):
        for a, n in enumerate(sizes):
            mine, theirs = f["axes"][a], first["axes"][a]
            if n > 1 and mine.jump != theirs.jump:
                return False
            if mine.period == theirs.period == 1 and mine.centres(1) != theirs.centres(1):
                return False
        return True

    return finish(axes, all(agrees(f) and f["aligned"] for f in fields), sizes)


def centre(field: dict) -> list:
    """Input coordinate of the centre of the first unit's field, per axis."""
    return [Fraction(axis.L(0) + axis.H(0), 2) for axis in field["axes"]]


def interval(field: dict, o) -> list:
    """``(L, H)`` per axis of the unit at position ``o`` (a tuple of ints)."""
    return [(axis.L(i), axis.H(i)) for axis, i in zip(field["axes"], o)]


def plain(value):
    """A Fraction as JSON: an int when whole, else the string ``"1/2"``."""
    value = Fraction(value)
    return value.numerator if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
