"""One class per layer kind: its forward and backward kernel calls, bound to a plan's buffers.

An op is made once per plan (batch size). ``forward(training)`` and ``backward(dy, dxs, grads)``
return zero-argument closures over the buffers (or None when there is nothing to do), so that the
hot loop is a plain ``for step in steps: step()``: no allocation, no dictionary look-up.

``backward`` receives ``dy`` (gradient of the op's output), ``dxs`` (per input: ``(buffer,
accumulate)``, or None when that input needs no gradient) and ``grads`` (the parameter gradient
views, or None for a frozen layer: no parameter gradient is computed).

1-D layers run on the 2-D kernels with H = 1 (a free reshape), as cnnspec.kernels prescribes.
"""
from __future__ import annotations

import numpy as np

from cnnspec import kernels as K
from cnnspec.errors import CnnSpecError


class NodeContext:
    """What an op is built from: the node's config, its input and output buffers, parameters;
    for an op of one share of the batch (``plan.BySamples``), ``whole`` is the whole batch's op,
    ``rows`` the share's samples [lo, hi) (its per-sample buffers are rows of the whole op's) and
    ``barrier`` is where the shares meet (``_jit.Barrier``: batchnorm's batch statistics)."""

    def __init__(self, name, node, xs, y, params, state, model, whole=None, rows=None, barrier=None):
        self.name = name
        self.op = node["op"]
        self.config = node["config"]
        self.xs = xs                    # input activations, (N, *input shape) each
        self.y = y                      # output activation, (N, *output shape)
        self.params = params            # {name: array} views into the model's parameters
        self.state = state              # {name: array} (batchnorm running statistics)
        self.model = model
        self.whole, self.rows, self.barrier = whole, rows, barrier


def as4d(a):
    """(N, C, L) -> (N, C, 1, L) view; 2-D images and None pass through."""
    if a is not None and a.ndim == 3:
        return a.reshape(a.shape[0], a.shape[1], 1, a.shape[2])
    return a


def geometry(config):
    """kernel, stride, pad, dilation as the 2-D kernels take them (1-D: a height of 1)."""
    kernel = tuple(int(k) for k in config["kernel"])
    stride = tuple(int(s) for s in config["stride"])
    pad = tuple(int(p) for p in config["pad"])
    dilation = tuple(int(d) for d in config.get("dilation", (1,) * len(kernel)))
    if len(kernel) == 1:
        return (1, *kernel), (1, *stride), (0, 0, *pad), (1, *dilation)
    return kernel, stride, pad, dilation


def as2d(sizes) -> tuple:
    """Per-axis factors as the 2-D kernels take them: (s,) -> (1, s); 2-D ones pass through."""
    sizes = tuple(int(v) for v in sizes)
    return (1, *sizes) if len(sizes) == 1 else sizes


class Op:
    workspace = 0                       # elements of the shared conv workspace this op needs
    by_samples = False                  # each sample's results depend on that sample alone (or,
    # batchnorm's, on statistics the shares meet for), and the steps draw no random numbers: the
    # batch may run in shares of samples, one per thread, each through every layer
    # (``plan.BySamples``); False for dropout, droppath and sample (random numbers)

    def __init__(self, c: NodeContext):
        self.c = c
        self.x = c.xs[0] if c.xs else None
        self.y = c.y

    @staticmethod
    def share_cut(batch: int, lo: int, hi: int) -> bool:
        """Whether a share of samples [lo, hi) of a batch of ``batch`` can run this op."""
        return True

    def per_sample(self, attr, shape, dtype):
        """A buffer of one row per sample (``shape``): new zeros, or for an op of a share of the
        batch the share's rows of the whole batch's op's buffer ``attr`` (no second copy)."""
        if self.c.whole is None:
            return np.zeros(shape, dtype)
        lo, hi = self.c.rows
        return getattr(self.c.whole, attr)[lo:hi]

    def step(self, kernel: str, *args):
        """The step calling ``K.<kernel>_into(*args)``; for a share's layer (on its thread alone)
        ``K.<kernel>_step(*args)``: that call's compiled kernel with its arguments bound once."""
        if self.c.whole is not None:
            return getattr(K, kernel + "_step")(*args)
        f = getattr(K, kernel + "_into")
        return lambda: f(*args)

    def forward(self, training: bool):
        raise NotImplementedError

    def backward(self, dy, dxs, grads):
        raise NotImplementedError

    def backward_eval(self, dy, dxs):
        """The backward of the evaluation-mode forward, input gradients only (``Model.gradient``);
        the same as the training backward except where the two forwards differ (batchnorm, dropout)."""
        return self.backward(dy, dxs, None)


