"""Learning-rate schedules as ``torch.optim.lr_scheduler`` defines them, for the engine's optimizers.

The protocol is torch's: making a scheduler sets the optimizer's ``lr`` for step 0; ``step()``
after each epoch (or each batch, for one-cycle) moves to the next; ``state_dict()`` is the step
count. Each schedule is a closed form of that count (``lr_at(t)``), so a run resumed from a
checkpoint gets bit-identical learning rates; they equal torch's (which multiplies the previous lr
by a factor at each step) to rounding.

    opt = SGD(model, lr=0.1, momentum=0.9)
    sched = SequentialLR(opt, [LinearLR(opt, start_factor=0.1, total_iters=2),
                               CosineAnnealingLR(opt, T_max=8)], milestones=[2])
    for epoch in range(10):
        ...train an epoch...
        sched.step()

As in torch, the first scheduler made for an optimizer records its ``lr`` as ``initial_lr``, the base
every later one starts from (one-cycle sets it to ``max_lr / div_factor``).
"""
from __future__ import annotations

import math
from bisect import bisect_right

from cnnspec.errors import CnnSpecError


class LRScheduler:
    """What every schedule shares: the optimizer, the step count ``last_epoch`` (torch's name: it
    counts epochs or batches, whichever ``step()`` follows), and setting the optimizer from it."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        if getattr(optimizer, "initial_lr", None) is None:
            optimizer.initial_lr = optimizer.lr
        self.base_lr = float(optimizer.initial_lr)
        self.last_epoch = 0
        self._apply()

    def lr_at(self, t: int) -> float:
        raise NotImplementedError

    def momentum_at(self, t: int) -> float | None:
        """The momentum (Adam: beta1) at step ``t``, or None where the schedule leaves it alone."""
        return None

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        self.optimizer.lr = self.lr_at(self.last_epoch)
        momentum = self.momentum_at(self.last_epoch)
        if momentum is not None:
            self.optimizer.set_momentum(momentum)

    def get_last_lr(self) -> list:
        return [self.optimizer.lr]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self._apply()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if k not in ("optimizer", "last_epoch", "base_lr", "schedulers") and not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _positive_int(value, what) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CnnSpecError(f"{what} must be a whole number of at least 1, received: {value!r}")
    return value


class StepLR(LRScheduler):
    """``torch.optim.lr_scheduler.StepLR``: ``lr = base * gamma ** (t // step_size)``."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = _positive_int(step_size, "step_size")
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


class MultiStepLR(LRScheduler):
    """``torch.optim.lr_scheduler.MultiStepLR``: ``lr = base * gamma ** (milestones passed)``."""

    def __init__(self, optimizer, milestones, gamma: float = 0.1):
        self.milestones = sorted(_positive_int(m, "a milestone") for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma ** bisect_right(self.milestones, t)


class CosineAnnealingLR(LRScheduler):
    """``torch.optim.lr_scheduler.CosineAnnealingLR``:
    ``lr = eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2`` (beyond ``T_max`` it rises
    again, as torch's does)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):          # noqa: N803 (torch's name)
        self.T_max = _positive_int(T_max, "T_max")
        self.eta_min = float(eta_min)
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(LRScheduler):
    """``torch.optim.lr_scheduler.LinearLR``: the factor goes linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps, then stays (a warm-up with ``end_factor=1``)."""

    def __init__(self, optimizer, start_factor: float = 1 / 3, end_factor: float = 1.0, total_iters: int = 5):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise CnnSpecError(f"LinearLR needs 0 < start_factor <= 1 and 0 <= end_factor <= 1, received: "
                               f"{start_factor}, {end_factor}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = _positive_int(total_iters, "total_iters")
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        done = min(t, self.total_iters) / self.total_iters
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done)


class OneCycleLR(LRScheduler):
    """``torch.optim.lr_scheduler.OneCycleLR``, stepped after every batch: from ``max_lr /
    div_factor`` up to ``max_lr`` over the first ``pct_start`` of ``total_steps``, then down to
    ``initial / final_div_factor`` (cosine or linear anneal). With ``cycle_momentum`` (torch's
    default) the momentum — SGD's, or Adam's beta1 — goes the other way, between ``max_momentum``
    and ``base_momentum``. ``three_phase`` as torch."""

    def __init__(self, optimizer, max_lr: float, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: float = 0.85, max_momentum: float = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise CnnSpecError("OneCycleLR needs total_steps, or epochs and steps_per_epoch")
            total_steps = _positive_int(epochs, "epochs") * _positive_int(steps_per_epoch, "steps_per_epoch")
        self.total_steps = _positive_int(total_steps, "total_steps")
        if not 0 <= pct_start <= 1:
            raise CnnSpecError(f"pct_start must be between 0 and 1, received: {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise CnnSpecError(f"anneal_strategy must be 'cos' or 'linear', received: {anneal_strategy!r}")
        self.max_lr, self.pct_start, self.anneal_strategy = float(max_lr), float(pct_start), anneal_strategy
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        self.cycle_momentum, self.three_phase = bool(cycle_momentum), bool(three_phase)
        self.base_momentum, self.max_momentum = float(base_momentum), float(max_momentum)
        initial = self.max_lr / self.div_factor
        lows = {"initial": initial, "max": self.max_lr, "min": initial / self.final_div_factor}
        # (end step, start lr, end lr, start momentum, end momentum), as torch's _schedule_phases
        up = float(self.pct_start * self.total_steps) - 1
        if three_phase:
            self._phases = [(up, "initial", "max", "max", "base"),
                            (float(2 * self.pct_start * self.total_steps) - 2, "max", "initial", "base", "max"),
                            (self.total_steps - 1, "initial", "min", "max", "max")]
        else:
            self._phases = [(up, "initial", "max", "max", "base"),
                            (self.total_steps - 1, "max", "min", "base", "max")]
        starts = [0.0] + [phase[0] for phase in self._phases[:-1]]
        if any(end == start for (end, *_), start in zip(self._phases, starts)):
            raise CnnSpecError(f"one-cycle phases of zero length: pct_start {self.pct_start} of "
                               f"{self.total_steps} steps; choose another pct_start or more steps")
        self._lrs = lows
        self._momenta = {"base": self.base_momentum, "max": self.max_momentum}
        optimizer.initial_lr = initial                  # torch sets the group's initial_lr here
        super().__init__(optimizer)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _phase(self, t: int):
        start = 0.0
        for i, phase in enumerate(self._phases):
            if t <= phase[0] or i == len(self._phases) - 1:
                return phase, (t - start) / (phase[0] - start)
            start = phase[0]

    def lr_at(self, t: int) -> float:
        t = min(t, self.total_steps)             # torch refuses to step beyond; stay at the end
        (_, lr0, lr1, _, _), pct = self._phase(t)
        return self._anneal(self._lrs[lr0], self._lrs[lr1], pct)

    def momentum_at(self, t: int) -> float | None:
        if not self.cycle_momentum:
            return None
        (_, _, _, m0, m1), pct = self._phase(min(t, self.total_steps))
        return self._anneal(self._momenta[m0], self._momenta[m1], pct)


class SequentialLR(LRScheduler):
    """``torch.optim.lr_scheduler.SequentialLR``: ``schedulers[i]`` from ``milestones[i-1]`` on,
    restarted at its step 0 there (so a cosine after a warm-up counts its ``T_max`` from the end of
    the warm-up)."""

    def __init__(self, optimizer, schedulers, milestones):
        if len(milestones) != len(schedulers) - 1:
            raise CnnSpecError(f"SequentialLR needs one milestone fewer than schedulers, received "
                               f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        self.schedulers = list(schedulers)
        self.milestones = [_positive_int(m, "a milestone") for m in milestones]
        super().__init__(optimizer)

    def _child(self, t: int):
        i = bisect_right(self.milestones, t)
        return self.schedulers[i], t - (self.milestones[i - 1] if i else 0)

    def lr_at(self, t: int) -> float:
        child, local = self._child(t)
        return child.lr_at(local)

    def momentum_at(self, t: int) -> float | None:
        child, local = self._child(t)
        return child.momentum_at(local)
