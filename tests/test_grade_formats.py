"""Reports held against the formats they are read by: Gradescope's results.json (its documented
fields, tests/schemas/gradescope-results.schema.json), Jenkins xunit's JUnit schema
(tests/schemas/junit-10.xsd), and points that add up."""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnspec.grade import reports
from cnnspec.grade.assignment import load_assignment
from cnnspec.grade.grader import Grader
from cnnspec.grade.results import CheckResult, GradeResult, ProblemResult
from grade_fixtures.support import SOLUTION, reference, small_assignment, student

SCHEMAS = Path(__file__).resolve().parent / "schemas"
FUNCTIONS = ["relu_forward", "relu_backward", "dense_backward", "softmax_cross_entropy"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A few real grades: full marks, nothing implemented, and a mix of right, wrong, crashing
    and printing functions (with markup in what it prints)."""
    directory = tmp_path_factory.mktemp("formats")
    assignment = load_assignment(small_assignment(directory / "a", FUNCTIONS))
    grader = Grader(assignment, reference=reference())
    mixed = directory / "mixed.py"
    mixed.write_text(SOLUTION.read_text() + """
print("<b>bold</b> <script>alert(1)</script> & </pre>")
def relu_backward(dout, x):
    raise NotImplementedError
def relu_forward(x):
    if x.shape[0] == 1:
        raise ValueError("batch of one")
    return np.abs(x)
""")
    return {"solution": grader.grade(SOLUTION), "template": grader.grade(student(directory, "template")),
            "mixed": grader.grade(mixed)}


# -- Gradescope ------------------------------------------------------------------------------------

def test_results_json_follows_gradescopes_documented_format(results):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMAS / "gradescope-results.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for result in results.values():
        data = json.loads(reports.render(result, "gradescope"))
        jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError):          # the schema can fail
        jsonschema.validate({"score": 1, "tests": [{"status": "ok"}]}, schema)


def test_output_formats_are_set_explicitly_so_printed_markup_stays_text(results):
    data = reports.gradescope(results["mixed"])
    assert data["output_format"] == "text" and data["test_output_format"] == "text"
    assert data["test_name_format"] == "text"
    assert all(t["output_format"] == "text" and t["name_format"] == "text" for t in data["tests"])
    assert "<script>alert(1)</script>" in data["output"]         # shown as text, not run as HTML


# -- JUnit ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def junit_schema():
    xmlschema = pytest.importorskip("xmlschema")
    return xmlschema.XMLSchema(str(SCHEMAS / "junit-10.xsd"))


def test_junit_is_valid_against_jenkins_xunit_schema(results, junit_schema):
    for result in results.values():
        junit_schema.validate(reports.junit(result))
    with pytest.raises(Exception):                           # the schema can fail
        junit_schema.validate('<testsuites><testsuite name="x" tests="1"/></testsuites>')


def test_junit_has_real_times_skips_and_failures(results):
    import xml.etree.ElementTree as ET

    root = ET.fromstring(reports.junit(results["mixed"]))
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    times = [float(c.get("time")) for c in cases.values()]
    assert all(t >= 0 for t in times) and sum(t > 0 for t in times) >= len(times) // 2
    relu_backward = [c for (cls, _), c in cases.items() if cls == "relu_backward"]
    assert relu_backward and all(c.find("skipped") is not None and c.find("failure") is None
                                 for c in relu_backward)
    assert "not implemented" in relu_backward[0].find("skipped").get("message")
    relu_forward = [c for (cls, _), c in cases.items() if cls == "relu_forward"]
    assert any(c.find("failure") is not None for c in relu_forward)
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites["relu_backward"].get("skipped") == str(len(relu_backward))
    assert root.get("errors") == "0" and all(s.get("errors") is not None for s in suites.values())
    assert [p.get("name") for p in root.iter("property")][:2] == ["python", "numpy"]


# -- points that add up ----------------------------------------------------------------------------------

def _result(problems) -> GradeResult:
    made = []
    for index, (points, checks) in enumerate(problems):
        weights = [w for w, _, _ in checks]
        made.append(ProblemResult(f"p{index}", "function", points, [
            CheckResult(f"k{k}", f"check {k}", points * w / sum(weights), passed=p, total=t)
            for k, (w, p, t) in enumerate(checks)]))
    return GradeResult("A", "s.py", False, made)


def _check_points(result):
    data = reports.gradescope(result)
    cents = lambda values: sum(Decimal(str(v)) for v in values)          # as Gradescope adds them
    for t in data["tests"]:
        assert Decimal(str(t["score"])) <= Decimal(str(t["max_score"])), t
        assert (t["status"] == "passed") == (t["score"] == t["max_score"]), t
        assert t["score"] == round(t["score"], 2) and t["max_score"] == round(t["max_score"], 2)
    assert cents(t["score"] for t in data["tests"]) == Decimal(str(data["score"])) == Decimal(str(result.score))
    assert cents(t["max_score"] for t in data["tests"]) == Decimal(str(result.max_score))
    assert result.max_score == float(cents(Decimal(str(p.max_score)) for p in result.problems))
    for p in result.problems:
        assert Decimal(str(p.score)) == cents(c[0] / 100 for c in p.cents())
    text = reports.text(result)
    assert f"{reports._fmt(result.score)} / {reports._fmt(result.max_score)}" in text.splitlines()[0]


def test_the_issues_rounding_examples():
    # a check of 0.555... of a point (5 / 9) passed, beside others: shown as passed with its maximum
    result = _result([(5, [(1, 3, 3), (3, 2, 3), (2, 1, 3), (2, 3, 3), (1, 0, 3)]),
                      (10, [(1, 1, 1), (1, 1, 1), (1, 0, 1)])])
    _check_points(result)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 2.5, 3, 4, 5, 6, 6.67, 10, 15, 20]),
                          st.lists(st.tuples(st.integers(1, 3), st.integers(0, 6), st.integers(1, 6))
                                   .map(lambda c: (c[0], min(c[1], c[2]), c[2])), min_size=1, max_size=5)),
                min_size=1, max_size=6))
def test_scores_never_exceed_their_maximum_and_add_up(problems):
    _check_points(_result(problems))
