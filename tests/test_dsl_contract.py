"""Every example of dsl.md (the language contract) compiles and analyses, read from the doc itself;
and no input text, however broken, makes anything but CnnSpecError escape the whole pipeline."""
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnspec
from cnnspec import CnnSpecError
from conftest import DOCS

DSL = (DOCS / "dsl.md").read_text()
FENCES = re.findall(r"```\n(.*?)```", DSL, flags=re.S)
EXAMPLES = [f for f in FENCES if re.search(r"^network \w+ \{", f, flags=re.M)]


BLOCKS = [f for f in FENCES if re.search(r"^block \w+", f, flags=re.M) and not re.search(r"^network ", f, flags=re.M)]


def test_the_doc_has_its_examples():
    names = {name for f in EXAMPLES for name in re.findall(r"^network (\w+)", f, flags=re.M)}
    assert {"LeNet5", "ResNet18", "VGG16", "Edges", "CrossesAndXs", "AutoEncoder", "Generator",
            "Discriminator"} <= names
    assert any("block inverted(" in f and "block se(" in f for f in BLOCKS)


@pytest.mark.parametrize("text", EXAMPLES, ids=lambda t: re.search(r"network (\w+)", t).group(1))
def test_every_dsl_example_compiles_and_analyses(text):
    nets = cnnspec.loads_all(text, file="dsl.md")
    assert list(nets) == re.findall(r"^network (\w+)", text, flags=re.M)     # every network of the file
    for net in nets.values():
        summary = net.summary()
        assert summary["layers"][0]["op"] == "input"
        assert all(layer["output_shape"] for layer in summary["layers"])
        assert net.warnings == []


def test_the_blocks_of_section_10_2_as_written():
    """inverted and se, used as MobileNetV2 and MobileNetV3 use them."""
    (text,) = [f for f in BLOCKS if "block inverted(" in f]
    net = cnnspec.loads(text + "network T {\n    input image: 16x8x8\n    inverted(16, expand=1) -> "
                        "inverted(24, stride=2) -> inverted(24) -> se(8)\n}\n", file="dsl.md")
    assert net.warnings == []
    # expand=1: no expansion conv; stride 1 and 16 == 16: a residual add
    assert [n for n in net.layers() if n.startswith("inverted1.") and net[n]["op"] in ("conv", "add")] == [
        "inverted1.conv1", "inverted1.conv2", "inverted1.add1"]
    assert "inverted2.add1" not in net.layers() and "inverted3.add1" in net.layers()
    assert net["inverted2.conv1"]["output_shape"] == (96, 8, 8)        # hidden = in.channels * 6
    assert net["se1.conv2"]["output_shape"] == (24, 1, 1) and net.output_shape == (24, 4, 4)
    assert net["se1.mul1"]["config"]["broadcast"] == ("full", "gate")
    params = {n: net[n]["n_params"] for n in net.layers() if net[n]["n_params"]}
    assert params["inverted1.conv1"] == 16 * 9 and params["inverted2.conv2"] == 96 * 9
    assert params["se1.conv1"] == 24 * 8 + 8 and params["se1.conv2"] == 8 * 24 + 24


def test_the_train_sections_of_section_10_4():
    by_name = {n: net for t in EXAMPLES for n, net in cnnspec.loads_all(t).items()}
    ae = by_name["AutoEncoder"].train_config
    assert ae == {"data": "shapes", "task": "reconstruct", "loss": "bce", "corrupt": [("noise", (0.3,))]}
    gan = by_name["Discriminator"].train_config
    assert gan["task"] == "gan" and (gan["generator"], gan["discriminator"]) == ("Generator", "Discriminator")
    assert gan["optimizer"] == {"name": "adam", "lr": 2e-4, "betas": (0.5, 0.999)}
    assert (gan["epochs"], gan["batch"]) == (10, 64)


def test_dsl_examples_by_hand():
    by_name = {re.search(r"network (\w+)", t).group(1): cnnspec.loads(t) for t in EXAMPLES}
    assert by_name["LeNet5"].summary()["totals"]["params"] == 61_706
    assert by_name["LeNet5"].train_config["epochs"] == 5
    assert by_name["VGG16"].summary()["totals"]["params"] == 138_357_544
    assert by_name["ResNet18"].summary()["totals"]["params"] == 11_689_512
    resnet = by_name["ResNet18"]
    assert {"basic1.conv1", "basic2.add1", "down1.conv3", "basic3.conv2"} <= set(resnet.layers())
    assert resnet["down1.add1"]["inputs"] == ["down1.batchnorm2", "down1.batchnorm3"]   # main, skip
    assert resnet["basic1.add1"]["inputs"] == ["maxpool1", "basic1.batchnorm2"]          # in, main
    crosses = by_name["CrossesAndXs"]
    assert crosses["maps"]["output_shape"] == (2, 6, 6) and crosses.output_shape == (2, 3, 3)
    assert by_name["Edges"].output_shape == (1, 64, 64)
    ae = by_name["AutoEncoder"]
    shapes = [ae[n]["output_shape"] for n in ae.layers() if ae[n]["op"] in ("conv", "dense", "reshape", "conv_transpose")]
    assert shapes == [(16, 14, 14), (32, 7, 7), (32,), (1568,), (32, 7, 7), (16, 14, 14), (1, 28, 28)]
    # conv 1*16*9+16, 16*32*9+32; dense 1568*32+32, 32*1568+1568; conv_transpose 32*16*9+16, 16*1*9+1
    assert ae.summary()["totals"]["params"] == 160 + 4640 + 50208 + 51744 + 4624 + 145
    gan = cnnspec.loads_all([t for t in EXAMPLES if "network Generator" in t][0])
    # dense 64*8192+8192, batchnorm 2*8192, conv_transpose 128*64*16+64, batchnorm 128, 64*1*16+1
    assert gan["Generator"].summary()["totals"]["params"] == 532480 + 16384 + 131136 + 128 + 1025
    assert gan["Generator"].output_shape == (1, 32, 32) and gan["Discriminator"].output_shape == (1,)


SEED_TEXTS = EXAMPLES + ["network A { input x: 3x8x8\n conv(4, 3x3) -> relu\n }",
                         "block b(c, s=1) { conv(c*2 // s, 1x1, stride=s) }\nnetwork B { input x: 4x9\n b(2) * 2\n }"]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(SEED_TEXTS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3),
                                                       st.sampled_from(list("(){}[],=-><*x0123456789 \nabc#.\"'\\/\t") +
                                                                       ["->", "conv", "add(", "in", "1e99", "0",
                                                                        "-1", "pad=", "same", "100000000"])),
                                             min_size=1, max_size=6))
def test_mutated_text_only_raises_cnnspec_error(text, edits):
    for where, how, token in edits:
        i = where % (len(text) + 1)
        if how == 0:
            text = text[:i] + token + text[i:]
        elif how == 1:
            text = text[:i] + text[i + len(token):]
        elif how == 2:
            text = text[:i] + token + text[i + 1:]
        else:
            j = (where * 7919) % (len(text) + 1)
            text = text[:min(i, j)] + text[max(i, j):] + text[min(i, j):max(i, j)]
    try:
        net = cnnspec.loads(text, file="fuzz.cnn")
        net.summary()
    except CnnSpecError as err:
        assert err.message and str(err).startswith("fuzz.cnn")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_random_text_only_raises_cnnspec_error(text):
    try:
        cnnspec.loads(text)
    except CnnSpecError:
        pass
