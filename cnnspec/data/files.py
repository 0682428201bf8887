"""Readers for data sets kept in files: ``.npz``, MNIST IDX, CIFAR-10 python batches, image folders,
and scikit-learn's bundled digits.

Each reader returns a :class:`Raw`: samples as float32 (images scaled to [0, 1]), int64 labels,
class names, and the official test split where the format has one. A file that is missing,
truncated or not what it claims to be raises a :class:`CnnSpecError` naming the file.

Bad files cannot exhaust the machine: only regular files are read; what a file announces (an
IDX header's shape, an array's header, a picture's size) is checked against what it holds and
against the memory available before anything that size is made; labels name at most
``MAX_CLASSES`` classes; samples must be finite numbers (NaN or infinity would make every loss NaN).
"""
from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import pickletools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnspec.errors import CnnSpecError
from cnnspec.limits import MAX_CLASSES, open_regular, read_bytes, require_memory
from cnnspec.npz import read_npy
from cnnspec.npz import read_npz as load_npz

MAX_PICKLE_BYTES = 2 ** 30           # a CIFAR-10 batch is 30 MB

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class Raw:
    x: np.ndarray                       # (N, *sample shape) float32
    y: np.ndarray                       # (N,) int64
    classes: list
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    test_file: str | None = None        # the file of the test split's samples, where it is one


