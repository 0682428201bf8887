"""PyTorch export: the generated module, run by PyTorch, computes what the engine computes — outputs
in evaluation mode, gradients and batch-norm statistics in training mode — for every layer kind of
dsl.md (§6 and §10) and every network of specs/, and reads as one would write it.

The stochastic layers draw their noise from the engine's generator and from PyTorch's, so the
training comparison gives the module the engine's noise of the same step (read from the engine's
plan after it): dropout's keep-masks (an ``nn.Dropout`` replaced by the mask), droppath's per-sample
masks and sample's eps (``torch.rand`` and ``torch.randn_like`` answering with them while the
exported ``DropPath`` and ``Sample`` run, so their own code is what is tested).
"""
import importlib.util
import re
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.interop.table import framework_layout
from cnnspec.interop.torch_export import torch_source
from conftest import SPECS
from interop_cases import CASES, SPEC_CASES, ZOO, ZOO10, engine_output, inputs, network, rel

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("case", CASES)
def test_eval_outputs_equal_the_engines(case):
    net = network(case)
    xs = inputs(case)
    module = net.to_torch(dtype="float64")
    with torch.no_grad():
        got = module(*(torch.from_numpy(x) for x in xs.values())).numpy()
    assert rel(got, engine_output(case, "float64")) < 1e-10
    module32 = net.to_torch()                               # float32, the default
    with torch.no_grad():
        got = module32(*(torch.from_numpy(x.astype(np.float32)) for x in xs.values())).numpy()
    assert rel(got, engine_output(case, "float32")) < 1e-5


class Mask(torch.nn.Module):
    """Inverted dropout with a given keep-mask (the engine's)."""

    def __init__(self, mask, p):
        super().__init__()
        self.mask, self.p = torch.from_numpy(mask), p

    def forward(self, x):
        return x * self.mask / (1 - self.p) if self.training else x


def answering(submodule, function: str, value):
    """``submodule`` runs its own forward with ``torch.<function>`` returning ``value``."""
    forward = submodule.forward

    def fixed(*args, **kwargs):
        with mock.patch.object(torch, function, lambda *a, **k: value):
            return forward(*args, **kwargs)
    submodule.forward = fixed


def inject_noise(module, model, batch) -> int:
    """Give ``module`` the noise of ``model``'s last training step (batch ``batch``); returns how
    many layers drew noise."""
    ops = model._plan(batch).ops
    count = 0
    for name, node in model.graph.nodes.items():
        if node["op"] not in ("dropout", "droppath", "sample"):
            continue
        count += 1
        parent, _, local = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        if node["op"] == "dropout":
            setattr(owner, local, Mask(ops[name].mask.copy(), node["config"]["p"]))
        elif node["op"] == "droppath":                   # keep where rand >= p: 1.0 kept, 0.0 dropped
            mask = ops[name].mask.reshape(-1, *[1] * len(node["output_shape"]))
            answering(getattr(owner, local), "rand", torch.from_numpy(mask.astype(np.float64)))
        else:
            answering(getattr(owner, local), "randn_like", torch.from_numpy(ops[name].eps.copy()))
    return count


def torch_grads(module, net) -> dict:
    """{layer: {param: gradient}} in the engine's layout."""
    out = {}
    for key, p in module.named_parameters():
        if p.grad is None:
            continue
        layer, param = key.rsplit(".", 1)
        out.setdefault(layer, {})[param] = framework_layout(net[layer]["op"], param, p.grad.numpy())
    return out


# every layer kind (the zoos), and the specs' networks whose layers or shapes the zoos do not have
# (the others are the same layer kinds again, slower)
TRAINED = sorted(ZOO) + sorted(ZOO10) + ["lenet5.cnn", "textcnn.cnn", "crosses.cnn", "resnet18.cnn",
                                         "googlenet.cnn", "vae.cnn", "cgan_mlp.cnn:Generator", "unet_bilinear.cnn",
                                         "mobilenet_v3_small.cnn"]


