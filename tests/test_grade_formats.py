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


# -- PrairieLearn -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prairielearn_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMAS / "prairielearn-results.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def test_prairielearn_results_follow_the_documented_format(results, prairielearn_schema, tmp_path):
    import jsonschema

    grader = Grader(load_assignment(small_assignment(tmp_path / "a", FUNCTIONS)), reference=reference())
    broken = tmp_path / "broken.py"
    broken.write_text("def relu_forward(x):\n    return x +\n")
    unreadable = grader.grade(broken)
    missing = grader.missing("student", "no layers.py in the folder: expected layers.py; found no files")
    for result in [*results.values(), unreadable, missing]:
        text = reports.render(result, "prairielearn")
        assert len(text.encode()) <= reports.PRAIRIELEARN_MAX_BYTES
        data = json.loads(text)
        jsonschema.validate(data, prairielearn_schema)
        if data["gradable"]:
            assert data["score"] == pytest.approx(result.score / result.max_score)
            # the tests' points add up to the score PrairieLearn records, as on every platform
            points = sum(Decimal(str(t["points"])) for t in data["tests"])
            top = sum(Decimal(str(t["max_points"])) for t in data["tests"])
            assert points == Decimal(str(result.score)) and top == Decimal(str(result.max_score))
    solution = reports.prairielearn(results["solution"])
    assert solution["gradable"] and solution["score"] == 1.0
    assert all(t["points"] == t["max_points"] > 0 for t in solution["tests"])
    mixed = reports.prairielearn(results["mixed"])
    assert 0 < mixed["score"] < 1 and "<script>" in mixed["output"]      # printed text, as text
    # nothing could run: PrairieLearn marks it invalid and keeps the student's attempt
    for result, reason in ((unreadable, "SyntaxError"), (missing, "expected layers.py")):
        data = reports.prairielearn(result)
        assert data["gradable"] is False and reason in data["format_errors"][0]
    with pytest.raises(jsonschema.ValidationError):                      # the schema can fail
        jsonschema.validate({"score": 1.5, "tests": []}, prairielearn_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gradable": True, "tests": [{"name": "x", "points": 1}]}, prairielearn_schema)


def test_prairielearn_results_stay_under_one_megabyte():
    result = GradeResult("a", "s.py", False)
    problem = ProblemResult("f", "function", 1.0)
    check = CheckResult("reference", "matches", 1.0, 0, 1)
    check.messages = ["x" * 400_000] * 4
    problem.checks = [check]
    result.problems = [problem]
    data = reports.prairielearn(result)
    assert len(json.dumps(data).encode()) <= reports.PRAIRIELEARN_MAX_BYTES
    assert "limited to 1 MB" in data["tests"][0]["output"]


def test_prairielearn_question_folder(tmp_path, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    from cnnspec.cli import main as cli_main
    from cnnspec.grade.assignment import init_assignment

    init_assignment(tmp_path / "hw")
    wheel = tmp_path / "cnnspec-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"a wheel")
    out = tmp_path / "pl"
    assert cli_main(["grade", "prairielearn-bundle", str(tmp_path / "hw"), "-o", str(out), "--wheel", str(wheel),
                     "--image", "course/cnn-grader:1"]) == 0
    info = json.loads((out / "question" / "info.json").read_text())
    schema = json.loads((SCHEMAS / "prairielearn-info-question.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(info, schema)
    options = info["externalGradingOptions"]
    assert options["image"] == "course/cnn-grader:1" and options["entrypoint"] == "/grade/tests/run.sh"
    assert info["gradingMethod"] == "External" and options["timeout"] <= 600
    tests = out / "question" / "tests"
    assert {p.name for p in tests.iterdir()} == {"run.sh", "assignment.toml", ".secret", "lenet5.cnn"}
    assert (tests / "run.sh").stat().st_mode & 0o777 == 0o755 and (tests / ".secret").stat().st_mode & 0o077 == 0
    run = (tests / "run.sh").read_text()
    assert "/grade/student --format prairielearn -o /grade/results/results.json" in run
    fallback = json.loads(run.split("<<JSON\n")[1].split("\nJSON")[0].replace("$status", "1"))
    jsonschema.validate(fallback, json.loads((SCHEMAS / "prairielearn-results.schema.json").read_text()))
    html = (out / "question" / "question.html").read_text()
    assert '<pl-file-upload optional-file-names="layers.py,layers.ipynb"></pl-file-upload>' in html
    assert "<pl-external-grader-results></pl-external-grader-results>" in html
    dockerfile = (out / "image" / "Dockerfile").read_text()
    assert f"pip install --no-cache-dir /opt/cnnspec/{wheel.name}" in dockerfile
    assert (out / "image" / wheel.name).read_bytes() == b"a wheel"
    assert not (out / "image" / "warm-up" / ".secret").exists()           # the image holds no secret
    # regenerating keeps the question's uuid (its identity in the course)
    assert cli_main(["grade", "prairielearn-bundle", str(tmp_path / "hw"), "-o", str(out), "--pypi"]) == 0
    assert json.loads((out / "question" / "info.json").read_text())["uuid"] == info["uuid"]
    assert "pip install --no-cache-dir cnnspec==" in (out / "image" / "Dockerfile").read_text()
    assert "secret" in capsys.readouterr().out
