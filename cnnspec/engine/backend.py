"""Layer-API functions (layer-api.md) in place of the built-in kernels, e.g. a student's code.

``Model(network, backend={"conv2d_forward": f, "relu_backward": g, ...})`` runs each layer the
given functions cover through them: they allocate their results, which are checked and copied
into the plan's buffers (this path favours clarity over speed). The functions receive copies of
the engine's arrays, so a function that modifies its inputs cannot corrupt the model. Each
direction is covered on its own: a layer whose forward is given but not its backward runs the
built-in backward. Layers outside the API (and configurations the API does not have: groups,
dilation, pooling ``ceil`` mode, batchnorm in evaluation mode) always run the built-in kernels.
1-D transposed convolutions and upsampling run the 2-D functions on an image of height 1.
"""
from __future__ import annotations

import numpy as np

from cnnspec import kernels as K
from cnnspec.engine import ops
from cnnspec.errors import CnnSpecError, nearest

API = (
    "conv2d_forward", "conv2d_backward", "conv1d_forward", "conv1d_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "dense_forward", "dense_backward", "relu_forward", "relu_backward", "sigmoid_forward",
    "sigmoid_backward", "tanh_forward", "tanh_backward", "softmax_forward", "softmax_cross_entropy",
    "mse_loss", "batchnorm_forward", "batchnorm_backward", "dropout_forward", "dropout_backward",
    # encoder-decoders and generative networks
    "conv_transpose2d_forward", "conv_transpose2d_backward", "upsample2d_forward", "upsample2d_backward",
    "bce_loss", "sigmoid_bce", "vae_sample_forward", "vae_sample_backward",
)


class Backend:
    """The functions given, and the into-style loss kernels the plan calls (built-in or given)."""

    def __init__(self, funcs):
        funcs = dict(funcs)
        for name, f in funcs.items():
            if name not in API:
                guess = nearest(name, API)
                raise CnnSpecError(f"backend: `{name}` is not a layer-API function",
                                   hint=f"did you mean `{guess}`?" if guess else f"the functions are: {', '.join(API)}")
            if not callable(f):
                raise CnnSpecError(f"backend: `{name}` is not callable ({type(f).__name__})")
        self.funcs = funcs
        self.softmax_forward_into = K.softmax_forward_into
        if "softmax_forward" in funcs:
            self.softmax_forward_into = lambda x, out: put(out, funcs["softmax_forward"](x.copy()), "softmax_forward")
        self.softmax_cross_entropy_into = K.softmax_cross_entropy_into
        if "softmax_cross_entropy" in funcs:
            self.softmax_cross_entropy_into = lambda logits, y, dlogits: loss_into(
                funcs["softmax_cross_entropy"](logits.copy(), y.copy()), dlogits, "softmax_cross_entropy")
        # the plan's element-wise losses: mse_loss_into, bce_loss_into, sigmoid_bce_into, l1_loss_into
        for name in ("mse_loss", "bce_loss", "sigmoid_bce", "l1_loss"):
            into = getattr(K, f"{name}_into")
            if name in funcs:
                into = self._loss(funcs[name], name)
            setattr(self, f"{name}_into", into)

    @staticmethod
    def _loss(f, what):
        return lambda pred, target, dpred: loss_into(f(pred.copy(), target.copy()), dpred, what)

    def op(self, c: ops.NodeContext):
        """The op of a node through the given functions, or None for the built-in one."""
        kind = api_kind(c.op, c.config, c.xs[0].ndim - 2 if c.xs else 0)
        if kind == "softmax":
            return Softmax(c, self.funcs.get("softmax_forward"), None) if "softmax_forward" in self.funcs else None
        if kind is None:
            return None
        forward, backward = self.funcs.get(f"{kind}_forward"), self.funcs.get(f"{kind}_backward")
        if forward is None and backward is None:
            return None
        return BACKEND_OPS[c.op](c, forward, backward)


def api_kind(op: str, config: dict, rank: int) -> str | None:
    """The layer-API family (``conv2d``, ``relu``, ...: its functions are ``<kind>_forward`` and
    ``<kind>_backward``) that runs a layer ``op`` with ``rank`` spatial axes; None for a layer
    the API does not cover (groups, dilation, ceil-mode pooling, sum pooling, ...)."""
    if op == "conv" and config["groups"] == 1 and all(d == 1 for d in config["dilation"]):
        return f"conv{rank}d"
    if op in ("maxpool", "avgpool") and not config["ceil"]:
        return f"{op}2d"
    if op == "conv_transpose" and config["groups"] == 1 and all(d == 1 for d in config["dilation"]):
        return "conv_transpose2d"
    if op == "upsample":
        return "upsample2d"
    if op == "sample":
        return "vae_sample"
    if op in ("dense", "relu", "sigmoid", "tanh", "batchnorm", "dropout", "softmax"):
        return op
    return None


