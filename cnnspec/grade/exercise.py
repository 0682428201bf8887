"""Analysis exercises: a network per student, questions on its shapes, parameters, MACs,
activations and receptive fields, answer keys, and grading of the answers with the formulas.

A template is a ``.cnn`` file whose header comment block says what varies and what is asked::

    # exercise: Shapes and receptive fields
    # vary size in 28..40 step 4          integers 28, 32, 36, 40
    # vary k1 in {3, 5}                   one of the values listed
    # vary c1 in 4..16 step 4
    # ask shape, params, macs, activations of conv1, maxpool1, conv2
    # ask receptive_field of conv2
    # ask total params, macs
    network Exercise {
        input image: 3x{size}x{size}
        conv({c1}, {k1}x{k1}, pad=1) -> relu -> maxpool(2)
        ...

``{name}`` in the network is replaced by the value drawn for the student (each draw seeded by
the exercise's seed and the student's id, so the same roster gives the same sheets again);
variants whose network is invalid (an output size below 1) are drawn again, as are duplicates,
so that every student of the roster has a network of their own. Layers are named as
``cnnspec summary`` names them (``conv1``, ``maxpool1``, ``dense2``). A plain ``.cnn`` file (no
``vary`` lines) is a template with one variant.

The quantities: ``shape`` (the output shape, CxHxW), ``params`` (weights and biases),
``macs`` (multiply-accumulates per sample), ``activations`` (output values per sample: the
activation memory, in values), ``receptive_field`` (its size per axis, HxW) -- of a layer, or
``total`` params, macs and activations of the network.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from cnnspec.errors import CnnSpecError, nearest

QUANTITIES = ("shape", "params", "macs", "activations", "receptive_field")
TOTALS = ("params", "macs", "activations")
QUESTION_TEXT = {
    "shape": "the output shape of `{layer}` (CxHxW)",
    "params": "the number of parameters (weights and biases) of `{layer}`",
    "macs": "the multiply-accumulates (MACs) of `{layer}` for one sample",
    "activations": "the activation memory of `{layer}`: how many values it keeps as its output for one sample "
                   "(a layer computed in place -- an activation function, dropout, flatten -- keeps none)",
    "receptive_field": "the receptive field of `{layer}` on the input (HxW): how many input pixels one of its "
                       "outputs depends on, padding included",
    "total params": "the total number of parameters of the network",
    "total macs": "the total MACs of the network for one sample",
    "total activations": "the total activation values of the network for one sample, the input's included "
                         "(layers computed in place -- activation functions, dropout, flatten -- add none)",
}
MAX_DRAWS = 200                   # redraws per student before giving up
_VARY = re.compile(r"^#\s*vary\s+(\w+)\s+in\s+(.+?)\s*$")
_ASK = re.compile(r"^#\s*ask\s+(.+?)\s*$")
_TITLE = re.compile(r"^#\s*exercise\s*:\s*(.+?)\s*$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


# -- the template ----------------------------------------------------------------------------------

@dataclass
class Template:
    path: str
    text: str                     # the network text, placeholders in it
    title: str
    variables: dict               # name -> list of values
    asks: list                    # (quantity, layer or None)
    lines: dict = field(default_factory=dict)   # name / "ask N" -> line number, for errors

    def substitute(self, values: dict) -> str:
        """The student's network: the values put in, the exercise's own header lines left out."""
        kept = [line for line in self.text.splitlines(keepends=True)
                if not (_VARY.match(line.strip()) or _ASK.match(line.strip()) or _TITLE.match(line.strip()))]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), "".join(kept)).lstrip("\n")

    @property
    def space(self) -> int:
        return math.prod(len(v) for v in self.variables.values()) if self.variables else 1


def _fail(path, line_no, lines, message, hint=None):
    source = lines[line_no - 1] if 0 < line_no <= len(lines) else None
    return CnnSpecError(message, file=str(path), line=line_no, col=1, source_line=source, hint=hint,
                        width=len(source.rstrip()) if source else 1)


def read_template(path) -> Template:
    """The template at ``path`` (see the module docstring), checked: every placeholder varied,
    every ``vary`` used, every asked layer and quantity known (on the first variant)."""
    from cnnspec.grade.design import _read_text

    path = Path(path)
    text = _read_text(path, str(path))
    lines = text.splitlines()
    title, variables, asks, where = path.stem, {}, [], {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line.startswith("#"):
            continue
        if match := _TITLE.match(line):
            title = match.group(1)
        elif match := _VARY.match(line):
            name, spec = match.group(1), match.group(2).split("#")[0].split("  ")[0].strip()
            if name in variables:
                raise _fail(path, number, lines, f"`{name}` is varied twice")
            variables[name] = _values(spec, path, number, lines)
            where[name] = number
        elif line.lower().startswith(("# vary", "#vary")):
            raise _fail(path, number, lines, "a `vary` line is `# vary NAME in A..B [step S]` or "
                                              "`# vary NAME in {a, b, c}`")
        elif match := _ASK.match(line):
            asks += _asks(match.group(1), path, number, lines)
            for quantity, layer in asks[len(asks) - 1:]:
                where[f"ask {quantity} {layer}"] = number
    used = set(_PLACEHOLDER.findall(text))
    for name in sorted(used - set(variables)):
        number = next(i for i, raw in enumerate(lines, 1) if "{" + name + "}" in raw)
        raise _fail(path, number, lines, f"`{{{name}}}` is not varied",
                    hint=f"add `# vary {name} in A..B` to the header")
    for name in sorted(set(variables) - used):
        raise _fail(path, where[name], lines, f"`{name}` is varied but `{{{name}}}` appears nowhere in the network")
    template = Template(str(path), text, title, variables, asks, where)
    first = template.substitute({k: v[0] for k, v in variables.items()})
    net = _load_variant(first, path, None)
    if not asks:                       # by default: every layer with parameters, and the last field
        template.asks = [(q, n) for n in net.layers() if net[n]["n_params"] for q in ("shape", "params")]
        spatial = [n for n in net.layers() if net[n]["receptive_field"] is not None and net[n]["op"] != "input"]
        template.asks += [("receptive_field", spatial[-1])] if spatial else []
    for quantity, layer in template.asks:
        if layer is not None and layer not in net.graph:
            guess = nearest(layer, net.layers())
            raise _fail(path, where.get(f"ask {quantity} {layer}", 1), lines, f"no layer `{layer}` in the network",
                        hint=f"did you mean `{guess}`? (layers are named as `cnnspec summary` shows them)"
                        if guess else "layers are named as `cnnspec summary` shows them")
        if quantity == "receptive_field" and net[layer]["receptive_field"] is None:
            raise _fail(path, where.get(f"ask {quantity} {layer}", 1), lines,
                        f"`{layer}` has no spatial receptive field (after `flatten` a unit sees the whole input)")
    return template


def _values(spec: str, path, number, lines) -> list:
    spec = spec.strip()
    if spec.startswith("{") and spec.endswith("}"):
        items = [s.strip() for s in spec[1:-1].split(",") if s.strip()]
        if not items or not all(re.fullmatch(r"-?\d+", s) for s in items):
            raise _fail(path, number, lines, "the values in { } must be whole numbers, e.g. {3, 5, 7}")
        return list(dict.fromkeys(int(s) for s in items))
    match = re.fullmatch(r"(-?\d+)\s*\.\.\s*(-?\d+)(?:\s+step\s+(\d+))?", spec)
    if not match:
        raise _fail(path, number, lines, f"cannot read the range `{spec}`",
                    hint="write A..B (every integer from A to B), A..B step S, or {a, b, c}")
    low, high, step = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
    if high < low or step < 1:
        raise _fail(path, number, lines, f"the range `{spec}` is empty")
    return list(range(low, high + 1, step))


def _asks(spec: str, path, number, lines) -> list:
    spec = spec.split("#")[0].strip()
    if spec.startswith("total "):
        names = [s.strip() for s in spec[6:].split(",") if s.strip()]
        for name in names:
            if name not in TOTALS:
                raise _fail(path, number, lines, f"unknown total `{name}`", hint=f"totals: {', '.join(TOTALS)}")
        return [(f"total {name}", None) for name in names]
    quantities, sep, layers = spec.partition(" of ")
    if not sep:
        raise _fail(path, number, lines, "an `ask` line is `# ask QUANTITIES of LAYERS` or `# ask total QUANTITIES`")
    wanted = [q.strip() for q in quantities.split(",")]
    for quantity in wanted:
        if quantity not in QUANTITIES:
            guess = nearest(quantity, QUANTITIES)
            raise _fail(path, number, lines, f"unknown quantity `{quantity}`",
                        hint=f"did you mean `{guess}`?" if guess else f"the quantities are: {', '.join(QUANTITIES)}")
    return [(quantity, layer.strip()) for layer in layers.split(",") if layer.strip() for quantity in wanted]


def _load_variant(text: str, path, values):
    import cnnspec

    try:
        return cnnspec.loads(text, file=str(path))
    except CnnSpecError as err:
        if values is None:
            raise CnnSpecError(f"the template's first variant (every variable at its first value) is not a valid "
                               f"network: {err.message}", file=str(path), hint=err.hint) from None
        raise


# -- answers ------------------------------------------------------------------------------------------

def answers(net, asks) -> list[dict]:
    """The questions with their answers, computed by the analysis (the numbers ``summary``
    prints), and the formula that gives each, with its numbers."""
    totals = net.summary()["totals"]
    out = []
    for number, (quantity, layer) in enumerate(asks, 1):
        if layer is None:
            key = quantity.split()[1]
            value = totals[key]
            formula = _total_formula(net, key, value)
        else:
            node = net[layer]
            value = {"shape": lambda: "x".join(map(str, node["output_shape"])),
                     "params": lambda: node["n_params"], "macs": lambda: node["macs"],
                     "activations": lambda: node["activations"],
                     "receptive_field": lambda: "x".join(str(int(v)) for v in node["receptive_field"]["size"]),
                     }[quantity]()
            formula = explain(net, layer, quantity)
        out.append({"id": f"q{number}", "quantity": quantity, "layer": layer,
                    "question": QUESTION_TEXT[quantity].format(layer=layer), "answer": value, "formula": formula})
    return out


def explain(net, layer: str, quantity: str) -> str:
    """The formula that gives ``quantity`` of ``layer``, with the network's numbers in it, as a
    lecture would write it; the values it states are those of the analysis."""
    node = net[layer]
    op, cfg = node["op"], node["config"]
    ins = node["input_shapes"][0] if node["input_shapes"] else None
    out = node["output_shape"]
    if quantity == "shape":
        if op in ("conv", "maxpool", "avgpool", "sumpool"):
            axes = ("H", "W") if len(out) == 3 else ("L",)
            parts = [f"C = {'filters' if op == 'conv' else 'input channels'} = {out[0]}"]
            dilation = cfg.get("dilation", (1,) * len(cfg["kernel"]))
            for i, axis in enumerate(axes):
                n, k, s, d = ins[1 + i], cfg["kernel"][i], cfg["stride"][i], dilation[i]
                before, after = cfg["pad"][2 * i], cfg["pad"][2 * i + 1]
                ceil = bool(cfg.get("ceil"))
                window = f"{k}" if d == 1 else f"{d}*({k} - 1) - 1"
                numerator = n + before + after - (k if d == 1 else d * (k - 1) + 1)
                value = 1 + (-(-numerator // s) if ceil else numerator // s)
                text = f"{axis} = 1 + {'ceil' if ceil else 'floor'}(({n} + {before} + {after} - {window}) / {s})"
                if value != out[1 + i]:         # ceil mode: the last window must start inside
                    text += " - 1 (the last window would start in the padding)"
                parts.append(f"{text} = {out[1 + i]}")
            return "; ".join(parts)
        if op == "dense":
            return f"units = {out[0]}"
        if op == "flatten":
            return f"{' x '.join(map(str, ins))} = {out[0]} values in a row"
        if op in ("globalavgpool", "globalmaxpool"):
            return f"one value per channel: {out[0]}x" + "x".join("1" for _ in out[1:])
        if ins is not None and tuple(ins) == tuple(out):
            return f"the same shape as its input: {'x'.join(map(str, out))}"
        return f"`{op}` gives {'x'.join(map(str, out))}"
    if quantity == "params":
        value = node["n_params"]
        if op == "conv":
            per = ins[0] // cfg["groups"]
            kernel = " x ".join(map(str, cfg["kernel"]))
            text = f"params = filters x (channels{'/groups' if cfg['groups'] != 1 else ''} x kernel) " \
                   f"{'+ filters (biases) ' if cfg['bias'] else ''}= {cfg['filters']} x ({per} x {kernel})"
            return text + (f" + {cfg['filters']}" if cfg["bias"] else "") + f" = {value}"
        if op == "dense":
            return (f"params = inputs x units {'+ units (biases) ' if cfg['bias'] else ''}= {ins[0]} x {cfg['units']}"
                    + (f" + {cfg['units']}" if cfg["bias"] else "") + f" = {value}")
        if op == "batchnorm":
            return (f"params = 2 x channels (gamma and beta; the running statistics are not parameters) "
                    f"= 2 x {ins[0]} = {value}")
        if not value:
            return f"params = 0: `{op}` has no weights"
        parts = [f"{key} {' x '.join(map(str, shape))} = {math.prod(shape)}" for key, shape in node["params"].items()]
        return f"params = {' + '.join(parts)} = {value}"
    if quantity == "macs":
        value = node["macs"]
        if op == "conv":
            per = ins[0] // cfg["groups"]
            return (f"MACs = outputs x (channels{'/groups' if cfg['groups'] != 1 else ''} x kernel) = "
                    f"({' x '.join(map(str, out))}) x ({per} x {' x '.join(map(str, cfg['kernel']))}) = {value}")
        if op == "dense":
            return f"MACs = inputs x units = {ins[0]} x {cfg['units']} = {value}"
        if value:
            return f"MACs of `{op}` = {value}"
        return "MACs = 0: only conv and dense layers multiply-accumulate (biases not counted)"
    if quantity == "activations":
        value = node["activations"]
        if value == 0:
            return f"0: `{op}` is computed in place and keeps no output of its own"
        return f"activations = {' x '.join(map(str, out))} = {value}"
    if quantity == "receptive_field":
        return _field_formula(net, layer)
    raise ValueError(quantity)


def _field_formula(net, layer: str) -> str:
    """The receptive-field recurrence from the input to ``layer`` along the main path:
    r = r_prev + (k - 1) x j_prev, j = j_prev x s (Araujo, Norris & Sim, 2019), per axis."""
    import networkx as nx

    node = net[layer]
    size = [int(v) for v in node["receptive_field"]["size"]]
    path = nx.shortest_path(net.graph, net.input_name, layer)
    steps, r, j = [], 1, 1
    for name in path[1:]:
        n = net[name]
        if n["op"] in ("conv", "maxpool", "avgpool", "sumpool"):
            k, s = n["config"]["kernel"][0], n["config"]["stride"][0]
            d = n["config"].get("dilation", (1,) * len(n["config"]["kernel"]))[0]
            grown = r + d * (k - 1) * j
            steps.append(f"{name}: r = {r} + {'%d*' % d if d != 1 else ''}({k} - 1) x {j} = {grown}"
                         + (f", j = {j} x {s} = {j * s}" if s != 1 else ""))
            r, j = grown, j * s
    square = len(set(size)) == 1
    text = "; ".join(steps) if steps else "the input itself: 1"
    if square and r == size[0]:
        return (f"r = r_prev + (k - 1) x j_prev, j = j_prev x stride, from r = 1, j = 1: {text}; "
                f"so {'x'.join(map(str, size))}")
    return f"{text} (height); the field is {'x'.join(map(str, size))}"


def _total_formula(net, key: str, value: int) -> str:
    field = "n_params" if key == "params" else key       # the input's values count among the activations
    parts = [f"{name} {net[name][field]}" for name in net.layers()
             if (net[name]["op"] != "input" or key == "activations") and net[name][field]]
    return f"the sum over the layers: {' + '.join(parts) if parts else '0'} = {value}"


# -- making the exercise -----------------------------------------------------------------------------

def read_roster(path) -> list[dict]:
    """Students from a CSV file: a column ``id`` (or ``student``, ``email``, ``username``; else
    the first column) and, when present, ``name``. A file without a header row is one id per line."""
    from cnnspec.grade.design import _read_text

    text = _read_text(Path(path), str(path))
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise CnnSpecError("the roster is empty", file=str(path))
    header = [c.strip().lower() for c in rows[0]]
    id_col = next((header.index(k) for k in ("id", "student", "student_id", "email", "username", "login")
                   if k in header), None)
    name_col = header.index("name") if "name" in header else None
    body = rows[1:] if id_col is not None or name_col is not None else rows
    id_col = id_col or 0
    students, seen = [], set()
    for number, row in enumerate(body, 2 if body is not rows else 1):
        sid = row[id_col].strip() if id_col < len(row) else ""
        if not sid:
            raise CnnSpecError(f"row {number} of the roster has no student id", file=str(path), line=number)
        if sid in seen:
            raise CnnSpecError(f"student `{sid}` is in the roster twice", file=str(path), line=number)
        seen.add(sid)
        name = row[name_col].strip() if name_col is not None and name_col < len(row) else sid
        students.append({"id": sid, "name": name})
    return students


def _rng(seed: int, student: str, draw: int):
    import numpy as np

    digest = hashlib.sha256(f"cnnspec exercise {seed} {student} {draw}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def make_exercise(template_path, roster_path, out, *, seed: int = 0, moodle: str | None = None,
                  draw: bool = True) -> dict:
    """One variant per student of the roster, each different; the sheets, the answer key
    (``key.json``, ``answer-key.csv``) and, with ``moodle``, the questions as Moodle XML."""
    from cnnspec.grade.reports import write_atomic

    template = read_template(template_path)
    students = read_roster(roster_path)
    if template.space < len(students) and template.variables:
        raise CnnSpecError(f"the template has {template.space} variants, fewer than the {len(students)} students: "
                           f"widen the ranges", file=str(template_path))
    out = Path(out)
    seen, key = {}, {"title": template.title, "template": template.path, "seed": seed, "students": {}}
    names = sorted(template.variables)
    for student in students:
        for attempt in range(MAX_DRAWS):
            rng = _rng(seed, student["id"], attempt)
            values = {n: int(template.variables[n][rng.integers(len(template.variables[n]))]) for n in names}
            text = template.substitute(values)
            try:
                net = _load_variant(text, template_path, values)
            except CnnSpecError:
                continue                                  # e.g. an output size below 1: draw again
            qa = answers(net, template.asks)
            signature = json.dumps([q["answer"] for q in qa])
            if signature in seen and template.variables:
                continue                                  # another student's answers: draw again
            seen[signature] = student["id"]
            break
        else:
            raise CnnSpecError(f"no valid variant of its own for student `{student['id']}` in {MAX_DRAWS} draws",
                               file=str(template_path), hint="widen the ranges, or keep them to valid networks")
        folder = out / _safe(student["id"])
        key["students"][student["id"]] = {"name": student["name"], "values": values, "network": text,
                                          "folder": folder.name, "questions": qa}
        write_atomic(folder / "network.cnn", text)
        picture = None
        if draw:
            try:
                net.render(folder / "network.svg")
                picture = "network.svg"
            except Exception:                             # noqa: BLE001 -- graphviz missing: a sheet without it
                picture = None
        write_atomic(folder / "sheet.md", sheet(template.title, student, text, qa, picture))
        write_atomic(folder / "answers.csv", "question,answer\n" + "".join(f"{q['id']},\n" for q in qa))
    write_atomic(out / "key.json", json.dumps(key, indent=1))
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["student", "question", "asked", "answer"])
    for sid, entry in key["students"].items():
        for q in entry["questions"]:
            writer.writerow([sid, q["id"], q["question"], q["answer"]])
    write_atomic(out / "answer-key.csv", rows.getvalue())
    if moodle:
        pictures = {sid: (out / e["folder"] / "network.svg").read_bytes() for sid, e in key["students"].items()
                    if (out / e["folder"] / "network.svg").is_file()}
        write_atomic(moodle, moodle_xml(key, pictures))
    return key


def _safe(student: str) -> str:
    from cnnspec.grade.batch import safe_name

    return safe_name(student)


def sheet(title: str, student: dict, text: str, qa: list, picture: str | None) -> str:
    """A student's sheet in Markdown (pandoc turns it into a PDF: ``pandoc sheet.md -o sheet.pdf``)."""
    lines = [f"# {title}", "", f"**{student['name']}** ({student['id']})", "",
             "Work out the answers by hand, from the network below, as the lectures do: output sizes "
             "`out = 1 + floor((in + pad_before + pad_after - kernel) / stride)`, parameters with their biases, "
             "MACs of conv and dense layers (biases not counted), activations as output values per sample, "
             "receptive fields padding included. Layers are named in order of appearance per kind "
             "(`conv1`, `conv2`, `maxpool1`, ...).", "", "```", text.strip(), "```", ""]
    if picture:
        lines += [f"![the network]({picture})", ""]
    lines += ["| # | question | your answer |", "|---|---|---|"]
    lines += [f"| {q['id']} | {q['question']} | |" for q in qa]
    lines += ["", "Hand in `answers.csv` with one line per question (`q1,16x14x14`, `q2,456`): shapes and "
              "fields as `CxHxW` / `HxW`, numbers without separators.", ""]
    return "\n".join(lines)


