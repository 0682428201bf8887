"""Running a network on one input: its output, its top classes, and what every layer sees."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnspec.errors import match_names


@dataclass
class Prediction:
    output: np.ndarray                      # the network's output for the sample, (*output shape)
    top: list | None = None                 # [(index, class name, score)], best first; None if not a classifier
    probabilities: bool = False             # scores are softmax probabilities
    maps: dict = field(default_factory=dict)   # layer name -> its output for the sample
    mask: np.ndarray | None = None          # segmentation: the class of each pixel (H, W)
    classes: list | None = None
    psnr: float | None = None               # reconstruction: the output against the input, dB

    def report(self) -> str:
        """The text ``cnnspec run`` prints."""
        if self.mask is not None:
            counts = np.bincount(self.mask.ravel(), minlength=len(self.output))
            names = list(self.classes or [])
            lines = [f"mask ({'x'.join(map(str, self.mask.shape))} pixels), pixels per class:"]
            for k, count in enumerate(counts):
                if count:
                    name = names[k] if k < len(names) else str(k)
                    lines.append(f"  {k:>3} {name:<12} {count:>7} ({100 * count / self.mask.size:5.1f}%)")
            return "\n".join(lines)
        if self.psnr is not None:
            return (f"reconstruction ({'x'.join(map(str, self.output.shape))}): PSNR {self.psnr:.2f} dB against "
                    f"the input (data in [0, 1]: 10 log10(1 / MSE))")
        if self.top is not None:
            what = "probability" if self.probabilities else "score"
            width = max(len(str(name)) for _, name, _ in self.top)
            lines = [f"top {len(self.top)} classes ({what}):" if len(self.top) > 1 else f"top class ({what}):"]
            for index, name, score in self.top:
                value = f"{100 * score:6.2f}%" if self.probabilities else f"{score: .4f}"
                lines.append(f"  {index:>3} {name:<{width}}  {value}")
            return "\n".join(lines)
        return describe_output(self.output)


def describe_output(output: np.ndarray) -> str:
    """The output's values per channel (small maps in full, large ones as min/mean/max)."""
    shape = "x".join(map(str, output.shape))
    if output.ndim <= 1:
        return f"output ({shape}):\n  " + np.array2string(output, precision=4, suppress_small=True)
    lines = [f"output ({shape}):"]
    for c, channel in enumerate(output):
        if channel.size <= 144:
            text = np.array2string(channel, precision=3, suppress_small=True, max_line_width=120)
            lines.append(f"  channel {c}:\n" + "\n".join("    " + line for line in text.splitlines()))
        else:
            lines.append(f"  channel {c}: min {channel.min():.4g}, mean {channel.mean():.4g}, max {channel.max():.4g}")
    return "\n".join(lines)


def is_classifier(model) -> bool:
    """Class scores: an output of shape K, Kx1 or Kx1x1 that ends in softmax or is trained with
    cross-entropy (a vector trained with mse is a regression)."""
    shape, graph = model.output_shape, model.graph
    if not shape or int(np.prod(shape[1:])) != 1:
        return False
    ends_in_softmax = graph.nodes[model.output_name]["op"] == "softmax"
    return ends_in_softmax or (graph.graph.get("train") or {}).get("loss", "cross_entropy") == "cross_entropy"


def predict(model, x: np.ndarray, *, classes=None, layers=None, top: int = 5,
            classify: bool | None = None, task: str | None = None) -> Prediction:
    """Run ``model`` in evaluation mode on one sample ``x`` (input shape, no batch axis).

    With ``layers`` (fnmatch globs) the outputs of the matching layers are kept in ``maps``. A
    classifier's (``classify``, default :func:`is_classifier`) ``top`` classes are named from
    ``classes`` when given. ``task`` (default: the network's train section's) ``segment`` gives
    ``mask``, the class of each pixel; ``reconstruct`` the ``psnr`` of the output against ``x``.
    """
    task = task or (model.graph.graph.get("train") or {}).get("task", "classify")
    x = np.asarray(x, dtype=model.dtype)[None]
    maps = activations(model, x, layers) if layers else {}
    output = model.forward(x)[0]
    result = Prediction(output, maps=maps)
    if task == "segment" and output.ndim >= 2:
        result.mask, result.classes = output.argmax(axis=0), list(classes or [])
        return result
    if task == "reconstruct" and output.shape == x.shape[1:]:
        from cnnspec.train.metrics import psnr

        result.psnr = psnr(float(np.mean((output.astype(np.float64) - x[0]) ** 2)))
        return result
    if classify if classify is not None else is_classifier(model):
        scores = output.reshape(-1)
        order = np.argsort(-scores, kind="stable")[:top]
        names = list(classes or [])
        result.top = [(int(k), names[k] if k < len(names) else str(k), float(scores[k])) for k in order]
        result.probabilities = model.graph.nodes[model.output_name]["op"] == "softmax"
    return result


