"""Export and import of dsl.md §10's layers (transposed convolution, upsampling, reshape, mul, the
modern activations, adaptive pooling, channel slices and shuffles, droppath, sample, several
inputs and networks).

The engine does not run these layers yet, so the reference is `cnnspec.kernels.reference`, the
plain NumPy definitions the kernels are tested against, run layer by layer over the graph in
evaluation mode (`numpy_forward` below): the exported PyTorch module (float64, 1e-10) and ONNX
Runtime on the exported ONNX file (float32, 1e-5) must compute what it computes, and so must the
network `cnnspec import` reads back, with the weights it reads back.
"""
import re
import warnings

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.layers import LAYERS
from conftest import SPECS
from interop_cases import ZOO10

if "conv_transpose" not in LAYERS:
    pytest.skip("the layers of dsl.md §10 are not in the catalogue yet", allow_module_level=True)

from cnnspec.kernels import reference as R  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def as2d(x):
    """(N, C, L) -> (N, C, 1, L): 1-D through the 2-D references."""
    return x[:, :, None, :] if x.ndim == 3 else x


def numpy_forward(net, arrays, inputs: dict) -> np.ndarray:
    """The network in evaluation mode by the NumPy references, float64."""
    graph = net.graph
    p = lambda name, key: arrays.get(f"{name}.{key}")          # noqa: E731
    v = {}
    for name in graph.nodes:
        node = graph.nodes[name]
        op, cfg = node["op"], node.get("config", {})
        if op == "input":
            v[name] = np.asarray(inputs[name], np.float64)
            continue
        xs = [v[i] for i in node["inputs"]]
        x = xs[0]
        one = x.ndim == 3
        if op == "conv":
            f = R.conv1d_forward if one else R.conv2d_forward
            args = (cfg["stride"][0], cfg["pad"], cfg["dilation"][0]) if one else (cfg["stride"], cfg["pad"],
                                                                                   cfg["dilation"])
            y = f(x, p(name, "weight"), p(name, "bias"), *args, cfg["groups"])
        elif op == "conv_transpose":
            if one:
                y = R.conv_transpose1d_forward(x, p(name, "weight"), p(name, "bias"), cfg["stride"][0], cfg["pad"],
                                               cfg["output_pad"][0], cfg["dilation"][0], cfg["groups"])
            else:
                y = R.conv_transpose2d_forward(x, p(name, "weight"), p(name, "bias"), cfg["stride"], cfg["pad"],
                                               cfg["output_pad"], cfg["dilation"], cfg["groups"])
        elif op == "upsample":
            scale = (1, *cfg["scale"]) if one else cfg["scale"]
            y = R.upsample2d_forward(as2d(x), scale, cfg["mode"])
        elif op in ("adaptiveavgpool", "adaptivemaxpool"):
            f = R.adaptive_avgpool2d_forward if op == "adaptiveavgpool" else R.adaptive_maxpool2d_forward
            y = f(as2d(x), (1, *cfg["size"]) if one else cfg["size"])
        elif op in ("globalavgpool", "globalmaxpool"):
            f = R.global_avgpool_forward if op == "globalavgpool" else R.global_maxpool_forward
            y = f(x).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
        elif op == "dense":
            y = R.dense_forward(x, p(name, "weight"), p(name, "bias"))
        elif op == "batchnorm":
            y = R.batchnorm_forward_eval(x, p(name, "weight"), p(name, "bias"), cfg["eps"],
                                         p(name, "running_mean"), p(name, "running_var"))
        elif op in ("flatten", "reshape"):
            y = x.reshape(len(x), *(cfg["shape"] if op == "reshape" else (-1,)))
        elif op in ("identity", "dropout", "droppath"):
            y = x
        elif op == "sample":
            y = xs[0]                                      # mu, at evaluation
        elif op == "add":
            y = sum(xs[1:], xs[0])
        elif op == "concat":
            y = np.concatenate(xs, axis=1)
        elif op == "mul":
            full = max(xs, key=lambda a: a.ndim)
            y = full
            for other, form in zip(xs, cfg["broadcast"]):
                if other is full:
                    continue
                y = R.gate_forward(y, other) if form == "gate" else y * other
        elif op == "channels":
            y = x[:, cfg["start"]:cfg["stop"]]
        elif op == "shuffle":
            y = R.channel_shuffle(x, cfg["groups"])
        elif op in ("leaky_relu", "elu"):
            y = getattr(R, f"{op}_forward")(x, cfg["slope" if op == "leaky_relu" else "alpha"])
        else:
            y = getattr(R, f"{op}_forward")(x)
        v[name] = np.asarray(y).reshape(len(x), *node["output_shape"])
    return v[net.output_name]


