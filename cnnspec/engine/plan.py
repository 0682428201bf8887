"""A compiled plan: the network's kernel calls in topological order over buffers of one batch size.

Every activation is allocated once, when the plan is made; flatten and identity outputs are views
of their input. The training part (gradient buffers, backward calls, loss) is made on first use
for a loss and remade when the set of trainable layers changes. Gradients flow in reverse
topological order; a tensor that feeds several layers receives the first contribution by
overwrite and the others by accumulation (``accumulate=True`` in the kernels). When an input's
only consumer passes the gradient through unchanged (add, flatten, identity), the input's
gradient buffer *is* the consumer's (a view): no copy.

Inputs are given as ``{input name: array}`` (every input of the network). Layers with a loss term
(``sample``: beta * KL) add it to the loss of the training step and of the evaluation; the
training backward sends its gradient with the rest.
"""
from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict

import networkx as nx
import numpy as np

from cnnspec import kernels as K
from cnnspec.kernels import _jit
from cnnspec.analysis import fusions
from cnnspec.engine import losses
from cnnspec.engine.ops import EVAL_PASS_THROUGH, OPS, PASS_THROUGH, VIEWS, NodeContext
from cnnspec.limits import available_memory, require_memory

BACKPROP_CACHE = 8                  # backward paths (layer, wrt) kept per plan, least recently used out
FUSE_RELU = True                    # False: batchnorm -> relu pairs run apart in training (tests)
BY_SAMPLES = True                   # False: training on several threads splits each layer (tests)
SHARE_MACS = 1 << 22                # forward multiply-adds per thread's share from which
                                    # training runs by samples (BySamples)
SHARE_EXTRA = 0.1                   # at most this much of the step's buffers in the shares'
                                    # copies of the parameter gradients


