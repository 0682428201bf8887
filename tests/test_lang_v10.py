"""dsl.md §10.2 and the multi-network, multi-input rules of §1-§2: conditions, constants, sizes of
tensors, min/max, the numbering of skipped bodies, several inputs and networks, and the layers
that take tensor names (mul, sample). Expected graphs are written from dsl.md, by hand."""
import json

import numpy as np
import pytest

import cnnspec
from cnnspec import CnnSpecError
from cnnspec.cli import main
from cnnspec.lang import compile_source


def net(body: str, head: str = "input image: 8x16x16", extra: str = "") -> "cnnspec.Network":
    return cnnspec.loads(f"{extra}\nnetwork N {{\n    {head}\n{body}\n}}\n", file="t.cnn")


def error(body: str, head: str = "input image: 8x16x16", extra: str = "") -> CnnSpecError:
    with pytest.raises(CnnSpecError) as info:
        net(body, head, extra)
    return info.value


INVERTED = """
block inverted(c, expand=6, stride=1) {
    hidden = in.channels * expand
    if expand != 1 {
        in -> conv(hidden, 1x1, bias=false) -> batchnorm -> relu6
    }
    main = conv(hidden, 3x3, stride=stride, pad=1, groups=hidden, bias=false) -> batchnorm -> relu6
           -> conv(c, 1x1, bias=false) -> batchnorm
    if stride == 1 and in.channels == c {
        add(in, main)
    }
}
"""


def test_skipped_bodies_create_no_layers_and_use_no_numbers():
    n = net("inverted(8, expand=1) -> inverted(16, stride=2) -> inverted(16)", extra=INVERTED)
    layers = n.layers()
    # expand = 1: no expansion, so the depthwise conv is conv1; stride 1 and 8 == 8: the add exists
    assert [x for x in layers if x.startswith("inverted1.")] == [
        "inverted1.conv1", "inverted1.batchnorm1", "inverted1.relu6_1", "inverted1.conv2", "inverted1.batchnorm2",
        "inverted1.add1"]
    assert n["inverted1.conv1"]["config"]["groups"] == 8
    # stride 2: no residual; expansion to 8*6 = 48 channels
    assert [x for x in layers if x.startswith("inverted2.") and n[x]["op"] in ("conv", "add")] == [
        "inverted2.conv1", "inverted2.conv2", "inverted2.conv3"]
    assert n["inverted2.conv1"]["output_shape"] == (48, 16, 16)
    assert n["inverted2.conv2"]["output_shape"] == (48, 8, 8)
    assert n["inverted3.conv1"]["output_shape"] == (96, 8, 8)          # in.channels is 16 there
    assert n["inverted3.add1"]["inputs"] == ["inverted2.batchnorm3", "inverted3.batchnorm3"]
    assert n.output_name == "inverted3.add1"
    # the output of a block is the current tensor after the last statement that ran
    assert n["inverted3.conv1"]["inputs"] == ["inverted2.batchnorm3"]


def test_block_output_when_the_last_if_is_skipped():
    n = net("inverted(16, stride=2)", extra=INVERTED)
    assert n.output_name == "inverted1.batchnorm3" and n.output_shape == (16, 8, 8)


def test_sizes_of_tensors():
    n = net("a = conv(4, 3x3, stride=2)\n"
            "conv(a.channels + a.height + a.width + image.channels, 1x1)\n"
            "b = x -> conv(3, 2)\n"
            "conv(b.length * 10 + b.channels, 1)", head="input image: 8x16x16\n    input x: 5x9")
    assert n["a"]["output_shape"] == (4, 7, 7)
    assert n["conv2"]["output_shape"][0] == 4 + 7 + 7 + 8          # `a` counts as conv1
    assert n["conv4"]["output_shape"][0] == 8 * 10 + 3


def test_constants_min_max_and_arithmetic():
    n = net("k = 3x3\n w = max(2, min(image.channels // 3, 100), 1)\n p = 0.25\n"
            "conv(w * 2 + 1, k, pad=min(w, 1)) -> dropout(p)")
    assert n["conv1"]["config"]["kernel"] == (3, 3) and n["conv1"]["output_shape"][0] == 5
    assert n["conv1"]["config"]["pad"] == (1, 1, 1, 1)
    assert n["dropout1"]["config"]["p"] == 0.25


def test_constants_leave_the_current_tensor():
    n = net("conv(4, 1x1)\n c = image.channels * 2\n relu")
    assert n["relu1"]["inputs"] == ["conv1"]


