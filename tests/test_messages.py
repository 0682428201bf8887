"""Messages that send the user the right way (issue 9, item 6): each says what is wrong in the
user's own terms and what to do about it."""
import json

import numpy as np
import pytest

import cnnspec
from cnnspec import CnnSpecError
from cnnspec.cli import main
from cnnspec.errors import match_names, plural
from conftest import SPECS

HEAD = "network N {\n    input x: 3x16x16\n"


def error_of(text) -> CnnSpecError:
    with pytest.raises(CnnSpecError) as info:
        cnnspec.loads(text, file="n.cnn")
    return info.value


def test_render_without_dot_names_the_format_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))                  # no dot on PATH
    assert main(["render", str(SPECS / "lenet5.cnn"), "-o", str(tmp_path / "d.png")]) == 1
    err = capsys.readouterr().err
    assert f"`dot -Tpng {tmp_path / 'd.dot'} -o {tmp_path / 'd.png'}`" in err
    assert (tmp_path / "d.dot").is_file()
    assert main(["render", str(SPECS / "lenet5.cnn"), "-o", str(tmp_path / "d.pdf")]) == 1
    assert "dot -Tpdf" in capsys.readouterr().err


def test_render_until_a_block_instance(tmp_path):
    net = cnnspec.load(SPECS / "resnet18.cnn")
    dot = (tmp_path / "r.dot")
    net.render(dot, until="down1")
    text = dot.read_text()
    assert '"down1.relu2"' in text and '"down1.conv3"' in text and '"basic1.add1"' in text
    assert "basic3" not in text and "dense1" not in text
    with pytest.raises(CnnSpecError, match="no layer named `dwn1`"):
        net.render(dot, until="dwn1")


def test_add_of_sizes_that_differ_names_the_operands_and_points_at_padding():
    err = error_of("block res(c) {\n    main = conv(c, 3x3) -> relu -> conv(c, 3x3)\n    add(in, main)\n}\n"
                   "network R {\n    input x: 16x32x32\n    res(16)\n}\n")
    assert err.line == 3 and "got `in` 16x32x32, `main` 16x28x28" in err.message
    assert "1x1 projection cannot fix" in err.hint and "pad=same" in err.hint
    err = error_of(HEAD + "    a = conv(8, 3x3, pad=1)\n    b = x -> conv(4, 3x3, pad=1)\n    add(a, b)\n}\n")
    assert "`a` 8x16x16, `b` 4x16x16" in err.message and "conv(8, 1x1)" in err.hint
    err = error_of(HEAD + "    a = conv(8, 3x3, stride=2, pad=1)\n    b = x -> conv(4, 3x3, pad=1)\n    add(a, b)\n}\n")
    assert "conv(C, 1x1, stride=S)" in err.hint


@pytest.mark.parametrize("written, hint", [
    ("ReLU()", "PyTorch's or Keras's `ReLU` is called `relu` here"),
    ("Sigmoid", "`Sigmoid` is called `sigmoid` here"),
    ("Dense(10)", "`Dense` is called `dense` here"),
    ("LeakyReLU(0.1)", "`LeakyReLU` is called `leaky_relu` here"),
    ("MaxPool2d(2)", "`MaxPool2d` is called `maxpool` here"),
    ("LSTM(10)", "`LSTM` is a PyTorch or Keras layer that cnnspec does not have"),
    ("LayerNorm", "`LayerNorm` is a PyTorch or Keras layer that cnnspec does not have"),
    ("relux", "did you mean `relu`?"),
])
def test_names_from_other_frameworks(written, hint):
    err = error_of(HEAD + f"    {written}\n}}\n")
    assert hint in err.hint and err.line == 3
    assert "did you mean" not in err.hint or written == "relux"


def test_keyword_names_are_not_taken_for_layers():
    err = error_of(HEAD + "    conv(4, 3x3, Stride=2)\n}\n")
    assert "PyTorch" not in (err.hint or "") and "stride" in (err.hint or "")


def test_channels_last_input_says_channels_first(capsys, tmp_path):
    err = error_of("network N {\n    input image: 28x28x1\n    conv(6, 5x5)\n}\n")
    assert err.line == 3
    assert err.hint == ("input `image` is 28x28x1, read as 28 channels of 28x1: shapes are channels first, "
                        "CxHxW; a 28x28 picture with 1 channel is 1x28x28")
    net = cnnspec.loads("network N {\n    input image: 32x32x3\n    flatten -> dense(10)\n}\n", file="n.cnn")
    assert net.warnings == ["n.cnn:2:5: input `image` is 32x32x3, read as 32 channels of 32x3: shapes are "
                            "channels first, CxHxW; a 32x32 picture with 3 channels is 3x32x32"]
    assert cnnspec.loads("network N {\n    input x: 3x32x32\n    flatten -> dense(2)\n}\n").warnings == []
    assert cnnspec.loads("network T {\n    input words: 300x40\n    flatten -> dense(2)\n}\n").warnings == []


