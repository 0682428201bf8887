"""PyTorch modules written independently of the .cnn files, shared by the tests that hold the
specs and the engine against them (tests/test_specs_modern.py: shapes, parameters, MACs;
tests/test_engine_torch_v10.py: outputs and gradients with the same weights).

The torchvision architectures are copied from torchvision's source (mobilenetv2.py,
mobilenetv3.py, efficientnet.py, shufflenetv2.py), reduced to the modules and the forward; the
encoder-decoders and GANs follow the implementations named beside each. ``copy_weights`` gives a
module the weights of a compiled cnnspec model, matched layer by layer in the order the forward
calls them. Import only after ``pytest.importorskip("torch")``.
"""
from functools import partial

import numpy as np
import torch

nn = torch.nn
F = torch.nn.functional


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
    """forward(x) gives the evaluation output (z = mu); forward(x, eps) the training one, z = mu +
    exp(logvar/2) * eps, and keeps ``kl``: the KL divergence of N(mu, exp(logvar)) from N(0, 1),
    summed over the code, averaged over the batch (the term a VAE adds to its loss)."""

    def __init__(self, code=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(64 * 49, 256), nn.ReLU())
        self.mu, self.logvar = nn.Linear(256, code), nn.Linear(256, code)
        self.dec = nn.Sequential(nn.Linear(code, 256), nn.ReLU(), nn.Linear(256, 64 * 49), nn.ReLU(),
                                 nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())

    def forward(self, x, eps=None):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        self.kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(dim=1)).mean()
        return self.dec(mu if eps is None else mu + torch.exp(logvar / 2) * eps)


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


class ShapesDCGANGenerator(nn.Sequential):               # specs/dcgan.cnn: the tutorial's design at 1x32x32
    def __init__(self, nz=100, ngf=32):
        def up(cin, cout, stride=2, pad=1):
            return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        super().__init__(*up(nz, ngf * 4, 1, 0), *up(ngf * 4, ngf * 2), *up(ngf * 2, ngf),
                         nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())


class ShapesDCGANDiscriminator(nn.Sequential):           # its packed discriminator: two pictures, 2 channels
    def __init__(self, ndf=16, pack=2):
        def down(cin, cout):
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        super().__init__(nn.Conv2d(pack, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                         *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4),
                         nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten())


class CGANGenerator(nn.Module):                           # specs/cgan_mlp.cnn: PyTorch-GAN's cgan, one-hot
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


class CondDCGANGenerator(nn.Module):          # specs/cgan.cnn: y concatenated to z (dcgan_code's cond. MNIST)
    def __init__(self, nz=64, classes=10, ngf=32):
        super().__init__()

        def up(cin, cout, first=False):
            return [nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.main = nn.Sequential(*up(nz + classes, ngf * 4, True), *up(ngf * 4, ngf * 2), *up(ngf * 2, ngf),
                                  nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z, label):
        return self.main(torch.cat([z, label.view(len(label), -1, 1, 1)], 1))


class CondDCGANDiscriminator(nn.Module):      # label maps concatenated to the picture's channels
    def __init__(self, classes=10, ndf=16):
        super().__init__()

        def down(cin, cout):
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
        self.main = nn.Sequential(nn.Conv2d(1 + classes, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
                                  *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4),
                                  nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten())

    def forward(self, image, label):
        maps = label.view(len(label), -1, 1, 1).expand(-1, -1, *image.shape[2:])
        return self.main(torch.cat([image, maps], 1))


# ---- a small MobileNetV2-style network (3x32x32, the bench's) -------------------------------------

def small_mobilenet_v2(classes=10, width=16):
    """The network of cnnspec.engine.bench.MOBILENET_SMALL: MobileNetV2's stem, blocks and head
    at CIFAR size."""
    layers = [cna(3, width, stride=1, act=nn.ReLU6), V2Block(width, width, 1, 1),
              V2Block(width, 24, 2, 6), V2Block(24, 24, 1, 6), V2Block(24, 32, 2, 6), V2Block(32, 32, 1, 6),
              V2Block(32, 64, 2, 6), cna(64, 128, 1, act=nn.ReLU6)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, classes))