@pytest.mark.parametrize("case", TRAINED)
def test_training_gradients_and_statistics_equal_the_engines(case):
    net = network(case)
    xs = inputs(case, batch=4, seed=1)
    model = net.compile(dtype="float64", seed=0)
    module = net.to_torch(dtype="float64").train()
    softmax_out = net[net.output_name]["op"] == "softmax"
    rng = np.random.default_rng(2)
    if softmax_out:                                          # a class per sample, or per pixel (U-Net)
        y = rng.integers(0, net.output_shape[0], (4, *net.output_shape[1:]))
    else:
        y = rng.standard_normal((4, *net.output_shape))
    target = torch.from_numpy(y)
    loss = "cross_entropy" if softmax_out else "mse"
    value, grads = model.loss_and_grad(xs if len(xs) > 1 else next(iter(xs.values())), y, loss=loss)
    stochastic = inject_noise(module, model, 4)
    args = [torch.from_numpy(x) for x in xs.values()]
    if softmax_out:
        t_loss = F.cross_entropy(module(*args, logits=True), target)
    else:
        t_loss = F.mse_loss(module(*args), target)
    for name in net.layers():                                # a VAE adds each sample layer's beta * KL
        if net[name]["op"] == "sample":
            t_loss = t_loss + module.get_submodule(name).kl
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
            np.testing.assert_allclose(buffer.numpy(), model.state[layer][stat], rtol=1e-10, atol=1e-12, err_msg=key)
    if case in ("gates", "vae", "flat", "conv2d"):
        assert stochastic                                    # the noise was there to inject


def test_the_cases_cover_every_layer_kind():
    from cnnspec.layers import LAYERS

    used = {network(case)[name]["op"] for case in TRAINED for name in network(case).layers()}
    assert used - {"input"} == set(LAYERS)
    assert {case.partition(":")[0] for case in SPEC_CASES} == {path.name for path in SPECS.glob("*.cnn")}
    assert {"dcgan64.cnn:Generator", "dcgan64.cnn:Discriminator", "dcgan.cnn:Discriminator", "cgan_mlp.cnn:Generator",
            "cgan.cnn:Generator"} <= set(SPEC_CASES)


def test_frozen_layers_do_not_require_gradients():
    net = network("conv2d")
    module = net.to_torch()
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    (layer,) = [n for n in net.layers() if net[n].get("n_params") and not net[n]["trainable"]]
    assert frozen == {f"{layer}.weight", f"{layer}.bias"}
    assert f"self.{layer}.requires_grad_(False)" in module.source


def test_the_module_reads_as_one_would_write_it():
    source = network("resnet18.cnn", small=False).to_torch().source
    assert "class Basic(nn.Module):" in source and "class Down(nn.Module):" in source
    assert "    def __init__(self, in_channels, c):" in source
    assert "        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)" in source
    assert "        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)" in source
    assert "        self.basic1 = Basic(in_channels=64, c=64)" in source
    assert "        self.down1 = Down(in_channels=64, c=128)" in source
    assert "        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)" in source
    assert "        x = inp + batchnorm2" in source                      # the merge, in forward
    source, _ = torch_source(network("resnet50.cnn", small=False))
    assert "nn.Conv2d(c, 4 * c, 1, bias=False)" in source                 # block arithmetic
    assert "nn.Conv2d(c, c, 3, stride=stride, padding=1, bias=False)" in source
    net = network("googlenet.cnn")                                # nested blocks
    state = net.to_torch().state_dict()
    names = {k for k in state if not k.endswith("num_batches_tracked")}
    assert names == set(net.compile(seed=0).arrays())                     # the .cnn names
    assert "inception1.cbr2.conv1.weight" in names


def test_padding_torch_cannot_say_uses_the_helpers():
    source = network("pools2d").to_torch().source
    assert "class Pool(nn.Module):" in source
    assert "Pool('sum', (2, 3), (2, 2), (1, 0, 0, 2), ceil=True)" in source
    assert "Pool('sum', (2, 2), (2, 2), (0, 0, 0, 0))" in source             # sumpool: no divisor_override
    assert "PadConv2d(" in network("conv2d").to_torch().source


