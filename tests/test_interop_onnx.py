"""ONNX export and the round trip .cnn -> ONNX -> `cnnspec import` -> .cnn.

The references are the engine (cnnspec's own numba kernels, themselves tested against NumPy and
PyTorch) and ONNX Runtime (Microsoft's implementation of the ONNX operators): the exported model
run by ONNX Runtime must compute what the engine computes, and the imported spec, run by the engine
with the imported weights, must too.
"""
import re

import numpy as np
import pytest

import cnnspec
from cnnspec.interop.table import missing_kinds
from conftest import SPECS
from interop_cases import ZOO

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# every spec of specs/, at its input size; AlexNet and VGG-16 with a fraction of their channels and
# dense units (their 61M and 138M parameters make 244 MB and 553 MB files, slow to write and read
# on a shared 2-core machine; their layer kinds, strides and paddings stay as they are)
SPEC_NAMES = ["lenet5", "crosses", "edges", "digits", "textcnn", "transfer", "googlenet", "resnet18",
              "alexnet", "vgg16", "resnet50"]
NARROW = {"alexnet": 4, "vgg16": 8}


def narrow(text: str, factor: int) -> str:
    text = re.sub(r"conv\((\d+)", lambda m: f"conv({int(m.group(1)) // factor}", text)
    return text.replace("dense(4096)", f"dense({4096 // factor})")


