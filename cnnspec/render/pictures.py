"""PNG pictures of training and of what a network sees: learning curves, feature maps, the first
layer's filters and a confusion matrix.

matplotlib is imported inside each function (never at import time) and drives its Agg renderer
directly through :class:`matplotlib.figure.Figure`, so no window opens and pyplot's global state is
left alone.
"""
from __future__ import annotations

import math

import numpy as np

MAX_CHANNELS = 64                # channels drawn per layer in a feature-map grid
MAX_FILTERS = 64                 # filters drawn in a filter grid
COLUMNS = 8


def check_picture_path(path) -> str:
    """The suffix of picture ``path`` if matplotlib can write it, else a CnnSpecError naming the
    file: commands call it before they compute or write anything, so that a bad name leaves no
    other output half-written."""
    import os
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    from cnnspec.errors import CnnSpecError

    path = Path(os.fspath(path))
    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix[1:].lower()
    if suffix not in kinds:
        raise CnnSpecError(f"cannot write a picture as {'.' + suffix if suffix else 'a file without a suffix'}",
                           file=str(path), hint="name it .png (or " + ", ".join("." + k for k in sorted(kinds)
                                                                                  if k != "png") + ")")
    return suffix


def save_figure(fig, path) -> None:
    """``fig.savefig(path)``, atomically (the picture whole or not at all), with what can go
    wrong said as a CnnSpecError naming the file: a suffix matplotlib cannot write (it would
    otherwise append ``.png`` to a name without one), a folder, a file that cannot be written.
    Missing folders are made, as ``render`` and ``report`` make them."""
    import os
    from pathlib import Path

    from cnnspec import atomic

    path = Path(os.fspath(path))
    suffix = check_picture_path(path)
    if path.is_dir():
        raise atomic.write_error(IsADirectoryError(21, "Is a directory"), path, "picture")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise atomic.write_error(exc, path.parent, "folder") from None
    atomic.write_atomic(path, lambda tmp: fig.savefig(tmp, format=suffix), "picture")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _annotate(ax, panel: np.ndarray) -> None:
    """Write each value in its cell (small panels only), dark on light and light on dark."""
    lo, hi = float(panel.min()), float(panel.max())
    middle = (lo + hi) / 2
    size = 8 if max(panel.shape) <= 4 else 6
    for (i, j), value in np.ndenumerate(panel):
        text = f"{value:.0f}" if value == round(value) else f"{value:.1f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=size,
                color="black" if value > middle else "white")


