"""The specs of published networks against published figures (not against this code's output).

Parameter counts and GFLOPS are torchvision's published ones (its model documentation tables);
lecture 003's VGG table is transcribed by hand; VGG-16's receptive field is Araujo et al.'s table.
"""
import json
import math
import subprocess
import sys

import pytest

import cnnspec
from conftest import SPECS

# name: (params, GFLOPS as published, decimals published)
TORCHVISION = {
    "alexnet": (61_100_840, 0.714, 3),
    "vgg16": (138_357_544, 15.47, 2),
    "resnet18": (11_689_512, 1.814, 3),
    "resnet50": (25_557_032, 4.089, 3),
    "googlenet": (6_624_904, 1.498, 3),
}


@pytest.fixture(scope="module")
def nets():
    return {p.stem: cnnspec.load(p) for p in sorted(SPECS.glob("*.cnn"))}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_parameter_counts_and_macs(nets, name):
    params, gflops, decimals = TORCHVISION[name]
    totals = nets[name].summary()["totals"]
    assert totals["params"] == params
    assert round(totals["macs"] / 1e9, decimals) == pytest.approx(gflops)
    assert totals["flops"] == 2 * totals["macs"]


def test_every_spec_compiles_without_warnings(nets):
    expected = {"lenet5", "alexnet", "vgg16", "resnet18", "resnet50", "googlenet", "textcnn",
                "crosses", "edges"}
    assert expected <= set(nets)
    for name, net in nets.items():
        assert net.warnings == [], name


def test_lenet5_by_hand(nets):
    """LeNet-5: 1x32x32 -> 6x28x28 -> 6x14x14 -> 16x10x10 -> 16x5x5 -> 400 -> 120 -> 84 -> 10."""
    s = nets["lenet5"].summary()
    shapes = [tuple(layer["output_shape"]) for layer in s["layers"] if layer["op"] in ("conv", "maxpool", "dense")]
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120,), (84,), (10,)]
    params = {layer["name"]: layer["params"] for layer in s["layers"] if layer["params"]}
    assert params == {"conv1": 6 * 25 + 6, "conv2": 16 * 6 * 25 + 16, "dense1": 400 * 120 + 120,
                      "dense2": 120 * 84 + 84, "dense3": 84 * 10 + 10}
    assert s["totals"]["macs"] == 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10


# Lecture 003 (seeds/003), "Example VGGNet": output size (H, W, C) and weights without biases.
VGG_TABLE = [
    ("CONV3-64", (224, 224, 64), 1_728), ("CONV3-64", (224, 224, 64), 36_864), ("POOL2", (112, 112, 64), 0),
    ("CONV3-128", (112, 112, 128), 73_728), ("CONV3-128", (112, 112, 128), 147_456),
    ("POOL2", (56, 56, 128), 0),
    ("CONV3-256", (56, 56, 256), 294_912), ("CONV3-256", (56, 56, 256), 589_824),
    ("CONV3-256", (56, 56, 256), 589_824), ("POOL2", (28, 28, 256), 0),
    ("CONV3-512", (28, 28, 512), 1_179_648), ("CONV3-512", (28, 28, 512), 2_359_296),
    ("CONV3-512", (28, 28, 512), 2_359_296), ("POOL2", (14, 14, 512), 0),
    ("CONV3-512", (14, 14, 512), 2_359_296), ("CONV3-512", (14, 14, 512), 2_359_296),
    ("CONV3-512", (14, 14, 512), 2_359_296), ("POOL2", (7, 7, 512), 0),
    ("FC", (1, 1, 4096), 102_760_448), ("FC", (1, 1, 4096), 16_777_216), ("FC", (1, 1, 1000), 4_096_000),
]


def test_lecture_003_vgg_table_row_by_row(nets):
    net = nets["vgg16"]
    rows = [n for n in net.layers() if net[n]["op"] in ("conv", "maxpool", "dense")]
    assert len(rows) == len(VGG_TABLE)
    for name, (kind, (h, w, c), weights) in zip(rows, VGG_TABLE):
        node = net[name]
        assert node["output_shape"] == ((c,) if kind == "FC" else (c, h, w)), name
        assert node["op"] == {"CONV3": "conv", "POOL2": "maxpool", "FC": "dense"}[kind.split("-")[0]]
        assert math.prod(node["params"].get("weight", (0,))) == weights, name
    # The lecture's memory column: the input and every conv/pool/fc output (ReLU in place).
    memory = 224 * 224 * 3 + sum(h * w * c for _, (h, w, c), _ in VGG_TABLE)
    assert net.summary()["totals"]["activations"] == memory
    assert 15.1e6 < memory < 15.3e6          # the slide's "24M" is an arithmetic slip


def test_vgg16_receptive_field_araujo(nets):
    net = nets["vgg16"]
    last_pool = [n for n in net.layers() if net[n]["op"] == "maxpool"][-1]
    field = net[last_pool]["receptive_field"]
    assert field["size"] == [212, 212] and field["stride"] == [32, 32] and field["padding"] == [90, 90]
    assert field["aligned"]


def test_textcnn_is_one_dimensional(nets):
    net = nets["textcnn"]
    convs = [n for n in net.layers() if net[n]["op"] == "conv"]
    assert [net[n]["output_shape"] for n in convs] == [(100, 48), (100, 47), (100, 46)]
    assert net.output_shape == (2,)
    assert net.summary()["totals"]["params"] == 100 * 300 * (3 + 4 + 5) + 300 + 300 * 2 + 2


def test_crosses_has_the_lecture_kernels(nets):
    weights = nets["crosses"]["maps"]["config"]["weights"]
    assert weights.tolist() == [[[[-1, 1, -1], [1, 1, 1], [-1, 1, -1]]], [[[1, -1, 1], [-1, 1, -1], [1, -1, 1]]]]
    assert nets["crosses"]["maps"]["trainable"] is False


def test_summary_cold_process_does_not_import_numba():
    code = ("import sys, cnnspec.cli; rc = cnnspec.cli.main(['summary', '--json', %r]); "
            "assert 'numba' not in sys.modules, 'numba imported'; sys.exit(rc)") % str(SPECS / "resnet50.cnn")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["totals"]["params"] == 25_557_032