@pytest.mark.parametrize("data, message, hint", [
    ("mnist:/nonexistent", "mnist: no such folder: /nonexistent", None),
    ("folder:pictures", "folder: no such folder: {dir}/pictures", "read from the .cnn file's folder"),
    ('"missing.npz"', "no such data file: {dir}/missing.npz", "read from the .cnn file's folder"),
    ("mnsit:/data", "unknown data set 'mnsit:/data'", "did you mean `mnist`?"),
    ("shapes:plus,circel", "shapes has no class 'circel'", "did you mean `circle`?"),
])
def test_check_reads_the_data_line(tmp_path, capsys, data, message, hint):
    spec = tmp_path / "n.cnn"
    spec.write_text(f"network N {{\n    input x: 1x28x28\n    flatten -> dense(10)\n}}\ntrain {{\n"
                    f"    epochs = 2\n    data   = {data}\n}}\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{spec}:7:5: error: {message.format(dir=tmp_path)}\n")
    assert f"    data   = {data}\n" in err and "^~~~" in err
    assert (hint is None and "hint" not in err) or (hint is not None and hint in err)


@pytest.mark.parametrize("setting, message", [
    ("optimizer = sgd(lr=-1)", "sgd's lr must be a positive finite number, got -1.0"),
    ("optimizer = sgd(lr=0.1, momentum=-0.5)", "sgd's momentum must be a number >= 0, got -0.5"),
    ("optimizer = adam(lr=0.1, betas=(0.9, 1.5))", "adam's betas must be two numbers in [0, 1), got (0.9, 1.5)"),
    ("optimizer = adam(lr=0)", "adam's lr must be a positive finite number, got 0.0"),
])
def test_check_refuses_the_train_settings_train_refuses(tmp_path, capsys, setting, message):
    """`check` passes a file only if `train` would accept its train section: the same error,
    at the same line."""
    spec = tmp_path / "n.cnn"
    spec.write_text(f"network N {{\n    input x: 1x28x28\n    flatten -> dense(10)\n}}\ntrain {{\n"
                    f"    data = shapes\n    {setting}\n}}\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{spec}:7:5: error: {message}\n"), err
    spec.write_text(spec.read_text().replace(setting, "optimizer = sgd(lr=0.1, momentum=0.9)"))
    assert main(["check", str(spec)]) == 0


def test_weights_of_another_network_point_at_partial(tmp_path, capsys):
    small = cnnspec.loads("network S {\n    input x: 1x32x32\n    conv(6, 5x5) -> relu -> maxpool(2)\n"
                          "    flatten -> dense(3)\n}\n")
    small.compile(seed=1).save(tmp_path / "w.npz")
    np.save(tmp_path / "x.npy", np.zeros((1, 32, 32), np.float32))
    lenet = str(SPECS / "lenet5.cnn")
    assert main(["run", lenet, "--weights", str(tmp_path / "w.npz"), "--input", str(tmp_path / "x.npy")]) == 1
    err = capsys.readouterr().err
    assert "weights do not match network `LeNet5`" in err and "strict=False" not in err
    assert "hint: --partial loads the weights whose names and shapes match" in err
    assert main(["run", lenet, "--weights", str(tmp_path / "w.npz"), "--input", str(tmp_path / "x.npy"),
                 "--partial"]) == 0
    captured = capsys.readouterr()
    assert f"--partial {tmp_path / 'w.npz'}: loaded 1 layer (conv1); skipped dense1.weight: shape 1176x3" in captured.err
    assert "kept the initial values of conv2, dense2, dense3" in captured.err
    assert "top 5 classes" in captured.out
    assert main(["evaluate", lenet, "--weights", str(tmp_path / "w.npz"), "--data", "shapes:n=50"]) == 1
    assert "--partial" in capsys.readouterr().err


def test_layer_patterns_reach_into_blocks():
    names = ["x", "conv1", "relu1", "basic1.conv1", "basic1.relu1", "basic1.conv2", "stage1.basic2.conv1"]
    assert match_names(names, ["conv*"], "t") == ["conv1", "basic1.conv1", "basic1.conv2", "stage1.basic2.conv1"]
    assert match_names(names, ["conv1"], "t") == ["conv1"]                    # a full name: that layer
    assert match_names(names, ["basic1"], "t") == ["basic1.conv1", "basic1.relu1", "basic1.conv2"]
    assert match_names(names, ["*.conv1"], "t") == ["basic1.conv1", "stage1.basic2.conv1"]
    assert match_names(names, ["stage1.basic2"], "t") == ["stage1.basic2.conv1"]
    assert match_names(names, ["conv2"], "t") == ["basic1.conv2"]
    with pytest.raises(CnnSpecError, match="'dense\\*' matches no layer"):
        match_names(names, ["dense*"], "t")