def checked(value, shape, what):
    value = np.asarray(value)
    if value.shape != tuple(shape):
        raise CnnSpecError(f"backend `{what}` returned an array of shape {value.shape}; expected {tuple(shape)}")
    if value.dtype.kind not in "fiu":
        raise CnnSpecError(f"backend `{what}` returned {value.dtype} values; expected numbers")
    return value


def put(dst, value, what):
    np.copyto(dst, checked(value, dst.shape, what), casting="unsafe")


def put_grad(target, value, what):
    """Write (or accumulate) an input gradient into ``target = (buffer, accumulate)``."""
    if target is None:
        return
    dx, acc = target
    value = checked(value, dx.shape, what)
    if acc:
        np.add(dx, value, out=dx, casting="unsafe")
    else:
        np.copyto(dx, value, casting="unsafe")


def put_param_grad(grads, key, value, what):
    if grads is not None and key in grads:
        put(grads[key], value, what)


def unpack(result, n, what):
    if not isinstance(result, (tuple, list)) or len(result) != n:
        raise CnnSpecError(f"backend `{what}` must return a tuple of {n} arrays; received {type(result).__name__}")
    return result


def loss_into(result, grad, what):
    loss, g = unpack(result, 2, what)
    put(grad, g, what)
    try:
        value = np.asarray(loss)
    except (TypeError, ValueError):              # e.g. a ragged list
        value = None
    if value is not None and value.size == 1 and value.dtype.kind in "fiu":
        return float(value.reshape(()))          # a number, or one in an array of any shape
    shown = f"an array of shape {value.shape}" if value is not None and value.ndim else type(loss).__name__
    raise CnnSpecError(f"backend `{what}` returned {shown} as the loss; expected one number")


class Given:
    """Mixin of the ops below: the API's functions given for a layer's forward and backward (None:
    the built-in kernel runs that direction)."""

    def __init__(self, c, forward, backward):
        super().__init__(c)
        self.api_forward, self.api_backward = forward, backward


def params_step(f, args, target, grads, has_bias, what):
    """A closure: ``(dx, dw, db) = f(*args)`` (fresh copies), dx into ``target``, dw and db into
    ``grads`` (None: frozen)."""
    def step():
        dx, dw, db = unpack(f(*(None if a is None else a.copy() for a in args[:4]), *args[4:]), 3, what)
        put_grad(target, dx, what)
        put_param_grad(grads, "weight", dw, what)
        if has_bias:
            put_param_grad(grads, "bias", db, what)
    return step


class Conv(Given, ops.Conv):
    def __init__(self, c, forward, backward):
        super().__init__(c, forward, backward)
        self.kind = f"conv{c.xs[0].ndim - 2}d"
        cfg = c.config
        self.api_stride, self.api_pad = tuple(cfg["stride"]), tuple(cfg["pad"])

    def forward(self, training):
        if self.api_forward is None:
            return super().forward(training)
        f, x, y, what = self.api_forward, self.x, self.y, f"{self.kind}_forward"
        w, b, s, p = self.c.params["weight"], self.c.params.get("bias"), self.api_stride, self.api_pad
        return lambda: put(y, f(x.copy(), w.copy(), None if b is None else b.copy(), s, p), what)

    def backward(self, dy, dxs, grads):
        if self.api_backward is None:
            return super().backward(dy, dxs, grads)
        w, b = self.c.params["weight"], self.c.params.get("bias")
        return params_step(self.api_backward, (dy, self.x, w, b, self.api_stride, self.api_pad), dxs[0], grads,
                           b is not None, f"{self.kind}_backward")


