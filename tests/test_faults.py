"""Faults while training (issue 17): a process killed between any two writes of a checkpoint, a
second Ctrl-C while one is written, a full disk, a bad --out, a finished run resumed, a Ctrl-C
while the final files are written, bursts of Ctrl-C, a run that diverges.

A kill is simulated in the process by making the k-th ``os.replace``/``os.remove`` (every write
that becomes visible is one of these: files are written under temporary names, then renamed)
raise ``Killed``, a BaseException nothing in cnnspec catches; once "killed", every later file
operation raises too, so nothing after the kill reaches the disk. One test kills a real process.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.errors import CnnSpecError
from cnnspec.train import checkpoint, fit
from test_train import TINY, interrupt_at, quiet, without_timings

EPOCHS = 2


class Killed(BaseException):
    """The process died here."""


class FileOps:
    """Counts the visible file operations (os.replace, os.remove) in the folder ``root`` (numba's
    cache, written on a first compile, is not the run's); ``kill_at`` k makes the k-th (and every
    later one) raise ``error`` before it happens."""

    def __init__(self, monkeypatch, root, kill_at=None, error=Killed):
        self.root, self.count, self.kill_at, self.error, self.dead = str(root), 0, kill_at, error, False
        self.log = []                       # (operation, path relative to root) of every counted one
        for name in ("replace", "remove"):
            monkeypatch.setattr(os, name, self.wrap(getattr(os, name)))

    def wrap(self, real):
        def op(*args, **kwargs):
            if not os.fspath(args[-1]).startswith(self.root):
                return real(*args, **kwargs)
            self.count += 1
            self.log.append((real.__name__, os.path.relpath(os.fspath(args[-1]), self.root)))
            if self.dead or (self.kill_at is not None and self.count >= self.kill_at):
                self.dead = self.error is Killed
                raise self.error()
            return real(*args, **kwargs)
        return op


def arrays(path) -> dict:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.cnn"
    path.write_text(TINY)
    return cnnspec.load(path)


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """The uninterrupted run: its history, its folder and its file operations, in order."""
    out = tmp_path_factory.mktemp("straight") / "run"
    mp = pytest.MonkeyPatch()
    try:
        ops = FileOps(mp, out)
        history = fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS)
    finally:
        mp.undo()
    return history, out, ops.log


def first(log, operation, path) -> int:
    """The 1-based number of the first ``operation`` on ``path`` in the run's operations."""
    return next(i for i, op in enumerate(log, 1) if op == (operation, path))


def check_resumed_or_refused(tiny, out, straight_run) -> str:
    """Resume the run in ``out``: it ends with the straight run's weights and log ("resumed"),
    or is refused with a message saying why ("refused: ..."); never anything else."""
    history, straight_out, _ = straight_run
    try:
        resumed = fit(tiny, echo=quiet, progress=False, resume=out)
    except CnnSpecError as err:
        if "nothing to resume" in err.message:       # it had finished: its files must be complete
            assert same_arrays(arrays(out / "weights.npz"), arrays(straight_out / "weights.npz"))
            assert (out / "curves.png").is_file()
            rows = json.loads((out / "log.json").read_text())["epochs"]
            assert without_timings(rows) == without_timings(history.rows)
            return "finished"
        return f"refused: {err.message}"
    assert same_arrays(resumed.model.arrays(), history.model.arrays())
    assert without_timings(resumed.rows) == without_timings(history.rows)
    assert same_arrays(arrays(out / "weights.npz"), arrays(straight_out / "weights.npz"))
    assert {p.name for p in out.iterdir()} >= {"weights.npz", "log.csv", "log.json", "curves.png"}
    return "resumed"


def test_a_run_killed_between_any_two_writes_resumes_exactly_or_is_refused(tiny, straight, tmp_path,
                                                                           monkeypatch):
    log = straight[2]
    n_ops = len(log)
    commit = first(log, "replace", os.path.join("checkpoint", "state.json"))
    assert n_ops >= 17 and commit > 3     # two checkpoints, the final files and the finished mark
    outcomes = {}
    for k in range(1, n_ops + 1):
        out = tmp_path / f"kill{k}"
        with monkeypatch.context() as mp:
            ops = FileOps(mp, out, kill_at=k)
            with pytest.raises(Killed):
                fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS)
            assert ops.dead
        outcomes[k] = check_resumed_or_refused(tiny, out, straight)
    # refused exactly when killed before the first checkpoint was committed (nothing to resume
    # from yet); resumed bit-identically from every later kill
    assert all("no checkpoint here to resume" in outcomes[k] for k in range(1, commit + 1)), outcomes
    assert all(outcomes[k] == "resumed" for k in range(commit + 1, n_ops + 1)), outcomes