@pytest.mark.parametrize("case", ["pools2d", "seq1d", "gates"])
def test_torch_onnx_export_of_the_module_computes_what_the_engine_computes(case, tmp_path):
    """The module taken on to ONNX by PyTorch's exporter: sum pooling and pooling in ceil mode
    (the Pool helper) must not rest on what torch.onnx.export drops (divisor_override) or
    reads by ONNX's shape rule (ceil_mode), and a channel shuffle must not be
    nn.ChannelShuffle (the TorchScript exporter has no aten::channel_shuffle), checked by ONNX
    Runtime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import warnings
    xs = inputs(case)
    names = list(xs)
    path = tmp_path / "module.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network(case).to_torch(), tuple(torch.from_numpy(x.astype(np.float32)) for x in xs.values()),
                          str(path), dynamo=False, opset_version=17, input_names=names,
                          dynamic_axes={n: {0: "N"} for n in names})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: x.astype(np.float32) for n, x in xs.items()})[0]
    assert rel(got, engine_output(case, "float32")) < 1e-5


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


@pytest.mark.parametrize("spec, out, loads", [("lenet5.cnn", "mymodel.py", "mymodel.pt"),
                                               ("dcgan.cnn", "gan.py", "gan.Generator.pt")])
def test_the_modules_docstring_loads_the_state_dict_written_beside_it(tmp_path, capsys, monkeypatch, spec, out,
                                                                     loads):
    """QA defect 6: with -o OTHER.py the docstring said torch.load("lenet5.pt") (named after the
    .cnn file; "dcgan.Generator.pt" for several networks) while OTHER.pt was written."""
    assert main(["export", str(SPECS / spec), "--to", "pytorch", "-o", str(tmp_path / out)]) == 0
    capsys.readouterr()
    source = (tmp_path / out).read_text()
    docstring = source.split('"""')[1]
    assert re.findall(r'torch\.load\("([^"]+)"\)', source) == [loads] and f'torch.load("{loads}")' in docstring
    assert (tmp_path / loads).is_file()
    spec_ = importlib.util.spec_from_file_location("exported", tmp_path / out)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    usage = [line.strip() for line in docstring.splitlines() if line.startswith("    model")]
    namespace = {"torch": torch, **vars(module)}
    monkeypatch.chdir(tmp_path)
    exec("\n".join(usage), namespace)          # the docstring's two lines, run beside the files written
    assert isinstance(namespace["model"], torch.nn.Module)


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


@pytest.mark.parametrize("param", ["lambda", "class", "self", "nn", "super"])
def test_a_block_parameter_named_like_python_or_the_generated_code_exports(param):
    """A block parameter is an argument of its class's __init__: `lambda` was a SyntaxError,
    `self` a duplicate argument, `nn` and `super` shadowed what __init__ calls. The module builds
    and computes the network, checked with torch.nn.functional on the same weights."""
    import torch.nn.functional as F

    from cnnspec.interop.weights import network_arrays

    net = cnnspec.loads(f"block b({param}) {{\n    conv({param}, 3x3, pad=1) -> relu\n}}\n"
                        "network N {\n    input x: 3x6x6\n    b(4) -> b(2)\n}\n")
    arrays = {k: torch.from_numpy(v) for k, v in network_arrays(net, seed=3).items()}
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32))
    expected = x
    for block in ("b1", "b2"):
        expected = F.relu(F.conv2d(expected, arrays[f"{block}.conv1.weight"], arrays[f"{block}.conv1.bias"], padding=1))
    with torch.no_grad():
        got = net.to_torch(seed=3)(x)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["training", "_parameters", "_modules", "_buffers"])
def test_a_layer_named_like_a_module_instance_attribute_is_a_clear_error(name, tmp_path, capsys):
    """nn.Module sets these in __init__, so dir(nn.Module) does not list them: a layer so named
    made a module whose .eval() raises TypeError (torch: "cannot assign 'bool' as child module
    'training'"), written by `export` with exit status 0."""
    text = f"network N {{\n    input x: 4\n    dense(3)\n    {name} = relu\n    dense(2)\n}}\n"
    with pytest.raises(cnnspec.CnnSpecError, match=f"torch.nn.Module uses for itself \\(`{name}`\\)"):
        cnnspec.loads(text).to_torch()
    spec = tmp_path / "n.cnn"
    spec.write_text(text)
    assert main(["export", str(spec), "--to", "pytorch", "-o", str(tmp_path / "n.py")]) == 1
    assert "uses for itself" in capsys.readouterr().err and not (tmp_path / "n.py").exists()