class Conv(Op):
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.x4, self.y4 = as4d(self.x), as4d(self.y)
        self.w = as_w4(c.params["weight"])
        self.b = c.params.get("bias")
        _, self.stride, self.pad, self.dilation = geometry(c.config)
        self.groups = int(c.config["groups"])
        self.workspace = K.conv2d_workspace_size(self.x4.shape, self.w.shape, self.stride, self.pad,
                                                 self.dilation, self.groups)
        self.ws = None                  # the plan's shared workspace, set before steps are made

    def forward(self, training):
        x, w, b, y, ws = self.x4, self.w, self.b, self.y4, self.ws
        s, p, d, g = self.stride, self.pad, self.dilation, self.groups
        return self.step("conv2d_forward", x, w, b, s, p, d, g, y, ws)

    def backward(self, dy, dxs, grads):
        dx, acc = dxs[0] or (None, False)
        dw = as_w4(grads["weight"]) if grads else None
        db = grads.get("bias") if grads else None
        if dx is None and dw is None:
            return None
        x, w, dy, dx, ws = self.x4, self.w, as4d(dy), as4d(dx), self.ws
        s, p, d, g = self.stride, self.pad, self.dilation, self.groups
        return self.step("conv2d_backward", dy, x, w, s, p, d, g, dx, dw, db, ws, acc)


def as_w4(w):
    """conv weight (F, C, K) -> (F, C, 1, K) view; 2-D weights pass through."""
    return w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]) if w.ndim == 3 else w


class MaxPool(Op):
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.x4, self.y4 = as4d(self.x), as4d(self.y)
        self.kernel, self.stride, self.pad, _ = geometry(c.config)
        self.argmax = self.per_sample("argmax", self.y4.shape, np.int64)

    def forward(self, training):
        return self.step("maxpool2d_forward", self.x4, self.kernel, self.stride, self.pad, self.y4,
                         self.argmax)

    def forward_after_relu(self, x):
        """The training forward fused with the relu before it (``Plan.relu_pool_fusions``):
        relu(maxpool(x)) = maxpool(relu(x)) from ``x``, the relu's input; the relu's output is not
        written."""
        return self.step("maxpool2d_forward", as4d(x), self.kernel, self.stride, self.pad, self.y4,
                         self.argmax, True)

    def backward(self, dy, dxs, grads, after_relu=False):
        """``after_relu``: the forward was ``forward_after_relu``; ``dxs`` is then the relu's
        input's gradient target."""
        if dxs[0] is None:
            return None
        dx, acc = dxs[0]
        return self.step("maxpool2d_backward", as4d(dy), self.argmax, as4d(dx), acc,
                         self.y4 if after_relu else None)


class AvgPool(Op):
    by_samples = True
    forward_kernel, backward_kernel = "avgpool2d_forward_into", "avgpool2d_backward_into"

    def __init__(self, c):
        super().__init__(c)
        self.x4, self.y4 = as4d(self.x), as4d(self.y)
        self.kernel, self.stride, self.pad, _ = geometry(c.config)

    def forward(self, training):
        f, x, y = getattr(K, self.forward_kernel), self.x4, self.y4
        k, s, p = self.kernel, self.stride, self.pad
        return lambda: f(x, k, s, p, y)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, dy = dxs[0], getattr(K, self.backward_kernel), as4d(dy)
        dx, k, s, p = as4d(dx), self.kernel, self.stride, self.pad
        return lambda: f(dy, k, s, p, dx, acc)


class SumPool(AvgPool):
    forward_kernel, backward_kernel = "sumpool2d_forward_into", "sumpool2d_backward_into"


class GlobalAvgPool(Op):
    by_samples = True

    def forward(self, training):
        f, x, y = K.global_avgpool_forward_into, self.x, self.y
        return lambda: f(x, y)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f = dxs[0], K.global_avgpool_backward_into
        return lambda: f(dy, dx, acc)


