"""Data augmentation (lecture 000): random changes to training batches, made on the fly and seeded.

=================  =====================================================  ==================
``flip``           mirror left-right, each sample with probability 1/2      images, sequences
``vflip``          mirror top-bottom, each sample with probability 1/2      images
``rotate(deg)``    rotate by an angle drawn uniformly in [-deg, deg]        images
``shift(px)``      move by whole pixels drawn uniformly in [-px, px] per axis  images, sequences
``scale(lo, hi)``  zoom about the centre by a factor drawn in [lo, hi]      images
``noise(std)``     add Gaussian noise of standard deviation ``std``         any input
``mask(p)``        zero each pixel (all its channels) with probability p    images, sequences
``erase(lo, hi)``  zero one rectangle per sample covering a fraction of      images
                   the picture drawn in [lo, hi], aspect ratio in
                   [0.3, 3.3] (torchvision's ``RandomErasing``, p=1)
=================  =====================================================  ==================

Every step is vectorised over the batch, works on a copy (never on its input) and leaves the
labels alone. Pixels that come from outside the picture are 0. Rotation and scaling sample
bilinearly; shifts move whole pixels, so what stays in the frame is exact.

The same steps spoil a denoising auto-encoder's input (``corrupt``, dsl.md §10.4). For
segmentation, :class:`Augmenter` moves each mask with its picture: the geometric steps (flip,
vflip, rotate, shift, scale) act on the picture and on its mask's one-hot channels together (the
class of a moved pixel is its channel of largest weight; from outside the picture, background),
and the others (noise, mask, erase) on the picture alone.
"""
from __future__ import annotations

import math
import re

import numpy as np

from cnnspec.errors import CnnSpecError, nearest

# name -> (argument names, lowest spatial rank of the input it applies to)
AUGMENTATIONS = {
    "flip": ((), 1),
    "vflip": ((), 2),
    "rotate": (("deg",), 2),
    "shift": (("px",), 1),
    "scale": (("lo", "hi"), 2),
    "noise": (("std",), 0),
    "mask": (("p",), 1),
    "erase": (("lo", "hi"), 2),
}
GEOMETRIC = ("flip", "vflip", "rotate", "shift", "scale")     # steps that move pixels (and masks)
_RANK_NAMES = {0: "any input", 1: "a sequence (CxL) or an image (CxHxW)", 2: "an image (CxHxW)"}


def parse_augment(items) -> list:
    """Steps as ``[(name, args), ...]`` from the train section's list or from command-line words
    such as ``flip``, ``rotate(15)``, ``scale(0.9,1.1)``; the word ``none`` alone means no steps."""
    steps = []
    for item in items or ():
        if isinstance(item, str):
            text = item.strip()
            if text == "none":
                continue
            match = re.fullmatch(r"([A-Za-z_]\w*)\s*(?:\((.*)\))?", text)
            if not match:
                raise CnnSpecError(f"cannot read augmentation {text!r}",
                                   hint="write e.g. flip, rotate(15), shift(2), scale(0.9,1.1), noise(0.05)")
            name, inside = match.group(1), match.group(2)
            args = []
            for word in filter(None, (w.strip() for w in (inside or "").split(","))):
                try:
                    args.append(float(word))
                except ValueError:
                    raise CnnSpecError(f"augmentation {text!r}: {word!r} is not a number") from None
            item = (name, tuple(args))
        name, args = item[0], tuple(item[1]) if len(item) > 1 else ()
        steps.append(_checked(name, args))
    return steps


