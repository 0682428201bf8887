"""Design problems (``[[designs]]``): the student hands in a ``.cnn`` file; the grader checks it
against the assignment's requirements and budgets, trains it, and scores it on held-out data.

Checks, each with its share of the problem's points (``weights``; those that do not apply are
left out): it **compiles** (a located error otherwise); its **input and output shapes** are the
ones required; it uses only the **allowed layer kinds**; its **parameters**, **MACs** and
**training memory** (the summary's estimate at the training batch) are within the budgets; the
**receptive field** of the layer the assignment names is at least the size required; and its
**held-out accuracy** after training, scored by thresholds with partial credit.

Training happens only for a network that passes the checks before it (a network over a budget
is not trained: its accuracy would not be comparable), and only when it fits the limits the
assignment sets: its wall-clock time is estimated from the analysis before anything runs
(MACs x samples x epochs against this machine's measured rate, plus a per-layer, per-step cost),
and its memory from the summary's training estimate and the data. A network that would not fit
is reported from those figures -- never by running out of time. Then it trains in a sandboxed
child process (design_child.py: resource limits, the sandbox user, no student code at all) on
the training split, with the assignment's settings (the student's ``train`` section is ignored,
or honoured within bounds where the assignment allows) and a seed derived from the secret as
hidden cases are; the held-out split never enters that process. The grader puts the trained
arrays into its own copy of the network and measures accuracy itself.

A ``.cnn`` file is data: cnnspec's parser executes nothing from it. It is read only when it is a
regular file of bounded size; ``import`` lines are refused, except inside a student's folder,
to which they are confined; its ``train`` section's ``data =`` is never read.
"""
from __future__ import annotations

import hashlib
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnspec.errors import CnnSpecError, error_at
from cnnspec.grade import protocol
from cnnspec.grade.assignment import DESIGN_WEIGHTS, DesignProblem
from cnnspec.grade.results import CheckResult, ProblemResult
from cnnspec.grade.sandbox import ENV, describe_exit

DESIGN_CHILD = Path(__file__).with_name("design_child.py")
MAX_DESIGN_BYTES = 1 << 20          # a design is a few lines; 1 MiB leaves room for comments
BASELINE_MB = 450                   # Python, NumPy, numba and LLVM in the training process
TITLES = {"compiles": "compiles", "shapes": "input and output shapes", "layers": "only allowed layer kinds",
          "params": "parameters within the budget", "macs": "MACs within the budget",
          "memory": "training memory within the budget", "receptive_field": "receptive field",
          "accuracy": "held-out accuracy"}


# -- reading a submission -------------------------------------------------------------------------

def read_design(path: Path, display: str, root: Path | None = None):
    """The analysed Network of the student's file ``path``, errors located as ``display``.
    ``import`` lines are refused when ``root`` is None, else confined to the folder ``root``."""
    from cnnspec.analysis import infer
    from cnnspec.lang import build_graph, parse
    from cnnspec.lang.imports import IMPORT_ROOT
    from cnnspec.network import Network

    path = Path(path)
    real = os.path.realpath(path)
    folder = os.path.dirname(real)

    def shown(err: CnnSpecError) -> CnnSpecError:
        """The error with the student's names for the files (never the grader's paths)."""
        def name(text):
            return None if text is None else text.replace(real, display).replace(folder + os.sep, "")

        return CnnSpecError(name(err.message), file=name(err.file) or display, line=err.line, col=err.col,
                            source_line=err.source_line, hint=name(err.hint), width=err.width)

    text = _read_text(path, display)
    try:
        module = parse(text, real)
        if module.imports and root is None:
            raise error_at(module.imports[0].pos, "`import` is not allowed in a design submission",
                           sources={real: text}, hint="put every block in this one file")
        token = IMPORT_ROOT.set(os.path.realpath(root) if root is not None else None)
        try:
            graph = build_graph(module)
        finally:
            IMPORT_ROOT.reset(token)
        return Network(infer(graph))
    except CnnSpecError as err:
        raise shown(err) from None
    except RecursionError:
        raise CnnSpecError("the file is nested too deeply to read", file=display) from None


