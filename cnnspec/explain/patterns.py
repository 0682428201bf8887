"""The patterns a layer's channels respond to: gradient ascent in input space (Erhan et al., 2009;
Chollet, *Deep Learning with Python*, ch. 5 "Visualizing convnet filters"; Olah et al., "Feature
Visualization", Distill 2017, for the regularisers).

For each channel c of a layer, starting from grey with a little noise, repeat ``steps`` times:

1. jitter: roll the picture by a random offset in [-jitter, jitter] pixels per axis;
2. g = d mean(activation of channel c) / d input at the rolled picture, rolled back;
3. x += lr * g / rms(g) (a normalised step: every step moves pixels by about ``lr``);
4. every ``blur_every`` steps, when ``blur`` > 0, a Gaussian blur of standard deviation ``blur``
   pixels (high frequencies that gradients favour are damped);
5. clip to ``clip`` (the range the network was trained on: [0, 1] for pictures).

All channels climb at once, one sample each, in one batch. Seeded: the same seed gives the same
pictures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnspec.errors import CnnSpecError


@dataclass
class Ascent:
    """``inputs[i]`` maximises the mean activation of ``channels[i]`` of ``layer``;
    ``objective[t, i]`` is that mean before step t (the last row: after the last step)."""
    layer: str
    channels: list
    inputs: np.ndarray             # (len(channels), *input shape)
    objective: np.ndarray          # (steps + 1, len(channels))
    settings: dict


def _positive(value, what, integer=False, zero=False):
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        kind, bound = "whole number" if integer else "number", ">=" if zero else ">"
        raise CnnSpecError(f"{what} must be a {kind} {bound} 0, got {value!r}")
    return value


def ascent(model, layer: str, channels=None, *, steps: int = 128, lr: float = 0.05, jitter: int = 1,
           blur: float = 0.0, blur_every: int = 4, clip=(0.0, 1.0), seed: int = 0) -> Ascent:
    """Gradient ascent on the mean activation of each of ``channels`` (default: all, at most 256)
    of ``layer``; see the module text for the steps."""
    layer = model.tensor_name(layer, "layer")
    shape = tuple(model.graph.nodes[layer]["output_shape"])
    if layer == model.input_name:
        raise CnnSpecError("choose a layer after the input")
    n_channels = shape[0]
    if channels is None:
        if n_channels > 256:
            raise CnnSpecError(f"`{layer}` has {n_channels} channels; choose at most 256 of them")
        channels = list(range(n_channels))
    channels = [int(c) for c in channels]
    if not channels or any(not 0 <= c < n_channels for c in channels):
        raise CnnSpecError(f"`{layer}` has channels 0..{n_channels - 1}; asked for {channels}")
    _positive(steps, "the number of steps", integer=True, zero=True)
    _positive(lr, "the step size")
    _positive(jitter, "the jitter", integer=True, zero=True)
    _positive(blur, "the blur", zero=True)
    _positive(blur_every, "blur_every", integer=True)
    lo, hi = (None, None) if clip is None else (float(clip[0]), float(clip[1]))
    spatial = model.input_shape[1:]
    rng = np.random.default_rng(seed)
    n = len(channels)
    x = (0.5 + 0.1 * rng.standard_normal((n, *model.input_shape))).astype(model.dtype)
    if clip is not None:
        np.clip(x, lo, hi, out=x)
    # the objective's gradient with respect to the layer: 1/(positions) on the channel of each sample
    seed_grad = np.zeros((n, *shape), model.dtype)
    positions = math.prod(shape[1:])
    for i, c in enumerate(channels):
        seed_grad[i, c] = 1.0 / positions
    rows = np.arange(n)
    history = np.empty((steps + 1, n))
    axes = tuple(range(2, 2 + len(spatial)))
    for t in range(steps + 1):
        shift = tuple(int(s) for s in rng.integers(-jitter, jitter + 1, len(spatial))) if jitter and t < steps else None
        here = np.roll(x, shift, axis=axes) if shift else x
        g = model.gradient(here, of=seed_grad, wrt=["input"], layer=layer)
        acts = g.activations[layer].reshape(n, n_channels, -1)
        if shift:        # the objective is reported at the unjittered picture
            acts = model.activations(x, [layer])[layer].reshape(n, n_channels, -1)
        history[t] = acts[rows, channels].mean(axis=1)
        if t == steps:
            break
        grad = g[model.input_name]
        if shift:
            grad = np.roll(grad, tuple(-s for s in shift), axis=axes)
        rms = np.sqrt((grad.astype(np.float64) ** 2).reshape(n, -1).mean(axis=1))
        x += (lr * grad / np.maximum(rms, 1e-12).reshape(n, *([1] * (grad.ndim - 1)))).astype(model.dtype)
        if blur > 0 and (t + 1) % blur_every == 0:
            from scipy.ndimage import gaussian_filter

            x[...] = gaussian_filter(x, sigma=(0, 0, *([blur] * len(spatial))), mode="nearest")
        if clip is not None:
            np.clip(x, lo, hi, out=x)
    return Ascent(layer, channels, x, history,
                  {"steps": steps, "lr": lr, "jitter": jitter, "blur": blur, "blur_every": blur_every,
                   "clip": clip, "seed": seed})
