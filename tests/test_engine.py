"""The engine: whole-network gradients, PyTorch agreement, reproducibility, freezing, weight files.

Float64 everywhere except where float32 itself is the point (one signature set per dtype keeps the
cold numba compile short). Networks are parsed once per module.
"""
import numpy as np
import pytest

import cnnspec
from cnnspec import CnnSpecError
from cnnspec.engine import SGD, Adam, Model

LENET5 = """
network LeNet5 {
    input image: 1x32x32
    conv(6, 5x5) -> relu -> maxpool(2x2)
    conv(16, 5x5) -> relu -> maxpool(2)
    flatten
    dense(120) -> relu
    dense(84) -> relu
    dense(10) -> softmax
}
"""

RESIDUAL = """
block basic(c) {
    main = conv(c, 3x3, pad=1, bias=false) -> batchnorm -> relu -> conv(c, 3x3, pad=1)
    add(in, main) -> relu
}
network Residual {
    input x: 3x8x8
    s = conv(4, 3x3, pad=1)
    r = s -> relu
    b = r -> basic(4)
    add(b, r, s) -> maxpool(2)
    globalavgpool -> flatten -> dense(3) -> softmax
}
"""

INCEPTION = """
block inception(c1, c3r, c3, pp) {
    b1 = in -> conv(c1, 1x1) -> relu
    b2 = in -> conv(c3r, 1x1) -> relu -> conv(c3, 3x3, pad=1) -> tanh
    b4 = in -> maxpool(3x3, stride=1, pad=1) -> conv(pp, 1x1) -> sigmoid
    concat(b1, b2, b4, in)
}
network Inception {
    input x: 3x6x6
    stem = conv(4, 3x3, pad=1, stride=1) -> leaky_relu(0.1)
    inception(2, 2, 3, 2)
    avgpool(2) -> flatten -> dense(3) -> softmax
}
"""

BN_DROPOUT = """
network BnDropout {
    input x: 2x6x6
    conv(4, 3x3, bias=false) -> batchnorm -> relu -> dropout(0.3)
    flatten -> dense(8) -> batchnorm -> tanh -> dropout(0.5)
    dense(3) -> softmax
}
"""

TEXT = """
network Text {
    input words: 6x12
    w3 = words -> conv(4, 3) -> relu -> globalmaxpool
    w4 = words -> conv(4, 4, pad=same, stride=2) -> relu -> maxpool(2) -> globalmaxpool
    concat(w3, w4) -> flatten -> dense(2) -> softmax
}
"""

POOLS = """
network Pools {
    input x: 4x12x12
    conv(6, 3x3, pad=same, stride=2, groups=2) -> sigmoid      # 'same' pads (0, 1) here
    conv(6, 3x3, dilation=2, pad=2) -> leaky_relu(0.2)
    avgpool(3, stride=1, pad=1) -> sumpool(2, stride=1) -> maxpool(2, ceil=true)
    globalmaxpool -> flatten -> dense(3) -> softmax
}
"""

NETWORKS = {"lenet5": LENET5, "residual": RESIDUAL, "inception": INCEPTION, "bn_dropout": BN_DROPOUT,
            "text": TEXT, "pools": POOLS}


@pytest.fixture(scope="module")
def nets():
    return {name: cnnspec.loads(text) for name, text in NETWORKS.items()}


def batch(model, n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *model.input_shape)).astype(model.dtype)
    y = rng.integers(0, model.output_shape[0], n)
    return x, y


# -- gradients ---------------------------------------------------------------------------------

# Central differences of a loss of about 1 carry rounding noise of about eps / h = 2e-11 (h = 1e-5):
# a gradient that is exactly 0 shows up as such noise, which no relative error can judge.
ZERO_GRAD_ATOL = 1e-8


def zero_by_construction(model) -> set:
    """(layer, "bias") of every layer whose output feeds batchnorms only: in training a batchnorm
    subtracts the batch mean per channel, so a per-channel shift changes nothing and that bias's
    gradient is exactly 0 (dense1.bias in BN_DROPOUT)."""
    graph = model.graph
    return {(name, "bias") for name, group in model.params.items()
            if "bias" in group and list(graph.successors(name))
            and all(graph.nodes[c]["op"] == "batchnorm" for c in graph.successors(name))}


