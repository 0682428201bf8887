"""Grading a folder of submissions into a CSV gradebook and one feedback file per student.

    submissions/alice.py             a student's file, or
    submissions/bob/layers.py        a folder per student (the assignment's `submission` file)

Each finished student is saved at once, atomically, as ``<gradebook>.d/<student>.json`` with
the SHA-256 of the submission and a key of everything else that decides a score (grading_key:
the assignment file, its network files, the secret, public or not, the cnnspec version and source,
Python and NumPy); ``--resume`` keeps those whose submission and key did not change, so an
interrupted batch continues where it stopped. The gradebook and the feedback files
are written atomically too. Workers are processes (spawned: numba and threads do not survive a
fork), each with its own sandboxes; Ctrl-C stops them at once.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cnnspec.errors import CnnSpecError
from cnnspec.grade import reports


@dataclass
class Entry:
    student: str
    path: Path | None          # None: no submission file found
    why: str = ""


SOURCES = (".py", ".ipynb")       # a layer-function submission: a Python file or a Jupyter notebook


def discover(directory: Path, submission_name: str, designs: bool = False) -> list[Entry]:
    """The students of ``directory``: each ``.py`` or ``.ipynb`` file (and ``.cnn`` file when
    the assignment has ``designs``), and each folder (its submission file, see
    :func:`find_submission`; the folder itself when the assignment has designs)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CnnSpecError(f"not a directory of submissions: {directory}", file=str(directory))
    entries = []
    for item in sorted(directory.iterdir()):
        if item.name.startswith("."):
            continue
        if item.is_file() and (item.suffix in SOURCES or designs and item.suffix == ".cnn"):
            entries.append(Entry(item.stem, item))
        elif item.is_dir():
            entries.append(Entry(item.name, item) if designs else
                           find_submission(item, submission_name, student=item.name))
    return entries


def find_design(folder: Path, design, designs: list) -> tuple:
    """A design's file in a student's folder, and why not when there is none: its ``submission``
    name; else, for an assignment with one design, the folder's only ``.cnn`` file."""
    if (folder / design.submission).is_file():
        return folder / design.submission, None
    found = [p for p in _files(folder) if p.suffix == ".cnn"]
    if len(designs) == 1 and len(found) == 1:
        return found[0], None
    names = ", ".join(str(p.relative_to(folder)) for p in found) or "no .cnn file"
    return None, f"no {design.submission} in the folder (found {names})"


