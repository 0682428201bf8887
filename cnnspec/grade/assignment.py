"""The assignment: ``assignment.toml`` read into dataclasses, and ``cnnspec grade init``.

Every key is documented in the file ``init`` writes (TOML_TEMPLATE below); a bad file is a
CnnSpecError naming the file, the line and the key.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

try:
    import tomllib
except ImportError:             # Python 3.10: the same parser, as a package (pyproject.toml)
    import tomli as tomllib

from cnnspec.errors import CnnSpecError, nearest
from cnnspec.grade.functions import FUNCTIONS, GROUPS, template
from cnnspec.grade.reports import write_atomic
from cnnspec.grade.sandbox import Limits

SECRET_ENV = "CNNSPEC_GRADE_SECRET"
FRAMEWORKS = ["cnnspec", "torch", "torchvision", "tensorflow", "keras", "jax", "jaxlib", "flax",
              "mxnet", "paddle", "chainer", "theano", "scipy", "numba", "sklearn", "cupy"]
DEFAULT_POINTS = {
    "conv2d_forward": 10, "conv2d_backward": 15, "conv1d_forward": 5, "conv1d_backward": 5,
    "maxpool2d_forward": 5, "maxpool2d_backward": 5, "avgpool2d_forward": 4, "avgpool2d_backward": 4,
    "dense_forward": 4, "dense_backward": 6, "relu_forward": 2, "relu_backward": 2,
    "sigmoid_forward": 2, "sigmoid_backward": 2, "tanh_forward": 2, "tanh_backward": 2,
    "softmax_forward": 3, "softmax_cross_entropy": 5, "mse_loss": 3, "batchnorm_forward": 5,
    "batchnorm_backward": 5, "dropout_forward": 2, "dropout_backward": 2,
}                                   # the default assignment (GROUPS["core"]): 120 with the network
GENERATIVE_POINTS = {
    "conv_transpose2d_forward": 8, "conv_transpose2d_backward": 10, "upsample2d_forward": 5,
    "upsample2d_backward": 5, "bce_loss": 3, "sigmoid_bce": 4, "vae_sample_forward": 4,
    "vae_sample_backward": 5,
}
POINTS = {**DEFAULT_POINTS, **GENERATIVE_POINTS}
CHECKS = ("shape_dtype", "reference", "numeric", "edge", "inputs")
CHECK_TITLES = {"shape_dtype": "shape and dtype", "reference": "matches the reference",
                "numeric": "agrees with the numerical gradient of your forward",
                "edge": "edge cases", "inputs": "inputs not modified"}


@dataclass
class FunctionProblem:
    """One layer-API function to grade: a [functions.NAME] table over the [defaults]."""

    name: str
    points: float = 5.0
    public_cases: int = 3
    hidden_cases: int = 3
    edge_cases: bool = True
    forward_tolerance: float = 1e-7
    backward_tolerance: float = 1e-7
    numeric_tolerance: float = 1e-6
    numeric_step: float = 1e-5
    numeric_points: int = 8


@dataclass
class NetworkProblem:
    """A .cnn network run with the student's functions in place of the built-in layers."""

    name: str
    spec: Path
    network: str = ""              # which network of the file ("": the first)
    points: float = 20.0
    batch: int = 2
    tolerance: float = 1e-6
    seed: int = 0
    train: bool = True
    train_samples: int = 16
    train_batch: int = 4
    epochs: int = 2
    lr: float = 0.5


DESIGN_CHECKS = ("compiles", "shapes", "layers", "params", "macs", "memory", "receptive_field", "accuracy")
DESIGN_WEIGHTS = {"compiles": 1.0, "shapes": 1.0, "layers": 1.0, "params": 1.0, "macs": 1.0, "memory": 1.0,
                  "receptive_field": 1.0, "accuracy": 4.0}
DESIGN_METRICS = {"classify": "accuracy", "segment": "miou", "reconstruct": "psnr"}
METRIC_WORDS = {"classify": "held-out accuracy", "segment": "held-out mean IoU", "reconstruct": "held-out PSNR in dB"}
STUDENT_TRAIN_KEYS = ("optimizer", "epochs", "batch", "augment", "schedule", "warmup", "clip_grad_norm")


