"""The summary table as torchinfo and Keras users know it: --depth, --columns, the kernel column,
"Connected to" for merges, and columns aligned whatever the numbers' sizes."""
import json

import pytest

import cnnspec
from cnnspec import CnnSpecError
from cnnspec.analysis.summary import COLUMNS
from cnnspec.cli import main
from conftest import SPECS

# torchvision's resnet18: 11,689,512 parameters, 1.814 GFLOPS (MACs)
RESNET18_PARAMS, RESNET18_MACS = 11_689_512, 1_814_073_344


@pytest.fixture(scope="module")
def resnet18():
    return cnnspec.load(SPECS / "resnet18.cnn")


@pytest.fixture(scope="module")
def googlenet():
    return cnnspec.load(SPECS / "googlenet.cnn")


def body(text):
    """(header line, the row lines) of a summary table."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    return lines[rules[0] + 1], lines[rules[1] + 1:rules[2]]


def assert_aligned(text):
    """Every right-aligned column's cells end where its title ends; the others start where theirs starts."""
    header, rows = body(text)
    titles = [title for title, _ in COLUMNS.values() if title in header]
    for title in titles:
        start = header.index(title)
        end = start + len(title)
        right = next(r for t, r in COLUMNS.values() if t == title)
        for row in rows:
            if right:
                cell = row[:end].rsplit("  ", 1)[-1].strip()
                if cell:                                         # the cell is there, ending at `end`
                    assert row[end - 1] != " " and row[end:end + 2] in ("  ", " ", ""), (title, row)
            elif len(row) > start and row[start] != " ":
                assert row[start - 2:start] == "  ", (title, row)


def test_depth_collapses_block_instances(resnet18):
    rows = body(resnet18.summary_table(depth=1))[1]
    names = [row.split()[0] for row in rows]
    assert names[:6] == ["image", "conv1", "batchnorm1", "relu1", "maxpool1", "basic1"]
    assert "down3" in names and not any("." in n for n in names)
    basic1 = rows[names.index("basic1")].split()
    # two 3x3 64->64 convs (36,864 each) and two batchnorms (128 each); 2 x 115,605,504 MACs
    assert basic1[1:3] == ["basic(64)", "64x56x56"]
    assert basic1[3:5] == ["73,984", "231,211,008"]
    # the collapsed row's receptive field is its output's (basic1.relu2, lecture 003's 27x27)
    assert basic1[-1] == "27x27/4x4" == "{}x{}/4x4".format(*resnet18["basic1.relu2"]["receptive_field"]["size"])
    # the rows add up to torchvision's totals
    data = resnet18.summary(depth=1)
    assert sum(layer["params"] for layer in data["layers"]) == RESNET18_PARAMS
    assert sum(layer["macs"] for layer in data["layers"]) == RESNET18_MACS
    block = next(layer for layer in data["layers"] if layer["name"] == "down1")
    assert block["op"] == "block" and block["block_type"] == "down" and block["args"] == {"c": 128}
    assert block["output_shape"] == [128, 28, 28] and block["inputs"] == ["basic2.relu2"]
    assert data["totals"] == resnet18.summary()["totals"]


def test_depth_two_opens_one_level(googlenet):
    text = googlenet.summary_table(depth=2)
    rows = body(text)[1]
    # inception1 is open (a header with its totals in brackets), its cbr instances one row each
    header = next(row for row in rows if row.startswith("inception1 "))
    assert "[155,872]" in header                          # GoogLeNet's inception (3a): 155,872 weights
    assert any(row.startswith("  cbr3 ") and "cbr(128, 3, 1, 1)" in row for row in rows)
    assert not any(row.startswith("    ") for row in rows)      # nothing two levels deep
    assert sum(b["params"] for b in googlenet.summary(depth=2)["layers"]) == 6_624_904
    assert_aligned(text)


def test_depth_must_be_positive(resnet18, capsys):
    with pytest.raises(CnnSpecError, match="depth must be a positive integer"):
        resnet18.summary(depth=0)
    assert main(["summary", str(SPECS / "lenet5.cnn"), "--depth", "0"]) == 1
    assert "depth must be a positive integer" in capsys.readouterr().err