def _panel(ax, panel: np.ndarray, title: str | None = None, annotate: bool = False, cmap="gray") -> None:
    ax.imshow(panel, cmap=cmap, interpolation="nearest")
    if annotate:
        _annotate(ax, panel)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_curves(history, path) -> None:
    """Loss and accuracy per epoch, training and validation. ``history`` is a list of dicts with
    ``epoch``, ``train_loss``, ``train_acc`` and (optional, may be None) ``val_loss``, ``val_acc``;
    accuracies are fractions."""
    fig = _figure(10, 4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    first = history[0] if history else {}
    # other tasks (dsl.md §10.4): PSNR, mean IoU, a GAN's two losses and D's outputs
    measure, scale, measure_name = next(((key, s, n) for key, s, n in (
        ("psnr", 1, "PSNR (dB)"), ("miou", 100, "mean IoU (%)"), ("acc", 100, "accuracy (%)"))
        if f"train_{key}" in first), ("acc", 100, "accuracy (%)"))
    if "d_loss" in first:
        for key in ("d_loss", "g_loss"):
            loss_ax.plot(epochs, [row[key] for row in history], marker="o", label=key)
        for key, label in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
            acc_ax.plot(epochs, [row[key] for row in history], marker="o", label=label)
        measure_name = "discriminator output"
    for key, label in (("train", "training"), ("val", "validation")):
        losses = [row.get(f"{key}_loss") for row in history]
        accs = [row.get(f"{key}_{measure}") for row in history]
        accs = [None if v is None else v * scale / 100 for v in accs]
        if any(v is not None for v in losses):
            loss_ax.plot(epochs, [np.nan if v is None else v for v in losses], marker="o", label=label)
        if any(v is not None for v in accs):
            acc_ax.plot(epochs, [np.nan if v is None else 100 * v for v in accs], marker="o", label=label)
    for ax, name in ((loss_ax, "loss"), (acc_ax, measure_name)):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
    save_figure(fig, path)


def plot_feature_maps(maps: dict, path, title: str | None = None, labels: dict | None = None) -> None:
    """A grid per layer of its channels. ``maps`` maps a layer name to one sample's output,
    (C, H, W) for pictures or (C, L) for sequences (drawn as one C x L strip). Panels of at most
    8 x 8 values show the numbers. ``labels`` may name a layer's channels (e.g. its fixed kernels)."""
    blocks = []                                      # (name, panels, is_sequence)
    for name, array in maps.items():
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 3:
            blocks.append((name, array[:MAX_CHANNELS], False, array.shape))
        elif array.ndim == 2:
            blocks.append((name, array[None], True, array.shape))
    if not blocks:
        raise ValueError("no layer with a picture- or sequence-shaped output to draw")
    columns = min(COLUMNS, max(len(panels) for _, panels, _, _ in blocks))
    rows = [math.ceil(len(panels) / columns) for _, panels, _, _ in blocks]
    side = 1.6 if max(rows) <= 2 else 1.1              # inches per panel: smaller for many channels
    heights = [side * r + 0.45 for r in rows]
    fig = _figure(side * columns + 0.4, sum(heights) + (0.4 if title else 0))
    if title:
        fig.suptitle(title)
    subfigs = fig.subfigures(len(blocks), 1, height_ratios=heights, squeeze=False)[:, 0]
    for subfig, (name, panels, is_sequence, shape), n_rows in zip(subfigs, blocks, rows):
        shown = "" if shape[0] <= MAX_CHANNELS or is_sequence else f", first {MAX_CHANNELS}"
        subfig.suptitle(f"{name}  ({'x'.join(map(str, shape))}{shown})", fontsize=10)
        axes = subfig.subplots(1, 1, squeeze=False) if is_sequence else subfig.subplots(n_rows, columns, squeeze=False)
        for k, ax in enumerate(axes.flat):
            if k < len(panels):
                panel = panels[k]
                names = (labels or {}).get(name) or ()
                caption = f"channel {k}" + (f": {names[k]}" if k < len(names) else "")
                _panel(ax, panel, None if is_sequence else caption,
                       annotate=panel.size <= 64, cmap="viridis" if is_sequence else "gray")
            else:
                ax.axis("off")
    save_figure(fig, path)


def plot_filters(weight: np.ndarray, path, layer: str = "conv") -> None:
    """The kernels of a conv layer, weight (F, C, KH, KW) (or (F, C, K) in 1-D): one panel per
    filter, in colour for 3 input channels, else one panel per filter and input channel (first 8)."""
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim == 3:
        weight = weight[:, :, None, :]
    filters, channels = weight.shape[:2]
    weight = weight[:MAX_FILTERS]
    if channels == 3:
        lo, hi = weight.min(), weight.max()
        panels = [((w - lo) / (hi - lo + 1e-12)).transpose(1, 2, 0) for w in weight]
        titles = [f"filter {f}" for f in range(len(weight))]
        columns = min(COLUMNS, len(panels))
    elif channels == 1:
        panels, titles = list(weight[:, 0]), [f"filter {f}" for f in range(len(weight))]
        columns = min(COLUMNS, len(panels))
    else:
        columns = min(COLUMNS, channels)
        panels = [weight[f, c] for f in range(len(weight)) for c in range(columns)]
        titles = [f"f{f} c{c}" for f in range(len(weight)) for c in range(columns)]
    n_rows = math.ceil(len(panels) / columns)
    fig = _figure(1.5 * columns + 0.4, 1.5 * n_rows + 0.6)
    fig.suptitle(f"{layer}: {filters} filters of {'x'.join(map(str, weight.shape[1:]))}", fontsize=10)
    annotate = channels != 3 and weight.shape[2] * weight.shape[3] <= 25 and len(panels) <= 32
    for k, ax in enumerate(fig.subplots(n_rows, columns, squeeze=False).flat):
        if k < len(panels):
            _panel(ax, panels[k], titles[k], annotate=annotate)
        else:
            ax.axis("off")
    save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, classes, path, title: str = "confusion matrix") -> None:
    """Counts of true class (rows) against predicted class (columns)."""
    matrix = np.asarray(matrix)
    n = len(matrix)
    side = max(4.0, 0.5 * n + 2)
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    if n <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > threshold else "black")
    save_figure(fig, path)