def _scaled(array: np.ndarray) -> np.ndarray:
    """uint8 pictures to [0, 1]; any other numbers as they are, in float32."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32)


def _labels(values, path, n: int, name: str = "y") -> np.ndarray:
    """Check labels are whole numbers 0..K-1 (K <= MAX_CLASSES), one per sample; return them as
    int64. A Python list must be flat: a list of lists (which a tiny pickle can make huge by
    sharing) is refused before NumPy would build it."""
    if isinstance(values, (list, tuple)):
        if len(values) != n:
            raise CnnSpecError(f"{len(values)} labels for {n} samples: expected one label per sample",
                               file=str(path))
        if not all(type(v) is int for v in values):
            bad = next(v for v in values if type(v) is not int)
            raise CnnSpecError(f"labels must be whole numbers (class indexes), found a {type(bad).__name__}",
                               file=str(path))
    y = np.asarray(values)
    if y.ndim != 1 or len(y) != n:
        raise CnnSpecError(f"labels have shape {y.shape}, expected one label per sample ({n},)", file=str(path))
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y)))):
        raise CnnSpecError(f"labels must be whole numbers (class indexes), got dtype {y.dtype}", file=str(path))
    if n and y.min() < 0:
        raise CnnSpecError(f"labels must be >= 0, found {y.min():g}", file=str(path))
    if n and y.max() >= MAX_CLASSES:
        top = int(y.max()) if y.dtype.kind != "f" else f"{y.max():g}"
        raise CnnSpecError(f"labels run to {top}; expected class indexes 0..K-1 with K <= {MAX_CLASSES:,}",
                           file=str(path), hint="labels are class indexes, not class codes: number the "
                                                "classes 0, 1, 2, ...")
    return y.astype(np.int64)


def _masks(values, path, n: int, name: str = "y") -> np.ndarray:
    """Check segmentation masks: (N, H, W) whole numbers 0..K-1 (K <= MAX_CLASSES), one mask per
    sample; return them as int64."""
    y = np.asarray(values)
    if y.ndim != 3 or len(y) != n:
        raise CnnSpecError(f"array {name!r} has shape {'x'.join(map(str, y.shape)) or 'scalar'}; segmentation needs "
                           f"one mask of class indexes per sample, shape ({n}, H, W)", file=str(path),
                           hint="a mask holds the class of each pixel: 0 for the background, 1, 2, ... for the objects")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y)))):
        raise CnnSpecError(f"masks ({name!r}) must hold whole numbers (class indexes), got dtype {y.dtype}",
                           file=str(path))
    if y.size and (y.min() < 0 or y.max() >= MAX_CLASSES):
        bad = y.min() if y.min() < 0 else y.max()
        where = tuple(int(i) for i in np.argwhere(y == bad)[0])
        raise CnnSpecError(f"mask pixel {where} of {name!r} is {bad:g}; masks hold class indexes 0..K-1 "
                           f"(K <= {MAX_CLASSES:,})", file=str(path))
    return y.astype(np.int64)


def _samples(x, path, name: str = "x") -> np.ndarray:
    """Check an array of samples: numbers, at least one axis (N, ...), finite."""
    if x.dtype.kind not in "iuf":
        raise CnnSpecError(f"array {name!r} must hold numbers, got dtype {x.dtype}", file=str(path))
    if x.ndim == 0:
        raise CnnSpecError(f"array {name!r} is a single number: it must hold samples, shape (N, ...)",
                           file=str(path))
    _finite(x, path, f"array {name!r}")
    return x


def _finite(x: np.ndarray, path, what: str) -> None:
    """NaN or infinity in inputs make every loss NaN: refuse them, saying how many and where."""
    if x.dtype.kind != "f" or np.isfinite(x).all():
        return
    nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    first = np.unravel_index(int(np.argmin(np.isfinite(x).reshape(-1))), x.shape)
    counts = ", ".join(filter(None, [nan and f"{nan:,} NaN", inf and f"{inf:,} infinite"]))
    raise CnnSpecError(f"{what} holds values that are not finite numbers ({counts}; the first at index "
                       f"{tuple(int(i) for i in first)})", file=str(path),
                       hint="replace or drop those samples (e.g. numpy.nan_to_num) before training")


# -- .npz ---------------------------------------------------------------------------------------

def read_npz(path: Path, targets: str = "labels") -> Raw:
    """Arrays ``x`` (N, ...) and ``y``; optional ``classes`` (names, strings) and
    ``x_test``/``y_test``. uint8 ``x`` is scaled to [0, 1]; float ``x`` is used as it is.

    ``targets`` says what ``y`` holds: ``labels``, (N,) class indexes; ``masks``, (N, H, W) class
    indexes per pixel (segmentation); ``optional``, labels or nothing (a data set of images alone,
    for reconstruction and GANs: ``y`` is then all zeros and ``classes`` empty)."""
    arrays = load_npz(path, "data set")
    needed = ("x",) if targets == "optional" else ("x", "y")
    missing = [key for key in needed if key not in arrays]
    if missing:
        what = "labels" if targets == "labels" else "masks, (N, H, W) class indexes per pixel"
        raise CnnSpecError(f"the .npz file has no array {' or '.join(repr(k) for k in missing)} "
                           f"(it has: {', '.join(sorted(arrays)) or 'nothing'})", file=str(path),
                           hint=f"save it with numpy.savez(path, x=samples, y={what})")
    read_y = _masks if targets == "masks" else _labels
    x = _samples(arrays["x"], path)
    y = read_y(arrays["y"], path, len(x)) if "y" in arrays else np.zeros(len(x), np.int64)
    x_test = y_test = None
    if "x_test" in arrays or "y_test" in arrays:
        if "x_test" not in arrays or ("y_test" not in arrays and "y" in arrays):
            raise CnnSpecError("the .npz file must hold both 'x_test' and 'y_test', or neither", file=str(path))
        x_test = _scaled(_samples(arrays["x_test"], path, "x_test"))
        y_test = (read_y(arrays["y_test"], path, len(x_test), "y_test") if "y_test" in arrays
                  else np.zeros(len(x_test), np.int64))
    if "y" not in arrays:
        return Raw(_scaled(x), y, [], x_test, y_test, _test_file(path, x_test))
    n_classes = int(max([y.max(initial=-1)] + ([y_test.max(initial=-1)] if y_test is not None else []))) + 1
    names = arrays.get("classes")
    if names is not None and (names.ndim != 1 or len(names) > MAX_CLASSES):
        raise CnnSpecError(f"array 'classes' must be a list of at most {MAX_CLASSES:,} names, got shape "
                           f"{names.shape}", file=str(path))
    classes = [str(c) for c in names] if names is not None else [str(i) for i in range(n_classes)]
    if len(classes) < n_classes:
        raise CnnSpecError(f"array 'classes' names {len(classes)} classes but the labels go up to "
                           f"{n_classes - 1}", file=str(path))
    return Raw(_scaled(x), y, classes, x_test, y_test, _test_file(path, x_test))


def _test_file(path: Path, x_test) -> str | None:
    return None if x_test is None else str(path)


# -- MNIST IDX ----------------------------------------------------------------------------------

_IDX_NAMES = {
    "train images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(folder: Path, what: str) -> Path:
    for name in _IDX_NAMES[what]:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise CnnSpecError(f"no MNIST {what} file here (looked for {_IDX_NAMES[what][0]} or "
                       f"{_IDX_NAMES[what][0]}.gz)", file=str(folder))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX file (gzipped or not) of unsigned bytes with ``ndim`` dimensions. The header's
    shape must agree with the data the file holds (a gzipped file is decompressed no further than
    that), and fit in the memory available."""
    try:
        with open_regular(path, "IDX file") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
            handle.seek(0)
            stream = gzip.GzipFile(fileobj=handle, mode="rb") if gzipped else handle
            head = stream.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00":
                raise CnnSpecError("not an IDX file: it must start with two zero bytes (magic number)",
                                   file=str(path))
            type_code, dims = head[2], head[3]
            if type_code != 0x08:
                raise CnnSpecError(f"IDX data type 0x{type_code:02x} is not supported (MNIST uses 0x08, "
                                   f"unsigned bytes)", file=str(path))
            if dims != ndim:
                raise CnnSpecError(f"IDX file has {dims} dimension(s), expected {ndim} "
                                   f"(magic number 0x{0x800 + ndim:08x})", file=str(path))
            sizes = stream.read(4 * dims)
            if len(sizes) < 4 * dims:
                raise CnnSpecError("IDX file is truncated inside its header", file=str(path))
            shape = tuple(int.from_bytes(sizes[4 * i:4 * i + 4], "big") for i in range(dims))
            count = math.prod(shape)                    # Python ints: 2^31 x 2^31 x 4 does not wrap
            header = 4 + 4 * dims
            if not gzipped:
                held = os.fstat(handle.fileno()).st_size - header
                if held != count:
                    raise CnnSpecError(f"IDX file holds {held} data bytes but its header announces "
                                       f"shape {shape} ({count} bytes): "
                                       f"{'truncated' if held < count else 'trailing data'}", file=str(path))
            require_memory(count, f"this IDX file (its header announces shape {shape})", file=str(path),
                           hint="a decompression bomb, or a file too large for this machine")
            raw = stream.read(count + 1)                # at most one byte more than announced
    except CnnSpecError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise CnnSpecError(f"cannot read this IDX file (corrupt or truncated gzip?): {exc}", file=str(path)) from None
    if len(raw) != count:
        raise CnnSpecError(f"IDX file holds {len(raw) if len(raw) < count else 'more than ' + str(count)} data "
                           f"bytes but its header announces shape {shape} ({count} bytes): "
                           f"{'truncated' if len(raw) < count else 'trailing data'}", file=str(path))
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _read_idx_pair(folder: Path, split: str):
    """(images, labels, the images' file) of the split ``train`` or ``test``."""
    images_path, labels_path = _find_idx(folder, f"{split} images"), _find_idx(folder, f"{split} labels")
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise CnnSpecError(f"{len(labels)} labels for {len(images)} images in {images_path.name}",
                           file=str(labels_path))
    return _scaled(images[:, None]), labels.astype(np.int64), images_path