def check_gradients(model, x, y, loss="cross_entropy", per_tensor=6, h=1e-5):
    """Central differences of the training loss (dropout masks fixed by reseeding) against the
    analytic gradients, on a few entries of every parameter; returns the worst relative error.
    Gradients that are zero by construction (``zero_by_construction``) must be zero on both sides,
    to ``ZERO_GRAD_ATOL``; every other one must agree to a relative error of 1e-6."""
    zeros = zero_by_construction(model)
    def loss_at():
        model.rng = np.random.default_rng(7)
        return model.loss_and_grad(x, y, loss)[0]

    model.rng = np.random.default_rng(7)
    _, grads = model.loss_and_grad(x, y, loss)
    assert grads, "no trainable parameter"
    pick = np.random.default_rng(1)
    worst = 0.0
    for layer, group in grads.items():
        for name, analytic in group.items():
            p = model.params[layer][name]
            flat = p.reshape(-1)
            entries = pick.choice(flat.size, min(per_tensor, flat.size), replace=False)
            numeric = []
            for i in entries:
                old = flat[i]
                flat[i] = old + h
                up = loss_at()
                flat[i] = old - h
                down = loss_at()
                flat[i] = old
                numeric.append((up - down) / (2 * h))
            a, n = analytic.reshape(-1)[entries], np.array(numeric)
            if (layer, name) in zeros:
                assert np.abs(a).max() <= ZERO_GRAD_ATOL and np.abs(n).max() <= ZERO_GRAD_ATOL, (
                    f"{layer}.{name} should have a zero gradient\nanalytic {a}\nnumeric  {n}")
                continue
            err = np.abs(a - n).max() / max(np.abs(a).max() + np.abs(n).max(), 1e-8)
            # a parameter whose gradient is exactly 0 (a bias before batchnorm) has numeric
            # differences of rounding size, one ulp of the loss / 2h = 1e-11: those are 0
            err = err if np.abs(a - n).max() > 1e-9 else 0.0
            assert err < 1e-6, f"{layer}.{name}: relative error {err:.2e}\nanalytic {a}\nnumeric  {n}"
            worst = max(worst, err)
    return worst


@pytest.mark.parametrize("name", list(NETWORKS))
def test_whole_network_gradients(nets, name):
    model = nets[name].compile(dtype="float64", seed=1)
    x, y = batch(model)
    check_gradients(model, x, y)


def test_zero_gradients_by_construction_are_recognised(nets):
    """The absolute check above applies to exactly the biases feeding a batchnorm."""
    assert zero_by_construction(nets["bn_dropout"].compile(dtype="float64")) == {("dense1", "bias")}
    assert zero_by_construction(nets["residual"].compile(dtype="float64")) == set()     # bias=false there
    model = nets["bn_dropout"].compile(dtype="float64", seed=1)
    _, grads = model.loss_and_grad(*batch(model))
    assert np.abs(grads["dense1"]["bias"]).max() <= ZERO_GRAD_ATOL            # zero, up to rounding
    assert np.abs(grads["dense1"]["weight"]).max() > 1e-4                   # the weights do learn


def test_gradients_mse_and_frozen_layer(nets):
    model = nets["residual"].compile(dtype="float64", seed=2)
    model.set_trainable("basic1.*", False)        # gradients flow through the frozen block
    x, _ = batch(model)
    target = np.random.default_rng(3).random((len(x), 3))
    check_gradients(model, x, target, loss="mse")
    _, grads = model.loss_and_grad(x, target, loss="mse")
    assert set(grads) == {"s", "dense1"}


def test_cross_entropy_on_logits_without_softmax():
    net = cnnspec.loads("network L { input x: 5\n dense(4) -> tanh -> dense(3) }")
    model = net.compile(dtype="float64", seed=0)
    x, y = batch(model, n=4)
    check_gradients(model, x, y)
    logits = model.forward(x)
    z = logits - logits.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(4), y])
    assert model.loss_and_grad(x, y)[0] == pytest.approx(expected, rel=1e-12)


def test_losses_on_outputs_with_spatial_axes():
    net = cnnspec.loads("network G { input x: 3x6x6\n conv(4, 3x3) -> globalavgpool -> softmax }")
    model = net.compile(dtype="float64", seed=0)
    x, y = batch(model, n=4)
    check_gradients(model, x, y)                           # fused, on a 4x1x1 output
    net = cnnspec.loads("network S { input x: 3x6x6\n conv(4, 3x3) -> softmax }")
    model = net.compile(dtype="float64", seed=0)
    target = np.random.default_rng(0).random((4, 4, 4, 4))
    check_gradients(model, x, target, loss="mse")          # softmax over channels, differentiated
    with pytest.raises(CnnSpecError, match=r"one per position of the 4x4x4 output, of shape \(4, 4, 4\)"):
        model.loss_and_grad(x, y)


