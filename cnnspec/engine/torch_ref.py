"""The same network in PyTorch, with a model's weights: the yardstick of the tests and the bench.

``TorchNet(model)`` copies the model's parameters and running statistics into torch tensors and
runs the graph with ``torch.nn.functional``, node by node, as one would write it in PyTorch (a
final softmax is left out of training, where ``F.cross_entropy`` takes the logits). Every layer
kind runs, those of dsl.md §10 included; droppath and sample draw their noise from torch's
generator (so training steps are alike, not equal, where they are used), and the loss adds the
sample layers' beta * KL. Imported only where torch is installed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class TorchNet:
    """A model's network in PyTorch: ``forward(x, training)``, ``parameters()``, ``grads()``."""

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self.dtype = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}[model.dtype]
        self.params = {}
        for layer, group in model.params.items():
            op = self.graph.nodes[layer]["op"]
            for name, value in group.items():
                # dense weights in torch's (out, in) layout, as nn.Linear keeps them
                value = value.T if op == "dense" and name == "weight" else value
                tensor = torch.tensor(np.ascontiguousarray(value), dtype=self.dtype)
                tensor.requires_grad_(model.trainable[layer])
                self.params[layer, name] = tensor
        self.state = {(layer, k): torch.tensor(v, dtype=self.dtype)
                      for layer, group in model.state.items() for k, v in group.items()}
        self.steps = [(name, self._step(name)) for name in model.live if self.graph.nodes[name]["op"] != "input"]
        self.output_softmax = self.graph.nodes[model.output_name]["op"] == "softmax"

    def parameters(self) -> list:
        return [t for t in self.params.values() if t.requires_grad]

    def grads(self) -> dict:
        """{layer: {param: ndarray}} in the engine's layout, after a backward."""
        out = {}
        for (layer, name), t in self.params.items():
            if t.grad is not None:
                g = t.grad.numpy()
                transposed = self.graph.nodes[layer]["op"] == "dense" and name == "weight"
                out.setdefault(layer, {})[name] = g.T if transposed else g
        return out

    def param(self, layer, name) -> np.ndarray:
        t = self.params[layer, name].detach().numpy()
        return t.T if self.graph.nodes[layer]["op"] == "dense" and name == "weight" else t

    def forward(self, x, training: bool = False, logits: bool = False):
        """The network's output for ``x`` (an array, or {input name: array}); ``logits=True`` stops
        before a final softmax. ``self.kl`` holds the sample layers' beta * KL afterwards."""
        given = x if isinstance(x, dict) else {self.model.input_name: x}
        values = {name: v if torch.is_tensor(v) else torch.from_numpy(np.asarray(v)) for name, v in given.items()}
        self.kl = 0.0
        for name, step in self.steps:
            if logits and name == self.model.output_name and self.output_softmax:
                return values[self.graph.nodes[name]["inputs"][0]]
            values[name] = step([values[i] for i in self.graph.nodes[name]["inputs"]], training)
        return values[self.model.output_name]

    def loss(self, x, y, loss: str = "cross_entropy", training: bool = True):
        if loss == "cross_entropy":
            out = self.forward(x, training, logits=True)
            y = torch.as_tensor(y)
            scores = out.reshape(len(out), -1) if y.dim() == 1 else out          # per position: (N, K, ...)
            return F.cross_entropy(scores, y) + self.kl
        out = self.forward(x, training)
        y = np.asarray(y)
        if loss == "mse" and y.ndim == 1 and y.dtype.kind in "iu":
            y = np.eye(out[0].numel())[y]
        target = torch.as_tensor(y, dtype=self.dtype).reshape(out.shape)
        value = {"mse": F.mse_loss, "l1": F.l1_loss, "bce": F.binary_cross_entropy}[loss](out, target)
        return value + self.kl

    def _step(self, name):
        node = self.graph.nodes[name]
        op, cfg = node["op"], node["config"]
        p = lambda key: self.params.get((name, key))      # noqa: E731
        if op == "conv":
            rank = len(cfg["kernel"])
            conv = F.conv2d if rank == 2 else F.conv1d
            pad = cfg["pad"]
            before, after = pad[0::2], pad[1::2]
            args = dict(stride=tuple(cfg["stride"]), dilation=tuple(cfg["dilation"]), groups=cfg["groups"])
            if before == after:
                return lambda xs, t: conv(xs[0], p("weight"), p("bias"), padding=tuple(before), **args)
            torch_pad = tuple(v for i in reversed(range(rank)) for v in (before[i], after[i]))
            return lambda xs, t: conv(F.pad(xs[0], torch_pad), p("weight"), p("bias"), **args)
        if op in ("maxpool", "avgpool", "sumpool"):
            rank = len(cfg["kernel"])
            pad = cfg["pad"]
            if pad[0::2] != pad[1::2]:
                raise NotImplementedError("TorchNet: asymmetric pooling padding")
            kw = dict(kernel_size=tuple(cfg["kernel"]), stride=tuple(cfg["stride"]), padding=tuple(pad[0::2]),
                      ceil_mode=cfg["ceil"])
            if op == "maxpool":
                pool = F.max_pool2d if rank == 2 else F.max_pool1d
                return lambda xs, t: pool(xs[0], **kw)
            if op == "avgpool":
                pool = F.avg_pool2d if rank == 2 else F.avg_pool1d
                return lambda xs, t: pool(xs[0], **kw)
            if rank == 2:                                       # sum: divide by 1
                return lambda xs, t: F.avg_pool2d(xs[0], divisor_override=1, **kw)
            return lambda xs, t: F.avg_pool1d(xs[0], **kw) * cfg["kernel"][0]
        new = self._step_v10(name, op, cfg, p)
        if new is not None:
            return new
        dims = lambda x: tuple(range(2, x.dim()))         # noqa: E731
        simple = {
            "globalavgpool": lambda xs, t: xs[0].mean(dim=dims(xs[0]), keepdim=True),
            "globalmaxpool": lambda xs, t: xs[0].amax(dim=dims(xs[0]), keepdim=True),
            "dense": lambda xs, t: F.linear(xs[0], p("weight"), p("bias")),
            "flatten": lambda xs, t: xs[0].flatten(1),
            "identity": lambda xs, t: xs[0],
            "relu": lambda xs, t: F.relu(xs[0]),
            "sigmoid": lambda xs, t: torch.sigmoid(xs[0]),
            "tanh": lambda xs, t: torch.tanh(xs[0]),
            "softmax": lambda xs, t: F.softmax(xs[0], dim=1),
            "leaky_relu": lambda xs, t: F.leaky_relu(xs[0], cfg.get("slope", 0.01)),
            "add": lambda xs, t: sum(xs[1:], xs[0]),
            "concat": lambda xs, t: torch.cat(xs, dim=1),
            "dropout": lambda xs, t: F.dropout(xs[0], cfg["p"], training=t),
            "batchnorm": lambda xs, t: F.batch_norm(
                xs[0], self.state[name, "running_mean"], self.state[name, "running_var"], p("weight"), p("bias"),
                training=t, momentum=cfg["momentum"], eps=cfg["eps"]),
        }
        return simple[op]

    def _step_v10(self, name, op, cfg, p):
        """The layers of dsl.md §10 (None for the others)."""
        if op == "conv_transpose":
            rank = len(cfg["kernel"])
            conv = F.conv_transpose2d if rank == 2 else F.conv_transpose1d
            pad, extra = cfg["pad"], cfg["output_pad"]

            def conv_transpose(xs, t):
                full = conv(xs[0], p("weight"), None, tuple(cfg["stride"]), 0, 0, cfg["groups"], tuple(cfg["dilation"]))
                # crop (before, after) per axis, then zeros for output_pad past the end (F.pad, last axis first)
                amounts = [v for i in reversed(range(rank)) for v in (-pad[2 * i], extra[i] - pad[2 * i + 1])]
                out = F.pad(full, amounts)
                bias = p("bias")
                return out if bias is None else out + bias.reshape(1, -1, *([1] * rank))
            return conv_transpose
        if op == "upsample":
            mode = cfg["mode"]
            corners = None if mode == "nearest" else False
            return lambda xs, t: F.interpolate(xs[0], scale_factor=tuple(float(v) for v in cfg["scale"]), mode=mode,
                                               align_corners=corners)
        if op == "mul":
            def mul(xs, t):
                full = max(xs, key=lambda v: v.dim() * 10**12 + v.numel())
                out = None
                for v in xs:
                    v = v.reshape(*v.shape, *([1] * (full.dim() - v.dim())))      # a flat gate C: C x 1 x 1
                    out = v if out is None else out * v
                return out
            return mul
        if op == "sample":
            beta = cfg["beta"]

            def sample(xs, t):
                mu, logvar = xs
                kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).reshape(len(mu), -1).sum(1)
                self.kl = self.kl + beta * kl.mean()
                return mu + torch.exp(logvar / 2) * torch.randn_like(mu) if t else mu
            return sample
        if op == "droppath":
            prob = cfg["p"]

            def droppath(xs, t):
                x = xs[0]
                if not t or prob == 0:
                    return x
                keep = torch.empty((len(x),) + (1,) * (x.dim() - 1), dtype=x.dtype).bernoulli_(1 - prob)
                return x * keep / (1 - prob)
            return droppath
        if op in ("adaptiveavgpool", "adaptivemaxpool"):
            rank = len(cfg["size"])
            pool = {("adaptiveavgpool", 1): F.adaptive_avg_pool1d, ("adaptiveavgpool", 2): F.adaptive_avg_pool2d,
                    ("adaptivemaxpool", 1): F.adaptive_max_pool1d,
                    ("adaptivemaxpool", 2): F.adaptive_max_pool2d}[op, rank]
            return lambda xs, t: pool(xs[0], tuple(cfg["size"]))
        if op == "shuffle":
            g = cfg["groups"]
            return lambda xs, t: xs[0].reshape(len(xs[0]), g, -1, *xs[0].shape[2:]).transpose(1, 2).reshape(xs[0].shape)
        simple = {
            "reshape": lambda xs, t: xs[0].reshape(len(xs[0]), *cfg["shape"]),
            "channels": lambda xs, t: xs[0][:, cfg["start"]:cfg["stop"]],
            "relu6": lambda xs, t: F.relu6(xs[0]), "hardswish": lambda xs, t: F.hardswish(xs[0]),
            "hardsigmoid": lambda xs, t: F.hardsigmoid(xs[0]), "silu": lambda xs, t: F.silu(xs[0]),
            "gelu": lambda xs, t: F.gelu(xs[0]), "softplus": lambda xs, t: F.softplus(xs[0]),
            "elu": lambda xs, t: F.elu(xs[0], cfg.get("alpha", 1.0)),
        }
        return simple.get(op)
