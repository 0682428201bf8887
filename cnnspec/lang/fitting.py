"""The ``train`` keys cnnspec adds where dsl.md is silent: how a run is steered and kept.

    schedule  = cosine(eta_min=1e-4)     # step(step_size, gamma=0.1), multistep([30, 80], gamma=0.1),
                                         # cosine(T_max, eta_min=0), onecycle(max_lr, ...), none
    warmup    = 2                        # or linear(2, start_factor=0.1): LinearLR before the schedule
    monitor   = val_loss                 # val_loss, val_acc, train_loss, train_acc (best.npz, patience)
    patience  = 5                        # early stopping after 5 epochs without improvement
    min_delta = 0.001                    # what counts as an improvement for patience
    restore_best_weights = true          # end with the best epoch's weights (Keras' option)
    clip_grad_norm = 1.0                 # torch.nn.utils.clip_grad_norm_(max_norm=1.0) every step
    top_k     = 5                        # also report top-5 accuracy

Values become plain Python: ``schedule`` ``{"name": "cosine", "eta_min": 0.0001}`` with only the
arguments written (positional ones named in torch's order), or None for ``none``; ``warmup``
``{"total_iters": 2}`` (plus ``start_factor``, ``interval`` when written) or None for 0; the others
str, int, float or bool. Defaults (torch's, Keras') are filled in by the trainer.

The same conversion reads these settings from the command line and the Python API
(:func:`setting_value`): a flag's text is parsed as the value of a ``train`` setting, so a flag and
a file accept the same values and refuse them with the same messages.
"""
from __future__ import annotations

from cnnspec.errors import CnnSpecError
from cnnspec.lang import ast

FIT_KEYS = ("schedule", "warmup", "monitor", "patience", "min_delta", "restore_best_weights",
            "clip_grad_norm", "top_k")
MONITORS = ("val_loss", "val_acc", "train_loss", "train_acc", "val_psnr", "train_psnr", "val_miou", "train_miou")
INTERVALS = ("epoch", "step")
# name -> its arguments in torch's positional order, each (name, kind); every schedule also takes
# the keyword ``interval`` (epoch or step: when the schedule steps, as Lightning's "interval").
SCHEDULES = {
    "step": (("step_size", "count"), ("gamma", "positive")),
    "multistep": (("milestones", "milestones"), ("gamma", "positive")),
    "cosine": (("T_max", "count"), ("eta_min", "non-negative")),
    "onecycle": (("max_lr", "positive"), ("total_steps", "count"), ("pct_start", "fraction"),
                 ("anneal_strategy", ("cos", "linear")), ("cycle_momentum", "bool"),
                 ("base_momentum", "fraction"), ("max_momentum", "fraction"), ("div_factor", "positive"),
                 ("final_div_factor", "positive"), ("three_phase", "bool")),
}
REQUIRED = {"step": ("step_size",), "multistep": ("milestones",)}
WARMUP_ARGS = (("total_iters", "count"), ("start_factor", "factor"))


