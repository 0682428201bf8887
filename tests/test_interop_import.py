"""`cnnspec import` of ONNX files made elsewhere: torch.onnx.export's output (the acceptance test:
ResNet-18), the patterns exporters emit, unsupported operators and malformed files.

The reference for every imported network is ONNX Runtime running the ONNX file itself: the engine,
running the imported .cnn with the imported weights, must compute the same.
"""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.layers import LAYERS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def engine_output(net, weights, x):
    model = net.compile(dtype="float32", seed=1)
    for key, value in weights.items():
        group, param = key.rsplit(".", 1)
        (model.state if param.startswith("running_") else model.params)[group][param] = value
    return model.forward(x)


def check_against_runtime(path, batch=2, seed=0):
    """Import ``path``; the engine's output with the imported weights equals ONNX Runtime's."""
    net, weights = cnnspec.from_onnx(path)
    x = np.random.default_rng(seed).standard_normal((batch, *net.input_shape)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert rel(engine_output(net, weights, x), expected) < 1e-5
    return net, weights


# ---- ResNet-18 from PyTorch: the acceptance test ----------------------------------------------------

def resnet18_module(blocks=2):
    """torchvision.models.resnet18, written out (torchvision's resnet.py: BasicBlock, _make_layer);
    ``blocks`` per stage (2 in ResNet-18)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(64, blocks)
            self.layer2 = self._make_layer(128, blocks, stride=2)
            self.layer3 = self._make_layer(256, blocks, stride=2)
            self.layer4 = self._make_layer(512, blocks, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes))
            layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes
            layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(0)
    model = ResNet()
    with torch.no_grad():           # batch norms as after training: statistics that matter
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def torch_export(model, path, shape, **kwargs):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), input_names=["x"], output_names=["y"],
                          **kwargs)


@pytest.fixture(scope="module")
def resnet18_onnx(tmp_path_factory):
    """ResNet-18 through torch.onnx.export's TorchScript exporter, batch norm kept (not folded into
    the convolutions), batch dynamic, at 3x224x224."""
    path = tmp_path_factory.mktemp("resnet") / "resnet18.onnx"
    model = resnet18_module()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512      # torchvision's count
    torch_export(model, path, (3, 224, 224), dynamo=False, do_constant_folding=False,
                 dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def test_resnet18_from_pytorch_imports_with_torchvisions_figures(resnet18_onnx, tmp_path):
    out = tmp_path / "resnet18.cnn"
    assert main(["import", str(resnet18_onnx), "-o", str(out)]) == 0
    net = cnnspec.load(out)
    totals = net.summary()["totals"]
    assert totals["params"] == 11_689_512                 # torchvision's published count
    assert round(totals["macs"] / 1e9, 3) == 1.814         # torchvision's "GFLOPS" (fvcore's MACs)
    text = out.read_text()
    assert text.count("block ") == 2 and "* 2" not in text.split("network")[0]   # two block kinds
    weights = dict(np.load(tmp_path / "resnet18.npz"))
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    sess = ort.InferenceSession(str(resnet18_onnx), providers=["CPUExecutionProvider"])
    assert rel(engine_output(net, weights, x), sess.run(None, {"x": x})[0]) < 1e-5


def test_resnet18_with_batchnorm_folded_imports_as_convolutions_with_bias(tmp_path):
    """torch.onnx.export's default folds each batch norm into the convolution before it: the
    import is then a ResNet-18 whose convolutions have biases (11,689,512 - 9,600 parameters: each
    batch norm's 2C become the convolution's C), computing the same."""
    path = tmp_path / "folded.onnx"
    torch_export(resnet18_module(), path, (3, 64, 64), dynamo=False, dynamic_axes={"x": {0: "batch"}})
    net, _ = check_against_runtime(path)
    bn_channels = 64 + 2 * 2 * 64 + (2 * 2 + 1) * (128 + 256 + 512)
    assert net.summary()["totals"]["params"] == 11_689_512 - bn_channels
    assert not any(net[n]["op"] == "batchnorm" for n in net.layers())


def test_the_dynamo_exporter_is_read_too(tmp_path):
    """torch.onnx.export(dynamo=True), PyTorch's default exporter (needs onnxscript); a ResNet
    of one block per stage (the exporter's patterns are the same, its tracing time half)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    path = tmp_path / "dynamo.onnx"
    torch_export(resnet18_module(blocks=1), path, (3, 32, 32), dynamo=True,
                 dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    net, _ = check_against_runtime(path)
    assert net.output_shape == (1000,)


# ---- hand-made graphs: the patterns exporters emit -----------------------------------------------------

def make_model(nodes, inits, in_shape, out_rank=None, opset=21, inputs=None, producer="test"):
    rng = np.random.default_rng(0)
    tensors = [numpy_helper.from_array(np.asarray(v if not callable(v) else v(rng)), k) for k, v in inits.items()]
    graph_inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])]
    out = nodes[-1].output[0]
    dims = ["N"] + [None] * ((out_rank or len(in_shape) + 1) - 1)
    graph = helper.make_graph(nodes, "g", graph_inputs,
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, dims)], initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer)
    model.ir_version = 8 if opset < 21 else 10
    return model


