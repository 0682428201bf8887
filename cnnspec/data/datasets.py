"""One entry point for every data set: :func:`load_dataset` reads a data spec and returns a
:class:`Dataset` whose arrays fit the network's input.

Data specs (the train section's ``data`` key and ``--data``):

=========================  ======================================================================
``shapes``                 built-in synthetic figures at the network's input size (the default)
``shapes:plus,x,square``   only these classes, labelled 0, 1, 2 in the order written
``shapes:n=2000``          2000 samples in all (items combine: ``shapes:plus,x,n=600``)
``digits``                 scikit-learn's 8x8 handwritten digits (``pip install cnnspec[digits]``)
``PATH.npz``               arrays ``x`` (N, ...) and ``y`` (N,); optional ``classes``, ``x_test``, ``y_test``
``mnist:DIR``              the four MNIST IDX files, gzipped or not
``cifar10:DIR``            CIFAR-10's python batches ``data_batch_1..5`` and ``test_batch``
``folder:DIR``             one sub-folder of pictures per class, resized to the input size
=========================  ======================================================================

Scaling: pictures stored as bytes (IDX, CIFAR, image files, uint8 arrays) are divided by 255,
digits by 16, so every input lies in [0, 1]; float arrays from ``.npz``/``.npy`` are used as they
are. Nothing is standardised with data-set statistics, so a weights file is all ``run`` and
``evaluate`` need to treat new inputs exactly as training did.

Validation: a seeded random ``val_split`` fraction of the training samples is held out. Formats
with an official test split (MNIST, CIFAR-10, ``x_test`` in a ``.npz``) keep it apart as ``test``.

Tasks (dsl.md §10.4): ``task="segment"`` reads a mask per sample into ``y`` (N, H, W): from
``shapes`` (0 background, k+1 the figure of class k), a ``.npz`` whose ``y`` is (N, H, W), or
``folder:DIR`` holding ``images/`` and ``masks/``. ``reconstruct`` and ``gan`` need images alone:
labels are kept where the data has them (a conditional GAN's), and a ``.npz`` may hold ``x`` alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnspec.data import files
from cnnspec.data.shapes import SHAPE_CLASSES, make_shapes
from cnnspec.errors import CnnSpecError, nearest, plural
from cnnspec.limits import require_memory

SHAPES_SAMPLES = 8000            # default size of the `shapes` data set
KINDS = ("shapes", "digits", "mnist", "cifar10", "folder")
TASKS = ("classify", "reconstruct", "segment", "gan")
MASK_FORMS = "shapes, a .npz whose y holds masks (N x H x W) or folder:DIR with images/ and masks/"
FORMS = "shapes, shapes:CLASS,..., digits, PATH.npz, mnist:DIR, cifar10:DIR, folder:DIR"


def fmt_shape(shape) -> str:
    return "x".join(str(v) for v in shape)


@dataclass
class Dataset:
    """Training, validation and (where the format has one) test arrays, fitted to the input shape.

    ``x_*`` are float32 (N, *input shape); ``y_*`` int64 (N,) class indexes into ``classes``, or
    for ``task == "segment"`` masks (N, H, W) of class indexes per pixel. A data set of images
    alone (``reconstruct``, ``gan``) has no ``classes`` and zeros for ``y``.
    """

    spec: str
    classes: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    task: str = "classify"

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def split(self, name: str):
        """``(x, y)`` of the split called ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise CnnSpecError(f"unknown split {name!r}: choose train, val or test")
        x, y = getattr(self, f"x_{name}"), getattr(self, f"y_{name}")
        if x is None or len(x) == 0:
            raise CnnSpecError(f"data set {self.spec!r} has no {name} samples",
                               hint="set val_split above 0" if name == "val" else None)
        return x, y

    def describe(self) -> str:
        parts = [f"{len(self.x_train)} train", f"{len(self.x_val)} val"]
        if self.x_test is not None:
            parts.append(f"{len(self.x_test)} test")
        text = f"{self.spec}: {' / '.join(parts)} samples of {fmt_shape(self.sample_shape)}"
        if self.task == "segment":
            return text + f" with {fmt_shape(self.y_train.shape[1:])} masks of {plural(len(self.classes), 'class', 'classes')}"
        return text + (f", {plural(len(self.classes), 'class', 'classes')}" if self.task == "classify" or self.classes else "")


