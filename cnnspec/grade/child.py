"""The sandboxed child process that runs a student's functions. Started by sandbox.py as

    python -I -B -u child.py REQUEST_FD REPLY_FD

in a fresh temporary working directory, a new session and a scrubbed environment. It is a script,
never imported as part of ``cnnspec``: the child never imports the package (nor the reference).

In order, before any student code runs: read the configuration (the first message); lower the
resource limits (soft = hard, so they cannot be raised again); import NumPy and the modules a
submission commonly uses; when started as root, drop to the unprivileged user for good; install
the guard (an audit hook and a meta-path finder refusing forbidden imports, file access outside
the allowed places, processes, threads, sockets, ctypes and signals to other processes). Then
it imports the submission and answers calls: each request carries inputs only, each reply the
outputs, which the parent decodes strictly (protocol.py) and judges itself.

The guard is a second line of defence and a source of clear messages ("forbidden import:
cnnspec"); the boundary is the operating system: the separate user (when the grader runs as
root), the session, the resource limits and the parent's wall-clock timeout.
"""
import json
import os
import resource
import struct
import sys
import time
import warnings

# Imported before the switch to the sandbox user, who may not be able to read the Python install
# (e.g. one under /root): what submissions commonly import must already be loaded.
PRELOAD = ("math", "cmath", "random", "itertools", "functools", "collections", "collections.abc",
           "dataclasses", "typing", "operator", "copy", "string", "re", "warnings", "traceback",
           "linecache", "numbers", "fractions", "decimal", "statistics", "heapq", "bisect", "enum",
           "contextlib", "textwrap", "pprint", "time", "gc", "inspect", "signal", "threading",
           "subprocess", "io", "pathlib", "tempfile", "shutil", "glob", "pickle", "hashlib",
           "array", "numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.lib.stride_tricks",
           "numpy.testing", "sysconfig",
           "logging", "csv", "json", "argparse", "timeit", "unittest", "doctest", "pdb", "cProfile",
           "profile", "pstats", "concurrent.futures", "datetime", "queue", "sched", "uuid", "secrets",
           "base64", "struct", "gzip", "calendar", "tracemalloc", "unicodedata", "abc", "types",
           "weakref", "numbers", "platform", "difflib", "multiprocessing", "sys", "os.path")
# (~50 ms in all, numpy.testing 13-17 ms of it: students check their work with assert_allclose;
# asyncio, 20 ms more and no use in a layer, is left out.) A standard-library module that is
# neither here nor readable by the sandbox user gets its own message, naming the module whose
# import needed it.

# audit events refused outright (processes, threads, native code, network, limits)
REFUSED = ("os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
           "subprocess.Popen", "pty.spawn", "_thread.start_new_thread", "os.symlink", "os.link",
           "resource.setrlimit", "resource.prlimit", "sys.addaudithook", "os.chroot",
           "webbrowser.open", "os.startfile")
REFUSED_PREFIXES = ("ctypes.", "socket.", "_ssl.", "sqlite3.", "urllib.", "http.", "ftplib.",
                    "smtplib.", "imaplib.", "poplib.", "nntplib.", "telnetlib.")
# audit events whose path arguments must lie inside the working directory
WRITES = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown",
          "os.utime", "os.chflags", "os.lchflags", "os.lchmod", "os.lchown", "os.mkfifo",
          "os.mknod", "os.removexattr", "os.setxattr", "shutil.copyfile", "shutil.copytree",
          "shutil.move", "shutil.rmtree", "shutil.make_archive", "shutil.unpack_archive")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_body(fd):
    (n,) = struct.unpack(">Q", read_exact(fd, 8))
    return read_exact(fd, n)