# -- checking answers -------------------------------------------------------------------------------

def read_answers(path) -> tuple[str | None, dict]:
    """(student id or None, {question id: answer text}) from a CSV (``question,answer``; an
    optional ``student`` column) or JSON (``{"student": ..., "answers": {...}}`` or a plain
    ``{"q1": ...}``) file."""
    from cnnspec.grade.design import _read_text

    path = Path(path)
    text = _read_text(path, str(path))
    student = None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CnnSpecError(f"not JSON: {exc.msg}", file=str(path), line=exc.lineno, col=exc.colno) from None
        if isinstance(data, dict) and isinstance(data.get("answers"), dict):
            student = data.get("student")
            data = data["answers"]
        if not isinstance(data, dict):
            raise CnnSpecError('expected {"q1": "...", ...} or {"student": ..., "answers": {...}}', file=str(path))
        return (str(student) if student is not None else None), {str(k): str(v) for k, v in data.items()}
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]] if rows else []
    q_col = header.index("question") if "question" in header else None
    a_col = header.index("answer") if "answer" in header else None
    s_col = header.index("student") if "student" in header else None
    body = rows[1:] if q_col is not None else rows
    q_col, a_col = (q_col, a_col) if q_col is not None else (0, 1)
    out = {}
    for row in body:
        if s_col is not None and s_col < len(row) and row[s_col].strip():
            student = row[s_col].strip()
        question = row[q_col].strip() if q_col < len(row) else ""
        if question:
            width = len(header) if body is not rows else 2
            if a_col is not None and a_col == width - 1 and len(row) > width:
                # the answer is the last column: `q1,(8, 16, 16)` and `q2,1,168` unquoted keep their commas
                out[question] = ",".join(row[a_col:]).strip()
            else:
                out[question] = row[a_col].strip() if a_col is not None and a_col < len(row) else ""
    return student, out


