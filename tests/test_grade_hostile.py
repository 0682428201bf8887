"""Trust and safety: hostile submissions (tests/grade_fixtures/hostile_*.py, each appended to a
correct NumPy solution) end in a report that names what happened and scores the rest fairly;
and the sandbox's own walls hold even without the in-process guard.

These pass as root (the child switches to `nobody`) and as an ordinary user.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cnnspec.grade import reports
from cnnspec.grade.assignment import load_assignment
from cnnspec.grade.grader import Grader
from cnnspec.grade.sandbox import Limits, Sandbox
from grade_fixtures.support import FIXTURES, SOLUTION, reference, small_assignment, submission

FUNCTIONS = ["relu_forward", "relu_backward", "sigmoid_forward", "tanh_forward", "dense_forward",
             "softmax_forward", "mse_loss"]
LIMITS = {"time_per_case": 1.5, "import_time": 10.0, "memory_mb": 1024}
HOSTILE = sorted(p.stem for p in FIXTURES.glob("hostile_*.py"))
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """The assignment, a gradebook and another student's file the submissions go after."""
    directory = tmp_path_factory.mktemp("hostile")
    assignment = small_assignment(directory / "assignment", FUNCTIONS, limits=LIMITS)
    (directory / "out").mkdir()
    (directory / "out" / "gradebook.csv").write_text("student,score\nalice,7\n")
    (directory / "others").mkdir()
    (directory / "others" / "bob.py").write_text("# bob's work\n")
    return directory, assignment


@pytest.fixture(scope="module")
def graded(place):
    """Every hostile submission graded once, two at a time: {fixture: (result, seconds)}."""
    directory, assignment = place
    grader = Grader(load_assignment(assignment), reference=reference())
    replacements = {"__OUTPUT__": directory / "out" / "report.json",
                    "__GRADEBOOK__": directory / "out" / "gradebook.csv",
                    "__ASSIGNMENT__": assignment, "__SECRET__": assignment.parent / ".secret",
                    "__OTHER__": directory / "others" / "bob.py"}

    def grade(name):
        started = time.monotonic()
        result = grader.grade(submission(directory, name, replacements))
        return name, (result, time.monotonic() - started)

    sentinel = subprocess.Popen(["sleep", "120"])        # in the grader's own process group
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:  # two sandboxes at a time, as batch does
            results = dict(pool.map(grade, HOSTILE))
        assert sentinel.poll() is None, "a submission killed the grader's process group"
    finally:
        sentinel.kill()
        sentinel.wait()
    return results


def full(result, *names):
    for name in names:
        problem = result.problem(name)
        assert problem.score == problem.max_score, (name, reports.text(result))


def rest_full(result, *hit):
    """Every function not in ``hit`` gets full marks (a backward that matches the reference keeps
    them even when the forward it belongs to is broken)."""
    for problem in result.problems:
        if problem.name not in hit:
            full(result, problem.name)


def note(result, name) -> str:
    return " | ".join(result.problem(name).notes)


def zero(result, name, *words):
    problem = result.problem(name)
    assert problem.score == 0, (name, reports.text(result))
    text = note(result, name)
    assert any(w in text for w in words), (name, text)


def test_every_hostile_fixture_is_tested():
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_hostile_")}
    assert tested == set(HOSTILE)


def test_hostile_infinite_loop(graded):
    result, seconds = graded["hostile_infinite_loop"]
    zero(result, "relu_forward", "time limit exceeded in relu_forward")
    rest_full(result, "relu_forward")
    assert seconds < 15


def test_hostile_sleep(graded):
    result, seconds = graded["hostile_sleep"]
    zero(result, "relu_forward", "time limit exceeded in relu_forward")
    rest_full(result, "relu_forward")
    assert seconds < 15


def test_hostile_memory_bomb(graded):
    result, _ = graded["hostile_memory_bomb"]
    zero(result, "relu_forward", "MemoryError")
    zero(result, "relu_backward", "MemoryError")
    rest_full(result, "relu_forward", "relu_backward")


