"""The specs of dsl.md §10's networks against PyTorch modules written independently of the .cnn
files: the same parameter count, the same MACs (fvcore's convention, counted with forward
hooks: conv, transposed conv and dense only, biases excluded; a transposed conv counts
C*(F/groups)*k per *input* position) and the same output shape for every conv, transposed conv
and dense layer, in order.

The modules are in tests/torch_models.py (the torchvision architectures copied from torchvision's
source, reduced to what shapes and counts depend on). torchvision publishes their parameter
counts exactly and their GFLOPS rounded; both are checked, and so is what the real torchvision
0.29.1 models give, measured once (tests/reference/).
"""
import json
import math
from pathlib import Path

import pytest

import cnnspec
from conftest import SPECS

torch = pytest.importorskip("torch")
nn = torch.nn

from torch_models import (VAE, AutoEncoder, CGANDiscriminator, CGANGenerator, CondDCGANDiscriminator,  # noqa: E402
                          CondDCGANGenerator, DCGANDiscriminator, DCGANGenerator, ShapesDCGANDiscriminator,
                          ShapesDCGANGenerator, ShuffleNetV2, UNet, efficientnet_b0, mobilenet_v2,
                          mobilenet_v3_small)

# name: (spec file, network, params, GFLOPS and the decimals torchvision publishes)
TORCHVISION = {
    "mobilenet_v2": ("mobilenet_v2.cnn", 3_504_872, 0.301, 3),
    "mobilenet_v3_small": ("mobilenet_v3_small.cnn", 2_542_856, 0.057, 3),
    "efficientnet_b0": ("efficientnet_b0.cnn", 5_288_548, 0.386, 3),
    "shufflenet_v2_x1_0": ("shufflenet_v2.cnn", 2_278_604, 0.145, 3),
}
# What torchvision 0.29.1 itself gives (tests/reference/torchvision_profile.py wrote it, with the
# same hooks as `profile` below, on the real torchvision models) and the figures it publishes.
MEASURED = json.loads((Path(__file__).parent / "reference" / "torchvision-0.29.1.json").read_text())


# ---- counting in PyTorch -------------------------------------------------------------------------

def profile(module, *inputs):
    """(params, MACs, [(kind, output shape without batch), ...] in execution order), run on
    PyTorch's "meta" device: shapes without arithmetic."""
    module = module.to("meta")
    inputs = [x.to("meta") for x in inputs]
    layers, macs = [], [0]

    def hook(mod, args, out):
        x = args[0]
        if isinstance(mod, nn.Linear):
            macs[0] += mod.in_features * mod.out_features
            kind = "dense"
        elif isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            macs[0] += mod.weight.numel() * math.prod(x.shape[2:])        # C*(F/g)*k * input positions
            kind = "conv_transpose"
        else:
            macs[0] += mod.weight[0].numel() * out[0].numel()               # (C/g)*k per output
            kind = "conv"
        layers.append((kind, tuple(out.shape[1:])))

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear))]
    module.eval()
    with torch.no_grad():
        out = module(*inputs)
    for h in handles:
        h.remove()
    return sum(p.numel() for p in module.parameters()), macs[0], layers, tuple(out.shape[1:])


def spec_profile(net):
    s = net.summary()
    layers = [(layer["op"], tuple(layer["output_shape"])) for layer in s["layers"]
              if layer["op"] in ("conv", "conv_transpose", "dense")]
    return s["totals"]["params"], s["totals"]["macs"], layers, net.output_shape


