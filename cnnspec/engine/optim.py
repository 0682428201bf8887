"""Optimizers as PyTorch defines them, updating a model's parameters in place.

A model keeps all its parameters in one flat array (``model.params[layer][name]`` are views into
it) and their gradients in another; each trainable layer is a (start, stop) segment of them. One
fused numba loop per step updates them all, in the parameters' dtype, with the operations in
torch's order (``torch.optim.SGD``/``Adam``, single-tensor path) so that results agree to rounding
(SGD fuses its multiply-adds as ATen's vectorised add does: float32 parameters equal an AVX2 or AVX-512
torch's bit for bit, tested);
a big model's update is split over threads. Momentum and Adam moments that fall below the smallest
normal number are stored as 0 (see ``sgd_update``: subnormal arithmetic is ~100x slower).
Frozen layers are skipped, as torch skips parameters without a gradient; Adam counts steps per
layer, as torch does per parameter, so a layer unfrozen later starts its bias correction afresh.

``clip_grad_norm=`` (any optimizer, like Keras' ``global_clipnorm``) clips the gradients by their
global norm before each update, as ``torch.nn.utils.clip_grad_norm_`` does between ``backward()``
and ``step()``. Learning-rate schedules (:mod:`cnnspec.engine.schedule`) set ``lr`` (and, for
one-cycle, the momentum or Adam's beta1) between steps, as torch's schedulers set a param group's.
"""
from __future__ import annotations

import numpy as np

from cnnspec.engine.jit import fma, njit
from cnnspec.kernels._jit import memory_pieces, num_threads, run_split
from cnnspec.errors import CnnSpecError


class Optimizer:
    """What SGD and Adam share: the model, its flat parameter/gradient arrays, a step count, and
    optional clipping of the gradients by their global norm."""

    def __init__(self, model, lr: float, clip_grad_norm: float | None = None):
        if not lr > 0:
            raise CnnSpecError(f"lr must be positive, received: {lr}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise CnnSpecError(f"clip_grad_norm must be positive, received: {clip_grad_norm}")
        self.model = model
        self.lr = float(lr)
        self.initial_lr = None                     # set by the first schedule, as torch's param group
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        self.grad_norm = None                      # the total norm before clipping, of the last step
        self.steps = 0
        self._scalar = model.dtype.type            # scalars in the parameters' dtype, as torch does
        self._tiny = np.finfo(model.dtype).tiny    # state below it is stored as 0 (see sgd_update)

    def step(self) -> None:
        """Apply one update from the gradients of the last ``loss_and_grad``/``train_step``."""
        self.steps += 1
        segments = self.model._segments()
        if self.clip_grad_norm is not None:
            self.grad_norm = clip_grad_norm_(self.model, self.clip_grad_norm, segments)
        self._update(self.model._flat_params, self.model._flat_grads, segments)

    @property
    def momentum_value(self) -> float:
        """SGD's momentum, Adam's beta1: what a one-cycle schedule cycles."""
        raise NotImplementedError

    def set_momentum(self, value: float) -> None:
        raise NotImplementedError

    def zeros(self) -> np.ndarray:
        return np.zeros_like(self.model._flat_params)

    STATE = ()                                     # the names of the arrays an update carries over

    def state_dict(self) -> dict:
        """The step count and every buffer an update carries over, as NumPy arrays (for
        ``np.savez``); ``load_state_dict`` of it continues to the very same weights."""
        return {"steps": np.int64(self.steps), **{key: getattr(self, key) for key in self.STATE}}

    def load_state_dict(self, state) -> None:
        """Restore :meth:`state_dict`'s arrays (copied in place), after checking names and shapes."""
        missing = sorted({"steps", *self.STATE} - set(state))
        unknown = sorted(set(state) - {"steps", *self.STATE})
        if missing or unknown:
            raise CnnSpecError(f"this is not the state of {type(self).__name__}: "
                               + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                                         unknown and f"unexpected {', '.join(unknown)}"])))
        for key in self.STATE:
            current, value = getattr(self, key), np.asarray(state[key])
            if current.shape != value.shape:
                raise CnnSpecError(f"optimizer state {key!r} has shape {value.shape}, this model "
                                   f"needs {current.shape}")
            current[...] = value
        self.steps = int(state["steps"])


