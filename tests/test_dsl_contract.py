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


def test_the_doc_has_its_examples():
    names = {re.search(r"^network (\w+)", f, flags=re.M).group(1) for f in EXAMPLES}
    assert {"LeNet5", "ResNet18", "VGG16", "Edges", "CrossesAndXs"} <= names


@pytest.mark.parametrize("text", EXAMPLES, ids=lambda t: re.search(r"network (\w+)", t).group(1))
def test_every_dsl_example_compiles_and_analyses(text):
    net = cnnspec.loads(text, file="dsl.md")
    summary = net.summary()
    assert summary["layers"][0]["op"] == "input"
    assert all(layer["output_shape"] for layer in summary["layers"])
    assert net.warnings == []


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
