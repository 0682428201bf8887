"""Export and import of dsl.md §10's layers beyond what the engine comparisons of test_interop_torch
and test_interop_onnx check: the generated PyTorch source, the VAE's KL term, blocks with
conditions, several networks in one file (a GAN), and graphs PyTorch's exporter writes with these
layers (imported, then run by the engine against ONNX Runtime).
"""
import re
import warnings

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from conftest import SPECS
from interop_cases import ZOO10, rel

from cnnspec.kernels import reference as R  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def inputs_of(net, batch=2, seed=0, dtype=np.float64) -> dict:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal((batch, *shape)).astype(dtype) for n, shape in net.input_shapes.items()}


def onnx_run(path, inputs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.astype(np.float32) for k, v in inputs.items()})[0]


def test_the_generated_module_says_what_torch_cannot():
    source = cnnspec.loads(ZOO10["transposed"]).to_torch().source
    assert "nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)" in source
    assert "CropConvTranspose2d(4, 6, 4, stride=2, bias=False, pad=(2, 0, 0, 2), output_pad=(0, 0))" in source
    assert "self.relu6_1 = nn.ReLU6()" in source and "nn.GELU()" in source and "nn.ELU(0.5)" in source
    gates = cnnspec.loads(ZOO10["gates"]).to_torch().source
    assert "se = relu1 * hardsigmoid1" in gates                       # mul, in forward
    assert "g2 = se * sigmoid1[:, :, None, None]" in gates            # a flat gate, viewed as Cx1x1
    assert "Channels(0, 4)" in gates and "= ChannelShuffle(2)" in gates and "DropPath(0.2)" in gates
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
    (mu_layer, logvar_layer) = net["z"]["inputs"]                     # `mu = h -> dense(6)`: dense2
    acts = net.compile(dtype="float64", seed=0).activations(inputs["image"], [mu_layer, logvar_layer])
    mu, logvar = acts[mu_layer], acts[logvar_layer]
    _, kl = R.vae_sample_forward(mu, logvar, np.zeros_like(mu))
    assert module.z.kl.item() == pytest.approx(0.5 * kl, rel=1e-10)


# ---- the specs of §10 -------------------------------------------------------------------------------

SMALL = {"mobilenet_v2": "3x64x64"}