def inputs_of(net, batch=2, seed=0, dtype=np.float64) -> dict:
    rng = np.random.default_rng(seed)
    names = net.graph.graph.get("inputs") or [net.input_name]
    return {n: rng.standard_normal((batch, *net[n]["output_shape"])).astype(dtype) for n in names}


def onnx_run(path, inputs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.astype(np.float32) for k, v in inputs.items()})[0]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modern")
    out = {}
    for name, text in ZOO10.items():
        net = cnnspec.loads(text)
        path = folder / f"{name}.onnx"
        net.to_onnx(path)
        out[name] = (net, path)
    return out


@pytest.mark.parametrize("name", sorted(ZOO10))
def test_exports_compute_what_the_numpy_reference_computes(cases, name):
    torch = pytest.importorskip("torch")
    net, path = cases[name]
    arrays = net.compile(dtype="float64", seed=0).arrays()
    inputs = inputs_of(net)
    expected = numpy_forward(net, arrays, inputs)
    module = net.to_torch(dtype="float64")
    with torch.no_grad():
        got = module(*(torch.from_numpy(x) for x in inputs.values())).numpy()
    assert rel(got, expected) < 1e-10
    assert rel(onnx_run(path, inputs), expected) < 1e-5


@pytest.mark.parametrize("name", sorted(ZOO10))
def test_round_trip_keeps_summary_and_outputs(cases, name):
    from cnnspec.interop.onnx_import import import_onnx

    net, path = cases[name]
    again, weights, text = import_onnx(path)
    assert again.summary()["totals"] == net.summary()["totals"]
    rows = lambda n: [(r["op"], tuple(r["output_shape"]), r["params"], r["macs"])      # noqa: E731
                      for r in n.summary()["layers"]]
    assert rows(again) == rows(net)
    inputs = inputs_of(net)
    expected = numpy_forward(net, net.compile(dtype="float32", seed=0).arrays(), inputs)
    assert rel(numpy_forward(again, weights, inputs), expected) < 1e-6


def test_the_generated_module_says_what_torch_cannot():
    source = cnnspec.loads(ZOO10["transposed"]).to_torch().source
    assert "nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)" in source
    assert "CropConvTranspose2d(4, 6, 4, stride=2, bias=False, pad=(2, 0, 0, 2), output_pad=(0, 0))" in source
    assert "self.relu6_1 = nn.ReLU6()" in source and "nn.GELU()" in source and "nn.ELU(0.5)" in source
    gates = cnnspec.loads(ZOO10["gates"]).to_torch().source
    assert "se = relu1 * hardsigmoid1" in gates                       # mul, in forward
    assert "g2 = se * sigmoid1[:, :, None, None]" in gates            # a flat gate, viewed as Cx1x1
    assert "Channels(0, 4)" in gates and "nn.ChannelShuffle(2)" in gates and "DropPath(0.2)" in gates
    vae = cnnspec.loads(ZOO10["vae"]).to_torch().source
    assert "self.z = Sample(0.5)" in vae and "x = self.z(dense2, x)" in vae     # mu, logvar
    assert "nn.Unflatten(1, (4, 3, 3))" in vae
    cond = cnnspec.loads(ZOO10["conditional"]).to_torch().source
    assert "def forward(self, z, label):" in cond


