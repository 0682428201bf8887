"""The engine against PyTorch modules with the same weights, on the networks of dsl.md §10: the
shipped specs (U-Net with transposed convolutions and with bilinear upsampling, the auto-encoder,
the VAE with the same noise, DCGAN's generator and discriminator, the conditional GAN's two-input
generator), MobileNetV2's block and a small MobileNetV2-style network, and torchvision's
MobileNetV2, MobileNetV3-Small, EfficientNet-B0 and ShuffleNetV2 at a small input size.

The modules (tests/torch_models.py) are written independently of the .cnn files; they receive the
compiled model's weights layer by layer in the order their forward calls them. Evaluation-mode
outputs agree to 1e-10 in float64 and 1e-5 in float32 (relative to the largest value), and the
training-mode parameter gradients of the same loss (batch statistics in batchnorm) to 1e-10 in
float64.
"""
import re

import numpy as np
import pytest

import cnnspec
from cnnspec.engine.bench import MOBILENET_BLOCK, MOBILENET_SMALL
from conftest import SPECS

torch = pytest.importorskip("torch")
F = torch.nn.functional

import torch_models as tm  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-5}


def close(ours, theirs, tol, what="", floor=1e-30):
    """Relative to the largest value of ``theirs``, or to ``floor`` when all are smaller (a
    gradient that is 0 but for rounding: a bias before batchnorm)."""
    theirs = theirs.detach().numpy() if torch.is_tensor(theirs) else np.asarray(theirs)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    scale = max(np.abs(theirs).max(), floor)
    err = np.abs(ours.astype(np.float64) - theirs).max() / scale
    assert err < tol, f"{what}: relative error {err:.1e}"


def spec(name, size=None, network=None):
    """A shipped spec, its (first) input resized to ``size`` (fully convolutional networks)."""
    path = SPECS / name
    if size is None:
        return cnnspec.load(path, network=network)
    text = path.read_text()
    text, count = re.subn(r"(input \w+: \d+x)\d+x\d+", rf"\g<1>{size}x{size}", text, count=1)
    assert count == 1
    return cnnspec.loads(text, file=str(path), network=network)


def compiled(net, module, dtype, seed=0, gamma=(0.5, 1.5)):
    """The model and the module with its weights (batchnorm's scales drawn in ``gamma``, its
    statistics randomised)."""
    model = net.compile(dtype=dtype, seed=seed)
    kind = torch.float64 if dtype == "float64" else torch.float32
    example = [torch.zeros(2, *shape, dtype=kind) for shape in model.input_shapes.values()]
    matched = tm.copy_weights(model, module, *example, rng=np.random.default_rng(seed + 1), gamma=gamma)
    return model, matched


def torch_inputs(xs):
    return [torch.from_numpy(x) for x in xs.values()]


def check_forward(model, module, xs, dtype, scores=False):
    """Evaluation mode: the model's output (its scores, the logits before a final softmax, with
    ``scores``) equals the module's."""
    module.eval()
    with torch.no_grad():
        theirs = module(*torch_inputs(xs))
    x = xs if len(xs) > 1 else next(iter(xs.values()))
    ours = model.activations(x, [model.scores_name])[model.scores_name] if scores else model.forward(x)
    close(ours, theirs.reshape(ours.shape), TOL[dtype], "forward")


def check_gradients(model, matched, loss_value, x, y, loss):
    """Training mode: the model's loss and parameter gradients equal the module's (``loss_value``:
    the module's loss tensor, to be differentiated)."""
    ours, grads = model.loss_and_grad(x, y, loss=loss)
    for _, mod in matched:
        for p in mod.parameters():
            p.grad = None
    loss_value.backward()
    assert ours == pytest.approx(loss_value.item(), rel=1e-12)
    theirs = tm.grads_of(matched, model)
    for layer, group in grads.items():
        for key, g in group.items():
            close(g, theirs[layer][key], TOL["float64"], f"{layer}.{key}", floor=1e-5)


def images(shape, n=2, seed=0, unit=False):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)) if unit else rng.standard_normal((n, *shape))


# ---- encoder-decoders -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, bilinear", [("unet256.cnn", False), ("unet_bilinear.cnn", True)])
def test_unet(name, bilinear):
    """The shipped U-Nets at 3x16x16 (they are fully convolutional): PyTorch-UNet's modules, with
    align_corners=False upsampling (the spec's); a per-pixel cross-entropy in training."""
    net = spec(name, size=16)
    module = tm.UNet(bilinear=bilinear)
    model, matched = compiled(net, module, "float64")
    x = images((3, 16, 16))
    check_forward(model, module, {"image": x}, "float64")
    y = np.random.default_rng(1).integers(0, 2, (2, 16, 16))
    module.train()
    probs = module(torch.from_numpy(x))
    loss = F.nll_loss(torch.log(probs), torch.from_numpy(y))
    check_gradients(model, matched, loss, x, y, "cross_entropy")
    model32, _ = compiled(net, module, "float32")
    check_forward(model32, module, {"image": x.astype(np.float32)}, "float32")