class GlobalMaxPool(Op):
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.argmax = self.per_sample("argmax", self.y.shape[:2], np.int64)

    def forward(self, training):
        f, x, y, a = K.global_maxpool_forward_into, self.x, self.y, self.argmax
        return lambda: f(x, y, a)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, a = dxs[0], K.global_maxpool_backward_into, self.argmax
        return lambda: f(dy, a, dx, acc)


class Dense(Op):
    by_samples = True

    def forward(self, training):
        return self.step("dense_forward", self.x, self.c.params["weight"],
                         self.c.params.get("bias"), self.y)

    def forward_relu(self, y):
        """The training forward of a dense -> relu pair (``Plan.relu_fusions``): relu(x @ w + b)
        into the relu's output ``y``; this layer's own output is not written."""
        return self.step("dense_forward", self.x, self.c.params["weight"],
                         self.c.params.get("bias"), y, True)

    def backward(self, dy, dxs, grads, relu_y=None, relu_dy=None):
        """``relu_y``, ``relu_dy``: the output of the relu fused with this layer
        (``forward_relu``) and its gradient, which the kernel masks into ``dy``, this layer's."""
        dx, acc = dxs[0] or (None, False)
        dw = grads["weight"] if grads else None
        db = grads.get("bias") if grads else None
        if dx is None and dw is None:
            return None
        x, w = self.x, self.c.params["weight"]
        if relu_y is not None:
            return self.step("dense_backward", relu_dy, x, w, dx, dw, db, acc, relu_y, dy)
        return self.step("dense_backward", dy, x, w, dx, dw, db, acc)


class Activation(Op):
    """relu, sigmoid, tanh, softmax: backward from the forward output y."""
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.forward_kernel = getattr(K, f"{c.op}_forward_into")
        self.backward_kernel = getattr(K, f"{c.op}_backward_into")

    def forward(self, training):
        f, x, y = self.forward_kernel, self.x, self.y
        return lambda: f(x, y)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, y = dxs[0], self.backward_kernel, self.y
        return lambda: f(dy, y, dx, acc)


class InputActivation(Activation):
    """relu6, hardswish, hardsigmoid, silu, gelu, softplus: backward from the forward input x
    (the forward writes its own buffer, never x)."""

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, x = dxs[0], self.backward_kernel, self.x
        return lambda: f(dy, x, dx, acc)


class ScaledActivation(Op):
    """leaky_relu (slope) and elu (alpha): one number, the layer's ``arg`` config key; backward
    from the forward input x."""
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        from cnnspec.layers import LAYERS

        self.value = float(c.config[LAYERS[c.op].arg])
        self.forward_kernel = getattr(K, f"{c.op}_forward_into")
        self.backward_kernel = getattr(K, f"{c.op}_backward_into")

    def forward(self, training):
        f, x, y, value = self.forward_kernel, self.x, self.y, self.value
        return lambda: f(x, value, y)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, x, value = dxs[0], self.backward_kernel, self.x, self.value
        return lambda: f(dy, x, value, dx, acc)