@dataclass
class DesignProblem:
    """Design a network: the student hands in a .cnn file, checked against requirements and
    budgets, then trained by the grader and scored on held-out data (cnnspec/grade/design.py)."""

    name: str
    input: str                        # the required input shape, "1x28x28"
    submission: str = "design.cnn"    # the student's file
    points: float = 30.0
    output: str = ""                  # the required output shape; "" = one unit per class
    layers: list = field(default_factory=list)      # allowed layer kinds; [] = any
    max_params: int = 0               # 0 = no budget
    max_macs: int = 0
    max_memory_mb: float = 0.0        # the summary's training estimate at the training batch
    receptive_field_layer: str = ""   # a layer the student names (``features = conv(...)``)
    receptive_field_min: int = 0      # ... whose field is at least this on every axis
    data: str = "shapes"              # a data spec (cnnspec/data), relative to the assignment
    test_split: float = 0.2           # held out by the (hidden) seed, unless the data has a test split
    loss: str = "cross_entropy"
    optimizer: str = "adam(lr=0.003)"
    epochs: int = 3
    batch: int = 32
    student_train: list = field(default_factory=list)   # the student's train settings honoured
    max_epochs: int = 0               # bound on the student's epochs (0: the design's epochs)
    min_batch: int = 8                # bounds on the student's batch
    max_batch: int = 256
    time_limit: float = 120.0         # wall-clock seconds of training, estimated before it starts
    memory_mb: int = 2048             # the training process's address space (RLIMIT_AS)
    compile_time: float = 300.0       # wall-clock seconds to start the process and compile kernels
    task: str = "classify"            # classify, segment (scored by mean IoU), reconstruct (by PSNR)
    corrupt: list = field(default_factory=list)     # reconstruct: augmentation steps on the input only
    metric: str = ""                  # accuracy, miou or psnr: the task's ("" = by the task)
    thresholds: list = field(default_factory=lambda: [[0.5, 0.25], [0.7, 0.5], [0.8, 0.75], [0.9, 1.0]])
    weights: dict = field(default_factory=dict)    # check -> weight, over DESIGN_WEIGHTS


