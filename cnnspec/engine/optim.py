"""Optimizers as PyTorch defines them, updating a model's parameters in place.

A model keeps all its parameters in one flat array (``model.params[layer][name]`` are views into
it) and their gradients in another; each trainable layer is a (start, stop) segment of them. One
fused numba loop per step updates them all, in the parameters' dtype, with the operations in
torch's order (``torch.optim.SGD``/``Adam``, single-tensor path) so that results agree to rounding.
Frozen layers are skipped, as torch skips parameters without a gradient; Adam counts steps per
layer, as torch does per parameter, so a layer unfrozen later starts its bias correction afresh.
"""
from __future__ import annotations

import numpy as np

from cnnspec.engine.jit import njit
from cnnspec.errors import CnnSpecError


class Optimizer:
    """What SGD and Adam share: the model, its flat parameter/gradient arrays, a step count."""

    def __init__(self, model, lr: float):
        if not lr > 0:
            raise CnnSpecError(f"lr must be positive, received: {lr}")
        self.model = model
        self.lr = float(lr)
        self.steps = 0
        self._scalar = model.dtype.type            # scalars in the parameters' dtype, as torch does

    def step(self) -> None:
        """Apply one update from the gradients of the last ``loss_and_grad``/``train_step``."""
        self.steps += 1
        self._update(self.model._flat_params, self.model._flat_grads, self.model._segments())

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

    def __init__(self, model, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(model, lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.buf = self.zeros() if self.momentum else np.zeros(0, model.dtype)

    STATE = ("buf",)

    def _update(self, p, g, segments):
        t = self._scalar
        sgd_update(p, g, self.buf, segments, t(self.lr), t(self.momentum), t(self.weight_decay))

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adam(Optimizer):
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay)`` with bias correction; weight decay
    is the L2 term added to the gradient (not AdamW's decoupled decay)."""

    def __init__(self, model, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(model, lr)
        self.betas = (float(betas[0]), float(betas[1]))
        if not all(0 <= b < 1 for b in self.betas):
            raise CnnSpecError(f"betas must be in [0, 1), received: {betas}")
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.m = self.zeros()
        self.v = self.zeros()
        self.layer_steps = np.zeros(len(model._spans), np.int64)   # bias corrections, per layer

    STATE = ("m", "v", "layer_steps")

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
        adam_update(p, g, self.m, self.v, segments, w1, t(1) - w1, t(beta2), t(1 - beta2),
                    root_correction2, t(self.eps), neg_step, t(self.weight_decay))

    def __repr__(self):
        return f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay})"


# Each segment is sliced first: indexing with bounds read from an array would make numba check
# for negative indices on every access, which stops LLVM from vectorising the loop (8x slower).

@njit
def sgd_update(p, g, buf, segments, lr, momentum, weight_decay):
    for s in range(segments.shape[0]):
        start, stop = segments[s, 0], segments[s, 1]
        ps, gs = p[start:stop], g[start:stop]
        bs = buf[start:stop] if momentum != 0 else buf
        for i in range(ps.size):
            d = gs[i]
            if weight_decay != 0:
                d = d + weight_decay * ps[i]
            if momentum != 0:
                d = bs[i] * momentum + d
                bs[i] = d
            ps[i] = ps[i] - lr * d


@njit
def adam_update(p, g, m, v, segments, w1, one_minus_w1, beta2, w2, root_correction2, eps, neg_step,
                weight_decay):
    """root_correction2 and neg_step (-lr / correction1) hold one value per segment."""
    for s in range(segments.shape[0]):
        start, stop = segments[s, 0], segments[s, 1]
        ps, gs, ms, vs = p[start:stop], g[start:stop], m[start:stop], v[start:stop]
        c2, step = root_correction2[s], neg_step[s]
        for i in range(ps.size):
            d = gs[i]
            if weight_decay != 0:
                d = d + weight_decay * ps[i]
            # torch: exp_avg.lerp_(grad, 1 - beta1), whose formula depends on the weight
            if w1 < 0.5:
                ms[i] = ms[i] + w1 * (d - ms[i])
            else:
                ms[i] = d - (d - ms[i]) * one_minus_w1
            vs[i] = vs[i] * beta2 + w2 * d * d
            denom = np.sqrt(vs[i]) / c2 + eps
            ps[i] = ps[i] + step * ms[i] / denom