class BatchNorm(Op):
    """Training: batch statistics, running statistics updated (PyTorch's momentum rule).
    Evaluation: running statistics. A frozen batchnorm still normalises with batch statistics in
    training, as a PyTorch module in train() mode whose parameters have requires_grad=False."""

    by_samples = True                   # its shares meet for the batch statistics

    def __init__(self, c):
        super().__init__(c)
        channels = self.x.shape[1]
        self.mean = np.zeros(channels)          # float64, as the kernels and cnnspec.api keep them
        self.invstd = np.zeros(channels)
        self.eps = float(c.config["eps"])
        self.momentum = float(c.config["momentum"])
        # the partial sums its shares meet on (float64): the forward's, and the backward's apart
        # (BySamples.step: a share can reach this layer's backward while another still reads
        # the forward's)
        self.part = self.part_grad = None
        if c.whole is not None:
            # a share of the batch: its blocks' partial sums go to the whole op's, which every
            # share reads after they meet; the first share's statistics are the whole op's
            whole = c.whole
            self.batch, self.first = whole.x.shape[0], c.rows[0]
            if whole.part is None:
                whole.part = np.empty((K.share_blocks(self.batch, 0, self.batch)[1], channels, 2))
                whole.part_grad = np.empty_like(whole.part)
            self.part, self.part_grad = whole.part, whole.part_grad
            if self.first == 0:
                self.mean, self.invstd = whole.mean, whole.invstd

    @staticmethod
    def share_cut(batch, lo, hi):
        """A share covers whole blocks of the statistics' partial sums (``norm.share_blocks``)."""
        return K.share_blocks(batch, lo, hi) is not None

    @staticmethod
    def one_value_per_channel(batch: int, shape) -> bool:
        """Whether a batch of ``batch`` samples of per-sample ``shape`` (C, ...) gives the batch
        statistics one value per channel, which training refuses, as PyTorch does."""
        return batch * int(np.prod(shape[1:])) == 1

    def check_batch(self):
        """As PyTorch: batch statistics need more than one value per channel."""
        x = self.x if self.c.whole is None else self.c.whole.x
        if self.one_value_per_channel(x.shape[0], x.shape[1:]):
            raise CnnSpecError(f"`{self.c.name}` (batchnorm) needs more than one value per channel in training; "
                               f"its input is {x.shape[1]} features x batch 1",
                               hint="train with a batch of 2 or more")

    def forward(self, training):
        x, y, eps = self.x, self.y, self.eps
        gamma, beta = self.c.params["weight"], self.c.params["bias"]
        rm, rv = self.c.state["running_mean"], self.c.state["running_var"]
        if training:
            self.check_batch()
        if not training:
            f = K.batchnorm_forward_eval_into
            return lambda: f(x, gamma, beta, eps, rm, rv, y)
        if self.c.whole is not None:
            return self._share_forward(y, False, False)
        f, momentum, mean, invstd = K.batchnorm_forward_train_into, self.momentum, self.mean, self.invstd
        return lambda: f(x, gamma, beta, eps, momentum, rm, rv, y, mean, invstd)

    def forward_relu(self, y, relu6=False):
        """The training forward fused with the relu (``relu6``: relu6) after it:
        relu(batchnorm(x)) into ``y`` (the relu's output); this op's own output is not written."""
        self.check_batch()
        if self.c.whole is not None:
            return self._share_forward(y, not relu6, relu6)
        x, eps, momentum, mean, invstd = self.x, self.eps, self.momentum, self.mean, self.invstd
        gamma, beta = self.c.params["weight"], self.c.params["bias"]
        rm, rv = self.c.state["running_mean"], self.c.state["running_var"]
        f = K.batchnorm_forward_train_into
        if relu6:
            return lambda: f(x, gamma, beta, eps, momentum, rm, rv, y, mean, invstd, False, True)
        return lambda: f(x, gamma, beta, eps, momentum, rm, rv, y, mean, invstd, True)

    def _share_forward(self, y, relu, relu6):
        """A share's training forward: its blocks' partials, the meeting, then the statistics of
        the whole batch (the first share updates the running ones) and its samples' output."""
        rm, rv = ((self.c.state["running_mean"], self.c.state["running_var"]) if self.first == 0
                  else (None, None))
        return K.batchnorm_share_forward_step(
            self.x, self.c.params["weight"], self.c.params["bias"], self.eps, self.momentum, rm, rv,
            y, self.mean, self.invstd, self.part, self.batch, self.first, self.c.barrier, relu, relu6)

    def backward(self, dy, dxs, grads, relu_y=None, relu6=False):
        """``relu_y``: the output of a relu (``relu6``: relu6) fused with this op
        (``forward_relu``); ``dy`` is then the gradient of the relu's output."""
        dx, acc = dxs[0] or (None, False)
        dgamma = grads["weight"] if grads else None
        dbeta = grads["bias"] if grads else None
        if dx is None and dgamma is None:
            return None
        if self.c.whole is not None:
            return self._share_backward(dy, dx, acc, dgamma, dbeta, relu_y, relu6)
        f, x, gamma, mean, invstd = K.batchnorm_backward_into, self.x, self.c.params["weight"], self.mean, self.invstd
        if relu_y is not None and relu6:
            return lambda: f(dy, x, gamma, mean, invstd, dx, dgamma, dbeta, acc, relu_y, True)
        if relu_y is not None:
            return lambda: f(dy, x, gamma, mean, invstd, dx, dgamma, dbeta, acc, relu_y)
        return lambda: f(dy, x, gamma, mean, invstd, dx, dgamma, dbeta, acc)

    def _share_backward(self, dy, dx, acc, dgamma, dbeta, relu_y, relu6):
        """A share's training backward: its blocks' sums, the meeting, then its samples' dx; the
        first share writes dgamma and dbeta of the whole batch (the others' copies stay 0)."""
        if self.first:
            dgamma = dbeta = None
        return K.batchnorm_share_backward_step(
            dy, self.x, self.c.params["weight"], self.mean, self.invstd, dx, dgamma, dbeta,
            self.part_grad, self.batch, self.first, self.c.barrier, acc, relu_y, relu6)

    def backward_eval(self, dy, dxs):
        """Through the running statistics (a fixed affine map per channel)."""
        if dxs[0] is None:
            return None
        (dx, acc), f, x, eps = dxs[0], K.batchnorm_backward_eval_into, self.x, self.eps
        gamma, rm, rv = self.c.params["weight"], self.c.state["running_mean"], self.c.state["running_var"]
        return lambda: f(dy, x, gamma, eps, rm, rv, dx, None, None, acc)


