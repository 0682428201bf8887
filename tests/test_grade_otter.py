"""Otter-Grader users call cnnspec from a test file: tests/grade_fixtures/otter/q_layers.py, in
Otter's exception-based format, run here as Otter runs it -- its test cases called, an
AssertionError failing a case with its message shown to the student. With otter-grader
installed its own runner is used; otherwise a stand-in for ``otter.test_files.test_case`` with
the same signature (otter-grader pulls in Jupyter, Sphinx and Playwright: too heavy for CI)."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from cnnspec.grade import otter
from grade_fixtures.support import SOLUTION, small_assignment

TEST_FILE = Path(__file__).resolve().parent / "grade_fixtures" / "otter" / "q_layers.py"


def run_with_stand_in(path: Path) -> tuple[float, list]:
    """Otter's exception-based semantics: each @test_case function is called; it passes unless it
    raises; a file's score is the points of the passing cases."""
    cases = []

    class test_case:                                  # noqa: N801 -- otter.test_files.test_case
        def __init__(self, name=None, points=None, hidden=False, success_message=None, failure_message=None):
            self.name, self.points, self.hidden = name, points, hidden

        def __call__(self, func):
            self.func = func
            self.name = self.name or func.__name__
            cases.append(self)
            return self

    module = types.ModuleType("otter.test_files")
    module.test_case = test_case
    saved = {k: sys.modules.get(k) for k in ("otter", "otter.test_files")}
    sys.modules["otter"] = types.ModuleType("otter")
    sys.modules["otter.test_files"] = module
    try:
        spec = importlib.util.spec_from_file_location("q_layers", path)
        test_file = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(test_file)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    assert test_file.OK_FORMAT is False and isinstance(test_file.points, int)
    assert sum(c.points for c in cases) == test_file.points
    outcomes = []
    for case in cases:
        try:
            case.func()
            outcomes.append((case.name, case.points, True, ""))
        except Exception as exc:                      # noqa: BLE001 -- Otter fails the case on any exception
            outcomes.append((case.name, 0, False, str(exc)))
    return sum(points for _, points, _, _ in outcomes), outcomes


def notebook(code: str) -> str:
    return json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# hw"]},
                                 {"cell_type": "code", "metadata": {}, "execution_count": 1, "outputs": [],
                                  "source": code.splitlines(keepends=True)}],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def test_an_otter_test_file_scores_with_cnnspec(tmp_path, monkeypatch):
    assignment = small_assignment(tmp_path / "hw", ["relu_forward", "dense_backward"])
    wrong = SOLUTION.read_text() + ("\n\ndef dense_backward(dout, x, w, b):\n"      # db: mean, not sum
                                    "    return dout @ w.T, x.T @ dout, (dout.mean(axis=0) if b is not None\n"
                                    "                                    else None)\n")
    submission = tmp_path / "layers.ipynb"
    submission.write_text(notebook("%matplotlib inline\n" + wrong))
    monkeypatch.setenv("CNNSPEC_ASSIGNMENT", str(assignment))
    monkeypatch.setenv("CNNSPEC_SUBMISSION", str(submission))
    otter._RESULTS.clear()
    total, outcomes = run_with_stand_in(TEST_FILE)
    by_name = {name: (points, passed, message) for name, points, passed, message in outcomes}
    assert by_name["test_relu_forward"][:2] == (2, True)
    points, passed, message = by_name["test_dense_backward"]
    assert not passed and message.startswith("dense_backward") and "db" in message      # cnnspec's feedback
    assert by_name["test_dense_backward_leaves_its_inputs_alone"][1] is True            # that check passed
    assert total == 3
    assert len(otter._RESULTS) == 1                     # graded once for the whole file
    assert otter.score(assignment, submission, "dense_backward") < 1
    assert otter.score(assignment, submission, "relu_forward") == 1.0
    with pytest.raises(KeyError, match="has no check `speed`"):
        otter.score(assignment, submission, "relu_forward", "speed")
    with pytest.raises(KeyError, match="no problem `relu_forwrd` in this assignment: did you mean `relu_forward`"):
        otter.require(assignment, submission, "relu_forwrd")         # a bare KeyError('relu_forwrd') before


def test_otter_feedback_tells_why_a_function_is_missing(tmp_path):
    """A file with a syntax error: Otter's message for a problem says the function is not defined
    and also why (the report's import line, which the problem's block alone left out)."""
    assignment = small_assignment(tmp_path / "hw", ["relu_forward"])
    submission = tmp_path / "layers.py"
    submission.write_text("import numpy as np\n\n\ndef relu_forward(x)\n    return np.maximum(x, 0)\n")
    otter._RESULTS.clear()
    with pytest.raises(AssertionError) as info:
        otter.require(assignment, submission, "relu_forward")
    message = str(info.value)
    assert message.startswith("relu_forward") and "not defined" in message, message
    assert "Import:" in message and "SyntaxError" in message and "line 4" in message, message
