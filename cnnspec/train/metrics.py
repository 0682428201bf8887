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
                "per_class": self.per_class, "classes": self.classes, "confusion": self.confusion.tolist()}

    def report(self) -> str:
        """The text ``cnnspec evaluate`` prints."""
        width = max(len(str(c)) for c in self.classes)
        lines = [f"{self.split} split: accuracy {100 * self.accuracy:.2f}% ({np.trace(self.confusion)}/{self.n}), "
                 f"loss {self.loss:.4f}", "", "per class:"]
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
             split: str = "val") -> Evaluation:
    """Run ``model`` in evaluation mode on ``x`` and compare its top class with the labels ``y``.
    Predicted indexes beyond ``classes`` (an output wider than the data's classes) are named by
    their index."""
    value, outputs = model.evaluate(x, y, batch=batch, loss=loss)
    predicted = np.asarray(outputs).reshape(len(x), -1).argmax(axis=1)
    k = max(len(classes), int(predicted.max(initial=-1)) + 1, int(np.max(y, initial=-1)) + 1)
    names = list(classes) + [str(i) for i in range(len(classes), k)]
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (np.asarray(y), predicted), 1)
    return Evaluation(names, float(value), confusion, split)
