"""Network-level problems: a .cnn network run by the engine with the student's functions in place
of the built-in layers, compared with the same network run by the reference.

The engine runs in the trusted parent; its ``backend`` is a set of proxies, each forwarding one
call (inputs only) to the sandboxed child and returning the child's outputs once they pass the
same strict checks as everywhere else. Three checks, equal shares:

* outputs: the network's output on a fixed batch matches the reference network's (float64, the
  same initial weights);
* gradients: the training-mode loss and every parameter's gradient match;
* training: SGD on a fixed-seed subset of the ``shapes`` data set lowers the loss by at least half
  as much as it lowers the reference network's (from the same initial weights), and the network
  gives the same loss twice for the same data (a network of random numbers does not).

Its default size (batches of 2 and 4 LeNet-5 images) lets a correct implementation written with
Python loops (CS231n's "naive" layers) pass in well under a second per call on half a CPU.
"""
from __future__ import annotations

import time

import numpy as np

from cnnspec.engine.backend import api_kind
from cnnspec.errors import CnnSpecError
from cnnspec.grade.checks import Bad, rel_error, shorten, unwrap
from cnnspec.grade.functions import FUNCTIONS
from cnnspec.grade.results import CheckResult, ProblemResult
from cnnspec.grade.sandbox import SandboxError


class StudentFailure(Exception):
    """A student function failed inside the network (message: which and why)."""


def suspects(net, model, last_wrong: str) -> str:
    """Which of the student's backward functions to look at when gradients differ: gradients flow
    from the loss back, so the wrong one is that of ``last_wrong`` (the wrong gradient nearest to
    the output) or of a layer after it."""
    graph, order = net.graph, model.live
    names = []
    for name in order[order.index(last_wrong):]:
        node = graph.nodes[name]
        rank = len(node["input_shapes"][0]) - 1 if node.get("input_shapes") else 0
        kind = api_kind(node["op"], node["config"], rank)
        if kind == "softmax" and name == model.output_name:
            kind = "softmax_cross_entropy"                # trained with the fused loss
        elif kind is not None:
            kind += "_backward"
        if kind is not None and kind in FUNCTIONS and kind not in names:
            names.append(kind)
    return ("the first wrong gradient from the loss back is " f"{last_wrong}'s: look at your "
            + ", ".join(names)) if names else f"the first wrong gradient from the loss back is {last_wrong}'s"


def first_wrong_forward(net, student, reference, x, tolerance: float) -> str | None:
    """Where the student's forward pass first leaves the reference's: "`conv1`'s output
    (look at your conv2d_forward)", the first layer in network order whose evaluation-mode output
    differs; None when every layer's output matches. Once a forward output differs, every gradient
    computed from it differs too, whatever the backward functions do."""
    ours, theirs = student.activations(x), reference.activations(x)
    for name in reference.live:
        if name not in ours or name not in theirs or rel_error(ours[name], theirs[name]) < tolerance:
            continue
        node = net.graph.nodes[name]
        rank = len(node["input_shapes"][0]) - 1 if node.get("input_shapes") else 0
        kind = api_kind(node["op"], node["config"], rank)
        look = f" (look at your {kind}_forward)" if kind and f"{kind}_forward" in FUNCTIONS else ""
        return f"`{name}`'s output{look}"
    return None