def load_dataset(spec: str | None, input_shape, *, seed: int = 0, val_split: float = 0.1,
                 base_dir: str | Path | None = None, output_shape=None, task: str = "classify") -> Dataset:
    """Read the data set ``spec`` (see the module docstring; None means ``shapes``) for a network
    whose per-sample input shape is ``input_shape``. Relative paths are taken from ``base_dir``
    (default: the working directory). With ``output_shape`` the labels (a classifier's) or masks
    (``task="segment"``, which needs it) are checked to fit it.
    """
    spec = (spec or "shapes").strip()
    input_shape = tuple(input_shape)
    if task not in TASKS:
        raise CnnSpecError(f"unknown task {task!r}: choose {', '.join(TASKS)}")
    if not 0.0 <= float(val_split) < 1.0:
        raise CnnSpecError(f"val_split must be in [0, 1), got {val_split}")
    if task == "segment" and (output_shape is None or len(tuple(output_shape)) < 2):
        shown = "not given" if output_shape is None else fmt_shape(output_shape)
        raise CnnSpecError(f"segmentation gives a class score per pixel: the network's output must be KxHxW "
                           f"(K classes), here it is {shown}",
                           hint="end the network with conv(K, 1x1) -> softmax at the masks' size")
    raw = _read(spec, input_shape, seed, Path(base_dir) if base_dir else Path.cwd(), task,
                tuple(output_shape)[1:] if task == "segment" else None)
    x = fit_to_input(raw.x, input_shape, spec)
    x_test = fit_test_split(raw, input_shape, spec) if raw.x_test is not None else None
    n_val = int(round(len(x) * float(val_split)))
    if val_split and n_val == 0 and len(x) > 1:
        n_val = 1
    order = np.random.default_rng([seed, 0x5917]).permutation(len(x))
    val, train = order[:n_val], order[n_val:]
    if len(train) == 0:
        raise CnnSpecError(f"data set {spec!r} has {len(x)} sample(s): none left for training "
                           f"after val_split={val_split}")
    data = Dataset(spec, list(raw.classes), x[train], raw.y[train], x[val], raw.y[val], x_test, raw.y_test,
                   task=task)
    if task == "segment":
        check_masks(data, output_shape)
    elif output_shape is not None and task == "classify":
        check_labels(data, output_shape)
    return data


def _read(spec: str, input_shape, seed: int, base_dir: Path, task: str = "classify",
          mask_size=None) -> files.Raw:
    kind, sep, rest = spec.partition(":")
    segment = task == "segment"
    if spec.lower().endswith(".npz"):
        targets = "masks" if segment else "labels" if task == "classify" else "optional"
        return files.read_npz(_path(spec, base_dir), targets)
    if kind == "shapes":
        return _read_shapes(rest if sep else "", input_shape, seed, masks=segment)
    if segment and (kind in ("digits", "mnist", "cifar10") or (kind == "folder" and rest)):
        if kind == "folder":
            return files.read_segmentation_folder(_path(rest, base_dir), input_shape, mask_size)
        raise CnnSpecError(f"data set {spec!r} has no masks for segmentation", hint=f"segmentation reads {MASK_FORMS}")
    if kind == "digits" and not sep:
        return files.read_digits()
    if kind in ("mnist", "cifar10", "folder") and rest:
        folder = _path(rest, base_dir)
        if kind == "mnist":
            return files.read_mnist(folder)
        if kind == "cifar10":
            return files.read_cifar10(folder)
        return files.read_folder(folder, input_shape)
    guess = nearest(kind, KINDS)
    hint = f"did you mean `{guess}`?" if guess and guess != kind else f"data specs are: {FORMS}"
    if kind in ("mnist", "cifar10", "folder"):
        hint = f"write {kind}:DIR, the folder holding the files"
    raise CnnSpecError(f"unknown data set {spec!r}", hint=hint)