def save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def w(*shape):
    return lambda rng: rng.standard_normal(shape).astype(np.float32)


def test_matmul_and_add_become_one_dense_layer(tmp_path):
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Softmax", ["g"], ["y"], axis=-1)]
    path = save(make_model(nodes, {"W": w(12, 5), "b": w(5), "W2": w(3, 5), "b2": w(1, 3)}, (3, 2, 2), 2), tmp_path)
    net, weights = check_against_runtime(path)
    assert [net[n]["op"] for n in net.layers()] == ["input", "flatten", "dense", "relu", "dense", "softmax"]
    assert net["dense1"]["config"]["bias"] and "dense1.bias" in weights


def test_conv_without_bias_plus_a_constant_is_a_conv_with_bias(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["B", "c"], ["y"])]
    path = save(make_model(nodes, {"W": w(4, 2, 3, 3), "B": w(1, 4, 1, 1)}, (2, 5, 5)), tmp_path)
    net, weights = check_against_runtime(path)
    assert net["conv1"]["config"]["bias"] and weights["conv1.bias"].shape == (4,)


def test_pad_before_convolution_and_pooling_folds_into_them(tmp_path):
    nodes = [helper.make_node("Pad", ["x", "p1"], ["xp"]),                     # zeros: conv padding
             helper.make_node("Conv", ["xp", "W"], ["c"], pads=[0, 1, 0, 0]),
             helper.make_node("Pad", ["c", "p2", "ninf"], ["cp"]),             # -inf: max-pool padding
             helper.make_node("MaxPool", ["cp"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Pad", ["m", "p3"], ["mp"]),                     # zeros: counted by avg
             helper.make_node("AveragePool", ["mp"], ["y"], kernel_shape=[2, 2], strides=[1, 1],
                              count_include_pad=0)]
    inits = {"p1": np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64), "W": w(3, 2, 3, 3),
             "p2": np.array([0, 0, 0, 1, 0, 0, 1, 0], np.int64), "ninf": np.array(-np.inf, np.float32),
             "p3": np.array([0, 0, 1, 1, 0, 0, 0, 0], np.int64)}
    path = save(make_model(nodes, inits, (2, 7, 6)), tmp_path)
    net, _ = check_against_runtime(path)
    assert net["conv1"]["config"]["pad"] == (1, 0, 1, 2)
    assert net["maxpool1"]["config"]["pad"] == (0, 1, 1, 0)
    assert net["avgpool1"]["config"]["pad"] == (1, 0, 1, 0)


def test_auto_pad_same_and_flatten_through_shape_arithmetic(tmp_path):
    """x.view(x.size(0), -1) as the TorchScript exporter writes it: Shape, Gather, Unsqueeze, Concat,
    Reshape; auto_pad=SAME_UPPER; ReduceMean over the spatial axes as global pooling; opset 13."""
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("LeakyRelu", ["c"], ["l"], alpha=0.1),
             helper.make_node("ReduceMean", ["l"], ["g"], axes=[2, 3], keepdims=1),     # opset 13: an attribute
             helper.make_node("Shape", ["g"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["g", "shape"], ["r"]),
             helper.make_node("Dropout", ["r", "ratio"], ["d"]),
             helper.make_node("Gemm", ["d", "W2"], ["y"], transB=1)]
    inits = {"W": w(4, 3, 4, 4), "B": w(4), "zero": np.array(0, np.int64),
             "axes0": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
             "ratio": np.array(0.25, np.float32), "W2": w(2, 4)}
    path = save(make_model(nodes, inits, (3, 9, 7), 2, opset=13), tmp_path)
    net, _ = check_against_runtime(path)
    ops = [net[n]["op"] for n in net.layers()]
    assert ops == ["input", "conv", "leaky_relu", "globalavgpool", "flatten", "dropout", "dense"]
    assert net["conv1"]["config"]["pad"] == (1, 2, 1, 2) and net["dropout1"]["config"]["p"] == 0.25


def test_sum_squeeze_sigmoid_tanh_and_reduce_max(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["a"]),
             helper.make_node("Tanh", ["c"], ["b"]),
             helper.make_node("Sum", ["a", "b", "c"], ["s"]),
             helper.make_node("ReduceMax", ["s", "axes"], ["m"], keepdims=0),
             helper.make_node("Identity", ["m"], ["i"]),
             helper.make_node("BatchNormalization", ["i", "g", "bb", "mu", "var"], ["y"], epsilon=1e-3)]
    inits = {"W": w(3, 1, 3), "axes": np.array([2], np.int64), "g": w(3), "bb": w(3), "mu": w(3),
             "var": lambda rng: rng.uniform(0.5, 1.5, 3).astype(np.float32)}
    path = save(make_model(nodes, inits, (1, 10), 2, opset=18), tmp_path)
    net, _ = check_against_runtime(path)
    assert [net[n]["op"] for n in net.layers()][1:] == ["conv", "sigmoid", "tanh", "add", "globalmaxpool",
                                                        "flatten", "identity", "batchnorm"]
    assert net["batchnorm1"]["config"]["eps"] == 1e-3