def _normal(answer, kind: str = "number") -> str | None:
    """An answer as the key writes it: ``8x16x16`` for a shape (``8 x 16 x 16``, ``(8, 16, 16)``,
    ``8×16×16`` accepted), ``1234`` for a number (``1,234`` and ``1 234`` accepted). ``kind``
    (``"shape"`` or ``"number"``: what the key holds) settles what commas mean: ``138,357,544``
    is a number where a number is asked, ``(3, 3)`` a field where a field is asked."""
    text = str(answer).strip().strip("()[]").replace("×", "x").replace("*", "x").lower()
    if not text:
        return None
    if kind == "shape":
        parts = re.split(r"\s*[x,]\s*|\s+", text.rstrip(",").strip())
        if parts and all(p.isdigit() for p in parts):
            return "x".join(str(int(p)) for p in parts)
        return None
    number = re.sub(r"(?<=\d)[,\s_'](?=\d{3}\b)", "", text.rstrip(",").strip())
    if re.fullmatch(r"\d+", number):
        return str(int(number))
    try:
        value = float(number)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else None


def check_answers(key: dict, student: str, given: dict) -> dict:
    """Per question: right or wrong, and feedback that shows the formula with the student's
    network's numbers and what they wrote."""
    entry = key["students"].get(student)
    if entry is None:
        guess = nearest(student, key["students"])
        raise CnnSpecError(f"no student `{student}` in the answer key",
                           hint=f"did you mean `{guess}`?" if guess else "name the file after the student's id")
    results = []
    for q in entry["questions"]:
        expected = str(q["answer"])
        raw = given.get(q["id"])
        kind = "shape" if q["quantity"] in ("shape", "receptive_field") else "number"
        got = _normal(raw, kind) if raw is not None else None
        if raw is None or not str(raw).strip():
            feedback = f"no answer; {q['formula']}"
            ok = False
        else:
            ok = got == expected or (q["quantity"] == "receptive_field" and got is not None
                                      and set(expected.split("x")) == {got})
            feedback = "right" if ok else f"{q['formula']}; you wrote {str(raw).strip()}"
        results.append({"id": q["id"], "question": q["question"], "ok": ok, "answer": expected,
                        "given": raw, "feedback": feedback})
    right = sum(r["ok"] for r in results)
    return {"student": student, "score": right, "max_score": len(results), "questions": results}


