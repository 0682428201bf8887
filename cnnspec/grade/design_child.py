"""The child process that trains a student's network for a design problem (design.py starts it as

    python -s -B design_child.py REQUEST_FD REPLY_FD

in a fresh temporary working directory, a new session and a scrubbed environment).

Unlike child.py, this process runs no student code: the student's ``.cnn`` file is data, read by
cnnspec's own parser (no ``eval``, no imports outside the files sent), and trained by cnnspec's
engine. It is still sandboxed as a submission is, because what it is asked to do comes from a
student: resource limits first (address space, CPU seconds, file size, open files; soft = hard),
then, while still the grader's user, cnnspec is imported and every kernel the training needs is
compiled (one step on a batch of each size the epochs use, from numba's cache when warm); then,
when the grader runs as root, the process drops to the sandbox user for good, dies with the
grader, refuses processes, sockets and writes outside its folder (an audit hook), and trains.

It receives the files of the submission (the .cnn and what it imports, all from the student's
folder), the training split and the settings; it sends back the trained arrays and the epochs'
losses. The held-out samples that score the network never enter it: the grader evaluates the
arrays itself.

Messages use protocol.py (length-prefixed JSON with raw arrays; nothing unpickled).
"""
import os
import sys
import time


def main():
    req_fd, rep_fd = int(sys.argv[1]), int(sys.argv[2])
    here = os.path.dirname(os.path.abspath(__file__))
    import importlib.util

    spec = importlib.util.spec_from_file_location("_cnnspec_grade_protocol", os.path.join(here, "protocol.py"))
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    child = _load(here, "child.py", "_cnnspec_grade_child")     # read_body, set_limits, drop_privileges
    config = protocol.decode(child.read_body(req_fd))
    child.set_limits(config["limits"])

    def send(value):
        protocol.write_message(rep_fd, value)

    started = time.perf_counter()
    try:
        import numpy as np

        import cnnspec
        from cnnspec.data import Dataset
        from cnnspec.train import fit
        from cnnspec.train.config import TrainConfig

        workdir = os.path.realpath(os.getcwd())
        for name, text in config["sources"].items():
            path = os.path.realpath(os.path.join(workdir, name))
            if not path.startswith(workdir + os.sep):
                raise ValueError(f"a file outside the folder: {name}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        from cnnspec.lang.imports import IMPORT_ROOT

        IMPORT_ROOT.set(workdir)             # the files sent, and nothing else, can be imported
        net = cnnspec.load(os.path.join(workdir, config["main"]))
        x, y = config["x"], config["y"].astype(np.int64)
        settings = TrainConfig.from_json(config["train"])
        empty_x, empty_y = x[:0], y[:0]

        def dataset(xs, ys):
            return Dataset("grader", list(config["classes"]), xs, ys, empty_x, empty_y, task=settings.task)

        # compile every kernel now, as the grader's user (numba's cache is theirs): one epoch over
        # a full batch and the last, smaller one, each size the real epochs use
        remainder = len(x) % settings.batch
        n = min(len(x), settings.batch + (remainder or 0))
        warm = TrainConfig.from_json(config["train"])
        warm.epochs = 1
        fit(net, warm, dataset=dataset(x[:n], y[:n]), progress=False, echo=lambda *a: None)
        send({"status": "warm", "seconds": time.perf_counter() - started})
    except Exception as exc:              # noqa: BLE001 -- reported to the grader, which decides
        send({"status": "error", "stage": "compile", "message": f"{type(exc).__name__}: {exc}"[:2000]})
        return

    if config.get("user"):
        child.drop_privileges(*config["user"])
    child.die_with_parent(config["parent"])
    sys.addaudithook(_Guard(workdir).audit)

    started = time.perf_counter()
    lines = []
    try:
        history = fit(net, settings, dataset=dataset(x, y), progress=False, echo=lines.append)
        arrays = {k: np.ascontiguousarray(v) for k, v in history.model.arrays().items()}
        rows = [{k: v for k, v in row.items() if isinstance(v, (int, float)) or v is None} for row in history.rows]
    except Exception as exc:              # noqa: BLE001
        send({"status": "error", "stage": "training", "message": f"{type(exc).__name__}: {exc}"[:2000]})
        return
    send({"status": "done", "arrays": arrays, "rows": rows, "lines": [str(s)[:500] for s in lines[:40]],
          "seconds": time.perf_counter() - started, "uid": os.getuid()})


def _load(here, filename, name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(here, filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Guard:
    """Refuses new processes, network access and writes outside the working folder."""

    REFUSED = ("os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
               "subprocess.Popen", "pty.spawn", "socket.", "os.symlink", "os.link", "resource.setrlimit",
               "resource.prlimit", "os.chroot")
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def __init__(self, workdir):
        self.workdir = workdir

    def audit(self, event, args):
        if event.startswith(self.REFUSED):
            raise PermissionError(f"refused in the training sandbox: {event}")
        if event == "open" and args and isinstance(args[0], (str, bytes)):
            mode, flags = args[1] or "", args[2] or 0
            if flags & self.WRITE_FLAGS or any(c in mode for c in "wax+"):
                path = os.path.realpath(os.fsdecode(args[0]))
                if not (path.startswith(self.workdir + os.sep) or path == "/dev/null"):
                    raise PermissionError(f"refused in the training sandbox: writing {path}")


if __name__ == "__main__":
    main()
