"""The built-in ``shapes`` data set: simple figures drawn at random places, deterministic from a seed.

Ten classes of stroked or filled figures — ``plus``, ``x``, ``hbar``, ``vbar``, ``corner`` (an L),
``square``, ``diamond``, ``triangle``, ``circle`` and ``disk`` — each drawn at a random position,
size, stroke thickness and slight tilt, with random foreground and background levels and
Gaussian noise. A figure can be anywhere in the picture, so a network must recognise it wherever
it is: the translation invariance that convolution and pooling give (lecture 002).

Pictures are made at any size ``C x H x W`` (H, W >= 8); with several channels every channel gets
its own foreground and background level (colour jitter). Values lie in [0, 1].
"""
from __future__ import annotations

import numpy as np

# Each stroked figure is a list of line segments in unit coordinates: the figure's box is
# [-1, 1] x [-1, 1], x to the right and y downwards (image rows).
_SEGMENTS = {
    "plus": [((-1, 0), (1, 0)), ((0, -1), (0, 1))],
    "x": [((-0.8, -0.8), (0.8, 0.8)), ((-0.8, 0.8), (0.8, -0.8))],
    "hbar": [((-1, 0), (1, 0))],
    "vbar": [((0, -1), (0, 1))],
    "corner": [((-0.8, -1), (-0.8, 0.8)), ((-0.8, 0.8), (0.8, 0.8))],
    "square": [((-0.8, -0.8), (0.8, -0.8)), ((0.8, -0.8), (0.8, 0.8)),
               ((0.8, 0.8), (-0.8, 0.8)), ((-0.8, 0.8), (-0.8, -0.8))],
    "diamond": [((0, -1), (1, 0)), ((1, 0), (0, 1)), ((0, 1), (-1, 0)), ((-1, 0), (0, -1))],
    "triangle": [((0, -1), (1, 0.8)), ((1, 0.8), (-1, 0.8)), ((-1, 0.8), (0, -1))],
}
SHAPE_CLASSES = ("plus", "x", "hbar", "vbar", "corner", "square", "diamond", "triangle",
                 "circle", "disk")

_CHUNK = 512                     # samples drawn at a time (bounds memory for large pictures)


def _segment_distance(px, py, a, b):
    """Distance from points (px, py) to the segment a-b (all in the same units)."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(px - ax - t * dx, py - ay - t * dy)


def _draw(name: str, u, v, size, thickness):
    """Ink in [0, 1] of figure ``name`` at unit coordinates (u, v) of shape (n, H, W); ``size`` is
    the half-extent in pixels and ``thickness`` the stroke width in pixels, both (n, 1, 1)."""
    radius = np.hypot(u, v)
    if name == "disk":
        dist = (radius - 1.0) * size                 # negative inside
        return np.clip(0.5 - dist, 0.0, 1.0)
    if name == "circle":
        dist = np.abs(radius - 0.85) * size
    else:
        dist = np.min([_segment_distance(u, v, a, b) for a, b in _SEGMENTS[name]], axis=0) * size
    # anti-aliased stroke: full ink within half the thickness, fading over one pixel
    return np.clip(thickness / 2 + 0.5 - dist, 0.0, 1.0)


def make_shapes(n: int, shape, *, seed: int = 0, classes=SHAPE_CLASSES, masks: bool = False):
    """``n`` pictures of shape ``shape`` = (C, H, W), float32 in [0, 1], and their labels (int64,
    indexes into ``classes``), balanced over the classes and shuffled. Deterministic in ``seed``.

    With ``masks`` also a segmentation mask per picture, (n, H, W) int64: 0 for the background,
    k + 1 for the pixels of the figure of class k, a pixel belonging to the figure where its ink
    (the share of the figure's colour in it, before noise) is at least one half. The pictures are
    the same with or without masks."""
    channels, height, width = shape
    rng = np.random.default_rng([seed, 0x5A4E])
    labels = rng.permutation(np.arange(n) % len(classes))
    images = np.empty((n, channels, height, width), dtype=np.float32)
    drawn = np.zeros((n, height, width), dtype=np.int64) if masks else None
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        images[start:stop], ink = _draw_chunk(rng, labels[start:stop], classes, shape)
        if masks:
            drawn[start:stop] = np.where(ink >= 0.5, labels[start:stop, None, None] + 1, 0)
    if masks:
        return images, labels.astype(np.int64), drawn
    return images, labels.astype(np.int64)


def _draw_chunk(rng, labels, classes, shape):
    channels, height, width = shape
    n = len(labels)
    side = min(height, width)
    col = lambda values: np.asarray(values, dtype=np.float32).reshape(n, 1, 1)   # noqa: E731
    size = col(rng.uniform(0.22, 0.4, n) * side)                     # half-extent, pixels
    thickness = col(rng.uniform(1.0, 2.6, n) * max(1.0, side / 28))
    angle = rng.uniform(-0.2, 0.2, n)                                # radians, a slight tilt
    margin = size[:, 0, 0] + 1
    cx = col(rng.uniform(margin - 1, width - margin))                # anywhere it fits
    cy = col(rng.uniform(margin - 1, height - margin))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    cos, sin = col(np.cos(angle)), col(np.sin(angle))
    u = (cos * dx + sin * dy) / size
    v = (-sin * dx + cos * dy) / size
    ink = np.zeros((n, height, width), dtype=np.float32)
    for k, name in enumerate(classes):
        chosen = labels == k
        if chosen.any():
            ink[chosen] = _draw(name, u[chosen], v[chosen], size[chosen], thickness[chosen])
    # foreground/background level per channel: grey jitter for one channel, colours for several
    background = rng.uniform(0.0, 0.3, (n, channels, 1, 1)).astype(np.float32)
    foreground = rng.uniform(0.6, 1.0, (n, channels, 1, 1)).astype(np.float32)
    noise = rng.normal(0.0, 0.05, (n, channels, height, width)).astype(np.float32)
    pictures = background + (foreground - background) * ink[:, None] + noise
    return np.clip(pictures, 0.0, 1.0), ink
