"""``cnnspec grade gradescope-bundle``: the autograder zip Gradescope accepts; and
``cnnspec grade student-bundle``: what students need to run ``--public`` at home.

    setup.sh          installs cnnspec: the wheel inside the zip (built from the source checkout
                      the command runs from, or given with --wheel), or `pip install cnnspec==V`
                      from PyPI with --pypi; its dependencies come from PyPI
    run_autograder    grades /autograder/submission with the assignment and writes
                      /autograder/results/results.json (Gradescope's schema)
    source files      assignment.toml, the secret, the network files of [[networks]], the data
                      files of [[designs]]

Gradescope runs one container per submission (as root: the sandbox drops to `nobody`), which is
how a course of any size scales out. The zip holds the secret: upload it to Gradescope only.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from cnnspec.errors import CnnSpecError
from cnnspec.grade.assignment import SECRET_ENV, load_assignment

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, when the autograder image is built. Its default image, Ubuntu 22.04,
# has Python 3.10: cnnspec runs on Python 3.10 and later.
set -euo pipefail
apt-get update -q && apt-get install -y -q python3 python3-pip python3-venv
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "cnnspec needs Python 3.10 or later; this image has " + sys.version.split()[0])'
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
/autograder/venv/bin/pip install {install}
# compile the reference's numba kernels now, into the image: each submission's container then
# starts with a warm cache
/autograder/venv/bin/python -c "from cnnspec.grade.bundle import warm_up; warm_up('/autograder/source/assignment.toml')"
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission; it must write /autograder/results/results.json.
set -u
mkdir -p /autograder/results
chmod go-rwx /autograder/source            # the secret: not for the sandbox's user
cd /autograder/source
/autograder/venv/bin/cnnspec grade assignment.toml /autograder/submission \\
    --format gradescope -o /autograder/results/results.json
status=$?
if [ $status -ne 0 ] || [ ! -s /autograder/results/results.json ]; then
    cat > /autograder/results/results.json <<JSON
{{"score": 0, "output": "The autograder could not run (exit status $status); please tell your instructor.", "output_format": "text", "tests": []}}
JSON
fi
exit 0
"""


def warm_up(assignment_path) -> None:
    """Run the reference on every case and network of the assignment once, so that numba
    compiles (and caches) every kernel the grading needs."""
    import numpy as np

    import cnnspec
    from cnnspec.data import make_shapes
    from cnnspec.engine import SGD, Model
    from cnnspec.grade.grader import Grader

    assignment = load_assignment(assignment_path)
    grader = Grader(assignment, public_only=True)
    for problem in assignment.functions:
        grader.cases(problem)
    if assignment.designs:
        from cnnspec.grade.design import machine_rate

        machine_rate()                    # the training kernels of the rate's calibration networks
    for problem in assignment.networks:
        net = cnnspec.load(problem.spec)
        x, y = make_shapes(problem.batch, net.input_shape, seed=problem.seed)
        Model(net, dtype="float64", seed=problem.seed).loss_and_grad(x.astype(np.float64), y)
        model = Model(net, dtype="float32", seed=problem.seed)
        model.train_step(x, y, SGD(model, lr=problem.lr))
        model.evaluate(x, y)