def test_hostile_fork_bomb(graded):
    result, _ = graded["hostile_fork_bomb"]
    zero(result, "relu_forward", "forbidden: os.fork")
    zero(result, "relu_backward", "forbidden: subprocess.Popen")
    zero(result, "sigmoid_forward", "can't start new thread", "forbidden")
    assert {"forbidden: os.fork", "forbidden: subprocess.Popen"} <= set(result.violations)
    rest_full(result, "relu_forward", "relu_backward", "sigmoid_forward")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert cmdline.read_bytes() != b"sleep\x00100.0417\x00"      # the fixture's, none other
        except OSError:
            pass


def test_hostile_exit_at_import(graded):
    result, _ = graded["hostile_exit_at_import"]
    assert "called sys.exit(3)" in result.import_error
    assert "the functions defined before that point were graded" in result.import_error
    assert result.score == result.max_score


def test_hostile_os_exit_at_import(graded):
    result, _ = graded["hostile_os_exit_at_import"]
    assert "could not be imported" in result.import_error and "exited with status 0" in result.import_error
    assert result.score == 0
    assert all(p.notes == ["not graded: your file could not be imported"] for p in result.problems)


def test_hostile_os_exit(graded):
    result, _ = graded["hostile_os_exit"]
    zero(result, "relu_forward", "exited with status 3", "in relu_forward")
    zero(result, "sigmoid_forward", "called sys.exit('bye')")
    rest_full(result, "relu_forward", "sigmoid_forward")
    assert result.sandbox_starts == 2                     # restarted once, after relu_forward


def test_hostile_kill_parent(graded):
    result, _ = graded["hostile_kill_parent"]            # the sentinel in `graded` survived too
    zero(result, "relu_forward", "forbidden: sending signal 9 to another process")
    zero(result, "relu_backward", "forbidden: sending signal 9 to process group")
    zero(result, "sigmoid_forward", "killed by SIGKILL")
    zero(result, "tanh_forward", "killed by SIGTERM")
    rest_full(result, "relu_forward", "relu_backward", "sigmoid_forward", "tanh_forward")


def test_hostile_fake_output(graded):
    result, _ = graded["hostile_fake_output"]
    relu = result.problem("relu_forward")
    assert [c.key for c in relu.checks if not c.ok] == ["reference", "edge"]
    rest_full(result, "relu_forward")
    data = json.loads(reports.render(result, "gradescope"))
    assert data["score"] == result.score < result.max_score
    for line in reports.text(result).splitlines() + data["output"].splitlines():
        if "100 / 100" in line or '"score": 100' in line or "PASS relu_forward:" in line:
            assert line.startswith("  | "), line                    # only ever quoted


def test_hostile_write_files(graded, place):
    directory, assignment = place
    result, _ = graded["hostile_write_files"]
    full(result, "relu_forward")                            # right only if every attempt was refused
    assert (directory / "out" / "gradebook.csv").read_text() == "student,score\nalice,7\n"
    assert not (directory / "out" / "report.json").exists()
    assert "hacked" not in assignment.read_text()
    refused = "\n".join(result.violations)
    for what in ("writing /autograder/results/results.json", f"writing {directory}/out/report.json",
                 f"writing {directory}/out/gradebook.csv", f"writing {assignment}",
                 f"reading {assignment.parent}/.secret", f"reading {directory}/others/bob.py"):
        assert what in refused, what
    reports.write_atomic(directory / "out" / "report.json", reports.render(result, "json"))
    assert json.loads((directory / "out" / "report.json").read_text())["score"] == result.score


def test_hostile_import_cnnspec(graded):
    result, _ = graded["hostile_import_cnnspec"]
    zero(result, "relu_forward", "the reference was out of reach")
    assert "forbidden import: cnnspec" in result.violations
    assert any(v.startswith("forbidden import: cnnspec (by file path") for v in result.violations)
    assert "forbidden import: torch" in result.violations or "torch" not in sys.modules
    rest_full(result, "relu_forward")


def test_hostile_frame_inspection(graded):
    result, _ = graded["hostile_frame_inspection"]
    [check] = [c for c in result.problem("relu_forward").checks if c.key == "reference"]
    assert check.passed == 0                                # no expected value was in reach
    rest_full(result, "relu_forward")