def _path(text: str, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base_dir / path


def check_spec(spec: str | None, input_shape, base_dir: str | Path | None = None) -> None:
    """What can be told about the data spec ``spec`` without reading the data (``cnnspec check``):
    a known kind, shapes' classes and sizes, and a file or folder that exists."""
    spec = (spec or "shapes").strip()
    base = Path(base_dir) if base_dir else Path.cwd()
    kind, sep, rest = spec.partition(":")
    if spec.lower().endswith(".npz"):
        if not _path(spec, base).is_file():
            raise CnnSpecError(f"no such data file: {_path(spec, base)}", hint=_relative_hint(spec))
    elif kind == "shapes":
        _shapes_options(rest if sep else "", input_shape)
    elif kind in ("mnist", "cifar10", "folder") and rest:
        if not _path(rest, base).is_dir():
            raise CnnSpecError(f"{kind}: no such folder: {_path(rest, base)}", hint=_relative_hint(rest))
    elif not (kind == "digits" and not sep):
        _read(spec, input_shape, 0, base)                  # the error for an unknown spec


def _relative_hint(path: str) -> str | None:
    if Path(path).expanduser().is_absolute():
        return None
    return "a relative path in a train section is read from the .cnn file's folder"


def _shapes_options(options: str, input_shape) -> tuple:
    """(classes, samples) of ``shapes[:ITEM,...]``, an item being a class name or ``n=SAMPLES``."""
    classes, n = [], SHAPES_SAMPLES
    for item in filter(None, (part.strip() for part in options.split(","))):
        if item.startswith("n="):
            try:
                n = int(item[2:])
            except ValueError:
                n = 0
            if n < 1:
                raise CnnSpecError(f"shapes: {item!r} must be a positive number of samples, e.g. n=2000")
        elif item not in SHAPE_CLASSES:
            guess = nearest(item, SHAPE_CLASSES)
            raise CnnSpecError(f"shapes has no class {item!r}",
                               hint=(f"did you mean `{guess}`? " if guess else "")
                               + f"its classes are: {', '.join(SHAPE_CLASSES)}")
        elif item in classes:
            raise CnnSpecError(f"shapes: class {item!r} is listed twice")
        else:
            classes.append(item)
    classes = classes or list(SHAPE_CLASSES)
    if len(input_shape) != 3 or min(input_shape[1:]) < 8:
        raise CnnSpecError(f"the shapes data set draws pictures CxHxW of at least 8x8; the network's input "
                           f"is {fmt_shape(input_shape)}",
                           hint="give the network an image input such as 1x28x28, or use another data set")
    per_picture = 4 * math.prod(input_shape)           # float32; chunks of drawing buffers, then the splits
    require_memory(per_picture * (2 * n + 6 * min(n, 512)),
                   f"the shapes data set ({n:,} pictures of {fmt_shape(input_shape)})",
                   hint="draw fewer pictures (shapes:n=500) or give the network a smaller input")
    return classes, n


def _read_shapes(options: str, input_shape, seed: int, masks: bool = False) -> files.Raw:
    """``shapes[:ITEM,...]`` where an item is a class name or ``n=SAMPLES``; with ``masks`` the
    labels are masks (0 background, k+1 the figure of class k) and the classes start with
    ``background``."""
    classes, n = _shapes_options(options, input_shape)
    if masks:
        require_memory(8 * n * math.prod(input_shape[1:]), f"the masks of the shapes data set ({n:,} of "
                       f"{fmt_shape(input_shape[1:])})", hint="draw fewer pictures (shapes:n=500)")
        x, _, y = make_shapes(n, input_shape, seed=seed, classes=classes, masks=True)
        return files.Raw(x, y, ["background", *classes])
    x, y = make_shapes(n, input_shape, seed=seed, classes=classes)
    return files.Raw(x, y, classes)


def fit_to_input(x: np.ndarray, input_shape, spec: str) -> np.ndarray:
    """``x`` (N, ...) arranged as (N, *input_shape): as it is, with a missing channel axis of 1
    added, from channels-last (N, H, W, C) to channels-first, or flattened for a flat input.
    Otherwise an error naming both shapes."""
    input_shape = tuple(input_shape)
    sample = tuple(x.shape[1:])
    if sample == input_shape:
        return x
    if (1,) + sample == input_shape:
        return x[:, None]
    if len(input_shape) == 3 and sample == input_shape[1:] + input_shape[:1]:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if len(input_shape) == 1 and int(np.prod(sample)) == input_shape[0]:
        return x.reshape(len(x), -1)
    raise CnnSpecError(f"data set {spec!r} has samples of shape {fmt_shape(sample) or 'scalar'}, "
                       f"but the network's input is {fmt_shape(input_shape)}",
                       hint="change the network's `input` line to the data's shape, or pick a data set that fits")


def fit_test_split(raw, input_shape, spec: str) -> np.ndarray:
    """The test split's samples arranged as the train split's (which fit the input): a test
    split of another shape is an error saying so, naming the test split and its file."""
    try:
        return fit_to_input(raw.x_test, input_shape, spec)
    except CnnSpecError:
        raise CnnSpecError(f"data set {spec!r}: the train and test samples differ in shape: the test split has "
                           f"samples of shape {fmt_shape(raw.x_test.shape[1:]) or 'scalar'}, the train split "
                           f"{fmt_shape(raw.x.shape[1:]) or 'scalar'} (which fits the network's input "
                           f"{fmt_shape(input_shape)})", file=raw.test_file,
                           hint="give the test samples the train samples' shape; the network's input is "
                                "right for the train samples") from None


def check_masks(data: Dataset, output_shape) -> None:
    """The network's output must be K x H x W with the masks' H x W and K above every mask value."""
    output_shape = tuple(output_shape)
    masks = [data.y_train, data.y_val] + ([data.y_test] if data.y_test is not None else [])
    size = tuple(data.y_train.shape[1:])
    if tuple(output_shape[1:]) != size:
        raise CnnSpecError(f"data set {data.spec!r} has masks of {fmt_shape(size)} pixels, but the network's output "
                           f"is {fmt_shape(output_shape)}: segmentation needs one class score per pixel, "
                           f"Kx{fmt_shape(size)}", hint="make the output as large as the masks (upsample, "
                                                        "conv_transpose), or the masks as large as the output")
    top = max(int(m.max(initial=0)) for m in masks)
    if top >= output_shape[0]:
        k = output_shape[0]
        raise CnnSpecError(f"data set {data.spec!r} has masks with class {top}, but the network's output has "
                           f"{k} channel{'s' if k != 1 else ''} (classes 0..{k - 1})",
                           hint=f"give the last layer {top + 1} filters: conv({top + 1}, 1x1)")
    n = max(top + 1, len(data.classes))
    data.classes = list(data.classes) + [str(i) for i in range(len(data.classes), max(n, output_shape[0]))]


def check_labels(data: Dataset, output_shape) -> None:
    """The network's output must be a vector of class scores, K or Kx1x1, with K >= the classes."""
    output_shape = tuple(output_shape)
    labels = [data.y_train, data.y_val] + ([data.y_test] if data.y_test is not None else [])
    n_classes = max(len(data.classes), 1 + max(int(y.max(initial=-1)) for y in labels))
    if not output_shape or int(np.prod(output_shape[1:])) != 1:
        raise CnnSpecError(f"data set {data.spec!r} has {n_classes} classes, but the network's output is "
                           f"{fmt_shape(output_shape)}, not a vector of class scores",
                           hint=f"end the network with flatten -> dense({n_classes}) -> softmax")
    if n_classes > output_shape[0]:
        raise CnnSpecError(f"data set {data.spec!r} has {n_classes} classes (labels 0..{n_classes - 1}), "
                           f"but the network's output has {output_shape[0]} units (shape {fmt_shape(output_shape)})",
                           hint=f"end the network with dense({n_classes})")