def test_a_constant_is_usable_like_a_parameter_and_counts():
    n = net("n = 3\n conv(4, 1x1) * n\n (relu -> dropout(0.1)) * n - 1")
    assert [x for x in n.layers() if x.startswith("conv")] == ["conv1", "conv2", "conv3"]
    assert len([x for x in n.layers() if x.startswith("relu")]) == 2


def test_repetition_count_is_everything_after_the_star():
    n = net("relu * 2 + 1\n sigmoid * 2 * 2\n tanh * 7 // 2")
    ops = [n[x]["op"] for x in n.layers()[1:]]
    assert ops.count("relu") == 3 and ops.count("sigmoid") == 4 and ops.count("tanh") == 3


def test_conditions():
    cases = {"1 < 2 and not 2 < 1": True, "1 == 1 or 1 / 0": None, "not (1 > 2 or 3 <= 2)": True,
             "image.channels >= 8 and image.height != 15": True, "2 * 3 == 6": True, "-1 > 0": False}
    for cond, expected in cases.items():
        text = f"if {cond} {{\n relu\n }}"
        if expected is None:
            with pytest.raises(CnnSpecError):
                net(text)
            continue
        assert ("relu1" in net(text).layers()) is expected, cond


def test_a_name_bound_in_an_if_belongs_to_the_scope():
    n = net("if image.channels == 8 {\n x = conv(2, 1x1)\n }\n if image.channels != 8 {\n x = conv(3, 1x1)\n }\n"
            "x -> relu")
    assert n["x"]["output_shape"][0] == 2 and n["relu1"]["inputs"] == ["x"]


def test_if_inside_if_and_blocks_in_if():
    extra = "block b(c) { conv(c, 1x1) }"
    n = net("if 1 == 1 {\n if 2 == 2 {\n b(3)\n }\n if 2 == 3 {\n b(4)\n }\n b(5)\n }", extra=extra)
    assert [x for x in n.layers() if x.endswith("conv1")] == ["b1.conv1", "b2.conv1"]
    assert n["b2.conv1"]["output_shape"][0] == 5


def test_several_inputs():
    n = net("zb = z -> dense(16)\n lb = label -> dense(16)\n concat(zb, lb) -> dense(8)",
            head="input z: 64\n    input label: 10")
    assert n.input_names == ["z", "label"] and n.input_name == "z"
    assert n.input_shapes == {"z": (64,), "label": (10,)}
    assert n["concat1"]["output_shape"] == (32,)          # flat vectors join along their features
    s = n.summary()
    assert s["inputs"] == [{"name": "z", "shape": [64]}, {"name": "label", "shape": [10]}]
    assert s["input"] == s["inputs"][0]
    assert "inputs z: 64, label: 10" in n.summary_table()


def test_the_current_tensor_starts_as_the_first_input():
    n = net("dense(4)", head="input z: 64\n    input label: 10")
    assert n["dense1"]["inputs"] == ["z"]
    assert any("`label` is input never used" in w for w in n.warnings)


def test_an_input_declared_later_does_not_move_the_current_tensor():
    n = net("flatten -> dense(4)\n input y: 3\n r = relu\n concat(r, y)")
    assert n["r"]["inputs"] == ["dense1"] and n.input_names == ["image", "y"]
    assert n.output_shape == (7,)


def test_several_networks_in_a_file():
    text = ("block b { relu }\nnetwork A {\n input x: 4\n dense(2) -> b\n}\n"
            "network B {\n input y: 3x8x8\n conv(2, 3x3) -> b\n}\ntrain {\n epochs = 2\n}\n")
    a, b = cnnspec.loads(text), cnnspec.loads(text, network="B")
    assert (a.name, b.name) == ("A", "B") and a.networks == b.networks == ["A", "B"]
    assert b.output_shape == (2, 6, 6) and b.train_config == a.train_config == {"epochs": 2}
    both = cnnspec.loads_all(text, file="ab.cnn")
    assert list(both) == ["A", "B"] and both["B"].file == "ab.cnn"
    with pytest.raises(CnnSpecError, match="no network `C`") as info:
        cnnspec.loads(text, network="C")
    assert "A, B" in info.value.hint
    assert "did you mean `B`" in pytest.raises(CnnSpecError, cnnspec.loads, text, network="BB").value.hint
    graph = compile_source(text, "ab.cnn", network="B")
    assert graph.graph["networks"] == ["A", "B"] and graph.graph["input"] == "y"


