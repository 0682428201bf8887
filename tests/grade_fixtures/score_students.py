"""Grade every submission of tests/grade_fixtures/students with `grade init`'s assignment (all
functions and the lenet5 network problem, public and hidden cases) and print a table:

    python tests/grade_fixtures/score_students.py [--public] [--json OUT]

Used to record what the set scores before and after a change of the grader's policy."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grade_fixtures.support import student, student_names  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--public", action="store_true")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    from cnnspec.grade.assignment import init_assignment, load_assignment
    from cnnspec.grade.grader import Grader

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        init_assignment(Path(tmp) / "hw")
        grader = Grader(load_assignment(Path(tmp) / "hw"), public_only=args.public)
        for name in args.names or student_names():
            started = time.monotonic()
            result = grader.grade(student(tmp, name))
            seconds = time.monotonic() - started
            rows[name] = {"score": result.score, "max_score": result.max_score, "seconds": round(seconds, 1),
                          "problems": {p.name: p.score for p in result.problems}}
            print(f"{name:<26} {result.score:7.2f} / {result.max_score:g}  "
                  f"({100 * result.score / result.max_score:5.1f} %)  {seconds:6.1f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
