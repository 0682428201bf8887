"""The language front end: every dsl.md example builds the graph the contract describes, and the
semantics of dsl.md §3-§8 (chains, names, blocks, repetition, values, the train section).

The expected names, edges and counts below are written from reading dsl.md, not from the code.
"""
import re

import pytest

from cnnspec.errors import Pos
from cnnspec.lang import compile_source, parse
from cnnspec.layers.values import Size
from conftest import DOCS

DSL = DOCS / "dsl.md"


def dsl_examples() -> dict[str, str]:
    """The `.cnn` code fences of dsl.md (those holding a network), by network name."""
    fences = re.findall(r"^```[^\n]*\n(.*?)^```", DSL.read_text(), re.S | re.M)
    return {re.search(r"network (\w+)", f).group(1): f for f in fences if "network " in f}


@pytest.fixture(scope="module")
def examples():
    return dsl_examples()


def chain_of(graph, names):
    """Each node in ``names`` takes exactly the one before it as its input."""
    for before, node in zip(names, names[1:]):
        assert graph.nodes[node]["inputs"] == [before], node
        assert graph.edges[before, node]["index"] == 0


def net(body: str, head: str = "input image: 1x28x28", extra: str = ""):
    return compile_source(f"{extra}\nnetwork N {{\n    {head}\n{body}\n}}\n", "t.cnn")


# ---- the examples of dsl.md -----------------------------------------------------------------------

def test_the_contract_has_the_examples_we_expect(examples):
    assert set(examples) == {"LeNet5", "ResNet18", "VGG16", "Edges", "CrossesAndXs", "AutoEncoder", "Generator"}


@pytest.mark.parametrize("name, first_input", [("LeNet5", "image"), ("ResNet18", "image"), ("VGG16", "image"),
                                               ("Edges", "image"), ("CrossesAndXs", "image"),
                                               ("AutoEncoder", "image"), ("Generator", "z")])
def test_every_example_parses_and_builds(examples, name, first_input):
    graph = compile_source(examples[name], f"{name}.cnn")
    assert graph.graph["network"] == name
    assert graph.graph["input"] == first_input
    assert graph.graph["file"] == f"{name}.cnn"
    assert graph.graph["sources"] == {f"{name}.cnn": examples[name]}
    for node, data in graph.nodes(data=True):
        assert set(data) == {"op", "args", "kwargs", "inputs", "pos", "arg_pos", "scope"}
        assert isinstance(data["pos"], Pos) and data["pos"].file == f"{name}.cnn"
        assert [u for u, _ in sorted(graph.in_edges(node), key=lambda e: graph.edges[e]["index"])] \
            == list(dict.fromkeys(data["inputs"]))


def test_lenet5(examples):
    graph = compile_source(examples["LeNet5"], "lenet5.cnn")
    order = ["image", "conv1", "relu1", "maxpool1", "conv2", "relu2", "maxpool2", "flatten1",
             "dense1", "relu3", "dense2", "relu4", "dense3", "softmax1"]
    assert list(graph) == order
    chain_of(graph, order)
    assert graph.graph["output"] == "softmax1"
    assert graph.nodes["image"]["op"] == "input"
    assert graph.nodes["image"]["kwargs"] == {"shape": (1, 32, 32)}
    conv1 = graph.nodes["conv1"]
    assert conv1["op"] == "conv" and conv1["args"] == (6, (5, 5)) and conv1["kwargs"] == {}
    assert isinstance(conv1["args"][1], Size) and type(conv1["args"][0]) is int
    assert conv1["pos"] == Pos("lenet5.cnn", 5, 5, 12)           # `conv(6, 5x5)` on line 5
    assert conv1["arg_pos"] == {0: Pos("lenet5.cnn", 5, 10, 1), 1: Pos("lenet5.cnn", 5, 13, 3)}
    assert graph.nodes["maxpool1"]["args"] == (Size((2, 2)),)
    assert graph.nodes["maxpool2"]["args"] == (2,) and type(graph.nodes["maxpool2"]["args"][0]) is int
    assert [graph.nodes[d]["args"] for d in ("dense1", "dense2", "dense3")] == [(120,), (84,), (10,)]
    assert all(graph.nodes[n]["scope"] == () for n in graph)
    assert graph.graph["blocks"] == {}
    assert graph.graph["train"] == {
        "data": "shapes", "loss": "cross_entropy",
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "epochs": 5, "batch": 64, "seed": 0}


BASIC = ["conv1", "batchnorm1", "relu1", "conv2", "batchnorm2", "add1", "relu2"]
DOWN = ["conv1", "batchnorm1", "relu1", "conv2", "batchnorm2", "conv3", "batchnorm3", "add1", "relu2"]


