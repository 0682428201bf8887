"""A compiled network: parameters, state, and the plans that run it.

    model = net.compile(dtype="float32", seed=0)           # or Model(net, dtype=..., seed=...)
    probs = model.forward(x)                               # evaluation mode
    loss, grads = model.loss_and_grad(x, y)                # training mode, grads[layer][param]
    opt = SGD(model, lr=0.05, momentum=0.9)
    loss, out = model.train_step(x, y, opt)
    g = model.gradient(x, of=3, wrt=["input", "conv2"])   # d logit_3 / d input, d logit_3 / d conv2
    model.save("w.npz"); model.load("w.npz")

A network with several inputs takes a dict of arrays wherever ``x`` appears above:
``model.forward({"z": z, "label": y})`` (a dict also works for one input). Losses: cross_entropy
(class labels; one per pixel for a KxHxW output), mse, l1 and bce (targets of the output's shape:
for an auto-encoder, the clean input itself). A network with ``sample`` layers (a VAE) adds their
beta * KL to the loss; ``model.loss_parts`` says how the last loss was made up.

All parameters live in one flat array (``params[layer][name]`` are views into it; assigning to
one copies into the view) and their gradients in another, so an optimizer step is one fused loop.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from cnnspec.engine import init, losses
from cnnspec.kernels import _jit
from cnnspec.errors import CnnSpecError, match_names, nearest
from cnnspec.npz import read_npz

DTYPES = ("float32", "float64")
PLAN_CACHE = 4                       # plans (batch sizes) kept per model, least recently used out


class ParamDict(dict):
    """A layer's parameters: assigning ``params[layer][name] = value`` copies into the array in
    place (it is a view into the model's flat parameter array), after checking the shape."""

    def __setitem__(self, key, value):
        if key not in self:
            raise KeyError(f"no parameter {key!r}; this layer has {', '.join(self)}")
        target = dict.__getitem__(self, key)
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"parameter {key!r} has shape {target.shape}, received {value.shape}")
        target[...] = value


@dataclass
class LoadReport:
    """What ``Model.load(path, strict=False)`` did: names loaded, skipped (with the reason) and
    present in the network but not in the file (kept at their initial values)."""
    path: str
    loaded: list = field(default_factory=list)
    skipped: list = field(default_factory=list)       # (name, reason)
    new: list = field(default_factory=list)

    def __str__(self):
        lines = [f"{self.path}: loaded {len(self.loaded)}, skipped {len(self.skipped)}, new {len(self.new)}"]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        lines += [f"  new {name} (kept its initial value)" for name in self.new]
        return "\n".join(lines)


