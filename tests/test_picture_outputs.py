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


def test_a_bad_name_leaves_no_other_output(tmp_path):
    """Every output's name (and run's --rf unit) is checked before anything is written: a picture
    matplotlib cannot write, or a layer that does not exist, leaves no --npy or other picture behind."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1, 32, 32)).astype(np.float32))
    lenet = str(SPECS / "lenet5.cnn")
    r = cnnspec("explain", lenet, "--input", "x.npy", "--method", "saliency", "--npy", "map.npy",
                "-o", "map.txt", cwd=tmp_path)
    assert r.returncode == 1 and "map.txt: error: cannot write a picture as .txt" in r.stderr, r.stderr
    assert not (tmp_path / "map.npy").exists()
    for rf, rf_out, message in (("conv2:1,1", "rf.txt", "rf.txt: error: cannot write a picture as .txt"),
                                ("conv9:1,1", "rf.png", "no layer named `conv9`"),
                                ("conv2:10,0", "rf.png", "position 10,0 is outside the layer's 10x10 positions")):
        r = cnnspec("run", lenet, "--input", "x.npy", "--feature-maps", "maps.png", "--filters", "k.png",
                    "--rf", rf, "--rf-out", rf_out, cwd=tmp_path)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not [p.name for p in tmp_path.iterdir() if p.name != "x.npy"]