def read_mnist(folder: Path) -> Raw:
    """The four MNIST IDX files (also Fashion-MNIST, which uses the same names and format)."""
    if not folder.is_dir():
        raise CnnSpecError("no such folder (mnist:DIR needs the four IDX files in DIR)", file=str(folder))
    x, y, _ = _read_idx_pair(folder, "train")
    x_test, y_test, test_path = _read_idx_pair(folder, "test")
    n_classes = int(max(y.max(initial=-1), y_test.max(initial=-1))) + 1
    return Raw(x, y, [str(i) for i in range(n_classes)], x_test, y_test, str(test_path))


# -- CIFAR-10 python batches --------------------------------------------------------------------

class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers, bytes, str, numbers and numpy arrays of plain dtypes, nothing
    else: a pickle can name any importable callable, so plain ``pickle.load`` runs arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),           # how protocol-2 pickles written by Python 3 spell bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data is allowed)")


def _unpickle(path: Path) -> dict:
    if not os.path.lexists(path):
        raise CnnSpecError("missing CIFAR-10 batch file", file=str(path))
    raw = read_bytes(path, "CIFAR-10 batch", MAX_PICKLE_BYTES)
    try:
        # every count in the pickle (bytes, strings) checked against the data it holds, before
        # anything is built: a header claiming 2^62 bytes allocates nothing
        for _ in pickletools.genops(io.BytesIO(raw)):
            pass
        data = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except MemoryError:
        raise CnnSpecError("cannot read this CIFAR-10 batch: it builds more than the memory available",
                           file=str(path)) from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as exc:
        raise CnnSpecError(f"cannot read this CIFAR-10 batch (corrupt, truncated or not plain data): {exc}",
                           file=str(path)) from None
    if not isinstance(data, dict):
        raise CnnSpecError(f"a CIFAR-10 batch must be a dict, this is a {type(data).__name__}", file=str(path))
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in data.items()}