def build_wheel(out_dir: Path) -> Path:
    """A wheel of the source checkout this cnnspec runs from (pip wheel, no dependencies), built
    from a copy so that the checkout is left as it is."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").exists():
        raise CnnSpecError("cnnspec is not running from a source checkout: give --wheel PATH or --pypi")
    source = out_dir / "source"
    source.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "LICENSE", "cnnspec", "grammar"):
        if (root / name).is_dir():
            shutil.copytree(root / name, source / name, ignore=ignore)
        elif (root / name).exists():
            shutil.copy2(root / name, source / name)
    # Offline (--no-build-isolation) when this environment's setuptools can make wheels: from 70.1
    # on it has bdist_wheel, older ones (Python 3.11's venv brings 65.5) need the `wheel` package.
    # Otherwise pip builds in an isolated environment with pyproject.toml's [build-system]
    # requirements, from the package index, as `pip install -e .` did.
    isolation = ["--no-build-isolation"] if _can_build_wheels() else []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation,
                           "-q", "-w", str(out_dir), str(source)], capture_output=True, text=True)
    wheels = sorted(out_dir.glob("cnnspec-*.whl"))
    if done.returncode != 0 or not wheels:
        raise CnnSpecError(f"building the cnnspec wheel failed: {done.stderr.strip()[-500:]}",
                           hint="give a wheel with --wheel PATH, or use --pypi")
    return wheels[-1]


def grading_files(assignment, platform: str, secret: bool = True) -> dict:
    """What grading needs beside cnnspec, by path relative to the assignment: assignment.toml,
    the secret (``secret``), the network files of [[networks]] and what they import."""
    files = {"assignment.toml": assignment.path.read_bytes()}
    if secret:
        path = assignment.directory / assignment.secret_file
        if not path.exists():
            raise CnnSpecError(f"the secret file {path} does not exist: hidden cases need it "
                               f"({platform} does not see {SECRET_ENV})", file=str(assignment.path))
        files[assignment.secret_file] = path.read_bytes()
    for problem in assignment.networks:
        for path in _cnn_files(problem.spec):
            files[_relative(path, assignment)] = path.read_bytes()
    for problem in assignment.designs if secret else ():   # the instructor's data, held-out part included
        path = assignment.directory / problem.data
        if path.is_file():
            files[_relative(path, assignment)] = path.read_bytes()
        elif ":" in problem.data and not problem.data.startswith("shapes"):
            folder = assignment.directory / problem.data.partition(":")[2]
            for item in sorted(folder.rglob("*")) if folder.is_dir() else ():
                if item.is_file():
                    files[_relative(item, assignment)] = item.read_bytes()
    return files


def _relative(path: Path, assignment) -> str:
    try:
        return str(path.resolve().relative_to(assignment.directory.resolve()))
    except ValueError:
        raise CnnSpecError(f"the file {path} is outside the assignment's folder {assignment.directory}: "
                           f"it could not be put at the same place", file=str(assignment.path)) from None


def _wheel(tmp: Path, wheel=None) -> Path:
    wheel_path = Path(wheel) if wheel else build_wheel(tmp)
    if not wheel_path.exists():
        raise CnnSpecError(f"no such wheel: {wheel_path}")
    return wheel_path


def _can_build_wheels() -> bool:
    """Whether setuptools here has bdist_wheel: version 70.1 or later, or the `wheel` package."""
    from importlib import metadata

    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    try:
        metadata.version("wheel")
        return True
    except metadata.PackageNotFoundError:
        return version >= (70, 1)


def make_bundle(assignment_path, out, *, wheel=None, pypi: bool = False) -> list[str]:
    """Write the autograder zip ``out``; return the names it holds."""
    from cnnspec import __version__
    from cnnspec.grade.reports import write_atomic

    assignment = load_assignment(assignment_path)
    files = grading_files(assignment, "Gradescope")
    with tempfile.TemporaryDirectory() as tmp:
        if pypi:
            install = f"cnnspec=={__version__}"
        else:
            wheel_path = _wheel(Path(tmp), wheel)
            files[wheel_path.name] = wheel_path.read_bytes()
            install = f"/autograder/source/{wheel_path.name}"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for name, executable, text in (("setup.sh", True, SETUP.format(install=install)),
                                           ("run_autograder", True, RUN.format())):
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o755 if executable else 0o644) << 16
                z.writestr(info, text)
            for name, data in files.items():
                z.writestr(name, data)
        write_atomic(out, buffer.getvalue())
    return ["setup.sh", "run_autograder", *files]


# -- what students get --------------------------------------------------------------------------

STUDENT_README = """{name}
{underline}