def test_resnet18(examples):
    graph = compile_source(examples["ResNet18"], "resnet18.cnn")
    instances = ["basic1", "basic2", "down1", "basic3", "down2", "basic4", "down3", "basic5"]
    assert list(graph.graph["blocks"]) == instances
    expected = ["image", "conv1", "batchnorm1", "relu1", "maxpool1"]
    for inst in instances:
        expected += [f"{inst}.{n}" for n in (BASIC if inst.startswith("basic") else DOWN)]
    expected += ["globalavgpool1", "flatten1", "dense1", "softmax1"]
    assert list(graph) == expected and len(graph) == 1 + 4 + 5 * 7 + 3 * 9 + 4
    assert graph.number_of_edges() == (len(graph) - 1) + 8     # one input per layer, two per add

    blocks = graph.graph["blocks"]
    assert blocks["basic1"]["type"] == "basic" and blocks["basic1"]["args"] == {"c": 64}
    assert blocks["basic2"]["args"] == {"c": 64}
    assert blocks["down2"] == {"type": "down", "args": {"c": 256}, "scope": (),
                               "pos": blocks["down2"]["pos"]}
    assert blocks["down2"]["pos"].line == examples["ResNet18"].splitlines().index(
        "    down(256) -> basic(256)") + 1

    nodes = graph.nodes
    assert nodes["basic1.add1"]["inputs"] == ["maxpool1", "basic1.batchnorm2"]      # add(in, main)
    assert nodes["basic1.conv1"]["inputs"] == ["maxpool1"]
    assert nodes["basic2.add1"]["inputs"] == ["basic1.relu2", "basic2.batchnorm2"]
    assert nodes["down1.conv1"]["inputs"] == ["basic2.relu2"]
    assert nodes["down1.conv3"]["inputs"] == ["basic2.relu2"]                       # skip = in -> ...
    assert nodes["down1.add1"]["inputs"] == ["down1.batchnorm2", "down1.batchnorm3"]  # add(main, skip)
    assert nodes["basic3.conv1"]["inputs"] == ["down1.relu2"]
    assert nodes["globalavgpool1"]["inputs"] == ["basic5.relu2"]
    assert graph.edges["basic1.batchnorm2", "basic1.add1"]["index"] == 1
    assert nodes["basic1.conv1"]["scope"] == ("basic1",)
    assert nodes["conv1"]["kwargs"] == {"stride": 2, "pad": 3, "bias": False}
    assert nodes["down1.conv1"]["args"] == (128, Size((3, 3)))
    assert nodes["down1.conv1"]["kwargs"] == {"stride": 2, "pad": 1, "bias": False}
    assert nodes["down3.conv3"]["args"] == (512, Size((1, 1)))
    assert nodes["down3.conv3"]["kwargs"] == {"stride": 2, "bias": False}
    assert nodes["basic5.conv2"]["args"] == (512, Size((3, 3)))
    assert graph.graph["output"] == "softmax1"
    assert graph.graph["train"] is None


def test_resnet_fence_bottleneck_and_inception_blocks(examples):
    """The fence's other two blocks, used by a network of our own after them."""
    blocks = examples["ResNet18"][:examples["ResNet18"].index("network ResNet18")]
    graph = compile_source(blocks + """
network T {
    input image: 256x56x56
    bottleneck(64, stride=2)
    inception(64, 96, 128, 16, 32, 32)
}""", "t.cnn")
    b = "bottleneck1."
    assert [n for n in graph if n.startswith(b)] == [b + n for n in (
        "conv1", "batchnorm1", "relu1", "conv2", "batchnorm2", "relu2", "conv3", "batchnorm3",
        "conv4", "batchnorm4", "add1", "relu3")]
    assert graph.nodes[b + "conv3"]["args"] == (256, Size((1, 1)))               # 4*c
    assert graph.nodes[b + "conv2"]["kwargs"] == {"stride": 2, "pad": 1, "bias": False}
    assert graph.nodes[b + "conv4"]["args"] == (256, Size((1, 1)))
    assert graph.nodes[b + "conv4"]["kwargs"] == {"stride": 2, "bias": False}
    assert graph.nodes[b + "conv4"]["inputs"] == ["image"]
    assert graph.graph["blocks"]["bottleneck1"]["args"] == {"c": 64, "stride": 2}

    i = "inception1."
    assert graph.nodes[i + "concat1"]["inputs"] == [i + "relu1", i + "relu3", i + "relu5", i + "relu6"]
    for first in ("conv1", "conv2", "conv4", "maxpool1"):
        assert graph.nodes[i + first]["inputs"] == [b + "relu3"]
    assert graph.nodes[i + "conv6"]["inputs"] == [i + "maxpool1"]
    assert graph.nodes[i + "conv5"]["args"] == (32, Size((5, 5)))
    assert graph.nodes[i + "conv5"]["kwargs"] == {"pad": 2}
    assert graph.graph["output"] == i + "concat1"
    assert graph.graph["blocks"]["inception1"]["args"] == {
        "c1": 64, "c3r": 96, "c3": 128, "c5r": 16, "c5": 32, "pp": 32}


