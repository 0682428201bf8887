"""`cnnspec train`, `evaluate` and `run` end to end on tiny data, and lecture 000's crosses."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.train import predict
from cnnspec.train.inference import kernel_names
from test_train import TINY

SPECS = Path(__file__).resolve().parent.parent / "specs"

# Lecture 000 (seeds/000), "Convolutions on images": pixels -1/+1, a "+" centred at row 1, column 1
# and an "X" centred at row 4, column 4 (0-based).
LECTURE_IMAGE = np.array([
    [-1, 1, -1, -1, -1, -1],
    [1, 1, 1, -1, -1, -1],
    [-1, 1, -1, -1, -1, -1],
    [-1, -1, -1, 1, -1, 1],
    [-1, -1, -1, -1, 1, -1],
    [-1, -1, -1, 1, -1, 1],
], dtype=np.float32)


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return path


def test_crosses_feature_maps_peak_where_the_patterns_are():
    net = cnnspec.load(SPECS / "crosses.cnn")
    result = predict(net.compile(), LECTURE_IMAGE[None], layers=["maps", "maxpool*"])
    plus, x = result.maps["maps"]
    assert plus.max() == 9 and np.unravel_index(plus.argmax(), plus.shape) == (1, 1)
    assert x.max() == 9 and np.unravel_index(x.argmax(), x.shape) == (4, 4)
    assert np.count_nonzero(plus == 9) == 1 and np.count_nonzero(x == 9) == 1
    pooled = result.output                                         # 2x3x3 after max-pooling
    assert pooled[0, 0, 0] == 9 and pooled[1, 2, 2] == 9
    assert kernel_names(net, "maps") == ["cross", "x_shape"] and kernel_names(net, "maxpool1") == []


def test_run_crosses_cli_draws_the_feature_maps(tmp_path, capsys):
    np.save(tmp_path / "lecture.npy", LECTURE_IMAGE)
    status = main(["run", str(SPECS / "crosses.cnn"), "--input", str(tmp_path / "lecture.npy"),
                   "--feature-maps", str(tmp_path / "maps.png"), "--filters", str(tmp_path / "kernels.png")])
    out = capsys.readouterr().out
    assert status == 0
    assert "output (2x3x3):" in out and "channel 0:" in out
    assert f"wrote {tmp_path / 'maps.png'} (image, maps, maxpool1)" in out
    assert (tmp_path / "maps.png").stat().st_size > 1000 and (tmp_path / "kernels.png").stat().st_size > 1000


def test_edges_on_a_real_photograph(tmp_path, capsys):
    """specs/edges.cnn's fixed kernels on matplotlib's sample photograph equal a plain NumPy
    cross-correlation (zero padding 1) of the same picture, read and resized as Pillow does."""
    from matplotlib import cbook
    from PIL import Image

    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(photo) as picture:
        grey = np.asarray(picture.convert("L").resize((128, 128), Image.Resampling.BILINEAR), np.float64) / 255
    from cnnspec.data.files import read_image
    np.testing.assert_allclose(read_image(Path(photo), (1, 128, 128))[0], grey, atol=1e-7)   # what `run` reads
    padded = np.pad(grey, 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))           # 128 x 128 x 3 x 3
    kernels = {"sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],                     # dsl.md's table
               "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
               "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16}
    result = predict(cnnspec.load(SPECS / "edges.cnn").compile(dtype="float64"),
                     grey[None], layers=["conv1"])
    maps = result.maps["conv1"]
    for channel, name in [(0, "sobel_x"), (2, "laplacian"), (5, "gaussian_blur")]:
        expected = np.einsum("hwij,ij->hw", windows, np.asarray(kernels[name], np.float64))
        np.testing.assert_allclose(maps[channel], expected, atol=1e-12, err_msg=name)
    status = main(["run", str(SPECS / "edges.cnn"), "--input", photo, "--feature-maps", str(tmp_path / "e.png")])
    assert status == 0 and "output (6x128x128):" in capsys.readouterr().out
    assert (tmp_path / "e.png").stat().st_size > 10000


def test_train_evaluate_run_end_to_end(tiny_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_file), "--epochs", "1", "--batch", "8", "--out", str(run), "--no-progress",
                 "--augment", "rotate(10)", "noise(0.02)"]) == 0
    out = capsys.readouterr().out
    assert "Tiny: training on shapes:plus,x,square,n=96: 86 train / 10 val samples of 1x12x12, 3 classes" in out
    assert ("sgd(lr=0.1, momentum=0.9), loss cross_entropy, 1 epoch, batch 8, seed 0, "
            "augment rotate(10), noise(0.02)") in out
    assert "epoch 1/1  train loss" in out and "validation accuracy" in out
    assert {p.name for p in run.iterdir()} >= {"weights.npz", "log.csv", "log.json", "curves.png", "checkpoint"}

    assert main(["evaluate", str(tiny_file), "--weights", str(run / "weights.npz"),
                 "--plot", str(tmp_path / "confusion.png")]) == 0
    out = capsys.readouterr().out
    assert "Tiny with" in out and "val split: accuracy" in out and "/10)" in out
    assert "confusion matrix" in out and (tmp_path / "confusion.png").is_file()
    assert main(["evaluate", str(tiny_file), "--weights", str(run / "weights.npz"), "--json",
                 "--split", "train"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 86 and report["classes"] == ["plus", "x", "square"]

    from PIL import Image

    picture = np.zeros((12, 12), np.uint8)
    picture[5:7, 1:11] = picture[1:11, 5:7] = 255
    Image.fromarray(picture).save(tmp_path / "plus.png")
    assert main(["run", str(tiny_file), "--weights", str(run / "weights.npz"), "--input", str(tmp_path / "plus.png"),
                 "--feature-maps", str(tmp_path / "fm.png"), "--layers", "conv1", "relu1",
                 "--filters", str(tmp_path / "filters.png"), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "top 2 classes (probability):" in out
    assert sum(name in out for name in ("plus", "x", "square")) >= 2
    assert f"wrote {tmp_path / 'fm.png'} (conv1, relu1)" in out and (tmp_path / "filters.png").is_file()


def test_run_without_weights_says_so(tiny_file, tmp_path, capsys):
    np.save(tmp_path / "zero.npy", np.zeros((12, 12), np.float32))
    assert main(["run", str(tiny_file), "--input", str(tmp_path / "zero.npy")]) == 0
    captured = capsys.readouterr()
    assert "no --weights: conv1, dense1, dense2 keep their random initial values" in captured.err
    assert "top 3 classes" in captured.out and "square" in captured.out


def test_cli_errors(tiny_file, tmp_path, capsys):
    np.save(tmp_path / "small.npy", np.zeros((5, 5), np.float32))
    assert main(["run", str(tiny_file), "--input", str(tmp_path / "small.npy")]) == 1
    assert "array has shape 5x5, the network's input is 1x12x12" in capsys.readouterr().err

    other = tmp_path / "other.npz"
    cnnspec.loads(TINY.replace("dense(16)", "dense(17)")).compile().save(other)
    assert main(["evaluate", str(tiny_file), "--weights", str(other)]) == 1
    assert "shape mismatch: dense1.weight" in capsys.readouterr().err

    assert main(["train", str(tiny_file), "--optimizer", "rmsprop", "--out", str(tmp_path / "r")]) == 1
    assert "unknown optimizer `rmsprop`" in capsys.readouterr().err
    assert main(["train", str(tiny_file), "--resume", str(tmp_path / "none")]) == 1
    assert "no checkpoint here to resume" in capsys.readouterr().err


def test_ctrl_c_in_the_cli_saves_a_checkpoint(tiny_file, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-m", "cnnspec", "train", str(tiny_file), "--epochs", "500",
                              "--out", str(run), "--no-progress"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            line = child.stdout.readline()
            if line.split()[:2] == ["epoch", "1/500"] or not line:
                break
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert "checkpoint saved" in out or "interrupted after epoch" in out
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["epoch"] >= 2 and state["network"] == "Tiny"
