"""Receptive fields by the recurrence of Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks", Distill, 2019, in exact fractions so that it also runs through
layers that enlarge their input (``upsample``, ``conv_transpose``).

Per spatial axis, a tensor's field is (extent r, jump j, effective padding p), all exact
``Fraction``s: its unit ``o`` depends on input positions inside the interval

    [o*j - p,  o*j - p + r - 1]            (input coordinates; positions outside are padding)

A layer's window, per axis, is (span, stride, offset): its unit ``o`` reads the units of its input
inside ``[o*stride - offset, o*stride - offset + span]``. For a convolution or pooling
``span = dilation*(kernel-1)``, ``stride`` its stride and ``offset`` its padding before; layers that
enlarge have a fractional stride (``1/2``). Through a window,

    r' = r + span*j,     j' = j*stride,     p' = p + offset*j

Where paths meet, the field is the union of the paths' fields, per axis (the smallest interval
holding every path's interval for every unit). A path whose jump or centre differs from the
others' makes the merge "not aligned".

``size`` is what summaries print: the most input positions the interval of any unit of the tensor
holds (its extent r when the jump and padding are whole numbers, as in every classifier).
"""
from __future__ import annotations

import math
from fractions import Fraction

MAX_UNITS_SCANNED = 4096         # beyond this, a tensor's units are not scanned one by one


def initial(rank: int) -> dict:
    """The field of an input itself: every position sees one pixel."""
    one, zero = Fraction(1), Fraction(0)
    return {"size": [1] * rank, "extent": [one] * rank, "stride": [one] * rank,
            "padding": [zero] * rank, "aligned": True}


def through_window(field: dict, terms, sizes) -> dict:
    """The field after a window with per-axis ``terms`` (span, stride, offset); ``sizes`` are the
    output's spatial sizes."""
    extent, stride, pad = [], [], []
    for r, j, p, (span, s, q) in zip(field["extent"], field["stride"], field["padding"], terms):
        extent.append(r + Fraction(span) * j)
        stride.append(j * Fraction(s))
        pad.append(p + Fraction(q) * j)
    return finish(extent, stride, pad, field["aligned"], sizes)


def finish(extent, stride, pad, aligned, sizes) -> dict:
    return {"size": [count(r, j, p, n) for r, j, p, n in zip(extent, stride, pad, sizes)],
            "extent": extent, "stride": stride, "padding": pad, "aligned": aligned}


def count(r: Fraction, j: Fraction, p: Fraction, n: int) -> int:
    """The most whole positions that the interval [o*j - p, o*j - p + r - 1] holds, over the
    units o = 0 .. n-1 of the tensor."""
    length = r - 1

    def held(lo):
        return math.floor(lo + length) - math.ceil(lo) + 1

    b = j.denominator
    if n < b and n <= MAX_UNITS_SCANNED:
        return max(held(o * j - p) for o in range(n))
    # o*j - p takes every fractional part f0 + k/b (k = 0 .. b-1), f0 = frac(-p) modulo 1/b
    f0 = ((-p) * b - math.floor((-p) * b)) / b
    if f0 == 0:
        return math.floor(length) + 1
    return math.floor(f0 + Fraction(b - 1, b) + length)


def centre(field: dict) -> list:
    """Input coordinate of the centre of the first output position's field, per axis."""
    return [(r - 1) / 2 - p for r, p in zip(field["extent"], field["padding"])]


def merge(fields: list, sizes) -> dict:
    """Where paths meet: the union, per axis, of the paths' fields. ``sizes`` are the merged
    tensors' spatial sizes (on an axis of size 1 the jump means nothing).

    On an axis where the jumps agree the union is exact: p = max(p_i), r - p = max(r_i - p_i).
    Where they differ (an unaligned merge, warned about) it takes the largest jump and the
    smallest interval that covers every path on every unit 0 .. n-1."""
    extent, stride, pad = [], [], []
    for axis, n in enumerate(sizes):
        j = max(f["stride"][axis] for f in fields)
        p = max(f["padding"][axis] + (n - 1) * (j - f["stride"][axis]) for f in fields)
        r = max(f["extent"][axis] - f["padding"][axis] for f in fields) + p
        extent.append(r)
        stride.append(j)
        pad.append(p)
    first = fields[0]
    axes = [i for i, n in enumerate(sizes) if n > 1]

    def agrees(f):
        return all(f["stride"][i] == first["stride"][i] for i in axes) and centre(f) == centre(first)

    return finish(extent, stride, pad, all(agrees(f) and f["aligned"] for f in fields), sizes)


def plain(value):
    """A Fraction as JSON: an int when whole, else the string ``"1/2"``."""
    value = Fraction(value)
    return value.numerator if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