Implement the functions of {submission} (each docstring states the shapes), then check your work
on the public cases -- the same cases and checks as the instructor's, without the hidden ones:

    pip install cnnspec
    cnnspec grade assignment.toml {submission} --public

Files: assignment.toml (the assignment; it holds no secret), {submission} (your template){networks}.
The grader that made this bundle runs Python {python} and NumPy {numpy}.
"""


DESIGN_README = """
Design problems: hand in a .cnn file for each (the limits and budgets are in assignment.toml,
under [[designs]]):
{designs}
Check one at home with `cnnspec check FILE.cnn` and `cnnspec summary FILE.cnn`, then
`cnnspec grade assignment.toml FILE.cnn --public`: the grader trains it as it will (its data,
settings and a public seed instead of the hidden one) and scores it on its public held-out split.
"""


def network_functions(assignment) -> list[str]:
    """The layer-API functions the assignment's network problems run (their layers' forward and
    backward functions, and the loss the engine trains them with)."""
    import cnnspec
    from cnnspec.engine.backend import api_kind
    from cnnspec.grade.functions import FUNCTIONS

    names = []
    for problem in assignment.networks:
        net = cnnspec.load(problem.spec)
        for name in net.graph.nodes:
            node = net.graph.nodes[name]
            if not node.get("input_shapes"):
                continue
            kind = api_kind(node["op"], node["config"], len(node["input_shapes"][0]) - 1)
            if kind == "softmax":
                names.append("softmax_cross_entropy")
            for suffix in ("_forward", "_backward"):
                if kind and f"{kind}{suffix}" in FUNCTIONS:
                    names.append(f"{kind}{suffix}")
    return list(dict.fromkeys(names))


def _cnn_files(spec: Path) -> list[Path]:
    """A .cnn file and every file it imports, transitively."""
    import re

    seen, todo = [], [spec.resolve()]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        for name in re.findall(r'^\s*import\s+"([^"]+)"', path.read_text(encoding="utf-8"), flags=re.M):
            todo.append((path.parent / name).resolve())
    return seen


def make_student_bundle(assignment_path, out) -> list[str]:
    """Write what students need to run ``cnnspec grade assignment.toml layers.py --public`` at
    home: assignment.toml (no secret is in it; the secret file is left out), the template of the
    submission file (every graded function, the forwards the backwards need and the functions the
    network problems run), the network files with the files they import, and a README. ``out``:
    a .zip file, else a directory. Returns the names written."""
    import platform

    import numpy

    from cnnspec.grade.functions import FUNCTIONS, template
    from cnnspec.grade.reports import write_atomic

    assignment = load_assignment(assignment_path)
    graded = [p.name for p in assignment.functions]
    names = [n for n in FUNCTIONS if n in set(graded) | set(network_functions(assignment))]
    files = {"assignment.toml": assignment.path.read_bytes()}
    if assignment.functions or assignment.networks:
        files[assignment.submission] = template(names, title=assignment.name, submission=assignment.submission,
                                                forbidden=assignment.forbidden).encode()
    networks = []
    for name, data in grading_files(assignment, "students", secret=False).items():
        if name != "assignment.toml":
            files[name] = data
            networks.append(name)
    if assignment.secret_file in files:
        raise CnnSpecError("the student bundle would hold the secret file", file=str(assignment.path))
    extra = f", {', '.join(dict.fromkeys(networks))} (the network problems)" if networks else ""
    readme = STUDENT_README.format(name=assignment.name, underline="=" * len(assignment.name),
                                   submission=assignment.submission, networks=extra,
                                   python=platform.python_version(), numpy=numpy.__version__)
    if assignment.designs:
        readme += DESIGN_README.format(designs="\n".join(
            f"    {d.submission}: {d.name}, input {d.input}" + (f", at most {d.max_params:,} parameters"
                                                                 if d.max_params else "")
            for d in assignment.designs))
        if not (assignment.functions or assignment.networks):
            readme = readme.split("Implement the functions")[0] + readme[readme.index("Files:"):].replace(
                f", {assignment.submission} (your template)", "")
    files["README.txt"] = readme.encode()
    out = Path(out)
    if out.suffix == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
        write_atomic(out, buffer.getvalue())
    else:
        for name, data in files.items():
            write_atomic(out / name, data)
    return list(files)


# -- PrairieLearn ---------------------------------------------------------------------------------

PL_RUN = """#!/bin/bash
# PrairieLearn's external grader runs this (info.json's entrypoint) in a container of the image
# built from image/Dockerfile: the student's files are in /grade/student, this folder (the
# question's tests/) in /grade/tests; it must write /grade/results/results.json.
set -u
mkdir -p /grade/results
chmod -R go-rwx /grade/tests              # the secret: not for the sandbox's user
cd /grade/tests
cnnspec grade assignment.toml /grade/student --format prairielearn -o /grade/results/results.json
status=$?
if [ $status -ne 0 ] || [ ! -s /grade/results/results.json ]; then
    cat > /grade/results/results.json <<JSON
{{"gradable": false, "score": 0, "tests": [],
 "message": "The autograder could not run (exit status $status); please tell your instructor.",
 "format_errors": ["the autograder could not run"]}}