def test_a_second_ctrl_c_while_the_checkpoint_is_written(tiny, straight, tmp_path, monkeypatch):
    """The issue's reproduction: Ctrl-C stops after the batch, a second Ctrl-C lands while the
    checkpoint is being written (here after each of its writes in turn)."""
    epoch_1 = first(straight[2], "replace", "log.json")     # the writes that end epoch 1
    for k in range(1, 10):
        out = tmp_path / f"stop{k}"
        with monkeypatch.context() as mp:
            FileOps(mp, out, kill_at=epoch_1 + k, error=KeyboardInterrupt)
            with pytest.raises(KeyboardInterrupt):
                fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS, on_batch=interrupt_at(2, 1))
        assert check_resumed_or_refused(tiny, out, straight) == "resumed", k


def test_a_real_kill_after_the_new_weights_before_the_new_optimizer_state(tiny, straight, tmp_path):
    """A process that dies (os._exit, as SIGKILL) right after the second checkpoint's new weights
    are in place: the committed checkpoint is still the first one, and resuming is exact."""
    out = tmp_path / "run"
    code = textwrap.dedent(f"""
        import os, sys
        real, count = os.replace, [0]
        def replace(src, dst):
            real(src, dst)
            count[0] += 1
            if os.path.basename(dst).startswith("weights-2"):
                os._exit(9)
        os.replace = replace
        from cnnspec.cli import main
        sys.exit(main(["train", {str(tiny.file)!r}, "--epochs", "{EPOCHS}", "--out", {str(out)!r}, "--no-progress"]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == \
        ["best-1.npz", "optimizer-1.npz", "state.json", "weights-1.npz", "weights-2.npz"]
    assert check_resumed_or_refused(tiny, out, straight) == "resumed"


def test_resume_refuses_a_checkpoint_whose_parts_disagree(tiny, straight, tmp_path):
    """Parts of two checkpoints mixed by hand (the issue's silent 0.12 error): refused."""
    out = tmp_path / "run"
    fit(tiny, echo=quiet, progress=False, out=out, epochs=1)
    first = (out / "checkpoint" / "weights-1.npz").read_bytes()
    fit(tiny, echo=quiet, progress=False, resume=out, epochs=2)
    newest = next((out / "checkpoint").glob("weights-*.npz"))
    newest.write_bytes(first)                     # the older weights under the newer name
    with pytest.raises(CnnSpecError, match=f"the checkpoint's parts disagree: {newest.name}") as info:
        fit(tiny, echo=quiet, progress=False, resume=out, epochs=3)
    assert info.value.file == str(out / "checkpoint")
    (out / "checkpoint" / "state.json").write_text("{")
    with pytest.raises(CnnSpecError, match="cannot read this checkpoint"):
        fit(tiny, echo=quiet, progress=False, resume=out, epochs=3)
    (out / "checkpoint" / "state.json").write_text(json.dumps({"epoch": 2}))
    with pytest.raises(CnnSpecError, match="not a checkpoint this version of cnnspec can resume"):
        fit(tiny, echo=quiet, progress=False, resume=out, epochs=3)
    (out / "checkpoint" / "weights.npz").write_bytes(first)          # as an earlier cnnspec left it
    with pytest.raises(CnnSpecError) as info:
        fit(tiny, echo=quiet, progress=False, resume=out, epochs=3)
    assert f"--init {out / 'checkpoint' / 'weights.npz'}" in info.value.hint


# -- a full disk, a bad --out ---------------------------------------------------------------------

def test_a_full_disk_keeps_the_last_checkpoint(tiny, straight, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_fsync = os.fsync

    def fsync(fd):                  # the disk fills up with the second checkpoint's weights
        if ".weights-2.tmp" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    with monkeypatch.context() as mp:
        mp.setattr(os, "fsync", fsync)
        with pytest.raises(CnnSpecError) as info:
            fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS)
    err = info.value
    assert "no space left on the disk" in err.message and err.file.startswith(str(out))
    assert f"free some space, then continue with --resume {out}" in err.hint
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]      # no half-written file left
    assert check_resumed_or_refused(tiny, out, straight) == "resumed"


def test_a_full_disk_for_real(tiny, straight, tmp_path, capsys, monkeypatch):
    """A real ENOSPC: on a 1 MiB tmpfs filled, when training ends, to within 24 KiB, the weights
    fit but the curves do not; after space is freed, --resume writes the final files. Needs
    permission to mount a tmpfs (root)."""
    from cnnspec.train.loop import Run

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root: the simulated full disk test covers this")
    try:
        out, filler = disk / "run", disk / "filler"
        write_final = Run.write_final

        def fill_then_write(self):
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            filler.write_bytes(bytes(free - 24 * 1024))
            write_final(self)
        with monkeypatch.context() as mp:
            mp.setattr(Run, "write_final", fill_then_write)
            assert main(["train", str(tiny.file), "--epochs", str(EPOCHS), "--out", str(out), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "curves.png: error: cannot write the training curves: no space left on the disk" in err
        assert f"hint: the last complete checkpoint is kept: free some space, then continue with --resume {out}" in err
        assert "Traceback" not in err and not (out / "curves.png").exists()
        assert not [p for p in out.rglob("*") if ".tmp" in p.name]
        filler.unlink()
        assert main(["train", str(tiny.file), "--resume", str(out), "--no-progress"]) == 0
        assert f"{out / 'curves.png'}" in capsys.readouterr().out
        assert same_arrays(arrays(out / "weights.npz"), arrays(straight[1] / "weights.npz"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_bad_out_is_refused_before_training(tiny, tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    started = time.perf_counter()
    assert main(["train", str(tiny.file), "--out", str(taken), "--no-progress"]) == 1
    assert f"{taken}: error: the run folder is a file, not a folder" in capsys.readouterr().err
    assert main(["train", str(tiny.file), "--out", str(taken / "run"), "--no-progress"]) == 1
    assert "a part of the path is a file, not a folder" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    real_write = Path.write_bytes

    def write_bytes(self, data):            # a read-only folder (as root, chmod would not stop us)
        if self.parent == locked:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_write(self, data)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    assert main(["train", str(tiny.file), "--out", str(locked), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert f"{locked}: error: cannot write in the run folder: permission denied" in captured.err
    assert "epoch 1/" not in captured.out      # refused before any training


# -- the end of a run -----------------------------------------------------------------------------

def test_resume_of_a_finished_run_writes_nothing_and_says_what_to_do(tiny, tmp_path, capsys):
    """Issue 9: it said to give --epochs, then rewrote the weights and exited 0."""
    out = tmp_path / "run"
    assert main(["train", str(tiny.file), "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert main(["train", str(tiny.file), "--resume", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{out}: error: this run has already trained for 1 epoch: "
                                   "there is nothing to resume")
    assert f"hint: give --epochs N with N > 1 to train it further, e.g. --resume {out} --epochs 2" in captured.err
    assert "wrote" not in captured.out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
    assert main(["train", str(tiny.file), "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out


def test_ctrl_c_while_the_curves_are_drawn_is_finished_by_resume(tiny, straight, tmp_path, capsys,
                                                                 monkeypatch):
    """It printed "wrote ... curves.png" without writing it, and no command ever wrote it."""
    import cnnspec.render.pictures as pictures

    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as mp:
        mp.setattr(pictures, "plot_curves", interrupted)
        assert main(["train", str(tiny.file), "--epochs", str(EPOCHS), "--out", str(out), "--no-progress"]) == 130
    captured = capsys.readouterr()
    assert "wrote" not in captured.out and "interrupted" in captured.err and "Traceback" not in captured.err
    assert not (out / "curves.png").exists() and not list(out.glob(".curves*"))
    assert main(["train", str(tiny.file), "--resume", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "writing the final files its run did not finish writing" in captured.out
    assert str(out / "curves.png") in captured.out.splitlines()[-1] and (out / "curves.png").is_file()
    assert same_arrays(arrays(out / "weights.npz"), arrays(straight[1] / "weights.npz"))
    assert main(["train", str(tiny.file), "--resume", str(out), "--no-progress"]) == 1
    assert "nothing to resume" in capsys.readouterr().err


# -- divergence and non-finite weights ------------------------------------------------------------

def test_a_diverging_run_stops_with_a_message_and_a_non_zero_exit(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny.file), "--lr", "1e10", "--epochs", "3", "--out", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    first = captured.err.splitlines()[0]
    assert first.startswith("error: training diverged: the loss became nan in epoch 1, batch "), captured.err
    assert "hint: the learning rate lr=1e+10 is likely too high" in captured.err and "try --lr 1e+09" in captured.err
    assert "Traceback" not in captured.err and "wrote" not in captured.out
    assert not (out / "weights.npz").exists()


def diverge_after(monkeypatch, epoch=None, batch=None):
    """From the batch after (epoch, batch) on (from the first, without them), every training
    step's loss is NaN, as a run that diverges there sees it."""
    from cnnspec.engine.model import Model

    poisoned = [epoch is None]
    real = Model.train_step

    def train_step(self, *args, **kwargs):
        loss, output = real(self, *args, **kwargs)
        return (float("nan") if poisoned[0] else loss), output
    monkeypatch.setattr(Model, "train_step", train_step)

    def on_batch(e, b, loss):
        if (e, b) == (epoch, batch):
            poisoned[0] = True
    return on_batch


def files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_new_run_in_an_earlier_runs_folder_loses_nothing_until_it_saves(tiny, tmp_path, monkeypatch):
    """QA defect 3: a new run into the folder of a finished one deleted its best.npz before the
    first batch, and when it then diverged said "the checkpoint of epoch 0 is kept" of the
    earlier run's checkpoint. Now the earlier run's files stay as they are until the new run
    commits a checkpoint of its own, and the message names the checkpoint really kept."""
    out = tmp_path / "run"
    fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS)
    earlier = files(out)
    assert "best.npz" in earlier
    with monkeypatch.context() as mp:              # diverges before it saves anything
        with pytest.raises(CnnSpecError) as info:
            fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS, on_batch=diverge_after(mp, 1, 0))
    assert info.value.message.startswith("training diverged: the loss became nan in epoch 1, batch 2/6; "
                                         f"nothing of this run was saved ({out} holds an earlier run's files, "
                                         "untouched)"), info.value.message
    assert files(out) == earlier                  # best.npz, the checkpoint, the logs: all the earlier run's
    with monkeypatch.context() as mp:              # the same on its very first batch
        with pytest.raises(CnnSpecError, match="nothing of this run was saved"):
            fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS, on_batch=diverge_after(mp))
    assert files(out) == earlier
    real_fsync = os.fsync

    def fsync(fd):                  # the disk is full when the new run writes its first checkpoint
        if ".weights-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    with monkeypatch.context() as mp:              # no hint to --resume: that would go on with the earlier run
        mp.setattr(os, "fsync", fsync)
        with pytest.raises(CnnSpecError, match="no space left on the disk") as info:
            fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS)
    assert "--resume" not in (info.value.hint or "") and files(out) == earlier
    # a new run interrupted in epoch 1 has committed its own checkpoint, which has no best epoch
    # yet: the earlier run's best.npz is gone with the earlier run's checkpoint
    stopped = fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS, on_batch=interrupt_at(1, 1))
    assert stopped.interrupted and not (out / "best.npz").exists()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["rows"]) == (1, 2, [])
    with monkeypatch.context() as mp:              # its resume diverges: the checkpoint named is that one
        with pytest.raises(CnnSpecError) as info:
            fit(tiny, echo=quiet, progress=False, resume=out, on_batch=diverge_after(mp))
    assert f"; the checkpoint in epoch 1 after batch 2 is kept in {out / 'checkpoint'}" in info.value.message
    # a new run that diverges in epoch 2 keeps its own epoch 1: its checkpoint and its best.npz
    with monkeypatch.context() as mp:
        with pytest.raises(CnnSpecError) as info:
            fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS, on_batch=diverge_after(mp, 2, 0))
    assert info.value.message.endswith(f"in epoch 2, batch 2/6; the checkpoint after epoch 1 is kept in "
                                       f"{out / 'checkpoint'}"), info.value.message
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"], len(state["rows"])) == (2, 0, 1)
    parts, _ = checkpoint.load(out / "checkpoint")
    assert same_arrays(arrays(out / "best.npz"), parts["best"])
    assert (out / "best.npz").read_bytes() != earlier["best.npz"]
    # and a run that ends replaces every file of the earlier run, best.npz with its own
    history = fit(tiny, echo=quiet, progress=False, out=out, epochs=EPOCHS)
    assert same_arrays(arrays(out / "best.npz"), history.best_weights)
    assert out / "best.npz" in history.written
    # --epochs 0 there: its own checkpoint (not the earlier run's marked finished), no best.npz
    fit(tiny, echo=quiet, progress=False, out=out, epochs=0)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["rows"], state["finished"]) == (1, [], True)
    assert not (out / "best.npz").exists()


def test_weights_that_are_not_finite_load_with_a_warning(tiny, tmp_path, capsys):
    model = tiny.compile()
    model.params["conv1"]["weight"][0, 0, 0, 0] = np.nan
    model.params["dense2"]["bias"][:] = np.inf
    model.save(tmp_path / "w.npz")
    picture = tmp_path / "x.npy"
    np.save(picture, np.zeros((1, 12, 12), np.float32))
    assert main(["run", str(tiny.file), "--weights", str(tmp_path / "w.npz"), "--input", str(picture)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'w.npz'}: weights that are not finite numbers: conv1.weight (1 NaN); " \
           f"dense2.bias (3 infinite)" in err
    with pytest.warns(cnnspec.errors.CnnSpecWarning, match="conv1.weight"):
        tiny.compile().load(tmp_path / "w.npz")


@pytest.mark.parametrize("log, why", [
    ("[]", "it holds a JSON list"), ('{"config": 5}', "`config` is not an object"),
    ('{"classes": 7}', "`classes` is not a list"), ('{"config": {"seed": "x"}}', "config `seed` is 'x'"),
    ('{"config": {"val_split": 3}}', "out of range"), ('{"conf', "Unterminated string"), (b"\xff\xfe", "Expecting value")])
def test_a_malformed_log_beside_the_weights_is_ignored_with_a_warning(tiny, tmp_path, capsys, log, why):
    tiny.compile().save(tmp_path / "weights.npz")
    (tmp_path / "log.json").write_bytes(log.encode() if isinstance(log, str) else log)
    picture = tmp_path / "x.npy"
    np.save(picture, np.zeros((1, 12, 12), np.float32))
    assert main(["run", str(tiny.file), "--weights", str(tmp_path / "weights.npz"), "--input", str(picture)]) == 0
    assert main(["evaluate", str(tiny.file), "--weights", str(tmp_path / "weights.npz")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'log.json'}: ignoring this log.json" in err and why in err, err
    assert "Traceback" not in err


# -- Ctrl-C ---------------------------------------------------------------------------------------

def test_bursts_of_ctrl_c_never_print_a_traceback(tiny, tmp_path):
    """A burst of six Ctrl-Cs while the command loads (once Python itself has started: before
    that, cnnspec's code is not running yet) and while it trains."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnspec", "--version"], capture_output=True, env=env, timeout=60)
    startup = time.perf_counter() - started
    for when in ("loading", "training"):
        out = tmp_path / when
        child = subprocess.Popen([sys.executable, "-m", "cnnspec", "train", str(tiny.file), "--epochs", "500",
                                  "--out", str(out), "--no-progress"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        try:
            if when == "training":
                line = child.stdout.readline()
                while line and line.split()[:2] != ["epoch", "1/500"]:
                    line = child.stdout.readline()
            else:
                time.sleep(1.5 * startup)              # importing, reading the data, compiling
            for _ in range(6):
                child.send_signal(signal.SIGINT)
                time.sleep(0.01)
            out_text, err = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
        # 130, or killed by the SIGINT itself (-2; a shell shows 130 for both) once nothing is left to do
        assert child.returncode in (130, -signal.SIGINT), (when, err)
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (when, err)