class Dropout(Op):
    """Inverted dropout. The keep-mask comes from ``model.rng`` (seeded from the model's seed), drawn
    as float64 uniforms whatever the dtype, so float32 and float64 models drop the same units."""
    kernels = ("dropout_forward_into", "dropout_backward_into")

    def __init__(self, c):
        super().__init__(c)
        self.p = float(c.config["p"])
        shape = self.mask_shape()
        self.mask = np.ones(shape, bool)
        self.uniform = np.zeros(shape, np.float64)

    def mask_shape(self) -> tuple:
        return self.x.shape                         # one value per unit

    def forward(self, training):
        x, y = self.x, self.y
        if not training:
            return lambda: np.copyto(y, x)
        f, p, mask, u, model = getattr(K, self.kernels[0]), self.p, self.mask, self.uniform, self.c.model

        def step():
            model.rng.random(out=u)
            np.greater_equal(u, p, out=mask)
            f(x, mask, p, y)
        return step

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, mask, p = dxs[0], getattr(K, self.kernels[1]), self.mask, self.p
        return lambda: f(dy, mask, p, dx, acc)

    def backward_eval(self, dy, dxs):
        """Evaluation-mode dropout is the identity: the gradient passes through (EVAL_PASS_THROUGH)."""
        return pass_gradient(dy, dxs)


class PassThrough(Op):
    """Ops whose gradient reaches each input unchanged (add; flatten and identity, which are views).
    The plan aliases an input's gradient buffer to ``dy`` when this op is its only consumer (then
    ``dxs`` holds None for it); otherwise the gradient is copied or accumulated here."""
    by_samples = True

    def backward(self, dy, dxs, grads):
        return pass_gradient(dy, dxs)


def pass_gradient(dy, dxs):
    """``dy`` copied (or accumulated) into each input's gradient; None entries are skipped (an input
    whose gradient buffer is ``dy`` itself, or that needs none)."""
    steps = []
    for target in dxs:
        if target is None:
            continue
        dx, acc = target
        src = dy.reshape(dx.shape)
        if acc:
            steps.append(lambda s=src, d=dx, f=K.accumulate_into: f(s, d))
        else:
            steps.append(lambda s=src, d=dx, f=K.copy_into: f(s, d))
    return chain(steps)


class Add(PassThrough):
    def forward_relu(self, y):
        """The forward of two operands fused with the relu after it: relu(a + b) into ``y`` (the
        relu's output); this op's own output is not written."""
        f, (a, b) = K.add_relu_into, self.c.xs
        return lambda: f(a, b, y)

    def forward(self, training):
        f, xs, y = K.add_into, self.c.xs, self.y
        if len(xs) == 2:
            a, b = xs
            return lambda: f(a, b, y)
        first, rest = xs[:2], xs[2:]

        def step():
            f(first[0], first[1], y)
            for x in rest:
                f(y, x, y)
        return step


class View(PassThrough):
    """flatten, identity and reshape: the output buffer is a view of the input's (set up by the
    plan)."""

    def forward(self, training):
        return None