@dataclass
class Assignment:
    path: Path
    name: str = "CNN layers"
    submission: str = "layers.py"
    public_seed: int = 2024
    secret_file: str = ".secret"
    checks: dict = field(default_factory=lambda: {"shape_dtype": 1.0, "reference": 3.0, "numeric": 2.0,
                                                  "edge": 2.0, "inputs": 1.0})
    limits: Limits = field(default_factory=Limits)
    forbidden: tuple = tuple(FRAMEWORKS)
    functions: list = field(default_factory=list)
    networks: list = field(default_factory=list)
    designs: list = field(default_factory=list)
    references: dict = field(default_factory=dict)   # mistake name -> "Lecture 3, slide 12"

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def max_score(self) -> float:
        return (sum(p.points for p in self.functions) + sum(n.points for n in self.networks)
                + sum(d.points for d in self.designs))

    def hidden_seed(self) -> int:
        """The seed of the hidden cases: HMAC-SHA256 of a secret that students never see (the
        environment variable CNNSPEC_GRADE_SECRET, else the file ``secret_file``)."""
        secret = os.environ.get(SECRET_ENV, "").encode()
        if not secret:
            path = self.directory / self.secret_file
            try:
                secret = path.read_bytes().strip()
            except OSError:
                raise CnnSpecError(
                    f"no secret for the hidden cases: {path} cannot be read and {SECRET_ENV} is not set",
                    file=str(self.path), hint="`cnnspec grade init` writes a secret file; or grade "
                    "with --public (the public cases only)") from None
            if not secret:
                raise CnnSpecError(f"the secret file {path} is empty", file=str(self.path))
        digest = hmac.new(secret, b"cnnspec hidden cases", hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big")


# -- reading -----------------------------------------------------------------------------------

_NUMBER = (int, float)
_SCHEMA = {
    "assignment": {"name": str, "submission": str, "public_seed": int, "secret_file": str},
    "defaults": {f.name: f.type for f in fields(FunctionProblem) if f.name != "name"},
    "checks": {name: _NUMBER for name in CHECKS},
    "limits": {f.name: f.type for f in fields(Limits)},
    "imports": {"forbidden": list},
    "networks": {f.name: f.type for f in fields(NetworkProblem)},
    "designs": {f.name: f.type for f in fields(DesignProblem)},
}
_TYPES = {"str": str, "int": int, "float": _NUMBER, "bool": bool, "Path": str, "list": list, "dict": dict}
_POSITIVE = {"points": 0, "public_cases": 0, "hidden_cases": 0, "numeric_points": 1, "batch": 1,
             "train_samples": 1, "train_batch": 1, "epochs": 0, "cpu_seconds": 1, "memory_mb": 0,
             "file_size_mb": 0, "open_files": 16, "output_kb": 0, "message_mb": 1, "max_params": 0,
             "max_macs": 0, "max_memory_mb": 0, "receptive_field_min": 0, "max_epochs": 0, "min_batch": 1,
             "max_batch": 1}
_STRICTLY_POSITIVE = ("forward_tolerance", "backward_tolerance", "numeric_tolerance", "numeric_step",
                      "time_per_case", "import_time", "total_time", "tolerance", "lr", "time_limit",
                      "memory_mb", "compile_time")


class _Reader:
    """Validates the parsed TOML, with errors located at the key's line."""

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text
        self.lines = text.splitlines()

    def error(self, message, table=None, key=None, hint=None):
        line = self.locate(table, key)
        if line is None:
            return CnnSpecError(message, file=str(self.path), hint=hint)
        source = self.lines[line - 1]
        found = source.find(key) if key else -1
        start = found if found >= 0 else len(source) - len(source.lstrip())
        width = len(key) if found >= 0 else len(source.split("#")[0].strip())
        return CnnSpecError(message, file=str(self.path), line=line, col=start + 1,
                            source_line=source, hint=hint, width=width)

    def locate(self, table, key):
        """Line (1-based) of ``key`` inside ``table`` ("functions.relu_forward", ("networks", 0)),
        else of the table's header; None when not found."""
        if table is None:
            return None
        name, index = (table if isinstance(table, tuple) else (table, None))
        current, seen, header = None, -1, None
        for number, raw in enumerate(self.lines, 1):
            line = raw.split("#", 1)[0].strip()
            if line.startswith("["):
                title = line.strip("[] ")
                if line.startswith("[[") and title == name:
                    seen += 1
                    current = (name, seen)
                else:
                    current = title
                if current == (name if index is None else (name, index)):
                    header = number
                continue
            if key and current == (name if index is None else (name, index)):
                if line.split("=", 1)[0].strip().strip('"') == key:
                    return number
        return header

    def table(self, data, name, where=None):
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(f"`{name}` must be a table ([{name}])", where or name)
        return value

    def check(self, table: dict, schema: dict, where, label: str) -> dict:
        out = {}
        for key, value in table.items():
            if key not in schema:
                guess = nearest(key, schema)
                raise self.error(f"unknown key `{key}` in [{label}]", where, key,
                                 hint=f"did you mean `{guess}`?" if guess else
                                 f"the keys of [{label}] are: {', '.join(schema)}")
            expected = _TYPES.get(schema[key], schema[key]) if isinstance(schema[key], str) else schema[key]
            ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
            if not ok:
                kind = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
                        _NUMBER: "a number", dict: "a table"}.get(expected, str(expected))
                raise self.error(f"`{key}` in [{label}] must be {kind}; received {value!r}", where, key)
            if key in _POSITIVE and value < _POSITIVE[key]:
                raise self.error(f"`{key}` in [{label}] must be at least {_POSITIVE[key]}; received {value}",
                                 where, key)
            if key in _STRICTLY_POSITIVE and not value > 0:
                raise self.error(f"`{key}` in [{label}] must be positive; received {value}", where, key)
            out[key] = value
        return out


def _check_user(reader, user: str) -> None:
    """``[limits] user``: a name; when the grader runs as root (where the sandbox switches to
    it), a user of this machine other than root."""
    if not user.strip():
        raise reader.error("`user` in [limits] must name a user", "limits", "user",
                           hint="the sandbox runs as this user when the grader runs as root; "
                                "`nobody` is the default")
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return                  # an ordinary user's sandbox runs as that user: the name is unused
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise reader.error(f"`user` in [limits]: there is no user {user!r} on this machine", "limits",
                           "user", hint="the grader runs as root here, so the sandbox must switch to an "
                                        "existing user (`nobody` exists on most systems)") from None
    if entry.pw_uid == 0:
        raise reader.error(f"`user` in [limits] is {user!r}, whose uid is 0: the sandbox never runs "
                           f"submissions as root", "limits", "user", hint="`nobody` is the default")


