"""``cnnspec grade``: a thin face over cnnspec.grade.

    cnnspec grade init DIR [--functions LIST] [--force]
    cnnspec grade ASSIGNMENT SUBMISSION [--public] [--format text|json|gradescope|junit|prairielearn] [-o FILE]
    cnnspec grade batch ASSIGNMENT DIR --out gradebook.csv [--feedback DIR] [--workers N] [--resume]
    cnnspec grade gradescope-bundle ASSIGNMENT -o autograder.zip [--wheel PATH | --pypi]
    cnnspec grade student-bundle ASSIGNMENT -o student.zip|DIR
    cnnspec grade prairielearn-bundle ASSIGNMENT -o DIR [--image NAME] [--wheel PATH | --pypi]
    cnnspec grade exercise make TEMPLATE --students ROSTER.csv -o DIR [--seed N] [--moodle FILE]
    cnnspec grade exercise check DIR ANSWERS [--format text|json|csv] [-o FILE]

``init``, ``batch``, ``gradescope-bundle``, ``student-bundle``, ``prairielearn-bundle`` and
``exercise`` are keywords; anything else after ``grade`` is the ASSIGNMENT (a TOML file or a folder holding
assignment.toml). Grading exits 0 whenever it completed, whatever the score; 1 when the grader
itself could not run (e.g. a bad assignment). Nothing heavy is imported until a handler runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnspec.errors import CnnSpecError

KEYWORDS = ("init", "batch", "gradescope-bundle", "student-bundle", "prairielearn-bundle", "exercise")
USAGE = """cnnspec grade init DIR [--functions LIST] [--force]
       cnnspec grade ASSIGNMENT SUBMISSION [--public] [--format text|json|gradescope|junit|prairielearn] [-o FILE]
       cnnspec grade batch ASSIGNMENT DIR --out gradebook.csv [--feedback DIR] [--workers N] [--resume]
       cnnspec grade gradescope-bundle ASSIGNMENT -o autograder.zip [--wheel PATH | --pypi]
       cnnspec grade student-bundle ASSIGNMENT -o student.zip|DIR
       cnnspec grade prairielearn-bundle ASSIGNMENT -o DIR [--image NAME] [--wheel PATH | --pypi]
       cnnspec grade exercise make TEMPLATE --students ROSTER.csv -o DIR [--seed N] [--moodle FILE]
       cnnspec grade exercise check DIR ANSWERS [--format text|json|csv] [-o FILE]"""
DESCRIPTION = """Grade students' implementations of the layer API (layer-api.md) against cnnspec's
reference, in a sandbox, and networks students design (.cnn files, trained and scored). `grade init`
writes an assignment to edit; `grade ASSIGNMENT FILE_OR_FOLDER` grades one submission (a .py file,
a notebook, a design's .cnn file or a student's folder; students: add --public to run the public
cases at home); `grade batch` grades a
folder into a CSV gradebook; `grade gradescope-bundle` makes Gradescope's autograder zip;
`grade student-bundle` what students need to run --public at home; `grade prairielearn-bundle`
a PrairieLearn question (info.json, question.html, tests/) and its grading image; `grade exercise
make` a network per student with questions on it (sheets, answer key, Moodle XML), `grade
exercise check` their answers."""


# option -> the forms it belongs to ("grade" is grading one submission)
OPTIONS = {"public": ("grade", "batch"), "format": ("grade", "exercise check"),
           "output": ("grade", "gradescope-bundle", "student-bundle", "prairielearn-bundle", "exercise make",
                      "exercise check"),
           "students": ("exercise make",), "seed": ("exercise make",), "moodle": ("exercise make",),
           "out": ("batch",), "feedback": ("batch",), "workers": ("batch",), "resume": ("batch",),
           "wheel": ("gradescope-bundle", "prairielearn-bundle"), "pypi": ("gradescope-bundle", "prairielearn-bundle"),
           "image": ("prairielearn-bundle",), "force": ("init",), "functions": ("init",)}
POSITIONALS = {"init": ("DIR",), "batch": ("ASSIGNMENT", "DIR"), "gradescope-bundle": ("ASSIGNMENT",),
               "student-bundle": ("ASSIGNMENT",), "prairielearn-bundle": ("ASSIGNMENT",),
               "exercise make": ("TEMPLATE",), "exercise check": ("DIR", "ANSWERS"),
               "grade": ("ASSIGNMENT", "SUBMISSION")}


def register(subparsers) -> None:
    p = subparsers.add_parser("grade", help="grade student layer implementations in a sandbox",
                              usage=USAGE, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="*", metavar="...", help="init DIR | ASSIGNMENT SUBMISSION | "
                   "batch ASSIGNMENT DIR | gradescope-bundle ASSIGNMENT | student-bundle ASSIGNMENT | "
                   "prairielearn-bundle ASSIGNMENT | exercise make TEMPLATE | exercise check DIR ANSWERS")
    p.add_argument("--public", action="store_true", help="run the public cases only (no secret needed)")
    p.add_argument("--format", choices=("text", "json", "gradescope", "junit", "prairielearn", "csv"), default=None,
                   help="report format of one submission (default text); exercise check: text, json or csv")
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
    p.add_argument("--students", metavar="CSV", help="exercise make: the roster (a column id, optionally name)")
    p.add_argument("--seed", type=int, default=None, help="exercise make: the seed of the variants (default 0)")
    p.add_argument("--moodle", metavar="FILE", help="exercise make: also write the questions as Moodle XML")
    p.add_argument("--force", action="store_true", help="init: overwrite existing files")
    p.add_argument("--functions", metavar="LIST", help="init: the functions to grade, names and groups "
                   "separated by commas (default core; generative: conv_transpose2d, upsample2d, bce_loss, "
                   "sigmoid_bce, vae_sample)")
    p.set_defaults(func=main, grade_parser=p)


_TERMINATED = []                 # the SIGTERMs received by this process's grading command


def _stop_on_sigterm() -> None:
    """SIGTERM (what `timeout`, CI and systemd send) ends grading as Ctrl-C does: cleanly, with
    the worker processes and every sandbox stopped before this process exits."""
    import signal
    import threading

    def stop(signum, frame):
        _TERMINATED.append(signum)
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(a) -> int:
    _TERMINATED.clear()         # an in-process caller's earlier command does not count
    _stop_on_sigterm()
    try:
        return _main(a)
    finally:
        if _TERMINATED:     # a stopped batch never exits 0, even if its SystemExit was lost on the way
            raise SystemExit(128 + _TERMINATED[0])   # (raised in a finalizer, Python reports and drops it;
                                                     # replaced by an error while stopping the workers)


def _main(a) -> int:
    words = list(a.words)
    form = words.pop(0) if words and words[0] in KEYWORDS else "grade"
    if form == "exercise":
        if not words or words[0] not in ("make", "check"):
            a.grade_parser.error("`cnnspec grade exercise` takes make or check")
        form = f"exercise {words.pop(0)}"
    wanted = POSITIONALS[form]
    if len(words) != len(wanted):
        a.grade_parser.error(f"`cnnspec grade{'' if form == 'grade' else ' ' + form}` takes "
                             f"{' '.join(wanted)}; received {' '.join(words) or 'nothing'}")
    for option, forms in OPTIONS.items():
        if getattr(a, option) not in (None, False) and form not in forms:
            a.grade_parser.error(f"--{option} applies to `cnnspec grade {' / '.join(forms)}` only")
    if form == "grade" and a.format == "csv":
        a.grade_parser.error("--format csv applies to `cnnspec grade exercise check`; a grade is text, json, "
                             "gradescope, junit or prairielearn")
    return {"init": _init, "batch": _batch, "gradescope-bundle": _bundle, "student-bundle": _student_bundle,
            "prairielearn-bundle": _prairielearn_bundle, "exercise make": _exercise_make,
            "exercise check": _exercise_check, "grade": _grade}[form](a, *words)


def _init(a, directory) -> int:
    from cnnspec.grade.assignment import init_assignment

    for path in init_assignment(directory, force=a.force, functions=a.functions):
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


def _exercise_make(a, template) -> int:
    from cnnspec.grade.exercise import make_exercise

    if a.students is None or a.output is None:
        a.grade_parser.error("`cnnspec grade exercise make` needs --students ROSTER.csv and -o DIR")
    key = make_exercise(template, a.students, a.output, seed=a.seed or 0, moodle=a.moodle)
    n = len(key["students"])
    questions = len(next(iter(key["students"].values()))["questions"]) if n else 0
    print(f"wrote {a.output}: a sheet, network.cnn, network.svg and answers.csv for each of {n} students "
          f"({questions} questions each), key.json and answer-key.csv" + (f"; {a.moodle}" if a.moodle else ""))
    print("keep key.json and answer-key.csv to yourself: they hold every answer")
    return 0


def _exercise_check(a, key, answers) -> int:
    import csv
    import io
    import json

    from cnnspec.grade import exercise
    from cnnspec.grade.reports import write_atomic

    if a.format not in (None, "text", "json", "csv"):
        a.grade_parser.error("`cnnspec grade exercise check` writes --format text, json or csv")
    results = exercise.check_files(key, answers)
    if a.format == "json":
        text = json.dumps(results, indent=1) + "\n"
    elif a.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["student", "score", "max_score", *[q["id"] for q in results[0]["questions"]]])
        for r in results:
            writer.writerow([r["student"], r["score"], r["max_score"], *[int(q["ok"]) for q in r["questions"]]])
        text = buffer.getvalue()
    else:
        text = "\n".join(exercise.report_text(r) for r in results)
    if a.output:
        write_atomic(a.output, text)
    else:
        sys.stdout.write(text)
    return 0
