"""Accuracy, per-class accuracy and the confusion matrix of a trained model on one data split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Evaluation:
    """``confusion[i, j]`` counts samples of true class i predicted as class j."""

    classes: list
    loss: float
    confusion: np.ndarray
    split: str = "val"
    top_k: int | None = None                 # k of top-k accuracy, when asked for
    top_k_correct: int | None = None         # labels among the k highest scores

    @property
    def top_k_accuracy(self) -> float | None:
        return None if self.top_k is None else self.top_k_correct / max(self.n, 1)

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.n, 1))

    @property
    def per_class(self) -> list:
        """[{"class", "correct", "total", "accuracy"}] per class (accuracy None for an absent class)."""
        rows = []
        for k, name in enumerate(self.classes):
            total = int(self.confusion[k].sum())
            correct = int(self.confusion[k, k])
            rows.append({"class": name, "correct": correct, "total": total,
                         "accuracy": correct / total if total else None})
        return rows

    def to_json(self) -> dict:
        return {"split": self.split, "samples": self.n, "loss": self.loss, "accuracy": self.accuracy,
                **({"top_k": self.top_k, "top_k_accuracy": self.top_k_accuracy} if self.top_k else {}),
                "per_class": self.per_class, "classes": self.classes, "confusion": self.confusion.tolist()}

    def report(self) -> str:
        """The text ``cnnspec evaluate`` prints."""
        width = max(len(str(c)) for c in self.classes)
        lines = [f"{self.split} split: accuracy {100 * self.accuracy:.2f}% ({np.trace(self.confusion)}/{self.n}), "
                 f"loss {self.loss:.4f}"]
        if self.top_k:
            lines.append(f"{self.split} split: top-{self.top_k} accuracy {100 * self.top_k_accuracy:.2f}% "
                         f"({self.top_k_correct}/{self.n})")
        lines += ["", "per class:"]
        for k, row in enumerate(self.per_class):
            acc = "    -" if row["accuracy"] is None else f"{100 * row['accuracy']:5.1f}%"
            lines.append(f"  {k:>3} {row['class']:<{width}}  {row['correct']:>6}/{row['total']:<6} {acc}")
        cell = max(4, len(str(self.confusion.max())) + 1)
        lines += ["", "confusion matrix (rows: true class, columns: predicted class):",
                  " " * (width + 6) + "".join(f"{j:>{cell}}" for j in range(len(self.classes)))]
        for k, name in enumerate(self.classes):
            lines.append(f"  {k:>3} {name:<{width}} " + "".join(f"{v:>{cell}}" for v in self.confusion[k]))
        return "\n".join(lines)


def evaluate(model, x, y, classes=None, *, loss: str = "cross_entropy", batch: int = 256,
             split: str = "val", top_k: int | None = None, task: str = "classify"):
    """Run ``model`` in evaluation mode on ``x`` and compare its top class with the labels ``y``
    (and, with ``top_k``, whether the label is among its k highest scores). Predicted indexes
    beyond ``classes`` (an output wider than the data's classes) are named by their index.

    Other tasks (dsl.md §10.4): ``task="segment"`` compares the class of each pixel with the
    masks ``y`` (N, H, W): a :class:`SegmentationEvaluation` (pixel accuracy, IoU per class, mean
    IoU, the confusion matrix over pixels); ``task="reconstruct"`` compares the outputs for ``x``
    (the inputs, corrupted or not) with the clean pictures ``y`` (None: ``x``) under ``loss``: a
    :class:`ReconstructionEvaluation` (loss and its parts, MSE, PSNR, the inputs' own PSNR)."""
    if task == "segment":
        return evaluate_segmentation(model, x, y, classes or [], batch=batch, split=split)
    if task == "reconstruct":
        clean = x if y is None else np.asarray(y)
        return evaluate_reconstruction(model, clean, loss=loss, batch=batch, split=split,
                                       corrupted=None if y is None or np.array_equal(x, y) else x)
    if top_k:
        from cnnspec.train.callbacks import check_top_k

        check_top_k(top_k, model.output_shape, y)
    value, outputs = model.evaluate(x, y, batch=batch, loss=loss)
    predicted = np.asarray(outputs).reshape(len(x), -1).argmax(axis=1)
    k = max(len(classes), int(predicted.max(initial=-1)) + 1, int(np.max(y, initial=-1)) + 1)
    names = list(classes) + [str(i) for i in range(len(classes), k)]
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (np.asarray(y), predicted), 1)
    result = Evaluation(names, float(value), confusion, split)
    if top_k:
        from cnnspec.train.callbacks import top_k_correct

        result.top_k, result.top_k_correct = top_k, top_k_correct(outputs, np.asarray(y), top_k)
    return result


# -- reconstruction and segmentation (dsl.md §10.4) ----------------------------------------------

def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of data in [0, 1] (peak 1): 10 log10(1 / MSE); inf for a
    perfect match. The MSE is the mean over every value of every sample of the split (the PSNR of
    the pooled error, as torchmetrics' ``PeakSignalNoiseRatio(data_range=1.0)`` accumulates it)."""
    return float("inf") if mse <= 0 else float(10.0 * np.log10(1.0 / mse))


def pixel_confusion(predicted: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """``confusion[i, j]``: pixels of true class i predicted as class j (k x k, int64)."""
    index = np.asarray(truth, np.int64).ravel() * k + np.asarray(predicted, np.int64).ravel()
    return np.bincount(index, minlength=k * k).reshape(k, k)


def iou(confusion: np.ndarray) -> list:
    """Intersection over union per class from a pixel confusion matrix: TP / (TP + FP + FN), None
    for a class absent from both the prediction and the truth (0 / 0)."""
    confusion = np.asarray(confusion)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    return [float(t / u) if u else None for t, u in zip(tp, union)]


def mean_iou(confusion: np.ndarray) -> float:
    """The mean of :func:`iou` over the classes present in the prediction or the truth; classes
    absent from both are left out of the mean (torchmetrics' ``JaccardIndex(average="macro")`` and
    the PASCAL VOC / Cityscapes practice: their 0/0 is not a score)."""
    values = [v for v in iou(confusion) if v is not None]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class SegmentationEvaluation:
    """Per-pixel results of a segmentation network on one split."""

    classes: list
    loss: float
    confusion: np.ndarray                     # over pixels: rows true class, columns predicted
    split: str = "val"

    @property
    def pixels(self) -> int:
        return int(self.confusion.sum())

    @property
    def pixel_accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.pixels, 1))

    accuracy = pixel_accuracy

    @property
    def iou(self) -> list:
        return iou(self.confusion)

    @property
    def mean_iou(self) -> float:
        return mean_iou(self.confusion)

    def to_json(self) -> dict:
        return {"split": self.split, "task": "segment", "pixels": self.pixels, "loss": self.loss,
                "pixel_accuracy": self.pixel_accuracy, "mean_iou": self.mean_iou,
                "iou": dict(zip(self.classes, self.iou)), "classes": self.classes,
                "confusion": self.confusion.tolist()}

    def report(self) -> str:
        width = max(len(str(c)) for c in self.classes)
        lines = [f"{self.split} split: mean IoU {100 * self.mean_iou:.2f}%, pixel accuracy "
                 f"{100 * self.pixel_accuracy:.2f}% ({self.pixels:,} pixels), loss {self.loss:.4f}",
                 "(the mean leaves out classes absent from both the prediction and the truth)", "", "IoU per class:"]
        for k, (name, value) in enumerate(zip(self.classes, self.iou)):
            lines.append(f"  {k:>3} {name:<{width}}  " + ("    -" if value is None else f"{100 * value:5.1f}%"))
        cell = max(4, len(str(self.confusion.max())) + 1)
        lines += ["", "confusion matrix over pixels (rows: true class, columns: predicted class):",
                  " " * (width + 6) + "".join(f"{j:>{cell}}" for j in range(len(self.classes)))]
        for k, name in enumerate(self.classes):
            lines.append(f"  {k:>3} {name:<{width}} " + "".join(f"{v:>{cell}}" for v in self.confusion[k]))
        return "\n".join(lines)


@dataclass
class ReconstructionEvaluation:
    """A reconstruction network on one split: the loss (with a VAE's parts), the MSE and PSNR of
    its outputs against the clean inputs, and (with ``corrupt``) the PSNR of the corrupted inputs."""

    loss: float
    mse: float
    split: str = "val"
    samples: int = 0
    parts: dict = None                        # {"output": reconstruction loss, sample layer: beta * KL}
    input_mse: float | None = None            # the corrupted inputs against the clean ones

    @property
    def psnr(self) -> float:
        return psnr(self.mse)

    @property
    def input_psnr(self) -> float | None:
        return None if self.input_mse is None else psnr(self.input_mse)

    def to_json(self) -> dict:
        return {"split": self.split, "task": "reconstruct", "samples": self.samples, "loss": self.loss,
                "loss_parts": self.parts, "mse": self.mse, "psnr": self.psnr, "input_psnr": self.input_psnr}

    def report(self) -> str:
        text = (f"{self.split} split: PSNR {self.psnr:.2f} dB (MSE {self.mse:.5f}, data in [0, 1]: "
                f"PSNR = 10 log10(1 / MSE)), loss {self.loss:.4f} over {self.samples} samples")
        if self.parts and len(self.parts) > 1:
            text += "\n  loss parts: " + ", ".join(
                f"{'reconstruction' if k == 'output' else k + ' (beta * KL)'} {v:.4f}" for k, v in self.parts.items())
        if self.input_mse is not None:
            text += (f"\n  the corrupted inputs: PSNR {self.input_psnr:.2f} dB; the network gains "
                     f"{self.psnr - self.input_psnr:+.2f} dB")
        return text


def corrupted_held_out(steps, x, seed: int):
    """``x`` spoiled by the ``corrupt`` steps with a generator of its own, seeded by ``seed``: a
    denoiser's held-out inputs, the same in training's validation, ``evaluate`` and the grader."""
    from cnnspec.data import Augmenter

    return Augmenter(steps, x.shape[1:])(x, np.random.default_rng([seed, 0x7A1]))


def evaluate_segmentation(model, x, masks, classes, *, batch: int = 256, split: str = "val") -> SegmentationEvaluation:
    """Per-pixel cross-entropy, the pixel confusion matrix, pixel accuracy and IoU of ``model`` on
    ``x`` against ``masks`` (N, H, W)."""
    value, outputs = model.evaluate(x, masks, batch=batch, loss="cross_entropy")
    k = max(len(classes), model.output_shape[0])
    names = list(classes) + [str(i) for i in range(len(classes), k)]
    confusion = pixel_confusion(np.asarray(outputs).argmax(axis=1), masks, k)
    return SegmentationEvaluation(names, float(value), confusion, split)


def evaluate_reconstruction(model, x, *, loss: str = "mse", batch: int = 256, split: str = "val",
                            corrupted=None) -> ReconstructionEvaluation:
    """``model`` fed ``corrupted`` (default: ``x``) against the clean ``x``."""
    fed = x if corrupted is None else corrupted
    value, outputs = model.evaluate(fed, x, batch=batch, loss=loss)
    mse = float(np.mean((np.asarray(outputs, np.float64) - x) ** 2)) if len(x) else float("nan")
    input_mse = None if corrupted is None else float(np.mean((np.asarray(corrupted, np.float64) - x) ** 2))
    return ReconstructionEvaluation(float(value), mse, split, len(x), dict(model.loss_parts), input_mse)
