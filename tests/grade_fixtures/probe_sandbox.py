# A probe, not a hostile submission: relu_forward raises ValueError(JSON) describing the sandbox
# from the inside; the __PLACEHOLDERS__ are filled in by the tests.
import json
import os
import resource


def _attempt(action):
    try:
        return repr(action())[:40]
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"[:60]


def _big_file():
    with open("big.bin", "wb") as f:
        f.write(b"\0" * (__BIG__ << 20))
    return os.path.getsize("big.bin")


def _connect():
    import socket
    with socket.socket() as sock:            # a numeric address: no name lookup
        sock.settimeout(2)
        sock.connect(("127.0.0.1", 9))
        return "connected"


def relu_forward(x):
    info = {
        "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "pid": os.getpid(), "pgid": os.getpgrp(), "sid": os.getsid(0), "ppid": os.getppid(),
        "cwd": os.getcwd(), "home": os.environ.get("HOME"), "env": sorted(os.environ),
        "limits": {name: resource.getrlimit(getattr(resource, name))
                   for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")},
        "fork": _attempt(lambda: os.fork() or os._exit(0)),
        "kill_parent": _attempt(lambda: os.kill(os.getppid(), 0)),
        "setuid_root": _attempt(lambda: os.setuid(0)),
        "read_next_to_grader": _attempt(lambda: open("__NEXT_TO_GRADER__").read()),
        "big_file": _attempt(_big_file) if __BIG__ else None,
    }
    raise ValueError(json.dumps(info))


def sigmoid_forward(x):
    """The walls a kernel may add (Landlock), apart: relu_forward's message is near its length limit."""
    raise ValueError(json.dumps({
        "write_next_to_grader": _attempt(lambda: open("__NEXT_TO_GRADER__.new", "w").write("x")),
        "list_root": _attempt(lambda: os.listdir("/")),
        "connect": _attempt(_connect)}))