class Model:
    """An analysed network compiled for execution (see the module docstring).

    ``backend`` maps layer-API function names (layer-api.md: ``conv2d_forward``, ``relu_backward``,
    ...) to callables that replace the built-in kernels for the layers they cover.
    """

    def __init__(self, network, dtype="float32", seed: int = 0, backend=None):
        graph = network if isinstance(network, nx.DiGraph) else network.graph
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            self.dtype = None
        if str(self.dtype) not in DTYPES:
            raise CnnSpecError(f"unknown dtype `{dtype}`; choose float32 or float64")
        self.network = network
        self.graph = graph
        self.name = graph.graph.get("network") or "network"
        self.seed = int(seed)
        self.input_name = graph.graph["input"]              # the first input
        self.input_names = list(graph.graph.get("inputs") or [self.input_name])
        self.input_shapes = {name: tuple(graph.nodes[name]["output_shape"]) for name in self.input_names}
        self.output_name = graph.graph["output"]
        self.input_shape = self.input_shapes[self.input_name]
        self.output_shape = tuple(graph.nodes[self.output_name]["output_shape"])
        out_node = graph.nodes[self.output_name]
        # the class scores: the logits before a final softmax (what losses and gradients start from)
        self.scores_name = (out_node["inputs"][0] if out_node["op"] in ("softmax", "sigmoid")
                            else self.output_name)              # logits: before a final softmax/sigmoid
        order = topological(graph)
        self.layers = [name for name in order if graph.nodes[name]["op"] != "input"]
        used = nx.ancestors(graph, self.output_name) | {self.output_name}
        self.live = [name for name in order if name in used]
        self._backend = None
        if backend is not None:
            from cnnspec.engine.backend import Backend
            self._backend = Backend(backend)

        init_rng, dropout_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(2))
        self.rng = dropout_rng               # dropout masks; assign a new Generator to reseed
        self._allocate(graph, init_rng)
        self._version = 0                    # bumped when the trainable set changes
        self.loss_parts = {}                 # the last loss: {"output": ..., sample layer: beta * KL}
        self._segments_cache = None
        self._plans = OrderedDict()
        self._pending = None                 # the Training of the last forward_train (backward)
        self.input_grads = {}                # of the last backprop(..., inputs=...)

    def _allocate(self, graph, rng):
        from cnnspec.limits import require_memory

        # parameters and their gradients, plus the float64 initial values made on the way
        n_params = sum(graph.nodes[name].get("n_params", 0) for name in self.layers)
        n_state = sum(math.prod(s) for name in self.layers for s in graph.nodes[name].get("state", {}).values())
        require_memory(n_params * (8 + 2 * self.dtype.itemsize) + n_state * (8 + self.dtype.itemsize),
                       f"the parameters of `{self.name}` ({n_params:,} values, with their gradients)",
                       hint="`cnnspec summary` shows the parameters per layer")
        entries = []                         # (layer, param name, shape, initial float64 value)
        self.state = {}
        self._trainable = {}
        for name in self.layers:
            node = graph.nodes[name]
            shapes = {k: tuple(v) for k, v in node.get("params", {}).items()}
            if shapes:
                values = init.init_params(node["op"], node["config"], shapes, rng)
                entries += [(name, k, shapes[k], values[k]) for k in shapes]
                self._trainable[name] = bool(node.get("trainable", True))
            if node.get("state"):
                values = init.init_state(node["op"], {k: tuple(v) for k, v in node["state"].items()})
                self.state[name] = {k: v.astype(self.dtype) for k, v in values.items()}
        total = sum(math.prod(shape) for _, _, shape, _ in entries)
        self._flat_params = np.zeros(total, self.dtype)
        self._flat_grads = np.zeros(total, self.dtype)
        self.params, self._grads, self._spans = {}, {}, {}
        offset = 0
        for layer, key, shape, value in entries:
            size = math.prod(shape)
            view = self._flat_params[offset:offset + size].reshape(shape)
            view[...] = value
            dict.__setitem__(self.params.setdefault(layer, ParamDict()), key, view)
            self._grads.setdefault(layer, {})[key] = self._flat_grads[offset:offset + size].reshape(shape)
            start, _ = self._spans.get(layer, (offset, 0))
            self._spans[layer] = (start, offset + size)
            offset += size

    # -- running ---------------------------------------------------------------------------------
    def forward(self, x, batch: int = 256) -> np.ndarray:
        """Evaluation-mode output for inputs ``x`` (N, *input shape) -- for several inputs a dict
        ``{name: array}`` -- computed ``batch`` samples at a time (dropout and droppath are the
        identity, batchnorm uses its running statistics, sample gives mu)."""
        xs, n = self._check_inputs(x)
        out = np.empty((n, *self.output_shape), self.dtype)
        for start, part in _batches(xs, n, batch):
            out[start:start + _size(part)] = self._plan(_size(part)).forward(part)
        return out

    def activations(self, x, layers=None, batch: int = 256) -> dict:
        """Evaluation-mode outputs of the layers whose names match the fnmatch patterns ``layers``
        (default: the inputs and every layer the output depends on), as ``{name: (N, *shape)}`` in
        network order."""
        xs, n = self._check_inputs(x)
        names = self.live if layers is None else self._match(layers, self.live)
        out = {name: np.empty((n, *self.graph.nodes[name]["output_shape"]), self.dtype) for name in names}
        for start, part in _batches(xs, n, batch):
            plan = self._plan(_size(part))
            plan.forward(part)
            for name in names:
                out[name][start:start + _size(part)] = plan.act[name]
        return out

    def gradient(self, x, of=None, wrt="input", *, layer: str | None = None, batch: int = 256) -> "Gradients":
        """Evaluation-mode gradients of one layer's output with respect to the input and to layers.

        ``layer`` is the tensor differentiated: by default the scores (``scores_name``: the logits
        before a final softmax or sigmoid, else the output). ``of`` says which of its values, per sample:

        * an int or a tuple of ints: one unit (``3`` = class 3 of a score vector, ``(5, 4, 4)`` =
          channel 5, row 4, column 4 of a conv layer), the same for every sample;
        * a sequence of N ints (a vector ``layer``): one class per sample;
        * an array of shape (N, *layer shape): weights w, giving the gradient of sum(w * layer)
          (a vector-Jacobian product: w is the gradient of some objective with respect to ``layer``);
        * None: all ones (the gradient of the layer's sum).

        ``wrt`` names the tensors to differentiate with respect to (a name or a list; ``"input"``
        is the network's first input, the others go by their names). Returns :class:`Gradients`:
        ``{name: (N, *shape) array}``, and ``.activations``, the forward outputs of those tensors
        and of ``layer`` for the same inputs. Dropout and droppath are the identity, batchnorm uses
        its running statistics and sample gives mu, as in :meth:`forward`; no parameter gradient
        is computed. The backward buffers are made once per batch size and reused.
        """
        xs, n = self._check_inputs(x)
        layer = self.scores_name if layer is None else self.tensor_name(layer, "layer")
        if isinstance(wrt, str) or not isinstance(wrt, (list, tuple)):
            wrt = [wrt]
        names = tuple(dict.fromkeys(self.tensor_name(name, "wrt") for name in wrt))
        if not names:
            raise CnnSpecError("gradient: `wrt` names no tensor")
        upstream = nx.ancestors(self.graph, layer) | {layer}
        for name in names:
            if name not in upstream:
                raise CnnSpecError(f"gradient: `{layer}` does not depend on `{name}`, so its gradient "
                                   f"with respect to `{name}` is zero",
                                   hint="choose a tensor that feeds the differentiated layer")
        shape = tuple(self.graph.nodes[layer]["output_shape"])
        fill = _seed(of, n, shape, layer)
        result = Gradients({name: np.empty((n, *self.graph.nodes[name]["output_shape"]), self.dtype)
                            for name in names}, layer=layer)
        result.activations = {name: np.empty((n, *self.graph.nodes[name]["output_shape"]), self.dtype)
                              for name in dict.fromkeys(names + (layer,))}
        for start, part in _batches(xs, n, batch):
            size = _size(part)
            plan = self._plan(size)
            backprop = plan.backprop(layer, names)
            plan.forward(part)
            fill(backprop.seed, start)
            backprop.run()
            for name, grad in backprop.grads.items():
                result[name][start:start + size] = grad
            for name, out in result.activations.items():
                out[start:start + size] = plan.act[name]
        return result

    def tensor_name(self, name, what: str = "layer") -> str:
        """A tensor's name for :meth:`gradient` (``"input"`` is the input), checked; ``what``
        names the argument in errors."""
        if not isinstance(name, str):
            raise CnnSpecError(f"`{what}` takes layer names, received {type(name).__name__}")
        if name == "input" and name not in self.graph:
            return self.input_name                      # the first input
        if name in self.live:
            return name
        if name in self.graph:
            raise CnnSpecError(f"`{name}` does not feed the output of `{self.name}`; the engine does not compute it")
        guess = nearest(name, ["input", *self.live])
        layers = (f"the layers are: {', '.join(self.live)}" if len(self.live) <= 30
                  else "`cnnspec summary` lists the layers")
        raise CnnSpecError(f"no layer named `{name}` in `{self.name}`",
                           hint=f"did you mean `{guess}`?" if guess else layers)

    def loss_and_grad(self, x, y, loss: str = "cross_entropy"):
        """Training-mode loss and its gradients: ``(loss, {layer: {param: array}})`` for the
        trainable layers (a frozen layer has no gradient). Batchnorm running statistics are
        updated and dropout, droppath and sample draw new noise, as in a training step. ``y``:
        class labels (cross_entropy), or targets of the output's shape (mse, l1, bce: for an
        auto-encoder the clean input). The loss includes the sample layers' beta * KL
        (``loss_parts`` has each part)."""
        value, _ = self._run_training(x, y, loss)
        return value, {layer: {k: g.copy() for k, g in self._grads[layer].items()}
                                 for layer, flag in self._trainable.items() if flag}

    def train_step(self, x, y, optimizer, loss: str = "cross_entropy"):
        """One training step: forward, loss, backward, ``optimizer.step()``. Returns ``(loss,
        output)`` with the network's output of this (training-mode) forward."""
        if optimizer.model is not self:
            raise CnnSpecError("this optimizer was made for another model")
        value, plan = self._run_training(x, y, loss)
        optimizer.step()
        return value, plan.output.copy()

    def evaluate(self, x, y, batch: int = 256, loss: str = "cross_entropy"):
        """Evaluation-mode mean loss over all samples and the outputs: ``(loss, outputs)``. The
        loss includes the sample layers' beta * KL (of mu and logvar: z = mu in evaluation);
        ``loss_parts`` has the means of each part."""
        losses.check_loss(loss)
        xs, n = self._check_inputs(x)
        y = losses.check_targets(loss, y, n, self.output_shape)
        out = np.empty((n, *self.output_shape), self.dtype)
        totals = {}
        for start, part in _batches(xs, n, batch):
            size = _size(part)
            plan = self._plan(size)
            losses.check_output(loss, plan.final_op, plan.head[-1])
            out[start:start + size] = plan.forward(part)
            value, terms = plan.eval_loss(loss, y[start:start + batch])
            for key, v in {"output": value, **terms}.items():
                totals[key] = totals.get(key, 0.0) + v * size
        self.loss_parts = {key: v / max(n, 1) for key, v in totals.items()}
        return sum(self.loss_parts.values()), out

    def warm_up(self, optimizer=None, loss: str | None = "cross_entropy", training: bool = True,
                batch: int = 2) -> None:
        """Compile (or load from numba's on-disk cache) every kernel that a training step with
        ``optimizer`` (None: forward and backward only; ``training=False``: none) and an
        evaluation forward with ``loss`` (None: the forward only) of this model use, on ``batch``
        zero samples. Parameters, gradients, batchnorm statistics, the dropout
        generator and the optimizer's state are restored afterwards: a run that warms up first
        reaches the very weights of one that does not. The first run on a machine spends seconds
        here; later ones load numba's cache in a fraction of a second."""
        x = {name: np.zeros((batch, *shape), self.dtype) for name, shape in self.input_shapes.items()}
        spatial = self.output_shape[1:] if losses.positions(self.output_shape) > 1 else ()
        y = (np.zeros((batch, *spatial), np.int64) if loss in ("cross_entropy", None)
             else np.zeros((batch, *self.output_shape), self.dtype))
        params, grads = self._flat_params.copy(), self._flat_grads.copy()
        state = {layer: {k: v.copy() for k, v in group.items()} for layer, group in self.state.items()}
        rng = self.rng.bit_generator.state
        saved = None if optimizer is None else {k: np.copy(v) for k, v in optimizer.state_dict().items()}
        try:
            if training and optimizer is None:
                self._run_training(x, y, loss or "cross_entropy")
            elif training:
                self.train_step(x, y, optimizer, loss or "cross_entropy")
            plan = self._plan(batch)                   # evaluate()'s work, without its bookkeeping
            plan.forward(x)
            if loss is not None:
                plan.eval_loss(loss, y)
        finally:
            self._flat_params[...] = params
            for layer, group in state.items():
                for k, v in group.items():
                    self.state[layer][k][...] = v
            self.rng.bit_generator.state = rng
            if saved is not None:
                optimizer.load_state_dict(saved)
            self._flat_grads[...] = grads

    def backprop(self, x, y, loss: str = "cross_entropy", *, inputs=(), params: bool = True,
                 accumulate: bool = False) -> float:
        """Training-mode forward, loss and backward, the parameter gradients left in the model
        (what the next ``optimizer.step()`` applies): PyTorch's ``loss.backward()``. Returns the
        loss (``loss_parts`` has its parts). ``inputs`` names inputs (``"input"``: the first)
        whose gradients to compute, in ``input_grads`` ({name: array}, copies); ``params=False``
        computes no parameter gradient (a GAN's discriminator in the generator's step);
        ``accumulate=True`` adds the parameter gradients to those already there, as successive
        ``backward()`` calls do in PyTorch (a discriminator's real and fake batches)."""
        names = self._input_list(inputs)
        saved = self._flat_grads.copy() if accumulate and params else None
        value, plan = self._run_training(x, y, loss, names, params)
        if saved is not None:
            self._flat_grads += saved
        training = plan.training(loss, names, params)
        self.input_grads = {name: grad.copy() for name, grad in training.input_grads.items()}
        self.last_output = plan.final_out.copy()        # the final activation's values (D(x) of a GAN)
        return value

    def forward_train(self, x) -> np.ndarray:
        """Training-mode forward (batchnorm on batch statistics, updating its running ones;
        dropout, droppath and sample drawing noise), kept for :meth:`backward`: returns a copy of
        the output. Running the model in any other way in between discards it."""
        xs, n = self._check_inputs(x)
        plan = self._plan(n)
        training = plan.training(None)
        training.forward(xs)
        self._pending = training
        return plan.output.copy()

    def update_batchnorm(self, batches) -> int:
        """Recompute every batchnorm's running statistics from ``batches`` (an iterable of inputs,
        as :meth:`forward` takes them): the plain average over the batches of each batch's mean
        and unbiased variance, PyTorch's ``torch.optim.swa_utils.update_bn`` (running statistics
        reset, momentum None). For weights that no training forward produced, such as an average
        of weights. Parameters do not change; dropout and sample layers draw from the model's
        generator as in training. Returns the number of batches (0: nothing changed)."""
        from cnnspec.engine.ops import BatchNorm

        sums, count = {}, 0
        for x in batches:
            xs, n = self._check_inputs(x)
            plan = self._plan(n)
            plan.training(None).forward(xs)
            for name, op in plan.ops.items():
                if isinstance(op, BatchNorm):
                    values = op.x.size // op.x.shape[1]
                    variance = (1 / op.invstd ** 2 - op.eps) * values / max(values - 1, 1)
                    state, mean_sum, var_sum = sums.get(name, (op.c.state, 0.0, 0.0))
                    sums[name] = (state, mean_sum + op.mean, var_sum + variance)
            count += 1
        self._pending = None
        for state, mean_sum, var_sum in sums.values():
            state["running_mean"][...] = mean_sum / count
            state["running_var"][...] = var_sum / count
        return count

    def backward(self, doutput, *, inputs=(), accumulate: bool = False) -> dict:
        """Backward of the last :meth:`forward_train` from ``doutput``, the gradient of some loss
        with respect to the output (N, *output shape): parameter gradients into the model (added
        to those there with ``accumulate``), plus the sample layers' beta * KL terms. Returns
        {input: gradient} for the inputs named in ``inputs``."""
        training = getattr(self, "_pending", None)
        if training is None:
            raise CnnSpecError("backward() needs the activations of a forward_train() just before it",
                               hint="call model.forward_train(x), then model.backward(doutput)")
        names = self._input_list(inputs)
        doutput = np.asarray(doutput)
        if doutput.shape != training.plan.output.shape:
            raise CnnSpecError(f"backward: the gradient of the output has shape {doutput.shape}; the output "
                               f"of the last forward_train has shape {training.plan.output.shape}")
        if names:                       # the same forward (the plan's ops), differentiated to the inputs too
            training = training.plan.training(None, names)
        saved = self._flat_grads.copy() if accumulate else None
        np.copyto(training.doutput, doutput.reshape(training.doutput.shape), casting="same_kind")
        training.backward()
        if saved is not None:
            self._flat_grads += saved
        self._pending = None
        return {name: training.input_grads[name].copy() for name in names}

    def decode(self, layer: str, values, batch: int = 256) -> np.ndarray:
        """Evaluation-mode output of the network with ``layer``'s output set to ``values`` (N,
        *its shape) and only the layers after it computed: a VAE's decoder fed with codes z
        (``layer`` its ``sample`` layer). The layers after it may read no other tensor."""
        layer = self.tensor_name(layer)
        after = nx.descendants(self.graph, layer)
        if self.output_name not in after:
            raise CnnSpecError(f"decode: the output of `{self.name}` does not follow `{layer}`")
        outside = sorted({i for name in after for i in self.graph.nodes[name]["inputs"]
                          if i != layer and i not in after})
        if outside:
            raise CnnSpecError(f"decode: the layers after `{layer}` also read `{outside[0]}`, which comes "
                               f"before it: they cannot run from `{layer}` alone")
        shape = tuple(self.graph.nodes[layer]["output_shape"])
        values = np.asarray(values)
        if values.dtype.kind != "f" or values.shape[1:] != shape or not len(values):
            raise CnnSpecError(f"decode: `{layer}` takes floating-point values of shape (N, {fmt(shape)}); "
                               f"received {values.dtype} of shape {values.shape}")
        out = np.empty((len(values), *self.output_shape), self.dtype)
        for start in range(0, len(values), batch):
            part = values[start:start + batch]
            plan = self._plan(len(part))
            np.copyto(plan.act[layer], part, casting="same_kind")
            for step in plan.decoder_steps(layer):
                step()
            out[start:start + len(part)] = plan.output
        return out

    def _input_list(self, inputs) -> tuple:
        names = [inputs] if isinstance(inputs, str) else list(inputs or ())
        for name in names:
            if name != "input" and name not in self.input_names:
                raise CnnSpecError(f"`{self.name}` has no input named `{name}`; its inputs are "
                                   f"{self._describe_inputs()}")
        return tuple(dict.fromkeys(self.input_name if name == "input" else name for name in names))

    def _run_training(self, x, y, loss, inputs=(), params=True):
        """Training-mode forward, loss and backward; returns (loss, plan)."""
        losses.check_loss(loss)
        xs, n = self._check_inputs(x)
        y = losses.check_targets(loss, y, n, self.output_shape)
        plan = self._plan(n)
        value, terms = plan.training(loss, inputs, params).run(xs, y)
        self.loss_parts = {"output": value, **terms}
        return value + sum(terms.values()), plan

    def _plan(self, batch: int):
        self._pending = None             # other buffers' contents: no backward() of a forward_train
        plan = self._plans.get(batch)
        if plan is None or plan.threads != _jit.num_threads():   # (workspaces are per thread:
            from cnnspec.engine.plan import Plan                  # CNNSPEC_THREADS changed since)
            self._plans.pop(batch, None)
            plan = self._plans[batch] = Plan(self, batch)
            while len(self._plans) > PLAN_CACHE:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(batch)
        return plan

    def _check_inputs(self, x) -> tuple:
        """``({input name: array}, N)``: every input of the network, floating point, of its shape
        and one batch size N >= 1. ``x`` is an array (a network with one input) or a mapping of
        the inputs' names to arrays."""
        names = self.input_names
        if type(x) is np.ndarray and len(names) == 1:     # the common case, first (a training
            x = self._check_array(names[0], x)           # step's checks are on its critical path)
            return {names[0]: x}, len(x)
        if isinstance(x, Mapping):
            unknown = [key for key in x if key not in names]
            if unknown:
                guess = nearest(str(unknown[0]), names)
                raise CnnSpecError(f"`{self.name}` has no input named `{unknown[0]}`; its inputs are "
                                   f"{self._describe_inputs()}", hint=f"did you mean `{guess}`?" if guess else None)
            missing = [name for name in names if name not in x]
            if missing:
                raise CnnSpecError(f"input `{missing[0]}` of `{self.name}` is missing; its inputs are "
                                   f"{self._describe_inputs()}")
            xs = {name: self._check_array(name, x[name]) for name in names}
        elif len(names) > 1:
            keys = ", ".join(f'"{name}": ...' for name in names)
            raise CnnSpecError(f"`{self.name}` has {len(names)} inputs ({self._describe_inputs()}); pass a dict "
                               f"of arrays, {{{keys}}}")
        else:
            xs = {names[0]: self._check_array(names[0], x)}
        sizes = {name: len(a) for name, a in xs.items()}
        if len(set(sizes.values())) > 1:
            raise CnnSpecError(f"the inputs of `{self.name}` have different batch sizes: "
                               + ", ".join(f"{name} {size}" for name, size in sizes.items()))
        return xs, next(iter(sizes.values()))

    def _describe_inputs(self) -> str:
        return ", ".join(f"{name} ({fmt(shape)})" for name, shape in self.input_shapes.items())

    def _check_array(self, name, x) -> np.ndarray:
        x = np.asarray(x)
        shape = self.input_shapes[name]
        if x.dtype.kind == "f" and x.shape[1:] == shape and len(x):
            return x
        whose = f"`{self.name}`" if len(self.input_names) == 1 else f"input `{name}` of `{self.name}`"
        expected = "(N, " + ", ".join(map(str, shape)) + ")"
        if x.dtype.kind != "f":
            hint = ("convert it with x.astype(np.float32) (and scale images to [0, 1])"
                    if x.dtype.kind in "iub" else None)
            raise CnnSpecError(f"{whose} takes floating-point input of shape {expected}; received "
                               f"{x.dtype} of shape {x.shape}", hint=hint)
        hint = "add a batch axis: x[None]" if x.shape == shape else None
        raise CnnSpecError(f"{whose} takes input of shape {expected}, N >= 1; received {x.shape}", hint=hint)

    # -- parameters ------------------------------------------------------------------------------
    @property
    def trainable(self) -> dict:
        """{layer: bool} for the layers that have parameters."""
        return dict(self._trainable)

    def set_trainable(self, patterns, flag: bool = True) -> list:
        """Freeze (``flag=False``) or unfreeze the layers whose names match any of the fnmatch
        ``patterns`` (``"conv*"``, ``"basic1.*"``). Returns the parameterised layers matched."""
        matched = [name for name in self._match(patterns, self.layers) if name in self._trainable]
        if any(self._trainable[name] != bool(flag) for name in matched):
            for name in matched:
                self._trainable[name] = bool(flag)
            self._version += 1
            self._segments_cache = None
        return matched

    def _match(self, patterns, names) -> list:
        return match_names(names, patterns, f"the layer pattern (network `{self.name}`)")

    def _segments(self) -> np.ndarray:
        """What the optimizer updates: one row (start, stop, layer index) per trainable layer that
        the output depends on, its parameters being ``_flat_params[start:stop]``."""
        if self._segments_cache is None:
            live = set(self.live)
            rows = [(start, stop, i) for i, (name, (start, stop)) in enumerate(self._spans.items())
                    if self._trainable[name] and name in live]
            self._segments_cache = np.array(rows, np.int64).reshape(-1, 3)
        return self._segments_cache

    def arrays(self) -> dict:
        """Parameters and state keyed ``"layer.name"`` (the keys of a weights file)."""
        out = {f"{layer}.{k}": v for layer, group in self.params.items() for k, v in group.items()}
        out.update({f"{layer}.{k}": v for layer, group in self.state.items() for k, v in group.items()})
        return out

    def save(self, path):
        """Write parameters and state to an ``.npz`` file keyed ``"layer.param"`` (atomically: a
        failure, e.g. a full disk, is a CnnSpecError and leaves any previous file as it was).
        Returns the path written."""
        from cnnspec.atomic import write_npz

        return write_npz(os.fspath(path), self.arrays(), what="weights")

    def load(self, path, strict: bool = True):
        """Read weights saved by :meth:`save`. Strict: names and shapes must match exactly, or a
        CnnSpecError lists what is missing, unexpected or of another shape (nothing is loaded).
        ``strict=False`` loads what matches and returns a :class:`LoadReport`. Values that are
        not finite (NaN, inf) are loaded with a :class:`~cnnspec.errors.CnnSpecWarning`."""
        path = os.fspath(path)
        return self.load_arrays(read_npz(path, "weights"), strict, source=path)

    def load_arrays(self, arrays: dict, strict: bool = True, source: str = "weights"):
        """:meth:`load` from arrays by name (``source`` names them in messages)."""
        path = source
        expected = self.arrays()
        missing, unexpected, mismatched, bad_type = weight_mismatches(expected, arrays)
        if strict:
            if missing or unexpected or mismatched or bad_type:
                raise CnnSpecError(describe_mismatches(self.name, expected, arrays), file=path,
                                   hint="load(path, strict=False) loads the matching entries")
            for k, target in expected.items():
                target[...] = arrays[k]
            _warn_not_finite(path, {k: arrays[k] for k in expected})
            return None
        report = LoadReport(path)
        for k, target in expected.items():
            if k in missing:
                report.new.append(k)
            elif k in mismatched:
                report.skipped.append((k, f"shape {fmt(arrays[k].shape)} in the file, "
                                          f"{fmt(target.shape)} in the network"))
            elif k in bad_type:
                report.skipped.append((k, f"not numbers ({arrays[k].dtype})"))
            else:
                target[...] = arrays[k]
                report.loaded.append(k)
        report.skipped += [(k, "not in the network") for k in unexpected]
        _warn_not_finite(path, {k: arrays[k] for k in report.loaded})
        return report

    @property
    def n_params(self) -> int:
        return self._flat_params.size

    def __repr__(self):
        return f"<Model {self.name}: {self.dtype}, {self.n_params:,} parameters, seed {self.seed}>"