def _files(folder: Path) -> list[Path]:
    """The files of a folder and its sub-folders, hidden ones (``.ipynb_checkpoints``) left out."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def find_submission(folder: Path, submission_name: str, student: str | None = None) -> Entry:
    """The file to grade inside a student's folder: the assignment's file; else the same name as
    a notebook (``layers.ipynb`` for ``layers.py``) or a Python file; else the folder's only
    ``.py`` or ``.ipynb`` file. Without one, ``why`` says which file was expected and which were
    found."""
    student = student or folder.name
    stem = Path(submission_name).stem
    for name in (submission_name, *(stem + suffix for suffix in SOURCES)):
        if (folder / name).is_file():
            return Entry(student, folder / name)
    files = _files(folder)
    # an upload zipped with its folder (Gradescope unpacks hw1.zip as hw1/layers.py): the one file
    # of the expected name in a sub-folder, whatever else the folder holds (the student's own tests)
    for name in (submission_name, *(stem + suffix for suffix in SOURCES)):
        named = [p for p in files if p.name == name]
        if len(named) == 1:
            return Entry(student, named[0])
        if len(named) > 1:
            listed = ", ".join(str(p.relative_to(folder)) for p in named[:12])
            return Entry(student, None, f"{len(named)} files named {name} in the folder ({listed}): "
                                        f"keep only the one to grade")
    found = [p for p in files if p.suffix in SOURCES]
    if len(found) == 1:
        return Entry(student, found[0])
    names = [str(p.relative_to(folder)) for p in files]
    listed = ", ".join(names[:12]) + (f", ... ({len(names)} files in all)" if len(names) > 12 else "")
    why = f"no {submission_name} in the folder: expected {submission_name}; found {listed or 'no files'}"
    if len(found) > 1:
        why += (f" ({len(found)} Python files and notebooks: rename the one to grade to {submission_name}"
                f" (or {stem}.ipynb))")
    return Entry(student, None, why)


def _sha256(path: Path) -> str:
    """Of a file's bytes; of a folder, its files' names and bytes."""
    if not path.is_dir():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for file in _files(path):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def grading_key(assignment, public_only: bool) -> str:
    """SHA-256 of everything besides the submission that decides its score: the assignment file,
    every [[networks]] .cnn file, the hidden cases' seed (from the secret; never the secret
    itself), public or not, the cnnspec version and the source of the installed package (the
    grader, the reference, the engine), and the Python and NumPy the submissions run with."""
    import platform

    import numpy

    import cnnspec

    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}:{len(data)}:".encode() + data)

    add("assignment", assignment.path.read_bytes())
    for problem in assignment.networks:
        add(f"network {problem.name}", problem.spec.read_bytes())
    for problem in assignment.designs:
        data = assignment.directory / problem.data
        if data.is_file():                      # an instructor's data set decides scores too
            add(f"design data {problem.name}", hashlib.sha256(data.read_bytes()).digest())
    add("cases", b"public" if public_only else str(assignment.hidden_seed()).encode())
    add("versions", f"{cnnspec.__version__} {platform.python_version()} {numpy.__version__}".encode())
    add("code", code_digest().encode())
    return digest.hexdigest()


def code_digest() -> str:
    """SHA-256 of the installed cnnspec package's source (.py, .lark): a changed grader or
    reference is a changed grade."""
    root = Path(__file__).resolve().parent.parent
    files = list(root.rglob("*.py")) + list(root.rglob("*.lark"))
    if (root.parent / "grammar").is_dir():               # a source checkout: the grammar beside
        files += list((root.parent / "grammar").glob("*.lark"))
    digest = hashlib.sha256()
    for path in sorted(files):
        if "__pycache__" not in path.parts:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def safe_name(student: str) -> str:
    """A student's name as a file name, one per student: letters (any script), digits and ``._-``
    are kept; a name that needs other characters replaced, or is too long, gets a short hash of
    the original so that "a b" and "a?b" do not share a feedback file."""
    name = re.sub(r"[^\w.-]", "_", student).lstrip(".")[:80]
    if name != student or not name:
        name = f"{name or '_'}-{hashlib.sha256(student.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return name


def csv_cell(value) -> str:
    """A cell that a spreadsheet will not run as a formula."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# -- workers -------------------------------------------------------------------------------------

_GRADER = None


def _init_worker(assignment_path: str, public_only: bool, parent: int) -> None:
    global _GRADER
    import signal

    from cnnspec.grade.assignment import load_assignment
    from cnnspec.grade.grader import Grader

    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _exit_on_sigterm)    # the parent's terminate() ends a worker,
    _die_with_parent(parent)
    _GRADER = Grader(load_assignment(assignment_path), public_only=public_only)


def _exit_on_sigterm(signum, frame):
    """... through its ``finally`` blocks: the sandbox being graded is stopped and its folder
    removed (a plain exit would leave the folder in the temporary directory)."""
    raise SystemExit(128 + signum)


def _die_with_parent(parent: int) -> None:
    """SIGTERM this worker when the batch process dies, however it dies (Linux); a worker's
    sandboxes die with the worker (child.py)."""
    import os
    import signal

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)    # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:          # the parent died before that
        os._exit(1)


def _grade_one(task: tuple) -> tuple:
    index, student, path = task
    return index, _graded(_GRADER, student, Path(path))


def _graded(grader, student: str, path: Path) -> dict:
    """The payload of one submission's grading; a failure of the grader itself on it (a bug:
    submissions' own failures are in the report) fails that student's row, not the batch."""
    try:
        result = grader.grade(path, display_name=_display(student, path))
    except Exception as exc:                   # noqa: BLE001 - the rest of the class is graded
        why = f"the grader failed on this submission ({type(exc).__name__}: {exc}); grade it alone to see the traceback"
        return {"result": None, "text": f"{student}: {why}\n", "why": why}
    return {"result": result.to_dict(), "text": reports.text(result)}


# -- the batch -----------------------------------------------------------------------------------

