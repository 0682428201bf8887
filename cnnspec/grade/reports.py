"""Reports of a GradeResult: text for people, Gradescope's results.json (also ``--format json``,
with the full details added), JUnit XML for CI; and atomic file writing.

What a submission printed appears only in clearly marked, truncated sections, each line behind
"| ", so that printed text cannot pass for the grader's own lines.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from cnnspec.grade.results import GradeResult

# control characters, and what XML 1.0 cannot hold (lone surrogates, U+FFFE, U+FFFF)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    """Text without control characters (escape sequences in a submission's output, NUL bytes)."""
    return _CONTROL.sub("?", str(text))


def quoted(text: str, max_lines: int = 40, max_width: int = 160) -> str:
    """A submission's output, each line behind "| ", cut to ``max_lines`` of ``max_width``."""
    lines = clean(text).splitlines()
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"[... {len(lines) - max_lines} more lines]"]
    return "\n".join("  | " + (line if len(line) <= max_width else line[:max_width] + " [...]")
                     for line in lines)


def _fmt(x: float) -> str:
    """2.5, 10, 0.33: at most two decimals, no trailing zeros."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def environment(result: GradeResult) -> str:
    """"Python 3.10.12, NumPy 1.26.4": what the submission ran with."""
    env = result.environment
    return f"Python {env.get('python', '?')}, NumPy {env.get('numpy', '?')}"


def header(result: GradeResult) -> list[str]:
    cases = "public cases only" if result.public_only else "public and hidden cases"
    lines = [f"{result.assignment} -- {clean(result.submission)}: {_fmt(result.score)} / "
             f"{_fmt(result.max_score)} ({cases}, {result.seconds:.1f} s)",
             f"Graded with {environment(result)}"]
    if result.missing:
        lines.append(f"Not graded: {clean(result.missing)}")
    for notice in result.notices:
        lines.append(f"Read: {clean(notice)}")
    if result.import_error:
        lines.append(f"Import: {clean(result.import_error)}")
    for v in result.violations:
        lines.append(f"Refused: {clean(v)}")
    return lines


def _wrapped(text: str, indent: int) -> list[str]:
    """``text`` wrapped at 100 columns, each of its lines apart (a located error's source line and
    caret stay as they are)."""
    out = []
    for line in str(text).split("\n"):
        out += textwrap.wrap(clean(line), width=100, initial_indent=" " * indent,
                             subsequent_indent=" " * (indent + 2), break_on_hyphens=False) or [""]
    return out


def text(result: GradeResult) -> str:
    """The readable report: per problem, its points, what passed, what failed and why."""
    lines = header(result) + [""]
    width = max([len(p.name) for p in result.problems] + [20])
    title = max([len(c.title) for p in result.problems for c in p.checks] + [20])
    for p in result.problems:
        cents = p.cents()
        lines.append(f"{p.name:<{width}}  {_fmt(p.score):>6} / {_fmt(p.max_cents / 100)}")
        for note in p.notes:
            lines += _wrapped(note, 4)
        if not p.notes and all(c.ok for c in p.checks):
            total = max(c.total for c in p.checks) if p.checks else 0
            lines.append(f"    all {len(p.checks)} checks passed ({total} case{'s' * (total != 1)})")
            continue
        elif p.notes and not any(c.passed or c.messages for c in p.checks):
            continue                   # nothing passed, for the reasons in the notes
        for c, (score, top) in zip(p.checks, cents):
            mark = "PASS" if c.ok else "SKIP" if c.skipped else "PART" if c.credit else "FAIL"
            lines.append(f"    {mark} {c.title:<{title}}  {_fmt(score / 100):>5} / {_fmt(top / 100):<5} "
                         f"{c.passed}/{c.total}")
            for m in c.messages:
                lines += _wrapped(m, 9)
            if c.dropped:
                lines.append(f"         ... and {c.dropped} more")
    if result.output.strip():
        lines += ["", "What your code printed:", quoted(result.output)]
    return "\n".join(lines) + "\n"


FORMAT = "text"          # Gradescope renders every string as plain text: printed markup stays text


def gradescope(result: GradeResult, details: bool = False) -> dict:
    """Gradescope's results.json: one test per check of each problem, scored in whole hundredths
    (ProblemResult.cents: they add up to the total, and "passed" is full marks)."""
    tests = []
    for i, p in enumerate(result.problems, 1):
        for j, (c, (score, top)) in enumerate(zip(p.checks, p.cents()), 1):
            output = [] if c.ok else [clean(n) for n in p.notes]
            output += [clean(m) for m in c.messages]
            if c.dropped:
                output.append(f"... and {c.dropped} more")
            tests.append({"name": f"{p.name}: {c.title}", "name_format": FORMAT, "number": f"{i}.{j}",
                          "score": score / 100, "max_score": top / 100,
                          "status": "passed" if c.ok else "failed",
                          "output": "\n".join(output) or f"{c.passed}/{c.total} cases passed",
                          "output_format": FORMAT, "visibility": "visible"})
    summary = "\n".join(header(result))
    if result.output.strip():
        summary += "\n\nWhat your code printed:\n" + quoted(result.output)
    data = {"score": result.score, "execution_time": round(result.seconds, 2), "output": summary,
            "output_format": FORMAT, "test_output_format": FORMAT, "test_name_format": FORMAT,
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}
    if details:
        data["cnnspec"] = result.to_dict()
    return data


def junit(result: GradeResult) -> str:
    """JUnit XML valid against Jenkins xunit's junit-10.xsd: a test suite per problem (its
    properties: the environment and the points), a test case per check with the time it took;
    a check of a function that is not implemented is <skipped>."""
    suites = ET.Element("testsuites", name=result.assignment, time=f"{result.seconds:.3f}")
    failures_total = tests_total = 0
    env = {"python": result.environment.get("python", "?"), "numpy": result.environment.get("numpy", "?")}
    for index, p in enumerate(result.problems):
        cents = p.cents()
        failures = sum(not c.ok and not c.skipped for c in p.checks)
        skipped = sum(bool(c.skipped) for c in p.checks)
        suite = ET.SubElement(suites, "testsuite", name=p.name, tests=str(len(p.checks)),
                              failures=str(failures), errors="0", skipped=str(skipped),
                              time=f"{p.seconds:.3f}")
        properties = ET.SubElement(suite, "properties")
        for key, value in (*env.items(), ("score", _fmt(p.score)), ("max_score", _fmt(p.max_cents / 100))):
            ET.SubElement(properties, "property", name=key, value=str(value))
        for c, (score, top) in zip(p.checks, cents):
            case = ET.SubElement(suite, "testcase", classname=p.name, name=c.title, time=f"{c.seconds:.6f}")
            summary = f"{_fmt(score / 100)}/{_fmt(top / 100)} points, {c.passed}/{c.total} cases passed"
            if c.skipped:
                ET.SubElement(case, "skipped", message=clean(c.skipped))
            elif not c.ok:
                failure = ET.SubElement(case, "failure", message=summary)
                failure.text = clean("\n".join(p.notes + c.messages))
        if index == 0 and (result.output.strip() or result.violations or result.import_error):
            out = ET.SubElement(suite, "system-out")      # (testsuites may not hold one)
            out.text = clean("\n".join(header(result)) + "\n" + result.output)
        failures_total += failures
        tests_total += len(p.checks)
    suites.set("tests", str(tests_total))
    suites.set("failures", str(failures_total))
    suites.set("errors", "0")
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


PRAIRIELEARN_MAX_BYTES = 1_000_000     # "this file should be limited to 1 MB"


def prairielearn(result: GradeResult) -> dict:
    """PrairieLearn's external-grader ``results.json``: ``gradable``, ``score`` in [0, 1],
    ``message``, ``output`` and one test per check (``name``, ``description``, ``points``,
    ``max_points``, ``message``, ``output``), scored in whole hundredths as every report is.

    A submission without a file to grade, or one that cannot be read or compiled (a syntax
    error, a malformed notebook), is ``gradable: false`` with ``format_errors``: PrairieLearn
    then shows it as invalid and does not count the attempt."""
    tests = []
    for p in result.problems:
        for c, (score, top) in zip(p.checks, p.cents()):
            notes = [] if c.ok else [clean(n) for n in p.notes]
            messages = [clean(m) for m in c.messages] + ([f"... and {c.dropped} more"] if c.dropped else [])
            tests.append({"name": f"{p.name}: {c.title}", "description": f"{c.passed}/{c.total} cases passed",
                          "points": score / 100, "max_points": top / 100,
                          "message": "\n".join(notes) or ("passed" if c.ok else "failed"),
                          "output": "\n".join(messages)})
    summary = "\n".join(header(result))
    data = {"gradable": True, "score": round(result.score / result.max_score, 6) if result.max_score else 0.0,
            "message": summary, "output": quoted(result.output) if result.output.strip() else "",
            "tests": tests}
    if result.missing or result.unreadable:
        data = {"gradable": False, "score": 0.0, "message": summary, "output": data["output"],
                "format_errors": [clean(result.missing or result.import_error or "the file could not be read")],
                "tests": tests}
    text = json.dumps(data)
    while len(text.encode()) > PRAIRIELEARN_MAX_BYTES and any(t["output"] for t in data["tests"]):
        longest = max(data["tests"], key=lambda t: len(t["output"]))
        half = longest["output"][:len(longest["output"]) // 2]
        longest["output"] = half + "\n[... cut: results.json is limited to 1 MB]"
        text = json.dumps(data)
    return data


FORMATS = ("text", "json", "gradescope", "junit", "prairielearn")


def render(result: GradeResult, fmt: str) -> str:
    if fmt == "text":
        return text(result)
    if fmt == "junit":
        return junit(result)
    if fmt == "prairielearn":
        return json.dumps(prairielearn(result), indent=2) + "\n"
    return json.dumps(gradescope(result, details=(fmt == "json")), indent=2) + "\n"


def write_atomic(path, data) -> None:
    """Write a file so that readers see the old or the new content, never a part: a temporary
    file in the same directory, flushed, then renamed over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