class Gradients(dict):
    """What :meth:`Model.gradient` returns: ``{name: gradient}`` (N, *shape) for each ``wrt``
    tensor; ``layer`` is the tensor differentiated; ``activations`` holds the evaluation-mode
    outputs of the ``wrt`` tensors and of ``layer`` for the same inputs."""

    def __init__(self, grads: dict, layer: str):
        super().__init__(grads)
        self.layer = layer
        self.activations: dict = {}


def _seed(of, n: int, shape: tuple, layer: str):
    """A function ``fill(buffer, start)`` writing the gradient seed of samples ``start:start+B``
    into the seed buffer (B, *shape), for :meth:`Model.gradient`'s ``of``."""
    what = f"gradient: `of` for `{layer}` ({fmt(shape)} per sample)"
    if of is None:
        return lambda buf, start: buf.fill(1)
    if isinstance(of, (int, np.integer)) and not isinstance(of, bool):
        of = (int(of),)
    if isinstance(of, tuple) and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in of):
        if len(of) != len(shape) or not all(-d <= i < d for i, d in zip(of, shape)):
            raise CnnSpecError(f"{what}: the unit index {of} is not a valid index of that shape")
        index = (slice(None), *(int(i) for i in of))

        def fill_unit(buf, start):
            buf.fill(0)
            buf[index] = 1
        return fill_unit
    array = np.asarray(of)
    if array.dtype.kind in "iu" and array.ndim == 1 and len(shape) == 1:
        if len(array) != n:
            raise CnnSpecError(f"{what}: {len(array)} class indices for {n} samples")
        if array.size and not (array.min() >= -shape[0] and array.max() < shape[0]):
            raise CnnSpecError(f"{what}: class indices must lie in [0, {shape[0]})")

        def fill_classes(buf, start):
            buf.fill(0)
            rows = array[start:start + len(buf)]
            buf[np.arange(len(rows)), rows] = 1
        return fill_classes
    if array.dtype.kind not in "fiu" or array.shape != (n, *shape):
        raise CnnSpecError(f"{what}: expected a unit index, {n} class indices or an array of shape "
                           f"{(n, *shape)}; received {array.dtype} of shape {array.shape}")
    return lambda buf, start: np.copyto(buf, array[start:start + len(buf)], casting="unsafe")