def gate_model(unsqueezes, gate_rank=4):
    """conv -> x * sigmoid(flat gate) viewed through ``unsqueezes`` (lists of axes, one Unsqueeze
    each): the squeeze-and-excitation gate as exporters write g[:, :, None, None]."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c", "axes23"], ["m"], keepdims=0),
             helper.make_node("Sigmoid", ["m"], ["g0"])]
    inits = {"W": w(4, 3, 3, 3), "axes23": np.array([2, 3], np.int64)}
    for k, axes in enumerate(unsqueezes):
        inits[f"a{k}"] = np.array(axes, np.int64)
        nodes.append(helper.make_node("Unsqueeze", [f"g{k}", f"a{k}"], [f"g{k + 1}"], name=f"unsqueeze{k}"))
    nodes.append(helper.make_node("Mul", ["c", f"g{len(unsqueezes)}"], ["y"], name="gate"))
    return make_model(nodes, inits, (3, 4, 4), opset=18)


@pytest.mark.parametrize("unsqueezes", [[[2, 3]], [[2], [3]], [[-1], [-1]]])
def test_a_gate_viewed_as_cx1x1_by_unsqueezes_gates_channels(tmp_path, unsqueezes):
    """The TorchScript exporter writes g[:, :, None, None] as two Unsqueezes, the dynamo exporter
    as one."""
    net, _ = check_against_runtime(save(gate_model(unsqueezes), tmp_path), batch=3)
    assert "mul" in [net[n]["op"] for n in net.layers()]


@pytest.mark.parametrize("unsqueezes", [[[1, 3]], [[1], [3]], [[1, 2]], [[2]], []])
def test_a_gate_broadcast_along_other_axes_than_channels_is_not_a_channel_gate(tmp_path, unsqueezes):
    """g[:, None, :, None] scales the rows of a 4x4x4 map, g[:, None, None, :] its columns, and a
    flat (batch, C) operand broadcasts along the last axes (ONNX's numpy rule): read as a channel
    gate, each would compute something else than ONNX Runtime. Either the engine computes what ONNX
    Runtime computes, or the import says it cannot."""
    path = save(gate_model(unsqueezes), tmp_path)
    try:
        check_against_runtime(path, batch=1)
    except cnnspec.CnnSpecError as err:
        assert "node `gate` (Mul)" in str(err)


def expanded_gate_model(shape=None, then="Mul"):
    """conv -> x * g.view(N, C, 1, 1).expand_as(x), the squeeze-and-excitation gate as many
    implementations write it: the Expand's shape from Shape(x) (a dynamic batch), or ``shape``."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c", "axes23"], ["m"], keepdims=0),
             helper.make_node("Sigmoid", ["m"], ["g0"]),
             helper.make_node("Unsqueeze", ["g0", "axes23"], ["g1"])]
    inits = {"W": w(4, 3, 3, 3), "axes23": np.array([2, 3], np.int64)}
    if shape is None:
        nodes.append(helper.make_node("Shape", ["c"], ["s"]))
    else:
        inits["s"] = np.array(shape, np.int64)
    nodes += [helper.make_node("Expand", ["g1", "s"], ["g2"], name="expand"),
              helper.make_node(then, ["c", "g2"], ["y"], name="gate")]
    return make_model(nodes, inits, (3, 4, 4), opset=18)


