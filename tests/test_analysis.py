"""Shape, parameter, MAC, memory and receptive-field rules, and the located errors of analysis."""
import random

import pytest

import cnnspec
from cnnspec import CnnSpecError


def net_of(body: str, shape: str = "3x32x32", blocks: str = "") -> "cnnspec.Network":
    return cnnspec.loads(f"{blocks}\nnetwork T {{\n    input x: {shape}\n{body}\n}}\n", file="t.cnn")


def out(body, shape="3x32x32"):
    return net_of(body, shape).output_shape


# ---- output sizes: lecture 003's formula, by hand -------------------------------------------------

@pytest.mark.parametrize("body, shape, expected", [
    ("conv(8, 3x3)", "3x32x32", (8, 30, 30)),
    ("conv(8, 3x3, pad=1)", "3x32x32", (8, 32, 32)),
    ("conv(8, 3x3, pad=same)", "3x32x32", (8, 32, 32)),
    ("conv(8, 3x3, pad=valid)", "3x32x32", (8, 30, 30)),
    ("conv(8, 3x3, pad=full)", "3x32x32", (8, 34, 34)),               # wide convolution
    ("conv(8, 4x4, stride=2, pad=same)", "3x7x8", (8, 4, 4)),          # ceil(7/2), ceil(8/2)
    ("conv(8, 5x3, pad=2x1)", "3x10x12", (8, 10, 12)),
    ("conv(8, 3x3, pad=(1, 0, 2, 0))", "3x10x12", (8, 9, 12)),
    ("conv(8, 3x3, stride=2x1)", "3x9x9", (8, 4, 7)),
    ("conv(8, 3x3, dilation=2)", "3x9x9", (8, 5, 5)),
    ("conv(6, 3x3, groups=3)", "3x9x9", (6, 7, 7)),
    ("conv(4, 3)", "5x20", (4, 18)),                                    # 1-D
    ("conv(4, 3, pad=(2, 0))", "5x20", (4, 20)),
    ("conv(4, 5, stride=2, pad=same)", "5x9", (4, 5)),
    ("maxpool(2)", "3x9x9", (3, 4, 4)),
    ("maxpool(2, ceil=true)", "3x9x9", (3, 5, 5)),
    ("maxpool(3x3, stride=2, ceil=true)", "3x112x112", (3, 56, 56)),    # GoogLeNet's pool
    ("maxpool(3x3, stride=2, pad=1)", "3x112x112", (3, 56, 56)),        # ResNet's pool
    ("avgpool(2x2, stride=1)", "3x5x6", (3, 4, 5)),
    ("sumpool(3, stride=3)", "2x10", (2, 3)),
    ("globalavgpool", "7x5x5", (7, 1, 1)),
    ("globalmaxpool", "7x5", (7, 1)),
    ("flatten", "3x4x5", (60,)),
    ("flatten -> dense(7)", "3x4x5", (7,)),
    ("batchnorm -> relu -> dropout(0.3) -> leaky_relu(0.2) -> sigmoid -> tanh -> identity -> softmax",
     "3x4x5", (3, 4, 5)),
])
def test_output_shapes_by_hand(body, shape, expected):
    assert out(body, shape) == expected


def test_ceil_mode_caffe_rule_last_window_starts_inside():
    # in 5, k 2, s 2, pad 1: ceil gives 1 + ceil(5/2) = 4, but window 4 would start at 6 >= 5 + 1
    assert out("maxpool(2, stride=2, pad=1, ceil=true)", "1x5x5") == (1, 3, 3)