class Concat(Op):
    """Along channels: each input is copied to (and its gradient taken from) a channel block."""
    by_samples = True

    def forward(self, training):
        f, xs, y = K.concat_forward_into, self.c.xs, self.y
        return lambda: f(xs, y)

    def backward(self, dy, dxs, grads):
        steps, f = [], K.concat_backward_into
        for i, target in enumerate(dxs):
            if target is not None:
                # the others as their channel counts: skipped
                dx, acc = target
                entries = [dx if j == i else x.shape[1] for j, x in enumerate(self.c.xs)]
                steps.append(lambda e=entries, acc=acc: f(dy, e, acc))
        return chain(steps)


# ---- the layers of dsl.md §10 ----------------------------------------------------------------------

class ConvTranspose(Op):
    """Transposed convolution (PyTorch's ConvTranspose1d/2d); weight (C, F/groups, *kernel)."""
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.x4, self.y4 = as4d(self.x), as4d(self.y)
        self.w = as_w4(c.params["weight"])
        self.b = c.params.get("bias")
        _, self.stride, self.pad, self.dilation = geometry(c.config)
        output_pad = tuple(int(v) for v in c.config["output_pad"])
        self.output_pad = (0, *output_pad) if len(output_pad) == 1 else output_pad
        self.groups = int(c.config["groups"])
        self.workspace = K.conv_transpose2d_workspace_size(self.x4.shape, self.w.shape, self.stride, self.pad,
                                                           self.output_pad, self.dilation, self.groups)
        self.ws = None

    def forward(self, training):
        f, x, w, b, y, ws = K.conv_transpose2d_forward_into, self.x4, self.w, self.b, self.y4, self.ws
        s, p, o, d, g = self.stride, self.pad, self.output_pad, self.dilation, self.groups
        return lambda: f(x, w, b, s, p, o, d, g, y, ws)

    def backward(self, dy, dxs, grads):
        dx, acc = dxs[0] or (None, False)
        dw = as_w4(grads["weight"]) if grads else None
        db = grads.get("bias") if grads else None
        if dx is None and dw is None:
            return None
        f, x, w, dy, dx, ws = K.conv_transpose2d_backward_into, self.x4, self.w, as4d(dy), as4d(dx), self.ws
        s, p, o, d, g = self.stride, self.pad, self.output_pad, self.dilation, self.groups
        return lambda: f(dy, x, w, s, p, o, d, g, dx, dw, db, ws, acc)


class Upsample(Op):
    """nearest or (bi)linear upsampling by integer factors (1-D: an image of height 1)."""
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.x4, self.y4 = as4d(self.x), as4d(self.y)
        self.scale = as2d(c.config["scale"])
        self.mode = c.config["mode"]

    def forward(self, training):
        f, x, y, scale, mode = K.upsample2d_forward_into, self.x4, self.y4, self.scale, self.mode
        return lambda: f(x, scale, mode, y)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, scale, mode = dxs[0], K.upsample2d_backward_into, self.scale, self.mode
        dy4, dx4 = as4d(dy), as4d(dx)
        return lambda: f(dy4, scale, mode, dx4, acc)


class AdaptiveAvgPool(Op):
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.x4, self.y4 = as4d(self.x), as4d(self.y)

    def forward(self, training):
        f, x, y = K.adaptive_avgpool2d_forward_into, self.x4, self.y4
        return lambda: f(x, y)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, dy4 = dxs[0], K.adaptive_avgpool2d_backward_into, as4d(dy)
        dx4 = as4d(dx)
        return lambda: f(dy4, dx4, acc)


class AdaptiveMaxPool(Op):
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.x4, self.y4 = as4d(self.x), as4d(self.y)
        self.argmax = self.per_sample("argmax", self.y4.shape, np.int64)

    def forward(self, training):
        f, x, y, a = K.adaptive_maxpool2d_forward_into, self.x4, self.y4, self.argmax
        return lambda: f(x, y, a)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, dy4, a = dxs[0], K.adaptive_maxpool2d_backward_into, as4d(dy), self.argmax
        dx4 = as4d(dx)
        return lambda: f(dy4, a, dx4, acc)