def set_limits(limits):
    def cap(resource_id, value):
        resource.setrlimit(resource_id, (value, value))

    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_CPU, int(limits["cpu_seconds"]))
    cap(resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) << 20)
    cap(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    if limits.get("memory_mb"):
        cap(resource.RLIMIT_AS, int(limits["memory_mb"]) << 20)
    if limits.get("no_processes"):
        cap(resource.RLIMIT_NPROC, 0)       # not even threads (a uid of its own when run as root)


def drop_privileges(uid, gid):
    """Become ``uid``/``gid`` in all three (real, effective, saved) ids: no way back to root."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise SystemExit("could not drop privileges")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("privileges were not dropped")


def die_with_parent(parent_pid):
    """SIGKILL this process when the grader dies (set after the user switch, which clears it)."""
    import ctypes                      # already loaded by NumPy; refused to the submission later

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)     # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:     # the grader died before that: do not run on
        raise SystemExit(1)


# Landlock (Linux 5.13+): an unprivileged process restricts itself, for good, to the files it
# names; the syscalls' numbers are the same on every architecture
_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_TRUNCATE = 1 << 14


def restrict_files(read_roots):
    """From here on this process (and anything it could start) may read only under
    ``read_roots``, write only under its working directory (and /dev/null), open no TCP connection and
    signal no process outside itself, as far as the kernel's Landlock ABI allows; enforced by
    the kernel, whatever the submission does to the guard.  Returns the ABI used (0: no
    Landlock here, e.g. an old kernel or a container that filters the calls)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))   # the version
    if abi < 1:
        return 0
    handled = (1 << 13) - 1                      # ABI 1: execute, read, write, make, remove ...
    handled |= (1 << 13) if abi >= 2 else 0      # refer (link or rename across folders)
    handled |= _FS_TRUNCATE if abi >= 3 else 0
    handled |= (1 << 15) if abi >= 5 else 0      # ioctl on devices
    fields = [handled]
    if abi >= 4:
        fields.append(3)                         # TCP bind and connect: no rule allows them
    if abi >= 6:
        fields.append(3)                         # scoped: abstract unix sockets, signals
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    ruleset = libc.syscall(_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return 0

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    def allow(path, access):
        """Whether the rule went in (a path the sandbox user cannot open is simply left out)."""
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return True
        try:
            if not os.path.isdir(path):          # a file takes only the rights of files
                access &= _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE
            rule = PathBeneath(access & handled, fd)
            return libc.syscall(_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1),
                                ctypes.byref(rule), ctypes.c_uint32(0)) == 0
        finally:
            os.close(fd)

    try:
        # the working directory by itself: the sandbox user may not be able to walk the path
        # to it (a private TMPDIR)
        rules = [(root, _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR) for root in read_roots]
        rules += [(device, _FS_READ_FILE) for device in ("/dev/zero", "/dev/urandom", "/dev/random")]
        rules += [("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE), (".", handled)]
        # a rule refused, or no_new_privs (PR_SET_NO_NEW_PRIVS, required) refused: no walls,
        # rather than walls the submission's own imports would run into
        if not all([allow(path, access) for path, access in rules]) or libc.prctl(38, 1, 0, 0, 0) != 0:
            return 0
        if libc.syscall(_LANDLOCK_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return 0
    finally:
        os.close(ruleset)
    return abi


class Guard:
    """Refuses what a submission must not do, and remembers each refusal for the report."""

    def __init__(self, config, workdir):
        self.forbidden = frozenset(config["forbidden"])
        # the Python install and the import path this interpreter (-I) was started with
        roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
        roots.update(p for p in sys.path if os.path.isabs(p) and os.path.isdir(p))
        self.read_roots = tuple(os.path.realpath(p) for p in sorted(roots)) + (workdir,)
        self.deny = [(os.path.realpath(p), what) for p, what in config["deny"]]   # (root, label)
        self.workdir = workdir
        self.violations = []
        self.pid, self.pgrp = os.getpid(), os.getpgrp()
        self._realpath, self._fsdecode = os.path.realpath, os.fsdecode   # bound now, not looked up later

    def record(self, message):
        if message not in self.violations and len(self.violations) < 50:
            self.violations.append(message)

    def refuse(self, message, error=PermissionError):
        self.record(message)
        raise error(message)

    # -- imports --------------------------------------------------------------------------
    def find_spec(self, name, path=None, target=None):       # a meta-path finder
        self.check_import(name)
        return None

    def check_import(self, name):
        top = str(name).partition(".")[0]
        if top in self.forbidden:
            self.refuse(f"forbidden import: {top}", ImportError)

    # -- files ----------------------------------------------------------------------------
    @staticmethod
    def _under(path, root):
        return path == root or path.startswith(root.rstrip("/") + "/")

    def check_path(self, raw, writing):
        if isinstance(raw, int) or raw is None:
            return                                   # an already open descriptor
        path = self._realpath(self._fsdecode(raw))
        if writing:
            if not (self._under(path, self.workdir) or path == "/dev/null"):
                self.refuse(f"forbidden file access: writing {path} (only the working directory "
                            f"may be written)")
            return
        for root, what in self.deny:
            if self._under(path, root):
                if what.startswith("import "):
                    self.refuse(f"forbidden import: {what[7:]} (by file path {path})", ImportError)
                self.refuse(f"forbidden file access: reading {path}")
        if path in ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"):
            return
        if not any(self._under(path, root) for root in self.read_roots):
            self.refuse(f"forbidden file access: reading {path}")

    # -- the audit hook -----------------------------------------------------------------------
    def audit(self, event, args):
        if event == "open":
            path, mode, flags = args
            writing = bool((flags or 0) & WRITE_FLAGS) or any(c in (mode or "") for c in "wax+")
            self.check_path(path, writing)
        elif event == "import":
            self.check_import(args[0])
        elif event in ("os.listdir", "os.scandir"):
            self.check_path(args[0] if args and args[0] is not None else ".", False)
        elif event in WRITES:
            for arg in args:
                if isinstance(arg, (str, bytes)) or hasattr(arg, "__fspath__"):
                    self.check_path(arg, True)
        elif event == "os.kill":
            pid = args[0]
            if pid not in (0, self.pid, -self.pgrp):
                self.refuse(f"forbidden: sending signal {args[1]} to another process (pid {pid})")
        elif event == "os.killpg":
            if args[0] not in (0, self.pgrp):
                self.refuse(f"forbidden: sending signal {args[1]} to process group {args[0]}")
        elif event in REFUSED or event.startswith(REFUSED_PREFIXES):
            self.refuse(f"forbidden: {event}")


def load_submission(path, display_name):
    """Import the submission as module ``submission``; an error or exit at import is reported, and
    the functions defined before it are still graded."""
    import types

    module = types.ModuleType("submission")
    module.__file__ = display_name
    sys.modules["submission"] = module
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):        # a BOM, as Windows editors save UTF-8 (the codec
        data = data[3:]                         # utf-8-sig is not loaded, nor loadable, here)
    source = data.decode("utf-8", errors="replace")
    try:
        exec(compile(source, display_name, "exec"), module.__dict__)
    except BaseException as exc:       # noqa: B036 -- SystemExit and KeyboardInterrupt too
        return module, describe_exception(exc, display_name)
    return module, None


def describe_exception(exc, display_name):
    """The exception in words, with the line numbers of the submission's frames; never raises."""
    import traceback

    try:
        traceback.clear_frames(exc.__traceback__)      # drop the locals (a memory hog's hoard)
        summary = traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__),
                                                 lookup_lines=False)
        frames = [f for f in summary if f.filename == display_name]
    except BaseException:              # noqa: B036
        frames = []
    line = frames[-1].lineno if frames else getattr(exc, "lineno", None)
    try:
        text = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else \
            f"{type(exc).__name__}: {exc}"
    except BaseException:              # noqa: B036 -- an exception that cannot be printed
        text = type(exc).__name__
    if isinstance(exc, ModuleNotFoundError) and exc.name and "forbidden import" not in text:
        top = exc.name.partition(".")[0]
        imported = _imported_by_submission(summary if frames else [], display_name)
        if imported and imported.partition(".")[0] != top:
            need = (f"the standard-library module {top}, which the sandbox cannot import (it runs as "
                    f"another user, who can only use the modules the grader loads for it)"
                    if top in getattr(sys, "stdlib_module_names", ()) else
                    f"{exc.name}, which the sandbox does not have (it has NumPy and the standard "
                    f"library only)")
            text = f"`{imported}` cannot be imported in the sandbox: it needs {need}; remove that import"
        elif top in getattr(sys, "stdlib_module_names", ()):
            text = (f"the standard-library module {top} cannot be imported in the sandbox (it runs as "
                    f"another user, who can only use the modules the grader loads for it): "
                    f"remove `import {top}`")
        else:
            text = f"{text} (the sandbox has NumPy and the standard library only)"
    where = ", ".join(f"line {f.lineno} in {f.name}" for f in frames[-5:])
    return {"type": type(exc).__name__, "message": text[:1000], "line": line, "where": where}