@pytest.mark.parametrize("body, shape, k, s", [
    ("maxpool(3x3, stride=2, ceil=true)", "1x2x2", 3, 2),   # GoogLeNet's pool on a 2x2 map
    ("avgpool(5x5, stride=5, ceil=true)", "1x3x3", 5, 5),
    ("maxpool(6, stride=3, ceil=true)", "1x4", 6, 3),
])
def test_ceil_mode_window_larger_than_input_as_pytorch(body, shape, k, s):
    # span = in - k < 0 but 1 + ceil(span / s) = 1: one window, starting inside the input
    torch = pytest.importorskip("torch")
    dims = tuple(int(v) for v in shape.split("x"))
    pool = torch.nn.functional.max_pool1d if len(dims) == 2 else torch.nn.functional.avg_pool2d
    expected = tuple(pool(torch.zeros(1, *dims), k, s, ceil_mode=True).shape[1:])
    assert expected[1:] == (1,) * (len(dims) - 1)
    assert out(body, shape) == expected


def test_ceil_mode_window_larger_than_input_runs_as_pytorch():
    torch = pytest.importorskip("torch")
    import numpy as np
    x = np.random.default_rng(0).random((2, 3, 2, 2))
    model = net_of("maxpool(3x3, stride=2, ceil=true)", "3x2x2").compile(dtype="float64")
    expected = torch.nn.functional.max_pool2d(torch.tensor(x), 3, 2, ceil_mode=True).numpy()
    np.testing.assert_allclose(model.forward(x), expected)