def run_batch(assignment_path, directory, out, *, feedback=None, workers: int = 1, resume: bool = False,
              public_only: bool = False, progress=None, grader=None) -> dict:
    """Grade every submission of ``directory``; write the gradebook ``out`` (CSV) and, with
    ``feedback``, one text report per student. Returns {"graded", "reused", "missing", "seconds"}.
    ``grader`` (a Grader) grades in this process instead of worker processes (tests)."""
    from cnnspec.grade.assignment import load_assignment

    import time

    started = time.monotonic()
    assignment = load_assignment(assignment_path)
    if not public_only:
        assignment.hidden_seed()                 # no secret: fail now, not in every worker
    out = Path(out)
    state = out.with_name(out.name + ".d")
    state.mkdir(parents=True, exist_ok=True)
    assignment_hash = grading_key(assignment, public_only)
    entries = discover(Path(directory), assignment.submission, designs=bool(assignment.designs))
    records, todo = {}, []
    for entry in entries:
        saved = state / f"{safe_name(entry.student)}.json"
        digest = _sha256(entry.path) if entry.path else None
        if resume and saved.exists():
            try:
                record = json.loads(saved.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = None
            if record and record.get("sha256") == digest and record.get("assignment") == assignment_hash \
                    and record.get("public_only") == public_only and record.get("result") is not None:
                records[entry.student] = record
                continue
        if entry.path is None:
            records[entry.student] = _save(state, entry, None, assignment_hash, public_only,
                                           {"result": None, "text": f"{entry.student}: {entry.why}\n"})
            continue
        todo.append((entry, digest))
    reused = len(records)

    def finished(entry, digest, payload):
        records[entry.student] = _save(state, entry, digest, assignment_hash, public_only, payload)
        if feedback:
            reports.write_atomic(Path(feedback) / f"{safe_name(entry.student)}.txt", payload["text"])
        if progress:
            progress(entry.student, payload["result"])

    if grader is not None or workers <= 1:
        if grader is None:
            from cnnspec.grade.grader import Grader

            grader = Grader(assignment, public_only=public_only)
        for entry, digest in todo:
            finished(entry, digest, _graded(grader, entry.student, entry.path))
    else:
        pool = multiprocessing.get_context("spawn").Pool(
            workers, initializer=_init_worker, initargs=(str(assignment.path), public_only, os.getpid()))
        try:
            tasks = [(i, entry.student, str(entry.path)) for i, (entry, _) in enumerate(todo)]
            for index, payload in pool.imap_unordered(_grade_one, tasks):
                finished(*todo[index], payload)
            pool.close()
        except BaseException:
            pool.terminate()                # the workers' sandboxes die with them (PDEATHSIG)
            raise
        finally:
            pool.join()
    if feedback:
        for entry in entries:
            target = Path(feedback) / f"{safe_name(entry.student)}.txt"
            if not target.exists():
                reports.write_atomic(target, records[entry.student]["text"])
    write_gradebook(out, assignment, [records[e.student] for e in entries])
    return {"graded": len(todo), "reused": reused - sum(e.path is None for e in entries),
            "missing": sum(e.path is None for e in entries), "students": len(entries),
            "seconds": round(time.monotonic() - started, 2)}


def _display(student: str, path: Path) -> str:
    return student if path.is_dir() else f"{student}/{path.name}"


def _save(state: Path, entry: Entry, digest, assignment_hash: str, public_only: bool, payload: dict) -> dict:
    record = {"student": entry.student, "submission": str(entry.path) if entry.path else None,
              "sha256": digest, "assignment": assignment_hash, "public_only": public_only,
              "result": payload["result"], "text": payload["text"], "why": payload.get("why", entry.why)}
    reports.write_atomic(state / f"{safe_name(entry.student)}.json", json.dumps(record))
    return record


def write_gradebook(out: Path, assignment, records: list) -> None:
    """One row per student: total, then one column per problem, then a status."""
    names = ([p.name for p in assignment.functions] + [n.name for n in assignment.networks]
             + [d.name for d in assignment.designs])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "score", "max_score", *names, "status"])
    for record in records:
        result = record["result"]
        if result is None:
            writer.writerow([csv_cell(record["student"]), 0, assignment.max_score, *[0] * len(names),
                             csv_cell(record.get("why") or "no submission")])
            continue
        scores = {p["name"]: p["score"] for p in result["problems"]}
        status = [f"not graded: {result['missing']}"[:300]] if result.get("missing") else ["graded"]
        if result.get("import_error"):
            status.append(str(result["import_error"])[:200])
        if result.get("violations"):
            status.append("refused: " + "; ".join(result["violations"])[:200])
        status = "; ".join(status)
        writer.writerow([csv_cell(record["student"]), result["score"], result["max_score"],
                         *[scores.get(n, 0) for n in names], csv_cell(status)])
    reports.write_atomic(out, buffer.getvalue())