def without_train(text: str) -> str:
    """The network alone: the training-memory total depends on the train section's optimizer,
    which an ONNX file does not carry."""
    return re.sub(r"\ntrain\s*\{[^}]*\}", "\n", text)


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class Exported:
    """A network, its ONNX file (engine's initial weights, seed 0) and what importing it gives."""

    def __init__(self, text, path):
        self.net = cnnspec.loads(text)
        self.path = path
        self.model = self.net.to_onnx(path)
        from cnnspec.interop.onnx_import import import_onnx
        self.imported, self.weights, self.text = import_onnx(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(name):
        if name not in cache:
            text = ZOO[name] if name in ZOO else without_train((SPECS / f"{name}.cnn").read_text())
            if name in NARROW:
                text = narrow(text, NARROW[name])
            cache[name] = Exported(text, folder / f"{name}.onnx")
        return cache[name]
    return get


def test_every_layer_kind_has_a_translation():
    assert missing_kinds() == []


@pytest.mark.parametrize("name", sorted(ZOO) + SPEC_NAMES)
def test_onnx_runtime_computes_what_the_engine_computes(exported, name):
    e = exported(name)
    net = e.net
    model = net.compile(dtype="float32", seed=0)
    sess = session(e.path)
    for batch in (3, 1):                              # the batch dimension is dynamic
        x = np.random.default_rng(batch).random((batch, *net.input_shape), dtype=np.float32)
        got = sess.run(None, {net.input_name: x})[0]
        assert got.shape == (batch, *net.output_shape)
        assert rel(got, model.forward(x)) < 1e-5
        if name in ("resnet50", "alexnet", "googlenet"):
            break


@pytest.mark.parametrize("name", sorted(ZOO) + ["resnet18", "textcnn", "crosses"])
def test_the_onnx_graph_names_nodes_as_the_layers(exported, name):
    e = exported(name)
    graph = e.model.graph
    names = {n.name for n in graph.node}
    outputs = {o for n in graph.node for o in n.output}
    layers = [n for n in e.net.layers() if e.net[n]["op"] != "input"]
    assert set(layers) <= names and set(layers) <= outputs      # Netron shows the .cnn names
    assert [o.name for o in graph.output] == [e.net.output_name]
    (inp,) = graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == e.net.input_name and dims[0].dim_param == "N"
    assert [d.dim_value for d in dims[1:]] == list(e.net.input_shape)
    assert [(o.domain, o.version) for o in e.model.opset_import] == [("", 21)]
    onnx.checker.check_model(e.model, full_check=True)


def test_frozen_layers_are_recorded_and_read_back(exported):
    e = exported("conv2d")
    props = {p.key: p.value for p in e.model.metadata_props}
    frozen = [n for n in e.net.layers() if e.net[n].get("n_params") and not e.net[n]["trainable"]]
    assert frozen and props["cnnspec.frozen"].split(",") == frozen
    assert e.imported.summary()["totals"]["frozen_params"] == e.net.summary()["totals"]["frozen_params"] > 0


def layer_rows(net):
    return [(row["op"], tuple(row["output_shape"]), row["params"], row["trainable_params"], row["macs"])
            for row in net.summary()["layers"]]


@pytest.mark.parametrize("name", sorted(ZOO) + SPEC_NAMES)
def test_round_trip_keeps_the_summary_and_the_outputs(exported, name):
    e = exported(name)
    assert e.imported.summary()["totals"] == e.net.summary()["totals"]
    assert layer_rows(e.imported) == layer_rows(e.net)
    original = e.net.compile(dtype="float32", seed=0)
    again = e.imported.compile(dtype="float32", seed=123)          # other initial weights ...
    for key, value in e.weights.items():                          # ... replaced by the imported
        group, param = key.rsplit(".", 1)
        (again.state if param.startswith("running_") else again.params)[group][param] = value
    x = np.random.default_rng(7).random((2, *e.net.input_shape), dtype=np.float32)
    assert rel(again.forward(x), original.forward(x)) < 1e-5


def test_round_trip_writes_repeated_structures_as_blocks(exported):
    """ResNet-18 comes back as dsl.md writes it: the blocks `basic(c)` and `down(c)` (named after
    the instances' names in the ONNX graph), `basic(64) * 2`, the same layer names."""
    e = exported("resnet18")
    assert "block basic(c) {" in e.text and "block down(c) {" in e.text
    assert "basic(64) * 2 -> down(128) -> basic(128) -> down(256)" in e.text.replace("\n        ", " ")
    assert e.imported.layers() == e.net.layers()
    googlenet = exported("googlenet")
    assert "block inception(c1, c2, c3, c4, c5, c6) {" in googlenet.text
    assert "inception(64, 96, 128, 16, 32, 32)" in googlenet.text
    resnet50 = exported("resnet50")                             # 4*c: a multiple of a parameter
    assert "conv(4*c, 1x1, stride=stride, bias=false)" in resnet50.text
    assert "bottleneck_id(256) * 5" in resnet50.text


def test_vgg16_comes_back_in_its_groups(exported):
    text = exported("vgg16").text.replace("\n        ", " ")
    assert "(conv(64, 3x3, pad=1) -> relu) * 3 -> maxpool(2x2)" in text          # 512 / 8
    assert "(dense(512) -> relu -> dropout(0.5)) * 2 -> dense(1000) -> softmax" in text


def test_weights_file_is_carried(tmp_path):
    net = cnnspec.load(SPECS / "lenet5.cnn")
    model = net.compile(dtype="float32", seed=3)
    model.save(tmp_path / "w.npz")
    net.to_onnx(tmp_path / "m.onnx", weights=tmp_path / "w.npz")
    init = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(tmp_path / "m.onnx").graph.initializer}
    np.testing.assert_array_equal(init["conv1.weight"], model.params["conv1"]["weight"])
    np.testing.assert_array_equal(init["dense1.weight"], model.params["dense1"]["weight"].T)   # Gemm (out, in)
    x = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    assert rel(session(tmp_path / "m.onnx").run(None, {"image": x})[0], model.forward(x)) < 1e-5


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    net = cnnspec.load(SPECS / "lenet5.cnn")
    np.savez(tmp_path / "w.npz", **{"conv1.weight": np.zeros((6, 1, 3, 3))})
    with pytest.raises(cnnspec.CnnSpecError, match="missing: conv1.bias"):
        net.to_onnx(tmp_path / "m.onnx", weights=tmp_path / "w.npz")
    assert not (tmp_path / "m.onnx").exists()


def test_weights_with_nan_are_refused(tmp_path):
    net = cnnspec.load(SPECS / "lenet5.cnn")
    model = net.compile(seed=0)
    model.params["conv1"]["weight"][0, 0, 0, 0] = np.nan
    model.save(tmp_path / "w.npz")
    with pytest.raises(cnnspec.CnnSpecError, match="NaN or infinite values: conv1.weight"):
        net.to_onnx(tmp_path / "m.onnx", weights=tmp_path / "w.npz")