def test_sample_adds_its_kl_term_in_training():
    torch = pytest.importorskip("torch")
    net = cnnspec.loads(ZOO10["vae"])
    module = net.to_torch(dtype="float64").train()
    inputs = inputs_of(net, batch=4)
    torch.manual_seed(0)
    module(*(torch.from_numpy(x) for x in inputs.values()))
    arrays = net.compile(dtype="float64", seed=0).arrays()
    encoder = ZOO10["vae"].split("    mu =")[0] + "}\n"           # the same layer names, up to h
    h = numpy_forward(cnnspec.loads(encoder), arrays, inputs)
    (mu_layer, logvar_layer) = net["z"]["inputs"]                     # `mu = h -> dense(6)`: dense2
    mu = R.dense_forward(h, arrays[f"{mu_layer}.weight"], arrays[f"{mu_layer}.bias"])
    logvar = R.dense_forward(h, arrays[f"{logvar_layer}.weight"], arrays[f"{logvar_layer}.bias"])
    _, kl = R.vae_sample_forward(mu, logvar, np.zeros_like(mu))
    assert module.z.kl.item() == pytest.approx(0.5 * kl, rel=1e-10)


# ---- the specs of §10 -------------------------------------------------------------------------------

SPECS10 = ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2", "unet", "unet_bilinear",
           "autoencoder", "vae", "dcgan", "cgan"]
SMALL = {"mobilenet_v2": "3x64x64", "mobilenet_v3_small": "3x64x64", "efficientnet_b0": "3x64x64",
         "shufflenet_v2": "3x64x64", "unet": "3x32x32", "unet_bilinear": "3x32x32"}


def spec_networks(name):
    text = (SPECS / f"{name}.cnn").read_text()
    if name in SMALL:
        text = re.sub(r"(input \w+: )3x\d+x\d+", lambda m: m.group(1) + SMALL[name], text, count=1)
    return cnnspec.loads_all(re.sub(r"\ntrain\s*\{[^}]*\}", "\n", text))


@pytest.mark.parametrize("name", SPECS10)
def test_specs_export_and_round_trip(tmp_path, name):
    """Each network: PyTorch and ONNX Runtime agree (float32), and `cnnspec import` of the ONNX
    file gives the same summary, whose re-export computes the same."""
    torch = pytest.importorskip("torch")
    from cnnspec.interop.onnx_import import import_onnx

    for net in spec_networks(name).values():
        path = tmp_path / f"{net.name}.onnx"
        net.to_onnx(path)
        inputs = inputs_of(net, batch=2, dtype=np.float32)
        module = net.to_torch()
        with torch.no_grad():
            expected = module(*(torch.from_numpy(x) for x in inputs.values())).numpy()
        assert rel(onnx_run(path, inputs), expected) < 1e-4, net.name
        again, weights, text = import_onnx(path)
        assert again.summary()["totals"] == net.summary()["totals"], net.name
        again.to_onnx(tmp_path / "again.onnx", weights=weights)
        assert rel(onnx_run(tmp_path / "again.onnx", inputs), expected) < 1e-4, net.name
        assert sum(p.numel() for p in module.parameters()) == net.summary()["totals"]["params"]


def test_blocks_with_conditions_become_classes_per_form(tmp_path):
    """MobileNetV2's inverted block has an `if` (no expansion layer when expand == 1, no residual
    when the shape changes): each form is a class; the imported file has blocks again."""
    net = spec_networks("mobilenet_v2")["MobileNetV2"]
    source = net.to_torch().source
    forms = re.findall(r"^class (Inverted\w*)\(nn.Module\)", source, re.M)
    assert len(forms) >= 2
    net.to_onnx(tmp_path / "m.onnx")
    from cnnspec.interop.onnx_import import import_onnx
    _, _, text = import_onnx(tmp_path / "m.onnx")
    assert "block inverted" in text and "relu6" in text


# ---- several networks in one file (a GAN) ------------------------------------------------------------

