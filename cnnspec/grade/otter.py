"""cnnspec from an Otter-Grader test file: grade once, then one Otter test case per problem.

An exception-based Otter test file (``tests/q1.py`` of an Otter assignment)::

    from otter.test_files import test_case
    from cnnspec.grade.otter import require

    OK_FORMAT = False
    name = "layers"
    points = 12

    @test_case(points=10)
    def test_conv2d_forward():
        require("assignment.toml", "layers.ipynb", "conv2d_forward")

    @test_case(points=2)
    def test_relu_forward():
        require("assignment.toml", "layers.ipynb", "relu_forward")

Each ``require`` passes when the problem earned all its points and otherwise raises an
AssertionError whose message is cnnspec's feedback for that problem (Otter shows it to the
student). The submission is graded once per process, in cnnspec's sandbox, and the result shared
by every test case. Paths are relative to the working directory Otter runs the tests in.
Partial credit in Otter comes from test cases: give a problem several ``require`` calls with
``check=`` (one per check: "shape_dtype", "reference", "numeric", "edge", "inputs"; a design's
"compiles", "params", "accuracy", ...), each its own test case and points.
"""
from __future__ import annotations

import os
from pathlib import Path

_RESULTS: dict = {}


def grade_once(assignment, submission, *, public_only: bool = False):
    """The GradeResult of ``submission`` (graded on the first call, then reused)."""
    from cnnspec.grade import grade

    key = (os.path.realpath(assignment), os.path.realpath(submission), public_only)
    if key not in _RESULTS:
        _RESULTS[key] = grade(Path(assignment), Path(submission), public_only=public_only)
    return _RESULTS[key]


def feedback(result, problem: str) -> str:
    """cnnspec's text report of one problem, then what the report says of the whole submission
    that can explain it (the file did not import, or stopped importing; something refused; not
    graded): "relu_forward is not defined in your file" alone hid a syntax error."""
    from cnnspec.grade import reports

    lines = reports.text(result).splitlines()
    start = next((i for i, line in enumerate(lines) if line.split(" ", 1)[0] == problem), None)
    if start is None:
        return _no_problem(result, problem)
    end = next((i for i in range(start + 1, len(lines))
                if lines[i] and not lines[i].startswith(" ")), len(lines))
    whole = [line for line in reports.header(result)[2:]
             if line.startswith(("Not graded:", "Import:", "Refused:"))]
    return "\n".join(lines[start:end] + whole)


def _no_problem(result, problem: str) -> str:
    """A problem name the assignment lacks, in words, with the nearest one or the list."""
    from cnnspec.errors import nearest

    names = [q.name for q in result.problems]
    guess = nearest(problem, names)
    return (f"no problem `{problem}` in this assignment"
            + (f": did you mean `{guess}`?" if guess else f" (its problems: {', '.join(names)})"))


def score(assignment, submission, problem: str, check: str | None = None, *, public_only: bool = False) -> float:
    """The fraction (0..1) of a problem's points (or of one check's) the submission earned."""
    result = grade_once(assignment, submission, public_only=public_only)
    try:
        p = result.problem(problem)
    except KeyError:
        raise KeyError(_no_problem(result, problem)) from None
    cents = p.cents()
    if check is None:
        top = sum(m for _, m in cents)
        return sum(s for s, _ in cents) / top if top else 0.0
    for c, (s, m) in zip(p.checks, cents):
        if c.key == check:
            return s / m if m else 0.0
    raise KeyError(f"problem `{problem}` has no check `{check}`: {', '.join(c.key for c in p.checks)}")


def require(assignment, submission, problem: str, check: str | None = None, *, public_only: bool = False) -> None:
    """Pass (return None) when the problem -- or its ``check`` -- earned all its points; else
    raise AssertionError with cnnspec's feedback."""
    if score(assignment, submission, problem, check, public_only=public_only) < 1.0:
        result = grade_once(assignment, submission, public_only=public_only)
        raise AssertionError(feedback(result, problem))