def assert_same(net, module, *inputs, softmax=True):
    params, macs, layers, out = profile(module, *inputs)
    got = spec_profile(net)
    assert got[2] == layers                      # every conv / conv_transpose / dense, in order
    assert got[0] == params
    assert got[1] == macs
    assert got[3] == out
    per_layer = [n["n_params"] for n in map(net.graph.nodes.get, net.layers())
                 if n["op"] in ("conv", "conv_transpose", "dense")]
    torch_per_layer = [sum(p.numel() for p in m.parameters()) for m in module.modules()
                       if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    assert sorted(per_layer) == sorted(torch_per_layer)
    return params, macs


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_real_torchvision_models_as_measured(name):
    """Every conv and dense layer's output shape, the parameters and the MACs of the spec are those
    of the real torchvision model (measured with torchvision 0.29.1), and torchvision's figures."""
    spec, params, gflops, decimals = TORCHVISION[name]
    measured = MEASURED[name]
    s = cnnspec.load(SPECS / spec).summary()
    layers = [[layer["op"], layer["output_shape"]] for layer in s["layers"] if layer["op"] in ("conv", "dense")]
    assert layers == measured["layers"]
    assert s["totals"]["params"] == measured["params"] == measured["meta"]["num_params"] == params
    assert s["totals"]["macs"] == measured["macs"]
    assert round(measured["macs"] / 1e9, decimals) == measured["meta"]["_ops"] == gflops


def test_inception_v3_as_torchvision_and_its_receptive_fields():
    """specs/inception_v3.cnn (written from the paper and torchvision's source, without the
    auxiliary head) is torchvision 0.29.1's inception_v3(aux_logits=False) layer by layer; the
    published figures: 27,161,264 parameters with the auxiliary head's 3,326,696, 5.713 GFLOPS.
    Where the branches of its blocks meet (1x7 beside 7x1 kernels), the receptive field is the union
    per axis: 1311x1311 after the last block (the bug of issue 11 gave 1311x1183)."""
    measured = MEASURED["inception_v3"]
    net = cnnspec.load(SPECS / "inception_v3.cnn")
    s = net.summary()
    layers = [[layer["op"], layer["output_shape"]] for layer in s["layers"] if layer["op"] in ("conv", "dense")]
    assert layers == measured["layers"]
    assert s["totals"]["params"] == measured["params"] == measured["meta"]["num_params"] - 3_326_696
    assert s["totals"]["macs"] == measured["macs"] and round(measured["macs"] / 1e9, 3) == measured["meta"]["_ops"]
    fields = {layer["name"]: layer["receptive_field"] for layer in s["layers"]}
    last = [layer["name"] for layer in s["layers"] if layer["op"] == "concat"][-1]
    assert fields[last]["size"] == [1311, 1311] and fields[last]["stride"] == [32, 32]


TORCH = {"mobilenet_v2": mobilenet_v2, "mobilenet_v3_small": mobilenet_v3_small, "efficientnet_b0": efficientnet_b0,
         "shufflenet_v2_x1_0": ShuffleNetV2}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_architectures(name):
    spec, params, gflops, decimals = TORCHVISION[name]
    net = cnnspec.load(SPECS / spec)
    module = TORCH[name]()
    got_params, got_macs = assert_same(net, module, torch.zeros(1, 3, 224, 224))
    assert got_params == params                                   # torchvision's published count
    assert round(got_macs / 1e9, decimals) == pytest.approx(gflops)
    assert net.warnings == []


def test_the_specs_use_the_new_layers_as_torchvision_does():
    v2 = cnnspec.load(SPECS / "mobilenet_v2.cnn")
    ops = {v2[n]["op"] for n in v2.layers()}
    assert "relu6" in ops and "relu" not in ops
    # the first block has no expansion (t = 1): depthwise, then projection
    assert [n for n in v2.layers() if n.startswith("inverted1.conv")] == ["inverted1.conv1", "inverted1.conv2"]
    assert v2["inverted1.conv1"]["config"]["groups"] == 32
    v3 = cnnspec.load(SPECS / "mobilenet_v3_small.cnn")
    squeezes = [v3[n]["output_shape"][0] for n in v3.layers() if n.endswith("se1.conv1")]
    assert squeezes == [8, 24, 64, 64, 32, 40, 72, 144, 144]      # _make_divisible(expanded // 4, 8)
    gates = [n for n in v3.layers() if v3[n]["op"] == "mul"]
    assert all(v3[g]["config"]["broadcast"] == ("full", "gate") for g in gates) and len(gates) == 9
    b0 = cnnspec.load(SPECS / "efficientnet_b0.cnn")
    drops = [b0[n]["config"]["p"] for n in b0.layers() if b0[n]["op"] == "droppath"]
    assert drops == pytest.approx([0.2 * i / 16 for i in (2, 4, 6, 7, 9, 10, 12, 13, 14)])   # residual blocks
    shuffle = cnnspec.load(SPECS / "shufflenet_v2.cnn")
    assert shuffle["unit2.channels1"]["config"] == {"start": 0, "stop": 58}


# ---- encoder-decoders and generative networks ------------------------------------------------

@pytest.mark.parametrize("spec, bilinear, params", [("unet256.cnn", False, 31_037_698),
                                                     ("unet_bilinear.cnn", True, 17_263_042)])
def test_unets(spec, bilinear, params):
    net = cnnspec.load(SPECS / spec)
    assert_same(net, UNet(bilinear=bilinear), torch.zeros(1, 3, 256, 256))
    assert net.summary()["totals"]["params"] == params
    assert net.output_shape == (2, 256, 256) and net.warnings == []


@pytest.mark.parametrize("spec, network, module, inputs", [
    ("autoencoder.cnn", None, AutoEncoder, [(1, 28, 28)]),
    ("vae.cnn", None, VAE, [(1, 28, 28)]),
    ("dcgan64.cnn", "Generator", DCGANGenerator, [(100, 1, 1)]),
    ("dcgan64.cnn", "Discriminator", DCGANDiscriminator, [(3, 64, 64)]),
    ("dcgan.cnn", "Generator", ShapesDCGANGenerator, [(100, 1, 1)]),
    ("dcgan.cnn", "Discriminator", ShapesDCGANDiscriminator, [(2, 32, 32)]),
    ("cgan_mlp.cnn", "Generator", CGANGenerator, [(100,), (10,)]),
    ("cgan_mlp.cnn", "Discriminator", CGANDiscriminator, [(1, 28, 28), (10,)]),
    ("cgan.cnn", "Generator", CondDCGANGenerator, [(64, 1, 1), (10,)]),
    ("cgan.cnn", "Discriminator", CondDCGANDiscriminator, [(1, 32, 32), (10,)]),
])
def test_encoder_decoders_and_gans(spec, network, module, inputs):
    net = cnnspec.load(SPECS / spec, network=network)
    assert_same(net, module(), *(torch.zeros(2, *shape) for shape in inputs))
    assert list(net.input_shapes.values()) == inputs
    assert net.warnings == []


def test_published_dcgan_and_unet_figures():
    """PyTorch's DCGAN tutorial prints its two networks; their sizes are well known."""
    gan = cnnspec.load_all(SPECS / "dcgan64.cnn")
    assert list(gan) == ["Generator", "Discriminator"]
    assert gan["Generator"].summary()["totals"]["params"] == 3_576_704
    assert gan["Discriminator"].summary()["totals"]["params"] == 2_765_568
    assert gan["Generator"].output_shape == (3, 64, 64) and gan["Discriminator"].output_shape == (1,)
    assert gan["Generator"].train_config["generator"] == "Generator"
    vae = cnnspec.load(SPECS / "vae.cnn")
    assert vae.loss_terms == [{"layer": "z", "term": "kl", "weight": 0.0012755}]