def test_hostile_leak_hidden(place):
    """What a report shows of a hidden case carries none of its inputs, whatever the code
    chooses to put there: an exception class named after them is "an exception of its own
    class", a refused file's path is left out, an exit status is not given."""
    directory, assignment = place
    grader = Grader(load_assignment(assignment), reference=reference())
    problems = {p.name: p for p in grader.assignment.functions}
    order = [case.visibility for case, _ in grader.cases(problems["sigmoid_forward"])]
    exit_at = 2 * order.index("hidden") + 1            # a float64 and a float32 call a case
    path = submission(directory, "hostile_leak_hidden", {"__EXIT_AT__": exit_at})
    result = grader.grade(path)
    shown = reports.text(result) + json.dumps(reports.gradescope(result)) + json.dumps(reports.prairielearn(result))
    hidden = {name: [case.args for case, _ in grader.cases(problems[name]) if case.visibility == "hidden"]
              for name in ("relu_forward", "relu_backward", "sigmoid_forward")}
    for args in hidden["relu_forward"]:
        x = args[0]
        for first in (float(x.flat[0]), float(np.float32(x.flat[0]))):
            tag = "S" + "_".join(map(str, x.shape)) + "_V" + ("%.4f" % first).replace("-", "m").replace(".", "p")
            assert tag not in shown
    def paths(visibility):                   # what relu_backward tries to open, both dtypes
        return {f"shape={x.shape}/first={first!r}" for case, _ in grader.cases(problems["relu_backward"])
                if case.visibility == visibility for x in [case.args[1]]
                for first in (float(x.flat[0]), float(np.float32(x.flat[0])))}
    assert paths("hidden") - paths("public")
    for path in paths("hidden") - paths("public"):
        assert path not in shown
    assert "an exception of its own class in a hidden case" in shown
    assert "forbidden file access (in a hidden case: what it named is not shown)" in result.violations
    assert any("forbidden file access: reading /leak/" in v for v in result.violations)    # public: shown
    [note] = [n for n in result.problem("sigmoid_forward").notes if "hidden case 1" in n]
    assert "the process exited (os._exit() or a fatal error) in sigmoid_forward, hidden case 1" in note
    assert "status" not in note and str(100 + hidden["sigmoid_forward"][0][0].shape[0]) not in note


def test_hostile_huge_output(graded):
    """An output the child cannot copy into its reply is reported as that, with its size and the
    limit, not as a process that exited; the other functions are graded."""
    result, _ = graded["hostile_huge_output"]
    problem = result.problem("relu_forward")
    assert problem.score == 0
    messages = [m for c in problem.checks for m in c.messages] + problem.notes
    assert any("the output (488 MB) could not be sent back: no memory for a copy of it; the sandbox's "
               "memory limit is 1024 MB" in m for m in messages), reports.text(result)
    assert "exited with status" not in reports.text(result)
    rest_full(result, "relu_forward")


def test_hostile_bad_returns(graded):
    result, _ = graded["hostile_bad_returns"]
    expected = {"relu_forward": "out is an object of type Liar, not a NumPy array",
                "relu_backward": "dx is an ndarray subclass (Sneaky), not a plain numpy.ndarray",
                "sigmoid_forward": "returned a list of",
                "tanh_forward": "out has dtype float32; expected float64",
                "dense_forward": "out computes nothing: it is nan everywhere",
                "softmax_forward": "out has shape",
                "mse_loss": "loss is an object of type str"}
    for name, message in expected.items():
        problem = result.problem(name)
        value_checks = [c for c in problem.checks if c.key in ("reference", "edge")]
        # float32 values of tanh are right to float32 precision: only the dtype is wrong; the
        # transposed softmax of a batch of 1 has the right values in a (K, 1) array: only its shape
        if name == "softmax_forward":
            assert value_checks[0].passed == 0
        else:
            assert all(c.passed == 0 for c in value_checks) or name == "tanh_forward", name
        assert any(message in m for c in problem.checks for m in c.messages), (name, reports.text(result))
    [dtype] = [c for c in result.problem("tanh_forward").checks if c.key == "shape_dtype"]
    assert dtype.passed == 0


def test_hostile_flood(graded):
    result, seconds = graded["hostile_flood"]
    assert result.score == result.max_score
    assert len(result.output) < 66 * 1024 and "more bytes not kept" in result.output
    assert len(reports.text(result)) < 20_000
    assert seconds < 15


def test_hostile_recursion(graded):
    result, _ = graded["hostile_recursion"]
    zero(result, "relu_forward", "SIGSEGV", "time limit exceeded", "MemoryError", "RecursionError")
    zero(result, "relu_backward", "RecursionError")
    rest_full(result, "relu_forward", "relu_backward")