def test_mul_gates_and_equal_shapes():
    n = net("gate = globalavgpool -> conv(8, 1x1) -> sigmoid\n a = mul(image, gate)\n"
            "f = image -> globalavgpool -> flatten -> dense(8) -> sigmoid\n b = mul(f, a)\n"
            "c = mul(a, b, a)")
    assert n["a"]["config"]["broadcast"] == ("full", "gate") and n["a"]["output_shape"] == (8, 16, 16)
    assert n["b"]["config"]["broadcast"] == ("gate", "full")
    assert n["c"]["config"]["broadcast"] == ("full",) * 3
    # the field of a gated product is its full operand's (the gate sees the whole input)
    assert n["a"]["receptive_field"]["size"] == [1, 1] and n.warnings[:1] != ["not aligned"]


def test_sample_takes_mu_then_logvar_and_adds_its_kl_term():
    n = net("h = flatten -> dense(8)\n mu = h -> dense(4)\n logvar = h -> dense(4)\n"
            "z = sample(mu, logvar, beta=0.5)\n dense(3)")
    assert n["z"]["inputs"] == ["dense2", "dense3"] and n["z"]["output_shape"] == (4,)
    assert n["z"]["config"] == {"beta": 0.5}
    assert n["z"]["loss_term"] == {"term": "kl", "weight": 0.5}
    assert n.summary()["loss_terms"] == [{"layer": "z", "term": "kl", "weight": 0.5}]
    assert "0.5 * KL of `z`" in n.summary_table()