def test_columns_choose_and_order(capsys):
    assert main(["summary", str(SPECS / "lenet5.cnn"), "--columns", "kernel,op,params"]) == 0
    header, rows = body(capsys.readouterr().out)
    assert header.split() == ["Layer", "Kernel", "Op", "Params"]
    assert rows[1].split() == ["conv1", "5x5", "conv(6,", "5x5)", "156"]
    assert rows[3].split() == ["maxpool1", "2x2", "maxpool(2x2)", "-"]
    assert main(["summary", str(SPECS / "lenet5.cnn"), "--columns", "all"]) == 0
    header = body(capsys.readouterr().out)[0]
    assert [t for t, _ in COLUMNS.values() if t in header] == [t for t, _ in COLUMNS.values()]
    assert main(["summary", str(SPECS / "lenet5.cnn"), "--columns", "op,kernal"]) == 1
    err = capsys.readouterr().err
    assert "unknown summary column `kernal`" in err and "did you mean `kernel`?" in err


def test_kernel_in_the_json(resnet18):
    layers = {layer["name"]: layer for layer in resnet18.summary()["layers"]}
    assert layers["conv1"]["kernel"] == [7, 7] and layers["maxpool1"]["kernel"] == [3, 3]
    assert layers["basic1.conv1"]["kernel"] == [3, 3] and layers["basic1.conv1"]["block"] == "basic1"
    assert layers["dense1"]["kernel"] is None and layers["dense1"]["block"] is None


def test_connected_to_names_what_merges_and_branches_read(resnet18):
    text = resnet18.summary_table()
    header, rows = body(text)
    assert "Connected to" in header
    add = next(row for row in rows if row.lstrip().startswith("add1 "))      # basic1.add1
    assert add.rstrip().endswith("maxpool1, basic1.batchnorm2")
    # down1's shortcut (conv3) reads the block's input, not the row above it
    names = [row.split()[0] for row in rows]
    shortcut = rows[names.index("conv3", names.index("down1"))]
    assert "conv(128, 1x1, stride 2x2)" in shortcut and shortcut.rstrip().endswith("43x43/8x8        basic2.relu2")
    # a layer reading the row above gets no entry
    assert rows[names.index("conv2", names.index("down1"))].rstrip().endswith("67x67/8x8")
    # a plain chain gets no such column
    assert "Connected to" not in cnnspec.load(SPECS / "lenet5.cnn").summary_table()


def test_columns_aligned_for_numbers_of_any_size():
    net = cnnspec.loads("""
block wide(n) {
    dense(n) -> relu -> dense(n)
}
network Big {
    input x: 3x64x64
    conv(8, 3x3) -> flatten
    wide(100000)
    dense(7)
}""")
    text = net.summary_table()
    first, second = 8 * 62 * 62 * 100_000 + 100_000, 100_000 * 100_000 + 100_000
    assert f"[{first + second:,}]" in text    # the block's total, wider than any layer's cell
    assert f" {second:,} " in text
    assert_aligned(text)
    for spec in ("resnet18", "googlenet", "lenet5", "vgg16"):
        net = cnnspec.load(SPECS / f"{spec}.cnn")
        for depth in (None, 1, 2):
            assert_aligned(net.summary_table(depth=depth, columns="all"))
            assert_aligned(net.summary_table(depth=depth))


def test_cli_json_depth_and_columns_refused_with_json(capsys):
    assert main(["summary", str(SPECS / "resnet18.cnn"), "--json", "--depth", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in data["layers"]][5:8] == ["basic1", "basic2", "down1"]
    assert {b["name"] for b in data["blocks"]} >= {"basic1", "down3"}
    assert main(["summary", str(SPECS / "resnet18.cnn"), "--json", "--columns", "op"]) == 1


def test_a_flat_layer_sees_the_whole_input(capsys):
    # design.md: after flatten/dense the field is the whole input ("all"; null in JSON)
    assert main(["summary", str(SPECS / "lenet5.cnn"), "--columns", "rf"]) == 0
    rows = {row.split()[0]: row.split()[-1] for row in body(capsys.readouterr().out)[1]}
    assert rows["maxpool2"] == "16x16/4x4" and rows["flatten1"] == rows["dense3"] == "all"
