"""What steers a run between its batches and epochs, as PyTorch schedulers and Keras callbacks do.

* :func:`make_schedule` — the ``schedule`` and ``warmup`` settings as torch schedulers
  (:mod:`cnnspec.engine.schedule`), stepped after every epoch (``interval=epoch``: step,
  multistep, cosine) or every batch (``interval=step``: one-cycle), as PyTorch's documentation
  steps them.
* :class:`Tracker` — the best epoch by the ``monitor``ed quantity, whose weights go to
  ``best.npz`` (Keras' ``ModelCheckpoint(save_best_only=True)``), and early stopping (Keras'
  ``EarlyStopping(monitor, min_delta, patience)``).
* :func:`top_k_correct` — how many labels are among the k highest scores.

Each has a ``state_dict()`` that the checkpoint keeps, so a resumed run continues bit-identically.
"""
from __future__ import annotations

import math

import numpy as np

from cnnspec.errors import CnnSpecError


def make_optimizer(model, config):
    """The optimizer of ``config`` (``sgd``, ``adam``, ``adamw``), clipping by ``clip_grad_norm``."""
    from cnnspec.engine import SGD, Adam, AdamW

    args, clip = config.optimizer_args, config.clip_grad_norm
    if config.optimizer in ("adam", "adamw"):
        kind = Adam if config.optimizer == "adam" else AdamW
        return kind(model, args["lr"], betas=args["betas"], weight_decay=args["weight_decay"], clip_grad_norm=clip)
    return SGD(model, args["lr"], momentum=args["momentum"], weight_decay=args["weight_decay"], clip_grad_norm=clip)