def _checked(name: str, args: tuple) -> tuple:
    if name not in AUGMENTATIONS:
        guess = nearest(name, AUGMENTATIONS)
        raise CnnSpecError(f"unknown augmentation `{name}`",
                           hint=f"did you mean `{guess}`?" if guess else f"choose from: {', '.join(AUGMENTATIONS)}")
    names, _ = AUGMENTATIONS[name]
    if len(args) != len(names):
        wanted = f"{name}({', '.join(names)})" if names else name
        raise CnnSpecError(f"augmentation `{name}` takes {len(names)} argument(s), got {len(args)}",
                           hint=f"write {wanted}")
    if any(not isinstance(a, (int, float)) or isinstance(a, bool) for a in args):
        raise CnnSpecError(f"augmentation `{name}` takes numbers, got {args}")
    try:
        args = tuple(float(a) for a in args)
    except OverflowError:
        raise CnnSpecError(f"augmentation `{name}` takes numbers of a usable size, got {args}") from None
    if not all(math.isfinite(a) for a in args):
        raise CnnSpecError(f"augmentation {describe([(name, args)])}: its arguments must be finite numbers")
    problem = {
        "rotate": lambda deg: not 0 <= deg <= 180 and "deg must be in [0, 180]",
        "shift": lambda px: not (px >= 0 and px == int(px)) and "px must be a whole number >= 0",
        "scale": lambda lo, hi: not 0 < lo <= hi and "needs 0 < lo <= hi",
        "noise": lambda std: (not std >= 0 and "std must be >= 0") or (std > 1e30 and "std must be at most 1e30"),
        "mask": lambda p: not 0 <= p <= 1 and "p must be in [0, 1]",
        "erase": lambda lo, hi: not 0 <= lo <= hi <= 1 and "needs 0 <= lo <= hi <= 1 (fractions of the picture)",
    }.get(name, lambda *a: False)(*args)
    if problem:
        raise CnnSpecError(f"augmentation {describe([(name, args)])}: {problem}")
    return name, args


def describe(steps) -> str:
    """``flip, rotate(15)`` — the steps as they are written."""
    words = []
    for name, args in steps:
        text = ", ".join(f"{a:g}" for a in args)
        words.append(f"{name}({text})" if args else name)
    return ", ".join(words) or "none"


class Augmenter:
    """Applies ``steps`` in order to batches of samples of shape ``sample_shape``."""

    def __init__(self, steps, sample_shape):
        self.steps = parse_augment(steps)
        rank = len(sample_shape) - 1
        for name, args in self.steps:
            needed = AUGMENTATIONS[name][1]
            if rank < needed:
                raise CnnSpecError(f"augmentation {describe([(name, args)])} needs {_RANK_NAMES[needed]}; "
                                   f"the network's input is {'x'.join(map(str, sample_shape))}")
            if name == "shift" and args[0] >= min(sample_shape[1:]):
                raise CnnSpecError(f"augmentation {describe([(name, args)])} would move every pixel out of "
                                   f"the {'x'.join(map(str, sample_shape[1:]))} input",
                                   hint=f"shift by fewer than {min(sample_shape[1:])} pixels")

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, x: np.ndarray, rng: np.random.Generator, masks: np.ndarray | None = None):
        """The augmented batch; with ``masks`` (N, *spatial) class indexes of the input's size,
        ``(batch, masks)`` moved together (see the module docstring)."""
        if masks is None:
            for name, args in self.steps:
                x = STEPS[name](x, rng, *args)
            return x
        if masks.shape[1:] != x.shape[2:]:
            raise CnnSpecError(f"augmentation moves a mask with its picture: the masks are "
                               f"{'x'.join(map(str, masks.shape[1:]))}, the pictures {'x'.join(map(str, x.shape[2:]))}",
                               hint="drop the geometric steps (flip, vflip, rotate, shift, scale), or give masks "
                                    "of the input's size")
        channels, k = x.shape[1], int(masks.max(initial=0)) + 1
        classes = np.arange(k).reshape(1, k, *([1] * (masks.ndim - 1)))
        joined = np.concatenate([x, (masks[:, None] == classes).astype(x.dtype)], axis=1)
        for name, args in self.steps:
            if name in GEOMETRIC:
                joined = STEPS[name](joined, rng, *args)
            else:
                joined[:, :channels] = STEPS[name](joined[:, :channels], rng, *args)
        return np.ascontiguousarray(joined[:, :channels]), joined[:, channels:].argmax(axis=1).astype(masks.dtype)


def flip(x, rng):
    """Reverse the last axis (width, or length of a sequence) of a random half of the samples."""
    chosen = rng.random(len(x)) < 0.5
    out = x.copy()
    out[chosen] = x[chosen][..., ::-1]
    return out


def vflip(x, rng):
    chosen = rng.random(len(x)) < 0.5
    out = x.copy()
    out[chosen] = x[chosen][:, :, ::-1, :]
    return out


