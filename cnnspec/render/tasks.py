"""Pictures of the tasks beyond classification (dsl.md §10.4): reconstructions beside their
inputs, predicted masks beside the true ones, and grids of generated samples.

Pictures are (N, C, H, W) in [0, 1] (values outside are clipped); one channel is drawn grey,
three as RGB, any other count by its first channel. matplotlib (for the labelled figures) is
imported inside the functions; the sample grids are written with Pillow alone.
"""
from __future__ import annotations

import numpy as np

from cnnspec.render.pictures import _figure, save_figure

MASK_COLOURS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                         [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
                         [250, 190, 212], [0, 128, 128]], np.float64) / 255


def to_display(picture: np.ndarray) -> np.ndarray:
    """One (C, H, W) picture as an (H, W) grey or (H, W, 3) RGB array in [0, 1]."""
    picture = np.clip(np.asarray(picture, np.float64), 0.0, 1.0)
    if picture.ndim == 2:
        return picture
    if picture.shape[0] == 3:
        return picture.transpose(1, 2, 0)
    return picture[0]


def mask_colours(mask: np.ndarray) -> np.ndarray:
    """An (H, W) mask of class indexes as an RGB picture: 0 black, each class its own colour."""
    return MASK_COLOURS[np.asarray(mask) % len(MASK_COLOURS)]


def _show(ax, picture, title=None):
    shown = to_display(picture) if np.asarray(picture).ndim != 3 or np.asarray(picture).shape[-1] != 3 else picture
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_ylabel(title, fontsize=8)


def plot_reconstructions(clean, corrupted, outputs, path, title: str | None = None) -> None:
    """Rows: the inputs, (with ``corrupted``) what the network was fed, its reconstructions."""
    rows = [("input", clean)] + ([("corrupted", corrupted)] if corrupted is not None else []) + \
           [("reconstruction", outputs)]
    n = len(clean)
    fig = _figure(1.3 * n + 0.6, 1.3 * len(rows) + 0.3)
    axes = np.asarray(fig.subplots(len(rows), n, squeeze=False))
    for r, (name, pictures) in enumerate(rows):
        for i in range(n):
            _show(axes[r, i], pictures[i], name if i == 0 else None)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_segmentations(pictures, masks, predicted, path, classes=None, title: str | None = None) -> None:
    """Rows: the pictures, the true masks (unless ``masks`` is None: the predicted ones alone)
    and the predicted masks overlaid on the pictures."""
    n = len(pictures)
    fig = _figure(1.3 * n + 0.6 if n > 1 else 4.5, 4.2)
    axes = np.asarray(fig.subplots(3, n, squeeze=False))
    for i in range(n):
        base = to_display(pictures[i])
        grey = base if base.ndim == 2 else base.mean(axis=2)
        _show(axes[0, i], pictures[i], "picture" if i == 0 else None)
        shown = predicted if masks is None else masks
        _show(axes[1, i], mask_colours(shown[i]), ("predicted mask" if masks is None else "true mask") if i == 0 else None)
        overlay = 0.5 * np.repeat(grey[:, :, None], 3, axis=2) + 0.5 * mask_colours(predicted[i])
        _show(axes[2, i], overlay, "predicted" if i == 0 else None)
    if title:
        names = f" (classes: {', '.join(f'{k} {c}' for k, c in enumerate(classes))})" if classes else ""
        fig.suptitle(title + names, fontsize=8)
    save_figure(fig, path)


def grid(pictures, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) pictures in [0, 1] tiled into one uint8 picture, ``columns`` to a row (default
    about the square root of N), ``pad`` pixels between them."""
    pictures = np.asarray(pictures)
    n = len(pictures)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    shown = [to_display(p) for p in pictures]
    h, w = shown[0].shape[:2]
    colour = shown[0].ndim == 3
    canvas = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad) + ((3,) if colour else ()))
    for k, picture in enumerate(shown):
        r, c = divmod(k, columns)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = picture
    return np.round(canvas * 255).astype(np.uint8)


def save_grid(pictures, path, columns: int | None = None, scale: int = 2) -> None:
    """Write :func:`grid` of ``pictures`` as a PNG, each pixel ``scale`` x ``scale``."""
    from PIL import Image

    image = grid(pictures, columns)
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    Image.fromarray(image).save(path, format="PNG")