class Plan:
    """Buffers and steps for batches of ``batch`` samples."""

    def __init__(self, model, batch: int):
        self.model = model
        self.batch = batch
        self.threads = _jit.num_threads()             # what its workspaces are sized for
        graph, dtype = model.graph, model.dtype
        self.order = model.live                        # nodes the output depends on, topological
        # what this plan may use, measured before it allocates; each stage checks its total
        self.available = available_memory()
        self.reserved = sum(batch * math.prod(graph.nodes[name]["output_shape"]) for name in self.order
                            if graph.nodes[name]["op"] not in VIEWS) * dtype.itemsize
        self.require(self.reserved, f"the activations of `{model.name}` for a batch of {batch}")
        self.act = {}
        for name in self.order:
            node = graph.nodes[name]
            shape = (batch, *node["output_shape"])
            if node["op"] in VIEWS:
                self.act[name] = self.act[node["inputs"][0]].reshape(shape)
            else:
                self.act[name] = np.zeros(shape, dtype)
        self.inputs = {name: self.act[name] for name in model.input_names if name in self.act}
        self.output = self.act[model.output_name]
        # losses start from the scores: the input of a final softmax (cross_entropy) or sigmoid
        # (bce), seen through the views after it (flatten, reshape, identity), else the output
        head = [model.output_name]
        while graph.nodes[head[-1]]["op"] in VIEWS:
            head.append(graph.nodes[head[-1]]["inputs"][0])
        self.head = head                               # the output, ..., the final computing layer
        final = graph.nodes[head[-1]]
        self.final_op = final["op"]
        self.final_out = self.act[head[-1]]
        self.before_final = self.act[final["inputs"][0]] if final["inputs"] else self.final_out
        self._labels = None
        self._target = None
        self.loss_totals = np.zeros(batch)            # each sample's loss terms (loss_rows)

        backend = model._backend
        self.loss_kernels = backend if backend is not None else K
        self.ops = {}
        for name in self.order:
            node = graph.nodes[name]
            if node["op"] == "input":
                continue
            ctx = NodeContext(name, node, [self.act[i] for i in node["inputs"]], self.act[name],
                              model.params.get(name, {}), model.state.get(name, {}), model)
            op = backend.op(ctx) if backend is not None else None
            self.ops[name] = op or OPS[node["op"]](ctx)
        largest = max(self.ops, key=lambda name: self.ops[name].workspace, default=None)
        size = self.ops[largest].workspace if largest is not None else 0
        if size * dtype.itemsize > 2 ** 20:
            cfg = graph.nodes[largest]["config"]
            terms = ", ".join(f"{key} {'x'.join(map(str, cfg[key])) if isinstance(cfg[key], (tuple, list)) else cfg[key]}"
                              for key in ("kernel", "stride", "pad", "dilation") if key in cfg)
            self.require(self.reserved + size * dtype.itemsize,
                         f"`{largest}` ({terms}) with a batch of {batch} (its workspace and the activations)",
                         hint="the padded input it reads is that large: check its padding and dilation")
        self.reserved += size * dtype.itemsize
        self.workspace = workspace = np.zeros(size, dtype)
        for op in self.ops.values():
            op.ws = workspace
        self.eval_steps = self.forward_steps(training=False)
        # layers that add to the loss (sample's beta * KL), {name: op}: op.loss_term after a forward
        self.term_ops = {name: self.ops[name] for name in graph.graph.get("loss_terms", []) if name in self.ops}
        self._training = {}                             # (loss, trainable version) -> Training
        self._eval_loss = {}                            # loss -> closure
        self._backprop = OrderedDict()                  # (layer, wrt) -> Backprop, recent last

    def available_after(self, nbytes: int) -> float:
        """Bytes left of what was available when the plan started, after ``nbytes`` (inf when
        the machine does not say)."""
        return float("inf") if self.available is None else self.available - nbytes

    def require(self, nbytes: int, what: str, hint: str | None = None) -> None:
        """Refuse (CnnSpecError with the figures) to go on when ``nbytes`` exceed what was
        available when the plan started."""
        require_memory(nbytes, what, self.available, hint=hint or (
            f"memory grows with the batch ({self.batch} here): use a smaller one; "
            f"`cnnspec summary` shows the memory per layer"))

    def forward_steps(self, training: bool, skip=(), fused=None, pooled=None, ops=None,
                      act=None) -> list:
        """The forward's closures (of ``ops`` over ``act``: a share of the batch's, ``BySamples``;
        else the plan's); ``fused`` ({layer: relu}, training only, ``relu_fusions``):
        each such layer writes relu(its output) (relu6's, for a relu6) into the relu's output
        (the relu is in ``skip``);
        ``pooled`` ({relu: maxpool}, ``relu_pool_fusions``): each such maxpool pools the relu's
        input and takes the relu of the result (the relu is in ``skip``)."""
        fused = fused or {}
        ops, act = ops or self.ops, act or self.act
        after = {pool: self.model.graph.nodes[relu]["inputs"][0] for relu, pool in (pooled or {}).items()}
        graph = self.model.graph
        steps = (ops[name].forward_relu(act[fused[name]], **(
                     {"relu6": True} if graph.nodes[fused[name]]["op"] == "relu6" else {}))
                 if name in fused else
                 ops[name].forward_after_relu(act[after[name]]) if name in after else
                 ops[name].forward(training)
                 for name in self.order if name in ops and name not in skip)
        return [s for s in steps if s is not None]

    def relu_pool_fusions(self, skip=(), taken=()) -> dict:
        """{relu: maxpool} for every built-in relu (not in ``taken``, the relus of
        ``relu_fusions``) whose input feeds it alone and whose only consumer is a built-in 2-D
        maxpool (LeNet's conv -> relu -> maxpool): in training the maxpool pools the relu's input
        and takes the relu of its output, a quarter of the tensor for a 2x2 window
        (relu(max) = max(relu): the same values, bit for bit), and its backward masks by its own
        output and writes the relu's input's gradient: two calls over the full tensor less per
        step.  The relu's output is not written in training (only the maxpool read it)."""
        if not FUSE_RELU:
            return {}
        return fusions.relu_pool_fusions(self.model.graph, self.order, self.model.output_name, skip,
                                         taken, self._builtin)

    def relu_fusions(self, skip=()) -> dict:
        """{layer: relu} for every built-in batchnorm, dense, or add of two operands, whose
        only consumer is a built-in relu (neither skipped), and {batchnorm: relu6} likewise
        (MobileNetV2's): the training forward runs each pair as one kernel call
        (``batchnorm_forward_train_into`` with ``relu`` or ``relu6``, ``dense_forward_into``
        with ``relu``, ``add_relu_into``), and the backward of a batchnorm or dense pair too
        (``relu_y``): one pass over the tensor less (a dense's: two kernel calls less each way,
        which matter most to the training shares, whose every return from a kernel may wait for
        the GIL), the same results bit for bit.  The layer's own output buffer is then not
        written in training (nothing reads it there: the relu's backward needs only the relu's
        output); the evaluation forward, ``activations`` and ``gradient`` run the layers apart."""
        if not FUSE_RELU:
            return {}
        return fusions.relu_fusions(self.model.graph, self.order, self.model.output_name, skip,
                                    self._builtin)

    def _builtin(self, name) -> bool:
        """Whether layer ``name`` runs the engine's own op for its kind (the fusions' kernels
        are those ops'), not a custom layer's."""
        from cnnspec.engine.ops import Activation, Add, BatchNorm, Dense, InputActivation, MaxPool

        kinds = {"relu": Activation, "relu6": InputActivation, "batchnorm": BatchNorm, "add": Add,
                 "maxpool": MaxPool, "dense": Dense}
        return type(self.ops.get(name)) is kinds.get(self.model.graph.nodes[name]["op"])

    @property
    def target(self) -> np.ndarray:
        """mse, l1 and bce targets, (N, *output shape)."""
        if self._target is None:
            self._target = np.zeros(self.output.shape, self.model.dtype)
        return self._target

    @property
    def labels(self) -> np.ndarray:
        """cross_entropy labels, int64: one per sample, or one per output position."""
        if self._labels is None:
            self._labels = np.zeros(self.batch * losses.positions(self.output.shape[1:]), np.int64)
        return self._labels

    def fuses(self, loss: str) -> bool:
        """Whether ``loss`` starts from the input of the final activation: softmax for
        cross_entropy (over the output's classes), sigmoid for bce."""
        return losses.FUSED.get(loss) == self.final_op and (
            loss == "bce" or self.final_out.shape[:2] == self.output.shape[:2])

    def scores(self, loss: str) -> np.ndarray:
        """The tensor ``loss`` is computed from (and whose gradient it writes)."""
        return self.before_final if self.fuses(loss) else self.output

    def copy_inputs(self, xs: dict) -> None:
        for name, buffer in self.inputs.items():
            np.copyto(buffer, xs[name], casting="same_kind")

    def forward(self, xs: dict) -> np.ndarray:
        """Evaluation-mode forward of the checked inputs ``{name: array}``; returns the plan's output
        buffer (overwritten by the next call)."""
        self.copy_inputs(xs)
        for step in self.eval_steps:
            step()
        return self.output

    def term_values(self) -> dict:
        """{layer: its loss term} of the last forward (sample: beta * KL)."""
        return {name: op.loss_term for name, op in self.term_ops.items()}

    def loss_step(self, loss: str, dscores: np.ndarray, fused: bool):
        """A closure computing ``loss`` of the current scores (``scores(loss)``) against the filled
        targets, writing the gradient of the scores into ``dscores`` and returning the loss;
        ``fused`` also computes the final softmax or sigmoid (which the training forward skips)."""
        built_in = self.loss_rows(loss, dscores, fused)
        if built_in is not None:
            rows, value = built_in
            run = rows(0, self.batch)

            def step():
                run()
                return value()
            return step
        # a backend's loss (or softmax): its function on the whole batch
        kernels, n = self.loss_kernels, self.batch
        scores, output, final = self.scores(loss), self.output, self.final_out
        if loss in ("mse", "l1") or (loss == "bce" and not self.fuses(loss)):
            f = {"mse": kernels.mse_loss_into, "l1": kernels.l1_loss_into, "bce": kernels.bce_loss_into}[loss]
            target = self.target
            return lambda: f(output, target, dscores)
        if loss == "bce":
            f, target = kernels.sigmoid_bce_into, self.target
            if not fused:
                return lambda: f(scores, target, dscores)
            sigmoid = K.sigmoid_forward_into

            def sigmoid_step():
                sigmoid(scores, final)
                return f(scores, target, dscores)
            return sigmoid_step
        f, labels, k = kernels.softmax_cross_entropy_into, self.labels, self.output.shape[1]
        softmax = kernels.softmax_forward_into
        if losses.positions(self.output.shape[1:]) == 1:
            logits, dlogits = scores.reshape(n, k), dscores.reshape(n, k)
            if not fused:
                return lambda: f(logits, labels, dlogits)
            probs = final.reshape(n, k)

            def step():
                softmax(logits, probs)
                return f(logits, labels, dlogits)
            return step
        # a given softmax_cross_entropy (rows): the scores (N, K, P) as rows (N*P, K), and back
        per = losses.positions(self.output.shape[1:])
        rows, drows = np.zeros((n * per, k), scores.dtype), np.zeros((n * per, k), scores.dtype)
        by_class, dby_class = scores.reshape(n, k, per), dscores.reshape(n, k, per)
        by_row, dby_row = rows.reshape(n, per, k), drows.reshape(n, per, k)

        def per_position():
            if fused:
                softmax(scores, final)
            np.copyto(by_row, by_class.transpose(0, 2, 1))
            value = f(rows, labels, drows)
            np.copyto(dby_class, dby_row.transpose(0, 2, 1))
            return value
        return per_position

    def loss_rows(self, loss: str, dscores: np.ndarray, fused: bool):
        """``(rows, value)`` for a loss the built-in kernels compute (None where a backend gives
        the loss, or the softmax it fuses): ``rows(lo, hi)`` makes a closure computing the loss
        terms of samples [lo, hi) (into ``loss_totals``) and their rows of the gradient
        ``dscores`` (``loss_step``'s arguments); ``value()`` is the batch's loss from the terms,
        the same bits for any cut of the batch into rows (``BySamples``' shares each compute
        theirs)."""
        from cnnspec.kernels import loss as L
        from cnnspec.kernels._jit import by_samples

        kernels, n, totals = self.loss_kernels, self.batch, self.loss_totals
        scores, final = self.scores(loss), self.final_out
        if loss in ("mse", "l1", "bce"):
            name = "sigmoid_bce" if loss == "bce" and self.fuses(loss) else loss
            into = {"mse": "mse_loss_into", "l1": "l1_loss_into", "bce": "bce_loss_into",
                    "sigmoid_bce": "sigmoid_bce_into"}[name]
            if getattr(kernels, into) is not getattr(K, into):
                return None
            kind, count = L.ROWS[name], scores.size
            x, target, dx = L.rows(scores), L.rows(self.target), L.rows(dscores)
            sigmoid = K.sigmoid_forward_into if name == "sigmoid_bce" and fused else None

            def rows(lo, hi):
                args = (kind, x[lo:hi], target[lo:hi], dx[lo:hi], count, totals[lo:hi])
                if sigmoid is None:
                    return lambda: L.element_wise_rows(*args)
                logits, probs = scores[lo:hi], final[lo:hi]

                def sigmoid_rows():
                    sigmoid(logits, probs)
                    L.element_wise_rows(*args)
                return sigmoid_rows
            return rows, lambda: L.mean(totals, count)
        if kernels.softmax_cross_entropy_into is not K.softmax_cross_entropy_into or (
                fused and kernels.softmax_forward_into is not K.softmax_forward_into):
            return None
        k, per = self.output.shape[1], losses.positions(self.output.shape[1:])
        softmax, count = K.softmax_forward_into, n * per
        if per == 1:
            z, dz, probs, labels = scores.reshape(n, k), dscores.reshape(n, k), final.reshape(n, k), self.labels

            def rows(lo, hi):
                # one compiled call, its arguments sliced once (a share's step), then the check
                if fused:                     # the final softmax in the same call
                    f, args = L._softmax_and_cross_entropy, (
                        z[lo:hi], probs[lo:hi], labels[lo:hi], dz[lo:hi], count, totals[lo:hi],
                        np.empty(1, z.dtype), np.empty(1))
                else:
                    f, args = L._softmax_cross_entropy, (z[lo:hi], labels[lo:hi], dz[lo:hi], count,
                                                         totals[lo:hi])

                def step():
                    bad = f(*args)
                    if bad >= 0:
                        raise ValueError(f"label {int(labels[lo + bad])} of sample {lo + bad} is "
                                         f"outside 0..{k - 1}")
                return step
        else:
            # one label per position, straight from the (N, K, P) layout (samples split over
            # the threads when it is big); the softmax over the scores as they are (N, K, ...)
            z, probs, labels = scores, final, self.labels.reshape(n, per)
            by_class, dz = scores.reshape(n, k, per), dscores.reshape(n, k, per)

            def rows(lo, hi):
                logits, out = z[lo:hi], probs[lo:hi]
                args = (by_class[lo:hi], labels[lo:hi], dz[lo:hi], count, totals[lo:hi])

                def step():
                    if fused:
                        softmax(logits, out)
                    by_samples(L._cross_entropy_positions, 3 * args[0].size, *args)
                return step
        return rows, lambda: L.mean(totals, count)

    def fill_targets(self, loss: str, y) -> None:
        losses.fill_targets(y, self.labels if loss == "cross_entropy" else None,
                            None if loss == "cross_entropy" else self.target)

    def eval_loss(self, loss: str, y) -> tuple:
        """(loss, {layer: term}) of the last ``forward`` (evaluation mode) against the checked
        targets ``y``: the loss of the output and the layers' loss terms."""
        if loss not in self._eval_loss:
            scratch = np.zeros(self.scores(loss).shape, self.model.dtype)
            self._eval_loss[loss] = self.loss_step(loss, scratch, fused=False)
        self.fill_targets(loss, y)
        return float(self._eval_loss[loss]()), self.term_values()

    def training(self, loss: str | None, inputs: tuple = (), params: bool = True) -> Training:
        """The training forward and backward for ``loss`` (None: the gradient of the output is
        given, ``Training.doutput``), with the gradients of the inputs named in ``inputs`` and,
        unless ``params`` is false, of the trainable parameters."""
        key = (loss, self.model._version, tuple(inputs), bool(params))
        if key not in self._training:
            self._training = {k: v for k, v in self._training.items() if k[1] == self.model._version}
            self._training[key] = Training(self, loss, tuple(inputs), bool(params))
        return self._training[key]

    def decoder_steps(self, layer: str) -> list:
        """Evaluation-mode steps of the layers after ``layer`` (its output written by the caller):
        a network's decoder fed with a code."""
        after = nx.descendants(self.model.graph, layer)
        return [step for step in (self.ops[name].forward(False) for name in self.order
                                  if name in after and name in self.ops) if step is not None]

    def backprop(self, layer: str, wrt: tuple) -> Backprop:
        """The evaluation-mode backward from ``layer`` to the tensors ``wrt`` (made once, kept)."""
        key = (layer, wrt)
        if key in self._backprop:
            self._backprop.move_to_end(key)
        else:
            self._backprop[key] = Backprop(self, layer, wrt)
            while len(self._backprop) > BACKPROP_CACHE:
                self._backprop.popitem(last=False)
        return self._backprop[key]