def test_fused_cross_entropy_is_stable():
    net = cnnspec.loads("network S { input x: 2\n dense(3, bias=false) -> softmax }")
    model = net.compile(dtype="float64")
    model.params["dense1"]["weight"] = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]])
    loss, grads = model.loss_and_grad(np.array([[1.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(2e4)
    assert np.isfinite(grads["dense1"]["weight"]).all()


# -- PyTorch ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_ref():
    pytest.importorskip("torch")
    from cnnspec.engine import torch_ref
    return torch_ref


@pytest.mark.parametrize("name", ["lenet5", "residual", "inception", "text", "pools"])
def test_forward_and_gradients_match_pytorch(nets, torch_ref, name):
    model = nets[name].compile(dtype="float64", seed=4)
    x, y = batch(model, n=4)
    tnet = torch_ref.TorchNet(model)
    np.testing.assert_allclose(model.forward(x), tnet.forward(x).detach().numpy(), rtol=1e-10, atol=1e-12)
    loss, grads = model.loss_and_grad(x, y)
    tloss = tnet.loss(x, y)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    tgrads = tnet.grads()
    for layer in grads:
        for key in grads[layer]:
            np.testing.assert_allclose(grads[layer][key], tgrads[layer][key], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{layer}.{key}")


def test_batchnorm_running_stats_and_sgd_match_pytorch(nets, torch_ref):
    import torch

    model = nets["residual"].compile(dtype="float64", seed=5)
    tnet = torch_ref.TorchNet(model)
    opt = SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-3)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for step in range(3):
        x, y = batch(model, n=5, seed=step)
        loss, _ = model.train_step(x, y, opt)
        topt.zero_grad()
        tloss = tnet.loss(x, y)
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
    for (layer, key), t in tnet.state.items():
        np.testing.assert_allclose(model.state[layer][key], t.numpy(), rtol=1e-10, err_msg=f"{layer}.{key}")
    for layer, group in model.params.items():
        for key, value in group.items():
            np.testing.assert_allclose(value, tnet.param(layer, key), rtol=1e-9, atol=1e-12, err_msg=f"{layer}.{key}")
    x, _ = batch(model, n=5, seed=9)         # evaluation mode: running statistics
    np.testing.assert_allclose(model.forward(x), tnet.forward(x).detach().numpy(), rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_matches_pytorch(nets, torch_ref, dtype):
    import torch

    model = nets["lenet5"].compile(dtype=dtype, seed=6)
    tnet = torch_ref.TorchNet(model)
    opt = Adam(model, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)
    topt = torch.optim.Adam(tnet.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)
    for step in range(3):
        x, y = batch(model, n=8, seed=step)
        model.train_step(x, y, opt)
        topt.zero_grad()
        tnet.loss(torch.from_numpy(x), y).backward()
        topt.step()
    rtol, atol = (1e-9, 1e-12) if dtype == "float64" else (2e-3, 2e-5)
    for layer, group in model.params.items():
        for key, value in group.items():
            np.testing.assert_allclose(value, tnet.param(layer, key), rtol=rtol, atol=atol, err_msg=f"{layer}.{key}")


def test_adam_with_unfreezing_matches_pytorch(nets, torch_ref):
    """A layer unfrozen later starts its Adam bias correction afresh, as torch counts steps per
    parameter (and skips parameters without a gradient)."""
    import torch

    model = nets["lenet5"].compile(dtype="float64", seed=8)
    model.set_trainable("conv*", False)
    tnet = torch_ref.TorchNet(model)
    opt = Adam(model, lr=1e-2)
    topt = torch.optim.Adam(list(tnet.params.values()), lr=1e-2)
    for step in range(4):
        if step == 2:
            model.set_trainable("conv*", True)
            for (layer, _), t in tnet.params.items():
                t.requires_grad_(True)
        x, y = batch(model, n=4, seed=step)
        model.train_step(x, y, opt)
        topt.zero_grad()
        tnet.loss(x, y).backward()
        topt.step()
    for layer, group in model.params.items():
        for key, value in group.items():
            np.testing.assert_allclose(value, tnet.param(layer, key), rtol=1e-9, atol=1e-12, err_msg=f"{layer}.{key}")


def test_float32_training_matches_pytorch(nets, torch_ref):
    import torch

    model = nets["lenet5"].compile(dtype="float32", seed=7)
    tnet = torch_ref.TorchNet(model)
    opt = SGD(model, lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.05, momentum=0.9)
    for step in range(3):
        x, y = batch(model, n=16, seed=step)
        loss, out = model.train_step(x, y, opt)
        topt.zero_grad()
        tloss = tnet.loss(torch.from_numpy(x), y)
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-5)
        assert out.dtype == np.float32 and out.shape == (16, 10)
    x, _ = batch(model, n=16, seed=9)
    expected = tnet.forward(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-4, atol=1e-6)


# -- initialisation, reproducibility, freezing ------------------------------------------------

def test_initialisation_like_pytorch(nets):
    model = nets["residual"].compile(dtype="float64", seed=0)
    assert isinstance(model, Model)
    same = Model(nets["residual"].graph, dtype="float64", seed=0)       # a bare analysed graph works too
    assert np.array_equal(same._flat_params, model._flat_params)
    with pytest.raises(CnnSpecError, match="unknown dtype `float16`"):
        Model(nets["residual"], dtype="float16")
    for layer, group in model.params.items():
        w = group["weight"]
        if "batchnorm" in layer:
            assert (w == 1).all() and (group["bias"] == 0).all()
            continue
        fan_in = w.shape[0] if layer.startswith("dense") else np.prod(w.shape[1:])
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.5 * bound
        if "bias" in group:
            assert np.abs(group["bias"]).max() <= bound
    state = model.state["basic1.batchnorm1"]
    assert (state["running_mean"] == 0).all() and (state["running_var"] == 1).all()


def test_fixed_weights_and_seeds():
    net = cnnspec.loads("network E { input x: 1x6x6\n conv(2, 3x3, weights=[sobel_x, cross], pad=1) }")
    model = net.compile(dtype="float64", seed=3)
    np.testing.assert_array_equal(model.params["conv1"]["weight"][0, 0], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert (model.params["conv1"]["bias"] == 0).all()
    a, b, c = (cnnspec.loads(LENET5).compile(seed=s) for s in (0, 0, 1))
    assert np.array_equal(a._flat_params, b._flat_params)
    assert not np.array_equal(a._flat_params, c._flat_params)
    f64 = cnnspec.loads(LENET5).compile(dtype="float64", seed=0)
    np.testing.assert_array_equal(a._flat_params, f64._flat_params.astype(np.float32))


def test_training_is_reproducible():
    net = cnnspec.loads(LENET5.replace("dense(84) -> relu", "dense(84) -> relu -> dropout(0.5)"))

    def run(seed):
        model = net.compile(dtype="float32", seed=seed)
        opt = Adam(model, lr=1e-2)
        history = [model.train_step(*batch(model, n=6, seed=s), opt)[0] for s in range(4)]
        return history, model
    losses_a, a = run(11)
    losses_b, b = run(11)
    assert losses_a == losses_b
    assert np.array_equal(a._flat_params, b._flat_params)
    assert run(12)[0] != losses_a


FUSED = """
network Fused {
    input x: 3x7x5
    a = conv(4, 3x3, pad=1) -> batchnorm -> relu                  # fused
    b = a -> conv(6, 3x3, pad=1, bias=false) -> batchnorm        # feeds two layers: not fused
    c = b -> relu
    d = add(b, c) -> relu                                       # fused (forward)
    e = add(d, c, b) -> batchnorm -> relu                       # three operands: apart; fused
    flatten -> dense(5) -> batchnorm -> relu                    # 2-D, the output: fused
}
"""


def _trained(monkeypatch, text, fuse, frozen, fusions, negative_rows=0, gamma=None):
    """Losses, parameters, state, training output and input gradient after 3 SGD steps on the
    network ``text`` (batch 4), with the relu fusions on or off (``FUSE_RELU``); ``frozen``: a glob
    of layers to freeze, or None; ``fusions(plan)``: what the plan fused, as the test expects it;
    ``negative_rows``: the inputs' first rows made negative (windows with no positive value);
    ``gamma``: every batchnorm's scale set to it first."""
    from cnnspec.engine import plan as plan_module

    monkeypatch.setattr(plan_module, "FUSE_RELU", fuse)
    model = cnnspec.loads(text).compile(dtype="float32", seed=3)
    if gamma is not None:
        for name, params in model.params.items():
            if model.graph.nodes[name]["op"] == "batchnorm":
                params["weight"][...] = gamma
    if frozen:
        model.set_trainable(frozen, False)
    fusions(model._plan(4), fuse)
    opt = SGD(model, lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(3):
        x = rng.standard_normal((4, *model.input_shape)).astype(np.float32)
        x[:, :, :negative_rows] = -np.abs(x[:, :, :negative_rows])
        y = rng.standard_normal((4, *model.output_shape)).astype(np.float32)
        losses.append(model.train_step(x, y, opt, loss="mse")[0])
    out = model.forward_train(x)
    dx = model.backward(np.ones_like(out), inputs="x")["x"]
    state = [a.copy() for group in model.state.values() for a in group.values()]
    return losses, [model._flat_params.copy(), *state, out, dx]


def _assert_bit_identical(fused, apart):
    assert fused[0] == apart[0]
    assert len(fused[1]) == len(apart[1])
    for u, v in zip(fused[1], apart[1]):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("frozen", [None, "batchnorm*"])
def test_batchnorm_relu_fusion_is_bit_identical(monkeypatch, frozen):
    """Training with batchnorm -> relu pairs fused (one kernel call each way) and add -> relu
    (forward) gives the same losses, parameters, running statistics and input gradients bit for
    bit as the layers apart."""
    def fusions(plan, fuse):
        assert set(plan.relu_fusions()) == ({"batchnorm1", "add1", "batchnorm3", "batchnorm4"} if fuse else set())

    _assert_bit_identical(_trained(monkeypatch, FUSED, True, frozen, fusions),
                          _trained(monkeypatch, FUSED, False, frozen, fusions))


FUSED6 = """
network Fused6 {
    input x: 3x7x5
    a = conv(4, 3x3, pad=1) -> batchnorm -> relu6                 # fused
    b = a -> conv(6, 3x3, pad=1, bias=false) -> batchnorm        # feeds two layers: not fused
    c = b -> relu6
    add(b, c) -> relu6 -> flatten -> dense(5) -> batchnorm -> relu6   # add -> relu6 apart; fused
}
"""


@pytest.mark.parametrize("frozen", [None, "batchnorm*"])
def test_batchnorm_relu6_fusion_is_bit_identical(monkeypatch, frozen):
    """batchnorm -> relu6 fused (MobileNetV2's pairs; scales of 4, so that outputs fall on both
    sides of 0 and 6): the same losses, parameters, statistics and input gradients bit for bit
    as the layers apart."""
    def fusions(plan, fuse):
        assert plan.relu_fusions() == ({"batchnorm1": "relu6_1", "batchnorm3": "relu6_4"} if fuse else {})

    _assert_bit_identical(_trained(monkeypatch, FUSED6, True, frozen, fusions, gamma=4.0),
                          _trained(monkeypatch, FUSED6, False, frozen, fusions, gamma=4.0))


DENSE_RELU = """
network DenseRelu {
    input x: 3x5x4
    a = flatten -> dense(9) -> relu                             # fused
    b = a -> dense(8, bias=false) -> relu                       # fused, no bias
    c = b -> dense(7)                                           # feeds two layers: apart
    d = c -> relu
    add(c, d) -> dense(6) -> relu                               # the output relu: fused
}
"""


@pytest.mark.parametrize("frozen", [None, "dense1", "dense*"])
def test_dense_relu_fusion_is_bit_identical(monkeypatch, frozen):
    """Training with dense -> relu pairs fused (one kernel call each way: the relu in the dense's
    forward, its mask in the dense's backward) gives the same losses, parameters and input
    gradients bit for bit as the layers apart; frozen dense layers still pass the gradient on."""
    def fusions(plan, fuse):
        assert plan.relu_fusions() == ({"dense1": "relu1", "dense2": "relu2", "dense4": "relu4"}
                                       if fuse else {})

    fused = _trained(monkeypatch, DENSE_RELU, True, frozen, fusions, negative_rows=2)
    _assert_bit_identical(fused, _trained(monkeypatch, DENSE_RELU, False, frozen, fusions, negative_rows=2))
    assert np.any(fused[1][-1] != 0)                         # the input gradient


POOLED = """
network Pooled {
    input x: 3x9x11
    a = conv(4, 3x3, pad=1) -> relu -> maxpool(2x2)              # fused
    b = a -> conv(5, 3x3, pad=1) -> relu -> maxpool(3x3, stride=2, pad=1)   # overlapping: fused
    c = b -> relu -> maxpool(3x3, stride=1, pad=1)              # b feeds two layers: apart
    add(b, c) -> flatten -> dense(5)
}
"""


@pytest.mark.parametrize("frozen", [None, "conv1"])
def test_relu_maxpool_fusion_is_bit_identical(monkeypatch, frozen):
    """Training with relu -> maxpool pairs fused (the maxpool pools the relu's input and takes the
    relu of its output; its backward masks by that output) gives the same losses, parameters and
    input gradients bit for bit as the layers apart."""
    def fusions(plan, fuse):
        assert plan.relu_pool_fusions() == ({"relu1": "maxpool1", "relu2": "maxpool2"} if fuse else {})

    fused = _trained(monkeypatch, POOLED, True, frozen, fusions, negative_rows=3)
    _assert_bit_identical(fused, _trained(monkeypatch, POOLED, False, frozen, fusions, negative_rows=3))
    assert np.any(fused[1][-1] != 0)                         # the input gradient


def test_dropout_is_identity_in_evaluation_and_masks_in_training(nets):
    model = nets["bn_dropout"].compile(dtype="float64", seed=0)
    x, y = batch(model, n=4)
    assert np.array_equal(model.forward(x), model.forward(x))
    plan = model._plan(4)
    model.loss_and_grad(x, y)
    mask = plan.ops["dropout2"].mask.copy()
    assert 0 < mask.mean() < 1
    model.loss_and_grad(x, y)
    assert not np.array_equal(mask, plan.ops["dropout2"].mask)


def test_frozen_parameters_do_not_change():
    net = cnnspec.loads("""
        network F {
            input x: 2x8x8
            conv(3, 3x3, trainable=false) -> batchnorm(trainable=false) -> relu
            conv(4, 3x3) -> relu -> flatten -> dense(5) -> relu -> dense(3) -> softmax
        }""")
    model = net.compile(dtype="float64", seed=0)
    assert model.trainable == {"conv1": False, "batchnorm1": False, "conv2": True, "dense1": True, "dense2": True}
    assert model.set_trainable(["dense1"], False) == ["dense1"]
    before = {k: v.copy() for k, v in model.arrays().items()}
    opt = SGD(model, lr=0.1, momentum=0.9)
    for s in range(3):
        _, grads = model.loss_and_grad(*batch(model, seed=s))
        assert set(grads) == {"conv2", "dense2"}
        model.train_step(*batch(model, seed=s), opt)
    after = model.arrays()
    for key in ("conv1.weight", "conv1.bias", "batchnorm1.weight", "batchnorm1.bias", "dense1.weight", "dense1.bias"):
        assert np.array_equal(before[key], after[key]), key
    for key in ("conv2.weight", "dense2.weight", "batchnorm1.running_mean"):
        assert not np.array_equal(before[key], after[key]), key
    model.set_trainable("dense*", True)
    model.train_step(*batch(model), opt)
    assert not np.array_equal(before["dense1.weight"], model.params["dense1"]["weight"])
    with pytest.raises(CnnSpecError, match=r"network `F`\) 'dens1' matches no layer"):
        model.set_trainable("dens1", False)


def test_plans_are_reused(nets):
    model = nets["lenet5"].compile(dtype="float64")
    x, y = batch(model, n=2)
    opt = SGD(model, lr=0.01)
    model.train_step(x, y, opt)
    plan = model._plan(2)
    buffers = [id(a) for a in plan.act.values()]
    training = plan.training("cross_entropy")
    model.train_step(x, y, opt)
    assert model._plan(2) is plan and plan.training("cross_entropy") is training
    assert buffers == [id(a) for a in plan.act.values()]


def test_evaluate_and_forward_in_chunks(nets):
    model = nets["lenet5"].compile(dtype="float64", seed=2)
    x, y = batch(model, n=7)
    whole = model.forward(x)
    np.testing.assert_allclose(model.forward(x, batch=3), whole, rtol=1e-12)
    loss, out = model.evaluate(x, y, batch=3)
    np.testing.assert_allclose(out, whole, rtol=1e-12)
    assert loss == pytest.approx(-np.mean(np.log(whole[np.arange(7), y])), rel=1e-10)
    mse, _ = model.evaluate(x, y, batch=4, loss="mse")
    assert mse == pytest.approx(np.mean((whole - np.eye(10)[y]) ** 2), rel=1e-10)


def test_activations(nets):
    model = nets["inception"].compile(dtype="float64", seed=0)
    x, _ = batch(model, n=3)
    maps = model.activations(x, ["x", "leaky*", "inception1.*"], batch=2)
    assert list(maps)[:3] == ["x", "leaky_relu1", "inception1.conv1"] and "dense1" not in maps
    np.testing.assert_array_equal(maps["x"], x)
    concat = maps["inception1.concat1"]
    assert concat.shape == (3, 2 + 3 + 2 + 4, 6, 6)
    np.testing.assert_array_equal(concat[:, :2], maps["inception1.relu1"])
    np.testing.assert_array_equal(concat[:, 7:], maps["leaky_relu1"])
    assert list(model.activations(x)) == ["x"] + model.layers
    with pytest.raises(CnnSpecError, match="'incpetion1.conv1' matches no layer"):
        model.activations(x, ["incpetion1.conv1"])


# -- bad input ----------------------------------------------------------------------------------

def test_bad_inputs_are_clear_errors(nets):
    model = nets["lenet5"].compile(dtype="float64")
    x, y = batch(model, n=2)
    with pytest.raises(CnnSpecError, match=r"\(N, 1, 32, 32\).*received \(1, 32, 32\)") as err:
        model.forward(x[0])
    assert "x[None]" in str(err.value)
    with pytest.raises(CnnSpecError, match=r"received \(2, 1, 28, 28\)"):
        model.forward(np.zeros((2, 1, 28, 28)))
    with pytest.raises(CnnSpecError, match="floating-point.*uint8"):
        model.forward(np.zeros((2, 1, 32, 32), np.uint8))
    with pytest.raises(CnnSpecError, match="label 10 is out of range"):
        model.loss_and_grad(x, np.array([1, 10]))
    with pytest.raises(CnnSpecError, match="integer class labels"):
        model.loss_and_grad(x, np.eye(10)[[1, 2]])
    with pytest.raises(CnnSpecError, match="unknown loss `mae`"):
        model.loss_and_grad(x, y, loss="mae")
    with pytest.raises(CnnSpecError, match="another model"):
        model.train_step(x, y, SGD(nets["lenet5"].compile(dtype="float64"), lr=0.1))
    bn = nets["bn_dropout"].compile(dtype="float64")
    with pytest.raises(CnnSpecError, match="`batchnorm2` .* more than one value per channel"):
        bn.loss_and_grad(*batch(bn, n=1))
    assert bn.forward(batch(bn, n=1)[0]).shape == (1, 3)          # evaluation is fine


# -- weight files -------------------------------------------------------------------------------

def test_save_load_round_trip(nets, tmp_path):
    a = nets["residual"].compile(dtype="float64", seed=1)
    a.train_step(*batch(a), SGD(a, lr=0.1))
    a.save(tmp_path / "w.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]
    with np.load(tmp_path / "w.npz") as data:
        assert "basic1.conv1.weight" in data.files and "basic1.batchnorm1.running_var" in data.files
    b = nets["residual"].compile(dtype="float64", seed=2)
    b.load(tmp_path / "w.npz")
    x, _ = batch(a)
    np.testing.assert_array_equal(b.forward(x), a.forward(x))
    # across dtypes: float64 weights into a float32 model
    c = nets["lenet5"].compile(dtype="float64", seed=1)
    c.save(tmp_path / "lenet.npz")
    d = nets["lenet5"].compile(dtype="float32", seed=2)
    d.load(tmp_path / "lenet.npz")
    x, _ = batch(c)
    np.testing.assert_allclose(d.forward(x.astype(np.float32)), c.forward(x), rtol=1e-4)


def test_load_errors(nets, tmp_path):
    model = nets["lenet5"].compile(dtype="float64")
    other = cnnspec.loads(LENET5.replace("dense(84)", "dense(80)").replace("dense(10) -> softmax",
                                                                           "dense(10) -> softmax\n dense(3)"))
    other.compile(dtype="float64", seed=5).save(tmp_path / "other.npz")
    with pytest.raises(CnnSpecError) as err:
        model.load(tmp_path / "other.npz")
    text = str(err.value)
    assert str(tmp_path / "other.npz") in text
    assert "unexpected: dense4.weight (10x3)" in text
    assert "shape mismatch: dense2.weight is 120x80 in the file, 120x84 in the network" in text
    assert "shape mismatch: dense3.weight is 80x10 in the file, 84x10 in the network" in text

    np.savez(tmp_path / "partial.npz", **{"conv1.weight": model.params["conv1"]["weight"]})
    with pytest.raises(CnnSpecError, match=r"missing: conv1\.bias \(6\)"):
        model.load(tmp_path / "partial.npz")

    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(CnnSpecError, match="not a weights file: an .npz file is a zip archive") as err:
        model.load(tmp_path / "junk.npz")
    assert str(tmp_path / "junk.npz") in str(err.value)
    with open(tmp_path / "other.npz", "rb") as whole:
        (tmp_path / "truncated.npz").write_bytes(whole.read()[:200])
    with pytest.raises(CnnSpecError, match="cannot read this weights file"):
        model.load(tmp_path / "truncated.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(CnnSpecError, match="single array"):
        model.load(tmp_path / "one.npy")
    with pytest.raises(CnnSpecError, match="no such weights file"):
        model.load(tmp_path / "absent.npz")

    before = model.params["conv1"]["weight"].copy()
    report = model.load(tmp_path / "other.npz", strict=False)
    assert "conv1.weight" in report.loaded and "dense1.weight" in report.loaded
    assert ("dense4.weight", "not in the network") in report.skipped
    assert any(k == "dense2.weight" and "120x80" in why for k, why in report.skipped)
    assert report.new == []
    assert not np.array_equal(before, model.params["conv1"]["weight"])
    report = model.load(tmp_path / "partial.npz", strict=False)
    assert report.loaded == ["conv1.weight"] and "conv1.bias" in report.new


def test_param_assignment_copies_into_the_model(nets):
    model = nets["text"].compile(dtype="float64")
    flat_before = model._flat_params
    model.params["dense1"]["weight"] = np.zeros((8, 2))
    assert model._flat_params is flat_before and not model.params["dense1"]["weight"].any()
    with pytest.raises(ValueError, match="shape"):
        model.params["dense1"]["weight"] = np.zeros((2, 8))


# -- the layer-API backend ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_funcs():
    api = pytest.importorskip("cnnspec.api")
    from cnnspec.engine.backend import API
    return {name: getattr(api, name) for name in API}


@pytest.mark.parametrize("name", ["lenet5", "bn_dropout", "text"])
def test_backend_of_reference_functions_matches_builtin(nets, api_funcs, name):
    calls = {}

    def counted(fname, f):
        def call(*args):
            calls[fname] = calls.get(fname, 0) + 1
            return f(*args)
        return call

    funcs = {k: counted(k, f) for k, f in api_funcs.items()}
    a = nets[name].compile(dtype="float64", seed=3)
    b = nets[name].compile(dtype="float64", seed=3, backend=funcs)
    opt_a, opt_b = SGD(a, lr=0.1, momentum=0.9), SGD(b, lr=0.1, momentum=0.9)
    for s in range(2):
        x, y = batch(a, n=4, seed=s)
        la, oa = a.train_step(x, y, opt_a)
        lb, ob = b.train_step(x, y, opt_b)
        assert la == pytest.approx(lb, rel=1e-12)
        np.testing.assert_allclose(oa, ob, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a._flat_params, b._flat_params, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(a.forward(x), b.forward(x), rtol=1e-10)
    assert calls.get("softmax_cross_entropy") and calls.get("dense_backward")


def test_backend_errors(nets):
    with pytest.raises(CnnSpecError, match="`conv2d_forwad` is not a layer-API function"):
        nets["lenet5"].compile(backend={"conv2d_forwad": print})
    model = nets["lenet5"].compile(dtype="float64", backend={"relu_forward": lambda x: x[:, :1]})
    with pytest.raises(CnnSpecError, match=r"`relu_forward` returned an array of shape \(2, 1, 28, 28\)"):
        model.forward(batch(model, n=2)[0])