@pytest.mark.parametrize("shape", [None, [3, 4, 4, 4], [1, 4, 4, 4], [3, 4, 1, 4]])
def test_a_gate_expanded_to_what_it_multiplies_gates_channels(tmp_path, shape):
    """x * g.expand_as(x) is x * g (Mul broadcasts as Expand does): read as a channel gate, computing
    what ONNX Runtime computes; an Expand to part of the shape too."""
    net, _ = check_against_runtime(save(expanded_gate_model(shape), tmp_path), batch=3)
    assert [net[n]["op"] for n in net.layers()][-2:] == ["sigmoid", "mul"]


@pytest.mark.parametrize("shape, then, message", [
    (None, "Add", "node `expand` starts what looks like a gate expanded"),
    ([3, 4, 5, 4], "Mul", "Mul of a gate expanded to (batch, 4x5x4) and a (batch, 4x4x4) tensor"),
    ([3, 4, 4], "Mul", "Expand of a (batch, 4x1x1) tensor to [3, 4, 4]")])
def test_an_expanded_gate_cnnspec_cannot_read_is_a_clear_error(tmp_path, capsys, shape, then, message):
    model = expanded_gate_model(shape, then)
    if shape == [3, 4, 5, 4]:          # no model ONNX checks: its Mul cannot broadcast
        model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 5
    assert message in cli_error(capsys, save(model, tmp_path))


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_of_constants_folds_as_onnx_defines_it(fmod):
    """Mod, which PyTorch's TorchScript exporter writes for an nn.Unflatten's axis, folded at import
    time as ONNX's reference evaluator computes it: the sign of the divisor, or with fmod=1 of the
    dividend."""
    from onnx.reference import ReferenceEvaluator

    from cnnspec.interop.onnx_import import FOLD

    a, b = np.array([-7, 7, -8, 5, 0], np.int64), np.array([3, -3, 4, -2, 6], np.int64)
    node = helper.make_node("Mod", ["a", "b"], ["y"], fmod=fmod)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.INT64, [5]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [5])])
    expected = ReferenceEvaluator(helper.make_model(graph)).run(None, {"a": a, "b": b})[0]

    class Imp:
        def attr(self, node, name, default=None):
            return next((helper.get_attribute_value(x) for x in node.attribute if x.name == name), default)
    assert np.array_equal(FOLD["Mod"](Imp(), node, a, b), expected)


def test_a_vae_exported_to_pytorch_then_to_onnx_by_torchscript_imports_back(tmp_path):
    """cnnspec -> PyTorch module -> torch.onnx.export (TorchScript) -> cnnspec: its nn.Unflatten
    becomes Shape, Mod, Slice, Concat, Reshape, folded at import; the engine computes what ONNX
    Runtime computes."""
    torch = pytest.importorskip("torch")
    source = cnnspec.loads("""
network Vae {
    input image: 1x8x8
    h = conv(4, 3x3, stride=2, pad=1) -> relu -> flatten -> dense(16) -> relu
    mu = h -> dense(6)
    logvar = h -> dense(6)
    z = sample(mu, logvar)
    dense(36) -> relu -> reshape(4x3x3) -> conv_transpose(1, 4x4, stride=2, pad=1) -> sigmoid
}
""")
    path = tmp_path / "vae.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(source.to_torch().eval(), torch.zeros(1, 1, 8, 8), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], dynamic_axes={"image": {0: "N"}})
    assert any(n.op_type == "Mod" for n in onnx.load(str(path)).graph.node)
    net, _ = check_against_runtime(path, batch=3)
    # in evaluation the sample is its mean: the exporter drops logvar's dense(6) on 16 features
    assert net.summary()["totals"]["params"] == source.summary()["totals"]["params"] - (16 * 6 + 6)