def spec_networks(name):
    text = (SPECS / f"{name}.cnn").read_text()
    if name in SMALL:
        text = re.sub(r"(input \w+: )3x\d+x\d+", lambda m: m.group(1) + SMALL[name], text, count=1)
    return cnnspec.loads_all(re.sub(r"\ntrain\s*\{[^}]*\}", "\n", text))


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
    assert main(["export", str(SPECS / "dcgan64.cnn"), "--to", "pytorch", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "class Generator" in printed and "class Discriminator" in printed
    import importlib.util
    spec = importlib.util.spec_from_file_location("dcgan_export", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nets = cnnspec.load_all(SPECS / "dcgan64.cnn")
    g, d = module.Generator(), module.Discriminator()
    g.load_state_dict(torch.load(tmp_path / "dcgan.Generator.pt"))
    d.load_state_dict(torch.load(tmp_path / "dcgan.Discriminator.pt"))
    z = torch.randn(2, *nets["Generator"].input_shape)
    with torch.no_grad():
        assert d.eval()(g.eval()(z)).shape == (2, 1)
    assert main(["export", str(SPECS / "dcgan64.cnn"), "--to", "onnx", "-o", str(tmp_path / "dcgan.onnx")]) == 0
    assert (tmp_path / "dcgan.Generator.onnx").is_file() and (tmp_path / "dcgan.Discriminator.onnx").is_file()
    assert main(["export", str(SPECS / "dcgan64.cnn"), "--network", "Discriminator", "--to", "onnx",
                 "-o", str(tmp_path / "d.onnx")]) == 0
    assert onnx.load(tmp_path / "d.onnx").graph.name == "Discriminator"


def test_a_gan_takes_one_weights_file_per_network(tmp_path, capsys):
    nets = cnnspec.load_all(SPECS / "dcgan64.cnn")
    arrays = nets["Discriminator"].compile(dtype="float32", seed=7).arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    out = str(tmp_path / "gan.onnx")
    assert main(["export", str(SPECS / "dcgan64.cnn"), "--to", "onnx", "-o", out,
                 "--weights", f"Discriminator={tmp_path / 'd.npz'}"]) == 0
    init = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(tmp_path / "gan.Discriminator.onnx").graph.initializer}
    np.testing.assert_array_equal(init["conv1.weight"], arrays["conv1.weight"])
    capsys.readouterr()
    for weights, message in [(str(tmp_path / "d.npz"), "this file has several networks (Generator, Discriminator)"),
                             (f"Critic={tmp_path / 'd.npz'}", "no network `Critic` here")]:
        assert main(["export", str(SPECS / "dcgan64.cnn"), "--to", "onnx", "-o", out, "--weights", weights]) == 1
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
    inputs = inputs_of(net, dtype=np.float32)
    model = net.compile(dtype="float32", seed=1)
    model.load_arrays(weights)
    assert rel(model.forward(inputs["x"]), onnx_run(path, inputs)) < 1e-5


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


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_to_the_size_of_a_skip_connection_imports(tmp_path, mode):
    """A U-Net's decoder as often written, F.interpolate(x, size=skip.shape[2:]): the exporter
    gives Resize the sizes Concat(Shape(x)[:2], (H, W)), whose first entry is the batch size."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.down, self.head = nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(7, 2, 3, padding=1)

        def forward(self, x):
            y = F.interpolate(self.down(x), size=x.shape[2:], mode=mode)
            return self.head(torch.cat([y, x], 1))

    torch.manual_seed(0)
    path = tmp_path / "decoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Decoder().eval(), torch.zeros(1, 3, 8, 10), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    net, weights = cnnspec.from_onnx(path)
    assert "upsample" in [net[n]["op"] for n in net.layers()]
    inputs = inputs_of(net, batch=3, dtype=np.float32)
    model = net.compile(dtype="float32", seed=1)
    model.load_arrays(weights)
    assert rel(model.forward(inputs["x"]), onnx_run(path, inputs)) < 1e-5


def softplus_model(threshold=20.0, other="Softplus"):
    """nn.Softplus() as the dynamo exporter writes it: Where(x > 20, x, Softplus(x))."""
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node(other, ["c"], ["s"], name="soft"),
             helper.make_node("Greater", ["c", "t"], ["above"], name="above"),
             helper.make_node("Where", ["above", "c", "s"], ["y"], name="where")]
    inits = [numpy_helper.from_array(np.full((2, 3, 1, 1), 10.0, np.float32), "W"),
             numpy_helper.from_array(np.array(threshold, np.float32), "t")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4, 4])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_softplus_as_the_dynamo_exporter_writes_it_imports(tmp_path):
    path = tmp_path / "softplus.onnx"
    onnx.save(softplus_model(), path)
    net, weights = cnnspec.from_onnx(path)
    assert [net[n]["op"] for n in net.layers()] == ["input", "conv", "softplus"]
    inputs = inputs_of(net, batch=3, dtype=np.float32)          # conv outputs of about +-50: both sides of 20
    model = net.compile(dtype="float32", seed=1)
    model.load_arrays(weights)
    assert rel(model.forward(inputs["x"]), onnx_run(path, inputs)) < 1e-5


@pytest.mark.parametrize("threshold, other, message", [
    (5.0, "Softplus", "softplus with threshold 5"),
    (20.0, "Relu", "node `above` starts what looks like PyTorch's softplus"),
])
def test_softplus_patterns_cnnspec_cannot_read_are_clear_errors(tmp_path, capsys, threshold, other, message):
    path = tmp_path / "softplus.onnx"
    onnx.save(softplus_model(threshold, other), path)
    assert main(["import", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