def _imported_by_submission(summary, display_name):
    """The module that the submission's last frame was importing when an import inside it failed
    (``numpy.testing`` when it needed ``sysconfig``): named from the first frame after the
    submission's that is a file on sys.path; None when the submission's own import failed."""
    last = max((i for i, f in enumerate(summary) if f.filename == display_name), default=None)
    if last is None:
        return None
    for frame in summary[last + 1:]:
        name = frame.filename
        if name.startswith("<"):                     # importlib's frozen bootstrap
            continue
        for root in sorted((p for p in sys.path if p), key=len, reverse=True):
            root = os.path.join(root, "")
            if name.startswith(root) and name.endswith(".py"):
                parts = name[len(root):-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                return ".".join(parts) or None
        return None
    return None


def encode_result(value, np, dtypes, depth=0):
    """Outputs as plain data for the wire; anything that is not what the API returns is described
    (a list, an ndarray subclass, an object) instead of sent."""
    kind = type(value)
    if kind is np.ndarray:
        native = value.dtype.newbyteorder("=") if value.dtype.byteorder == ">" else value.dtype
        if value.dtype.str not in dtypes and native.str not in dtypes:
            return {"$bad": f"an array of dtype {value.dtype}"[:120]}
        return value
    if kind is tuple or (kind is list and depth == 0):
        if depth > 0:
            return {"$bad": "a nested tuple"}
        return {"$" + kind.__name__: [encode_result(v, np, dtypes, depth + 1) for v in value[:8]]}
    if isinstance(value, tuple) and depth == 0:        # a namedtuple (dx, dw, db) is a tuple: its
        items = tuple.__getitem__(value, slice(0, 8))  # items, read as tuple's, go as any tuple's
        return {"$tuple": [encode_result(v, np, dtypes, depth + 1) for v in items]}
    if value is None:
        return None
    if kind in (float, int):
        return {"$num": float(value)}
    if isinstance(value, np.generic) and kind in (np.float16, np.float32, np.float64):
        return {"$scalar": np.asarray(value)}
    if isinstance(value, np.ndarray):
        return {"$bad": f"an ndarray subclass ({kind.__name__}), not a plain numpy.ndarray"[:160]}
    if kind is list:
        return {"$bad": "a list, not a NumPy array"}
    return {"$bad": f"an object of type {kind.__name__}, not a NumPy array"[:160]}


def main():
    req_fd, rep_fd = int(sys.argv[1]), int(sys.argv[2])
    config = json.loads(read_body(req_fd)[4:].decode("utf-8"))["h"]
    set_limits(config["limits"])
    import importlib
    import importlib.util

    for name in PRELOAD + tuple(config.get("preload", ())):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    spec = importlib.util.spec_from_file_location(
        "_cnnspec_grade_protocol", os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol.py"))
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    import numpy as np

    if config.get("user"):
        drop_privileges(*config["user"])
    die_with_parent(config["parent"])
    workdir = os.path.realpath(os.getcwd())
    guard = Guard(config, workdir)
    landlock = restrict_files(guard.read_roots) if config.get("walls") else 0
    if config.get("guard", True):
        sys.meta_path.insert(0, guard)
        sys.addaudithook(guard.audit)
    send = lambda value: protocol.write_message(rep_fd, value)          # noqa: E731

    started = time.perf_counter()
    module, import_error = load_submission(config["submission"], config["display_name"])
    defined = sorted(k for k, v in module.__dict__.items() if callable(v) and not k.startswith("_"))
    send({"status": "ready", "import_error": import_error, "defined": defined,
          "seconds": time.perf_counter() - started, "uid": os.getuid(), "landlock": landlock,
          "violations": guard.violations})
    reported = len(guard.violations)       # each reply carries the refusals of its own calls

    while True:
        try:
            request = protocol.decode(read_body(req_fd))
        except EOFError:
            return
        if request["op"] == "exit":
            return
        func = module.__dict__.get(request["func"])
        replies = [call(func, request["func"], args, np, protocol.DTYPES, config["display_name"])
                   for args in request["calls"]]
        try:
            send({"replies": replies, "violations": guard.violations[reported:]})
        except MemoryError:                # the message is a copy of the outputs (and more)
            megabytes = [_output_megabytes(r, np) for r in replies]
            replies = None
            send({"replies": [_too_large(mb, config["limits"].get("memory_mb")) for mb in megabytes],
                  "violations": guard.violations[reported:]})
        reported = len(guard.violations)


def _output_megabytes(reply, np):
    """The size of a reply's arrays, in MB."""
    total, stack = 0, [reply]
    while stack:
        v = stack.pop()
        if isinstance(v, np.ndarray):
            total += v.nbytes
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return total / 2 ** 20


def _too_large(megabytes, limit_mb):
    limit = f"; the sandbox's memory limit is {limit_mb} MB" if limit_mb else ""
    return {"status": "error", "error": {
        "type": "MemoryError",
        "message": f"the output ({megabytes:,.0f} MB) could not be sent back: no memory for a copy of it{limit}"}}


def call(func, name, args, np, dtypes, display_name):
    if func is None:
        return {"status": "missing"}
    if not callable(func):           # `relu_forward = 5`, or a name reused for a result
        return {"status": "error", "error": {
            "type": "TypeError", "message": f"{name} is not a function: it is an object of type {type(func).__name__[:40]} "
                                            f"at the end of your file", "line": None, "where": None}}
    args = [tuple(a) if isinstance(a, list) else a for a in args]
    before = [(a.copy(), a.shape, a.dtype) if type(a) is np.ndarray else None for a in args]
    started = time.perf_counter()
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            # deprecations (int() of a 1-element array, ...) are errors in later NumPy releases
            warnings.simplefilter("always", DeprecationWarning)
            value = func(*args)
    except NotImplementedError:
        return {"status": "not_implemented", "seconds": time.perf_counter() - started}
    except BaseException as exc:       # noqa: B036 -- report sys.exit() and Ctrl-C as well
        return {"status": "error", "error": describe_exception(exc, display_name),
                "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    deprecations = []
    for w in caught[:20]:
        try:
            if issubclass(w.category, DeprecationWarning):
                message = str(w.message)[:300]
                if message not in deprecations and len(deprecations) < 3:
                    deprecations.append(message)
        except BaseException:          # noqa: B036 -- a warning that cannot be printed
            pass
    modified = [i for i, (a, b) in enumerate(zip(args, before)) if b is not None and (
        type(a) is not np.ndarray or a.shape != b[1] or a.dtype != b[2] or a.tobytes() != b[0].tobytes())]
    return {"status": "ok", "value": encode_result(value, np, dtypes), "modified": modified,
            "seconds": seconds, "deprecations": deprecations}


if __name__ == "__main__":
    main()