# ---- the same weights ----------------------------------------------------------------------------

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm1d,
            nn.BatchNorm2d)
KINDS = {"conv": (nn.Conv1d, nn.Conv2d), "conv_transpose": (nn.ConvTranspose1d, nn.ConvTranspose2d),
         "dense": (nn.Linear,), "batchnorm": (nn.BatchNorm1d, nn.BatchNorm2d)}


def called_in_order(module, *inputs):
    """The module's convolutions, linear and batchnorm layers in the order its forward calls them
    (each once, at its first call)."""
    order, handles = [], []
    for m in module.modules():
        if isinstance(m, WEIGHTED):
            handles.append(m.register_forward_pre_hook(lambda mod, args: order.append(mod)
                                                       if all(mod is not o for o in order) else None))
    was_training = module.training
    module.eval()
    with torch.no_grad():
        module(*inputs)
    module.train(was_training)
    for h in handles:
        h.remove()
    return order


def pairs(model, module, *inputs):
    """[(layer name, torch module)]: the model's layers with parameters, in network order, beside
    the module's weighted layers in call order; each pair checked for kind and shapes."""
    layers = [name for name in model.layers if name in model.params]
    mods = called_in_order(module, *inputs)
    assert len(layers) == len(mods), (len(layers), len(mods))
    for name, mod in zip(layers, mods):
        op = model.graph.nodes[name]["op"]
        assert isinstance(mod, KINDS[op]), (name, op, mod)
        for key, value in model.params[name].items():
            theirs = getattr(mod, key)
            expected = value.T.shape if op == "dense" and key == "weight" else value.shape
            assert tuple(theirs.shape) == tuple(expected), (name, key, value.shape, theirs.shape)
    return list(zip(layers, mods))


def copy_weights(model, module, *inputs, rng=None, gamma=(0.5, 1.5)):
    """Give ``module`` the model's parameters and batchnorm running statistics (with ``rng``,
    batchnorm's parameters and statistics are randomised first, its scales drawn in ``gamma``, so
    that it is not the identity in evaluation); the module is converted to the model's dtype.
    Returns the (layer, module) pairs."""
    module.to({np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}[model.dtype])
    matched = pairs(model, module, *inputs)
    for name, mod in matched:
        if rng is not None and name in model.state:
            model.params[name]["weight"] = rng.uniform(*gamma, model.params[name]["weight"].shape)
            model.params[name]["bias"] = rng.standard_normal(model.params[name]["bias"].shape) * 0.1
            model.state[name]["running_mean"][...] = rng.standard_normal(model.state[name]["running_mean"].shape) * 0.1
            model.state[name]["running_var"][...] = rng.uniform(0.5, 1.5, model.state[name]["running_var"].shape)
        op = model.graph.nodes[name]["op"]
        with torch.no_grad():
            for key, value in model.params[name].items():
                getattr(mod, key).copy_(torch.from_numpy(np.ascontiguousarray(value.T if op == "dense" and key == "weight"
                                                                              else value)))
            for key, value in model.state.get(name, {}).items():
                getattr(mod, key).copy_(torch.from_numpy(value))
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.eps, mod.momentum = model.graph.nodes[name]["config"]["eps"], model.graph.nodes[name]["config"]["momentum"]
    return matched


def grads_of(matched, model):
    """{layer: {param: ndarray}} of the module's gradients, in the engine's layout."""
    out = {}
    for name, mod in matched:
        op = model.graph.nodes[name]["op"]
        for key in model.params[name]:
            g = getattr(mod, key).grad.numpy()
            out.setdefault(name, {})[key] = g.T if op == "dense" and key == "weight" else g
    return out