class Mul(Op):
    """Element-wise product of operands of the output's shape ("full") and of gates ("gate": one
    value per channel, Cx1x1, Cx1 or C, broadcast over the positions: squeeze-and-excitation).

    The gradient of an operand is dout times the product of the others. Two operands run the
    kernels directly (mul_backward for two full ones; gate_backward for a full one and a gate,
    both gradients in one pass); more operands form the product of the others in a scratch
    buffer first."""
    by_samples = True

    def __init__(self, c):
        super().__init__(c)
        self.forms = tuple(c.config["broadcast"])
        self.scratch = self.per_sample("scratch", self.y.shape, self.y.dtype) if len(c.xs) > 2 else None

    def _product(self, out, skip=None):
        """A closure writing the product of the operands (all but number ``skip``) into ``out``."""
        operands = [(x, form) for i, (x, form) in enumerate(zip(self.c.xs, self.forms)) if i != skip]
        full = [x for x, form in operands if form == "full"]
        gates = [x for x, form in operands if form == "gate"]
        mul, gate = K.mul_forward_into, K.gate_forward_into

        def step():
            if len(full) >= 2:
                mul(full[0], full[1], out)
                for a in full[2:]:
                    mul(out, a, out)
            elif full:
                np.copyto(out, full[0])
            else:                          # only gates are left: the skipped operand was the full one
                out.fill(1)
            for g in gates:
                gate(out, g, out)
        return step

    def forward(self, training):
        xs, y = self.c.xs, self.y
        if len(xs) > 2:
            return self._product(y)
        a, b = xs
        if self.forms == ("full", "full"):
            f = K.mul_forward_into
            return lambda: f(a, b, y)
        x, gate = (a, b) if self.forms[0] == "full" else (b, a)
        f = K.gate_forward_into
        return lambda: f(x, gate, y)

    def backward(self, dy, dxs, grads):
        xs = self.c.xs
        if all(t is None for t in dxs):
            return None
        if len(xs) == 2 and self.forms == ("full", "full"):
            f = K.mul_backward_into
            return chain([lambda dx=t[0], acc=t[1], other=xs[1 - i]: f(dy, other, dx, acc)
                          for i, t in enumerate(dxs) if t is not None])
        if len(xs) == 2:
            i, j = (0, 1) if self.forms[0] == "full" else (1, 0)        # i: the full operand
            dx, acc_dx = dxs[i] or (None, False)
            dgate, acc_dgate = dxs[j] or (None, False)
            f, x, gate = K.gate_backward_into, xs[i], xs[j]
            return lambda: f(dy, x, gate, dx, dgate, acc_dx, acc_dgate)
        steps, others = [], self.scratch
        for i, target in enumerate(dxs):
            if target is None:
                continue
            dx, acc = target
            steps.append(self._product(others, skip=i))
            if self.forms[i] == "full":
                steps.append(lambda dx=dx, acc=acc: K.mul_backward_into(dy, others, dx, acc))
            else:                          # the sums over each plane of dy * (the others)
                steps.append(lambda dg=dx, acc=acc: K.gate_backward_into(dy, others, dg, None, dg, False, acc))
        return chain(steps)


class Rearrange(Op):
    """channels (the slice [start, stop), copied: a channel range is not contiguous across samples)
    and shuffle (groups): kernels ``f(x, value, out)`` and ``f(dout, value, dx, accumulate)`` of one
    config value."""
    by_samples = True
    KERNELS = {"channels": ("channel_slice", "start"), "shuffle": ("channel_shuffle", "groups")}

    def __init__(self, c):
        super().__init__(c)
        kernel, key = self.KERNELS[c.op]
        self.forward_kernel = getattr(K, f"{kernel}_forward_into")
        self.backward_kernel = getattr(K, f"{kernel}_backward_into")
        self.value = int(c.config[key])

    def forward(self, training):
        f, x, y, value = self.forward_kernel, self.x, self.y, self.value
        return lambda: f(x, value, y)

    def backward(self, dy, dxs, grads):
        if dxs[0] is None:
            return None
        (dx, acc), f, value = dxs[0], self.backward_kernel, self.value
        return lambda: f(dy, value, dx, acc)