def test_a_gan_exports_both_networks(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    out = tmp_path / "dcgan.py"
    assert main(["export", str(SPECS / "dcgan.cnn"), "--to", "pytorch", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "class Generator" in printed and "class Discriminator" in printed
    import importlib.util
    spec = importlib.util.spec_from_file_location("dcgan_export", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nets = cnnspec.load_all(SPECS / "dcgan.cnn")
    g, d = module.Generator(), module.Discriminator()
    g.load_state_dict(torch.load(tmp_path / "dcgan.Generator.pt"))
    d.load_state_dict(torch.load(tmp_path / "dcgan.Discriminator.pt"))
    z = torch.randn(2, *nets["Generator"].input_shape)
    with torch.no_grad():
        assert d.eval()(g.eval()(z)).shape == (2, 1)
    assert main(["export", str(SPECS / "dcgan.cnn"), "--to", "onnx", "-o", str(tmp_path / "dcgan.onnx")]) == 0
    assert (tmp_path / "dcgan.Generator.onnx").is_file() and (tmp_path / "dcgan.Discriminator.onnx").is_file()
    assert main(["export", str(SPECS / "dcgan.cnn"), "--network", "Discriminator", "--to", "onnx",
                 "-o", str(tmp_path / "d.onnx")]) == 0
    assert onnx.load(tmp_path / "d.onnx").graph.name == "Discriminator"


def test_a_gan_takes_one_weights_file_per_network(tmp_path, capsys):
    nets = cnnspec.load_all(SPECS / "dcgan.cnn")
    arrays = nets["Discriminator"].compile(dtype="float32", seed=7).arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    out = str(tmp_path / "gan.onnx")
    assert main(["export", str(SPECS / "dcgan.cnn"), "--to", "onnx", "-o", out,
                 "--weights", f"Discriminator={tmp_path / 'd.npz'}"]) == 0
    init = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(tmp_path / "gan.Discriminator.onnx").graph.initializer}
    np.testing.assert_array_equal(init["conv1.weight"], arrays["conv1.weight"])
    capsys.readouterr()
    for weights, message in [(str(tmp_path / "d.npz"), "this file has several networks (Generator, Discriminator)"),
                             (f"Critic={tmp_path / 'd.npz'}", "no network `Critic` here")]:
        assert main(["export", str(SPECS / "dcgan.cnn"), "--to", "onnx", "-o", out, "--weights", weights]) == 1
        assert message in capsys.readouterr().err


# ---- graphs from PyTorch with these layers --------------------------------------------------------------

def modern_torch_module():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Modern(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 8, 4, 2, 1)
            self.gelu, self.silu, self.relu6 = nn.GELU(), nn.SiLU(), nn.ReLU6()
            self.hswish, self.hsig = nn.Hardswish(), nn.Hardsigmoid()
            self.bilinear = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.nearest = nn.Upsample(scale_factor=2, mode="nearest")
            self.softplus, self.elu = nn.Softplus(), nn.ELU(0.5)
            self.head = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            y = self.silu(self.gelu(self.up(x)))
            y = self.relu6(y) + self.hswish(y)
            a, b = torch.chunk(y, 2, dim=1)
            y = torch.cat([a * self.hsig(b.mean((2, 3), keepdim=True)), b], 1)
            n, c, h, w = y.shape                              # a channel shuffle, as ShuffleNet writes it
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
            return self.head(self.elu(self.softplus(self.bilinear(y) + self.nearest(y))))

    torch.manual_seed(0)
    return Modern().eval()


@pytest.mark.parametrize("opset", [17, 20])
def test_pytorch_graphs_of_these_layers_import(tmp_path, opset):
    """The TorchScript exporter at opset 17 writes GELU as x * 0.5 * (1 + erf(x / sqrt(2))), at 20
    as Gelu; SiLU as x * sigmoid(x); torch.chunk as Split or Slices of shape arithmetic; the
    shuffle as Reshape, Transpose, Reshape; ReLU6 as Clip."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(modern_torch_module(), torch.zeros(1, 4, 5, 6), str(path), dynamo=False,
                          opset_version=opset, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    from cnnspec.interop.onnx_import import import_onnx
    net, weights, text = import_onnx(path)
    ops = [net[n]["op"] for n in net.layers()]
    for op in ("conv_transpose", "gelu", "silu", "relu6", "hardswish", "hardsigmoid", "mul", "channels",
               "shuffle", "upsample", "softplus", "elu"):
        assert op in ops, (op, text)
    inputs = inputs_of(net)
    assert rel(numpy_forward(net, weights, inputs), onnx_run(path, inputs)) < 1e-5


def test_a_broken_gelu_pattern_is_a_clear_error(tmp_path, capsys):
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Div", ["x", "s"], ["d"], name="div"),
             helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Relu", ["e"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              initializer=[numpy_helper.from_array(np.array(2 ** 0.5, np.float32), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "g.onnx")
    assert main(["import", str(tmp_path / "g.onnx")]) == 1
    err = capsys.readouterr().err
    assert "node `div` starts what looks like GELU" in err and "`relu` (Relu) uses a part of it" in err