def _batches(xs: dict, n: int, batch: int):
    """(start, {name: the samples start:start+batch of each input}) over the batch."""
    for start in range(0, n, batch):
        yield start, {name: a[start:start + batch] for name, a in xs.items()}


def _size(part: dict) -> int:
    return len(next(iter(part.values())))


def weight_mismatches(expected: dict, arrays: dict) -> tuple:
    """``(missing, unexpected, mismatched, bad_type)``: the names of ``expected`` (arrays keyed
    "layer.param") absent from ``arrays``, the names of ``arrays`` not expected, those of another
    shape, and those that are not numbers."""
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    mismatched = [k for k in expected if k in arrays and np.shape(arrays[k]) != np.shape(expected[k])]
    bad_type = [k for k in expected if k in arrays and k not in mismatched
                and np.asarray(arrays[k]).dtype.kind not in "fiu"]
    return missing, unexpected, mismatched, bad_type


def describe_mismatches(network: str, expected: dict, arrays: dict) -> str:
    """The message saying why the weights ``arrays`` do not fit network ``network``, one line per name."""
    missing, unexpected, mismatched, bad_type = weight_mismatches(expected, arrays)
    shape = lambda a: fmt(np.shape(a))          # noqa: E731
    lines = [f"weights do not match network `{network}`:"]
    lines += [f"  missing: {k} ({shape(expected[k])})" for k in missing]
    lines += [f"  unexpected: {k} ({shape(arrays[k])})" for k in unexpected]
    lines += [f"  shape mismatch: {k} is {shape(arrays[k])} in the file, {shape(expected[k])} in the network"
              for k in mismatched]
    lines += [f"  not numbers: {k} ({np.asarray(arrays[k]).dtype})" for k in bad_type]
    return "\n".join(lines)


def _warn_not_finite(source: str, arrays: dict) -> None:
    """A CnnSpecWarning naming the loaded arrays that hold NaN or infinite values."""
    bad = []
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
            bad.append(f"{key} ({', '.join(filter(None, [nan and f'{nan} NaN', inf and f'{inf} infinite']))})")
    if bad:
        import warnings

        from cnnspec.errors import CnnSpecWarning

        warnings.warn(f"{source}: weights that are not finite numbers: {'; '.join(bad)}; the network's "
                      f"outputs will be NaN (was it saved from a run that diverged?)", CnnSpecWarning, stacklevel=3)


def fmt(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def topological(graph) -> list:
    """Node names in topological order: the builder's insertion order when it is one (it is), else
    networkx's."""
    seen = set()
    for name in graph.nodes:
        if not all(i in seen for i in graph.nodes[name].get("inputs", ())):
            return list(nx.topological_sort(graph))
        seen.add(name)
    return list(graph.nodes)
