"""Pictures written with matplotlib (explain -o, filters -o, run --rf-out/--feature-maps/--filters):
a missing folder is made (as render and report make it), and a name matplotlib cannot write is a
one-line error naming the file, never a traceback."""
import os
import subprocess
import sys
from pathlib import Path

SPECS = Path(__file__).resolve().parent.parent / "specs"


def cnnspec(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(SPECS.parent))
    return subprocess.run([sys.executable, "-m", "cnnspec", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_missing_folder_is_made(tmp_path):
    out = tmp_path / "new" / "deeper" / "kernels.png"
    r = cnnspec("filters", str(SPECS / "lenet5.cnn"), "--layer", "conv1", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "Traceback" not in r.stderr


def test_unwritable_names_are_errors(tmp_path):
    for name in ("kernels.txt", "kernels", str(tmp_path)):
        r = cnnspec("filters", str(SPECS / "lenet5.cnn"), "--layer", "conv1", "-o", name, cwd=tmp_path)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"{name}: error:" in r.stderr
    assert not (tmp_path / "kernels.png").exists()