def test_vgg16(examples):
    graph = compile_source(examples["VGG16"], "vgg16.cnn")
    ops = [graph.nodes[n]["op"] for n in graph]
    assert ops.count("conv") == 13 and ops.count("maxpool") == 5 and ops.count("relu") == 15
    assert ops.count("dense") == 3 and ops.count("dropout") == 2 and len(graph) == 41
    order = ["image", "conv1", "relu1", "conv2", "relu2", "maxpool1", "conv3", "relu3", "conv4",
             "relu4", "maxpool2", "conv5", "relu5", "conv6", "relu6", "conv7", "relu7", "maxpool3"]
    assert list(graph)[:len(order)] == order
    assert list(graph)[-10:] == ["maxpool5", "flatten1", "dense1", "relu14", "dropout1", "dense2",
                                 "relu15", "dropout2", "dense3", "softmax1"]
    chain_of(graph, list(graph))
    assert graph.nodes["conv13"]["args"] == (512, Size((3, 3)))
    assert graph.nodes["conv13"]["kwargs"] == {"pad": "same"}
    assert graph.nodes["dropout1"]["args"] == (0.5,)


def test_edges(examples):
    graph = compile_source(examples["Edges"], "edges.cnn")
    assert list(graph) == ["image", "conv1"]
    assert graph.nodes["conv1"]["args"] == (1, Size((3, 3)))
    assert graph.nodes["conv1"]["kwargs"] == {"weights": "sobel_x", "bias": False,
                                              "trainable": False, "pad": "same"}
    assert graph.graph["output"] == "conv1"


def test_crosses_and_xs(examples):
    graph = compile_source(examples["CrossesAndXs"], "crosses.cnn")
    assert list(graph) == ["image", "maps", "maxpool1"]                 # `maps = conv(...)`
    assert graph.nodes["maps"]["op"] == "conv"
    assert graph.nodes["maps"]["kwargs"]["weights"] == ["cross", "x_shape"]
    assert graph.nodes["maps"]["kwargs"]["pad"] == 1
    assert graph.nodes["maxpool1"]["inputs"] == ["maps"]


# ---- statements, names and data flow ----------------------------------------------------------

def test_naming_one_layer_renames_no_other():
    graph = net("c1 = conv(6, 5x5)\nconv(16, 5x5) -> relu\nc3 = conv(8, 3x3)\nconv(8, 1x1)")
    assert list(graph) == ["image", "c1", "conv2", "relu1", "c3", "conv4"]
    chain_of(graph, list(graph))


def test_a_name_on_a_longer_chain_names_no_layer():
    graph = net("x = conv(6, 5x5) -> relu\ny = x -> relu\nadd(x, y)")
    assert list(graph) == ["image", "conv1", "relu1", "relu2", "add1"]
    assert graph.nodes["add1"]["inputs"] == ["relu1", "relu2"]


def test_chains_may_start_from_the_input_name_or_a_bound_name():
    graph = net("a = conv(4, 3x3)\nimage -> conv(4, 3x3)\nb = a -> relu\nconcat(a, b)")
    assert graph.nodes["conv2"]["inputs"] == ["image"]
    assert graph.nodes["relu1"]["inputs"] == ["a"]
    assert graph.nodes["concat1"]["inputs"] == ["a", "relu1"]
    assert graph.edges["relu1", "concat1"]["index"] == 1
    assert graph.graph["output"] == "concat1"


def test_a_name_alone_moves_the_current_tensor():
    graph = net("a = relu\nimage\nsigmoid")
    assert graph.nodes["sigmoid1"]["inputs"] == ["image"]


def test_a_merge_can_be_named_and_take_the_same_tensor_twice():
    graph = net("s = add(image, image) -> relu")
    assert graph.nodes["add1"]["inputs"] == ["image", "image"]
    assert graph.number_of_edges() == 2
    graph = net("s = add(image, image)")
    assert "s" in graph and graph.nodes["s"]["op"] == "add"
    assert graph.nodes["s"]["arg_pos"][1].col > graph.nodes["s"]["arg_pos"][0].col