def test_hostile_pipe(graded):
    result, _ = graded["hostile_pipe"]
    zero(result, "relu_forward", "malformed reply in relu_forward")
    zero(result, "sigmoid_forward", "reply in sigmoid_forward larger than 64 MB")
    rest_full(result, "relu_forward", "sigmoid_forward")


def test_hostile_fake_messages(graded):
    """Messages of the wrong shape forged on the pipe only ever hurt the one who forged them."""
    result, _ = graded["hostile_fake_messages"]
    assert result.score == 0 and result.import_error is None and result.violations == []
    for problem in result.problems:
        assert any("malformed reply" in n for n in problem.notes), problem.notes


# -- the walls that do not depend on the in-process guard -------------------------------------------

def probe(tmp_path, guard: bool, big_mb: int = 0, limits: Limits | None = None) -> dict:
    """Run probe_sandbox.py's relu_forward in a sandbox; what it saw from the inside. It also tries
    to read a file the grader can read (in the test's directory, which may well be on the
    grader's sys.path)."""
    path = submission(tmp_path, "probe_sandbox", {"__BIG__": big_mb, "__NEXT_TO_GRADER__": tmp_path / "x"})
    (tmp_path / "x").write_text("the grader's")
    with Sandbox(path, limits=limits or Limits(), guard=guard) as box:
        ready = box.start()
        replies = [box.call(name, [[np.zeros(2)]], timeout=20)["replies"][0]
                   for name in ("relu_forward", "sigmoid_forward")]
    assert all(reply["status"] == "error" for reply in replies), replies
    info = {"landlock": ready["landlock"]}
    for reply in replies:
        info.update(json.loads(reply["error"]["message"].split(": ", 1)[1]))
    return info


def test_the_child_is_unprivileged_alone_in_its_session_with_a_scrubbed_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNSPEC_GRADE_SECRET", "do not tell")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nor this")
    info = probe(tmp_path, guard=True)
    if ROOT:
        nobody = pwd.getpwnam("nobody")
        assert (info["uid"], info["gid"], info["groups"]) == (nobody.pw_uid, nobody.pw_gid, [])
        assert info["setuid_root"].startswith("PermissionError")
    else:
        assert info["uid"] == os.getuid()
    assert info["pid"] == info["pgid"] == info["sid"] != os.getsid(0)        # a session of its own
    assert info["ppid"] == os.getpid()
    assert "CNNSPEC_GRADE_SECRET" not in info["env"] and "AWS_SECRET_ACCESS_KEY" not in info["env"]
    assert info["home"] == info["cwd"] != os.getcwd()
    assert info["cwd"].startswith("/") and not os.path.exists(info["cwd"])     # removed afterwards
    assert info["fork"].startswith("PermissionError: forbidden: os.fork")
    assert info["read_next_to_grader"].startswith("PermissionError: forbidden file access")


def test_the_limits_hold_without_the_guard(tmp_path):
    """With the in-process guard off, the operating system still refuses."""
    limits = Limits(memory_mb=1500, cpu_seconds=77, file_size_mb=16, open_files=40)
    info = probe(tmp_path, guard=False, big_mb=32, limits=limits)
    assert info["limits"]["RLIMIT_AS"] == [1500 << 20] * 2
    assert info["limits"]["RLIMIT_CPU"] == [77, 77]
    assert info["limits"]["RLIMIT_FSIZE"] == [16 << 20] * 2
    assert info["limits"]["RLIMIT_NOFILE"] == [40, 40]
    assert info["limits"]["RLIMIT_NPROC"] == [0, 0]
    assert info["fork"].startswith("BlockingIOError")                          # RLIMIT_NPROC = 0
    assert "File too large" in info["big_file"]                               # RLIMIT_FSIZE
    if ROOT:
        assert info["kill_parent"].startswith("PermissionError")              # another user
        assert info["read_next_to_grader"].startswith("PermissionError") or "the grader's" in info["read_next_to_grader"]
    if LANDLOCK:     # the kernel's file walls, for any user: what the guard refuses, it refuses too
        assert info["landlock"] == LANDLOCK
        for key in ("read_next_to_grader", "write_next_to_grader", "list_root"):
            assert info[key].startswith("PermissionError"), (key, info[key])
        assert not (tmp_path / "x.new").exists()
        if LANDLOCK >= 4:                                                     # no TCP
            assert info["connect"].startswith("PermissionError"), info["connect"]
        if LANDLOCK >= 6:                                                     # signals scoped
            assert info["kill_parent"].startswith("PermissionError")
    else:
        assert info["landlock"] == 0