class Pool(Given, ops.Op):
    """max/avg pooling through maxpool2d_*/avgpool2d_* (1-D as an image of height 1)."""

    def __init__(self, c, forward, backward):
        super().__init__(c, forward, backward)
        self.kind = f"{c.op}2d"
        self.x4, self.y4 = ops.as4d(self.x), ops.as4d(self.y)
        self.kernel, self.stride, self.pad, _ = ops.geometry(c.config)
        self.builtin = ops.OPS[c.op](c)
        if c.op == "maxpool" and forward is not None and backward is None:
            # the built-in backward needs the argmax of a built-in forward, run into a scratch output
            scratch = ops.NodeContext(c.name, {"op": c.op, "config": c.config}, c.xs, np.zeros_like(c.y),
                                      c.params, c.state, c.model)
            self.builtin = ops.MaxPool(scratch)

    def forward(self, training):
        if self.api_forward is None:
            return self.builtin.forward(training)
        f, x, y, what = self.api_forward, self.x4, self.y4, f"{self.kind}_forward"
        k, s, p = self.kernel, self.stride, self.pad
        return lambda: put(y, f(x.copy(), k, s, p), what)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        if self.api_backward is None:
            if self.c.op == "maxpool" and self.api_forward is not None:
                return ops.chain([self.builtin.forward(True), self.builtin.backward(dy, dxs, grads)])
            return self.builtin.backward(dy, dxs, grads)
        f, x, what, dy4 = self.api_backward, self.x4, f"{self.kind}_backward", ops.as4d(dy)
        k, s, p = self.kernel, self.stride, self.pad
        dx, acc = dxs[0]
        target = (ops.as4d(dx), acc)
        return lambda: put_grad(target, f(dy4.copy(), x.copy(), k, s, p), what)


class Dense(Given, ops.Dense):
    def forward(self, training):
        if self.api_forward is None:
            return super().forward(training)
        f, x, y = self.api_forward, self.x, self.y
        w, b = self.c.params["weight"], self.c.params.get("bias")
        return lambda: put(y, f(x.copy(), w.copy(), None if b is None else b.copy()), "dense_forward")

    def backward(self, dy, dxs, grads):
        if self.api_backward is None:
            return super().backward(dy, dxs, grads)
        w, b = self.c.params["weight"], self.c.params.get("bias")
        return params_step(self.api_backward, (dy, self.x, w, b), dxs[0], grads, b is not None, "dense_backward")


class Activation(Given, ops.Activation):
    """relu, sigmoid, tanh: the API's backward takes the forward input x."""

    def forward(self, training):
        if self.api_forward is None:
            return super().forward(training)
        f, x, y, what = self.api_forward, self.x, self.y, f"{self.c.op}_forward"
        return lambda: put(y, f(x.copy()), what)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        if self.api_backward is None:
            return super().backward(dy, dxs, grads)
        f, x, target, what = self.api_backward, self.x, dxs[0], f"{self.c.op}_backward"
        return lambda: put_grad(target, f(dy.copy(), x.copy()), what)


class Softmax(Activation):
    """A softmax inside the network: the API has no softmax backward; the built-in one uses y."""


class BatchNorm(Given, ops.BatchNorm):
    """Training mode through the API; the running statistics are updated here as PyTorch does
    (biased batch variance to normalise, unbiased in the running variance)."""

    def __init__(self, c, forward, backward):
        super().__init__(c, forward, backward)
        self.axes = (0, *range(2, self.x.ndim))

    def forward(self, training):
        if not training or self.api_forward is None:
            return super().forward(training)
        self.check_batch()
        f, x, y, eps, m, axes = self.api_forward, self.x, self.y, self.eps, self.momentum, self.axes
        gamma, beta = self.c.params["weight"], self.c.params["bias"]
        rm, rv, mean, invstd = self.c.state["running_mean"], self.c.state["running_var"], self.mean, self.invstd
        count = x.size // x.shape[1]

        def step():
            put(y, f(x.copy(), gamma.copy(), beta.copy(), eps), "batchnorm_forward")
            batch_mean, batch_var = x.mean(axis=axes), x.var(axis=axes)
            mean[...], invstd[...] = batch_mean, 1 / np.sqrt(batch_var + eps)   # for a built-in backward
            rm[...] = (1 - m) * rm + m * batch_mean
            rv[...] = (1 - m) * rv + m * batch_var * (count / max(count - 1, 1))
        return step

    def backward(self, dy, dxs, grads):
        if self.api_backward is None:
            return super().backward(dy, dxs, grads)
        f, x, eps = self.api_backward, self.x, self.eps
        gamma, beta = self.c.params["weight"], self.c.params["bias"]

        def step():
            dx, dgamma, dbeta = unpack(f(dy.copy(), x.copy(), gamma.copy(), beta.copy(), eps), 3, "batchnorm_backward")
            put_grad(dxs[0], dx, "batchnorm_backward")
            put_param_grad(grads, "weight", dgamma, "batchnorm_backward")
            put_param_grad(grads, "bias", dbeta, "batchnorm_backward")
        return step


