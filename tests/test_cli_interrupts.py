"""Ctrl-C in bursts, anywhere in `cnnspec ...` (issue 17): one line, ``interrupted``, status 130,
never a traceback — while the commands load, while a long file is read and analysed, and (the
command having finished) while the interpreter exits, joins threads and runs atexit handlers,
where it is ignored and the command's own status stands.

The child says where it is (``CNNSPEC_TEST_WAIT``, a hook of cnnspec.cli) and the bursts are sent
from there, so every case is reached on every run: nothing is retried.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def start(args, wait, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", CNNSPEC_TEST_WAIT=wait)
    return subprocess.Popen([sys.executable, "-m", "cnnspec", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def wait_for(stream, text):
    """Read ``stream`` up to the line holding ``text``; returns the lines read."""
    lines = []
    while True:
        line = stream.readline()
        assert line, f"the child ended before saying {text!r}: {lines}"
        lines.append(line)
        if text in line:
            return lines


def burst(child, delay, count=6, gap=0.002):
    time.sleep(delay)
    for _ in range(count):
        child.send_signal(signal.SIGINT)
        time.sleep(gap)


def finish(child):
    try:
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    return out, err


def clean(err):
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize("delay", [0, 0.02, 0.2])
def test_a_burst_while_the_commands_load(tmp_path, delay):
    child = start(["check", "nothing.cnn"], "import", tmp_path)
    wait_for(child.stderr, "cnnspec: waiting at import")
    burst(child, delay)
    out, err = finish(child)
    clean(err)
    assert (child.returncode, err) == (130, "interrupted\n")


def long_spec(tmp_path, layers=40_000):
    path = tmp_path / "long.cnn"
    path.write_text("network N {\n    input x: 8x8x8\n" + "    conv(8, 3x3, pad=1) -> relu\n" * (layers // 2) + "}\n")
    return path


@pytest.mark.parametrize("delay", [0, 0.05, 0.3])
def test_a_burst_while_a_long_file_is_read_and_analysed(tmp_path, delay):
    """check of 40,000 layers takes seconds; the bursts land in its first half second."""
    long_spec(tmp_path)
    child = start(["check", "long.cnn"], "command:0", tmp_path)
    wait_for(child.stderr, "cnnspec: waiting at command")
    burst(child, delay)
    out, err = finish(child)
    clean(err)
    assert (child.returncode, out, err) == (130, "", "interrupted\n")


def test_a_single_ctrl_c_and_then_more_after_a_pause(tmp_path):
    long_spec(tmp_path)
    child = start(["check", "long.cnn"], "command:0", tmp_path)
    wait_for(child.stderr, "cnnspec: waiting at command")
    burst(child, 0.1, count=1)
    burst(child, 0.05, count=3, gap=0.05)
    out, err = finish(child)
    clean(err)
    assert (child.returncode, err) == (130, "interrupted\n")


def test_bursts_while_the_interpreter_exits_are_ignored(tmp_path):
    """The command has finished (its result printed): Ctrl-Cs while the interpreter joins a
    thread and runs an atexit handler neither print anything nor change the status."""
    (tmp_path / "net.cnn").write_text("network N {\n    input x: 1x8x8\n    conv(2, 3x3) -> relu\n}\n")
    child = start(["check", "net.cnn"], "exit", tmp_path)
    wait_for(child.stdout, "net.cnn: ok")
    burst(child, 0.05)                                   # the thread is still being waited for
    wait_for(child.stderr, "cnnspec: waiting at atexit")
    burst(child, 0.05)
    out, err = finish(child)
    clean(err)
    assert child.returncode == 0 and "interrupted" not in err, err