class Backprop:
    """Input gradients of the evaluation-mode forward, from one tensor back to chosen tensors.

    ``seed`` is the gradient buffer of ``layer`` (what it is differentiated against: fill it, then
    call :meth:`run` after ``plan.forward``); ``grads[name]`` receive the gradients of the ``wrt``
    tensors. Only the layers between them run a backward step, none computes parameter gradients,
    and batchnorm and dropout are differentiated as evaluated (running statistics; identity).
    Buffers are allocated once, with the same aliasing and accumulation as :class:`Training`.
    """

    def __init__(self, plan: Plan, layer: str, wrt: tuple):
        graph, order, act, dtype = plan.model.graph, plan.order, plan.act, plan.model.dtype
        upstream = nx.ancestors(graph, layer) | {layer}
        need = {}
        for name in order:
            node = graph.nodes[name]
            need[name] = name in upstream and (name in wrt or any(need[i] for i in node["inputs"]))
        received = Counter()
        for name in order:
            if need[name]:
                received.update(i for i in graph.nodes[name]["inputs"] if need[i])
        received[layer] += 1                           # the seed
        plan.require(plan.reserved + sum(act[name].nbytes for name in order if need[name]),
                     f"the gradients of `{layer}` for a batch of {plan.batch}")
        grad, seen = {}, Counter()

        def target(i, via=None):
            seen[i] += 1
            if i not in grad:
                if via is not None and received[i] == 1:
                    grad[i] = via.reshape(act[i].shape)
                    return None
                grad[i] = np.zeros(act[i].shape, dtype)
            return grad[i], seen[i] > 1

        self.seed, _ = target(layer)
        steps = []
        for name in reversed(order):
            if name not in plan.ops or not need[name] or not any(need[i] for i in graph.nodes[name]["inputs"]):
                continue
            dy = grad[name]
            via = dy if graph.nodes[name]["op"] in EVAL_PASS_THROUGH else None
            dxs = [target(i, via) if need[i] else None for i in graph.nodes[name]["inputs"]]
            step = plan.ops[name].backward_eval(dy, dxs)
            if step is not None:
                steps.append(step)
        self.steps = steps
        self.grads = {name: grad[name] for name in wrt}

    def run(self) -> None:
        for step in self.steps:
            step()