def load_key(path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "key.json"
    from cnnspec.grade.design import _read_text

    try:
        key = json.loads(_read_text(path, str(path)))
    except json.JSONDecodeError as exc:
        raise CnnSpecError(f"not an answer key: {exc.msg}", file=str(path)) from None
    if not isinstance(key, dict) or not isinstance(key.get("students"), dict):
        raise CnnSpecError("not an answer key written by `cnnspec grade exercise make`", file=str(path))
    return key


def check_files(key_path, answers_path) -> list[dict]:
    """Check one answer file, or every .csv/.json file of a folder (the student's id: the
    file's ``student`` field, else its name without an ``answers-`` prefix)."""
    key = load_key(key_path)
    answers_path = Path(answers_path)
    files = ([answers_path] if answers_path.is_file() else
             sorted(p for p in answers_path.rglob("*") if p.suffix.lower() in (".csv", ".json")))
    if not files:
        raise CnnSpecError("no answer files (.csv or .json) here", file=str(answers_path))
    out = []
    for path in files:
        student, given = read_answers(path)
        if student is None:
            student = path.stem[len("answers-"):] if path.stem.startswith("answers-") else path.stem
            if student == "answers" and path.parent.name in {e["folder"] for e in key["students"].values()}:
                student = next(s for s, e in key["students"].items() if e["folder"] == path.parent.name)
        out.append(check_answers(key, student, given))
    return out


def report_text(result: dict) -> str:
    lines = [f"{result['student']}: {result['score']} / {result['max_score']}"]
    for q in result["questions"]:
        mark = "right" if q["ok"] else "WRONG"
        lines.append(f"  {q['id']} {mark}: {q['question']}")
        if not q["ok"]:
            lines.append(f"      {q['feedback']}")
    return "\n".join(lines) + "\n"


# -- Moodle ---------------------------------------------------------------------------------------------

def moodle_xml(key: dict, pictures: dict | None = None) -> str:
    """The questions as Moodle XML: a category per question of the sheet, holding one question
    per student variant (a quiz draws a random question from each category); numbers as
    ``numerical`` questions (tolerance 0), shapes and fields as ``shortanswer`` questions
    accepting the spellings students write (``8x16x16``, ``8 x 16 x 16``, ``(8, 16, 16)``).
    ``pictures`` (student id -> SVG bytes) embeds each variant's drawing in its questions.
    HTML is in CDATA sections, as Moodle's documentation asks."""
    import base64
    from xml.sax.saxutils import escape

    def cdata(text: str) -> str:
        return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"

    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<quiz>"]
    students = list(key["students"].items())
    title = key.get("title", "cnnspec exercise")
    n_questions = len(students[0][1]["questions"]) if students else 0
    for index in range(n_questions):
        category = escape(f"$course$/top/{_moodle_name(title)}/q{index + 1}")
        out += ['  <question type="category">', f"    <category><text>{category}</text></category>", "  </question>"]
        for sid, entry in students:
            q = entry["questions"][index]
            kind = "shortanswer" if "x" in str(q["answer"]) else "numerical"
            network = escape(entry["network"].strip())
            html = f"<p>In this network, what is {_html(q['question'])}?</p><pre>{network}</pre>"
            picture = (pictures or {}).get(sid)
            files = ""
            if picture is not None:
                html += '<p><img src="@@PLUGINFILE@@/network.svg" alt="the network"></p>'
                files = (f'\n      <file name="network.svg" path="/" encoding="base64">'
                         f"{base64.b64encode(picture).decode()}</file>")
            name = escape(f"{title} {q['id']} (variant {entry['folder']})")
            out += [f'  <question type="{kind}">', f"    <name><text>{name}</text></name>",
                    f'    <questiontext format="html">\n      <text>{cdata(html)}</text>{files}\n    </questiontext>',
                    f'    <generalfeedback format="html"><text>{cdata("<p>" + _html(q["formula"]) + "</p>")}'
                    "</text></generalfeedback>",
                    "    <defaultgrade>1</defaultgrade>", "    <penalty>0.3333333</penalty>", "    <hidden>0</hidden>"]
            if kind == "shortanswer":
                out.append("    <usecase>0</usecase>")
                dims = str(q["answer"]).split("x")
                spellings = list(dict.fromkeys([str(q["answer"]), " x ".join(dims), "(" + ", ".join(dims) + ")",
                                                ", ".join(dims)]))
                if q["quantity"] == "receptive_field" and len(set(dims)) == 1:
                    spellings.append(dims[0])
                for spelling in spellings:
                    out += ['    <answer fraction="100" format="moodle_auto_format">',
                            f"      <text>{escape(spelling)}</text>",
                            f'      <feedback format="html"><text>{cdata("<p>Right.</p>")}</text></feedback>',
                            "    </answer>"]
            else:
                out += ['    <answer fraction="100" format="moodle_auto_format">',
                        f"      <text>{escape(str(q['answer']))}</text>", "      <tolerance>0</tolerance>",
                        f'      <feedback format="html"><text>{cdata("<p>Right.</p>")}</text></feedback>',
                        "    </answer>"]
            out.append("  </question>")
    out.append("</quiz>")
    return "\n".join(out) + "\n"


def _moodle_name(text: str) -> str:
    return re.sub(r"[/$]", "-", text).strip() or "cnnspec"


def _html(text: str) -> str:
    import html

    return html.escape(text).replace("`", "")