def test_freeze_prints_what_it_froze(tmp_path, capsys):
    spec = tmp_path / "b.cnn"
    spec.write_text("block cbr(c) {\n    conv(c, 3x3, pad=1) -> relu\n}\nnetwork B {\n    input x: 1x12x12\n"
                    "    conv(4, 3x3, pad=1)\n    cbr(4) -> cbr(4)\n    maxpool(2) -> flatten -> dense(3)\n}\n"
                    "train {\n    data = shapes:plus,x,square,n=40\n    epochs = 1\n    batch = 20\n}\n")
    assert main(["train", str(spec), "--freeze", "conv*", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "frozen by --freeze conv*: conv1, cbr1.conv1, cbr2.conv1 (3 layers)" in out
    before = cnnspec.load(spec).compile(seed=0)
    after = np.load(tmp_path / "run" / "weights.npz")
    for layer in ("conv1", "cbr1.conv1", "cbr2.conv1"):
        assert np.array_equal(after[f"{layer}.weight"], before.params[layer]["weight"])
    assert not np.array_equal(after["dense1.weight"], before.params["dense1"]["weight"])
    assert main(["train", str(spec), "--freeze", "relu*", "--no-progress", "--out", str(tmp_path / "r2")]) == 0
    assert "frozen by --freeze relu*: nothing (the layers it names have no parameters)" in capsys.readouterr().out


def test_feature_maps_spread_over_the_network_and_a_stretched_picture_is_noted(tmp_path, capsys):
    from PIL import Image

    from cnnspec.train.cli import spread

    assert spread(list("abcdefghijkl"), 4) == ["a", "e", "h", "l"]
    assert spread(list("abc"), 8) == ["a", "b", "c"]
    spec = tmp_path / "deep.cnn"
    spec.write_text("network Deep {\n    input x: 1x16x16\n    (conv(2, 3x3, pad=1) -> relu) * 6\n"
                    "    maxpool(2) -> flatten -> dense(3)\n}\n")
    Image.fromarray(np.full((20, 40), 200, np.uint8)).save(tmp_path / "wide.png")
    assert main(["run", str(spec), "--input", str(tmp_path / "wide.png"),
                 "--feature-maps", str(tmp_path / "maps.png")]) == 0
    err = capsys.readouterr().err
    # 14 layers (x, conv1, relu1, ..., relu6, maxpool1): indexes round(i * 13 / 7), i = 0..7
    assert ("note: drawing 8 of the 14 picture-shaped layers, spread over the network: x, relu1, relu2, relu3, "
            "conv4, conv5, conv6, maxpool1") in err
    assert ("note: wide.png is 40x20 (width x height); it was resized to 16x16, the network's input, which "
            "changes its aspect ratio") in err
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(tmp_path / "square.png")
    assert main(["run", str(spec), "--input", str(tmp_path / "square.png")]) == 0
    assert "aspect ratio" not in capsys.readouterr().err


def test_plurals(tmp_path, capsys):
    assert [plural(1, "epoch"), plural(2, "epoch"), plural(1, "class", "classes"), plural(1200, "layer")] == [
        "1 epoch", "2 epochs", "1 class", "1,200 layers"]
    spec = tmp_path / "one.cnn"
    spec.write_text("network One {\n    input x: 4\n    dense(2)\n}\n")
    assert main(["check", str(spec)]) == 0
    assert "(One: 1 layer, 10 params, 8 MACs)" in capsys.readouterr().out
    assert "1 layer," in repr(cnnspec.load(spec))
    from cnnspec.data import load_dataset

    data = load_dataset("shapes:plus,n=30", (1, 8, 8), val_split=0.2)
    assert data.describe().endswith("samples of 1x8x8, 1 class")


def test_json_of_evaluate_still_pure_with_notices(tmp_path, capsys):
    """Notes and the compile notice go to stderr: --json output stays one JSON document."""
    small = cnnspec.loads("network S {\n    input x: 1x8x8\n    flatten -> dense(3)\n}\n")
    spec = tmp_path / "s.cnn"
    spec.write_text("network S {\n    input x: 1x8x8\n    flatten -> dense(3)\n}\n")
    small.compile().save(tmp_path / "w.npz")
    assert main(["evaluate", str(spec), "--weights", str(tmp_path / "w.npz"), "--data", "shapes:plus,x,square,n=30",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 3