JSON
fi
exit 0
"""

PL_DOCKERFILE = """# The grading image of the PrairieLearn question (info.json's "image"): Python with cnnspec
# installed and its numba kernels compiled for the assignment, so that grading starts warm.
#     docker build -t {image} .            (in this folder)
#     docker push {image}                  (PrairieLearn pulls graders from Docker Hub)
FROM python:{python}-slim
COPY {wheel_source} /opt/cnnspec/
RUN pip install --no-cache-dir {install}
COPY warm-up/ /opt/cnnspec/warm-up/
RUN python -c "from cnnspec.grade.bundle import warm_up; warm_up('/opt/cnnspec/warm-up/assignment.toml')"
"""

PL_QUESTION = """<pl-question-panel>
  <p><strong>{name}</strong></p>
  <p>{what}</p>
  <p>Check your work first with the public cases, as the student bundle's README says:
  <code>cnnspec grade assignment.toml {first} --public</code>. The grader runs the same public cases and
  hidden ones, and shows what passed and what failed, check by check.</p>
</pl-question-panel>

<pl-file-upload {files}></pl-file-upload>

<pl-submission-panel>
  <pl-external-grader-results></pl-external-grader-results>
  <pl-file-preview></pl-file-preview>
</pl-submission-panel>
"""

PL_README = """{name}: a PrairieLearn question graded by cnnspec
{underline}

question/     copy it to your course as questions/{qid}/ (info.json, question.html, tests/).
              tests/ holds the assignment, its secret and its files: PrairieLearn never serves a
              question's tests/ folder to students.
image/        the grading image. PrairieLearn runs external graders in a Docker image it pulls
              from Docker Hub; this one is python:{python}-slim with cnnspec installed and its
              numba kernels compiled for the assignment:
                  cd image && docker build -t {image} . && docker push {image}
              info.json names "{image}" (give --image NAME to write another name).