def _cifar_batch(path: Path):
    batch = _unpickle(path)
    if "data" not in batch or "labels" not in batch:
        raise CnnSpecError(f"a CIFAR-10 batch needs keys 'data' and 'labels' (it has: "
                           f"{', '.join(map(str, batch))})", file=str(path))
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CnnSpecError(f"'data' must be a uint8 array of shape (N, 3072), got {got}", file=str(path))
    labels = _labels(batch["labels"], path, len(data))
    return _scaled(data.reshape(-1, 3, 32, 32)), labels


def read_cifar10(folder: Path) -> Raw:
    """``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (the "python version"), in DIR or in
    DIR/cifar-10-batches-py; class names from ``batches.meta`` when present."""
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise CnnSpecError("no such folder (cifar10:DIR needs data_batch_1..5 and test_batch in DIR)",
                           file=str(folder))
    parts = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _cifar_batch(folder / "test_batch")
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    if (folder / "batches.meta").is_file():
        names = _unpickle(folder / "batches.meta").get("label_names")
        if isinstance(names, list) and all(isinstance(n, (bytes, str)) for n in names):
            classes = [n.decode() if isinstance(n, bytes) else n for n in names]
    return Raw(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
               classes, x_test, y_test, str(folder / "test_batch"))


# -- image folder -------------------------------------------------------------------------------