# ---- located errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("body, head, extra, where, message, hint", [
    ("if image { relu }", None, "", (4, 4), "conditions are on integers, and `image` is a tensor",
     "image.channels"),
    ("if image > 2 {\n relu\n }", None, "", (4, 4), "conditions are on integers, and `image` is a tensor",
     "image.channels"),
    ("if 2 {\n relu\n }", None, "", (4, 4), "a condition compares integers", "expand != 1"),
    ("if 1 and 2 {\n relu\n }", None, "", (4, 4), "`and` joins conditions, got 1", None),
    ("if same == 1 {\n relu\n }", None, "", (4, 4), "conditions are on integers, got `same`", None),
    ("conv(image.depth, 1x1)", None, "", (4, 12), "no size `.depth`", "it has .channels, .height, .width"),
    ("conv(image.length, 1x1)", None, "", (4, 12), "an image (CxHxW) of shape 8x16x16: it has no size `.length`",
     ".height"),
    ("conv(imge.channels, 1x1)", None, "", (4, 6), "unknown tensor `imge`", "did you mean `image`?"),
    ("n = 2\n conv(n.channels, 1x1)", None, "", (5, 7), "unknown name `n`", "a constant"),
    ("n = 2\n n = 3", None, "", (5, 2), "`n` is already bound", "line 4"),
    ("n = 2\n n -> relu", None, "", (5, 2), "unknown name `n`", "a constant, a value, not a tensor"),
    ("conv(4, 1x1) -> 3", None, "", (4, 17), "a value is not a step of a chain", "constant"),
    ("3 + 4", None, "", (4, 1), "a value on its own is not a statement", "n = ..."),
    ("conv(min(), 1x1)", None, "", (4, 6), "`min` needs at least one integer", None),
    ("conv(max(2, 0.5), 1x1)", None, "", (4, 13), "`max` takes integers, got 0.5", None),
    ("min = 3", None, "", (4, 1), "`min` is a function of sizes", None),
    ("if 1 == 2 {\n x = relu\n }\n x -> relu", None, "", (7, 2), "unknown name `x`",
     "bound in the `if` body at line 4, whose condition did not hold"),
    ("if 1 == 1 {\n input y: 3\n }", None, "", (5, 2), "`input` is only a statement of a network's body",
     "top level"),
    ("mul(image)", None, "", (4, 1), "`mul` multiplies at least two tensors", None),
    ("g = globalavgpool -> conv(4, 1x1)\n mul(image, g)", None, "", (5, 2),
     "`mul` needs operands of the same shape, or a gate (Cx1x1, Cx1 or C) of the same channels, got 8x16x16, 4x1x1",
     "squeeze-and-excitation"),
    ("relu -> mul(image, image)", None, "", (4, 9), "`mul` multiplies named tensors, so it must start a chain",
     "mul(a, b)"),
    ("a = flatten -> dense(4)\n sample(a)", None, "", (5, 2), "`sample` takes 2 tensors, got 1",
     "z = sample(mu, logvar)"),
    ("a = flatten -> dense(4)\n b = image -> flatten -> dense(5)\n sample(a, b)", None, "", (6, 2),
     "`sample` needs mu and logvar of the same shape, got 4 and 5", "two heads"),
    ("a = flatten -> dense(4)\n sample(a, a, beta=-1)", None, "", (5, 15), "beta must be at least 0.0, received: -1.0", None),
    ("sample -> relu", None, "", (4, 1), "`sample` needs the tensors to sample", None),
    ("flatten -> reshape(4x7x7)", None, "", (4, 20), "reshape cannot make 2048 (2,048 values) into 4x7x7 (196 values)",
     "element counts"),
    ("reshape(8x256)", None, "", None, None, None),
    ("reshape(0x8)", None, "", (4, 9), "every size >= 1", None),
    ("channels(4, 9)", None, "", (4, 13), "stop 9 is beyond the 8 channels of 8x16x16", "0 .. 7"),
    ("channels(5, 5)", None, "", (4, 10), "the slice [5, 5) holds no channel", None),
    ("shuffle(3)", None, "", (4, 9), "groups=3 must divide the 8 channels", None),
    ("upsample(2, mode=linear)", None, "", (4, 13), "unknown upsampling mode `linear`", "`bilinear`"),
    ("upsample(2, mode=bilinear)", "input s: 4x10", "", (4, 13), "unknown upsampling mode `bilinear`", "`linear`"),
    ("upsample(2, mode=bicubic)", None, "", (4, 13), "unknown upsampling mode `bicubic`",
     "choose nearest or bilinear"),
    ("upsample(2x2x2)", None, "", (4, 10), "scale 2x2x2 has 3 axes", None),
    ("conv_transpose(4, 3x3, stride=2, output_pad=2)", None, "", (4, 34),
     "output_pad 2x2 must be smaller than the stride 2x2 or the dilation 1x1", "PyTorch"),
    ("conv_transpose(4, 3x3, pad=same, output_pad=1)", None, "", (4, 34), "takes no output_pad", None),
    ("conv_transpose(4, 3x3, pad=9)", None, "", (4, 1),
     "`conv_transpose` output height would be 0 (below 1): input height 16, out = (16-1)*1 - 9 - 9 + 1*(3-1) + 0 + 1",
     "crop less"),
    ("conv_transpose(5, 3x3, groups=2)", None, "", (4, 24), "groups=2 must divide", None),
    ("adaptiveavgpool(0)", None, "", (4, 17), "size must be >= 1", None),
    ("flatten -> adaptivemaxpool(2)", None, "", (4, 12), "needs an input with spatial axes", None),
    ("elu(alpha=true)", None, "", (4, 5), "alpha must be a number", None),
    ("droppath(1.0)", None, "", (4, 10), "droppath probability p must be in [0.0, 1.0)", None),
    ("Upsample(2)", None, "", (4, 1), "unknown layer or block `Upsample`", "`Upsample` is called `upsample` here"),
    ("flatten -> Linear(2) -> ConvTranspose2d(3, 2)", None, "", (4, 12), "unknown layer or block `Linear`", None),
    ("ConvTranspose2d(3, 2)", None, "", (4, 1), "unknown layer or block `ConvTranspose2d`",
     "`ConvTranspose2d` is called `conv_transpose` here"),
    ("ReLU6", None, "", (4, 1), "unknown name `ReLU6`", "`ReLU6` is called `relu6` here"),
    ("x = SiLU", None, "", (4, 5), "unknown name `SiLU`", "`SiLU` is called `silu` here"),
])
def test_located_errors(body, head, extra, where, message, hint):
    head = head or "input image: 8x16x16"
    if where is None:
        net(body, head, extra)                  # no error
        return
    err = error(body, head, extra)
    assert err.file == "t.cnn" and (err.line, err.col) == where, str(err)
    assert message in err.message, str(err)
    if hint is not None:
        assert err.hint and hint in err.hint, str(err)


def test_reserved_words():
    for word in ("if", "and", "or", "not"):
        err = error(f"{word} = relu")
        assert f"`{word}` is a reserved word" in str(err) and (err.line, err.col) == (4, 1), str(err)


def test_same_name_twice_for_networks_and_generated_names_of_digit_kinds():
    with pytest.raises(CnnSpecError, match="network `A` is defined twice"):
        cnnspec.loads("network A {\n input x: 2\n}\nnetwork A {\n input x: 2\n}\n")
    err = error("relu6_2 = relu")
    assert "looks like a generated layer name" in err.message and "relu6_1, relu6_2" in err.hint
    n = net("relu6 -> relu6 -> relu * 61")
    assert {"relu6_1", "relu6_2", "relu61"} <= set(n.layers())


