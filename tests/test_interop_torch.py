"""PyTorch export: the generated module, run by PyTorch, computes what the engine computes — outputs
in evaluation mode, gradients and batch-norm statistics in training mode (the engine's dropout masks
injected, since the two draw them from different generators) — and reads as one would write it.
"""
import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.interop.torch_export import torch_source
from conftest import SPECS
from interop_cases import ZOO

torch = pytest.importorskip("torch")
F = torch.nn.functional

SPEC_NAMES = ["lenet5", "crosses", "edges", "digits", "textcnn", "transfer", "googlenet", "resnet18"]
# where the spec allows (global pooling before the head), at a smaller input for speed
SMALL = {"resnet18", "googlenet", "resnet50"}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def network(name, small=False):
    if name in ZOO:
        return cnnspec.loads(ZOO[name])
    text = (SPECS / f"{name}.cnn").read_text()
    if small and name in SMALL:
        text = text.replace("input image: 3x224x224", "input image: 3x32x32")
    return cnnspec.loads(text)


@pytest.mark.parametrize("name", sorted(ZOO) + SPEC_NAMES)
def test_eval_outputs_equal_the_engines(name):
    net = network(name, small=True)
    x = np.random.default_rng(0).random((2, *net.input_shape))
    module = net.to_torch(dtype="float64")
    with torch.no_grad():
        assert rel(module(torch.from_numpy(x)).numpy(), net.compile(dtype="float64", seed=0).forward(x)) < 1e-10
    if name == "googlenet":
        return
    module32 = net.to_torch()                               # float32, the default
    with torch.no_grad():
        got = module32(torch.from_numpy(x.astype(np.float32))).numpy()
    assert rel(got, net.compile(dtype="float32", seed=0).forward(x.astype(np.float32))) < 1e-5


class Mask(torch.nn.Module):
    """Inverted dropout with a given keep-mask (the engine's)."""

    def __init__(self, mask, p):
        super().__init__()
        self.mask, self.p = torch.from_numpy(mask), p

    def forward(self, x):
        return x * self.mask / (1 - self.p) if self.training else x


def inject_masks(module, model, batch):
    plan = model._plan(batch)
    for name, node in model.graph.nodes.items():
        if node["op"] == "dropout":
            parent, _, local = name.rpartition(".")
            owner = module.get_submodule(parent) if parent else module
            setattr(owner, local, Mask(plan.ops[name].mask.copy(), node["config"]["p"]))


def torch_grads(module, net) -> dict:
    """{layer: {param: gradient}} in the engine's layout (nn.Linear's weight transposed back)."""
    out = {}
    for key, p in module.named_parameters():
        if p.grad is None:
            continue
        layer, param = key.rsplit(".", 1)
        g = p.grad.numpy()
        out.setdefault(layer, {})[param] = g.T if net[layer]["op"] == "dense" and param == "weight" else g
    return out


@pytest.mark.parametrize("name", sorted(ZOO) + ["lenet5", "textcnn", "resnet18", "googlenet", "crosses"])
def test_training_gradients_and_statistics_equal_the_engines(name):
    net = network(name, small=True)
    x = np.random.default_rng(1).random((4, *net.input_shape))
    model = net.compile(dtype="float64", seed=0)
    module = net.to_torch(dtype="float64").train()
    softmax_out = net[net.output_name]["op"] == "softmax"
    k = int(np.prod(net.output_shape))
    y = np.arange(4) % k
    loss = "cross_entropy" if softmax_out else "mse"
    value, grads = model.loss_and_grad(x, y, loss=loss)
    inject_masks(module, model, 4)
    if softmax_out:
        t_loss = F.cross_entropy(module(torch.from_numpy(x), logits=True), torch.from_numpy(y))
    else:
        target = torch.from_numpy(np.eye(k)[y].reshape(4, *net.output_shape))
        t_loss = F.mse_loss(module(torch.from_numpy(x)), target)
    assert t_loss.item() == pytest.approx(value, rel=1e-10)
    if t_loss.requires_grad:                                 # crosses.cnn: every layer is frozen
        t_loss.backward()
    t_grads = torch_grads(module, net)
    assert sorted(t_grads) == sorted(grads)                 # frozen layers have none, in both
    scale = max((np.abs(g).max() for group in grads.values() for g in group.values()), default=0.0)
    for layer, group in grads.items():
        for param, g in group.items():                      # relative to the largest gradient:
            err = np.abs(t_grads[layer][param] - g).max()   # some are zero in exact arithmetic
            assert err < 1e-9 * scale, (layer, param, err, scale)
    for key, buffer in module.named_buffers():               # running statistics, updated alike
        layer, stat = key.rsplit(".", 1)
        if stat.startswith("running_"):
            assert rel(buffer.numpy(), model.state[layer][stat]) < 1e-10, key