class FitSettings:
    """Converters for :data:`FIT_KEYS`, mixed into :class:`cnnspec.lang.train.Settings` (which
    gives ``fail``, ``unknown``, ``plain`` and ``number``). ``arguments`` also reads the
    optimizer's."""

    def check_together(self, config: dict, where: dict) -> None:
        for key, message in conflicts(config):
            raise self.fail(where[key], message)

    def schedule(self, value) -> dict | None:
        if isinstance(value, ast.Name) and value.name == "none":
            return None
        if not isinstance(value, (ast.Name, ast.Call)):
            raise self.fail(value.pos, "`schedule` is step(...), multistep(...), cosine(...), onecycle(...) or none",
                            hint="e.g. schedule = cosine(eta_min=1e-4)")
        if value.name not in SCHEDULES:
            raise self.unknown(value.name, [*SCHEDULES, "none"], "schedule", value.pos)
        result = self.arguments(value, SCHEDULES[value.name] + (("interval", INTERVALS),),
                                positional=len(SCHEDULES[value.name]))
        missing = [name for name in REQUIRED.get(value.name, ()) if name not in result]
        if missing:
            names = ", ".join(name for name, _ in SCHEDULES[value.name])
            raise self.fail(value.pos, f"`{value.name}` needs {missing[0]}",
                            hint=f"e.g. {_example(value.name)}; its arguments are {names}, interval")
        return result

    def warmup(self, value) -> dict | None:
        """``warmup = 2`` or ``warmup = linear(2, start_factor=0.1)``: LinearLR's total_iters."""
        if isinstance(value, ast.Call) and value.name == "linear":
            result = self.arguments(value, WARMUP_ARGS + (("interval", INTERVALS),), positional=2)
            if "total_iters" not in result:
                raise self.fail(value.pos, "`linear` needs total_iters, the length of the warm-up",
                                hint="e.g. warmup = linear(3, start_factor=0.1)")
            del result["name"]
            return result
        if isinstance(value, ast.Literal) and type(value.value) is int:
            n = self.check(value, "warmup", "count0", value.value)
            return {"total_iters": n} if n else None
        raise self.fail(value.pos, "`warmup` is a number of epochs (or steps) or linear(N, start_factor=F)",
                        hint="e.g. warmup = 2")

    def monitor(self, value) -> str:
        word = value.name if isinstance(value, ast.Name) else None
        if word not in MONITORS:
            if word is not None:
                raise self.unknown(word, MONITORS, "quantity to monitor", value.pos)
            raise self.fail(value.pos, f"`monitor` is one of: {', '.join(MONITORS)}")
        return word

    def patience(self, value) -> int:
        return self.check(value, "patience", "count0")

    def min_delta(self, value) -> float:
        return float(self.check(value, "min_delta", "non-negative"))

    def restore_best_weights(self, value) -> bool:
        return self.check(value, "restore_best_weights", "bool")

    def clip_grad_norm(self, value) -> float:
        return float(self.check(value, "clip_grad_norm", "positive"))

    def top_k(self, value) -> int:
        return self.check(value, "top_k", "count")

    # -- shared ---------------------------------------------------------------------------------
    def arguments(self, call, spec, positional: int) -> dict:
        """``name(a, b=2)`` -> ``{"name": ..., a: ..., b: ...}``, each checked by its kind."""
        kinds = dict(spec)
        names = [name for name, _ in spec]
        result = {"name": call.name}
        for i, arg in enumerate(getattr(call, "args", [])):
            key = arg.key
            if key is None:
                if len(result) != i + 1 or i >= positional:
                    raise self.fail(arg.pos, f"unexpected positional argument to `{call.name}`",
                                    hint=f"its arguments are {', '.join(names)}, positional ones first")
                key = names[i]
            elif key not in kinds:
                raise self.unknown(key, names, f"argument of `{call.name}`:", arg.pos)
            if key in result:
                raise self.fail(arg.pos, f"`{key}` is given twice")
            result[key] = self.check(arg.value, key, kinds[key])
        return result

    def check(self, node, what, kind, value=None):
        """The value of ``node`` if it is of ``kind``, else a located error."""
        if isinstance(kind, tuple):                          # one of these words
            word = node.name if isinstance(node, ast.Name) else None
            if word not in kind:
                if word is not None:
                    raise self.unknown(word, kind, f"{what}", node.pos)
                raise self.fail(node.pos, f"{what} is one of: {', '.join(kind)}")
            return word
        if kind == "bool":
            v = self.plain(node)
            if type(v) is not bool:
                raise self.fail(node.pos, f"{what} is true or false, got {v!r}")
            return v
        if kind == "betas":
            betas = self.plain(node)
            if not (isinstance(betas, tuple) and len(betas) == 2 and all(type(b) in (int, float) for b in betas)):
                raise self.fail(node.pos, f"betas must be two numbers such as (0.9, 0.999), got {betas!r}")
            return tuple(float(b) for b in betas)
        if kind == "number":
            return self.number(node, what)
        if kind == "milestones":
            items = node.items if isinstance(node, ast.ListOf) else None
            if not items:
                raise self.fail(node.pos, "milestones is a list of epochs (or steps) such as [30, 80]")
            values = [self.check(item, "a milestone", "count") for item in items]
            for item, before, after in zip(items[1:], values, values[1:]):
                if after <= before:
                    raise self.fail(item.pos, f"milestones must increase: {after} after {before}")
            return values
        if kind in ("count", "count0"):
            n = self.number(node, what, integer=True)
            if n < (kind == "count"):
                raise self.fail(node.pos, f"{what} must be at least {int(kind == 'count')}, got {n}")
            return n
        v = self.number(node, what)
        bad = {"positive": not v > 0, "non-negative": v < 0, "fraction": not 0 <= v <= 1,
               "factor": not 0 < v <= 1}[kind]
        if bad:
            wanted = {"positive": "above 0", "non-negative": "at least 0", "fraction": "between 0 and 1",
                      "factor": "above 0 and at most 1"}[kind]
            raise self.fail(node.pos, f"{what} must be {wanted}, got {v}")
        return v