def test_shapes_against_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = random.Random(0)
    for _ in range(150):
        h, w = rng.randint(5, 16), rng.randint(5, 16)
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        sh, sw = rng.randint(1, 3), rng.randint(1, 3)
        dh, dw = rng.randint(1, 2), rng.randint(1, 2)
        ph, pw = rng.randint(0, 2), rng.randint(0, 2)
        groups = rng.choice([1, 2])
        c, f = 2 * rng.randint(1, 2), 2 * rng.randint(1, 3)
        x = torch.zeros(1, c, h, w)
        if (h + 2 * ph - dh * (kh - 1) - 1) < 0 or (w + 2 * pw - dw * (kw - 1) - 1) < 0:
            continue
        want = F.conv2d(x, torch.zeros(f, c // groups, kh, kw), stride=(sh, sw), padding=(ph, pw),
                        dilation=(dh, dw), groups=groups).shape[1:]
        got = out(f"conv({f}, {kh}x{kw}, stride={sh}x{sw}, pad={ph}x{pw}, dilation={dh}x{dw}, groups={groups})",
                  f"{c}x{h}x{w}")
        assert got == tuple(want)
        # pooling: PyTorch wants pad <= kernel/2
        ph, pw = rng.randint(0, kh // 2), rng.randint(0, kw // 2)
        for ceil in (False, True):
            if h + 2 * ph < kh or w + 2 * pw < kw:
                continue
            want = F.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil).shape[1:]
            got = out(f"maxpool({kh}x{kw}, stride={sh}x{sw}, pad={ph}x{pw}, ceil={'true' if ceil else 'false'})",
                      f"{c}x{h}x{w}")
            assert got == tuple(want)
        want = F.conv1d(torch.zeros(1, c, h), torch.zeros(f, c, kh), stride=sh, padding=ph).shape[1:]
        assert out(f"conv({f}, {kh}, stride={sh}, pad={ph})", f"{c}x{h}") == tuple(want)


def test_same_padding_goes_bottom_right_like_tensorflow():
    net = net_of("conv(8, 4x4, stride=2, pad=same)", "3x7x8")
    assert net["conv1"]["config"]["pad"] == (1, 2, 1, 1)   # total 3 rows (1 top, 2 bottom), 2 cols


# ---- parameters, MACs, memory -------------------------------------------------------------------

def test_params_macs_and_memory_by_hand():
    net = net_of("conv(8, 3x3, pad=1, bias=false) -> batchnorm -> relu\n"
                 "    conv(4, 3x3, groups=2, trainable=false) -> flatten -> dense(5)", "4x6x6")
    s = net.summary(batch=3, dtype="float64")
    by = {layer["name"]: layer for layer in s["layers"]}
    assert by["conv1"]["params"] == 8 * 4 * 9 and by["conv1"]["macs"] == 8 * 36 * 4 * 9
    assert by["batchnorm1"]["params"] == 16 and by["batchnorm1"]["macs"] == 0
    assert by["conv2"]["params"] == 4 * 4 * 9 + 4 and by["conv2"]["trainable_params"] == 0
    assert by["conv2"]["macs"] == 4 * 16 * 4 * 9
    assert by["dense1"]["params"] == 64 * 5 + 5 and by["dense1"]["macs"] == 64 * 5
    assert by["relu1"]["activations"] == 0 and by["flatten1"]["activations"] == 0
    t = s["totals"]
    params = 288 + 16 + 148 + 325
    assert t["params"] == params and t["frozen_params"] == 148 and t["trainable_params"] == params - 148
    activations = 4 * 36 + 8 * 36 + 8 * 36 + 4 * 16 + 5       # input, conv1, bn, conv2, dense
    assert t["activations"] == activations
    assert t["memory_bytes"]["forward"] == activations * 3 * 8
    assert t["memory_bytes"]["params"] == (params + 16) * 8      # + batchnorm running statistics
    # what the engine keeps for a training step: a buffer per output but flatten's (a view), relu's
    # included: input, conv1, batchnorm1, relu1, conv2, dense1; gradients of dense1's output, of
    # flatten1's (handed through to conv2, its only reader), relu1 (batchnorm1's too: the pair is
    # fused, its backward takes the relu's gradient) and conv1 (not the input's); parameters and a
    # gradient for each (frozen ones too: one flat array); no train section: plain SGD keeps no
    # optimizer state
    values = 4 * 36 + 8 * 36 + 8 * 36 + 8 * 36 + 4 * 16 + 5
    grads = 5 + 4 * 16 + 8 * 36 + 8 * 36
    assert t["memory_bytes"]["training"] == (values + grads) * 3 * 8 + (params + 16) * 8 + params * 8


def test_training_memory_counts_side_buffers_and_optimizer_state():
    text = "conv(4, 3x3, pad=1) -> relu -> maxpool(2) -> dropout(0.5) -> flatten -> dense(3) -> softmax"
    net = net_of(text, "1x4x4")
    s = net.summary(batch=2)
    params = 4 * 9 + 4 + 16 * 3 + 3
    values = 16 + 64 + 64 + 16 + 16 + 3 + 3           # input conv relu maxpool dropout dense softmax
    # dense (softmax fused with the loss), flatten, maxpool, conv: the maxpool writes the gradient
    # of the relu's input (relu -> maxpool fused), the relu has none
    grads = 3 + 16 + 16 + 64
    side = 16 * 8 + 16 * 9                             # argmax (int64); mask (bool) + draws (float64)
    assert s["totals"]["memory_bytes"]["training"] == 2 * (4 * (values + grads) + side) + 2 * params * 4
    net.graph.graph["train"] = {"optimizer": {"name": "adam"}}       # two values per parameter
    assert net.summary(batch=2)["totals"]["memory_bytes"]["training"] == s["totals"]["memory_bytes"]["training"] \
        + 2 * params * 4


def test_json_schema():
    s = net_of("conv(4, 3x3) -> relu -> flatten -> dense(2)", "1x5x5").summary()
    assert set(s) == {"network", "file", "input", "inputs", "batch", "dtype", "layers", "blocks", "totals",
                      "loss_terms", "warnings"}
    assert s["input"] == {"name": "x", "shape": [1, 5, 5]} and s["inputs"] == [s["input"]]
    assert s["loss_terms"] == []
    for layer in s["layers"]:
        assert set(layer) == {"name", "op", "inputs", "output_shape", "kernel", "block", "params",
                              "trainable_params", "macs", "activations", "receptive_field"}
    assert s["layers"][-1]["receptive_field"] is None
    assert s["layers"][1]["receptive_field"] == {"size": [3, 3], "stride": [1, 1], "padding": [0, 0],
                                                 "aligned": True}
    assert set(s["totals"]["memory_bytes"]) == {"params", "forward", "training"}


# ---- receptive fields ---------------------------------------------------------------------------

def test_receptive_field_recurrence_by_hand():
    net = net_of("conv(4, 3x3, pad=1) -> maxpool(2) -> conv(4, 3x3, dilation=2, pad=2) -> conv(4, 5x3, stride=2)",
                 "1x32x32")
    f = [net[n]["receptive_field"] for n in ("conv1", "maxpool1", "conv2", "conv3")]
    assert (f[0]["size"], f[0]["stride"], f[0]["padding"]) == ([3, 3], [1, 1], [1, 1])
    assert (f[1]["size"], f[1]["stride"], f[1]["padding"]) == ([4, 4], [2, 2], [1, 1])
    assert (f[2]["size"], f[2]["stride"], f[2]["padding"]) == ([12, 12], [2, 2], [5, 5])   # 4 + 2*2*2
    assert (f[3]["size"], f[3]["stride"], f[3]["padding"]) == ([20, 16], [4, 4], [5, 5])


TWO_PATHS = """
block fork(c) {
    a = in -> conv(c, 2x2, stride=2)
    b = in -> SKIP
    add(a, b)
}
"""


def test_two_path_block_alignment_warning():
    # a 2x2 window is centred between pixels, a strided 1x1 shortcut on a pixel: not aligned
    net = net_of("fork(4)", "4x8x8", TWO_PATHS.replace("SKIP", "conv(c, 1x1, stride=2)"))
    assert any("not aligned" in w and "fork1.add1" in w for w in net.warnings)
    merged = net["fork1.add1"]["receptive_field"]
    assert merged["aligned"] is False and merged["size"] == [2, 2]
    assert net.summary()["layers"][-1]["receptive_field"]["aligned"] is False
    # average-pooling the shortcut first lines the centres up: no warning
    ok = net_of("fork(4)", "4x8x8", TWO_PATHS.replace("SKIP", "avgpool(2) -> conv(c, 1x1)"))
    assert ok.warnings == [] and ok["fork1.add1"]["receptive_field"]["aligned"]


def test_unused_branch_warning():
    net = net_of("side = x -> conv(2, 1x1)\n    x -> conv(3, 1x1)", "1x4x4")
    assert net.warnings == ["t.cnn:4:13: `conv1` is computed but never used by the output"]


# ---- located errors of analysis (dsl.md section 9) ----------------------------------------------

def error_of(body, shape="3x32x32", blocks=""):
    with pytest.raises(CnnSpecError) as info:
        net_of(body, shape, blocks)
    return info.value


def test_dense_on_image_says_add_flatten():
    err = error_of("conv(4, 3x3)\n    dense(10)")
    assert (err.file, err.line) == ("t.cnn", 5) and "flat input" in err.message and "4x30x30" in err.message
    assert "add `flatten` first" in err.render() and "^" in err.render()


def test_unknown_argument_suggests():
    err = error_of("conv(4, 3x3, strid=2)")
    assert "no argument `strid`" in err.message and err.hint == "did you mean `stride`?"
    assert err.col == len("conv(4, 3x3, ") + 1


def test_bad_values_repeat_the_value():
    assert "received: 0" in error_of("conv(0, 3x3)").message
    assert "received: 1.5" in error_of("conv(4, 3x3, groups=1.5)").message
    assert "did you mean `same`?" in error_of("conv(4, 3x3, pad=sme)").render()
    assert "dropout probability" in error_of("dropout(1.5)").message
    err = error_of("conv(4, 3x3, groups=2)")
    assert "groups=2 must divide" in err.message and "(3)" in err.message


def test_kernel_rank_must_match_input():
    err = error_of("conv(4, 3x3)", "5x20")
    assert "3x3" in err.message and "1-D" in err.message
    err = error_of("conv(4, 3)", "12")
    assert "flat shape 12" in err.message


def test_output_below_one_names_layer_input_and_terms():
    err = error_of("conv(4, 3x3) -> conv(4, 5x5) -> conv(4, 7x7)", "1x10x10")
    assert "`conv3`" in err.message and "below 1" in err.message and "(4 + 0 + 0 - (7-1) - 1) / 1" in err.message
    assert err.line == 4


def test_add_shape_mismatch_shows_every_operand():
    err = error_of("a = conv(4, 3x3)\n    b = x -> conv(4, 1x1)\n    add(a, b, x)", "3x8x8")
    assert "4x6x6" in err.message and "4x8x8" in err.message and "3x8x8" in err.message
    assert err.line == 6


def test_concat_spatial_mismatch():
    err = error_of("a = conv(4, 3x3)\n    concat(a, x)", "3x8x8")
    assert "4x6x6" in err.message and "3x8x8" in err.message


def test_weights_shape_mismatch():
    err = error_of("conv(2, 3x3, weights=sobel_x)", "1x8x8")
    assert "one filter" in err.message
    err = error_of("conv(1, 5x5, weights=sobel_x)", "1x8x8")
    assert "1x1x3x3" in err.message and "1x1x5x5" in err.message
    assert "did you mean `sobel_y`?" in error_of("conv(1, 3x3, weights=sobel_z)", "1x8x8").render()


def test_fixed_kernels_broadcast_over_channels():
    net = net_of("conv(2, 3x3, weights=[sobel_x, [[1, 2, 3], [4, 5, 6], [7, 8, 9]]])", "3x8x8")
    w = net["conv1"]["config"]["weights"]
    assert w.shape == (2, 3, 3, 3) and (w[0, 2] == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]).all()
    assert w[1, 1, 2, 0] == 7
    assert net_of("conv(1, 3x3, weights=box_blur)", "1x8x8")["conv1"]["config"]["weights"].sum() == pytest.approx(1)