def _landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 without it (as the sandbox's child asks)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(0, libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))) if sys.platform == "linux" else 0


LANDLOCK = _landlock_abi()


def test_a_submission_that_disarms_the_guard_meets_the_kernels_walls(place, tmp_path):
    """A submission that finds the guard through the frames and switches it off still reads
    nothing outside the Python install and its folder, and writes nothing outside its folder,
    where the kernel has Landlock (then the report of a run says so)."""
    directory, assignment = place
    secret = assignment.parent / ".secret"
    outside = tmp_path / "written_by_a_student"
    path = submission(tmp_path, "disarm_guard", {"__SECRET__": secret, "__OUTSIDE__": outside})
    with Sandbox(path, limits=Limits()) as box:
        ready = box.start()
        [reply] = box.call("relu_forward", [[np.zeros(2)]], timeout=20)["replies"]
    seen = json.loads(reply["error"]["message"].split(": ", 1)[1])
    assert seen["disarmed"]                                   # the guard was found and switched off
    assert ready["landlock"] == LANDLOCK
    if LANDLOCK:
        assert seen["secret"].startswith("PermissionError") and seen["assignment"].startswith("PermissionError")
        assert seen["write"].startswith("PermissionError") and not outside.exists()
    else:
        assert not ROOT or seen["write"].startswith("PermissionError")      # another user's files


def test_a_killed_grader_takes_its_sandbox_along(tmp_path):
    """The child dies with the grader (PR_SET_PDEATHSIG): no orphan keeps running student code."""
    path = tmp_path / "loop.py"
    path.write_text("def relu_forward(x):\n    while True:\n        pass\n")
    script = tmp_path / "grader.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from cnnspec.grade.sandbox import Sandbox\n"
        f"box = Sandbox({str(path)!r})\n"
        "box.start()\n"
        "print(box.proc.pid, box.workdir, flush=True)\n"
        "box.call('relu_forward', [[np.zeros(2)]], timeout=60)\n")
    grader = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child, workdir = grader.stdout.readline().split()
    child = int(child)
    time.sleep(0.3)
    grader.kill()
    grader.wait()
    shutil.rmtree(workdir)                   # a killed grader cannot clean up after itself
    for _ in range(50):
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the sandbox outlived the grader")


def test_a_private_temporary_folder_still_grades(tmp_path, monkeypatch):
    """The sandboxes' folders go in TMPDIR. As root the sandbox runs as `nobody`, who may not
    enter the folders above its own when TMPDIR is private (pytest's are drwx------): the child
    reads its copy through its working directory, so the student is graded, not failed at import
    with "the process exited with status 1"."""
    import tempfile

    private = tmp_path / "private"
    (private / "tmp").mkdir(parents=True)
    private.chmod(0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(private / "tmp"))
    result = Grader(load_assignment(small_assignment(tmp_path / "a", ["relu_forward"]))).grade(SOLUTION)
    assert result.import_error is None and result.score == result.max_score, reports.text(result)
    assert list((private / "tmp").iterdir()) == []


SIGTERM_SCRIPT = r'''
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER: orphans come here
me = os.getpid()

def descendants():
    parents, states, commands = {}, {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            command = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(pid)], states[int(pid)], commands[int(pid)] = int(fields[1]), fields[0], command
    found, todo = {}, [me]
    while todo:
        pid = todo.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = (states[child], commands[child])
                todo.append(child)
    return {pid: command for pid, (state, command) in found.items() if state != "Z"}

def grading():
    """The sandboxes inside the student's function (it leaves a file in its working directory)."""
    import glob
    entered = glob.glob(os.path.join(os.environ["TMPDIR"], "cnnspec-sandbox-*", "entered"))
    return [c for c in descendants().values() if "child.py" in c] if len(entered) >= 2 else []

batch = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=open(os.environ["BATCH_ERR"], "w"))
deadline = time.time() + 120
while time.time() < deadline and batch.poll() is None:
    sandboxes = grading()
    if len(sandboxes) >= 2:
        break
    time.sleep(0.1)
time.sleep(0.5)
batch.send_signal(signal.SIGTERM)
batch.wait(timeout=60)
stopped = time.time()
left = descendants()
while left and time.time() < stopped + 2.0:
    time.sleep(0.05)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    left = descendants()
print(json.dumps({"sandboxes": len(sandboxes), "left": sorted(left.values()), "status": batch.returncode}))
for pid in left:
    os.kill(pid, signal.SIGKILL)
'''