def conflicts(settings: dict) -> list:
    """(key, message) for the settings in ``settings`` (key -> converted value) that do not go
    together; checked on a file's section and again after the command line's overrides."""
    from cnnspec.lang.train import TASK_MONITORS

    schedule, warmup = settings.get("schedule") or {}, settings.get("warmup") or {}
    task, monitor = settings.get("task") or "classify", settings.get("monitor")
    if task == "gan":
        for key in ("monitor", "patience", "restore_best_weights", "top_k"):
            if settings.get(key) not in (None, False):
                return [(key, f"`{key}` is not a setting of `task = gan`: a GAN's losses do not measure its "
                              f"samples, so there is no best epoch to keep or to stop at")]
        for key in ("schedule", "warmup"):
            if settings.get(key):
                return [(key, f"`{key}` is not a setting of `task = gan`: its two networks train at their "
                              f"optimizers' fixed learning rates (g_optimizer, d_optimizer)")]
    elif monitor is not None and monitor not in TASK_MONITORS[task]:
        return [("monitor", f"`task = {task}` does not measure {monitor}; it monitors "
                            f"{', '.join(TASK_MONITORS[task])}")]
    if task != "classify" and settings.get("top_k") is not None:
        return [("top_k", f"top_k ranks class scores: `task = {task}` has none")]
    if warmup and schedule.get("name") == "onecycle":
        return [("warmup", "onecycle warms up by itself (its pct_start): drop `warmup`")]
    if "interval" in warmup and schedule and warmup["interval"] != schedule.get("interval", "epoch"):
        return [("warmup", f"the warm-up steps per {warmup['interval']} but the schedule per "
                           f"{schedule.get('interval', 'epoch')}: give the schedule's interval (or none)")]
    return []


def _example(name: str) -> str:
    return {"step": "step(10, gamma=0.5)", "multistep": "multistep([30, 80], gamma=0.1)"}.get(name, f"{name}()")


def as_text(value) -> str:
    """A Python value written as the value of a ``train`` setting (``{"name": "step", "step_size":
    3}`` -> ``step(step_size=3)``; True -> ``true``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, dict):
        args = ", ".join(f"{k}={as_text(v)}" for k, v in value.items() if k != "name")
        return f"{value.get('name', 'linear')}({args})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(as_text(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return repr(value)


def setting_value(key: str, value, flag: str | None = None):
    """``value`` (text such as ``"cosine(eta_min=1e-4)"``, or a Python value) read as the
    ``train`` setting ``key`` would be; a mistake is a CnnSpecError naming ``flag`` and the text."""
    from cnnspec.lang.parser import parse
    from cnnspec.lang.train import Settings

    text = as_text(value).strip()
    where = f"{flag or '--' + key.replace('_', '-')} {text}"
    if not text or any(c in text for c in "\n{}#"):
        raise CnnSpecError(f"{where}: not a value of `{key}`")
    source = f"train {{\n{key} = {text}\n}}\n"
    try:
        module = parse(source)
        settings = module.train.settings if module.train is not None else []
        if len(settings) != 1 or module.network is not None or module.blocks or module.imports:
            raise CnnSpecError(f"not a value of `{key}`")
        config, _ = Settings({None: source}).convert(module.train)
    except CnnSpecError as err:
        raise CnnSpecError(f"{where}: {err.message}", hint=err.hint) from None
    return config[key]