# ---- the command line ------------------------------------------------------------------------------

GAN = """
network G {
    input z: 8
    input label: 3
    concat(z, label) -> dense(16) -> relu -> reshape(1x4x4) -> conv_transpose(1, 4x4, stride=2, pad=1) -> tanh
}
network D {
    input image: 1x8x8
    conv(4, 3x3, stride=2, pad=1) -> leaky_relu(0.2) -> flatten -> dense(1) -> sigmoid
}
train {
    task = gan
    generator = G
    discriminator = D
    latent = 8
}
"""


def test_cli_network_option(tmp_path, capsys):
    path = tmp_path / "gan.cnn"
    path.write_text(GAN)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    # G: dense 11*16+16, transposed conv 1*1*16+1; MACs 11*16 + 1*1*16 per input position (4x4)
    # D: conv 1*4*9+4, dense 64+1; MACs 9 per output (4x4x4) + 64
    assert out == [f"{path}: ok (G: 6 layers, 209 params, 432 MACs)", f"{path}: ok (D: 5 layers, 105 params, 640 MACs)"]
    assert main(["check", str(path), "--network", "D"]) == 0
    assert capsys.readouterr().out.count("ok") == 1
    assert main(["summary", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["network"] == "G" and [i["name"] for i in data["inputs"]] == ["z", "label"]
    assert main(["summary", str(path), "--json", "--network", "D"]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == {"name": "image", "shape": [1, 8, 8]}
    assert main(["summary", str(path), "--network", "E"]) == 1
    assert "no network `E` in this file" in capsys.readouterr().err
    dot = tmp_path / "d.dot"
    assert main(["render", str(path), "--network", "D", "-o", str(dot)]) == 0
    assert "conv1" in dot.read_text()
    assert main(["render", str(path), "-o", str(dot)]) == 0
    text = dot.read_text()
    assert "label" in text and "z\\ninput" in text and "concat1" in text


def test_cli_train_trains_the_gan_of_the_file(tmp_path, capsys):
    """Any network of a GAN file trains the pair; this one's label goes to the generator alone."""
    path = tmp_path / "gan.cnn"
    path.write_text(GAN)
    assert main(["train", str(path), "--network", "D", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "gan.cnn:14:5: error: a conditional GAN gives the label to both networks: only the generator has " \
           "`input label`" in err and "Traceback" not in err


def test_compile_runs_the_new_layers_and_several_inputs():
    """compile() of what once said "the engine cannot run ... yet" (tests/test_engine_v10.py checks
    the results)."""
    model = net("upsample(2) -> conv(2, 1x1)").compile()
    assert model.forward(np.zeros((1, *model.input_shape), np.float32)).shape == (1, *model.output_shape)
    model = net("concat(z, label)", head="input z: 4\n    input label: 3").compile()
    assert model.input_names == ["z", "label"]
    out = model.forward({"z": np.ones((2, 4), np.float32), "label": np.zeros((2, 3), np.float32)})
    np.testing.assert_array_equal(out, [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0]])


# ---- the train keys of dsl.md §10.4 ---------------------------------------------------------------

TWO = "network G {\n    input z: 8\n    dense(4)\n}\nnetwork D {\n    input x: 4\n    dense(1)\n}\n"


def train_of(settings: str):
    return cnnspec.loads(TWO + "train {\n" + settings + "\n}\n", file="g.cnn").train_config


def train_error(settings: str) -> CnnSpecError:
    with pytest.raises(CnnSpecError) as info:
        train_of(settings)
    return info.value


def test_train_keys_of_the_tasks():
    assert train_of("task = reconstruct\nloss = l1\ncorrupt = [noise(0.1), flip]") == {
        "task": "reconstruct", "loss": "l1", "corrupt": [("noise", (0.1,)), ("flip", ())]}
    assert train_of("task = segment\nloss = cross_entropy") == {"task": "segment", "loss": "cross_entropy"}
    assert train_of("task = gan\ngenerator = G\ndiscriminator = D\nlatent = 8\nd_steps = 2\nloss = bce") == {
        "task": "gan", "generator": "G", "discriminator": "D", "latent": 8, "d_steps": 2, "loss": "bce"}
    assert train_of("task = gan\ngenerator = G\ndiscriminator = D\ng_ema = 0.999")["g_ema"] == 0.999
    assert train_of("task = classify") == {"task": "classify"}


@pytest.mark.parametrize("settings, where, message, hint", [
    ("task = regress", (10, 8), "unknown task `regress`", "classify, reconstruct, segment, gan"),
    ("task = gan\ngenerator = G", (10, 1), "`task = gan` needs `discriminator`", "generator = G, discriminator = D"),
    ("task = gan\ngenerator = G\ndiscriminator = Gen", (12, 17), "no network `Gen` in this file", "its networks are: G, D"),
    ("task = gan\ngenerator = G\ndiscriminator = G", (12, 1), "the generator and the discriminator are the same", None),
    ("generator = G", (10, 1), "`generator` is a setting of `task = gan`", "(the default)"),
    ("task = reconstruct\nd_steps = 2", (11, 1), "`d_steps` is a setting of `task = gan`", "reconstruct"),
    ("task = gan\ngenerator = G\ndiscriminator = D\nlatent = 9", (13, 1), "latent = 9, but the generator `G` takes "
     "`z: 8` (8 values)", "latent = 8"),
    ("task = gan\ngenerator = G\ndiscriminator = D\nd_steps = 0", (13, 11), "d_steps must be at least 1", None),
    ("task = gan\ngenerator = G\ndiscriminator = D\ng_ema = 1", (13, 9), "g_ema is the decay of the generator's "
     "moving average: a number between 0 and 1, got 1", "g_ema = 0.999"),
    ("task = gan\ngenerator = G\ndiscriminator = D\ng_ema = 0.0", (13, 9), "between 0 and 1, got 0.0", None),
    ("task = gan\ngenerator = G\ndiscriminator = D\ng_ema = -0.5", (13, 9), "between 0 and 1", None),
    ("task = gan\ngenerator = G\ndiscriminator = D\ng_ema = yes", (13, 9), "g_ema must be a number, got 'yes'",
     None),
    ("g_ema = 0.99", (10, 1), "`g_ema` is a setting of `task = gan`", "(the default)"),
    ("corrupt = [noise(0.1)]", (10, 1), "`corrupt` is a setting of `task = reconstruct`", "augment"),
    ("task = reconstruct\ncorrupt = [blur]", (11, 12), "unknown augmentation `blur`", None),
    ("loss = hinge", (10, 8), "unknown loss `hinge`", None),
    ("generator = \"G\"", (10, 13), "`generator` is the name of a network of this file", None),
])
def test_train_key_errors(settings, where, message, hint):
    err = train_error(settings)
    assert (err.file, err.line, err.col) == ("g.cnn", *where), str(err)
    assert message in err.message, str(err)
    if hint is not None:
        assert hint in err.hint, str(err)


def test_drawings_show_gates_samples_and_every_input():
    n = net("gate = globalavgpool -> conv(8, 1x1) -> sigmoid\n a = mul(image, gate)\n"
            "mu = a -> flatten -> dense(4)\n logvar = a -> flatten -> dense(4)\n z = sample(mu, logvar)\n"
            "concat(z, y)", head="input image: 8x16x16\n    input y: 3")
    dot = n.to_dot()
    full_edge = next(line for line in dot.splitlines() if "image -> a" in line)
    gate_edge = next(line for line in dot.splitlines() if "sigmoid1 -> a" in line)
    assert "dashed" in gate_edge and "gate 8x1x1" in gate_edge and "dashed" not in full_edge
    assert "mu ×" not in dot and "mul ×" in dot
    mu_edge = next(line for line in dot.splitlines() if "dense1 -> z" in line)
    logvar_edge = next(line for line in dot.splitlines() if "dense2 -> z" in line)
    assert "label=mu" in mu_edge and "label=logvar" in logvar_edge
    assert "octagon" in next(line for line in dot.splitlines() if line.strip().startswith("z ["))
    assert "KL to the loss" in dot
    assert "y [" in dot and "ellipse" in next(line for line in dot.splitlines() if line.strip().startswith("y ["))


def test_a_grader_network_problem_names_one_network_of_its_file(tmp_path):
    from cnnspec.grade.assignment import load_assignment
    from grade_fixtures.support import small_assignment

    extra = '[[networks]]\nname = "d"\nspec = "gan.cnn"\nnetwork = "D"\n'
    path = small_assignment(tmp_path / "a", ["relu_forward"], extra=extra)
    (tmp_path / "a" / "gan.cnn").write_text(GAN)
    (problem,) = load_assignment(path).networks
    assert problem.network == "D"
    assert cnnspec.load(problem.spec, network=problem.network or None).name == "D"