def test_every_named_kernel_of_the_dsl():
    from cnnspec.layers import NAMED_KERNELS
    assert len(NAMED_KERNELS) == 15
    names = ", ".join(NAMED_KERNELS)
    net = net_of(f"conv(15, 3x3, weights=[{names}], bias=false, trainable=false)", "1x5x5")
    assert net["conv1"]["config"]["weights"][13, 0].tolist() == [[-1, 1, -1], [1, 1, 1], [-1, 1, -1]]


def test_summary_cli_json_and_table(tmp_path, capsys):
    from cnnspec.cli import main
    spec = tmp_path / "n.cnn"
    spec.write_text("network N {\n  input x: 1x8x8\n  conv(2, 3x3) -> relu -> flatten -> dense(3)\n}\n")
    assert main(["summary", str(spec), "--batch", "4"]) == 0
    text = capsys.readouterr().out
    assert "conv1" in text and "Params:" in text and "2x6x6" in text
    assert main(["check", str(spec), str(tmp_path / "missing.cnn")]) == 1
    assert main(["summary", str(spec), "--batch", "0"]) == 1
    assert "batch must be a positive integer" in capsys.readouterr().err


def test_render_all_formats_and_missing_dot(tmp_path, monkeypatch, capsys):
    import shutil
    from cnnspec.cli import main
    from conftest import SPECS
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed (CI installs it)")
    net = cnnspec.load(SPECS / "resnet18.cnn")
    for ext, magic in (("svg", b"<svg"), ("png", b"\x89PNG"), ("pdf", b"%PDF"), ("dot", b"digraph")):
        path = net.render(tmp_path / f"r.{ext}")
        assert magic in open(path, "rb").read()[:400]
    dot = open(tmp_path / "r.dot").read()
    assert "cluster_basic1" in dot and '"basic1.add1"' in dot
    assert dot.count(" -> ") == net.graph.number_of_edges()
    monkeypatch.setenv("PATH", str(tmp_path))                  # no dot on PATH
    assert main(["render", str(SPECS / "lenet5.cnn"), "-o", str(tmp_path / "l.svg")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "apt-get install graphviz" in err and (tmp_path / "l.dot").exists()