def test_autoencoder():
    net = spec("autoencoder.cnn")
    module = tm.AutoEncoder()
    model, matched = compiled(net, module, "float64")
    x = images((1, 28, 28), n=3, unit=True)
    check_forward(model, module, {"image": x}, "float64")
    module.train()
    loss = F.binary_cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(x))     # reconstruct the input
    check_gradients(model, matched, loss, x, x, "bce")
    model32, _ = compiled(net, module, "float32")
    check_forward(model32, module, {"image": x.astype(np.float32)}, "float32")


def test_vae_with_the_same_noise():
    """Training: z = mu + exp(logvar/2)*eps with the engine's eps given to the module; the loss is
    bce + KL on both sides. Evaluation: z = mu."""
    net = spec("vae.cnn")
    module = tm.VAE()
    model, matched = compiled(net, module, "float64")
    x = images((1, 28, 28), n=3, unit=True)
    check_forward(model, module, {"image": x}, "float64")
    model.rng = np.random.default_rng(5)
    model.loss_and_grad(x, x, loss="bce")                      # draws eps
    eps = model._plan(3).ops["z"].eps.copy()
    assert np.abs(eps).max() > 0.1
    model.rng = np.random.default_rng(5)                       # the same eps again
    module.train()
    out = module(torch.from_numpy(x), torch.from_numpy(eps))
    beta = net.loss_terms[0]["weight"]                         # vae.cnn's beta (1/784: bce is a mean)
    loss = F.binary_cross_entropy(out, torch.from_numpy(x)) + beta * module.kl
    check_gradients(model, matched, loss, x, x, "bce")
    assert model.loss_parts["z"] == pytest.approx(beta * module.kl.item(), rel=1e-12)


# ---- GANs -----------------------------------------------------------------------------------------

def test_dcgan_generator_and_discriminator():
    gen, disc = (spec("dcgan64.cnn", network=name) for name in ("Generator", "Discriminator"))
    g_module, d_module = tm.DCGANGenerator(), tm.DCGANDiscriminator()
    g_model, g_matched = compiled(gen, g_module, "float64")
    d_model, d_matched = compiled(disc, d_module, "float64")
    z = images((100, 1, 1))
    check_forward(g_model, g_module, {"z": z}, "float64")
    fake = g_model.forward(z)
    check_forward(d_model, d_module, {"image": fake}, "float64")
    # generator: mse against a target; discriminator: bce against labels on its flattened sigmoid
    target = images((3, 64, 64), seed=3) * 0.5
    g_module.train()
    loss = F.mse_loss(g_module(torch.from_numpy(z)), torch.from_numpy(target))
    check_gradients(g_model, g_matched, loss, z, target, "mse")
    labels = np.array([1.0, 0.0])
    d_module.train()
    loss = F.binary_cross_entropy(d_module(torch.from_numpy(fake)).reshape(-1), torch.from_numpy(labels))
    check_gradients(d_model, d_matched, loss, fake, labels, "bce")
    g32, _ = compiled(gen, g_module, "float32")
    check_forward(g32, g_module, {"z": z.astype(np.float32)}, "float32")


def test_conditional_generator_takes_two_inputs():
    net = spec("cgan_mlp.cnn", network="Generator")
    module = tm.CGANGenerator()
    model, matched = compiled(net, module, "float64")
    rng = np.random.default_rng(0)
    xs = {"z": rng.standard_normal((4, 100)), "label": np.eye(10)[[1, 7, 3, 3]]}
    check_forward(model, module, xs, "float64")
    target = rng.uniform(-1, 1, (4, 1, 28, 28))
    module.train()
    loss = F.mse_loss(module(*torch_inputs(xs)), torch.from_numpy(target))
    check_gradients(model, matched, loss, xs, target, "mse")


# ---- MobileNetV2's block and a small MobileNetV2-style network ------------------------------------

@pytest.mark.parametrize("cin, cout, stride, expand", [(16, 16, 1, 6), (16, 24, 2, 6), (16, 16, 1, 1)])
def test_mobilenet_v2_block(cin, cout, stride, expand):
    text = MOBILENET_BLOCK.replace("input x: 24x56x56", f"input x: {cin}x10x10").replace(
        "inverted(24)", f"inverted({cout}, expand={expand}, stride={stride})")
    net = cnnspec.loads(text)
    module = tm.V2Block(cin, cout, stride, expand)
    model, matched = compiled(net, module, "float64", gamma=(3.0, 6.0))      # some ReLU6 inputs above 6
    x = images((cin, 10, 10))
    check_forward(model, module, {"x": x}, "float64")
    target = images(model.output_shape, seed=2)
    module.train()
    loss = F.mse_loss(module(torch.from_numpy(x)), torch.from_numpy(target))
    check_gradients(model, matched, loss, x, target, "mse")
    clipped = [model._plan(2).act[model.graph.nodes[n]["inputs"][0]] for n in model.live
               if model.graph.nodes[n]["op"] == "relu6"]
    assert all((a > 6).any() and (a < 0).any() for a in clipped)