# ---- what cnnspec does not read: clear errors, never a traceback --------------------------------------

def cli_error(capsys, path) -> str:
    assert main(["import", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_an_unsupported_operator_names_the_node_and_the_supported_ones(tmp_path, capsys):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]),
             helper.make_node("LRN", ["c"], ["y"], name="norm1", size=3)]     # AlexNet's 2012 normalisation
    path = save(make_model(nodes, {"W": w(2, 1, 3, 3)}, (1, 5, 5)), tmp_path)
    err = cli_error(capsys, path)
    assert "node `norm1`: operator LRN is not supported" in err
    assert "hint: cnnspec reads " in err and "BatchNormalization" in err and "Conv" in err


@pytest.mark.parametrize("case, message", [
    ("slice", "operator Slice on a tensor computed from the input" if "channels" not in LAYERS
     else "a Slice of other axes than channels"),
    ("pad_relu", "cnnspec reads Pad only right before a Conv, MaxPool or AveragePool"),
    ("add_const", "Add of a constant other than the bias"),
    ("two_outputs", "the model has 2 outputs; cnnspec reads models with one"),
    ("dynamic", "has a size that is not fixed (H)"),
    ("channel_softmax", "Softmax over axis 2"),
    ("runtime_weights", "the weights computed at run time"),
    ("future_opset", "ONNX opset 99 is newer than the installed onnx package knows"),
])
def test_graphs_cnnspec_cannot_express_are_clear_errors(tmp_path, capsys, case, message):
    W = {"W": w(2, 1, 3, 3)}
    conv = helper.make_node("Conv", ["x", "W"], ["c"], name="conv")
    inputs = None
    if case == "slice":
        nodes, inits = [conv, helper.make_node("Slice", ["c", "s", "e", "a"], ["y"])], {
            **W, "s": np.array([0]), "e": np.array([1]), "a": np.array([2])}
    elif case == "pad_relu":
        nodes, inits = [conv, helper.make_node("Pad", ["c", "p"], ["q"], name="pad"),
                        helper.make_node("Relu", ["q"], ["y"])], {**W, "p": np.array([0, 0, 1, 1, 0, 0, 1, 1])}
    elif case == "add_const":
        nodes, inits = [conv, helper.make_node("Relu", ["c"], ["r"]),
                        helper.make_node("Add", ["r", "k"], ["y"])], {**W, "k": w(1)}
    elif case == "two_outputs":
        nodes, inits = [conv, helper.make_node("Relu", ["c"], ["y"])], W
    elif case == "dynamic":
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", 5])]
        nodes, inits = [conv], W
    elif case == "channel_softmax":
        nodes, inits = [conv, helper.make_node("Softmax", ["c"], ["y"], axis=2)], W
    elif case == "future_opset":
        nodes, inits = [conv, helper.make_node("Relu", ["c"], ["y"])], W
    else:
        nodes, inits = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["x", "r"], ["y"])], {}
    model = make_model(nodes, inits, (1, 5, 5), inputs=inputs, opset=99 if case == "future_opset" else 21)
    if case == "two_outputs":
        model.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 2, 3, 3]))
    path = save(model, tmp_path)
    err = cli_error(capsys, path)
    assert message in err and err.startswith(f"{path}: error: ")