def read_image(path: Path, shape) -> np.ndarray:
    """One picture as float32 (C, H, W) in [0, 1]: grey for C = 1, RGB for C = 3, resized to H x W."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    if channels not in (1, 3):
        raise CnnSpecError(f"pictures can feed a 1-channel (grey) or 3-channel (RGB) input, "
                           f"not {channels} channels", file=str(path))
    try:
        with open_regular(path, "picture") as handle, Image.open(handle) as picture:
            pixels = picture.size[0] * picture.size[1]
            require_memory(4 * pixels, f"this picture ({picture.size[0]}x{picture.size[1]} pixels)",
                           file=str(path))
            sixteen = picture.mode.startswith("I;16") or (picture.mode == "I" and picture.format == "PNG")
            if picture.mode in ("I", "F") and not sixteen:      # (older Pillows open a 16-bit PNG as I)
                # Pillow's convert("L"/"RGB") clips these to 0..255 instead of scaling them
                kind = "32-bit integer" if picture.mode == "I" else "floating-point"
                raise CnnSpecError(f"this is a {kind} picture (Pillow mode {picture.mode}), whose values have no "
                                   "standard range to scale to [0, 1]", file=str(path),
                                   hint="save it as an 8- or 16-bit picture, or give the samples as a .npy/.npz "
                                        "array")
            if sixteen:
                # 16 bits per sample (PNG, TIFF): value / 65535, as the PNG specification scales it;
                # Pillow's convert("L"/"RGB") would clip every value above 255 to white
                grey = Image.fromarray(np.asarray(picture, dtype=np.float32) / 65535.0)
                if grey.size != (width, height):
                    grey = grey.resize((width, height), Image.Resampling.BILINEAR)
                array = np.clip(np.asarray(grey, dtype=np.float32), 0.0, 1.0)[None]
                return np.repeat(array, channels, axis=0)
            picture = picture.convert("L" if channels == 1 else "RGB")
            if picture.size != (width, height):
                picture = picture.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(picture, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise CnnSpecError(f"this picture is too large to read: {exc}", file=str(path),
                           hint="a decompression bomb, or resize the picture first") from None
    except MemoryError:
        raise CnnSpecError("this picture does not fit in the memory available", file=str(path)) from None
    except CnnSpecError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CnnSpecError(f"cannot read this picture (corrupt or not an image?): {exc}", file=str(path)) from None
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return _scaled(array)


def read_folder(folder: Path, shape) -> Raw:
    """One sub-folder of pictures per class (class names = sub-folder names, sorted), each picture
    converted to grey or RGB by the input's channel count and resized to the input's size."""
    if not folder.is_dir():
        raise CnnSpecError("no such folder (folder:DIR needs one sub-folder of pictures per class)",
                           file=str(folder))
    if len(shape) != 3:
        raise CnnSpecError(f"an image folder gives pictures (CxHxW); the network's input is "
                           f"{'x'.join(map(str, shape))}", file=str(folder))
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CnnSpecError("no class sub-folders here (folder:DIR needs DIR/<class>/<picture>)", file=str(folder))
    pictures, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CnnSpecError(f"class folder '{name}' holds no pictures ({', '.join(IMAGE_SUFFIXES)})",
                               file=str(folder / name))
        pictures += [read_image(path, shape) for path in files]
        labels += [label] * len(files)
    return Raw(np.stack(pictures), np.asarray(labels, dtype=np.int64), classes)


def read_mask(path: Path, size) -> np.ndarray:
    """One segmentation mask: a single-channel picture (grey ``L``, palette ``P``, 16- or 32-bit
    integers) whose pixel values are class indexes, resized to ``size`` = (H, W) by nearest
    neighbour (never blending two classes). Colour (RGB) masks are refused."""
    from PIL import Image, UnidentifiedImageError

    height, width = size
    try:
        with open_regular(path, "mask") as handle, Image.open(handle) as mask:
            require_memory(8 * mask.size[0] * mask.size[1], f"this mask ({mask.size[0]}x{mask.size[1]} pixels)",
                           file=str(path))
            if mask.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise CnnSpecError(f"a mask must be a single-channel picture of class indexes (grey or palette "
                                   f"PNG), this one is {mask.mode}", file=str(path),
                                   hint="save it with Image.fromarray(mask.astype(np.uint8)) (mode L)")
            original, binary = mask.size, mask.mode == "1"
            if binary:
                mask = mask.convert("L")
            if mask.size != (width, height):
                mask = mask.resize((width, height), Image.Resampling.NEAREST)
            array = np.asarray(mask).astype(np.int64)
            if binary:                                  # black and white: classes 0 and 1
                array = (array > 0).astype(np.int64)
    except CnnSpecError:
        raise
    except Image.DecompressionBombError as exc:
        raise CnnSpecError(f"this mask is too large to read: {exc}", file=str(path)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CnnSpecError(f"cannot read this mask (corrupt or not an image?): {exc}", file=str(path)) from None
    if array.size and (array.min() < 0 or array.max() >= MAX_CLASSES):
        raise CnnSpecError(f"mask values run to {array.max()}; they must be class indexes below {MAX_CLASSES:,}",
                           file=str(path))
    return array, original


def read_segmentation_folder(folder: Path, shape, mask_size) -> Raw:
    """``DIR/images/`` and ``DIR/masks/``: a mask per picture, of the same file name up to the
    suffix (``images/cat1.jpg`` and ``masks/cat1.png``), of the picture's size, its pixels class
    indexes. Pictures are resized to the input (bilinear), masks to ``mask_size`` (the output's
    H x W; nearest)."""
    if not folder.is_dir():
        raise CnnSpecError("no such folder (folder:DIR for segmentation needs DIR/images and DIR/masks)",
                           file=str(folder))
    if len(shape) != 3:
        raise CnnSpecError(f"an image folder gives pictures (CxHxW); the network's input is "
                           f"{'x'.join(map(str, shape))}", file=str(folder))
    missing = [name for name in ("images", "masks") if not (folder / name).is_dir()]
    if missing:
        raise CnnSpecError(f"segmentation data needs the sub-folders images/ and masks/; {missing[0]}/ is missing",
                           file=str(folder), hint="folder:DIR with DIR/images/NAME.png and DIR/masks/NAME.png")
    listing = {}
    for kind in ("images", "masks"):
        found = {}
        for path in sorted((folder / kind).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.stem in found:
                raise CnnSpecError(f"two {kind[:-1]}s named {path.stem}: {found[path.stem].name} and {path.name}",
                                   file=str(path))
            found[path.stem] = path
        listing[kind] = found
    images, masks = listing["images"], listing["masks"]
    if not images:
        raise CnnSpecError(f"images/ holds no pictures ({', '.join(IMAGE_SUFFIXES)})", file=str(folder / "images"))
    for stem, path in images.items():
        if stem not in masks:
            raise CnnSpecError(f"no mask for this picture (expected masks/{stem}.png)", file=str(path))
    for stem, path in masks.items():
        if stem not in images:
            raise CnnSpecError(f"no picture for this mask (expected images/{stem} with a picture's suffix)",
                               file=str(path))
    pictures, labels = [], []
    for stem, path in images.items():
        from PIL import Image

        pictures.append(read_image(path, shape))
        mask, original = read_mask(masks[stem], mask_size)
        with open_regular(path, "picture") as handle, Image.open(handle) as picture:
            size = picture.size
        if size != original:
            raise CnnSpecError(f"this mask is {original[0]}x{original[1]} pixels, its picture {path.name} "
                               f"{size[0]}x{size[1]}: a mask labels every pixel of its picture",
                               file=str(masks[stem]))
        labels.append(mask)
    y = np.stack(labels)
    n_classes = int(y.max(initial=0)) + 1
    return Raw(np.stack(pictures), y, [str(i) for i in range(n_classes)])


# -- scikit-learn digits ------------------------------------------------------------------------

def read_digits() -> Raw:
    """scikit-learn's bundled 8x8 digits (1797 samples, values 0..16 scaled to [0, 1])."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise CnnSpecError("the `digits` data set needs scikit-learn, which is not installed",
                           file="digits", hint="pip install cnnspec[digits]") from None
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    return Raw(x, bunch.target.astype(np.int64), [str(i) for i in range(10)])