class Training:
    """The training-mode forward, the loss and the backward of one plan, for one loss.

    With ``loss`` None there is no loss step: the caller writes the gradient of the output into
    ``doutput`` between :meth:`forward` and :meth:`backward` (a GAN's generator, whose gradient
    comes from the discriminator). ``inputs`` names the inputs whose gradients are computed
    (``input_grads``); ``params`` false computes no parameter gradient (the discriminator in the
    generator's step)."""

    def __init__(self, plan: Plan, loss: str | None, inputs: tuple = (), params: bool = True):
        model, graph, order, act = plan.model, plan.model.graph, plan.order, plan.act
        out_name = model.output_name
        self.plan, self.loss = plan, loss
        if loss is not None:
            losses.check_output(loss, plan.final_op, plan.head[-1])
        # cross-entropy after a final softmax (bce after a final sigmoid): the activation (and the
        # views after it) are not run nor differentiated in the training forward; the loss step
        # computes it and the fused gradient, (p - onehot) / N ((p - target) / size)
        fused = loss is not None and plan.fuses(loss)
        skip = set(plan.head) if fused else set()
        score_name = graph.nodes[plan.head[-1]]["inputs"][0] if fused else out_name

        # which tensors need a gradient: a trainable layer there or upstream, or a chosen input
        trainable = model._trainable if params else {}
        need = {}
        for name in order:
            node = graph.nodes[name]
            need[name] = name in inputs if node["op"] == "input" else (
                trainable.get(name, False) or any(need[i] for i in node["inputs"]))
        # how many gradient contributions each tensor receives
        received = Counter()
        for name in order:
            if need[name] and name not in skip:
                received.update(i for i in graph.nodes[name]["inputs"] if need[i])
        received[score_name] += 1                      # from the loss
        grads_bytes = sum(act[name].nbytes for name in order if need[name])
        plan.require(plan.reserved + grads_bytes,
                     f"training `{model.name}` with a batch of {plan.batch} (activations and their gradients)")

        grad, seen = {}, Counter()

        def target(i, via=None):
            """(buffer, accumulate) for the next gradient contribution to tensor ``i``; None when
            ``via`` (a pass-through consumer's dy) serves as ``i``'s gradient buffer itself."""
            seen[i] += 1
            if i not in grad:
                if via is not None and received[i] == 1:
                    grad[i] = via.reshape(act[i].shape)
                    return None
                grad[i] = np.zeros(act[i].shape, model.dtype)
            return grad[i], seen[i] > 1

        dscores, _ = target(score_name)
        self.doutput = dscores
        self.loss_step = plan.loss_step(loss, dscores, fused) if loss is not None else None
        # the built-in losses by rows of samples: each share computes its own (one pool call a
        # step, BySamples.step); the loss is the sum of the samples' terms, in one order
        built_in = plan.loss_rows(loss, dscores, fused) if loss is not None else None
        self.loss_value = built_in[1] if built_in is not None else None
        # batchnorm -> relu and dense -> relu pairs run as one call each way, add -> relu forward
        # (Plan.relu_fusions)
        with_relu = plan.relu_fusions(skip)
        fused_relus = {relu: bn for bn, relu in with_relu.items() if graph.nodes[bn]["op"] == "batchnorm"}
        dense_relus = {relu: d for d, relu in with_relu.items() if graph.nodes[d]["op"] == "dense"}
        # relu -> maxpool pairs: the maxpool from the relu's input, both ways (Plan.relu_pool_fusions)
        pooled = plan.relu_pool_fusions(skip, taken=set(with_relu.values()))
        after_relu = {pool: relu for relu, pool in pooled.items()}
        backward, calls = [], []                       # calls: (layer, dy, dxs, grads, options)
        for name in reversed(order):
            if name not in plan.ops or not need[name] or name in skip or name in pooled:
                continue
            dy = grad[name]
            if name in fused_relus:                   # its batchnorm's backward takes dy and y
                if need[fused_relus[name]]:
                    grad[fused_relus[name]] = dy
                continue
            if name in dense_relus:                   # its dense's backward masks dy into its own
                if need[dense_relus[name]]:
                    target(dense_relus[name])
                continue
            via = dy if graph.nodes[name]["op"] in PASS_THROUGH else None
            sources = graph.nodes[after_relu[name] if name in after_relu else name]["inputs"]
            dxs = [target(i, via) if need[i] else None for i in sources]
            grads = model._grads.get(name) if trainable.get(name, False) else None
            options = ({"relu_y": act[with_relu[name]],
                        "relu6": graph.nodes[with_relu[name]]["op"] == "relu6"}
                       if name in fused_relus.values() else
                       {"relu_y": act[with_relu[name]], "relu_dy": grad[with_relu[name]]}
                       if name in dense_relus.values() else
                       {"after_relu": True} if name in after_relu else {})
            step = plan.ops[name].backward(dy, dxs, grads, **options)
            if step is not None:
                backward.append(step)
                calls.append((name, dy, dxs, grads, options))
        forward = {"skip": skip | set(with_relu.values()) | set(pooled), "fused": with_relu,
                   "pooled": pooled}
        self.forward_steps = plan.forward_steps(training=True, **forward)
        self.backward_steps = backward
        # on several threads, a big enough batch of a network without random draws runs in
        # shares of samples, one per thread, each through every layer (BySamples)
        self.shares = BySamples.make(plan, forward, calls, plan.reserved + grads_bytes,
                                     built_in[0] if built_in is not None else None)
        # an input no layer differentiates through (unused by the output) has a zero gradient
        self.input_grads = {name: grad[name] if name in grad else np.zeros(act[name].shape, model.dtype)
                            for name in inputs if name in act}

    def run(self, xs: dict, y) -> tuple:
        """Training-mode forward, loss and backward for checked inputs ``{name: array}`` and
        targets ``y``; the parameter gradients land in the model's gradient arrays. Returns (the
        loss of the output, {layer: loss term}): the loss is their sum."""
        plan = self.plan
        plan.fill_targets(self.loss, y)
        if self.shares is not None and self.shares.step_shares:
            self.shares.step(xs)
            value = self.loss_value()
        else:
            self.forward(xs)
            value = self.loss_step()
            self.backward()
        return float(value), plan.term_values()

    def forward(self, xs: dict) -> None:
        if self.shares is not None:
            self.shares.forward(xs)              # each share copies its rows of the inputs
            return
        self.plan.copy_inputs(xs)
        for step in self.forward_steps:
            step()

    def backward(self) -> None:
        if self.shares is not None:
            self.shares.backward()
            return
        for step in self.backward_steps:
            step()