class Schedule:
    """A scheduler and when it steps: after every batch (``interval="step"``) or every epoch."""

    def __init__(self, scheduler, interval: str, steps_per_epoch: int):
        self.scheduler, self.interval = scheduler, interval
        self.per_epoch = steps_per_epoch if interval == "step" else 1

    def after_batch(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.interval == "epoch":
            self.scheduler.step()

    def lr_of_epoch(self, epoch: int) -> float:
        """The learning rate of the epoch's first batch (epochs count from 1)."""
        return self.scheduler.lr_at((epoch - 1) * self.per_epoch)

    def momentum_of_epoch(self, epoch: int) -> float | None:
        return self.scheduler.momentum_at((epoch - 1) * self.per_epoch)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def make_schedule(optimizer, config, steps_per_epoch: int) -> Schedule | None:
    """The run's schedule, its default lengths taken from the run (``config.epochs`` epochs of
    ``steps_per_epoch`` batches); None without ``schedule`` and ``warmup``. Errors name the setting
    (raise them inside ``located``)."""
    from cnnspec.engine import schedule as lr

    spec, warmup = dict(config.schedule or {}), dict(config.warmup or {})
    if not spec and not warmup:
        return None
    name = spec.pop("name", None)
    interval = spec.pop("interval", None) or warmup.get("interval") or ("step" if name == "onecycle" else "epoch")
    per_epoch = steps_per_epoch if interval == "step" else 1
    total = config.epochs * per_epoch
    unit = f"{interval}{'s' if total != 1 else ''}"
    n_warmup = warmup.get("total_iters", 0)
    first = None
    if warmup:
        first = lr.LinearLR(optimizer, start_factor=warmup.get("start_factor", 1 / 3), total_iters=n_warmup)
    main = None
    if name == "step":
        main = lr.StepLR(optimizer, **spec)
    elif name == "multistep":
        main = lr.MultiStepLR(optimizer, **spec)
    elif name == "cosine":
        if "T_max" not in spec and total - n_warmup < 1:
            raise CnnSpecError(f"cosine's T_max is the run's length after the warm-up: {total} {unit} "
                               f"- {n_warmup} leaves none", hint="shorten the warm-up or give T_max")
        spec.setdefault("T_max", total - n_warmup)
        main = lr.CosineAnnealingLR(optimizer, **spec)
    elif name == "onecycle":
        spec.setdefault("max_lr", config.lr)
        spec.setdefault("total_steps", total)
        if spec["total_steps"] < total:
            raise CnnSpecError(f"onecycle's total_steps {spec['total_steps']} is shorter than the run "
                               f"({total} {unit}); torch's OneCycleLR refuses to step beyond it",
                               hint="leave total_steps out: it is the run's length")
        main = lr.OneCycleLR(optimizer, **spec)
    scheduler = main if first is None else first if main is None else \
        lr.SequentialLR(optimizer, [first, main], milestones=[n_warmup])
    return Schedule(scheduler, interval, steps_per_epoch)


MAXIMIZED = ("acc", "psnr", "miou")          # quantities where higher is better


class Tracker:
    """The best epoch by ``monitor`` and early stopping, as Keras' callbacks decide them.

    Best (``ModelCheckpoint(save_best_only=True)``): an epoch whose value beats every earlier one
    (lower loss, higher accuracy; a NaN never does). Early stopping (``EarlyStopping``): an epoch
    improves when it beats the best so far by more than ``min_delta``; after ``patience`` epochs in
    a row that do not, training stops (never after the first epoch). Without validation data a
    ``val_`` quantity is replaced by its ``train_`` counterpart (``quantity``).
    """

    def __init__(self, monitor: str = "val_loss", patience: int | None = None, min_delta: float = 0.0,
                 has_validation: bool = True):
        self.monitor = monitor
        self.quantity = monitor if has_validation or not monitor.startswith("val_") else "train_" + monitor[4:]
        self.maximize = self.quantity.endswith(MAXIMIZED)
        self.patience, self.min_delta = patience, abs(float(min_delta))
        self.best = self.best_epoch = None
        self.reference = None                 # early stopping's best (improvements above min_delta)
        self.wait = 0
        self.stopped_epoch = None
        self.best_weights = None              # {key: array}: the model's arrays at the best epoch

    def _beats(self, value: float, reference: float | None, delta: float = 0.0) -> bool:
        if not math.isfinite(value):
            return False
        if reference is None:
            return True
        return value - delta > reference if self.maximize else value + delta < reference

    def update(self, epoch: int, row: dict, model=None) -> bool:
        """Take the epoch's log row; True when it is the best so far (its weights are then kept)."""
        value = row.get(self.quantity)
        value = float("nan") if value is None else float(value)
        improved = self._beats(value, self.best)
        if improved:
            self.best, self.best_epoch = value, epoch
            if model is not None:
                self.best_weights = {key: array.copy() for key, array in model.arrays().items()}
        if self.patience is not None:
            self.wait += 1
            if self._beats(value, self.reference, self.min_delta):
                self.reference, self.wait = value, 0
            elif self.wait >= self.patience and epoch > 1:
                self.stopped_epoch = epoch
        return improved

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch is not None

    def restore_best(self, model) -> None:
        """Put the best epoch's weights (and batchnorm statistics) back into ``model``."""
        for key, array in model.arrays().items():
            array[...] = self.best_weights[key]

    def describe_stop(self) -> str:
        """``early stopping after epoch 7: val_loss has not improved for 3 epochs (best 0.0412 at epoch 4)``"""
        by = f" by more than {self.min_delta:g}" if self.min_delta else ""
        return (f"early stopping after epoch {self.stopped_epoch}: {self.quantity} has not improved{by} for "
                f"{self.wait} epoch{'s' if self.wait != 1 else ''} (best {self.describe_best()})")

    def describe_best(self) -> str:
        """``val_acc 99.40% at epoch 6`` / ``val_loss 0.0412 at epoch 6``"""
        return f"{self.quantity} {format_quantity(self.quantity, self.best)} at epoch {self.best_epoch}"

    def to_json(self) -> dict:
        return {"monitor": self.quantity, "value": self.best, "epoch": self.best_epoch,
                "stopped_early": self.stopped_epoch}

    def state_dict(self) -> dict:
        return {"quantity": self.quantity, "best": self.best, "best_epoch": self.best_epoch,
                "reference": self.reference, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.quantity = state["quantity"]
        self.maximize = self.quantity.endswith(MAXIMIZED)
        self.best, self.best_epoch, self.reference = state["best"], state["best_epoch"], state["reference"]
        self.wait, self.stopped_epoch = int(state["wait"]), state["stopped_epoch"]


def describe_fit(config, has_validation: bool) -> str:
    """``cosine(T_max=8) after 2 warm-up epochs, clip_grad_norm 1, top-5 accuracy; best.npz by
    val_loss, early stopping after 3 epochs without improvement`` ("" when none of these is set)."""
    parts = [part for part in (
        config.describe_schedule(),
        config.clip_grad_norm is not None and f"clip_grad_norm {config.clip_grad_norm:g}",
        config.top_k and f"top-{config.top_k} accuracy") if part]
    set_any = parts or config.patience is not None or config.restore_best_weights or config.monitor != "val_loss"
    if not set_any:
        return ""
    quantity = Tracker(config.monitor, has_validation=has_validation).quantity
    best = f"best.npz by {quantity}" + ("" if quantity == config.monitor else " (no validation data)")
    if config.patience is not None:
        delta = f" by more than {config.min_delta:g}" if config.min_delta else ""
        after = (f"after {config.patience} epoch{'s' if config.patience != 1 else ''}" if config.patience
                 else "at the first epoch")
        best += f", early stopping {after} without improvement{delta}"
    if config.restore_best_weights:
        best += ", restore_best_weights"
    return "; ".join(filter(None, [", ".join(parts), best]))


def format_quantity(quantity: str, value: float) -> str:
    """Accuracies as percentages, losses with 4 significant digits."""
    if quantity.endswith("psnr"):
        return f"{value:.2f} dB"
    return f"{100 * value:.2f}%" if "_acc" in quantity or "_top" in quantity or "miou" in quantity else f"{value:.4g}"


def top_k_correct(output: np.ndarray, y: np.ndarray, k: int) -> int:
    """How many labels ``y`` are among the ``k`` highest of their row of ``output``: fewer than k
    scores strictly above the label's (so ties at the boundary count, as ``tf.math.in_top_k``)."""
    scores = output.reshape(len(output), -1)
    true = scores[np.arange(len(scores)), y]
    return int(np.count_nonzero((scores > true[:, None]).sum(axis=1) < k))


def check_top_k(k: int, output_shape, y) -> None:
    """top_k makes sense for class labels and more than k class scores."""
    classes = int(np.prod(output_shape))
    if np.asarray(y).ndim != 1 or np.asarray(y).dtype.kind not in "iu":
        raise CnnSpecError("top_k needs class labels (one integer per sample)")
    if k >= classes:
        raise CnnSpecError(f"top_k = {k} ranks {k} of the network's {classes} class scores: every label would "
                           f"count as correct", hint=f"choose a k below {classes}")
