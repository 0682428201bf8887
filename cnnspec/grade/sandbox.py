"""Run a submission's functions in a sandboxed child process (the trusted side; child.py is the other).

    with Sandbox(Path("layers.py"), limits=Limits()) as box:
        ready = box.start()                      # imports the submission in the child
        [reply] = box.call("relu_forward", [(x,)], timeout=10)

The child is ``python -I -B -u child.py`` in a new session (its own process group), with a fresh
temporary working directory holding a copy of the submission, a scrubbed environment, resource
limits, and — when the grader runs as root — an unprivileged user of its own. Requests carry
inputs only; replies are decoded strictly (protocol.py) and never unpickled. A call that does not
answer in time, or a child that dies, sends its whole process group SIGKILL; the grader then
starts a fresh child. The child's stdout and stderr are drained by a thread into a bounded buffer
(flooding cannot block the child nor fill the grader's memory).
"""
from __future__ import annotations

import fcntl
import importlib.util
import os
import pwd
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cnnspec.grade import protocol

CHILD = Path(__file__).with_name("child.py")
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
       "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
       "VECLIB_MAXIMUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


@dataclass
class Limits:
    """What a submission may use; the [limits] table of assignment.toml."""

    time_per_case: float = 10.0     # wall-clock seconds per call of a student function
    import_time: float = 10.0       # wall-clock seconds to start the child and import the file
    total_time: float = 240.0       # wall-clock seconds for the whole submission (checked per call)
    cpu_seconds: int = 300          # RLIMIT_CPU of each child process
    memory_mb: int = 2048           # RLIMIT_AS of each child process
    file_size_mb: int = 16          # RLIMIT_FSIZE
    open_files: int = 64            # RLIMIT_NOFILE
    output_kb: int = 64             # stdout + stderr kept per child; the rest is counted, dropped
    message_mb: int = 64            # largest reply accepted from the child
    user: str = "nobody"            # the child's user when the grader runs as root


class Located(str):
    """Where in a notebook an error is ("cell 3, line 2"): made by the grader from the child's line
    number (the child's replies decode to plain str only, so it cannot make one)."""


def line_text(error: dict) -> str | None:
    """"line 12" or "cell 3, line 2" for an error dict from the child, None when it has no line."""
    line = error.get("line")
    if type(line) is int:
        return f"line {line}"
    return str(line) if type(line) is Located else None


class SandboxError(Exception):
    """The child did not answer: ``kind`` is "timeout", "crash", "protocol" or "start"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def describe_exit(returncode: int | None, limits: Limits) -> str:
    """Plain words for how a child ended."""
    if returncode is None:
        return "the process did not end"
    if returncode >= 0:
        return f"the process exited with status {returncode} (os._exit() or a fatal error)"
    sig = -returncode
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    meaning = {
        signal.SIGXCPU: f"the CPU time limit of {limits.cpu_seconds} s",
        signal.SIGXFSZ: f"the file size limit of {limits.file_size_mb} MB",
        signal.SIGSEGV: "a crash, e.g. unbounded recursion overflowing the stack",
        signal.SIGBUS: "a crash",
        signal.SIGABRT: "aborted, e.g. out of memory in native code",
        signal.SIGKILL: "by itself, e.g. kill(0), or by the system",
    }.get(sig, "a signal")
    return f"the process was killed by {name} ({meaning})"


def _package_roots() -> list[tuple[str, str]]:
    """The reference's own files: the installed cnnspec package, and its source checkout."""
    package = Path(__file__).resolve().parent.parent
    roots = [(str(package), "import cnnspec")]
    if (package.parent / "pyproject.toml").exists():
        roots.append((str(package.parent), "the grader's files"))
    return roots


def _framework_roots(names) -> list[tuple[str, str]]:
    """Where each forbidden package is installed (found without importing it)."""
    roots = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        for location in spec.submodule_search_locations or [spec.origin]:
            if location and os.path.isabs(location):
                roots.append((location, f"import {name}"))
    return roots