def shift(x, rng, px):
    """Move each sample by whole pixels (dy, dx) drawn in [-px, px]: out[i, j] = x[i - dy, j - dx]."""
    px = int(px)
    n, spatial = len(x), x.shape[2:]
    moves = rng.integers(-px, px + 1, size=(len(spatial), n))
    pad = [(0, 0), (0, 0)] + [(px, px)] * len(spatial)
    padded = np.pad(x, pad)
    samples = np.arange(n)
    if len(spatial) == 1:
        cols = np.arange(spatial[0])[None, :] + px - moves[0][:, None]             # (N, L)
        return padded[samples[:, None], :, cols].transpose(0, 2, 1).copy()
    rows = np.arange(spatial[0])[None, :] + px - moves[0][:, None]                 # (N, H)
    cols = np.arange(spatial[1])[None, :] + px - moves[1][:, None]                 # (N, W)
    out = padded[samples[:, None, None], :, rows[:, :, None], cols[:, None, :]]    # (N, H, W, C)
    return out.transpose(0, 3, 1, 2).copy()


def rotate(x, rng, deg):
    angles = np.deg2rad(rng.uniform(-deg, deg, len(x)))
    return _affine(x, angles, np.ones(len(x)))


def scale(x, rng, lo, hi):
    return _affine(x, np.zeros(len(x)), rng.uniform(lo, hi, len(x)))


def noise(x, rng, std):
    return x + rng.normal(0.0, std, x.shape).astype(x.dtype)


def mask(x, rng, p):
    """Zero each pixel (every channel of it) with probability ``p``: masking noise (Vincent et al.,
    2008, for denoising auto-encoders)."""
    keep = rng.random((len(x), 1, *x.shape[2:])) >= p
    return x * keep.astype(x.dtype)


def erase(x, rng, lo, hi):
    """Zero one rectangle per picture, as torchvision's ``RandomErasing(p=1, scale=(lo, hi),
    ratio=(0.3, 3.3), value=0)`` draws it: its area a fraction of the picture drawn in [lo, hi],
    its aspect ratio log-uniform in [0.3, 3.3], its place uniform; a side longer than the picture
    is cut to it (torchvision draws again, up to 10 times)."""
    n, _, height, width = x.shape
    area = rng.uniform(lo, hi, n) * height * width
    ratio = np.exp(rng.uniform(math.log(0.3), math.log(3.3), n))
    h = np.clip(np.round(np.sqrt(area * ratio)).astype(np.int64), 0, height)
    w = np.clip(np.round(np.sqrt(area / ratio)).astype(np.int64), 0, width)
    top = (rng.random(n) * (height - h + 1)).astype(np.int64)
    left = (rng.random(n) * (width - w + 1)).astype(np.int64)
    rows, cols = np.arange(height), np.arange(width)
    inside = (((rows[None] >= top[:, None]) & (rows[None] < (top + h)[:, None]))[:, :, None]
              & ((cols[None] >= left[:, None]) & (cols[None] < (left + w)[:, None]))[:, None, :])
    return x * (~inside[:, None]).astype(x.dtype)


def _affine(x, angles, zooms):
    """Rotate each picture by ``angles`` (radians) and zoom it by ``zooms`` about its centre,
    sampling the source bilinearly; outside the picture reads as 0."""
    n, channels, height, width = x.shape
    ys, xs = np.mgrid[0:height, 0:width]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cos = (np.cos(angles) / zooms)[:, None, None]
    sin = (np.sin(angles) / zooms)[:, None, None]
    # output pixel p reads the source at R(-angle) (p - centre) / zoom + centre
    src_y = cos * (ys - cy) - sin * (xs - cx) + cy
    src_x = sin * (ys - cy) + cos * (xs - cx) + cx
    # one ring of zeros around the picture; coordinates beyond it are clamped onto it
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    src_y = np.clip(src_y, -1, height) + 1
    src_x = np.clip(src_x, -1, width) + 1
    y0 = np.minimum(np.floor(src_y).astype(np.intp), height)
    x0 = np.minimum(np.floor(src_x).astype(np.intp), width)
    wy = (src_y - y0).astype(x.dtype)[..., None]
    wx = (src_x - x0).astype(x.dtype)[..., None]
    samples = np.arange(n)[:, None, None]
    corner = lambda dy, dx: padded[samples, :, y0 + dy, x0 + dx]                  # noqa: E731  (N, H, W, C)
    out = ((1 - wy) * ((1 - wx) * corner(0, 0) + wx * corner(0, 1))
           + wy * ((1 - wx) * corner(1, 0) + wx * corner(1, 1)))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


STEPS = {"flip": flip, "vflip": vflip, "rotate": rotate, "shift": shift, "scale": scale, "noise": noise,
         "mask": mask, "erase": erase}
