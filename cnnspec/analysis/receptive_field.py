"""Receptive fields by the recurrence of Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks", Distill, 2019.

Per spatial axis a tensor's field is (size r, jump j, effective padding p). A window layer with
kernel k, stride s, padding-before q and dilation d maps it to

    r' = r + (d*(k-1)) * j,     j' = j * s,     p' = p + q * j

so the first output sees input positions [-p', -p' + r' - 1]. Where several paths meet, the
field is the largest one; paths whose jumps or centres differ are "not aligned".
"""
from __future__ import annotations

from fractions import Fraction


def initial(rank: int) -> dict:
    """The field of the input itself: every position sees one pixel."""
    return {"size": [1] * rank, "stride": [1] * rank, "padding": [0] * rank, "aligned": True}


def through_window(field: dict, terms) -> dict:
    """The field after a sliding window with per-axis ``terms`` (kernel, stride, pad_before, dilation)."""
    size, stride, pad = [], [], []
    for r, j, p, (k, s, q, d) in zip(field["size"], field["stride"], field["padding"], terms):
        size.append(r + d * (k - 1) * j)
        stride.append(j * s)
        pad.append(p + q * j)
    return {"size": size, "stride": stride, "padding": pad, "aligned": field["aligned"]}


def centre(field: dict) -> list:
    """Input coordinate of the centre of the first output position's field, per axis."""
    return [Fraction(r - 1, 2) - p for r, p in zip(field["size"], field["padding"])]


def merge(fields: list, sizes) -> dict:
    """Where paths meet: the largest field; aligned only if every path agrees on jump and centre.
    ``sizes`` are the merged tensors' spatial sizes: on an axis of size 1 the jump means nothing."""
    largest = max(fields, key=lambda f: (f["size"], f["stride"]))
    axes = [i for i, n in enumerate(sizes) if n > 1]

    def agrees(f):
        return all(f["stride"][i] == largest["stride"][i] for i in axes) and centre(f) == centre(largest)

    return {**largest, "aligned": all(agrees(f) and f["aligned"] for f in fields)}
