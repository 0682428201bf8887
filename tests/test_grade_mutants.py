"""Diagnosis: every mutant of the catalogue, written as a student would (tests/grade_fixtures/
mutant_*.py appended to the NumPy solution), loses points on its function and is named."""
from __future__ import annotations

import copy
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cnnspec.grade.assignment import load_assignment
from cnnspec.grade.cases import make_cases
from cnnspec.grade.checks import as_outputs, close
from cnnspec.grade.functions import FUNCTIONS
from cnnspec.grade.grader import Grader
from cnnspec.grade.mutants import MUTANTS
from grade_fixtures.support import FIXTURES, header, reference, small_assignment, submission

FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("mutant_*.py"))


def test_the_catalogue_has_at_least_12_mistakes_each_with_a_fixture_and_cites_no_course():
    """The explanations are course-neutral: an assignment adds its own references ([references])."""
    assert len(MUTANTS) >= 12
    assert {header(name)["mutant"] for name in FIXTURE_NAMES} == set(MUTANTS)
    for mutant in MUTANTS.values():
        assert mutant.message.startswith("Your "), mutant.name
        assert not re.search(r"lecture|\bslide \d|\b00\d\b", mutant.message, flags=re.I), mutant.name
        assert mutant.message.endswith("."), mutant.name
        assert all(name in FUNCTIONS for name in mutant.functions)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_cases_reveal_every_mutant(name):
    """Wherever a mistake can be made (a backward cannot ignore the padding of a dout it is given),
    some public case tells it from the reference."""
    ref = reference()
    revealed_somewhere = False
    for function in MUTANTS[name].functions:
        applies = revealed = False
        for case in make_cases(function, 11, 2, "public"):
            expected = as_outputs(getattr(ref, function)(*copy.deepcopy(case.args)))
            for impl in MUTANTS[name].variants[function]:
                try:
                    with np.errstate(all="ignore"):
                        outputs = as_outputs(impl(ref, *copy.deepcopy(case.args)))
                except Exception:
                    continue
                applies = True
                revealed |= not all(close(o, e, 1e-6) for o, e in zip(outputs, expected))
        assert revealed or not applies, (name, function)
        revealed_somewhere |= revealed
    assert revealed_somewhere, name


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every fixture graded by one grader: its cases and reference outputs made once, then two
    submissions at a time (each in its own sandbox; the parent mostly waits on their pipes)."""
    directory = tmp_path_factory.mktemp("mutants")
    assignment = small_assignment(directory / "assignment", list(FUNCTIONS), public_cases=2, hidden_cases=1)
    grader = Grader(load_assignment(assignment), reference=reference())
    for problem in grader.assignment.functions:
        grader.cases(problem)
    paths = [submission(directory, name) for name in FIXTURE_NAMES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(FIXTURE_NAMES, pool.map(grader.grade, paths)))


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_a_mutant_loses_points_on_its_function_and_the_feedback_names_it(graded, fixture):
    info = header(fixture)
    mutant, loses = MUTANTS[info["mutant"]], info["loses"].split()
    result = graded[fixture]
    for name in loses:
        problem = result.problem(name)
        assert problem.score < problem.max_score, name
        assert problem.notes and problem.notes[0].startswith(mutant.message), (name, problem.notes)
    for problem in result.problems:
        # a right backward keeps its points even when its forward is wrong (no penalty twice)
        if problem.name not in loses:
            assert problem.score == problem.max_score, (problem.name, [c.key for c in problem.checks if not c.ok])


def test_an_unknown_mistake_shows_the_first_difference_in_public_cases_only(tmp_path):
    path = tmp_path / "layers.py"
    path.write_text(FIXTURES.joinpath("solution.py").read_text()
                    + "\n\ndef relu_forward(x):\n    return np.abs(x)\n")
    assignment = small_assignment(tmp_path / "a", ["relu_forward"], public_cases=1, hidden_cases=1)
    result = Grader(load_assignment(assignment), reference=reference()).grade(path)
    [reference_check] = [c for c in result.problem("relu_forward").checks if c.key == "reference"]
    public, hidden = reference_check.messages
    assert public.startswith("public case 1 (basic): out does not match the expected values")
    assert "first large difference at index" in public and "got" in public and "expected" in public
    assert hidden.startswith("hidden case 1 (basic)") and "index" not in hidden and "got" not in hidden
    assert result.problem("relu_forward").notes == []


def test_dropout_divided_by_p_fails_the_basic_cases_too(graded):
    """At p = 0.5 dividing by p is dividing by 1 - p: the basic cases draw p elsewhere, so the
    mistake loses the reference check, not only the p = 0.2 edge case."""
    problem = graded["mutant_dropout_divides_by_p"].problem("dropout_backward")
    [reference_check] = [c for c in problem.checks if c.key == "reference"]
    assert not reference_check.ok and all("(basic)" in m for m in reference_check.messages[:1])
    for kind in ("basic", "4-D input", "batch 1"):
        assert all(case.args[1] != 0.5 for case in make_cases("dropout_forward", 3, 4, "hidden") if case.kind == kind)