def _read_text(path: Path, display: str) -> str:
    """The file's text: a regular file (cnnspec.limits' reader), at most MAX_DESIGN_BYTES, UTF-8."""
    from cnnspec import limits

    try:
        return limits.read_text(path, "file", MAX_DESIGN_BYTES)
    except CnnSpecError as err:
        raise CnnSpecError(err.message, file=display, hint=err.hint) from None
    except UnicodeDecodeError as exc:
        raise CnnSpecError(f"not UTF-8 text (byte {exc.start})", file=display) from None


# -- the data ---------------------------------------------------------------------------------------

@dataclass
class DesignData:
    classes: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    spec: str


def design_seed(grader, problem: DesignProblem) -> int:
    """The seed of a design's split, initial weights and shuffling: from the public seed for a
    public grade, else from the hidden seed (the assignment's secret), per problem."""
    base = grader.assignment.public_seed if grader.public_only else grader.hidden_seed
    digest = hashlib.sha256(f"cnnspec design {problem.name} {base}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def load_design_data(grader, problem: DesignProblem) -> DesignData:
    """The training and held-out samples (the data's own test split when it has one, else a
    ``test_split`` fraction drawn with the design's seed)."""
    from cnnspec.data import load_dataset

    from cnnspec.grade.assignment import _shape

    shape = _shape(problem.input)
    seed = design_seed(grader, problem)
    output = _shape(problem.output) if problem.output else None
    data = load_dataset(problem.data, shape, seed=seed, val_split=problem.test_split,
                        base_dir=grader.assignment.directory, task=problem.task,
                        output_shape=output if problem.task == "segment" else None)
    if data.x_test is not None and len(data.x_test):
        x_train = np.concatenate([data.x_train, data.x_val])
        y_train = np.concatenate([data.y_train, data.y_val])
        return DesignData(list(data.classes), x_train, y_train, data.x_test, data.y_test, data.spec)
    return DesignData(list(data.classes), data.x_train, data.y_train, data.x_val, data.y_val, data.spec)


# -- estimates: time and memory before anything runs ----------------------------------------------

@dataclass
class Rate:
    """This machine's training speed, measured by training three small networks: the cost of
    one layer in one step (kernel calls, Python), of one activation value per sample (memory
    traffic of the forward and backward passes), and multiply-accumulates per second (forward
    and backward: 3x the forward MACs)."""

    layer_step_seconds: float
    activation_seconds: float
    macs_per_second: float


_RATE = None
_RATE_LOCK = threading.Lock()
CALIBRATION = {
    # many layers, almost no work: the cost of a layer in a step
    "steps": "network S {\n input x: 4\n" + " -> ".join(["dense(4) -> relu"] * 4) + " -> dense(10) -> softmax\n}\n",
    # activations without MACs (window-1 pooling copies): the cost of an activation value
    "activations": "network A {\n input x: 8x32x32\n" + " -> ".join(["maxpool(1)"] * 6)
                   + " -> globalavgpool -> flatten -> dense(10) -> softmax\n}\n",
    # a small CNN: multiply-accumulates
    "macs": """network M {
    input image: 1x28x28
    conv(16, 3x3, pad=1) -> relu -> maxpool(2)
    conv(32, 3x3, pad=1) -> relu -> maxpool(2)
    flatten -> dense(64) -> relu -> dense(10) -> softmax
}
""",
}
CALIBRATION_SAMPLES = 512
CALIBRATION_BATCH = 32


def _epoch_seconds(text: str) -> tuple[float, dict, int]:
    """Median seconds of an epoch of training ``text`` (after a first, compiling one), its
    summary totals and its layers."""
    import cnnspec
    from cnnspec.data import Dataset
    from cnnspec.train import fit
    from cnnspec.train.config import TrainConfig, _set_optimizer

    net = cnnspec.loads(text)
    rng = np.random.default_rng(0)
    n = CALIBRATION_SAMPLES
    x = rng.random((n, *net.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, n)
    config = TrainConfig()
    _set_optimizer(config, "adam(lr=0.001)")
    config.epochs, config.batch, config.val_split = 4, CALIBRATION_BATCH, 0.0
    history = fit(net, config, dataset=Dataset("calibration", list(range(10)), x, y, x[:0], y[:0]),
                  progress=False, echo=lambda *a: None)
    seconds = float(np.median([row["seconds"] for row in history.rows[1:]]))
    return seconds, net.summary()["totals"], len(net.graph) - 1


def machine_rate() -> Rate:
    """Measured once per process (about a second with warm kernels; the first run on a machine
    also compiles them)."""
    global _RATE
    with _RATE_LOCK:
        if _RATE is None:
            n, steps = CALIBRATION_SAMPLES, math.ceil(CALIBRATION_SAMPLES / CALIBRATION_BATCH)
            seconds, _, layers = _epoch_seconds(CALIBRATION["steps"])
            layer = seconds / (steps * layers)
            seconds, totals, layers = _epoch_seconds(CALIBRATION["activations"])
            activation = max(seconds - steps * layers * layer, seconds / 4) / (n * totals["activations"])
            seconds, totals, layers = _epoch_seconds(CALIBRATION["macs"])
            rest = seconds - steps * layers * layer - n * totals["activations"] * activation
            compute = max(rest, seconds / 4)
            _RATE = Rate(layer, activation, 3 * totals["macs"] * n / compute)
        return _RATE


def estimate_seconds(net, samples: int, epochs: int, batch: int, rate: Rate) -> float:
    """Wall-clock seconds of training ``net`` for ``epochs`` over ``samples`` at ``batch``."""
    totals = net.summary()["totals"]
    steps = epochs * math.ceil(samples / batch)
    layers = len(net.graph) - 1
    return (epochs * samples * (3 * totals["macs"] / rate.macs_per_second
                                + totals["activations"] * rate.activation_seconds)
            + steps * layers * rate.layer_step_seconds)


def estimate_memory_mb(net, batch: int, samples: int, optimizer: dict, task: str = "classify") -> float:
    """The training process's memory: the summary's training estimate at ``batch`` (activations
    and their gradients, parameters, gradients, optimizer state), the training data, and the
    interpreter with its libraries."""
    from cnnspec.analysis.summary import summarize

    graph = net.graph
    train = dict(graph.graph.get("train") or {})
    train["optimizer"] = optimizer
    train["task"] = task
    saved = graph.graph.get("train")
    graph.graph["train"] = train
    try:
        training = summarize(graph, batch, "float32")["totals"]["memory_bytes"]["training"]
    finally:
        graph.graph["train"] = saved
    per_label = math.prod(net.output_shape[1:]) if train.get("task") == "segment" else 1    # masks: H x W
    data = samples * math.prod(net.input_shape) * 4 + samples * 8 * per_label
    return (2 * training + data) / 2 ** 20 + BASELINE_MB     # plans keep a few buffers twice


# -- the training settings -------------------------------------------------------------------------

def training_settings(problem: DesignProblem, net, seed: int):
    """The TrainConfig the grader trains with, and notes on the student's train section (what
    was ignored, what was honoured, what was bounded)."""
    from cnnspec.train.config import TrainConfig, _set_optimizer

    config = TrainConfig()
    config.data = "grader"
    _set_optimizer(config, problem.optimizer)
    config.loss, config.epochs, config.batch, config.seed = problem.loss, problem.epochs, problem.batch, seed
    config.val_split = 0.0
    config.task = problem.task
    config.corrupt = [(name, tuple(args)) for name, args in problem.corrupt]
    if problem.task != "classify":
        from cnnspec.lang.train import TASK_MONITORS

        config.monitor = TASK_MONITORS[problem.task][0]
    notes = []
    section = net.train_config
    if not section:
        return config, notes
    allowed = set(problem.student_train)
    used, ignored = [], [key for key in section if key not in allowed]
    if "optimizer" in allowed and "optimizer" in section:
        _set_optimizer(config, section["optimizer"])
        used.append(f"optimizer {config.describe_optimizer()}")
    if "epochs" in allowed and "epochs" in section:
        top = problem.max_epochs or problem.epochs
        config.epochs = min(int(section["epochs"]), top)
        used.append(f"epochs {config.epochs}" + (f" (your {section['epochs']} is above the bound {top})"
                                                 if section["epochs"] > top else ""))
    if "batch" in allowed and "batch" in section:
        config.batch = min(max(int(section["batch"]), problem.min_batch), problem.max_batch)
        used.append(f"batch {config.batch}" + ("" if config.batch == section["batch"] else
                                               f" (your {section['batch']} is outside {problem.min_batch}.."
                                               f"{problem.max_batch})"))
    if "augment" in allowed and "augment" in section:
        from cnnspec.data.augment import parse_augment

        config.augment = parse_augment(section["augment"])
        used.append("augment")
    for key in ("schedule", "warmup", "clip_grad_norm"):
        if key in allowed and key in section:
            setattr(config, key, section[key])
            used.append(key)
    if used:
        notes.append("from your train section: " + ", ".join(used))
    if ignored:
        notes.append(f"your train section's {', '.join(f'`{k}`' for k in ignored)} "
                     f"{'is' if len(ignored) == 1 else 'are'} ignored: the grader trains every design "
                     f"alike (data, seed and the settings the assignment fixes)")
    return config, notes


# -- grading ------------------------------------------------------------------------------------------

def check_results(problem: DesignProblem) -> dict:
    keys = ["compiles", "shapes"]
    keys += ["layers"] if problem.layers else []
    keys += ["params"] if problem.max_params else []
    keys += ["macs"] if problem.max_macs else []
    keys += ["memory"] if problem.max_memory_mb else []
    keys += ["receptive_field"] if problem.receptive_field_layer else []
    keys.append("accuracy")
    weights = {k: float(problem.weights.get(k, DESIGN_WEIGHTS[k])) for k in keys}
    total = sum(weights.values()) or 1.0
    titles = dict(TITLES)
    if problem.receptive_field_layer:
        titles["receptive_field"] = f"receptive field at `{problem.receptive_field_layer}`"
    titles["accuracy"] = {"miou": "held-out mean IoU", "psnr": "held-out PSNR"}.get(problem.metric, titles["accuracy"])
    return {k: CheckResult(k, titles[k], problem.points * w / total) for k, w in weights.items() if w > 0}


def not_graded(problem: DesignProblem, why: str) -> ProblemResult:
    result = ProblemResult(problem.name, "design", problem.points, notes=[why])
    for check in check_results(problem).values():
        check.record(False, why if check.key == "compiles" else None)
        result.checks.append(check)
    return result


def grade_design(grader, problem: DesignProblem, path: Path, root: Path | None = None,
                 display: str | None = None) -> ProblemResult:
    """Grade the student's ``.cnn`` file ``path`` (imports confined to ``root``, refused without)."""
    started = time.monotonic()
    display = display or Path(path).name
    result = ProblemResult(problem.name, "design", problem.points)
    checks = check_results(problem)
    result.checks = list(checks.values())

    def fail_all(from_key: str, why: str, short: str) -> ProblemResult:
        keys = list(checks)
        for key in keys[keys.index(from_key):]:
            checks[key].record(False, why if key == from_key else f"not checked: {short}")
        result.seconds = round(time.monotonic() - started, 3)
        return result

    try:
        net = read_design(path, display, root)
    except CnnSpecError as err:
        result.notes.append("your network does not compile, so nothing else could be checked")
        return fail_all("compiles", str(err), "your network does not compile")
    checks["compiles"].record(True)
    summary = net.summary(batch=1)
    totals = summary["totals"]

    # shapes
    from cnnspec.grade.assignment import _shape

    data = grader.design_data(problem)
    wanted_in = _shape(problem.input)
    wanted_out = (_shape(problem.output) if problem.output else
                  wanted_in if problem.task == "reconstruct" else (len(data.classes),))
    problems = []
    if tuple(net.input_shape) != wanted_in:
        problems.append(f"your input is {_fmt(net.input_shape)}; the assignment's is {_fmt(wanted_in)}")
    if tuple(net.output_shape) != wanted_out:
        problems.append(f"your output is {_fmt(net.output_shape)}; the assignment asks for {_fmt(wanted_out)}"
                        + (f" (one unit per class: {len(data.classes)})" if not problem.output
                           and problem.task == "classify" else
                           " (the input's shape: a reconstruction)" if not problem.output else ""))
    networks = net.graph.graph.get("networks") or []
    if len(networks) > 1 and problems:       # the first network is the one graded (README: several networks)
        problems.append(f"your file holds {len(networks)} networks ({', '.join(networks)}): the first, "
                        f"`{networks[0]}`, is the one graded; put your design first")
    checks["shapes"].record(not problems, "; ".join(problems) or None)
    train_blockers = list(problems)

    if "layers" in checks:
        bad = {}
        for name in net.layers():
            op = net[name]["op"]
            if op != "input" and op not in problem.layers:
                bad.setdefault(op, []).append(name)
        why = "; ".join(f"`{op}` is not allowed ({', '.join(names[:4])}{' ...' if len(names) > 4 else ''})"
                        for op, names in bad.items())
        checks["layers"].record(not bad, f"{why}; the allowed kinds are: {', '.join(problem.layers)}" if bad else None)
        if bad:
            train_blockers.append("it uses layer kinds the assignment does not allow")

    def budget(key, value, limit, unit, what):
        over = value > limit
        checks[key].record(not over, f"{value:,}{unit} {what}: over the budget of {limit:,}{unit} by "
                                     f"{value - limit:,}{unit}" if over else None)
        result.notes.append(f"{what}: {value:,}{unit} (budget {limit:,}{unit})")
        if over:
            train_blockers.append(f"it is over the {what} budget")

    if "params" in checks:
        budget("params", totals["params"], problem.max_params, "", "parameters")
    if "macs" in checks:
        budget("macs", totals["macs"], problem.max_macs, "", "MACs per sample")
    config, train_notes = training_settings(problem, net, design_seed(grader, problem))
    if "memory" in checks:
        training = net.summary(batch=config.batch)["totals"]["memory_bytes"]["training"]
        mib = round(training / 2 ** 20, 2)
        over = mib > problem.max_memory_mb
        checks["memory"].record(not over, f"the training memory estimate at batch {config.batch} is {mib:g} MiB: "
                                          f"over the budget of {problem.max_memory_mb:g} MiB" if over else None)
        result.notes.append(f"training memory estimate at batch {config.batch}: {mib:g} MiB "
                            f"(budget {problem.max_memory_mb:g} MiB)")
        if over:
            train_blockers.append("it is over the training memory budget")
    if "receptive_field" in checks:
        layer = problem.receptive_field_layer
        # `features = conv(...)` names the layer; `features = stage(16)` or `features = conv(...) -> relu`
        # binds the name to the output of the block or chain: its field is the one checked
        node = layer if layer in net.graph else (net.graph.graph.get("bound") or {}).get(layer)
        if node is None:
            checks["receptive_field"].record(False, f"your network has no layer named `{layer}`: bind the "
                                                    f"layer whose field is checked (`{layer} = conv(...)`)")
        else:
            field = net[node]["receptive_field"]
            size = [int(v) for v in field["size"]] if field is not None else None
            ok = field is None or min(size) >= problem.receptive_field_min
            where = "the whole input" if field is None else "x".join(map(str, size))
            checks["receptive_field"].record(ok, None if ok else (
                f"the receptive field of `{layer}` is {where}; the assignment asks for at least "
                f"{problem.receptive_field_min} on every axis"))
            result.notes.append(f"receptive field of `{layer}`: {where} (at least {problem.receptive_field_min})")

    # training
    accuracy = checks["accuracy"]
    result.notes += train_notes
    if train_blockers:
        accuracy.record(False, f"not trained: {'; '.join(train_blockers)}")
        result.seconds = round(time.monotonic() - started, 3)
        return result
    rate = machine_rate()
    samples = len(data.x_train)
    seconds = estimate_seconds(net, samples, config.epochs, config.batch, rate)
    memory = estimate_memory_mb(net, config.batch, samples, {"name": config.optimizer, **config.optimizer_args},
                                config.task)
    figures = (f"{totals['macs']:,} MACs and {totals['activations']:,} activations per sample x "
               f"{samples:,} samples x {config.epochs} epochs, {len(net.graph) - 1} layers x "
               f"{config.epochs * math.ceil(samples / config.batch):,} steps, at this machine's measured rates")
    if seconds > problem.time_limit:
        accuracy.record(False, f"not trained: training would take about {seconds:,.0f} s ({figures}), over the "
                               f"time limit of {problem.time_limit:g} s; make the network smaller")
        result.seconds = round(time.monotonic() - started, 3)
        return result
    if memory > problem.memory_mb:
        accuracy.record(False, f"not trained: training would need about {memory:,.0f} MiB (the summary's "
                               f"training estimate at batch {config.batch}, the data and the libraries), over "
                               f"the limit of {problem.memory_mb} MiB")
        result.seconds = round(time.monotonic() - started, 3)
        return result
    try:
        trained = train_in_sandbox(grader, problem, net, path, root, display, data, config, seconds)
    except TrainingFailed as exc:
        accuracy.record(False, f"not trained: {exc}")
        result.seconds = round(time.monotonic() - started, 3)
        return result
    score, why, value = score_accuracy(problem, net, trained, data, config)
    result.details.update(accuracy=value, train_seconds=round(trained.seconds, 3),
                          estimated_seconds=round(seconds, 3), estimated_memory_mb=round(memory, 1),
                          uid=trained.uid, epochs=config.epochs, batch=config.batch, samples=samples)
    accuracy.credit = score
    accuracy.record(score >= 1.0, why)
    result.notes.append(why)
    result.notes.append(f"trained {config.epochs} epoch{'s' * (config.epochs != 1)} on {samples:,} samples of "
                        f"{data.spec}, batch {config.batch}, {config.describe_optimizer()}: "
                        f"{trained.seconds:.1f} s (estimated {seconds:.1f} s)")
    result.seconds = round(time.monotonic() - started, 3)
    return result


def score_accuracy(problem: DesignProblem, net, trained, data: DesignData, config) -> tuple:
    """(credit by the thresholds, the words, the accuracy), the accuracy measured by the grader
    itself on held-out data."""
    from cnnspec.engine import Model

    model = Model(net, dtype="float32", seed=config.seed)
    expected = model.arrays()
    arrays = trained.arrays
    if not isinstance(arrays, dict) or set(arrays) != set(expected):
        return 0.0, "the training process returned the wrong arrays", None
    for key, target in expected.items():
        value = arrays[key]
        if not isinstance(value, np.ndarray) or value.shape != target.shape or value.dtype.kind != "f":
            return 0.0, f"the training process returned a wrong array for {key}", None
        if not np.all(np.isfinite(value)):
            return 0.0, f"training diverged: {key} is not finite (lower the learning rate)", None
        target[...] = value
    return _score(problem, model, data, config)


def _score(problem: DesignProblem, model, data: DesignData, config) -> tuple:
    """(credit, words, value) of the trained ``model`` on the held-out split by the problem's
    metric: accuracy; mean IoU over pixels (classes absent from both prediction and truth left
    out); PSNR in dB of the outputs for the (corrupted, seeded by the design's seed) inputs
    against the clean pictures."""
    n = len(data.x_test)
    if problem.metric == "miou":
        from cnnspec.train.metrics import evaluate_segmentation

        result = evaluate_segmentation(model, data.x_test, data.y_test, data.classes, split="held-out")
        value = result.mean_iou
        words = (f"held-out mean IoU {value:.3f} (pixel accuracy {result.pixel_accuracy:.3f}, {n} pictures, "
                 f"{result.pixels:,} pixels)")
    elif problem.metric == "psnr":
        from cnnspec.train.metrics import corrupted_held_out, evaluate_reconstruction

        corrupted = corrupted_held_out(config.corrupt, data.x_test, config.seed) if config.corrupt else None
        result = evaluate_reconstruction(model, data.x_test, loss=config.loss, split="held-out", corrupted=corrupted)
        value = result.psnr
        words = f"held-out PSNR {value:.2f} dB ({n} pictures" + (
            f"; their corrupted inputs: {result.input_psnr:.2f} dB)" if corrupted is not None else ")")
    else:
        outputs = model.forward(data.x_test)
        correct = int(np.sum(np.argmax(outputs.reshape(len(outputs), -1), axis=1) == data.y_test))
        value = correct / n
        words = f"held-out accuracy {value:.3f} ({correct}/{n} samples)"
    if not math.isfinite(value):
        return 0.0, f"{words}: not a finite score", None
    credit = 0.0
    for threshold, fraction in problem.thresholds:
        if value >= threshold:
            credit = max(credit, fraction)
    steps = ", ".join(f"{t:g} -> {f:g}" for t, f in problem.thresholds)
    return credit, f"{words}: {credit:g} of the points (thresholds: {steps})", value


# -- the training process ---------------------------------------------------------------------------

class TrainingFailed(Exception):
    """Training did not produce arrays (a crash, the time limit, an error in training)."""


@dataclass
class Trained:
    arrays: dict
    rows: list
    seconds: float
    uid: int | None = None          # the user the training ran as


def _sources(net, path: Path, root: Path | None) -> tuple[dict, str]:
    """The files to send to the training process: the submission (and its imports, which lie in
    ``root``) by path relative to the folder they came from."""
    base = os.path.realpath(root if root is not None else Path(path).parent)
    sources, main = {}, None
    for file, text in (net.graph.graph.get("sources") or {}).items():
        relative = os.path.relpath(os.path.realpath(file), base)
        if relative.startswith(".."):
            raise TrainingFailed(f"a file outside your folder: {os.path.basename(file)}")
        sources[relative] = text
        if os.path.realpath(file) == os.path.realpath(path):
            main = relative
    if main is None:
        main = os.path.basename(path)
        sources[main] = _read_text(Path(path), main)
    return sources, main


def train_in_sandbox(grader, problem, net, path, root, display, data: DesignData, config,
                     estimate: float) -> Trained:
    """Train in design_child.py under the problem's limits; the arrays it sends back."""
    import pwd

    limits = grader.assignment.limits
    sources, main = _sources(net, path, root)
    workdir = Path(tempfile.mkdtemp(prefix="cnnspec-design-"))
    user = None
    if os.geteuid() == 0:
        entry = pwd.getpwnam(limits.user)
        if entry.pw_uid == 0:
            raise TrainingFailed(f"refusing to train as root (user {limits.user!r})")
        user = (entry.pw_uid, entry.pw_gid)
        os.chown(workdir, *user)
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    import cnnspec

    # the grader's threads and numba cache: the machine rate the estimate used was measured here
    env = {k: v for k, v in ENV.items() if not k.endswith("_THREADS")}
    env.update(HOME=str(workdir), TMPDIR=str(workdir), PYTHONPATH=str(Path(cnnspec.__file__).resolve().parents[1]))
    for key in ("NUMBA_CACHE_DIR", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS", "NUMBA_THREADING_LAYER"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    proc = subprocess.Popen([sys.executable, "-s", "-B", str(DESIGN_CHILD), str(req_r), str(rep_w)],
                            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, pass_fds=(req_r, rep_w), start_new_session=True)
    os.close(req_r)
    os.close(rep_w)
    stderr = bytearray()
    drain = threading.Thread(target=_drain, args=(proc.stderr, stderr), daemon=True)
    drain.start()
    config_json = config.to_json()
    message = {"sources": sources, "main": main, "x": data.x_train, "y": data.y_train.astype(np.int64),
               "classes": [str(c) for c in data.classes], "train": config_json,
               "limits": {"cpu_seconds": int(problem.compile_time + 4 * problem.time_limit + 60),
                          "file_size_mb": limits.file_size_mb, "open_files": max(limits.open_files, 256),
                          "memory_mb": problem.memory_mb, "no_processes": False},
               "user": user, "parent": os.getpid()}
    try:
        writer = threading.Thread(target=_write_all, args=(req_w, protocol.encode(message)), daemon=True)
        writer.start()
        reader = _Reader(rep_r)
        warm = reader.receive(time.monotonic() + problem.compile_time, proc, "while compiling its kernels")
        if warm.get("status") == "error":
            raise TrainingFailed(f"the network could not be compiled for training: {warm.get('message')}")
        # the time limit was checked against the estimate before starting; the process is killed
        # only far beyond it (an overloaded machine), never at the limit itself
        allowed = max(2 * problem.time_limit, problem.time_limit + 60)
        done = reader.receive(time.monotonic() + allowed, proc, "while training")
        if done.get("status") != "done":
            raise TrainingFailed(f"training stopped with an error: {done.get('message')}")
        uid = done.get("uid")
        return Trained(done.get("arrays"), done.get("rows") or [], float(done.get("seconds") or 0.0),
                       uid if type(uid) is int else None)
    except TrainingFailed as exc:
        text = bytes(stderr).decode("utf-8", "replace").strip().splitlines()
        if text and "MemoryError" in text[-1]:
            raise TrainingFailed(f"{exc} (out of memory: the limit is {problem.memory_mb} MiB)") from None
        raise
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        for fd in (req_w, rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(workdir, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass


def _drain(stream, into: bytearray, keep: int = 65536) -> None:
    for chunk in iter(lambda: stream.read(4096), b""):
        if len(into) < keep:
            into += chunk[:keep - len(into)]


class _Reader:
    def __init__(self, fd: int):
        self.fd, self.buffer = fd, bytearray()

    def receive(self, deadline: float, proc, what: str) -> dict:
        while True:
            if len(self.buffer) >= 8:
                (length,) = struct.unpack(">Q", self.buffer[:8])
                if length > 1 << 32:
                    raise TrainingFailed("the training process sent a malformed reply")
                if len(self.buffer) >= 8 + length:
                    body = bytes(self.buffer[8:8 + length])
                    del self.buffer[:8 + length]
                    try:
                        value = protocol.decode(body)
                    except protocol.ProtocolError as exc:
                        raise TrainingFailed(f"the training process sent a malformed reply ({exc})") from None
                    if not isinstance(value, dict):
                        raise TrainingFailed("the training process sent a malformed reply")
                    return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TrainingFailed(f"time limit exceeded {what} (the machine may be overloaded)")
            readable, _, _ = select.select([self.fd], [], [], min(remaining, 1.0))
            if readable:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    try:
                        proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        pass
                    from cnnspec.grade.sandbox import Limits

                    raise TrainingFailed(f"{describe_exit(proc.poll(), Limits())} {what}")
                self.buffer += chunk


def _fmt(shape) -> str:
    return "x".join(str(v) for v in shape)