def test_frozen_layers_do_not_require_gradients():
    net = network("conv2d")
    module = net.to_torch()
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    (layer,) = [n for n in net.layers() if net[n].get("n_params") and not net[n]["trainable"]]
    assert frozen == {f"{layer}.weight", f"{layer}.bias"}
    assert f"self.{layer}.requires_grad_(False)" in module.source


def test_the_module_reads_as_one_would_write_it():
    source = network("resnet18").to_torch().source
    assert "class Basic(nn.Module):" in source and "class Down(nn.Module):" in source
    assert "    def __init__(self, in_channels, c):" in source
    assert "        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)" in source
    assert "        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)" in source
    assert "        self.basic1 = Basic(in_channels=64, c=64)" in source
    assert "        self.down1 = Down(in_channels=64, c=128)" in source
    assert "        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)" in source
    assert "        x = inp + batchnorm2" in source                      # the merge, in forward
    source, _ = torch_source(network("resnet50"))
    assert "nn.Conv2d(c, 4 * c, 1, bias=False)" in source                 # block arithmetic
    assert "nn.Conv2d(c, c, 3, stride=stride, padding=1, bias=False)" in source
    net = network("googlenet", small=True)                                # nested blocks
    state = net.to_torch().state_dict()
    names = {k for k in state if not k.endswith("num_batches_tracked")}
    assert names == set(net.compile(seed=0).arrays())                     # the .cnn names
    assert "inception1.cbr2.conv1.weight" in names


def test_padding_torch_cannot_say_uses_the_helpers():
    source = network("pools2d").to_torch().source
    assert "class Pool(nn.Module):" in source
    assert "Pool('sum', (2, 3), (2, 2), (1, 0, 0, 2), ceil=True)" in source
    assert "nn.AvgPool2d(2, divisor_override=1)" in source                   # sumpool, natively
    assert "PadConv2d(" in network("conv2d").to_torch().source


def test_cli_writes_the_module_and_the_state_dict(tmp_path, capsys):
    model = cnnspec.load(SPECS / "resnet18.cnn").compile(dtype="float32", seed=4)
    model.save(tmp_path / "w.npz")
    out = tmp_path / "resnet.py"
    assert main(["export", str(SPECS / "resnet18.cnn"), "--to", "pytorch", "-o", str(out),
                 "--weights", str(tmp_path / "w.npz")]) == 0
    assert "resnet.pt" in capsys.readouterr().out
    spec = importlib.util.spec_from_file_location("resnet_export", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.ResNet18()
    net.load_state_dict(torch.load(tmp_path / "resnet.pt"))
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        assert rel(net.eval()(torch.from_numpy(x)).numpy(), model.forward(x)) < 1e-5


def test_export_without_torch_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from cnnspec.cli import main\n"
            f"raise SystemExit(main(['export', {str(SPECS / 'lenet5.cnn')!r}, '--to', 'pytorch', "
            f"'-o', {str(tmp_path / 'm.py')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "needs the `torch` package" in result.stderr and "pip install 'cnnspec[torch]'" in result.stderr
    assert not (tmp_path / "m.py").exists()


def test_a_layer_named_like_a_module_attribute_is_a_clear_error():
    net = cnnspec.loads("network N {\n    input x: 4\n    forward = dense(2)\n}\n")
    with pytest.raises(cnnspec.CnnSpecError, match="torch.nn.Module uses for itself"):
        net.to_torch()
    assert re.search(r"class N\b", cnnspec.loads("network N {\n    input x: 4\n    dense(2)\n}\n").to_torch().source)