def test_small_mobilenet_v2():
    net = cnnspec.loads(MOBILENET_SMALL)
    module = tm.small_mobilenet_v2()
    model, matched = compiled(net, module, "float64")
    x = images((3, 32, 32), n=4)
    check_forward(model, module, {"image": x}, "float64", scores=True)
    y = np.array([1, 4, 9, 0])
    module.train()
    loss = F.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y))
    check_gradients(model, matched, loss, x, y, "cross_entropy")
    model32, _ = compiled(net, module, "float32")
    check_forward(model32, module, {"image": x.astype(np.float32)}, "float32", scores=True)


# ---- torchvision's architectures at 3x32x32 ---------------------------------------------------------

@pytest.mark.parametrize("name, builder", [("mobilenet_v2.cnn", tm.mobilenet_v2),
                                           ("mobilenet_v3_small.cnn", tm.mobilenet_v3_small),
                                           ("efficientnet_b0.cnn", tm.efficientnet_b0),
                                           ("shufflenet_v2.cnn", tm.ShuffleNetV2)])
def test_torchvision_architectures_forward(name, builder):
    """The shipped specs run with torchvision's weights layout: evaluation-mode scores equal the
    modules' (dropout and droppath are identities, batchnorm uses its running statistics)."""
    net = spec(name, size=32)
    module = builder()
    for dtype in ("float64", "float32"):
        model, _ = compiled(net, module, dtype)
        module.to(torch.float64 if dtype == "float64" else torch.float32)
        x = images((3, 32, 32), seed=1).astype(dtype)
        check_forward(model, module, {"image": x}, dtype, scores=True)


# ---- TorchNet (the bench's PyTorch side) runs every layer kind ------------------------------------

@pytest.mark.parametrize("name", ["se", "inverted", "unet", "vae", "adaptive", "shuffle", "mul", "sequence"])
def test_torchnet_runs_the_new_layers(name):
    """cnnspec.engine.torch_ref.TorchNet, which `cnnspec bench` times beside the engine: the same
    evaluation outputs, and (for the networks without noise) the same training gradients."""
    from cnnspec.engine.torch_ref import TorchNet
    from test_engine_v10 import NETWORKS, inputs_for, targets_for

    model = cnnspec.loads(NETWORKS[name]).compile(dtype="float64", seed=2)
    xs = inputs_for(model, 3, seed=0)
    if name == "vae":
        xs = {"x": np.random.default_rng(0).random((3, 1, 6, 6))}
    tnet = TorchNet(model)
    with torch.no_grad():
        close(model.forward(xs["x"]), tnet.forward(xs["x"]), 1e-10, "forward")
    y, loss = targets_for(name, model, xs, seed=0)
    ours, grads = model.loss_and_grad(xs["x"], y, loss=loss)
    theirs = tnet.loss(xs["x"], y, loss=loss)
    if name == "vae":                                 # eps differs: the KL term alone is comparable
        assert model.loss_parts["z"] == pytest.approx(tnet.kl.item(), rel=1e-12)
        return
    theirs.backward()
    assert ours == pytest.approx(theirs.item(), rel=1e-12)
    for layer, group in tnet.grads().items():
        for key, g in group.items():
            close(grads[layer][key], g, 1e-10, f"{layer}.{key}", floor=1e-5)


def test_update_batchnorm_is_torchs_update_bn():
    """Model.update_batchnorm recomputes running statistics as torch.optim.swa_utils.update_bn does
    (reset, then the plain average of the batches' means and unbiased variances; batches of
    different sizes), here for the conditional DCGAN generator's two inputs; weights unchanged."""
    net = spec("cgan.cnn", network="Generator")
    module = tm.CondDCGANGenerator().double()
    model, _ = compiled(net, module, "float64")
    params = model._flat_params.copy()
    rng = np.random.default_rng(3)
    batches = [{"z": rng.standard_normal((n, 64, 1, 1)), "label": np.eye(10)[rng.integers(0, 10, n)]}
               for n in (8, 8, 5)]

    class Pair(torch.nn.Module):                       # update_bn calls model(batch) with one argument
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, batch):
            return self.inner(*torch_inputs(batch))
    torch.optim.swa_utils.update_bn(batches, Pair())
    assert model.update_batchnorm(iter(batches)) == 3
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == len(model.state) == 3
    for (name, state), bn in zip(model.state.items(), bns):
        close(state["running_mean"], bn.running_mean, 1e-10, f"{name} mean")
        close(state["running_var"], bn.running_var, 1e-10, f"{name} var")
    np.testing.assert_array_equal(model._flat_params, params)
    module.eval()
    check_forward(model, module, batches[2], "float64")     # evaluation with the new statistics
