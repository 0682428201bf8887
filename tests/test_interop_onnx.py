"""ONNX export and the round trip .cnn -> ONNX -> `cnnspec import` -> .cnn, for every layer kind of
dsl.md (§6 and §10) and every network of every spec in specs/.

The references are the engine (cnnspec's own numba kernels, themselves tested against NumPy and
PyTorch) and ONNX Runtime (Microsoft's implementation of the ONNX operators): the exported model
run by ONNX Runtime must compute what the engine computes, and the imported spec, run by the engine
with the imported weights, must too.

The specs' outputs are compared at the small inputs of ``interop_cases`` (AlexNet and VGG-16
narrowed: their dense layers read the whole last map, so no smaller input exists); their summary
totals are checked on the specs as written, full size, exported and imported with the parameters'
shapes only (``shapes_only``: VGG-16's weights alone are a 553 MB file).
"""
import time

import numpy as np
import pytest

import cnnspec
from cnnspec.interop.table import missing_kinds
from conftest import SPECS
from interop_cases import (CASES, SPEC_CASES, ZOO, ZOO10, as_engine_input, case_text, engine_output, inputs,
                           network, rel)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class Exported:
    """A network, its ONNX file (the engine's initial weights, seed 0) and what importing it gives."""

    def __init__(self, net, path):
        from cnnspec.interop.onnx_import import import_onnx

        self.net = net
        self.path = path
        started = time.perf_counter()
        self.model = net.to_onnx(path)
        self.imported, self.weights, self.text = import_onnx(path)
        self.seconds = time.perf_counter() - started


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(case)``: the case's export and import, made once per session."""
    cache = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(case):
        if case not in cache:
            cache[case] = Exported(network(case), folder / f"{case.replace('.cnn', '').replace(':', '.')}.onnx")
        return cache[case]
    return get


ZERO = np.zeros((), np.float32)


@pytest.fixture
def shapes_only(monkeypatch, tmp_path):
    """Export and import see the parameters' shapes, not their values: ``shapes_only(net)`` gives
    the exporter zeros of the shapes of ``net``'s parameters and state (no model is compiled) and
    makes every parameter an ONNX external-data tensor (ONNX's own form for weights kept beside the
    model) that names an empty file and holds no values; the importer reads such a tensor as zeros
    of its shape. The graph, its nodes, attributes and shapes are exported, checked by onnx.checker
    and imported as usual. The working directory is the model's folder (external data are relative
    to it)."""
    from cnnspec.interop import onnx_export, weights

    monkeypatch.chdir(tmp_path)
    (tmp_path / "zeros").write_bytes(b"")
    real_const, real_to_array = onnx_export.Builder.const, onnx.numpy_helper.to_array

    def const(builder, name, array):
        if name not in builder.arrays:                          # a shape, an axis: values as usual
            return real_const(builder, name, array)
        tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=np.shape(array))
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", "zeros"), ("offset", "0"), ("length", str(4 * np.size(array)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        builder.initializers[name] = tensor
        return name

    def to_array(tensor, *args, **kwargs):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            return np.broadcast_to(ZERO, tuple(tensor.dims))
        return real_to_array(tensor, *args, **kwargs)

    def arrays_of(net):
        arrays = {f"{name}.{key}": np.broadcast_to(ZERO, tuple(shape))
                  for name, node in net.graph.nodes.items()
                  for group in ("params", "state") for key, shape in node.get(group, {}).items()}
        monkeypatch.setattr(weights, "network_arrays", lambda network, weights, seed: arrays)
        monkeypatch.setattr(onnx_export.Builder, "const", const)
        monkeypatch.setattr(onnx.numpy_helper, "to_array", to_array)
        monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_model", lambda model, base: None)
        return net
    return arrays_of


def test_every_layer_kind_has_a_translation():
    assert missing_kinds() == []


