"""The functions of layer-api.md's "Encoder-decoders and generative networks" as homework:
`cnnspec grade init --functions` writes an assignment of them; the reference graded as a
submission, and a NumPy solution written as a student would, get full marks; submissions that
compute nothing get (almost) nothing. (Each mistake's mutant is caught and named in
tests/test_grade_mutants.py, with the others.)"""
from __future__ import annotations

import ast

import pytest

from cnnspec.cli import main
from cnnspec.errors import CnnSpecError
from cnnspec.grade import reports
from cnnspec.grade.assignment import DEFAULT_POINTS, POINTS, init_assignment, load_assignment, resolve_functions
from cnnspec.grade.functions import FUNCTIONS, GROUPS
from cnnspec.grade.grader import Grader
from grade_fixtures.support import NOTHING, SOLUTION, reference, student

GENERATIVE = list(GROUPS["generative"])
DO_NOTHING = ["nothing_identity", "nothing_pass", "template", *NOTHING]


@pytest.fixture(scope="module")
def assignment(tmp_path_factory):
    """`grade init --functions generative`, one public and one hidden basic case per function
    (and every edge case), no network problem."""
    directory = tmp_path_factory.mktemp("generative")
    init_assignment(directory, functions="generative")
    toml = directory / "assignment.toml"
    text = toml.read_text().split("[[networks]]")[0]
    toml.write_text(text.replace("public_cases = 3", "public_cases = 1").replace("hidden_cases = 3", "hidden_cases = 1"))
    return load_assignment(directory)


@pytest.fixture(scope="module")
def grader(assignment):
    return Grader(assignment, reference=reference())


def test_init_writes_the_groups_asked_for(tmp_path, capsys):
    a = load_assignment(init_assignment(tmp_path / "both", functions="core,generative")[0])
    assert [p.name for p in a.functions] == list(GROUPS["core"]) + GENERATIVE
    assert [p.points for p in a.functions] == [POINTS[p.name] for p in a.functions]
    assert sum(POINTS[n] for n in GENERATIVE) == 44
    template = (tmp_path / "both" / "layers.py").read_text()
    defined = [f.name for f in ast.parse(template).body if isinstance(f, ast.FunctionDef)]
    assert defined == list(GROUPS["core"]) + GENERATIVE
    # the default stays the classifiers' layers
    default = load_assignment(init_assignment(tmp_path / "default")[0])
    assert [p.name for p in default.functions] == list(DEFAULT_POINTS) == list(GROUPS["core"])
    # the command line
    assert main(["grade", "init", str(tmp_path / "cli"), "--functions", "generative,relu_forward"]) == 0
    names = [p.name for p in load_assignment(tmp_path / "cli").functions]
    assert names == GENERATIVE + ["relu_forward"]
    assert "--functions core,generative" in (tmp_path / "cli" / "assignment.toml").read_text()
    assert main(["grade", "init", str(tmp_path / "bad"), "--functions", "generativ"]) == 1
    err = capsys.readouterr().err
    assert "unknown function or group `generativ`" in err and "did you mean `generative`?" in err
    assert "Traceback" not in err and not (tmp_path / "bad" / "assignment.toml").exists()


def test_resolve_functions():
    assert resolve_functions("bce_loss, vae_sample_forward,bce_loss") == ["bce_loss", "vae_sample_forward"]
    assert resolve_functions(["generative"]) == GENERATIVE
    with pytest.raises(CnnSpecError, match="no function to grade"):
        resolve_functions("")


def test_the_template_states_each_convention():
    docs = {name: FUNCTIONS[name].doc for name in GENERATIVE}
    assert "(C, F, KH, KW)" in docs["conv_transpose2d_forward"] and "CROPPED" in docs["conv_transpose2d_forward"]
    assert "align_corners=False" in docs["upsample2d_forward"] and "floor" in docs["upsample2d_forward"]
    assert "-100" in docs["bce_loss"] and "1e-12" in docs["bce_loss"]
    assert "1e4" in docs["sigmoid_bce"]
    assert "exp(logvar / 2)" in docs["vae_sample_forward"] and "AVERAGED" in docs["vae_sample_forward"]


def test_the_reference_graded_as_a_submission_gets_full_marks(assignment, tmp_path):
    shim = tmp_path / "reference.py"
    shim.write_text("from cnnspec.api import *\n")
    assignment.limits.time_per_case = 300          # time to compile the kernels if the cache is cold
    result = Grader(assignment, reference=reference()).grade(shim, trusted=True)
    assert result.score == result.max_score == 44, reports.text(result)


def test_a_numpy_solution_gets_full_marks(grader):
    result = grader.grade(SOLUTION, display_name="solution.py")
    assert result.score == result.max_score, reports.text(result)
    for p in result.problems:
        assert all(c.ok for c in p.checks) and not p.notes, p.name
        numeric = [c for c in p.checks if c.key == "numeric"]
        assert bool(numeric) == (FUNCTIONS[p.name].kind != "forward")


@pytest.mark.parametrize("name", DO_NOTHING)
def test_a_submission_that_computes_nothing_scores_under_2_percent(grader, tmp_path, name):
    result = grader.grade(student(tmp_path, name))
    assert result.score < 0.02 * result.max_score, reports.text(result)
