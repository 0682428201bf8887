"""Training settings: the ``train`` section of a ``.cnn`` file (dsl.md §7) with overrides on top."""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cnnspec.data.augment import parse_augment
from cnnspec.errors import CnnSpecError, error_at, match_names, nearest
from cnnspec.lang.fitting import FIT_KEYS, conflicts, setting_value

OPTIMIZERS = {
    # name -> default arguments (dsl.md §7)
    "sgd": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.01},     # torch.optim.AdamW's
}
SECTION_KEYS = ("data", "loss", "optimizer", "epochs", "batch", "seed", "val_split", "augment")
SECTION_KEYS += FIT_KEYS
# dsl.md §10.4: what the task trains for and, for a GAN, its two networks
TASK_KEYS = ("task", "corrupt", "generator", "discriminator", "latent", "d_steps", "g_optimizer", "d_optimizer",
             "g_ema", "pack")


@dataclass
class TrainConfig:
    """Everything a training run depends on (what ``log.json`` records and ``--resume`` restores)."""

    data: str = "shapes"
    data_base: str | None = None          # folder relative data paths are read from (None: cwd)
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    optimizer_args: dict = field(default_factory=lambda: dict(OPTIMIZERS["sgd"]))
    epochs: int = 10
    batch: int = 32
    seed: int = 0
    val_split: float = 0.1
    augment: list = field(default_factory=list)         # [(name, args), ...]
    init: str | None = None                              # weights to start from (transfer learning)
    freeze: list = field(default_factory=list)           # layer-name globs kept fixed
    unfreeze_after: list = field(default_factory=list)   # [(epochs, glob), ...]
    # where dsl.md is silent (cnnspec.lang.fitting): schedules, best weights, early stopping, ...
    schedule: dict | None = None                          # {"name": "cosine", arguments written}
    warmup: dict | None = None                            # {"total_iters": N, "start_factor": F}
    monitor: str = "val_loss"                             # best.npz and early stopping follow it
    patience: int | None = None                           # None: no early stopping
    min_delta: float = 0.0
    restore_best_weights: bool = False
    clip_grad_norm: float | None = None
    top_k: int | None = None
    # tasks (dsl.md §10.4): classify, reconstruct (target = the clean input), segment, gan
    task: str = "classify"
    corrupt: list = field(default_factory=list)           # [(name, args), ...] on the input only (reconstruct)
    generator: str | None = None                          # gan: the networks' names
    discriminator: str | None = None
    latent: int | None = None                             # gan: the size of the noise input (checked)
    d_steps: int = 1                                      # gan: discriminator steps per generator step
    g_optimizer: dict | None = None                       # gan: {"name", args}; None: ``optimizer``
    d_optimizer: dict | None = None
    g_ema: float | None = None                            # gan: the decay of the generator's moving average
    pack: int = 1                                         # gan: pictures the discriminator judges at a time
    from_file: list = field(default_factory=list)        # settings the train section gave (not overridden)

    @property
    def lr(self) -> float:
        return self.optimizer_args["lr"]

    def describe_schedule(self) -> str:
        """``cosine(eta_min=0.0001) after 2 warm-up epochs``, or "" without a schedule."""
        parts = []
        if self.schedule:
            args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.schedule.items() if k != "name")
            parts.append(f"{self.schedule['name']}({args})")
        if self.warmup:
            n = self.warmup["total_iters"]
            unit = self.warmup.get("interval", (self.schedule or {}).get("interval", "epoch"))
            start = self.warmup.get("start_factor")
            parts.append(f"{'after ' if parts else ''}{n} warm-up {unit}{'s' if n != 1 else ''}"
                         + (f" from {_fmt(start)}*lr" if start is not None else ""))
        return " ".join(parts)

    def describe_optimizer(self) -> str:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.optimizer_args.items()
                         if k == "lr" or v != OPTIMIZERS[self.optimizer][k])
        return f"{self.optimizer}({args})"

    def to_json(self) -> dict:
        data = asdict(self)
        data["augment"] = [[name, list(args)] for name, args in self.augment]
        data["corrupt"] = [[name, list(args)] for name, args in self.corrupt]
        data["unfreeze_after"] = [[n, glob] for n, glob in self.unfreeze_after]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        data["augment"] = [(name, tuple(args)) for name, args in data.get("augment", [])]
        data["corrupt"] = [(name, tuple(args)) for name, args in data.get("corrupt", [])]
        for key in ("g_optimizer", "d_optimizer"):
            if data.get(key) and "betas" in data[key]:
                data[key]["betas"] = tuple(data[key]["betas"])
        data["unfreeze_after"] = [(int(n), glob) for n, glob in data.get("unfreeze_after", [])]
        if "betas" in data.get("optimizer_args", {}):
            data["optimizer_args"]["betas"] = tuple(data["optimizer_args"]["betas"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _fmt(value) -> str:
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_fmt(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else f"{value:g}"


def resolve_config(network, **overrides) -> TrainConfig:
    """The network's ``train`` section, then ``overrides`` (keyword per setting; None means "not
    given"): data, loss, optimizer (a name, ``"sgd(lr=0.1, momentum=0.9)"`` or a dict with a
    ``name``), lr, momentum, weight_decay, epochs, batch, seed, val_split, augment (list of words or
    (name, args)), init, freeze (globs), unfreeze_after (``"N:GLOB"`` words or (N, glob))."""
    config = TrainConfig()
    section = network.train_config
    file = getattr(network, "file", None)
    if "data" in section:
        config.data = str(section["data"])
        config.data_base = str(Path(file).resolve().parent) if file else None
    if "optimizer" in section:
        _set_optimizer(config, section["optimizer"])
    for key in ("loss", "epochs", "batch", "seed", "val_split", *FIT_KEYS):
        if key in section:
            setattr(config, key, section[key])
    with located(network, "optimizer", ["optimizer"]):
        check_optimizer(config.optimizer, config.optimizer_args)
    with located(network, "augment", ["augment"]):
        config.augment = parse_augment(section.get("augment") or [])
    _set_task(network, config, section)

    given = {k: v for k, v in overrides.items() if v is not None}
    config.from_file = [key for key in SECTION_KEYS + TASK_KEYS if key in section and key not in given
                        and not (key == "optimizer" and {"lr", "momentum", "weight_decay"} & set(given))]
    unknown = sorted(set(given) - {"data", "loss", "optimizer", "lr", "momentum", "weight_decay",
                                   "epochs", "batch", "seed", "val_split", "augment", "init", "freeze",
                                   "unfreeze_after"} - set(FIT_KEYS))
    if unknown:
        raise TypeError(f"unknown training setting(s): {', '.join(unknown)}")
    if "data" in given:
        config.data, config.data_base = str(given["data"]), None
    if "optimizer" in given:
        _set_optimizer(config, given["optimizer"], keep=config)
    for key in ("lr", "momentum", "weight_decay"):
        if key in given:
            if key not in OPTIMIZERS[config.optimizer]:
                raise CnnSpecError(f"{config.optimizer} has no setting `{key}`")
            config.optimizer_args[key] = _number(given[key], key)
    for key in ("loss", "epochs", "batch", "seed", "val_split", "init"):
        if key in given:
            setattr(config, key, given[key])
    if "augment" in given:
        config.augment = parse_augment(given["augment"])
    if "freeze" in given:
        config.freeze = list(given["freeze"])
    if "unfreeze_after" in given:
        config.unfreeze_after = [parse_unfreeze(item) for item in given["unfreeze_after"]]
    for key in FIT_KEYS:
        if key in given:
            setattr(config, key, setting_value(key, given[key]))
    check_config(config)
    for key, message in conflicts({**{key: getattr(config, key) for key in FIT_KEYS}, "task": config.task,
                                   "monitor": config.monitor if "monitor" in given or "monitor" in section else None}):
        with located(network, key, config.from_file):
            raise CnnSpecError(message)
    if config.task == "reconstruct" and config.loss == "bce" and any(name == "noise" for name, _ in config.augment):
        # the augmented input is also the target: noise takes it out of [0, 1], which bce refuses
        with located(network, "augment", config.from_file):
            raise CnnSpecError("`noise` in `augment` noises the target of a reconstruction too (the target is the "
                               "augmented input), and bce takes targets in [0, 1]",
                               hint="to spoil the input only (a denoising auto-encoder), write it in `corrupt`: "
                                    "corrupt = [noise(0.3)]; or choose loss = mse")
    return config


def _set_task(network, config: TrainConfig, section: dict) -> None:
    """The task settings of the train section (dsl.md §10.4), the loss and the monitored quantity
    defaulting by task: reconstruct mse and val_psnr, segment cross_entropy and val_miou, gan bce."""
    from cnnspec.lang.train import TASK_LOSSES, TASK_MONITORS

    config.task = str(section.get("task", "classify"))
    if "loss" not in section:
        config.loss = TASK_LOSSES[config.task][0]
    if "monitor" not in section and TASK_MONITORS[config.task]:
        config.monitor = TASK_MONITORS[config.task][0]
    with located(network, "corrupt", ["corrupt"]):
        config.corrupt = parse_augment(section.get("corrupt") or [])
    for key in ("generator", "discriminator"):
        if key in section:
            setattr(config, key, str(section[key]))
    if "latent" in section:
        config.latent = int(section["latent"])
    if "d_steps" in section:
        config.d_steps = int(section["d_steps"])
    if "g_ema" in section:
        config.g_ema = float(section["g_ema"])
    if "pack" in section:
        config.pack = int(section["pack"])
    for key in ("g_optimizer", "d_optimizer"):
        if key in section:
            holder = TrainConfig()
            with located(network, key, [key]):
                _set_optimizer(holder, section[key])
                check_optimizer(holder.optimizer, holder.optimizer_args)
            setattr(config, key, {"name": holder.optimizer, **holder.optimizer_args})


def _set_optimizer(config: TrainConfig, value, keep: TrainConfig | None = None) -> None:
    """Set the optimizer from a dict ({"name": ..., args}), a name, or text such as ``adam(lr=0.01)``.
    A bare name that keeps the same optimizer keeps its current arguments."""
    if isinstance(value, dict):
        name, args = value.get("name"), {k: v for k, v in value.items() if k != "name"}
    else:
        match = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", str(value))
        if not match:
            raise CnnSpecError(f"cannot read optimizer {value!r}", hint="write e.g. sgd(lr=0.05, momentum=0.9) or adam")
        name, args = match.group(1), _parse_kwargs(match.group(2) or "", value)
        if match.group(2) is None and keep is not None and name == keep.optimizer:
            return
    if name not in OPTIMIZERS:
        guess = nearest(str(name), OPTIMIZERS)
        raise CnnSpecError(f"unknown optimizer `{name}`",
                           hint=f"did you mean `{guess}`?" if guess else "choose sgd or adam")
    merged = dict(OPTIMIZERS[name])
    for key, arg in args.items():
        if key not in merged:
            raise CnnSpecError(f"{name} has no argument `{key}` (it has: {', '.join(merged)})")
        merged[key] = tuple(_number(b, key) for b in arg) if key == "betas" else _number(arg, key)
    config.optimizer, config.optimizer_args = name, merged


def _number(value, what: str) -> float:
    """``value`` as a float, or a CnnSpecError (a number too large for a float, not a number)."""
    try:
        return float(value)
    except OverflowError:
        raise CnnSpecError(f"{what} {value!r} is too large for a floating-point number") from None
    except (TypeError, ValueError):
        raise CnnSpecError(f"{what} must be a number, got {value!r}") from None


def _parse_kwargs(text: str, whole) -> dict:
    args = {}
    for part in re.findall(r"(\w+)\s*=\s*(\([^)]*\)|[^,]+)", text):
        key, raw = part[0], part[1].strip()
        try:
            args[key] = tuple(float(v) for v in raw.strip("()").split(",")) if raw.startswith("(") else float(raw)
        except ValueError:
            raise CnnSpecError(f"optimizer {whole!r}: {key}={raw} is not a number") from None
    if text.strip() and not args:
        raise CnnSpecError(f"cannot read optimizer {whole!r}",
                           hint="write keyword arguments: sgd(lr=0.05, momentum=0.9)")
    return args


def parse_unfreeze(item) -> tuple:
    """``"3:conv5*"`` or (3, "conv5*") -> (3, "conv5*"): unfreeze matching layers after 3 epochs."""
    if isinstance(item, (tuple, list)):
        epochs, glob = item
    else:
        epochs, sep, glob = str(item).partition(":")
        if not sep or not glob:
            raise CnnSpecError(f"--unfreeze-after takes N:GLOB, e.g. 3:conv5*; got {item!r}")
    try:
        epochs = int(epochs)
    except ValueError:
        raise CnnSpecError(f"--unfreeze-after {item!r}: {epochs!r} is not a whole number of epochs") from None
    if epochs < 0:
        raise CnnSpecError(f"--unfreeze-after {item!r}: the number of epochs must be >= 0")
    return epochs, glob


def check_config(config: TrainConfig) -> None:
    for key in ("epochs", "batch", "seed"):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key != "batch" else 1):
            raise CnnSpecError(f"{key} must be a whole number >= {0 if key != 'batch' else 1}, got {value!r}")
    if not 0 <= config.val_split < 1:
        raise CnnSpecError(f"val_split must be in [0, 1), got {config.val_split}")
    from cnnspec.lang.train import TASK_LOSSES, loss_hint, loss_message

    known = TASK_LOSSES.get(config.task, ())
    if config.loss not in known:
        if config.loss in ("cross_entropy", "mse", "bce", "l1"):
            raise CnnSpecError(loss_message(config.loss, config.task), hint=loss_hint(config.task))
        guess = nearest(str(config.loss), known)
        raise CnnSpecError(f"unknown loss `{config.loss}`",
                           hint=f"did you mean `{guess}`?" if guess else f"choose {' or '.join(known)}")
    check_optimizer(config.optimizer, config.optimizer_args)


# the range of each optimizer argument, as torch.optim checks them (lr > 0 here: 0 trains nothing)
OPTIMIZER_RANGES = {"lr": (0, None, "a positive finite number"), "momentum": (0, None, "a number >= 0"),
                    "weight_decay": (0, None, "a number >= 0"), "betas": (0, 1, "two numbers in [0, 1)")}


def check_optimizer(name: str, args: dict) -> None:
    """Every argument a finite number in its range, e.g. ``lr`` > 0 and ``betas`` in [0, 1)."""
    import math

    for key, value in args.items():
        low, high, words = OPTIMIZER_RANGES.get(key, (None, None, "a finite number"))
        values = value if isinstance(value, tuple) else (value,)
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        if ok and low is not None:
            ok = all(v > low if key == "lr" else v >= low for v in values)
        if ok and high is not None:
            ok = all(v < high for v in values)
        if not ok:
            shown = f"({', '.join(f'{v:g}' for v in values)})" if isinstance(value, tuple) else f"{value!r}"
            raise CnnSpecError(f"{name}'s {key} must be {words}, got {shown}")


@contextmanager
def located(network, key: str, from_file):
    """Point an error about the setting ``key`` at its line in the train section, when the file
    gave it (``key in from_file``) and the error is not about some other file."""
    try:
        yield
    except CnnSpecError as err:
        where = (network.graph.graph.get("train_pos") or {}).get(key)
        if key not in from_file or where is None or err.file is not None or err.line is not None:
            raise
        raise error_at(where, err.message, sources=network.graph.graph.get("sources"), hint=err.hint) from None


def match_layers(layers, patterns, what: str) -> list:
    """The layers any glob matches; a glob matching no layer is an error naming the flag."""
    return match_names(layers, patterns, what)
