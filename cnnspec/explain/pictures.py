"""PNG pictures of explanations, of gradient-ascent patterns and of receptive fields (matplotlib's
Agg renderer through :class:`matplotlib.figure.Figure`, imported on use, as in cnnspec.render)."""
from __future__ import annotations

import math

import numpy as np

from cnnspec.render.pictures import _figure, save_figure

TITLES = {"gradcam": "Grad-CAM", "saliency": "saliency |d score / d input|",
          "smoothgrad": "SmoothGrad", "occlusion": "occlusion: score drop"}


def _image(x: np.ndarray):
    """(C, H, W) -> what imshow takes: (H, W) grey for one channel, (H, W, 3) in [0, 1] for three
    (others: the first channel)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 3:
        lo, hi = x.min(), x.max()
        if lo < 0 or hi > 1:
            x = (x - lo) / (hi - lo + 1e-12)
        return x.transpose(1, 2, 0), None
    return x[0], "gray"


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def plot_explanation(x, explanation, path, title: str = "", classes=None) -> None:
    """Input, heatmap (with its colour scale) and the heatmap over the input, side by side."""
    x = np.asarray(x, dtype=np.float64)
    heat = explanation.map
    signed = explanation.method == "occlusion"
    if signed:
        limit = float(np.abs(heat).max()) or 1.0
        cmap, vmin, vmax = "RdBu_r", -limit, limit
    else:
        cmap, vmin, vmax = "jet", 0.0, float(heat.max()) or 1.0
    name = lambda k: f"{k} {classes[k]}" if classes and k < len(classes) else str(k)   # noqa: E731
    label = TITLES.get(explanation.method, explanation.method)
    if explanation.layer:
        label += f" at {explanation.layer}"
    caption = f"{label}, class {name(explanation.target)} ({explanation.score_kind} {explanation.score:.3g})"
    if x.ndim == 2:                                           # a sequence: C x L, heat L
        fig = _figure(9, 3.6)
        fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=9)
        top, bottom = fig.subplots(2, 1, height_ratios=[max(1, min(x.shape[0], 8)), 1], sharex=True)
        top.imshow(x, aspect="auto", cmap="viridis", interpolation="nearest")
        top.set_ylabel("channel")
        image = bottom.imshow(heat[None], aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        bottom.set_yticks([])
        bottom.set_xlabel("position")
        fig.colorbar(image, ax=[top, bottom], shrink=0.8)
        save_figure(fig, path)
        return
    picture, grey = _image(x)
    fig = _figure(9, 3.5)
    fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=9)
    left, middle, right = fig.subplots(1, 3)
    left.imshow(picture, cmap=grey, interpolation="nearest")
    left.set_title(f"input, predicted {name(explanation.predicted)}", fontsize=8)
    image = middle.imshow(heat, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    middle.set_title(TITLES.get(explanation.method, explanation.method), fontsize=8)
    fig.colorbar(image, ax=middle, shrink=0.8)
    right.imshow(picture, cmap=grey, interpolation="nearest")
    right.imshow(heat, cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.5, interpolation="bilinear")
    right.set_title("over the input", fontsize=8)
    for ax in (left, middle, right):
        _bare(ax)
    save_figure(fig, path)


def plot_ascent(result, path, title: str = "", columns: int = 8) -> None:
    """One panel per channel: the input that maximises it (each stretched to its own range), with
    the mean activation reached."""
    inputs = np.asarray(result.inputs, dtype=np.float64)
    n = len(inputs)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig = _figure(1.45 * columns + 0.3, 1.55 * rows + 0.7)
    fig.suptitle(title or f"{result.layer}: inputs that maximise each channel's mean activation", fontsize=10)
    for k, ax in enumerate(fig.subplots(rows, columns, squeeze=False).flat):
        _bare(ax)
        if k >= n:
            ax.axis("off")
            continue
        x = inputs[k]
        if x.ndim == 2:
            ax.imshow(x, aspect="auto", cmap="viridis", interpolation="nearest")
        else:
            lo, hi = x.min(), x.max()
            picture, grey = _image((x - lo) / (hi - lo + 1e-12))
            ax.imshow(picture, cmap=grey, interpolation="nearest")
        ax.set_title(f"ch {result.channels[k]}: {result.objective[-1, k]:.3g}", fontsize=7)
    save_figure(fig, path)


def _limits(first: int, last: int, n: int) -> tuple:
    return (-0.5 if first >= 0 else first - 0.7), (n - 0.5 if last <= n - 1 else last + 0.7)


def plot_field(x, view, path, title: str = "") -> None:
    """The input with the unit's analysed field (a box; dashed where it reaches into the padding)
    beside the effective field |d unit / d input| with the same box."""
    from matplotlib.patches import Rectangle

    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        _plot_field_sequence(x, view, path, title)
        return
    effective, box, unclipped = view.effective, view.box, view.unclipped
    picture, grey = _image(x)
    fig = _figure(8, 4.2)
    where = ",".join(map(str, view.position))
    size = "x".join(str(b - a + 1) for a, b in view.unclipped)
    fig.suptitle(title or f"{view.layer} at {where}: analysed field {size}", fontsize=10)
    left, right = fig.subplots(1, 2)
    left.imshow(picture, cmap=grey, interpolation="nearest")
    left.set_title("input and the analysed field", fontsize=8)
    image = right.imshow(effective, cmap="magma", interpolation="nearest")
    fig.colorbar(image, ax=right, shrink=0.8)
    nonzero = np.argwhere(effective != 0)
    if len(nonzero):
        lo, hi = nonzero.min(axis=0), nonzero.max(axis=0)
        extent = "x".join(str(int(b - a + 1)) for a, b in zip(lo, hi))
        right.set_title(f"effective field |d unit / d input|: nonzero over {extent}", fontsize=8)
    else:
        right.set_title("effective field |d unit / d input|: zero for this input", fontsize=8)
    for ax in (left, right):
        (b0, b1), (a0, a1) = box
        ax.add_patch(Rectangle((a0 - 0.5, b0 - 0.5), a1 - a0 + 1, b1 - b0 + 1, fill=False, edgecolor="#00e5ff",
                               linewidth=1.6))
        if unclipped != box:
            (b0, b1), (a0, a1) = unclipped
            ax.add_patch(Rectangle((a0 - 0.5, b0 - 0.5), a1 - a0 + 1, b1 - b0 + 1, fill=False,
                                   edgecolor="#00e5ff", linewidth=1, linestyle="--"))
        (top, bottom), (left_edge, right_edge) = (_limits(a, b, n) for (a, b), n in zip(unclipped, x.shape[1:]))
        ax.set_xlim(left_edge, right_edge)          # room for the part of the field in the padding
        ax.set_ylim(bottom, top)
        _bare(ax)
    save_figure(fig, path)


def _plot_field_sequence(x, view, path, title: str = "") -> None:
    """plot_field for sequences: the input (channels x positions) and the effective field as a strip."""
    from matplotlib.patches import Rectangle

    (a, b), (ua, ub) = view.box[0], view.unclipped[0]
    fig = _figure(9, 3.8)
    fig.suptitle(title or f"{view.layer} at {view.position[0]}: analysed field {ub - ua + 1} positions", fontsize=10)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.imshow(x, aspect="auto", cmap="gray", interpolation="nearest")
    top.set_ylabel("channel")
    top.set_title(f"input: positions {a}..{b}" + (f" ({ua}..{ub} with the padding)" if (ua, ub) != (a, b) else ""),
                  fontsize=8)
    image = bottom.imshow(view.effective[None], aspect="auto", cmap="magma", interpolation="nearest")
    bottom.set_yticks([])
    bottom.set_xlabel("position")
    bottom.set_title("effective field |d unit / d input|, summed over channels", fontsize=8)
    fig.colorbar(image, ax=[top, bottom], shrink=0.8)
    for ax, rows in ((top, x.shape[0]), (bottom, 1)):
        ax.add_patch(Rectangle((a - 0.5, -0.5), b - a + 1, rows, fill=False, edgecolor="#00e5ff", linewidth=1.6))
    save_figure(fig, path)
