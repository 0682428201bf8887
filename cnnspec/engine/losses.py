"""Losses: cross-entropy (on logits, or fused with a final softmax), mean squared error, binary
cross-entropy (on probabilities, or fused with a final sigmoid) and mean absolute error.

cross_entropy takes integer class labels and is the mean of -log p[label], as
``torch.nn.CrossEntropyLoss``: labels (N,) for an output of one score per class (K, or Kx1x1),
or one label per position, (N, H, W) for an output KxHxW ((N, L) for KxL: segmentation), the mean
then being over every position of every sample. On a network ending in softmax it is computed
from the softmax's input (the logits) with the fused, numerically stable gradient
(p - onehot) / count, and the softmax itself is not differentiated; on any other network the
output is taken as the logits.

mse is the mean over all elements of (output - target)^2 (``torch.nn.MSELoss``); its targets are
an array of the output's shape, or integer labels (N,) turned into one-hot rows. l1 is the mean of
|output - target| (``torch.nn.L1Loss``). bce is the mean binary cross-entropy of the output, a
probability, against targets in [0, 1] (``torch.nn.BCELoss``); on a network ending in sigmoid it
is computed from the sigmoid's input as ``torch.nn.BCEWithLogitsLoss`` does (stable, and the
sigmoid is not differentiated). The targets of l1 and bce have the output's shape ((N,) also
serves an output of one value).

A network's ``sample`` layers add their ``beta * KL`` terms to whichever loss (plan.py).
"""
from __future__ import annotations

import math

import numpy as np

from cnnspec.errors import CnnSpecError, nearest
from cnnspec.kernels.loss import label_range

LOSSES = ("cross_entropy", "mse", "bce", "l1")
FUSED = {"cross_entropy": "softmax", "bce": "sigmoid"}     # a final activation the loss starts before
PROBABILITIES = ("sigmoid", "hardsigmoid", "softmax")      # outputs bce accepts


def check_loss(loss: str) -> str:
    if loss not in LOSSES:
        guess = nearest(str(loss), LOSSES)
        raise CnnSpecError(f"unknown loss `{loss}`; the losses are {', '.join(LOSSES)}",
                           hint=f"did you mean `{guess}`?" if guess else None)
    return loss


def check_output(loss: str, op: str, name: str) -> None:
    """bce needs probabilities: a network whose last computing layer ``name`` (before flatten,
    reshape, identity) is an ``op`` of PROBABILITIES."""
    if loss == "bce" and op not in PROBABILITIES:
        raise CnnSpecError(f"bce takes probabilities, but the network's output comes from `{name}`, a `{op}` "
                           f"layer", hint="end the network in sigmoid (bce is then computed from its input, "
                                          "stably), or use loss=mse or l1")


def classes(out_shape) -> int:
    """Number of classes of an output (K,), (K, 1) or (K, 1, 1) for cross-entropy."""
    if math.prod(out_shape[1:]) != 1:
        raise CnnSpecError(f"cross_entropy needs one score per class (an output of shape K, or Kx1x1); "
                           f"the network's output is {'x'.join(map(str, out_shape))}",
                           hint="add `globalavgpool -> flatten -> dense(K)`, or use loss=mse")
    return out_shape[0]


def positions(out_shape) -> int:
    """How many labels cross-entropy takes per sample: 1 for a score vector (K, Kx1, Kx1x1), else
    one per position of a KxHxW (KxL) output."""
    return math.prod(out_shape[1:]) if len(out_shape) > 1 else 1


def check_targets(loss: str, y, n: int, out_shape) -> np.ndarray:
    """Validate targets against the loss, batch size and output shape; return them as an array
    (int labels for cross_entropy, labels or an output-shaped array for mse, an output-shaped
    array for bce and l1)."""
    y = np.asarray(y)
    out_shape = tuple(out_shape)
    is_int = y.dtype.kind in "iu"
    shown = "x".join(map(str, out_shape))
    if loss == "cross_entropy":
        k = out_shape[0]
        spatial = out_shape[1:] if positions(out_shape) > 1 else ()
        if not spatial and len(out_shape) > 1:
            classes(out_shape)
        expected = (n, *spatial)
        if not is_int or y.shape != expected:
            hint = ("for one-hot targets use y.argmax(axis=1)" if y.ndim == len(expected) + 1 else None)
            what = "class labels" if not spatial else f"class labels, one per position of the {shown} output,"
            raise CnnSpecError(f"cross_entropy takes integer {what} of shape {expected}; received "
                               f"{y.dtype} of shape {y.shape}", hint=hint)
        check_labels(y, k)
        return y
    if loss == "mse" and is_int and y.shape == (n,):
        check_labels(y, math.prod(out_shape))
        return y
    if y.shape == (n,) and math.prod(out_shape) == 1:
        y = y.reshape(n, *out_shape)            # one value per sample
    if y.shape != (n, *out_shape) or y.dtype.kind not in "fiub":
        labels = " or integer labels" if loss == "mse" else ""
        raise CnnSpecError(f"{loss} takes targets of the output's shape {(n, *out_shape)}{labels}; received "
                           f"{y.dtype} of shape {y.shape}")
    if loss == "bce":
        with np.errstate(invalid="ignore"):
            bad = ~((y >= 0) & (y <= 1))
        if bad.any():
            value = y[bad][0]
            raise CnnSpecError(f"bce takes targets in [0, 1] (probabilities); received {value} at index "
                               f"{tuple(int(i) for i in np.argwhere(bad)[0])}")
    return y


def check_labels(y: np.ndarray, k: int) -> None:
    if not y.size:
        return
    flat = y.reshape(-1)
    low, high = label_range(flat if flat.dtype.isnative else flat.astype(flat.dtype.newbyteorder("=")))
    if low < 0 or high >= k:
        bad = y[(y < 0) | (y >= k)][0]
        raise CnnSpecError(f"class label {bad} is out of range: the network has {k} outputs (labels 0..{k - 1})")


def fill_targets(y: np.ndarray, labels: np.ndarray | None, target: np.ndarray | None) -> None:
    """Copy checked targets into the plan's buffers: int labels into ``labels``
    (cross_entropy); else the float ``target`` (one-hot rows when ``y`` holds mse's labels)."""
    if target is None:
        np.copyto(labels, y.reshape(-1), casting="unsafe")
    elif y.ndim == 1 and y.dtype.kind in "iu":
        flat = target.reshape(len(target), -1)
        flat.fill(0)
        flat[np.arange(len(y)), y] = 1
    else:
        np.copyto(target, y.reshape(target.shape), casting="unsafe")