class SGD(Optimizer):
    """``torch.optim.SGD(params, lr, momentum, weight_decay)``: g += wd*p; buf = momentum*buf + g;
    p -= lr*buf (buf = g on the first step, which the zero-initialised buffer gives exactly)."""

    def __init__(self, model, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 clip_grad_norm: float | None = None):
        super().__init__(model, lr, clip_grad_norm)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.buf = self.zeros() if self.momentum else np.zeros(0, model.dtype)

    STATE = ("buf",)

    @property
    def momentum_value(self) -> float:
        return self.momentum

    def set_momentum(self, value: float) -> None:
        """A momentum that becomes non-zero starts from an empty buffer (torch: buf = grad)."""
        self.momentum = float(value)
        if self.momentum and not self.buf.size:
            self.buf = self.zeros()

    def load_state_dict(self, state) -> None:
        if "buf" in state and np.asarray(state["buf"]).size and not self.buf.size:
            self.buf = self.zeros()                # saved while a schedule's momentum was on
        super().load_state_dict(state)

    def _update(self, p, g, segments):
        t = self._scalar
        _update_split(sgd_update, segments, p, g, self.buf, segments, t(self.lr), t(self.momentum),
                      t(self.weight_decay), t(self._tiny))

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adam(Optimizer):
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay)`` with bias correction; weight decay
    is the L2 term added to the gradient (not AdamW's decoupled decay)."""

    decoupled = False

    def __init__(self, model, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 clip_grad_norm: float | None = None):
        super().__init__(model, lr, clip_grad_norm)
        self.betas = (float(betas[0]), float(betas[1]))
        if not all(0 <= b < 1 for b in self.betas):
            raise CnnSpecError(f"betas must be in [0, 1), received: {betas}")
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.m = self.zeros()
        self.v = self.zeros()
        self.layer_steps = np.zeros(len(model._spans), np.int64)   # bias corrections, per layer

    STATE = ("m", "v", "layer_steps")

    @property
    def momentum_value(self) -> float:
        return self.betas[0]

    def set_momentum(self, value: float) -> None:
        self.betas = (float(value), self.betas[1])

    def _update(self, p, g, segments):
        t, dtype = self._scalar, self.model.dtype
        beta1, beta2 = self.betas
        layers = segments[:, 2]
        self.layer_steps[layers] += 1
        steps = self.layer_steps[layers]
        correction1 = 1 - beta1 ** steps                          # float64, as torch's Python floats
        root_correction2 = np.sqrt(1 - beta2 ** steps).astype(dtype)
        neg_step = (-self.lr / correction1).astype(dtype)
        w1 = t(1 - beta1)
        if self.decoupled:                                        # AdamW: p *= 1 - lr*wd first
            decay, l2 = t(1 - self.lr * self.weight_decay), t(0)
        else:
            decay, l2 = t(1), t(self.weight_decay)
        _update_split(adam_update, segments, p, g, self.m, self.v, segments, w1, t(1) - w1, t(beta2),
                      t(1 - beta2), root_correction2, t(self.eps), neg_step, l2, decay, t(self._tiny))

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


class AdamW(Adam):
    """``torch.optim.AdamW(params, lr, betas, eps, weight_decay=0.01)``: decoupled weight decay,
    ``p *= 1 - lr*weight_decay`` before the Adam update of the unchanged gradient (Loshchilov &
    Hutter), with the scheduled lr of each step."""

    decoupled = True

    def __init__(self, model, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 clip_grad_norm: float | None = None):
        super().__init__(model, lr, betas, eps, weight_decay, clip_grad_norm)


def clip_grad_norm_(model, max_norm: float, segments=None) -> float:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)`` over the model's trainable parameters:
    the total L2 norm of all their gradients together, and when ``max_norm / (total + 1e-6)`` is
    below 1, every gradient scaled by it. Returns the total norm before clipping."""
    if segments is None:
        segments = model._segments()
    g = model._flat_grads
    total = float(np.sqrt(sum(float(np.dot(g[a:b], g[a:b])) for a, b, _ in segments)))
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1:
        scale = g.dtype.type(coef)
        for a, b, _ in segments:
            g[a:b] *= scale
    return total


# Each segment is sliced first: indexing with bounds read from an array would make numba check
# for negative indices on every access, which stops LLVM from vectorising the loop (8x slower).
#
# Subnormal state is stored as 0 (``tiny``: the dtype's smallest normal number). A momentum (or
# Adam moment) whose gradient stays 0 decays by a factor each step, and rounding keeps it at the
# smallest subnormal for ever (0.9 * 2**-149 rounds back to 2**-149 in float32): every later
# step then does subnormal arithmetic, which x86 runs ~100x slower (measured: a LeNet-5 batch-1
# step 2x slower after ~800 steps, half its momentum buffer stuck there). A flushed value
# differs from torch's by less than ``tiny`` and moves no parameter: lr times it rounds away
# against any parameter above ~1e-30. NaN is kept (``abs(NaN) < tiny`` is false).
#
# Large models are updated on several threads, each a contiguous range [lo, hi) of the flat
# arrays (element-wise: the result does not depend on the split).

_PARALLEL_PARAMS = 1 << 17                 # parameters below which one thread is faster


def _update_split(fn, segments, *args):
    """fn(*args, lo, hi) over element ranges of the segments' span, on threads for big models."""
    if segments.shape[0] == 0:
        return
    first, last = int(segments[0, 0]), int(segments[-1, 1])
    size = last - first
    threads = 1 if size < _PARALLEL_PARAMS else num_threads()
    run_split(fn, size, threads, lambda t, lo, hi: args + (first + lo, first + hi),
              pieces=memory_pieces(size, threads, size) if threads > 1 else None)