def test_sigterm_stops_the_workers_and_their_sandboxes_with_the_batch(tmp_path):
    """What `timeout`, CI and systemd send: nothing the batch started may outlive it by more than
    a moment (the script adopts orphans as a subreaper and lists what is left)."""
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    for name in ("ann", "ben", "cat", "dan"):
        (submissions / f"{name}.py").write_text(
            "import time\n\ndef relu_forward(x):\n    open('entered', 'w').close()\n    time.sleep(60)\n")
    assignment = small_assignment(tmp_path / "a", ["relu_forward"],
                                  limits={"time_per_case": 90.0, "import_time": 60.0})
    command = [sys.executable, "-c", "import sys; from cnnspec.cli import main; sys.exit(main(sys.argv[1:]))",
               "grade", "batch", str(assignment), str(submissions), "--out", str(tmp_path / "book.csv"),
               "--workers", "2"]
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    done = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, *command], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TMPDIR=str(temporary),
                                                BATCH_ERR=str(tmp_path / "batch.err")))
    report = json.loads(done.stdout.strip().splitlines()[-1])
    book = tmp_path / "book.csv"
    report["stderr"] = (tmp_path / "batch.err").read_text()[-3000:]
    report["gradebook"] = book.read_text() if book.exists() else None
    assert report["sandboxes"] >= 2, report                     # it was grading when stopped
    assert report["left"] == [], report
    assert report["status"] != 0, report
    assert report["gradebook"] is None, report                  # stopped before it was written
    assert sorted(p.name for p in temporary.iterdir()) == []    # the sandboxes' folders removed too


def test_a_submission_checking_itself_with_numpy_testing_grades_in_full(place, tmp_path):
    """`from numpy.testing import assert_allclose` (and `import sysconfig`, which it needs) import in
    the sandbox even when its user cannot read the Python install (as root here, whose Python
    may live under /root: the child loads them before it switches user); a check at the end of
    the file runs and the functions get full marks."""
    _, assignment = place
    text = ("from numpy.testing import assert_allclose\nimport sysconfig\n\n" + SOLUTION.read_text()
            + "\n\nassert_allclose(relu_forward(np.array([-1.0, 2.0])), [0.0, 2.0])\n")
    path = tmp_path / "checked.py"
    path.write_text(text)
    result = Grader(load_assignment(assignment), reference=reference()).grade(path)
    assert result.import_error is None, reports.text(result)
    full(result, *FUNCTIONS)


@pytest.mark.parametrize("body, words", [
    ("raise ModuleNotFoundError(\"No module named 'shlex'\", name='shlex')",
     "`fakelib.sub` cannot be imported in the sandbox: it needs the standard-library module shlex"),
    ("import not_installed_anywhere",
     "`fakelib.sub` cannot be imported in the sandbox: it needs not_installed_anywhere, which the "
     "sandbox does not have"),
])
def test_an_import_that_fails_inside_a_library_names_the_students_import(tmp_path, monkeypatch, body,
                                                                          words):
    """The sandbox's message for an import that failed inside the module the submission imported
    (matplotlib needing shlex, where the sandbox user cannot read the standard library) names the
    submission's import, not a module it never wrote."""
    from cnnspec.grade import child

    package = tmp_path / "fakelib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sub.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        exec(compile("import numpy\nimport fakelib.sub\n", "layers.py", "exec"), {})
    except ModuleNotFoundError as exc:
        error = child.describe_exception(exc, "layers.py")
    else:
        raise AssertionError("the import did not fail")
    assert error["message"].startswith(words), error
    assert error["line"] == 2 and "remove that import" in error["message"]
    for name in ("fakelib", "fakelib.sub"):
        sys.modules.pop(name, None)