@pytest.mark.parametrize("case", CASES)
def test_onnx_runtime_computes_what_the_engine_computes(exported, case):
    e = exported(case)
    onnx.checker.check_model(e.model, full_check=True)
    xs = {k: v.astype(np.float32) for k, v in inputs(case).items()}
    sess = session(e.path)
    got = sess.run(None, xs)[0]
    assert rel(got, engine_output(case, "float32")) < 1e-5
    if case in ZOO or case in ZOO10:                 # the batch dimension is dynamic
        one = sess.run(None, {k: v[:1] for k, v in xs.items()})[0]
        assert rel(one, engine_output(case, "float32")[:1]) < 1e-5


@pytest.mark.parametrize("case", sorted(ZOO) + sorted(ZOO10) + ["resnet18.cnn", "textcnn.cnn", "crosses.cnn"])
def test_the_onnx_graph_names_nodes_as_the_layers(exported, case):
    e = exported(case)
    graph = e.model.graph
    names = {n.name for n in graph.node}
    outputs = {o for n in graph.node for o in n.output}
    layers = [n for n in e.net.layers() if e.net[n]["op"] != "input"]
    assert set(layers) <= names and set(layers) <= outputs      # Netron shows the .cnn names
    assert [o.name for o in graph.output] == [e.net.output_name]
    assert [i.name for i in graph.input] == list(e.net.input_shapes)
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param == "N"
        assert [d.dim_value for d in dims[1:]] == list(e.net.input_shapes[inp.name])
    assert [(o.domain, o.version) for o in e.model.opset_import] == [("", 21)]


def test_frozen_layers_are_recorded_and_read_back(exported):
    e = exported("conv2d")
    props = {p.key: p.value for p in e.model.metadata_props}
    frozen = [n for n in e.net.layers() if e.net[n].get("n_params") and not e.net[n]["trainable"]]
    assert frozen and props["cnnspec.frozen"].split(",") == frozen
    assert e.imported.summary()["totals"]["frozen_params"] == e.net.summary()["totals"]["frozen_params"] > 0


def layer_rows(net):
    return [(row["op"], tuple(row["output_shape"]), row["params"], row["trainable_params"], row["macs"])
            for row in net.summary()["layers"]]


@pytest.mark.parametrize("case", CASES)
def test_round_trip_keeps_the_summary_and_the_outputs(exported, case):
    e = exported(case)
    assert e.imported.summary()["totals"] == e.net.summary()["totals"]
    assert layer_rows(e.imported) == layer_rows(e.net)
    assert e.imported.input_shapes == e.net.input_shapes
    again = e.imported.compile(dtype="float32", seed=123)          # other initial weights ...
    again.load_arrays(e.weights, source="the imported weights")      # ... replaced by the imported
    got = again.forward(as_engine_input(inputs(case), "float32"))
    assert rel(got, engine_output(case, "float32")) < 1e-5


@pytest.mark.parametrize("case", [c for c in SPEC_CASES if case_text(c, True) != case_text(c, False)])
def test_specs_as_written_keep_their_summary_totals(shapes_only, tmp_path, case):
    """The specs the output comparisons run smaller or narrower, at their own size: the round trip
    keeps parameters (trainable and frozen), MACs, activations and memory, layer by layer."""
    e = Exported(shapes_only(network(case, small=False)), tmp_path / "model.onnx")
    original = cnnspec.load(SPECS / case.partition(":")[0])          # the spec as written ...
    totals = dict(original.summary()["totals"])
    totals["memory_bytes"] = dict(totals["memory_bytes"])
    del totals["memory_bytes"]["training"]                           # ... but for its optimizer's state
    again = dict(e.imported.summary()["totals"])
    again["memory_bytes"] = {k: v for k, v in again["memory_bytes"].items() if k != "training"}
    assert again == totals
    assert layer_rows(e.imported) == layer_rows(original)