class Remote:
    """A layer-API function whose calls run in the sandbox."""

    def __init__(self, runner, name: str, timeout: float, network: str = "the network"):
        self.runner, self.name, self.timeout, self.network = runner, name, timeout, network
        self.spec = FUNCTIONS[name]

    def __call__(self, *args):
        if self.name in self.runner.broken:                 # it timed out or crashed before
            raise StudentFailure(self.runner.broken[self.name])
        try:
            [reply] = self.runner.run(self.name, [list(args)], self.timeout)
        except SandboxError as exc:
            message = exc.message
            if exc.kind == "timeout":
                inputs = args[len(self.spec.upstream):] if self.spec.kind == "backward" else args
                x = next((a for a in inputs if isinstance(a, np.ndarray)), args[0])
                shape = "x".join(str(d) for d in np.shape(x))
                message = (f"{exc.message}: one call of your {self.name} in network {self.network} "
                           f"(a batch of {np.shape(x)[0] if np.ndim(x) else 1}, input {shape}) took more "
                           f"than {self.timeout:g} s. Make it faster: vectorise the innermost loops (over "
                           f"channels and kernel positions) with NumPy; a loop over the batch, the filters "
                           f"and the output positions is fast enough")
            self.runner.broken[self.name] = message
            raise StudentFailure(message) from None
        status = reply.get("status") if isinstance(reply, dict) else None
        if status == "not_implemented":
            raise StudentFailure(f"needs your {self.name}, which is not implemented")
        if status == "missing":
            raise StudentFailure(f"needs your {self.name}, which is not defined")
        if status != "ok":
            error = reply.get("error") if isinstance(reply, dict) else None
            message = error.get("message") if isinstance(error, dict) else "no usable reply"
            raise StudentFailure(f"your {self.name} failed: {shorten(message, 400)}")
        outputs, whole = unwrap(reply.get("value"), self.spec.returns)
        if whole:
            raise StudentFailure(f"your {self.name} {whole}")
        forward = FUNCTIONS[self.spec.forward] if self.spec.forward else self.spec
        given = dict(zip(self.spec.params, args))
        for name, value in zip(self.spec.returns, outputs):
            if isinstance(value, Bad):
                raise StudentFailure(f"your {self.name} returned {name} as {value.why}")
            param = self.spec.grads.get(name)
            if value is None and not (param in forward.params and param in given and given[param] is None):
                raise StudentFailure(f"your {self.name} returned None for {name} (does it end without "
                                     f"`return`?); expected an array")
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def grade_network(grader, problem, runner) -> ProblemResult:
    """Grade one [[networks]] problem of the assignment with the submission's ``runner``."""
    import cnnspec
    from cnnspec.data import make_shapes
    from cnnspec.engine import SGD, Model

    started = time.monotonic()
    result = ProblemResult(problem.name, "network", problem.points)
    keys = ["outputs", "gradients"] + (["training"] if problem.train else [])
    share = problem.points / len(keys)
    checks = {
        "outputs": CheckResult("outputs", "outputs match the reference network", share),
        "gradients": CheckResult("gradients", "loss and gradients match the reference network", share),
        "training": CheckResult("training", "training lowers the loss", share),
    }
    checks = {k: checks[k] for k in keys}
    result.checks = list(checks.values())
    net = cnnspec.load(problem.spec, network=problem.network or None)
    try:
        runner.ensure()
    except SandboxError as exc:
        for check in checks.values():
            check.record(False, exc.message)
        return result
    # the student's functions replace every built-in layer the API covers; one the file does not
    # define is a failure ("needs your ..."), never a silent fall-back to the reference
    backend = {name: Remote(runner, name, grader.assignment.limits.time_per_case, problem.name)
               for name in FUNCTIONS}
    x, y = make_shapes(problem.batch, net.input_shape, seed=problem.seed)
    x = x.astype(np.float64)

    def attempt(check, run):
        try:
            ok, why = run()
        except (StudentFailure, SandboxError, CnnSpecError) as exc:
            ok, why = False, str(getattr(exc, "message", exc))
        except (FloatingPointError, ValueError, ArithmeticError, TypeError) as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        check.record(ok, why)

    reference = Model(net, dtype="float64", seed=problem.seed)
    student = Model(net, dtype="float64", seed=problem.seed, backend=backend)

    forward_wrong = []          # where the forward pass first differs, found by outputs()

    def outputs():
        err = rel_error(student.forward(x), reference.forward(x))
        if err < problem.tolerance:
            return True, ""
        why = f"the output differs from the reference network's (relative error {err:.1e})"
        where = first_wrong_forward(net, student, reference, x, problem.tolerance)
        if where:
            forward_wrong.append(where)
            why += f"; the first layer whose output differs is {where}"
        return False, why

    def gradients():
        loss_ref, grads_ref = reference.loss_and_grad(x, y)
        loss, grads = student.loss_and_grad(x, y)
        bad = [] if rel_error(loss, loss_ref) < problem.tolerance else ["the loss"]
        wrong_layers = []
        for layer, params in grads_ref.items():
            for key, g in params.items():
                if not rel_error(grads[layer][key], g) < problem.tolerance:
                    bad.append(f"{layer}.{key}")
                    wrong_layers.append(layer)
        why = f"differs from the reference network's: {', '.join(bad[:6])}"
        if bad and forward_wrong:       # the gradients follow from a wrong forward: not a backward's fault
            why += (f"; the forward pass already differs, first at {forward_wrong[0]}: "
                    f"the gradients cannot match until it does")
        elif wrong_layers:
            why += f"; {suspects(net, student, wrong_layers[-1])}"
        return not bad, why

    def training():
        xs, ys = make_shapes(problem.train_samples, net.input_shape, seed=problem.seed + 1)

        def train(model):
            before = model.evaluate(xs, ys, batch=problem.train_batch)[0]
            again = model.evaluate(xs, ys, batch=problem.train_batch)[0]
            optimizer = SGD(model, lr=problem.lr)
            for _ in range(problem.epochs):
                for start in range(0, len(xs), problem.train_batch):
                    model.train_step(xs[start:start + problem.train_batch],
                                     ys[start:start + problem.train_batch], optimizer)
            return before, again, model.evaluate(xs, ys, batch=problem.train_batch)[0]

        ref_before, _, ref_after = train(Model(net, dtype="float32", seed=problem.seed))
        before, again, after = train(Model(net, dtype="float32", seed=problem.seed, backend=backend))
        if not (np.isfinite(before) and before == again):
            return False, (f"the network's loss is not the same twice for the same data ({before:.4f}, "
                           f"then {again:.4f}): its layers do not compute a function of their inputs")
        wanted = (ref_before - ref_after) / 2
        return bool(np.isfinite(after) and before - after >= wanted), (
            f"the loss went from {before:.4f} to {after:.4f}; it should go down by at least {wanted:.4f} "
            f"(half of what the reference network's does: {ref_before:.4f} to {ref_after:.4f})")

    for key, run in (("outputs", outputs), ("gradients", gradients), ("training", training)):
        if key in checks:
            attempt(checks[key], run)
    result.seconds = round(time.monotonic() - started, 3)
    return result
