"""The specs of dsl.md §10's networks against PyTorch modules written here, independently of the
.cnn files: the same parameter count, the same MACs (fvcore's convention, counted with forward
hooks: conv, transposed conv and dense only, biases excluded; a transposed conv counts
C*(F/groups)*k per *input* position) and the same output shape for every conv, transposed conv
and dense layer, in order.

The torchvision architectures are copied from torchvision's source (mobilenetv2.py,
mobilenetv3.py, efficientnet.py, shufflenetv2.py), reduced to what shapes and counts depend on.
torchvision publishes their parameter counts exactly and their GFLOPS rounded; both are checked,
and so is what the real torchvision 0.29.1 models give, measured once (tests/reference/).
"""
import json
import math
from functools import partial
from pathlib import Path

import pytest

import cnnspec
from conftest import SPECS

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

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


# ---- torchvision's architectures ------------------------------------------------------------------

def make_divisible(v, divisor=8, min_value=None):        # torchvision.models._utils._make_divisible
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def cna(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU, norm=nn.BatchNorm2d):
    """torchvision.ops.Conv2dNormActivation: conv without bias, norm, activation."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), norm(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class V2Block(nn.Module):                                # torchvision mobilenetv2.InvertedResidual
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [cna(inp, hidden, 1, act=nn.ReLU6)] if expand_ratio != 1 else []
        layers += [cna(hidden, hidden, stride=stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def mobilenet_v2():
    features = [cna(3, 32, stride=2, act=nn.ReLU6)]
    cin = 32
    for t, c, n, s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                       [6, 160, 3, 2], [6, 320, 1, 1]]:
        for i in range(n):
            features.append(V2Block(cin, c, s if i == 0 else 1, t))
            cin = c
    features.append(cna(cin, 1280, 1, act=nn.ReLU6))
    return nn.Sequential(*features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, 1000))


class SqueezeExcitation(nn.Module):                      # torchvision.ops.SqueezeExcitation
    def __init__(self, cin, squeeze, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(cin, squeeze, 1), nn.Conv2d(squeeze, cin, 1)
        self.activation, self.scale_activation = activation(), scale_activation()

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(scale))))


class V3Block(nn.Module):                                # torchvision mobilenetv3.InvertedResidual
    def __init__(self, cin, k, expanded, cout, use_se, hs, stride):
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        act = nn.Hardswish if hs else nn.ReLU
        self.use_res_connect = stride == 1 and cin == cout
        layers = [cna(cin, expanded, 1, act=act, norm=norm)] if expanded != cin else []
        layers.append(cna(expanded, expanded, k, stride, groups=expanded, act=act, norm=norm))
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8),
                                            scale_activation=nn.Hardsigmoid))
        layers.append(cna(expanded, cout, 1, act=None, norm=norm))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res_connect else self.block(x)


def mobilenet_v3_small():
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
    table = [(16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
             (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
             (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
             (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1)]
    layers = [cna(3, 16, 3, 2, act=nn.Hardswish, norm=norm)] + [V3Block(*row) for row in table]
    layers.append(cna(96, 576, 1, act=nn.Hardswish, norm=norm))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024), nn.Hardswish(),
                         nn.Dropout(0.2), nn.Linear(1024, 1000))


class MBConv(nn.Module):                                 # torchvision efficientnet.MBConv
    def __init__(self, expand_ratio, k, stride, cin, cout, sd_prob):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        expanded = make_divisible(cin * expand_ratio, 8)
        layers = [cna(cin, expanded, 1, act=nn.SiLU)] if expanded != cin else []
        layers.append(cna(expanded, expanded, k, stride, groups=expanded, act=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, cin // 4), activation=nn.SiLU))
        layers.append(cna(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.sd_prob = sd_prob

    def forward(self, x):
        result = self.block(x)
        return result + x if self.use_res_connect else result     # stochastic depth: identity in eval


def efficientnet_b0():
    table = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
             (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    total, done = sum(row[-1] for row in table), 0
    layers = [cna(3, 32, 3, 2, act=nn.SiLU)]
    for e, k, s, cin, cout, n in table:
        for i in range(n):
            layers.append(MBConv(e, k, s if i == 0 else 1, cin if i == 0 else cout, cout, 0.2 * done / total))
            done += 1
    layers.append(cna(320, 1280, 1, act=nn.SiLU))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, 1000))


def channel_shuffle(x, groups):                          # torchvision shufflenetv2.channel_shuffle
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ShuffleUnit(nn.Module):                            # torchvision shufflenetv2.InvertedResidual
    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        bf = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False), nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024)):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], channels[0]
        for n, cout in zip(repeats, channels[1:4]):
            stages += [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1) for _ in range(n - 1)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.conv5 = nn.Sequential(nn.Conv2d(cin, channels[-1], 1, 1, 0, bias=False), nn.BatchNorm2d(channels[-1]),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(channels[-1], 1000)

    def forward(self, x):
        x = self.conv5(self.stages(self.maxpool(self.conv1(x))))
        return self.fc(x.mean([2, 3]))


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


# ---- encoder-decoders and generative networks: PyTorch modules written here ----------------------

class DoubleConv(nn.Sequential):                          # milesial/Pytorch-UNet
    def __init__(self, cin, cout, mid=None):
        mid = mid or cout
        super().__init__(nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Up(nn.Module):
    def __init__(self, cin, cout, bilinear):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.conv = DoubleConv(cin, cout, cin // 2)
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
            self.conv = DoubleConv(cin, cout)

    def forward(self, x1, x2):
        return self.conv(torch.cat([x2, self.up(x1)], dim=1))


class UNet(nn.Module):
    def __init__(self, n_channels=3, n_classes=2, bilinear=False):
        super().__init__()
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(n_channels, 64)
        self.downs = nn.ModuleList([nn.Sequential(nn.MaxPool2d(2), DoubleConv(a, b))
                                    for a, b in ((64, 128), (128, 256), (256, 512), (512, 1024 // factor))])
        self.ups = nn.ModuleList([Up(1024, 512 // factor, bilinear), Up(512, 256 // factor, bilinear),
                                  Up(256, 128 // factor, bilinear), Up(128, 64, bilinear)])
        self.outc = nn.Conv2d(64, n_classes, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x).softmax(1)


@pytest.mark.parametrize("spec, bilinear, params", [("unet.cnn", False, 31_037_698),
                                                     ("unet_bilinear.cnn", True, 17_263_042)])
def test_unets(spec, bilinear, params):
    net = cnnspec.load(SPECS / spec)
    assert_same(net, UNet(bilinear=bilinear), torch.zeros(1, 3, 256, 256))
    assert net.summary()["totals"]["params"] == params
    assert net.output_shape == (2, 256, 256) and net.warnings == []


class AutoEncoder(nn.Module):                             # dsl.md §10.3
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(32 * 49, 32), nn.ReLU())
        self.dec = nn.Sequential(nn.Linear(32, 32 * 49), nn.ReLU(), nn.Unflatten(1, (32, 7, 7)),
                                 nn.ConvTranspose2d(32, 16, 3, 2, 1, output_padding=1), nn.ReLU(),
                                 nn.ConvTranspose2d(16, 1, 3, 2, 1, output_padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.dec(self.enc(x))


class VAE(nn.Module):
    def __init__(self, code=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(64 * 49, 256), nn.ReLU())
        self.mu, self.logvar = nn.Linear(256, code), nn.Linear(256, code)
        self.dec = nn.Sequential(nn.Linear(code, 256), nn.ReLU(), nn.Linear(256, 64 * 49), nn.ReLU(),
                                 nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        return self.dec(mu)                               # evaluation: z = mu


class DCGANGenerator(nn.Sequential):                      # PyTorch's DCGAN tutorial
    def __init__(self, nz=100, ngf=64, nc=3):
        def up(cin, cout, stride=2, pad=1):
            return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        super().__init__(*up(nz, ngf * 8, 1, 0), *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2), *up(ngf * 2, ngf),
                         nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


class DCGANDiscriminator(nn.Sequential):
    def __init__(self, ndf=64, nc=3):
        def down(cin, cout):
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        super().__init__(nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                         *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8),
                         nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten())


class CGANGenerator(nn.Module):                           # PyTorch-GAN's cgan, one-hot labels
    def __init__(self):
        super().__init__()

        def block(cin, cout, normalize=True):
            return [nn.Linear(cin, cout)] + ([nn.BatchNorm1d(cout, 0.8)] if normalize else []) + \
                [nn.LeakyReLU(0.2, inplace=True)]
        self.model = nn.Sequential(*block(110, 128, False), *block(128, 256), *block(256, 512), *block(512, 1024),
                                   nn.Linear(1024, 784), nn.Tanh())

    def forward(self, z, label):
        return self.model(torch.cat((z, label), -1)).view(-1, 1, 28, 28)


class CGANDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(794, 512), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Linear(512, 512), nn.Dropout(0.4), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Linear(512, 512), nn.Dropout(0.4), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Linear(512, 1), nn.Sigmoid())

    def forward(self, image, label):
        return self.model(torch.cat((image.view(len(image), -1), label), -1))


@pytest.mark.parametrize("spec, network, module, inputs", [
    ("autoencoder.cnn", None, AutoEncoder, [(1, 28, 28)]),
    ("vae.cnn", None, VAE, [(1, 28, 28)]),
    ("dcgan.cnn", "Generator", DCGANGenerator, [(100, 1, 1)]),
    ("dcgan.cnn", "Discriminator", DCGANDiscriminator, [(3, 64, 64)]),
    ("cgan.cnn", "Generator", CGANGenerator, [(100,), (10,)]),
    ("cgan.cnn", "Discriminator", CGANDiscriminator, [(1, 28, 28), (10,)]),
])
def test_encoder_decoders_and_gans(spec, network, module, inputs):
    net = cnnspec.load(SPECS / spec, network=network)
    assert_same(net, module(), *(torch.zeros(2, *shape) for shape in inputs))
    assert list(net.input_shapes.values()) == inputs
    assert net.warnings == []


def test_published_dcgan_and_unet_figures():
    """PyTorch's DCGAN tutorial prints its two networks; their sizes are well known."""
    gan = cnnspec.load_all(SPECS / "dcgan.cnn")
    assert list(gan) == ["Generator", "Discriminator"]
    assert gan["Generator"].summary()["totals"]["params"] == 3_576_704
    assert gan["Discriminator"].summary()["totals"]["params"] == 2_765_568
    assert gan["Generator"].output_shape == (3, 64, 64) and gan["Discriminator"].output_shape == (1,)
    assert gan["Generator"].train_config["generator"] == "Generator"
    vae = cnnspec.load(SPECS / "vae.cnn")
    assert vae.loss_terms == [{"layer": "z", "term": "kl", "weight": 1.0}]