class BySamples:
    """A training step on several threads as data parallelism: the batch cut into one share of
    samples per thread, each share run through every layer's forward, its samples' rows of the
    loss (``Plan.loss_rows``) and every backward by one thread, its kernels on that thread alone
    (``_jit.alone``).  Each thread keeps its share's activations in its core's cache, and a
    step makes one pool call (``step``) instead of one or more per layer (each a wake-up and two
    GIL hand-offs per piece: LeNet-5 at batch 64 made 6 in a ~3 ms step, its small layers ran on
    one thread).  Without a built-in loss (a given output gradient, a backend's loss) the forward
    and the backward are two calls.

    The shares' ops read and write rows [lo, hi) of the plan's buffers (views: the loss, the
    output and the input gradients are the whole batch's, as on one thread); each share has
    its own conv workspace (cut from the plan's where it holds them).  Parameter gradients: the
    first share writes the model's, every other its own copy, added to the model's in share
    order after the backward.  Results equal
    the one-thread step's to float rounding (a parameter gradient is the sum of the shares'
    sums, as a kernel split over threads sums its pieces'; a share's kernels are chosen for its
    size), and are the same for every run on as many threads.

    A batchnorm needs the whole batch's statistics: each share writes the partial sums of its
    samples' blocks (``norm.share_blocks``: the shares cut the batch between blocks), the shares
    meet (a barrier: every share runs at once, on its own thread), then each reads them all.
    The statistics, and so every result of the layer, are those of one thread bit for bit (the
    blocks' sums are the same sums, combined in the same order); its parameter gradients are
    written by the first share.

    Only for networks whose every layer has ``by_samples`` (no dropout, droppath or sample; no
    layer-API backend) and whose training forward has at least ``SHARE_MACS`` multiply-adds per
    share."""

    def __init__(self, plan, forward: dict, calls: list, count: int, used: int, loss_rows=None):
        """``used``: the bytes of the plan's and the Training's buffers (what the shares'
        gradients and workspaces come on top of); ``loss_rows``: ``Plan.loss_rows``' closure
        maker of the step's loss (None: no loss, or not the built-in kernels)."""
        from cnnspec.engine.ops import NodeContext

        model, graph, n = plan.model, plan.model.graph, plan.batch
        self.model, self.count, self.jit, self.used = model, count, _jit, used
        self.xs = None                                # the inputs of the step under way
        self.barrier, self.failure = _jit.Barrier(count), None
        flat = model._flat_grads
        spans, self.forward_shares, self.backward_shares, self.extra_grads = set(), [], [], []
        self.step_shares = [] if loss_rows is not None else None

        def ops_of(share):
            lo, hi = share * n // count, (share + 1) * n // count
            act = {name: a[lo:hi] for name, a in plan.act.items()}
            ops = {}
            for name, whole in plan.ops.items():
                node = graph.nodes[name]
                ctx = NodeContext(name, node, [act[i] for i in node["inputs"]], act[name],
                                  model.params.get(name, {}), model.state.get(name, {}), model,
                                  whole=whole, rows=(lo, hi), barrier=self.barrier)
                ops[name] = type(whole)(ctx)
            return lo, hi, act, ops

        def steps(share, lo, hi, act, ops):
            own = flat if share == 0 else np.zeros_like(flat)
            if share:
                self.extra_grads.append(own)
            backward = []
            for name, dy, dxs, grads, options in calls:
                if grads is not None:
                    grads = {key: _same_place(g, flat, own) for key, g in grads.items()}
                    spans.add(model._spans[name])
                dxs = [None if t is None else (t[0][lo:hi], t[1]) for t in dxs]
                options = {key: v[lo:hi] if isinstance(v, np.ndarray) else v for key, v in options.items()}
                step = ops[name].backward(dy[lo:hi], dxs, grads, **options)
                if step is not None:
                    backward.append(step)
            inputs = [(act[name], name) for name in plan.inputs]
            self.forward_shares.append([lambda: self._copy_rows(inputs, lo, hi)]
                                       + plan.forward_steps(training=True, ops=ops, act=act, **forward))
            self.backward_shares.append(backward)
            if loss_rows is not None:
                self.step_shares.append(self.forward_shares[-1] + [loss_rows(lo, hi)] + backward)

        built = []                                   # ops with the workspace sizes of one thread
        _jit.alone([lambda: built.extend(ops_of(share) for share in range(count))])
        # each share's kernels run on its thread alone: a workspace of one thread each, cut from
        # the plan's (which the whole batch's layers use, never at the same time) where it holds
        # them all, else made
        sizes = [-(-max((op.workspace for op in ops.values()), default=0) // 16) * 16
                 for _, _, _, ops in built]
        whole = plan.workspace if sum(sizes) <= plan.workspace.size else np.zeros(sum(sizes), model.dtype)
        self.workspace_bytes = 0 if whole is plan.workspace else whole.nbytes
        start = 0
        for size, (_, _, _, ops) in zip(sizes, built):
            for op in ops.values():
                op.ws = whole[start:start + size]
            start += size
        _jit.alone([lambda: [steps(share, *b) for share, b in enumerate(built)]])
        self.spans = [(flat[a:b], [g[a:b] for g in self.extra_grads]) for a, b in _merged(spans)]

    @staticmethod
    def make(plan, forward: dict, calls: list, used: int, loss_rows=None):
        """The shares for this Training, or None: one thread, a batch too small to share, a
        layer that is not ``by_samples`` (or not the engine's own), or no memory for them beside
        the ``used`` bytes of the plan and the Training."""
        from cnnspec.engine.ops import OPS

        model, graph = plan.model, plan.model.graph
        if not BY_SAMPLES or model._backend is not None or plan.term_ops:
            return None
        if not all(op.by_samples and type(op) is OPS[graph.nodes[name]["op"]]
                   for name, op in plan.ops.items()):
            return None
        macs = plan.batch * sum(graph.nodes[name].get("macs", 0) for name in plan.order)
        n = plan.batch
        count = min(_jit.num_threads(), n, macs // SHARE_MACS)
        if count < 2 or not all(op.share_cut(n, s * n // count, (s + 1) * n // count)
                                for op in plan.ops.values() for s in range(count)):
            return None
        # a parameter gradient and a workspace per thread: where they do not fit in what was
        # available when the plan started, or the gradients' copies would add more than
        # SHARE_EXTRA to the step's buffers (ResNet-18 at 3x64x64, batch 16: 45 MiB to 250; the
        # summary's memory estimate counts a step layer by layer), the layers split as on a
        # small batch
        grads = (count - 1) * model._flat_grads.nbytes
        if 2 * grads > plan.available_after(used) or grads > SHARE_EXTRA * used:
            return None
        shares = BySamples(plan, forward, calls, count, used, loss_rows)
        extra = sum(a.nbytes for a in shares.extra_grads) + shares.workspace_bytes
        return shares if extra <= plan.available_after(used) else None

    def _run(self, shares) -> None:
        """Every share at once, each on its own thread (they meet at each batchnorm)."""
        jit = self.jit
        self.failure = None
        try:
            jit.run_split(self._share, self.count, self.count, lambda t, lo, hi: (shares[lo],),
                          pieces=self.count, together=True)
        except threading.BrokenBarrierError:
            if self.failure is None:
                raise
            raise self.failure from None            # what broke the barrier, not the others' wait
        finally:
            if self.barrier.broken:
                self.barrier.reset()

    def _share(self, steps) -> None:
        """One share's steps; on an error, the others waiting for it at a meeting are released
        (their wait raises ``BrokenBarrierError``)."""
        try:
            self.jit.alone(steps)
        except threading.BrokenBarrierError:
            raise
        except BaseException as error:
            self.failure = error
            self.barrier.abort()
            raise

    def _copy_rows(self, inputs, lo, hi) -> None:
        """A share's rows [lo, hi) of the step's inputs into its views of the input buffers
        (on its thread: LeNet-5's 64x1x32x32 copy took 0.09 ms of a 2.3 ms step on one thread)."""
        for buffer, name in inputs:
            np.copyto(buffer, self.xs[name][lo:hi], casting="same_kind")

    def forward(self, xs: dict) -> None:
        """The shares' training forward of the checked inputs ``{name: array}``."""
        self.xs = xs
        try:
            self._run(self.forward_shares)
        finally:
            self.xs = None                        # no reference to the caller's arrays kept

    def backward(self) -> None:
        self._run(self.backward_shares)
        self._add_grads()

    def step(self, xs: dict) -> None:
        """A whole training step of the checked inputs and the filled targets in one pool call:
        each share runs its samples' forward, its rows of the loss and its backward (a fork and
        a join a step less, and the loss on the threads)."""
        self.xs = xs
        try:
            self._run(self.step_shares)
        finally:
            self.xs = None
        self._add_grads()

    def _add_grads(self) -> None:
        for total, parts in self.spans:               # the shares' parameter gradients, in order
            for part in parts:
                np.add(total, part, out=total)


def _same_place(view, flat, other):
    """The view of ``other`` at ``view``'s place in ``flat`` (same shape)."""
    start = (view.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // flat.itemsize
    return other[start:start + view.size].reshape(view.shape)


def _merged(spans) -> list:
    """(start, stop) ranges with the touching ones joined, in order."""
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