def test_newlines_continue_a_chain_after_and_before_arrows_and_inside_brackets():
    graph = net("""
    conv(4,           # a comment inside the call
         3x3,
         pad=1) ->
        relu          # the chain goes on after `->`

        # and on the line that starts with `->`
        -> maxpool(2)
    dense(10, bias=[
        1, 2])
""")
    assert list(graph) == ["image", "conv1", "relu1", "maxpool1", "dense1"]
    chain_of(graph, list(graph))
    assert graph.nodes["conv1"]["kwargs"] == {"pad": 1}
    assert graph.nodes["dense1"]["kwargs"] == {"bias": [1, 2]}


def test_one_line_bodies_and_order_of_top_level_items():
    graph = compile_source("train { epochs = 2 }\nnetwork N { input x: 4 }\nblock unused() { relu }",
                           "t.cnn")
    assert list(graph) == ["x"] and graph.graph["output"] == "x"
    assert graph.nodes["x"]["kwargs"] == {"shape": (4,)}
    assert graph.graph["train"] == {"epochs": 2}


@pytest.mark.parametrize("shape, expected", [("3x224x224", (3, 224, 224)), ("300x50", (300, 50)),
                                             ("784", (784,))])
def test_input_shapes(shape, expected):
    graph = net("", head=f"input x: {shape}")
    assert graph.nodes["x"]["kwargs"]["shape"] == expected
    assert type(graph.nodes["x"]["kwargs"]["shape"]) is tuple


def test_argument_values():
    graph = net("conv(8, 3x1, pad=(1, 2, 1, 2), weights=[[1, 0, -1], [2, 0, -2.5]], eps=1e-5, "
                "neg=-3, on=true, off=false, word=same, text=\"a b\", e=2.5e3, one=(7,), x=5, "
                "half=.5)")
    node = graph.nodes["conv1"]
    assert node["args"] == (8, Size((3, 1)))
    kw = node["kwargs"]
    assert kw["pad"] == (1, 2, 1, 2) and type(kw["pad"]) is tuple and not isinstance(kw["pad"], Size)
    assert kw["weights"] == [[1, 0, -1], [2, 0, -2.5]] and type(kw["weights"][0]) is list
    assert kw["eps"] == 1e-5 and kw["neg"] == -3 and kw["on"] is True and kw["off"] is False
    assert kw["word"] == "same" and kw["text"] == "a b" and kw["e"] == 2500.0 and kw["half"] == 0.5
    assert kw["one"] == (7,) and kw["x"] == 5 and type(kw["x"]) is int
    assert set(node["arg_pos"]) == {0, 1, *kw}
    assert node["arg_pos"]["pad"].width == len("pad=(1, 2, 1, 2)")


# ---- blocks and repetition ----------------------------------------------------------------------

def test_repetition_of_a_step_and_of_a_group():
    graph = net("conv(8, 3x3, pad=same) * 3\n(conv(4, 3x3) -> relu) * 2 -> maxpool(2)")
    assert list(graph) == ["image", "conv1", "conv2", "conv3", "conv4", "relu1", "conv5", "relu2",
                           "maxpool1"]
    chain_of(graph, list(graph))


def test_block_parameters_defaults_keywords_and_arithmetic():
    graph = net("b(8)\nb(8, k=5)\nb(c=2, k=1)", extra="""
block b(c, k=3, d=2*k) {
    conv(4*c, k) -> conv((c + 1) // 2, d) -> conv(c - 1 - -1, -k * -1) -> relu * (k // 3 + 1)
}""")
    assert graph.nodes["b1.conv1"]["args"] == (32, 3)
    assert graph.nodes["b1.conv2"]["args"] == (4, 6)                  # default from an earlier param
    assert graph.nodes["b1.conv3"]["args"] == (8, 3)
    assert [n for n in graph if n.startswith("b1.relu")] == ["b1.relu1", "b1.relu2"]
    assert graph.nodes["b2.conv2"]["args"] == (4, 10)
    assert [n for n in graph if n.startswith("b2.relu")] == ["b2.relu1", "b2.relu2"]
    assert graph.graph["blocks"]["b3"]["args"] == {"c": 2, "k": 1, "d": 2}
    assert [n for n in graph if n.startswith("b3.relu")] == ["b3.relu1"]
    assert graph.nodes["b1.conv1"]["arg_pos"][0].line == 3              # points into the block