@njit
def sgd_update(p, g, buf, segments, lr, momentum, weight_decay, tiny, lo, hi):
    """The SGD step of the segments' elements in [lo, hi). The weight decay and the parameter's
    move are fused multiply-adds, rounded once, as torch's ``grad.add(param, alpha=wd)`` and
    ``param.add_(buf, alpha=-lr)`` (ATen's vectorised add computes ``fmadd(other, alpha, self)``:
    the same bits as torch, tested); a loop per case (momentum or not)
    with no branch on the element, so that LLVM vectorises it (2.6x faster than one loop with the
    cases inside: LeNet-5's 61,706 parameters in 13 us against 34)."""
    zero = tiny - tiny                       # 0 in the parameters' dtype
    for s in range(segments.shape[0]):
        start, stop = max(segments[s, 0], lo), min(segments[s, 1], hi)
        if start >= stop:
            continue
        ps, gs = p[start:stop], g[start:stop]
        if momentum != 0:
            bs = buf[start:stop]
            for i in range(ps.size):
                d = gs[i]
                if weight_decay != 0:
                    d = fma(weight_decay, ps[i], d)
                d = bs[i] * momentum + d
                d = zero if abs(d) < tiny else d
                bs[i] = d
                ps[i] = fma(-lr, d, ps[i])
        else:
            for i in range(ps.size):
                d = gs[i]
                if weight_decay != 0:
                    d = fma(weight_decay, ps[i], d)
                ps[i] = fma(-lr, d, ps[i])


@njit
def adam_update(p, g, m, v, segments, w1, one_minus_w1, beta2, w2, root_correction2, eps, neg_step,
                weight_decay, decay, tiny, lo, hi):
    """root_correction2 and neg_step (-lr / correction1) hold one value per segment; ``decay`` is
    AdamW's factor 1 - lr*weight_decay (1: none), ``weight_decay`` Adam's L2 term. Updates the
    segments' elements in [lo, hi)."""
    for s in range(segments.shape[0]):
        start, stop = max(segments[s, 0], lo), min(segments[s, 1], hi)
        if start >= stop:
            continue
        ps, gs, ms, vs = p[start:stop], g[start:stop], m[start:stop], v[start:stop]
        c2, step = root_correction2[s], neg_step[s]
        for i in range(ps.size):
            if decay != 1:
                ps[i] = ps[i] * decay
            d = gs[i]
            if weight_decay != 0:
                d = d + weight_decay * ps[i]
            # torch: exp_avg.lerp_(grad, 1 - beta1), whose formula depends on the weight
            if w1 < 0.5:
                mi = ms[i] + w1 * (d - ms[i])
            else:
                mi = d - (d - ms[i]) * one_minus_w1
            vi = vs[i] * beta2 + w2 * d * d
            if abs(mi) < tiny:
                mi = 0
            if abs(vi) < tiny:
                vi = 0
            ms[i], vs[i] = mi, vi
            denom = np.sqrt(vi) / c2 + eps
            ps[i] = ps[i] + step * mi / denom