def test_malformed_files_are_clear_errors(tmp_path, capsys):
    good = make_model([helper.make_node("Conv", ["x", "W"], ["y"])], {"W": w(2, 1, 3, 3)}, (1, 5, 5))
    data = good.SerializeToString()
    cases = {
        "text.onnx": (b"network N {\n    input x: 3\n}\n", "not an ONNX model"),
        "truncated.onnx": (data[: len(data) // 2], "not an ONNX model"),
        "random.onnx": (np.random.default_rng(0).bytes(5000), "not an ONNX model"),
        "empty.onnx": (b"", "the file is empty"),
        "png.onnx": (b"\x89PNG\r\n\x1a\n" + bytes(100), "not an ONNX model"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        err = cli_error(capsys, tmp_path / name)
        assert message in err and name in err, (name, err)
    assert "no such ONNX file" in cli_error(capsys, tmp_path / "missing.onnx")
    (tmp_path / "folder.onnx").mkdir()
    assert "this ONNX file is a folder" in cli_error(capsys, tmp_path / "folder.onnx")
    invalid = helper.make_model(helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"])], "g", [], []))
    (tmp_path / "invalid.onnx").write_bytes(invalid.SerializeToString())
    assert "not a valid ONNX model" in cli_error(capsys, tmp_path / "invalid.onnx")


def test_a_file_over_protobufs_limit_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    from cnnspec.interop import onnx_import

    path = save(make_model([helper.make_node("Conv", ["x", "W"], ["y"])], {"W": w(2, 1, 3, 3)}, (1, 5, 5)),
                tmp_path)
    monkeypatch.setattr(onnx_import, "MAX_BYTES", 100)
    assert "the ONNX file is too large" in cli_error(capsys, path)


def test_import_without_onnx_says_how_to_install_it(tmp_path):
    """In a process where `import onnx` fails: a one-line error naming the pip command."""
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from cnnspec.cli import main\n"
            f"raise SystemExit(main(['import', {str(tmp_path / 'm.onnx')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "needs the `onnx` package" in result.stderr and "pip install 'cnnspec[onnx]'" in result.stderr


@pytest.mark.parametrize("metadata", ['{"op": "conv", ', '{"op": "adaptiveavgpool"}', '[1, 2]',
                                      '{"op": "adaptiveavgpool", "config": {}, "inputs": ["conv1"]}'])
def test_damaged_layer_metadata_of_a_cnnspec_file_is_a_clear_error(tmp_path, capsys, metadata):
    net = cnnspec.loads("network N {\n input image: 1x8x8\n conv(2, 3x3) -> adaptiveavgpool(2) -> flatten -> dense(3)\n}\n")
    model = net.to_onnx(tmp_path / "n.onnx")
    node = next(n for n in model.graph.node if n.name == "adaptiveavgpool1")
    next(p for p in node.metadata_props if p.key == "cnnspec.layer").value = metadata
    path = tmp_path / "damaged.onnx"
    onnx.save(model, path)
    err = cli_error(capsys, path)
    assert err.startswith(f"{path}: error: ") and "adaptiveavgpool1" in err and "metadata" in err


def test_weights_that_are_not_finite_are_refused_by_name(tmp_path, capsys):
    # as a weights file holding them is (cnnspec.interop.weights): the model is damaged
    bad = w(4, 2, 3, 3)(np.random.default_rng(0))
    bad[1, 0, 2, 2] = np.nan
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"])]
    path = save(make_model(nodes, {"W": bad}, (2, 8, 8)), tmp_path)
    err = cli_error(capsys, path)
    assert "weights hold NaN or infinite values: conv1.weight" in err and "m.onnx" in err


def test_the_import_says_how_many_layers_it_wrote(tmp_path, capsys):
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"])]
    path = save(make_model(nodes, {"W": w(4, 2, 3, 3)}, (2, 8, 8)), tmp_path)
    assert main(["import", str(path), "-o", str(tmp_path / "m.cnn")]) == 0
    assert "(g: 1 layer; 72 parameters" in capsys.readouterr().out
    assert "# 1 layer.\n" in (tmp_path / "m.cnn").read_text()


@pytest.mark.parametrize("node, inits", [
    (lambda: helper.make_node("ConstantOfShape", ["shape"], ["big"], name="huge"),
     {"shape": np.array([100_000, 100_000], np.int64)}),
    (lambda: helper.make_node("Range", ["s", "e", "d"], ["big"], name="huge"),
     {"s": np.array(0, np.int64), "e": np.array(10 ** 12, np.int64), "d": np.array(1, np.int64)}),
    (lambda: helper.make_node("Expand", ["one", "shape"], ["big"], name="huge"),
     {"one": np.ones(1, np.float32), "shape": np.array([4, 10 ** 6, 10 ** 6], np.int64)})])
def test_a_node_that_folds_to_a_huge_constant_is_named_before_anything_is_allocated(tmp_path, capsys,
                                                                                   node, inits):
    nodes = [node(), helper.make_node("Conv", ["x", "W"], ["y"])]
    path = save(make_model(nodes, {**inits, "W": w(4, 2, 3, 3)}, (2, 8, 8)), tmp_path)
    err = cli_error(capsys, path)
    assert "the node `huge`" in err and "makes a constant of" in err, err
