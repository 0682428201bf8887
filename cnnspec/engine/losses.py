"""Losses: cross-entropy (on logits, or fused with a final softmax) and mean squared error.

cross_entropy takes integer class labels (N,) and is the mean over the batch of -log p[label], as
``torch.nn.CrossEntropyLoss``. On a network ending in softmax it is computed from the softmax's
input (the logits) with the fused, numerically stable gradient (p - onehot) / N, and the softmax
itself is not differentiated; on any other network the output is taken as the logits. mse is the
mean over all elements of (output - target)^2 (``torch.nn.MSELoss``); its targets are an array of
the output's shape, or integer labels (N,) turned into one-hot rows.
"""
from __future__ import annotations

import math

import numpy as np

from cnnspec.errors import CnnSpecError, nearest

LOSSES = ("cross_entropy", "mse")


def check_loss(loss: str) -> str:
    if loss not in LOSSES:
        guess = nearest(str(loss), LOSSES)
        raise CnnSpecError(f"unknown loss `{loss}`; the losses are {', '.join(LOSSES)}",
                           hint=f"did you mean `{guess}`?" if guess else None)
    return loss


def classes(out_shape) -> int:
    """Number of classes of an output (K,), (K, 1) or (K, 1, 1) for cross-entropy."""
    if math.prod(out_shape[1:]) != 1:
        raise CnnSpecError(f"cross_entropy needs one score per class (an output of shape K, or Kx1x1); "
                           f"the network's output is {'x'.join(map(str, out_shape))}",
                           hint="add `globalavgpool -> flatten -> dense(K)`, or use loss=mse")
    return out_shape[0]


def check_targets(loss: str, y, n: int, out_shape) -> np.ndarray:
    """Validate targets against the loss, batch size and output shape; return them as an array
    (int labels for cross_entropy, labels or an output-shaped array for mse)."""
    y = np.asarray(y)
    is_int = y.dtype.kind in "iu"
    if loss == "cross_entropy":
        k = classes(out_shape)
        if not is_int or y.shape != (n,):
            hint = "for one-hot targets use y.argmax(axis=1)" if y.ndim == 2 else None
            raise CnnSpecError(f"cross_entropy takes integer class labels of shape ({n},); received "
                               f"{y.dtype} of shape {y.shape}", hint=hint)
        check_labels(y, k)
        return y
    if is_int and y.shape == (n,):
        check_labels(y, math.prod(out_shape))
        return y
    if y.shape != (n, *out_shape) or y.dtype.kind not in "fiu":
        raise CnnSpecError(f"mse takes targets of the output's shape {(n, *out_shape)} or integer labels "
                           f"({n},); received {y.dtype} of shape {y.shape}")
    return y


def check_labels(y: np.ndarray, k: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= k):
        bad = y[(y < 0) | (y >= k)][0]
        raise CnnSpecError(f"class label {bad} is out of range: the network has {k} outputs (labels 0..{k - 1})")


def fill_targets(y: np.ndarray, labels: np.ndarray, target: np.ndarray | None) -> None:
    """Copy checked targets into the plan's buffers: int labels into ``labels``; for mse also the
    float ``target`` (one-hot rows when ``y`` holds labels)."""
    if target is None:
        np.copyto(labels, y, casting="unsafe")
    elif y.ndim == 1 and y.dtype.kind in "iu":
        flat = target.reshape(len(target), -1)
        flat.fill(0)
        flat[np.arange(len(y)), y] = 1
    else:
        np.copyto(target, y, casting="unsafe")
