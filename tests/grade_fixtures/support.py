"""Helpers shared by tests/test_grade*.py: building submissions and small assignments."""
from __future__ import annotations

import re
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent
SOLUTION = FIXTURES / "solution.py"


def reference():
    """The grader's reference: cnnspec.api."""
    import cnnspec.api

    return cnnspec.api


def submission(directory: Path, fixture: str, replacements: dict | None = None) -> Path:
    """solution.py with the fixture appended (or prepended, when the fixture says so), the
    fixture's __PLACEHOLDERS__ replaced; written as directory/<fixture>.py."""
    text = (FIXTURES / f"{fixture}.py").read_text()
    for key, value in (replacements or {}).items():
        text = text.replace(key, str(value))
    solution = SOLUTION.read_text()
    body = text + "\n" + solution if text.startswith("# Prepended") else solution + "\n\n" + text
    path = Path(directory) / f"{fixture}.py"
    path.write_text(body)
    return path


def header(fixture: str) -> dict:
    """The `# key: value` lines at the top of a fixture (mutant name, functions it loses on)."""
    text = (FIXTURES / f"{fixture}.py").read_text()
    return dict(re.findall(r"^# (\w+): (.*)$", text, flags=re.M))


def small_assignment(directory: Path, functions, *, public_cases: int = 1, hidden_cases: int = 1,
                     limits: dict | None = None, extra: str = "") -> Path:
    """An assignment.toml (and its secret) grading only ``functions``: fast tests."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["[assignment]", 'name = "test"', "public_seed = 11", "",
             "[defaults]", f"public_cases = {public_cases}", f"hidden_cases = {hidden_cases}", "",
             "[limits]"]
    lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in (limits or {}).items()]
    for name in functions:
        lines += ["", f"[functions.{name}]"]
    path = directory / "assignment.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    (directory / ".secret").write_text("a test secret\n")
    return path


STUDENTS = FIXTURES / "students"
# the do-nothing styles of students/nothing.py: the body of its _fill(shape, like)
NOTHING = {
    "nothing_zeros": "return np.zeros(shape, dtype=like.dtype)",
    "nothing_ones": "return np.ones(shape, dtype=like.dtype)",
    "nothing_random": "return np.random.standard_normal(shape).astype(like.dtype)",
    "nothing_nan": "return np.full(shape, np.nan, dtype=like.dtype)",
    "nothing_inf": "return np.where(np.arange(np.prod(shape)).reshape(shape) % 2, np.inf, "
                   "-np.inf).astype(like.dtype)",
}


def student(directory: Path, name: str) -> Path:
    """The submission ``name`` of tests/grade_fixtures/students, written as directory/<name>.py:
    a file as it is; a ``bug_*`` file after its ``# base:`` solution (its functions replace the
    base's); a ``nothing_*`` style of nothing.py; ``template``, `grade init`'s layers.py."""
    if name == "template":
        from cnnspec.grade.functions import FUNCTIONS, template

        text = template(list(FUNCTIONS))
    elif name in NOTHING:
        text = (STUDENTS / "nothing.py").read_text().replace(
            "return np.zeros(shape, dtype=like.dtype)", NOTHING[name])
    else:
        text = (STUDENTS / f"{name}.py").read_text()
        base = re.search(r"^# base: (\w+)$", text, flags=re.M)
        if base:
            text = (STUDENTS / f"{base.group(1)}.py").read_text() + "\n\n" + text
    path = Path(directory) / f"{name}.py"
    path.write_text(text)
    return path


def student_names() -> list:
    """Every submission of tests/grade_fixtures/students, the do-nothing styles included."""
    files = sorted(p.stem for p in STUDENTS.glob("*.py") if p.stem != "nothing")
    return files + sorted(NOTHING) + ["template"]