def read_array(path: Path, shape) -> np.ndarray:
    """One input sample from ``.npy`` (C x H x W, or H x W for one channel, with or without a batch
    axis of 1) or from a picture; uint8 is scaled to [0, 1], floats are used as they are."""
    if path.suffix.lower() != ".npy":
        if len(shape) != 3:
            raise CnnSpecError(f"a picture can only feed an image input (CxHxW); the network's input is "
                               f"{'x'.join(map(str, shape))}", file=str(path), hint="give a .npy array")
        return read_image(path, shape)
    array = read_npy(path, ".npy")
    if array.dtype.kind not in "iuf":
        raise CnnSpecError(f"the array must hold numbers, got dtype {array.dtype}", file=str(path))
    _finite(array, path, "the array")
    shape = tuple(shape)
    accepted = [shape, (1,) + shape] + ([shape[1:]] if len(shape) >= 2 and shape[0] == 1 else [])
    if array.shape != shape:
        if array.shape in accepted:
            array = array.reshape(shape)
        else:
            raise CnnSpecError(f"the array has shape {'x'.join(map(str, array.shape))}, the network's input "
                               f"is {'x'.join(map(str, shape))}", file=str(path))
    return _scaled(array)


__all__ = ["Raw", "read_npz", "read_idx", "read_mnist", "read_cifar10", "read_folder", "read_image",
           "read_mask", "read_segmentation_folder", "read_digits", "read_array", "IMAGE_SUFFIXES"]