def test_round_trip_writes_repeated_structures_as_blocks(exported):
    """ResNet-18 comes back as dsl.md writes it: the blocks `basic(c)` and `down(c)` (named after
    the instances' names in the ONNX graph), `basic(64) * 2`, the same layer names."""
    e = exported("resnet18.cnn")
    assert "block basic(c) {" in e.text and "block down(c) {" in e.text
    assert "basic(64) * 2 -> down(128) -> basic(128) -> down(256)" in e.text.replace("\n        ", " ")
    assert e.imported.layers() == e.net.layers()
    googlenet = exported("googlenet.cnn")
    assert "block inception(c1, c2, c3, c4, c5, c6) {" in googlenet.text
    assert "inception(64, 96, 128, 16, 32, 32)" in googlenet.text
    resnet50 = exported("resnet50.cnn")                             # 4*c: a multiple of a parameter
    assert "conv(4*c, 1x1, stride=stride, bias=false)" in resnet50.text
    assert "bottleneck_id(256) * 5" in resnet50.text


def test_vgg16_comes_back_in_its_groups(exported):
    text = exported("vgg16.cnn").text.replace("\n        ", " ")
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


@pytest.mark.parametrize("op", ["maxpool", "avgpool", "sumpool"])
def test_ceil_mode_pooling_with_a_dropped_window_on_one_axis_only(tmp_path, op):
    """Caffe's rule drops the last window of the rows (5 + 2 padding, kernel 3, stride 3: 2 rows,
    not 3) while ceil mode adds a window to the columns (5, kernel 2: 3 columns): the floor rule
    the export falls back to must keep the columns' extra window too. PyTorch is the reference."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = cnnspec.loads(f"network P {{\n    input image: 2x5x5\n    {op}(3x2, pad=1x0, ceil=true)\n}}\n")
    net.to_onnx(tmp_path / "p.onnx")
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    t = torch.from_numpy(x)
    want = (F.max_pool2d(t, (3, 2), padding=(1, 0), ceil_mode=True) if op == "maxpool" else
            F.avg_pool2d(t, (3, 2), padding=(1, 0), ceil_mode=True,
                         divisor_override=1 if op == "sumpool" else None)).numpy()
    assert want.shape == (2, 2, 2, 3) == (2, *net.output_shape)
    assert rel(session(tmp_path / "p.onnx").run(None, {"image": x})[0], want) < 1e-6


@pytest.mark.parametrize("text, stride, pad, dilation, extra, bias", [
    ("conv_transpose(2, 3, dilation=2, output_pad=1)", 1, 0, 2, 1, True),
    ("conv_transpose(2, 3, pad=1, dilation=2, output_pad=1)", 1, 1, 2, 1, True),
    ("conv_transpose(2, 3, stride=2, pad=1, dilation=3, output_pad=2, bias=false)", 2, 1, 3, 2, False),
])
def test_conv_transpose_whose_output_pad_is_not_below_the_stride(tmp_path, text, stride, pad, dilation, extra, bias):
    """PyTorch takes an output_padding smaller than the stride or the dilation, ONNX Runtime
    smaller than the stride only: the exported model must still run and compute PyTorch's
    ConvTranspose1d."""
    torch = pytest.importorskip("torch")
    net = cnnspec.loads(f"network T {{\n    input image: 3x6\n    {text}\n}}\n")
    model = net.compile(dtype="float32", seed=0)
    net.to_onnx(tmp_path / "t.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 6)).astype(np.float32)
    params = {k: torch.from_numpy(np.array(v)) for k, v in model.params["conv_transpose1"].items()}
    want = torch.nn.functional.conv_transpose1d(torch.from_numpy(x), params["weight"], params.get("bias"),
                                                stride=stride, padding=pad, output_padding=extra,
                                                dilation=dilation).numpy()
    assert ("bias" in params) == bias and want.shape == (2, *net.output_shape)
    assert rel(session(tmp_path / "t.onnx").run(None, {"image": x})[0], want) < 1e-5