def load_assignment(path) -> Assignment:
    """Read and validate ``assignment.toml`` (or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "assignment.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CnnSpecError(f"cannot read the assignment: {exc.strerror or exc}", file=str(path)) from None
    reader = _Reader(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = col = None
        if "(at line " in message:
            where = message.rsplit("(at line ", 1)[1].rstrip(")")
            message = message.rsplit(" (at line ", 1)[0]
            line_s, _, col_s = where.partition(", column ")
            line, col = int(line_s), int(col_s or 1)
        source = reader.lines[line - 1] if line and line <= len(reader.lines) else None
        raise CnnSpecError(f"invalid TOML: {message}", file=str(path), line=line, col=col,
                           source_line=source) from None

    known = ("assignment", "defaults", "checks", "limits", "imports", "functions", "networks", "designs",
             "references")
    for key in data:
        if key not in known:
            guess = nearest(key, known)
            raise reader.error(f"unknown table `{key}`", key, hint=f"did you mean `[{guess}]`?" if guess
                               else f"the tables are: {', '.join(known)}")
    assignment = Assignment(path=path.resolve())
    for key, value in reader.check(reader.table(data, "assignment"), _SCHEMA["assignment"],
                                   "assignment", "assignment").items():
        setattr(assignment, key, value)
    defaults = reader.check(reader.table(data, "defaults"), _SCHEMA["defaults"], "defaults", "defaults")
    checks = reader.check(reader.table(data, "checks"), _SCHEMA["checks"], "checks", "checks")
    assignment.checks.update({k: float(v) for k, v in checks.items()})
    limits = reader.check(reader.table(data, "limits"), _SCHEMA["limits"], "limits", "limits")
    assignment.limits = Limits(**limits)
    _check_user(reader, assignment.limits.user)
    imports = reader.check(reader.table(data, "imports"), _SCHEMA["imports"], "imports", "imports")
    if "forbidden" in imports:
        if not all(isinstance(n, str) and n.isidentifier() for n in imports["forbidden"]):
            raise reader.error("`forbidden` must list module names", "imports", "forbidden")
        assignment.forbidden = tuple(imports["forbidden"])

    from cnnspec.grade.mutants import MUTANTS

    references = reader.table(data, "references")
    for name, text in references.items():
        if name not in MUTANTS:
            guess = nearest(name, MUTANTS)
            raise reader.error(f"unknown mistake `{name}` in [references]", "references", name,
                               hint=f"did you mean `{guess}`?" if guess else
                               f"the mistakes are: {', '.join(MUTANTS)}")
        if not isinstance(text, str) or not text.strip():
            raise reader.error(f"the reference for `{name}` must be a non-empty string", "references", name)
        assignment.references[name] = text.strip()

    functions = reader.table(data, "functions")
    for name, table in functions.items():
        where = f"functions.{name}"
        if name not in FUNCTIONS:
            guess = nearest(name, FUNCTIONS)
            raise reader.error(f"unknown function `{name}`", where, hint=f"did you mean `{guess}`?"
                               if guess else "the functions are those of layer-api.md")
        if not isinstance(table, dict):
            raise reader.error(f"[functions.{name}] must be a table", "functions", name)
        values = dict(defaults)
        values.setdefault("points", POINTS[name])
        values.update(reader.check(table, _SCHEMA["defaults"], where, where))
        assignment.functions.append(FunctionProblem(name=name, **_floats(values)))

    networks = data.get("networks", [])
    if not isinstance(networks, list):
        raise reader.error("`networks` must be an array of tables ([[networks]])", "networks")
    for index, table in enumerate(networks):
        where = ("networks", index)
        values = reader.check(table, _SCHEMA["networks"], where, "[networks]")
        for required in ("name", "spec"):
            if required not in values:
                raise reader.error(f"[[networks]] number {index + 1} needs `{required}`", where)
        spec = assignment.directory / values.pop("spec")
        if not spec.exists():
            raise reader.error(f"network file {spec} does not exist", where, "spec")
        assignment.networks.append(NetworkProblem(spec=spec, **_floats(values)))
    designs = data.get("designs", [])
    if not isinstance(designs, list):
        raise reader.error("`designs` must be an array of tables ([[designs]])", "designs")
    for index, table in enumerate(designs):
        assignment.designs.append(_design(reader, table, index, assignment))
    names = [p.name for p in assignment.functions] + [n.name for n in assignment.networks]
    for index, design in enumerate(assignment.designs):
        if design.name in names:
            raise reader.error(f"two problems are named `{design.name}`", ("designs", index), "name")
        names.append(design.name)
    if not assignment.functions and not assignment.networks and not assignment.designs:
        raise reader.error("the assignment grades nothing: add [functions.NAME] tables", "assignment")
    return assignment


def _design(reader: _Reader, table, index: int, assignment: Assignment) -> DesignProblem:
    """One [[designs]] table, every value checked (shapes, layer kinds, data, optimizer, ...)."""
    from cnnspec.layers import LAYERS

    where = ("designs", index)
    if not isinstance(table, dict):
        raise reader.error("each [[designs]] must be a table", where)
    values = reader.check(table, _SCHEMA["designs"], where, "[designs]")
    for required in ("name", "input"):
        if required not in values:
            raise reader.error(f"[[designs]] number {index + 1} needs `{required}`", where)
    for key in ("input", "output"):
        text = values.get(key, "")
        if text and not _shape(text):
            raise reader.error(f"`{key}` in [designs] must be a shape such as 1x28x28 or 10; received {text!r}",
                               where, key)
    if not values.get("submission", ".cnn").endswith(".cnn"):
        raise reader.error("`submission` in [designs] must name a .cnn file", where, "submission")
    for kind in values.get("layers", []):
        if kind not in LAYERS:
            guess = nearest(str(kind), LAYERS)
            raise reader.error(f"unknown layer kind `{kind}` in `layers`", where, "layers",
                               hint=f"did you mean `{guess}`?" if guess else f"the kinds are: {', '.join(LAYERS)}")
    for key in values.get("student_train", []):
        if key not in STUDENT_TRAIN_KEYS:
            raise reader.error(f"`student_train` lists settings a student may choose: {', '.join(STUDENT_TRAIN_KEYS)}; "
                               f"received {key!r}", where, "student_train")
    weights = values.get("weights", {})
    for key, weight in weights.items():
        if key not in DESIGN_CHECKS:
            guess = nearest(key, DESIGN_CHECKS)
            raise reader.error(f"unknown check `{key}` in `weights`", where, "weights",
                               hint=f"did you mean `{guess}`?" if guess else
                               f"the checks are: {', '.join(DESIGN_CHECKS)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise reader.error(f"the weight of `{key}` must be a number >= 0; received {weight!r}", where, "weights")
    task = values.get("task", "classify")
    if task not in DESIGN_METRICS:
        raise reader.error(f"`task` in [designs] is one of {', '.join(DESIGN_METRICS)}; received {task!r}",
                           where, "task")
    metric = values.get("metric") or DESIGN_METRICS[task]
    if metric != DESIGN_METRICS[task]:
        raise reader.error(f"`metric` of task = {task} is \"{DESIGN_METRICS[task]}\" ({METRIC_WORDS[task]}); "
                           f"received {metric!r}", where, "metric")
    values["metric"] = metric
    if task == "segment" and not values.get("output"):
        raise reader.error("a segmentation design needs `output`, the class scores per pixel (KxHxW, e.g. "
                           "\"11x32x32\" for shapes' 11 mask classes)", where, "output")
    if values.get("corrupt") and task != "reconstruct":
        raise reader.error("`corrupt` spoils a reconstruction's input: it needs task = \"reconstruct\"", where,
                           "corrupt")
    if values.get("corrupt"):
        from cnnspec.data.augment import parse_augment

        try:
            values["corrupt"] = [[name, list(args)] for name, args in parse_augment(values["corrupt"])]
        except CnnSpecError as exc:
            raise reader.error(f"`corrupt` in [designs]: {exc.message}", where, "corrupt", hint=exc.hint) from None
    if "loss" not in values and task == "reconstruct":
        values["loss"] = "mse"
    thresholds = values.get("thresholds")
    if thresholds is not None:
        top = float("inf") if metric == "psnr" else 1       # PSNR thresholds are decibels
        ok = thresholds and all(isinstance(t, list) and len(t) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= (top if i == 0 else 1)
            for i, v in enumerate(t)) for t in thresholds)
        if not ok:
            raise reader.error("`thresholds` is a list of [metric, credit] pairs, each between 0 and 1 (the metric "
                               "in dB for psnr), e.g. [[0.6, 0.5], [0.8, 1.0]]", where, "thresholds")
        values["thresholds"] = sorted([float(a), float(b)] for a, b in thresholds)
    elif metric == "psnr":
        values["thresholds"] = [[12.0, 0.25], [15.0, 0.5], [18.0, 0.75], [20.0, 1.0]]
    if "test_split" in values and not 0 < values["test_split"] < 1:
        raise reader.error(f"`test_split` must be between 0 and 1; received {values['test_split']}", where,
                           "test_split")
    for key in ("epochs", "batch"):
        if key in values and values[key] < 1:
            raise reader.error(f"`{key}` in [designs] must be at least 1", where, key)
    from cnnspec.train.config import TrainConfig, _set_optimizer, check_config

    try:
        config = TrainConfig()
        _set_optimizer(config, values.get("optimizer", DesignProblem.optimizer))
        config.loss = values.get("loss", DesignProblem.loss)
        config.task = task
        check_config(config)
    except CnnSpecError as exc:
        key = "loss" if "loss" in exc.message else "optimizer"
        raise reader.error(f"`{key}` in [designs]: {exc.message}", where, key, hint=exc.hint) from None
    design = DesignProblem(**_floats(values))
    if design.data.startswith("shapes") is False and ":" not in design.data and not design.data.endswith(".npz") \
            and design.data != "digits":
        raise reader.error(f"unknown data set {design.data!r}", where, "data",
                           hint="shapes, shapes:n=2000, digits, PATH.npz, mnist:DIR, cifar10:DIR, folder:DIR")
    return design


def _shape(text: str) -> tuple | None:
    parts = str(text).lower().split("x")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _floats(values: dict) -> dict:
    """TOML integers given where a float is meant (points = 5) become floats."""
    floats = {"points", "forward_tolerance", "backward_tolerance", "numeric_tolerance",
              "numeric_step", "tolerance", "lr", "max_memory_mb", "test_split", "time_limit", "compile_time"}
    return {k: float(v) if k in floats else v for k, v in values.items()}


# -- writing: cnnspec grade init -----------------------------------------------------------------

TOML_TEMPLATE = '''\
# assignment.toml -- a cnnspec grading assignment, written by `cnnspec grade init`.
#
#   cnnspec grade assignment.toml layers.py --public     a student, at home: public cases only
#   cnnspec grade assignment.toml layers.py              the instructor: public and hidden cases
#   cnnspec grade batch assignment.toml submissions/ --out gradebook.csv --feedback feedback/
#   cnnspec grade gradescope-bundle assignment.toml -o autograder.zip
#
# Every key is optional; the values below are the defaults. Give students what
#   cnnspec grade student-bundle assignment.toml -o student.zip
# writes (this file, the layers.py template and the network files), never the secret file.

[assignment]
# the title of reports
name = "{name}"
submission = "layers.py"        # in batch mode, the file graded inside each student's folder
public_seed = {public_seed}              # seed of the public cases: students run exactly these at home
# The hidden cases come from a seed derived from a secret (HMAC-SHA256): the environment
# variable CNNSPEC_GRADE_SECRET when it is set, else the file below (relative to this one;
# `grade init` writes a random one, readable by its owner only). Students never see hidden inputs.
secret_file = ".secret"         # the secret's file; never give it to students

[defaults]                      # for every [functions.*] table below, which may override any key
public_cases = 3                # random "basic" cases in the public set ...
hidden_cases = 3                # ... and in the hidden set; each set also has one case per
edge_cases = true               # edge kind (stride > 1, asymmetric padding, non-square inputs and
                                # kernels, 1x1 kernels, batch 1, one channel, no bias, ...)
forward_tolerance = 1e-7        # CS231n relative error, max |a-b| / max(1e-8, |a|+|b|), float64,
backward_tolerance = 1e-7       # of forward outputs / of gradients and losses, vs the reference
numeric_tolerance = 1e-6        # a backward vs central differences of the student's own forward
numeric_step = 1e-5             # h of the central differences
numeric_points = 8              # coordinates checked per gradient and case (where the gradient is
                                # not tiny: |g| >= 1e-3 or exactly 0)
# points = 5                    # a function's points (each function below sets its own)

[checks]                        # how a function's points are shared among its checks (weights,
shape_dtype = 1                 # normalised over the checks that apply): each output has the
reference = 3                   # expected type, shape and dtype (float64 and float32 inputs);
numeric = 2                     # values match the reference (basic cases); a backward agrees with
edge = 2                        # the numerical gradient of the student's forward; values match on
inputs = 1                      # the edge cases; the input arrays are left unchanged

[limits]                        # the sandbox (see the README): per submission
time_per_case = 10.0            # wall-clock seconds per call of a student function (a case
                                # calls it twice: float64 and float32 inputs)
import_time = 10.0              # wall-clock seconds to start the sandbox and import the file
total_time = 240.0              # wall-clock seconds for the whole submission, checked at every
                                # call (the rest is "not graded"): keep it well below the
                                # platform's own limit (Gradescope: 10 minutes by default), so
                                # that a slow submission still gets its report
cpu_seconds = 300               # CPU seconds per sandbox process (RLIMIT_CPU)
memory_mb = 2048                # address space per sandbox process (RLIMIT_AS); 0: no limit
file_size_mb = 16               # largest file the submission may write (RLIMIT_FSIZE); 0: none
open_files = 64                 # RLIMIT_NOFILE
output_kb = 64                  # printed output kept for the report; the rest is dropped
message_mb = 64                 # largest reply accepted from the sandbox
user = "nobody"                 # when the grader runs as root, the sandbox runs as this user

[imports]
# Refused in the sandbox, by name or by file path (importlib tricks, sys.path changes, reading the
# files), and reported; cnnspec (the reference), ctypes and cffi are refused whatever this says.
forbidden = {forbidden}  # top-level module names

[references]
# Where your course explains each mistake the feedback can name: mistake = "text", appended to the
# explanation as "(see text)". None by default; the names are:
# {mistakes}.
# kernel_flipped = "Lecture 3, slide 12: convolution or cross-correlation?"

# One table per graded function of layer-api.md; delete a table to leave a function out, add
# one to grade another: `cnnspec grade init DIR --functions core,generative` writes the tables of
# these groups (core: the layers above; generative: {generative}).
{functions}
# Network-level problems: the network runs with the student's functions in place of the
# built-in layers (those the API covers); its outputs and gradients must match the reference
# network's (float64, same initial weights), and one epoch of SGD on a fixed-seed subset of the
# `shapes` data set must lower the loss. Repeat [[networks]] for more networks.
[[networks]]
name = "lenet5"                 # required: the problem's name in reports
spec = "lenet5.cnn"             # required: the .cnn file, relative to this file
# network = "LeNet5"            # which network of the file, when it has several (default: the first)
points = 20                     # shared equally by the checks: outputs, gradients, training
batch = 2                       # samples compared in the forward/backward check
tolerance = 1e-6                # relative error of outputs and gradients
seed = 0                        # initial weights and data
train = true                    # also check that training lowers the loss (at least half as much
                                # as it lowers the reference network's, from the same weights)
train_samples = 16              # size of the `shapes` subset
train_batch = 4                 # samples per training step
epochs = 2                      # passes over the subset
lr = 0.5                        # learning rate of plain SGD
# Speed: every call of a student function here must finish within time_per_case. With these
# small batches, a correct implementation written with Python loops over the batch, the filters
# and the output positions (CS231n's "naive" layers) takes about 0.2 s per call of its slowest
# function (conv2d_backward, batch 4) on one core, so it passes with a wide margin on half a CPU
# (Gradescope's default); larger batches cost loop-written submissions proportionally more time.

# Design problems: the student hands in a .cnn file (their folder's `submission`), checked against
# the requirements and budgets below, then trained by the grader (in a sandboxed process, with
# these settings and a seed from the secret) and scored on held-out data. Uncomment to use;
# repeat [[designs]] for more. See the README, "Design problems".
# [[designs]]
# name = "small_cnn"            # required: the problem's name in reports
# input = "1x28x28"             # required: the input shape the network must take (CxHxW)
# submission = "design.cnn"     # the student's file
# points = 30                   # shared by the checks by their weights (below)
# output = ""                   # the output shape required; "" = one unit per class of the data
# layers = ["conv", "relu", "maxpool", "flatten", "dense", "softmax"]   # allowed kinds; [] = any
# max_params = 20000            # budgets; 0 = none
# max_macs = 2000000            # multiply-accumulates per sample
# max_memory_mb = 16            # the summary's training memory estimate at the training batch
# receptive_field_layer = ""    # a layer the student names (`features = conv(...)`) ...
# receptive_field_min = 0       # ... whose receptive field is at least this on every axis
# data = "shapes"               # shapes, shapes:n=2000, digits, PATH.npz, mnist:DIR, ... (relative to here)
# test_split = 0.2              # held out (by the secret's seed) unless the data has a test split
# loss = "cross_entropy"        # training settings, the same for every student
# optimizer = "adam(lr=0.003)"
# epochs = 3
# batch = 32
# student_train = []            # of the student's train section, the settings honoured: optimizer,
#                               # epochs, batch, augment, schedule, warmup, clip_grad_norm
# max_epochs = 0                # bound on the student's epochs (0: `epochs`)
# min_batch = 8                 # bounds on the student's batch
# max_batch = 256
# time_limit = 120.0            # wall-clock seconds of training: estimated before it starts (from the
#                               # MACs, activations and layers at this machine's measured rates); a
#                               # network over it is not trained, and the report gives the figures
# memory_mb = 2048              # address space of the training process (the estimate is checked first)
# compile_time = 300.0          # seconds to start that process and compile its kernels
# task = "classify"             # classify (held-out accuracy), segment (mean IoU; `output` KxHxW and
#                               # data with masks), reconstruct (PSNR in dB of the output against the
#                               # clean input; loss mse unless given)
# corrupt = []                  # reconstruct: ["noise(0.3)"] spoils the input only (denoising)
# metric = ""                   # accuracy, miou or psnr: the task's (the default)
# thresholds = [[0.5, 0.25], [0.7, 0.5], [0.8, 0.75], [0.9, 1.0]]   # [metric, share of its points]
#                               # (psnr's default: [[12, 0.25], [15, 0.5], [18, 0.75], [20, 1.0]] dB)
# weights = {{}}                # check -> weight; defaults compiles 1, shapes 1, layers 1, params 1,
#                               # macs 1, memory 1, receptive_field 1, accuracy 4
'''


def resolve_functions(spec) -> list:
    """Function names from ``spec``: names of layer-api.md's functions and of GROUPS, as a list
    or a comma-separated string ("core,generative", "core,vae_sample_forward"); in that order,
    each once. An unknown name is a CnnSpecError naming it."""
    words = [w.strip() for w in spec.split(",")] if isinstance(spec, str) else list(spec)
    words = [w for w in words if w]
    names = []
    for word in words:
        if word in GROUPS:
            names += GROUPS[word]
        elif word in FUNCTIONS:
            names.append(word)
        else:
            guess = nearest(str(word), [*GROUPS, *FUNCTIONS])
            raise CnnSpecError(f"unknown function or group `{word}`",
                               hint=f"did you mean `{guess}`?" if guess else
                               f"the groups are {', '.join(GROUPS)}; the functions those of layer-api.md")
    if not names:
        raise CnnSpecError("no function to grade: name functions or groups (core, generative)")
    return list(dict.fromkeys(names))


def render_toml(name="CNN layers", public_seed=2024, functions=None) -> str:
    import textwrap

    from cnnspec.grade.mutants import MUTANTS

    names = resolve_functions(functions or "core")
    tables = "\n".join(f"[functions.{n}]\npoints = {POINTS[n]}\n" for n in names)
    forbidden = "[" + ", ".join(f'"{n}"' for n in FRAMEWORKS) + "]"
    mistakes = textwrap.fill(", ".join(MUTANTS), width=96, subsequent_indent="# ")
    generative = textwrap.fill(", ".join(GROUPS["generative"]) + ")", width=96, subsequent_indent="# ")
    return TOML_TEMPLATE.format(name=name, public_seed=public_seed, functions=tables, forbidden=forbidden,
                                mistakes=mistakes, generative=generative)


def init_assignment(directory, *, force: bool = False, functions=None) -> list[Path]:
    """Write a ready assignment into ``directory``: assignment.toml, the student template
    layers.py, a random secret (mode 0600) and the network of the network problem. ``functions``
    (names or groups, see :func:`resolve_functions`) chooses the graded functions; default
    ``"core"``, the layers of CNN classifiers."""
    directory = Path(directory)
    names = resolve_functions(functions or "core")
    directory.mkdir(parents=True, exist_ok=True)
    files = {"assignment.toml": render_toml(functions=names),
             "layers.py": template(names, title="CNN layers", forbidden=FRAMEWORKS),
             "lenet5.cnn": _lenet5_text()}
    existing = [name for name in files if (directory / name).exists()]
    if existing and not force:
        raise CnnSpecError(f"{directory} already has {', '.join(existing)}", file=str(directory),
                           hint="use --force to overwrite")
    written = []
    for name, text in files.items():
        write_atomic(directory / name, text)
        written.append(directory / name)
    secret = directory / ".secret"
    if not secret.exists():
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        written.append(secret)
    return written


def _lenet5_text() -> str:
    """specs/lenet5.cnn of the source checkout when there is one; else the same network."""
    spec = Path(__file__).resolve().parents[2] / "specs" / "lenet5.cnn"
    if spec.exists():
        return spec.read_text(encoding="utf-8")
    return ("network LeNet5 {\n    input image: 1x32x32\n\n    conv(6, 5x5) -> relu -> maxpool(2x2)\n"
            "    conv(16, 5x5) -> relu -> maxpool(2)\n    flatten\n    dense(120) -> relu\n"
            "    dense(84) -> relu\n    dense(10) -> softmax\n}\n")
