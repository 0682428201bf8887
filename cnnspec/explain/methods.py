"""What a network looks at: Grad-CAM, saliency maps (vanilla and SmoothGrad) and occlusion.

Each function explains one input ``x`` (the network's input shape) for one class and returns an
:class:`Explanation` whose ``map`` has the input's spatial shape (H x W, or L for sequences). The
class is the predicted one unless ``target`` says otherwise; the score explained is the class's
logit (the input of a final softmax, as Selvaraju et al. and Captum do) or, with
``score="probability"``, the network's output. Everything runs in evaluation mode, on
:meth:`cnnspec.engine.Model.gradient` and :meth:`~cnnspec.engine.Model.activations`.

The definitions, and the PyTorch implementations the tests hold them to (Captum 0.9):

* **Grad-CAM** (Selvaraju et al., 2017) at a layer with activations A (K x h x w):
  alpha_k = mean over positions of d score / d A_k, map = ReLU(sum_k alpha_k A_k), upsampled to
  the input (bilinear, half-pixel centres: ``F.interpolate(..., mode="bilinear",
  align_corners=False)``, as OpenCV's ``resize``; or ``"nearest"``). Captum: ``LayerGradCam(...,
  relu_attributions=True)`` then ``LayerAttribution.interpolate``.
* **Saliency** (Simonyan et al., 2014): max over channels of |d score / d x|. Captum:
  ``Saliency(abs=True)``, max over channels.
* **SmoothGrad** (Smilkov et al., 2017): the mean of |d score / d x| over ``samples`` noisy copies
  x + n, n ~ N(0, sigma^2), sigma = ``noise`` x (max(x) - min(x)) (``noise`` itself for a constant
  input), the noise being ``numpy.random.default_rng(seed).standard_normal((samples, *x.shape)) *
  sigma``; then max over channels. Captum: ``NoiseTunnel(Saliency(abs=True))`` with
  ``nt_type="smoothgrad"``, ``stdevs=sigma``.
* **Occlusion** (Zeiler & Fergus, 2014): a window (all channels) slides over the input with a
  stride, the covered values replaced by ``baseline``; each position's attribution is the mean,
  over the windows covering it, of score(x) - score(occluded x). Windows start at 0, s, 2s, ...,
  ceil((D - w) / s) + 1 of them per axis, the last one cut at the border. Captum: ``Occlusion``
  with ``sliding_window_shapes=(C, *window)``, ``strides=(C, *stride)``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from cnnspec.errors import CnnSpecError

METHODS = ("gradcam", "saliency", "smoothgrad", "occlusion")
SCORES = ("logit", "probability")
UPSAMPLING = ("bilinear", "nearest")


@dataclass
class Explanation:
    """One explained input: ``map`` (input's spatial shape, float64) for class ``target``."""
    method: str
    map: np.ndarray
    target: int                    # the class explained
    predicted: int                 # the class the network predicts for x
    score: float                   # the target's score (logit or probability, see ``score_kind``)
    score_kind: str = "logit"
    layer: str | None = None       # Grad-CAM's layer
    raw: np.ndarray | None = None  # Grad-CAM at the layer's resolution
    settings: dict = field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------------------

def _spatial(model) -> tuple:
    shape = model.input_shape
    if len(shape) not in (2, 3):
        raise CnnSpecError(f"`{model.name}` takes vectors ({'x'.join(map(str, shape))}); these explanations "
                           f"need a picture (CxHxW) or a sequence (CxL) input")
    return shape[1:]


def _check_x(model, x) -> np.ndarray:
    x = np.asarray(x)
    if x.shape != model.input_shape:
        raise CnnSpecError(f"explain one input of shape {'x'.join(map(str, model.input_shape))}; "
                           f"received {'x'.join(map(str, x.shape))}")
    if x.dtype.kind not in "fiu":
        raise CnnSpecError(f"the input must hold numbers, got {x.dtype}")
    return x.astype(model.dtype)


def _score_layer(model, score: str) -> str:
    if score not in SCORES:
        raise CnnSpecError(f"unknown score `{score}`: choose {' or '.join(SCORES)}")
    return model.scores_name if score == "logit" else model.output_name


def _classes(model) -> int:
    shape = model.graph.nodes[model.scores_name]["output_shape"]
    if len(shape) != 1 and math.prod(shape[1:]) != 1:
        raise CnnSpecError(f"`{model.name}` does not output class scores (its output is "
                           f"{'x'.join(map(str, model.output_shape))}); there is no class to explain")
    return shape[0]


def _target(model, x, target, score: str):
    """(target class, predicted class, the target's score) for one checked input."""
    k = _classes(model)
    layer = _score_layer(model, score)
    values = model.activations(x[None], [layer])[layer][0].reshape(-1)
    if not np.all(np.isfinite(values)):
        _not_finite(model, x, layer)
    predicted = int(np.argmax(values))
    if target is None:
        target = predicted
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < k:
        raise CnnSpecError(f"class {target!r} is not one of `{model.name}`'s classes 0..{k - 1}")
    return int(target), predicted, float(values[target]), layer


def _not_finite(model, x, layer):
    """A CnnSpecError naming the first layer whose output for ``x`` is not finite (its parameters
    hold NaN or infinity, or it overflows): no class is predicted and no map means anything."""
    if not np.all(np.isfinite(x)):
        raise CnnSpecError("the input holds values that are not finite numbers (NaN or infinity)")
    names = [name for name in model.live if model.graph.nodes[name]["op"] != "input"]
    outputs = model.activations(x[None], names)
    first = next((name for name in names if not np.all(np.isfinite(outputs[name]))), layer)
    bad = sorted(f"{first}.{key}" for key, value in model.params.get(first, {}).items()
                 if not np.all(np.isfinite(value)))
    raise CnnSpecError(f"`{model.name}`'s scores for this input are not finite numbers: the first layer whose "
                       f"output is not finite is `{first}`" + (f" ({', '.join(bad)} {'hold' if len(bad) > 1 else 'holds'} NaN or infinity)" if bad else ""),
                       hint="check the weights (a run that diverged?)")


def _unit(model, layer, target):
    """The ``of`` index of class ``target`` in ``layer`` (K, or K x 1 x 1)."""
    shape = model.graph.nodes[layer]["output_shape"]
    return (target,) + (0,) * (len(shape) - 1)


def resize_matrix(n_in: int, n_out: int, mode: str = "bilinear") -> np.ndarray:
    """The (n_out, n_in) matrix of 1-D resampling as ``torch.nn.functional.interpolate`` does it:
    ``"bilinear"`` (linear per axis, align_corners=False: source = (i + 0.5) * n_in / n_out - 0.5,
    clamped at 0) or ``"nearest"`` (source = floor(i * n_in / n_out))."""
    if mode not in UPSAMPLING:
        raise CnnSpecError(f"unknown upsampling `{mode}`: choose {' or '.join(UPSAMPLING)}")
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        if mode == "nearest":
            m[i, min(int(math.floor(i * scale)), n_in - 1)] = 1.0
            continue
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[i, i0] += 1.0 - frac
        m[i, i1] += frac
    return m


def upsample(values: np.ndarray, size, mode: str = "bilinear") -> np.ndarray:
    """A map (h, w) or (l,) resampled to ``size`` (see :func:`resize_matrix`)."""
    values = np.asarray(values, dtype=np.float64)
    out = values
    for axis, n in enumerate(size):
        m = resize_matrix(values.shape[axis], n, mode)
        out = np.moveaxis(np.tensordot(m, np.moveaxis(out, axis, 0), axes=1), 0, axis)
    return out


def last_conv(model) -> str:
    """The last conv layer the output depends on (Grad-CAM's default layer)."""
    convs = [name for name in model.live if model.graph.nodes[name]["op"] == "conv"]
    if not convs:
        raise CnnSpecError(f"`{model.name}` has no conv layer for Grad-CAM", hint="choose one with --layer")
    return convs[-1]


# -- the methods -----------------------------------------------------------------------------------

def gradcam(model, x, target=None, layer=None, *, score="logit", upsampling="bilinear",
            relu: bool = True) -> Explanation:
    """Grad-CAM of class ``target`` at ``layer`` (default: the last conv layer); see the module text.
    ``relu=False`` keeps the negative part too (Captum's ``relu_attributions=False``)."""
    size = _spatial(model)
    x = _check_x(model, x)
    target, predicted, value, score_layer = _target(model, x, target, score)
    layer = last_conv(model) if layer is None else model.tensor_name(layer, "layer")
    shape = model.graph.nodes[layer]["output_shape"]
    if len(shape) != len(size) + 1:
        axes = "rows and columns" if len(size) == 2 else "positions"
        raise CnnSpecError(f"Grad-CAM needs a layer with channels and {axes}; "
                           f"`{layer}` outputs {'x'.join(map(str, shape))}",
                           hint=f"the last conv layer is `{last_conv(model)}`")
    if layer == score_layer:
        raise CnnSpecError(f"Grad-CAM needs a layer before the scores; `{layer}` is the scores")
    g = model.gradient(x[None], of=_unit(model, score_layer, target), wrt=[layer], layer=score_layer)
    grads = g[layer][0].astype(np.float64)
    acts = g.activations[layer][0].astype(np.float64)
    weights = grads.reshape(len(grads), -1).mean(axis=1)
    raw = np.tensordot(weights, acts, axes=1)
    if relu:
        raw = np.maximum(raw, 0.0)
    return Explanation("gradcam", upsample(raw, size, upsampling), target, predicted, value, score, layer, raw,
                       {"upsampling": upsampling, "relu": bool(relu)})


def saliency(model, x, target=None, *, score="logit") -> Explanation:
    """Vanilla saliency: max over channels of |d score / d input|."""
    _spatial(model)
    x = _check_x(model, x)
    target, predicted, value, score_layer = _target(model, x, target, score)
    g = model.gradient(x[None], of=_unit(model, score_layer, target), wrt=["input"], layer=score_layer)
    grad = np.abs(g[model.input_name][0].astype(np.float64))
    return Explanation("saliency", grad.max(axis=0), target, predicted, value, score)


def smoothgrad_sigma(x, noise: float) -> float:
    """SmoothGrad's standard deviation: ``noise`` times the input's range (``noise`` when constant)."""
    spread = float(np.max(x) - np.min(x))
    return noise * spread if spread > 0 else noise


def smoothgrad(model, x, target=None, *, samples: int = 50, noise: float = 0.15, seed: int = 0,
               score="logit", batch: int = 64) -> Explanation:
    """SmoothGrad: the mean over ``samples`` noisy copies of |d score / d input|, max over channels."""
    _spatial(model)
    x = _check_x(model, x)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise CnnSpecError(f"SmoothGrad needs at least 1 sample, got {samples!r}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise CnnSpecError(f"the noise level must be a number >= 0, got {noise!r}")
    target, predicted, value, score_layer = _target(model, x, target, score)
    sigma = smoothgrad_sigma(x, noise)
    rng = np.random.default_rng(seed)
    noisy = x[None] + (rng.standard_normal((samples, *x.shape)) * sigma).astype(model.dtype)
    g = model.gradient(noisy, of=_unit(model, score_layer, target), wrt=["input"], layer=score_layer, batch=batch)
    mean = np.abs(g[model.input_name].astype(np.float64)).mean(axis=0)
    return Explanation("smoothgrad", mean.max(axis=0), target, predicted, value, score,
                       settings={"samples": samples, "noise": noise, "sigma": sigma, "seed": seed})


def _per_axis(value, rank: int, what: str) -> tuple:
    values = (value,) * rank if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != rank or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                                  for v in values):
        raise CnnSpecError(f"the occlusion {what} must be {rank} positive integers, got {value!r}")
    return tuple(int(v) for v in values)


def occlusion_windows(size, window, stride) -> list:
    """Per axis, the [start, stop) of every window position, as Captum places them."""
    axes = []
    for n, w, s in zip(size, window, stride):
        count = math.ceil((n - w) / s) + 1
        axes.append([(k * s, min(k * s + w, n)) for k in range(count)])
    return axes


def occlusion(model, x, target=None, *, window=4, stride=2, baseline: float = 0.0, score="logit",
              batch: int = 256) -> Explanation:
    """Occlusion sensitivity (see the module text): positive where hiding the input lowers the score."""
    size = _spatial(model)
    x = _check_x(model, x)
    window, stride = _per_axis(window, len(size), "window"), _per_axis(stride, len(size), "stride")
    for n, w, s in zip(size, window, stride):
        if w > n:
            raise CnnSpecError(f"the occlusion window {'x'.join(map(str, window))} is larger than the input "
                               f"{'x'.join(map(str, size))}")
        if s > w and n > w:
            raise CnnSpecError(f"the occlusion stride {'x'.join(map(str, stride))} is larger than the window "
                               f"{'x'.join(map(str, window))}: some positions would never be hidden")
    if not (isinstance(baseline, (int, float)) and math.isfinite(baseline)):
        raise CnnSpecError(f"the occlusion baseline must be a number, got {baseline!r}")
    target, predicted, value, score_layer = _target(model, x, target, score)
    boxes = [tuple(slice(a, b) for a, b in box) for box in itertools.product(*occlusion_windows(size, window, stride))]
    total = np.zeros(size)
    count = np.zeros(size)
    for start in range(0, len(boxes), batch):
        part = boxes[start:start + batch]
        hidden = np.repeat(x[None], len(part), axis=0)
        for i, box in enumerate(part):
            hidden[(i, slice(None), *box)] = baseline
        scores = model.activations(hidden, [score_layer])[score_layer].reshape(len(part), -1)[:, target]
        for box, s in zip(part, scores.astype(np.float64)):
            total[box] += value - s
            count[box] += 1
    return Explanation("occlusion", total / count, target, predicted, value, score,
                       settings={"window": window, "stride": stride, "baseline": float(baseline)})


def explain(model, x, method: str, target=None, **options) -> Explanation:
    """``gradcam``, ``saliency``, ``smoothgrad`` or ``occlusion`` by name."""
    functions = {"gradcam": gradcam, "saliency": saliency, "smoothgrad": smoothgrad, "occlusion": occlusion}
    if method not in functions:
        raise CnnSpecError(f"unknown method `{method}`: choose {', '.join(METHODS)}")
    return functions[method](model, x, target, **options)
