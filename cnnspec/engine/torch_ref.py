"""The same network in PyTorch, with a model's weights: the yardstick of the tests and the bench.

``TorchNet(model)`` copies the model's parameters and running statistics into torch tensors and
runs the graph with ``torch.nn.functional``, node by node, as one would write it in PyTorch (a
final softmax is left out of training, where ``F.cross_entropy`` takes the logits). Imported only
where torch is installed.
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
        """The network's output; ``logits=True`` stops before a final softmax."""
        values = {self.model.input_name: x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))}
        for name, step in self.steps:
            if logits and name == self.model.output_name and self.output_softmax:
                return values[self.graph.nodes[name]["inputs"][0]]
            values[name] = step([values[i] for i in self.graph.nodes[name]["inputs"]], training)
        return values[self.model.output_name]

    def loss(self, x, y, loss: str = "cross_entropy", training: bool = True):
        if loss == "cross_entropy":
            out = self.forward(x, training, logits=True)
            return F.cross_entropy(out.reshape(len(out), -1), torch.as_tensor(y))
        out = self.forward(x, training)
        y = np.asarray(y)
        if y.ndim == 1 and y.dtype.kind in "iu":
            y = np.eye(out[0].numel())[y].reshape(out.shape)
        return F.mse_loss(out, torch.as_tensor(y, dtype=self.dtype))

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