def test_blocks_calling_blocks_are_scoped_and_numbered_per_scope():
    graph = net("stage(8)\nbasic(8) * 2\nstage(16)", extra="""
block basic(c) { conv(c, 3x3, pad=1) -> relu }
block stage(c) {
    basic(c) * 2
    conv(c, 1x1)
}""")
    assert list(graph.graph["blocks"]) == ["stage1", "stage1.basic1", "stage1.basic2", "basic1",
                                           "basic2", "stage2", "stage2.basic1", "stage2.basic2"]
    assert graph.graph["blocks"]["stage1.basic2"]["scope"] == ("stage1",)
    assert graph.nodes["stage1.basic2.conv1"]["scope"] == ("stage1", "basic2")
    assert graph.nodes["stage1.conv1"]["inputs"] == ["stage1.basic2.relu1"]
    assert graph.nodes["basic1.conv1"]["inputs"] == ["stage1.conv1"]
    assert graph.nodes["stage2.basic1.conv1"]["inputs"] == ["basic2.relu1"]
    assert graph.graph["output"] == "stage2.conv1"


def test_a_single_block_call_names_its_instance():
    graph = net("stem = basic(8)\nbasic(8)\nadd(stem, image)", extra="block basic(c) { conv(c, 3x3) }")
    assert list(graph) == ["image", "stem.conv1", "basic2.conv1", "add1"]
    assert graph.nodes["add1"]["inputs"] == ["stem.conv1", "image"]


def test_blocks_without_parameters_and_empty_bodies():
    graph = net("pass\nact -> act()\nrelu", extra="block pass() {}\nblock act { relu }")
    assert list(graph) == ["image", "act1.relu1", "act2.relu1", "relu1"]
    assert graph.nodes["relu1"]["inputs"] == ["act2.relu1"]
    assert "pass1" in graph.graph["blocks"]


def test_block_names_inside_blocks_are_local():
    graph = net("b(2) -> b(3)", extra="block b(c) {\n x = conv(c, 1x1)\n y = in -> relu\n add(x, y)\n}")
    assert graph.nodes["b2.x"]["inputs"] == ["b1.add1"]
    assert graph.nodes["b2.add1"]["inputs"] == ["b2.x", "b2.relu1"]


# ---- the train section ------------------------------------------------------------------------

def train(section: str) -> dict:
    return compile_source(f"network N {{ input x: 4 }}\ntrain {{\n{section}\n}}", "t.cnn").graph["train"]


@pytest.mark.parametrize("written, value", [
    ("shapes", "shapes"), ("digits", "digits"), ("mnist:data/mnist", "mnist:data/mnist"),
    ("cifar10:~/cifar-10-batches-py", "cifar10:~/cifar-10-batches-py"),
    ("folder:path/to/dir", "folder:path/to/dir"), ('"file.npz"', "file.npz"),
    ('"my data/x.npz"', "my data/x.npz"), ("folder:../imgs # comment", "folder:../imgs")])
def test_train_data(written, value):
    assert train(f"data = {written}") == {"data": value}


def test_train_everything():
    config = train("""
    data      = mnist:data/mnist
    loss      = mse
    optimizer = adam(lr=1e-3, betas=(0.9, 0.999), weight_decay=0)
    epochs    = 3
    batch     = 16
    seed      = 7
    val_split = 0.2
    augment   = [flip, vflip, rotate(10), shift(2), scale(0.9, 1.1),
                 noise(0.05)]""")
    assert config == {
        "data": "mnist:data/mnist", "loss": "mse",
        "optimizer": {"name": "adam", "lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0},
        "epochs": 3, "batch": 16, "seed": 7, "val_split": 0.2,
        "augment": [("flip", ()), ("vflip", ()), ("rotate", (10,)), ("shift", (2,)),
                    ("scale", (0.9, 1.1)), ("noise", (0.05,))]}


def test_train_optimizer_forms():
    assert train("optimizer = sgd(0.1, 0.9)")["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    assert train("optimizer = adam")["optimizer"] == {"name": "adam"}
    assert train("augment = flip")["augment"] == [("flip", ())]
    assert train("augment = []")["augment"] == []


def test_in_can_be_bound_to_another_name_and_a_byte_order_mark_is_ignored():
    graph = net("b", extra="\ufeffblock b() {\n    s = in\n    relu\n    add(s, in)\n}")
    assert graph.nodes["b1.add1"]["inputs"] == ["image", "image"]
    assert graph.nodes["b1.relu1"]["inputs"] == ["image"]


def test_parse_gives_positions():
    module = parse("network N {\n  input x: 4\n  y = relu\n}\n", "p.cnn")
    statement = module.network.body[1]
    assert statement.target == "y" and statement.target_pos == Pos("p.cnn", 3, 3, 1)
    assert statement.chain.steps[0].pos == Pos("p.cnn", 3, 7, 4)