The grader (tests/run.sh, the entrypoint) writes /grade/results/results.json in PrairieLearn's
external-grader format. Grading runs as root in the container; the sandbox drops to `nobody`.
The timeout in info.json is {timeout} s (PrairieLearn allows at most 600).
"""


def make_prairielearn_bundle(assignment_path, out, *, image: str = "cnnspec-grader", wheel=None,
                             pypi: bool = False) -> list[str]:
    """Write a PrairieLearn question folder (``out/question``: info.json, question.html with a
    file upload element, tests/ with run.sh and the grading files), the grading image's
    Dockerfile (``out/image``) and a README. Returns the paths written, relative to ``out``."""
    import json
    import platform
    import uuid

    from cnnspec import __version__
    from cnnspec.grade.reports import write_atomic

    assignment = load_assignment(assignment_path)
    out = Path(out)
    files = {f"question/tests/{name}": data for name, data in grading_files(assignment, "PrairieLearn").items()}
    files["question/tests/run.sh"] = PL_RUN.format().encode()
    info_path = out / "question" / "info.json"
    question_uuid = None
    try:                                   # regenerating keeps the question's identity
        question_uuid = str(uuid.UUID(json.loads(info_path.read_text())["uuid"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        question_uuid = str(uuid.uuid4())
    timeout = int(min(600, max(30, assignment.limits.total_time + 60 + _design_seconds(assignment))))
    info = {"uuid": question_uuid, "type": "v3", "title": assignment.name, "topic": "Convolutional networks",
            "tags": ["cnnspec", "autograded"], "gradingMethod": "External", "singleVariant": True,
            "partialCredit": True,
            "externalGradingOptions": {"enabled": True, "image": image, "entrypoint": "/grade/tests/run.sh",
                                       "timeout": timeout}}
    files["question/info.json"] = (json.dumps(info, indent=2) + "\n").encode()
    names = upload_names(assignment)
    required = [n for n in names if n.endswith(".cnn")]
    optional = [n for n in names if not n.endswith(".cnn")]
    attributes = " ".join(f'{key}="{",".join(values)}"' for key, values in
                          (("file-names", required), ("optional-file-names", optional)) if values)
    what = (f"Upload <code>{assignment.submission}</code> (or the notebook <code>"
            f"{Path(assignment.submission).stem}.ipynb</code>) with your layer functions."
            if assignment.functions or assignment.networks else "")
    if required:
        listed = ", ".join(f"<code>{n}</code>" for n in required)
        what += f" Upload your network{'s' * (len(required) > 1)}: {listed}."
    files["question/question.html"] = PL_QUESTION.format(name=_html(assignment.name), what=what.strip(),
                                                         first=names[0], files=attributes).encode()
    python = ".".join(platform.python_version_tuple()[:2])
    with tempfile.TemporaryDirectory() as tmp:
        if pypi:
            install, wheel_source = f"cnnspec=={__version__}", None
        else:
            wheel_path = _wheel(Path(tmp), wheel)
            files[f"image/{wheel_path.name}"] = wheel_path.read_bytes()
            install, wheel_source = f"/opt/cnnspec/{wheel_path.name}", wheel_path.name
        for name, data in grading_files(assignment, "PrairieLearn", secret=False).items():
            files[f"image/warm-up/{name}"] = data
        dockerfile = PL_DOCKERFILE.format(image=image, python=python, wheel_source=wheel_source or "warm-up/",
                                          install=install)
        if wheel_source is None:
            dockerfile = dockerfile.replace("COPY warm-up/ /opt/cnnspec/\n", "")
        files["image/Dockerfile"] = dockerfile.encode()
        qid = "".join(c if c.isalnum() else "-" for c in assignment.name.lower()).strip("-") or "cnnspec"
        files["README.txt"] = PL_README.format(name=assignment.name, underline="=" * (len(assignment.name) + 46),
                                               qid=qid, python=python, image=image, timeout=timeout).encode()
        for name, data in files.items():
            write_atomic(out / name, data)
    (out / "question" / "tests" / "run.sh").chmod(0o755)
    secret = out / "question" / "tests" / assignment.secret_file
    secret.chmod(0o600)
    return list(files)


def upload_names(assignment) -> list[str]:
    """The files a student hands in: the layer file (and its notebook twin) when the assignment
    grades functions or networks, and each design's .cnn file."""
    names = []
    if assignment.functions or assignment.networks:
        names += [assignment.submission, f"{Path(assignment.submission).stem}.ipynb"]
    names += [d.submission for d in getattr(assignment, "designs", [])]
    return list(dict.fromkeys(names))


def _design_seconds(assignment) -> float:
    """Training time the design problems may take (their time limits)."""
    return sum(d.time_limit for d in getattr(assignment, "designs", []))


def _html(text: str) -> str:
    import html

    return html.escape(text)