class DropPath(Dropout):
    """Stochastic depth: in training each sample is kept with probability 1 - p (and scaled by
    1/(1 - p)) or zeroed whole, its keep-mask drawn as dropout's (one value per sample); the
    identity in evaluation (EVAL_PASS_THROUGH)."""
    kernels = ("droppath_forward_into", "droppath_backward_into")

    def mask_shape(self) -> tuple:
        return self.x.shape[:1]


class Sample(Op):
    """The VAE's reparameterised sample of its inputs (mu, logvar): z = mu + exp(logvar/2)*eps in
    training, eps ~ N(0, 1) from ``model.rng`` (drawn in float64, then cast, as dropout's masks);
    z = mu in evaluation. Each forward also sets ``kl``, the KL divergence of N(mu, exp(logvar))
    from N(0, 1), summed over the features and averaged over the batch: the plan adds ``beta *
    kl`` to the loss, and the training backward sends its gradient (weight beta) into mu and
    logvar along with z's."""

    def __init__(self, c):
        super().__init__(c)
        self.mu, self.logvar = c.xs
        self.beta = float(c.config["beta"])
        self.eps = np.zeros(self.y.shape, self.y.dtype)
        self.normal = np.zeros(self.y.shape, np.float64)
        self.kl = 0.0                      # of the last forward

    @property
    def loss_term(self) -> float:
        """What the last forward adds to the loss: beta * KL."""
        return self.beta * self.kl

    def forward(self, training):
        f, mu, logvar, z, eps = K.vae_sample_forward_into, self.mu, self.logvar, self.y, self.eps
        if not training:
            zeros = np.zeros_like(eps)

            def evaluate():
                self.kl = f(mu, logvar, zeros, z)
                np.copyto(z, mu)           # exactly mu, also where exp(logvar/2) * 0 overflows to NaN
            return evaluate
        normal, model = self.normal, self.c.model

        def step():
            model.rng.standard_normal(out=normal)
            np.copyto(eps, normal, casting="unsafe")
            self.kl = f(mu, logvar, eps, z)
        return step

    def backward(self, dy, dxs, grads):
        if dxs[0] is None and dxs[1] is None:
            return None
        dmu, acc_mu = dxs[0] or (None, False)
        dlogvar, acc_logvar = dxs[1] or (None, False)
        f, mu, logvar, eps, beta = K.vae_sample_backward_into, self.mu, self.logvar, self.eps, self.beta
        return lambda: f(dy, beta, mu, logvar, eps, dmu, dlogvar, acc_mu, acc_logvar)

    def backward_eval(self, dy, dxs):
        """z = mu in evaluation: mu receives dy, logvar nothing."""
        steps = [pass_gradient(dy, dxs[:1])]
        if dxs[1] is not None and not dxs[1][1]:
            steps.append(lambda d=dxs[1][0]: d.fill(0))
        return chain(steps)


def chain(steps):
    steps = [s for s in steps if s is not None]
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]

    def step():
        for s in steps:
            s()
    return step


OPS = {
    "conv": Conv, "maxpool": MaxPool, "avgpool": AvgPool, "sumpool": SumPool,
    "globalavgpool": GlobalAvgPool, "globalmaxpool": GlobalMaxPool, "dense": Dense,
    "relu": Activation, "sigmoid": Activation, "tanh": Activation, "softmax": Activation,
    "leaky_relu": ScaledActivation, "batchnorm": BatchNorm, "dropout": Dropout,
    "add": Add, "concat": Concat, "flatten": View, "identity": View,
    # dsl.md §10
    "conv_transpose": ConvTranspose, "upsample": Upsample, "reshape": View, "mul": Mul,
    "relu6": InputActivation, "hardswish": InputActivation, "hardsigmoid": InputActivation,
    "silu": InputActivation, "gelu": InputActivation, "softplus": InputActivation, "elu": ScaledActivation,
    "adaptiveavgpool": AdaptiveAvgPool, "adaptivemaxpool": AdaptiveMaxPool, "channels": Rearrange,
    "shuffle": Rearrange, "droppath": DropPath, "sample": Sample,
}
VIEWS = {"flatten", "identity", "reshape"}          # output buffer = a view of the input buffer
PASS_THROUGH = {"add", "flatten", "identity", "reshape"}
EVAL_PASS_THROUGH = PASS_THROUGH | {"dropout", "droppath"}     # the same in evaluation mode
