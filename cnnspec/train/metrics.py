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


def evaluate(model, x, y, classes, *, loss: str = "cross_entropy", batch: int = 256,
             split: str = "val", top_k: int | None = None) -> Evaluation:
    """Run ``model`` in evaluation mode on ``x`` and compare its top class with the labels ``y``
    (and, with ``top_k``, whether the label is among its k highest scores). Predicted indexes
    beyond ``classes`` (an output wider than the data's classes) are named by their index."""
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