class Sandbox:
    """One submission's child process, started lazily and restarted after a crash or timeout."""

    def __init__(self, submission: Path, *, limits: Limits | None = None, forbidden=("cnnspec",),
                 display_name: str | None = None, trusted: bool = False, guard: bool = True,
                 code=None):
        self.submission = Path(submission)
        # a notebook's code (notebook.NotebookCode) runs instead of the file, and the line numbers
        # of errors are given back as the notebook's cells and lines
        self.code = code
        self.limits = limits or Limits()
        self.forbidden = tuple(forbidden)
        self.display_name = display_name or self.submission.name
        self.trusted = trusted          # the reference graded as a submission: no guard, no user
        self.guard = guard and not trusted
        self.proc = None
        self.workdir = None
        self.ready = None
        self.starts = 0
        self._buffer = bytearray()
        self._output = bytearray()
        self._output_dropped = 0
        self._drain = None
        self._out_fd = None
        self._draining = False

    # -- life cycle ----------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> dict:
        """Start a child and import the submission; return its "ready" message (import_error,
        defined names, violations). Raises SandboxError when it cannot even get that far."""
        self.close()
        self.starts += 1
        self.workdir = Path(tempfile.mkdtemp(prefix="cnnspec-sandbox-"))
        copy = self.workdir / "submission.py"
        copy.write_bytes(self.submission.read_bytes() if self.code is None else self.code.source.encode())
        user = None
        if os.geteuid() == 0 and not self.trusted:
            try:
                entry = pwd.getpwnam(self.limits.user)
            except KeyError:
                raise SandboxError("start", f"no user {self.limits.user!r} to run submissions as "
                                            f"(set `user` in [limits])") from None
            if entry.pw_uid == 0:
                raise SandboxError("start", f"refusing to run submissions as root (user {self.limits.user!r})")
            user = (entry.pw_uid, entry.pw_gid)
            for path in (self.workdir, copy):
                os.chown(path, *user)
        os.chmod(copy, 0o600)
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        env = dict(ENV, HOME=str(self.workdir), TMPDIR=str(self.workdir))
        isolation = ["-I"]
        if self.trusted:                # our own reference: keep e.g. its numba cache settings,
            env = dict(os.environ, **ENV)   # and find cnnspec even when it is not installed
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                              os.environ.get("PYTHONPATH")]))
            isolation = []
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *isolation, "-B", "-u", str(CHILD), str(req_r), str(rep_w)],
                cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                pass_fds=(req_r, rep_w), start_new_session=True, close_fds=True)
        finally:
            for fd in (req_r, rep_w, out_w):
                os.close(fd)
        os.set_blocking(self._req_w, False)
        self._buffer.clear()
        self._out_fd = out_r
        self._drain = threading.Thread(target=self._drain_output, args=(out_r,), daemon=True)
        self._drain.start()
        limits = self.limits
        config = {
            # relative to the working directory (the child starts in it): a sandbox user who may
            # not enter the folders above it (a private TMPDIR) still reads its copy
            "submission": copy.name, "display_name": self.display_name,
            "limits": {"cpu_seconds": limits.cpu_seconds, "file_size_mb": limits.file_size_mb,
                       "open_files": limits.open_files,
                       "memory_mb": None if self.trusted else limits.memory_mb,
                       "no_processes": not self.trusted},
            "user": user, "guard": self.guard, "walls": not self.trusted, "parent": os.getpid(),
            "forbidden": [] if self.trusted else sorted(set(self.forbidden) | {"cnnspec", "ctypes", "_ctypes", "cffi"}),
            "deny": [] if self.trusted else _package_roots() + _framework_roots(self.forbidden),
        }
        self._send(config, time.monotonic() + limits.import_time)
        self.ready = self._relocated(self._receive(time.monotonic() + limits.import_time, what="importing your file"))
        if not isinstance(self.ready, dict) or self.ready.get("status") != "ready":
            self.kill()
            raise SandboxError("protocol", "the sandbox did not start properly (did your file write "
                                           "to the grader's pipe?)")
        return self.ready

    def call(self, func: str, calls: list, timeout: float) -> dict:
        """Run ``func`` on each argument list in ``calls``; the child's reply {"replies": [...],
        "violations": [...]}. Raises SandboxError (and kills the child) on timeout or crash."""
        if not self.alive:
            raise SandboxError("start", "the sandbox is not running")
        deadline = time.monotonic() + timeout
        self._send({"op": "call", "func": func, "calls": calls}, deadline)
        reply = self._relocated(self._receive(deadline, what=f"in {func}"))
        replies = reply.get("replies") if isinstance(reply, dict) else None
        if not isinstance(replies, list) or len(replies) != len(calls):
            self.kill()
            raise SandboxError("protocol", f"the sandbox sent a malformed reply in {func}")
        return reply

    def _relocated(self, message):
        """A notebook's errors at its cells and lines: each error's ``line`` becomes "cell K,
        line L", as do the "line N" in its message and traceback summary."""
        if self.code is None:
            return message
        errors = [message.get("import_error")] if isinstance(message, dict) else []
        replies = message.get("replies") if isinstance(message, dict) else None
        errors += [r.get("error") for r in replies if isinstance(r, dict)] if isinstance(replies, list) else []
        for error in errors:
            if not isinstance(error, dict):
                continue
            if type(error.get("line")) is int:
                error["line"] = Located(self.code.locate(error["line"]))
            for key in ("message", "where"):
                if isinstance(error.get(key), str):
                    error[key] = self.code.relocate(error[key])
        return message

    def kill(self) -> None:
        """SIGKILL the child's whole process group (its own session) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)     # pgid == pid: start_new_session
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:                    # pragma: no cover -- uninterruptible
            pass

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    protocol.write_message(self._req_w, {"op": "exit"})
                    self.proc.wait(timeout=0.5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self.kill()
            for fd in (self._req_w, self._rep_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self._drain is not None:
                self._drain.join(timeout=2)
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # -- captured output -------------------------------------------------------------------
    def _drain_output(self, fd: int) -> None:
        keep = self.limits.output_kb * 1024
        self._out_fd = fd
        try:
            while True:
                self._draining = False
                select.select([fd], [], [])
                self._draining = True          # set before the read: see output_size()
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                room = keep - len(self._output)
                if room > 0:
                    self._output += chunk[:room]
                self._output_dropped += max(0, len(chunk) - max(room, 0))
        finally:
            self._out_fd = None
            self._draining = False
            os.close(fd)

    def output(self, upto: int | None = None) -> str:
        """What the submission printed (stdout and stderr, all children so far), truncated; with
        ``upto``, only its first ``upto`` bytes (see :meth:`output_size`)."""
        kept = bytes(self._output if upto is None else self._output[:upto])
        text = kept.decode("utf-8", errors="replace")
        notes = []
        if upto is not None and (len(self._output) > upto or self._output_dropped):
            notes.append("[... what your code printed while the cases ran is not shown, as it could "
                         "reveal the hidden cases: grade with --public to see it]")
        if self._output_dropped:
            notes.append(f"[... {self._output_dropped} more bytes not kept]")
        return "\n".join(filter(None, [text, *notes]))

    def output_size(self) -> int:
        """How many bytes of printed output have been kept so far: everything the child printed
        before its last message (which it wrote after), once the drain thread has taken it."""
        give_up = time.monotonic() + 2.0
        while time.monotonic() < give_up:
            fd = self._out_fd
            if fd is None:
                break
            try:
                pending = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                break
            if pending == 0 and not self._draining:
                break
            time.sleep(0.001)
        return len(self._output)

    # -- messages ---------------------------------------------------------------------------
    def _send(self, value, deadline: float) -> None:
        data = memoryview(protocol.encode(value))
        while data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise SandboxError("timeout", "time limit exceeded while sending inputs")
            _, writable, _ = select.select([], [self._req_w], [], remaining)
            if not writable:
                continue
            try:
                data = data[os.write(self._req_w, data):]
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError):
                self._crashed("while receiving its inputs")

    def _receive(self, deadline: float, what: str) -> dict:
        limit = self.limits.message_mb << 20
        need = 8
        while True:
            if len(self._buffer) >= 8:
                (length,) = struct.unpack(">Q", self._buffer[:8])
                if length > limit:
                    self.kill()
                    raise SandboxError("protocol", f"reply {what} larger than {self.limits.message_mb} MB")
                need = 8 + length
                if len(self._buffer) >= need:
                    body = bytes(self._buffer[8:need])
                    del self._buffer[:need]
                    try:
                        return protocol.decode(body)
                    except protocol.ProtocolError as exc:
                        self.kill()
                        raise SandboxError("protocol", f"malformed reply {what} ({exc})") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise SandboxError("timeout", f"time limit exceeded {what}")
            readable, _, _ = select.select([self._rep_r], [], [], remaining)
            if readable:
                chunk = os.read(self._rep_r, min(1 << 20, max(need - len(self._buffer), 65536)))
                if not chunk:
                    self._crashed(what)
                self._buffer += chunk

    def _crashed(self, what: str):
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        code = self.proc.poll()
        self.kill()
        raise SandboxError("crash", f"{describe_exit(code, self.limits)} {what}")
