"""``cnnspec grade``: a thin face over cnnspec.grade.

    cnnspec grade init DIR [--force]
    cnnspec grade ASSIGNMENT SUBMISSION [--public] [--format text|json|gradescope|junit|prairielearn] [-o FILE]
    cnnspec grade batch ASSIGNMENT DIR --out gradebook.csv [--feedback DIR] [--workers N] [--resume]
    cnnspec grade gradescope-bundle ASSIGNMENT -o autograder.zip [--wheel PATH | --pypi]
    cnnspec grade student-bundle ASSIGNMENT -o student.zip|DIR
    cnnspec grade prairielearn-bundle ASSIGNMENT -o DIR [--image NAME] [--wheel PATH | --pypi]

``init``, ``batch``, ``gradescope-bundle``, ``student-bundle`` and ``prairielearn-bundle`` are
keywords; anything else after ``grade`` is the ASSIGNMENT (a TOML file or a folder holding
assignment.toml). Grading exits 0 whenever it completed, whatever the score; 1 when the grader
itself could not run (e.g. a bad assignment). Nothing heavy is imported until a handler runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnspec.errors import CnnSpecError

KEYWORDS = ("init", "batch", "gradescope-bundle", "student-bundle", "prairielearn-bundle")
USAGE = """cnnspec grade init DIR [--force]
       cnnspec grade ASSIGNMENT SUBMISSION [--public] [--format text|json|gradescope|junit|prairielearn] [-o FILE]
       cnnspec grade batch ASSIGNMENT DIR --out gradebook.csv [--feedback DIR] [--workers N] [--resume]
       cnnspec grade gradescope-bundle ASSIGNMENT -o autograder.zip [--wheel PATH | --pypi]
       cnnspec grade student-bundle ASSIGNMENT -o student.zip|DIR
       cnnspec grade prairielearn-bundle ASSIGNMENT -o DIR [--image NAME] [--wheel PATH | --pypi]"""
DESCRIPTION = """Grade students' implementations of the layer API (layer-api.md) against cnnspec's
reference, in a sandbox. `grade init` writes an assignment to edit; `grade ASSIGNMENT FILE` grades
one submission (students: add --public to run the public cases at home); `grade batch` grades a
folder into a CSV gradebook; `grade gradescope-bundle` makes Gradescope's autograder zip;
`grade student-bundle` what students need to run --public at home; `grade prairielearn-bundle`
a PrairieLearn question (info.json, question.html, tests/) and its grading image."""


# option -> the forms it belongs to ("grade" is grading one submission)
OPTIONS = {"public": ("grade", "batch"), "format": ("grade",),
           "output": ("grade", "gradescope-bundle", "student-bundle", "prairielearn-bundle"),
           "out": ("batch",), "feedback": ("batch",), "workers": ("batch",), "resume": ("batch",),
           "wheel": ("gradescope-bundle", "prairielearn-bundle"), "pypi": ("gradescope-bundle", "prairielearn-bundle"),
           "image": ("prairielearn-bundle",), "force": ("init",)}
POSITIONALS = {"init": ("DIR",), "batch": ("ASSIGNMENT", "DIR"), "gradescope-bundle": ("ASSIGNMENT",),
               "student-bundle": ("ASSIGNMENT",), "prairielearn-bundle": ("ASSIGNMENT",),
               "grade": ("ASSIGNMENT", "SUBMISSION")}


def register(subparsers) -> None:
    p = subparsers.add_parser("grade", help="grade student layer implementations in a sandbox",
                              usage=USAGE, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="*", metavar="...", help="init DIR | ASSIGNMENT SUBMISSION | "
                   "batch ASSIGNMENT DIR | gradescope-bundle ASSIGNMENT | student-bundle ASSIGNMENT | "
                   "prairielearn-bundle ASSIGNMENT")
    p.add_argument("--public", action="store_true", help="run the public cases only (no secret needed)")
    p.add_argument("--format", choices=("text", "json", "gradescope", "junit", "prairielearn"), default=None,
                   help="report format of one submission (default text)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report (or the zip) here, atomically")
    p.add_argument("--out", metavar="CSV", help="batch: the gradebook to write")
    p.add_argument("--feedback", metavar="DIR", help="batch: write one text report per student here")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="batch: submissions graded at once")
    p.add_argument("--resume", action="store_true", help="batch: keep the results of unchanged "
                   "submissions from an earlier, interrupted run (saved in CSV.d/)")
    p.add_argument("--wheel", metavar="PATH", help="bundle: this cnnspec wheel (default: one built "
                   "from the source checkout)")
    p.add_argument("--pypi", action="store_true", help="bundle: install cnnspec from PyPI instead")
    p.add_argument("--image", metavar="NAME", help="prairielearn-bundle: the grading image's Docker Hub name "
                   "written in info.json (default cnnspec-grader)")
    p.add_argument("--force", action="store_true", help="init: overwrite existing files")
    p.set_defaults(func=main, grade_parser=p)


def _stop_on_sigterm() -> None:
    """SIGTERM (what `timeout`, CI and systemd send) ends grading as Ctrl-C does: cleanly, with
    the worker processes and every sandbox stopped before this process exits."""
    import signal
    import threading

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(a) -> int:
    _stop_on_sigterm()
    words = list(a.words)
    form = words.pop(0) if words and words[0] in KEYWORDS else "grade"
    wanted = POSITIONALS[form]
    if len(words) != len(wanted):
        a.grade_parser.error(f"`cnnspec grade{'' if form == 'grade' else ' ' + form}` takes "
                             f"{' '.join(wanted)}; received {' '.join(words) or 'nothing'}")
    for option, forms in OPTIONS.items():
        if getattr(a, option) not in (None, False) and form not in forms:
            a.grade_parser.error(f"--{option} applies to `cnnspec grade {' / '.join(forms)}` only")
    return {"init": _init, "batch": _batch, "gradescope-bundle": _bundle, "student-bundle": _student_bundle,
            "prairielearn-bundle": _prairielearn_bundle, "grade": _grade}[form](a, *words)


def _init(a, directory) -> int:
    from cnnspec.grade.assignment import init_assignment

    for path in init_assignment(directory, force=a.force):
        print(f"wrote {path}")
    print(f"edit {Path(directory) / 'assignment.toml'}; then give students what "
          f"`cnnspec grade student-bundle {Path(directory) / 'assignment.toml'} -o student.zip` writes "
          f"(never .secret)")
    return 0


def _grade(a, assignment_path, submission_path) -> int:
    from cnnspec.grade.assignment import load_assignment

    assignment = load_assignment(assignment_path)
    submission = Path(submission_path)
    if not submission.exists():
        raise CnnSpecError("no such submission file or folder", file=str(submission))
    # a folder without the expected files is a report, not an error: on Gradescope the student
    # reads it (which file was expected, which were found); grading itself completed
    result = _grader(assignment, a.public).grade(submission, display_name=None if submission.is_dir()
                                                 else submission.name)
    return _report(a, result)


def _report(a, result) -> int:
    from cnnspec.grade import reports

    report = reports.render(result, a.format or "text")
    if a.output:
        reports.write_atomic(a.output, report)
    else:
        sys.stdout.write(report)
    return 0


def _grader(assignment, public_only):
    from cnnspec.grade.grader import Grader

    try:
        import cnnspec.api as reference
    except ImportError as exc:
        raise CnnSpecError(f"the reference implementation cnnspec.api cannot be imported: {exc}") from None
    return Grader(assignment, reference=reference, public_only=public_only)


def _batch(a, assignment_path, directory) -> int:
    from cnnspec.grade.batch import run_batch

    def progress(student, result):
        score = f"{result['score']:g} / {result['max_score']:g}" if result else "no submission"
        print(f"{student}: {score}", file=sys.stderr, flush=True)

    if a.out is None:
        a.grade_parser.error("`cnnspec grade batch` needs --out CSV")
    workers = 1 if a.workers is None else a.workers
    if workers < 1:
        raise CnnSpecError(f"--workers must be at least 1; received {workers}")
    summary = run_batch(assignment_path, directory, a.out, feedback=a.feedback, workers=workers,
                        resume=a.resume, public_only=a.public, progress=progress)
    print(f"graded {summary['graded']}, reused {summary['reused']}, missing {summary['missing']} "
          f"of {summary['students']} students in {summary['seconds']:.1f} s; wrote {a.out}")
    return 0


def _bundle(a, assignment_path) -> int:
    from cnnspec.grade.bundle import make_bundle

    if a.output is None:
        a.grade_parser.error("`cnnspec grade gradescope-bundle` needs -o ZIP")
    if a.wheel and a.pypi:
        a.grade_parser.error("give --wheel or --pypi, not both")
    names = make_bundle(assignment_path, a.output, wheel=a.wheel, pypi=a.pypi)
    print(f"wrote {a.output}: {', '.join(names)}")
    print("upload it to Gradescope only: it holds the assignment's secret")
    return 0


def _student_bundle(a, assignment_path) -> int:
    from cnnspec.grade.bundle import make_student_bundle

    if a.output is None:
        a.grade_parser.error("`cnnspec grade student-bundle` needs -o student.zip (or a directory)")
    names = make_student_bundle(assignment_path, a.output)
    print(f"wrote {a.output}: {', '.join(names)}")
    print("give it to students: it holds no secret")
    return 0


def _prairielearn_bundle(a, assignment_path) -> int:
    from cnnspec.grade.bundle import make_prairielearn_bundle

    if a.output is None:
        a.grade_parser.error("`cnnspec grade prairielearn-bundle` needs -o DIR")
    if a.wheel and a.pypi:
        a.grade_parser.error("give --wheel or --pypi, not both")
    names = make_prairielearn_bundle(assignment_path, a.output, image=a.image or "cnnspec-grader",
                                     wheel=a.wheel, pypi=a.pypi)
    print(f"wrote {a.output}: {', '.join(names)}")
    print(f"copy {Path(a.output) / 'question'} into your course's questions/, build and push the image "
          f"(see {Path(a.output) / 'README.txt'}); question/tests/ holds the assignment's secret")
    return 0