class Dropout(Given, ops.Dropout):
    """The mask is drawn by the engine exactly as for the built-in kernel (same seed, same mask)."""

    def forward(self, training):
        if not training or self.api_forward is None:
            return super().forward(training)
        f, x, y, p, mask, u, model = self.api_forward, self.x, self.y, self.p, self.mask, self.uniform, self.c.model

        def step():
            model.rng.random(out=u)
            np.greater_equal(u, p, out=mask)
            put(y, f(x.copy(), p, mask.copy()), "dropout_forward")
        return step

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        if self.api_backward is None:
            return super().backward(dy, dxs, grads)
        f, p, mask, target = self.api_backward, self.p, self.mask, dxs[0]
        return lambda: put_grad(target, f(dy.copy(), p, mask.copy()), "dropout_backward")


class ConvTranspose(Given, ops.ConvTranspose):
    """conv_transpose2d_*: 1-D as an image of height 1 (pad (0, 0, left, right))."""

    def forward(self, training):
        if self.api_forward is None:
            return super().forward(training)
        f, x, y, w, b = self.api_forward, self.x4, self.y4, self.w, self.b
        s, p, o = self.stride, self.pad, self.output_pad
        return lambda: put(y, f(x.copy(), w.copy(), None if b is None else b.copy(), s, p, o),
                           "conv_transpose2d_forward")

    def backward(self, dy, dxs, grads):
        if self.api_backward is None:
            return super().backward(dy, dxs, grads)
        target = None if dxs[0] is None else (ops.as4d(dxs[0][0]), dxs[0][1])
        grads4 = None if not grads else {key: ops.as_w4(g) if key == "weight" else g for key, g in grads.items()}
        args = (ops.as4d(dy), self.x4, self.w, self.b, self.stride, self.pad, self.output_pad)
        return params_step(self.api_backward, args, target, grads4, self.b is not None, "conv_transpose2d_backward")


class Upsample(Given, ops.Upsample):
    def __init__(self, c, forward, backward):
        super().__init__(c, forward, backward)
        self.api_mode = "bilinear" if self.mode == "linear" else self.mode      # 1-D: H = 1, scale 1

    def forward(self, training):
        if self.api_forward is None:
            return super().forward(training)
        f, x, y, scale, mode = self.api_forward, self.x4, self.y4, self.scale, self.api_mode
        return lambda: put(y, f(x.copy(), scale, mode), "upsample2d_forward")

    def backward(self, dy, dxs, grads):
        if dxs[0] is None or self.api_backward is None:
            return super().backward(dy, dxs, grads)
        f, x, scale, mode, dy4 = self.api_backward, self.x4, self.scale, self.api_mode, ops.as4d(dy)
        target = (ops.as4d(dxs[0][0]), dxs[0][1])
        return lambda: put_grad(target, f(dy4.copy(), x.copy(), scale, mode), "upsample2d_backward")


class Sample(Given, ops.Sample):
    """vae_sample_*: the noise is drawn by the engine exactly as for the built-in kernel; the KL
    the forward returns joins the loss."""

    def forward(self, training):
        if self.api_forward is None:
            return super().forward(training)
        f, mu, logvar, z, eps, normal, model = (self.api_forward, self.mu, self.logvar, self.y, self.eps,
                                                self.normal, self.c.model)
        what = "vae_sample_forward"

        def step():
            if training:
                model.rng.standard_normal(out=normal)
                np.copyto(eps, normal, casting="unsafe")
            else:
                eps.fill(0)
            out, kl = unpack(f(mu.copy(), logvar.copy(), eps.copy()), 2, what)
            put(z, mu if not training else out, what)
            self.kl = float(checked(kl, (), what))
        return step

    def backward(self, dy, dxs, grads):
        if self.api_backward is None or (dxs[0] is None and dxs[1] is None):
            return super().backward(dy, dxs, grads)
        f, mu, logvar, eps, beta = self.api_backward, self.mu, self.logvar, self.eps, self.beta
        what = "vae_sample_backward"

        def step():
            dmu, dlogvar = unpack(f(dy.copy(), beta, mu.copy(), logvar.copy(), eps.copy()), 2, what)
            put_grad(dxs[0], dmu, what)
            put_grad(dxs[1], dlogvar, what)
        return step


BACKEND_OPS = {"conv": Conv, "maxpool": Pool, "avgpool": Pool, "dense": Dense, "relu": Activation,
               "sigmoid": Activation, "tanh": Activation, "batchnorm": BatchNorm, "dropout": Dropout,
               "conv_transpose": ConvTranspose, "upsample": Upsample, "sample": Sample}