def activations(model, x: np.ndarray, patterns) -> dict:
    """{layer: its output for sample 0} for the layers (and the input) that match ``patterns``,
    in network order. A pattern that matches nothing is an error."""
    chosen = match_names(model.live, patterns, "--layers")
    return {name: maps[0] for name, maps in model.activations(x, chosen).items()}


def picture_layers(model) -> list:
    """The input and the layers whose output is a picture (C x H x W) or a sequence (C x L)."""
    return [name for name in model.live if len(model.graph.nodes[name]["output_shape"]) >= 2]


def kernel_names(network, layer: str) -> list:
    """The names of a conv layer's fixed kernels, one per output channel, when its ``weights=``
    named them (``weights=[sobel_x, sobel_y]``, or one name for every filter); else []."""
    node = network.graph.nodes[layer]
    given = node.get("kwargs", {}).get("weights") if node["op"] == "conv" else None
    filters = node["output_shape"][0]
    if isinstance(given, str):
        return [given] * filters
    if isinstance(given, (list, tuple)) and len(given) == filters and all(isinstance(g, str) for g in given):
        return list(given)
    return []


# what run_log keeps of a log.json, and the types each may have
LOG_SETTINGS = {"data": (str,), "data_base": (str, type(None)), "seed": (int,), "val_split": (int, float),
                "loss": (str,), "top_k": (int,)}


def run_log(weights) -> dict:
    """What ``cnnspec train`` recorded in the ``log.json`` beside ``weights`` (or one folder up,
    for a checkpoint's weights): ``{"config": {data, data_base, seed, val_split, loss},
    "classes": [...]}`` with only well-formed entries; {} when there is none. A log.json that is
    malformed is ignored with a :class:`CnnSpecWarning` saying why."""
    import warnings

    from cnnspec.errors import CnnSpecError, CnnSpecWarning
    from cnnspec.limits import MAX_CLASSES, MAX_JSON_BYTES, read_bytes

    if weights is None:
        return {}
    folder = Path(weights).resolve().parent
    log = next((p for p in (folder / "log.json", folder.parent / "log.json") if os.path.lexists(p)), None)
    if log is None:
        return {}
    try:
        data = json.loads(read_bytes(log, "log", MAX_JSON_BYTES))
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        config, classes = data.get("config", {}), data.get("classes")
        if not isinstance(config, dict):
            raise ValueError("its `config` is not an object")
        for key, kinds in LOG_SETTINGS.items():
            value = config.get(key)
            if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise ValueError(f"its config `{key}` is {value!r}")
        if not 0 <= (config.get("seed") or 0) < 2 ** 63 or not 0 <= (config.get("val_split") or 0) < 1 \
                or not 0 <= (config.get("top_k") or 0) <= 10 ** 6:
            raise ValueError("its config `seed`, `val_split` or `top_k` is out of range")
        if classes is not None and not (isinstance(classes, list) and len(classes) <= MAX_CLASSES and
                                        all(isinstance(c, (str, int, float)) for c in classes)):
            raise ValueError("its `classes` is not a list of names")
    except (CnnSpecError, ValueError, UnicodeDecodeError) as exc:
        reason = exc.message if isinstance(exc, CnnSpecError) else str(exc)
        warnings.warn(f"{log}: ignoring this log.json, which is not one cnnspec train wrote ({reason})",
                      CnnSpecWarning, stacklevel=2)
        return {}
    return {"config": {key: config.get(key) for key in LOG_SETTINGS}, "classes": classes}


def class_names(network, weights=None) -> list | None:
    """Class names for a network's outputs: from the ``log.json`` written beside the weights by
    ``cnnspec train``, else from the train section's data set when that is ``shapes`` or ``digits``;
    None where their number is not the number of the network's outputs (a GAN's discriminator)."""
    names = _class_names(network, weights)
    return names if names and len(names) == network.output_shape[0] else None


def _class_names(network, weights) -> list | None:
    classes = run_log(weights).get("classes")
    if classes:
        return [str(c) for c in classes]
    spec = str(network.train_config.get("data", "shapes"))
    if spec == "digits":
        return [str(i) for i in range(10)]
    if spec == "shapes" or spec.startswith("shapes:"):
        from cnnspec.data.shapes import SHAPE_CLASSES

        chosen = [item.strip() for item in spec.partition(":")[2].split(",")
                  if item.strip() in SHAPE_CLASSES]
        return chosen or list(SHAPE_CLASSES)
    return None
