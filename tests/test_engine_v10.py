"""The engine on the layers of dsl.md §10: whole networks (float64) whose analytic gradients --
of the training loss with respect to every parameter, and of the evaluation-mode scores with
respect to the inputs -- agree with central differences; several inputs; sample's KL in the loss;
droppath in training (a fixed mask) and in evaluation; the new losses.

Each network puts the new layers where a mistake would show: squeeze-and-excitation gates (mul
of a Cx1x1 and of a flat C gate), an inverted residual (relu6, depthwise), a U-Net-like net
(conv_transpose, concat, nearest and bilinear upsampling, a class per pixel), a VAE (sample,
reshape, bce fused with sigmoid), adaptive pools of uneven windows, ShuffleNet's unit (channels,
shuffle), a product of four operands using one tensor twice, and 1-D versions.
"""
import numpy as np
import pytest

import cnnspec
from cnnspec import CnnSpecError
from cnnspec.engine.bench import INVERTED                  # dsl.md §10.2: MobileNetV2's block
from cnnspec.engine.ops import OPS
from cnnspec.layers import LAYERS
from conftest import numeric_grad
from test_engine import check_gradients

NETWORKS = {
    "se": """
block se(squeeze) {                              # dsl.md §10.2: MobileNetV3's gate
    gate = in -> globalavgpool -> conv(squeeze, 1x1) -> relu -> conv(in.channels, 1x1) -> hardsigmoid
    mul(in, gate)
}
network SE {
    input x: 3x6x6
    conv(6, 3x3, pad=1) -> hardswish -> se(3) -> silu
    s = conv(6, 1x1)
    g = s -> globalavgpool -> flatten -> dense(6) -> sigmoid        # a flat gate, C
    mul(g, s) -> gelu -> flatten -> dense(3) -> softmax
}
""",
    "inverted": INVERTED + """
network Inverted {
    input x: 3x8x8
    conv(8, 3x3, pad=1, bias=false) -> batchnorm -> relu6
    inverted(8, expand=3) -> inverted(12, expand=2, stride=2)
    adaptiveavgpool(1) -> flatten -> dense(3) -> softmax
}
""",
    "unet": """
network UNetLike {
    input x: 2x8x8
    e1 = conv(4, 3x3, pad=1) -> relu
    e2 = maxpool(2) -> conv(6, 3x3, pad=1) -> tanh
    u = conv_transpose(4, 2x2, stride=2)
    d = concat(e1, u) -> conv(4, 3x3, pad=1) -> relu
    v = e2 -> upsample(2, mode=bilinear) -> conv(3, 1x1)
    w = e2 -> conv_transpose(2, 3x3, stride=2, pad=1, output_pad=1, groups=2) -> softplus
    n = e2 -> upsample(2)
    concat(d, v, w, n) -> conv(3, 1x1) -> softmax                    # a class per pixel
}
""",
    "vae": """
network VAE {
    input x: 1x6x6
    h = conv(4, 3x3, stride=2, pad=1) -> elu -> flatten -> dense(8) -> tanh
    mu = h -> dense(3)
    logvar = h -> dense(3)
    z = sample(mu, logvar, beta=0.5)
    dense(4*3*3) -> relu -> reshape(4x3x3)
    conv_transpose(1, 3x3, stride=2, pad=1, output_pad=1, dilation=1) -> sigmoid
}
""",
    "adaptive": """
network Adaptive {
    input x: 3x7x9
    conv(4, 3x3, pad=1) -> tanh
    a = adaptiveavgpool(3x4)
    m = adaptivemaxpool(3x4)
    c = concat(a, m) -> adaptivemaxpool(5x2)
    b = m -> conv_transpose(4, 3x2, stride=2x1, pad=(1, 0, 1, 1), dilation=1x2) -> adaptiveavgpool(5x2)
    concat(c, b) -> flatten -> dense(3) -> softmax
}
""",
    "shuffle": """
block unit(c, stride=1) {               # ShuffleNetV2's unit (specs/shufflenet_v2.cnn)
    half = c // 2
    if stride == 1 {
        left = in -> channels(0, in.channels // 2)
        right = in -> channels(in.channels // 2, in.channels)
    }
    if stride != 1 {
        left = in -> conv(in.channels, 3x3, stride=stride, pad=1, groups=in.channels, bias=false)
               -> batchnorm -> conv(half, 1x1, bias=false) -> batchnorm -> relu
        right = in
    }
    branch = right -> conv(half, 1x1, bias=false) -> batchnorm -> relu
             -> conv(half, 3x3, stride=stride, pad=1, groups=half, bias=false) -> batchnorm
             -> conv(half, 1x1, bias=false) -> batchnorm -> relu
    concat(left, branch) -> shuffle(2)
}
network Shuffle {
    input x: 8x6x6
    unit(8) -> unit(12, stride=2) -> shuffle(3) -> globalavgpool -> flatten -> dense(3) -> softmax
}
""",
    "mul": """
network Mul {
    input x: 4x5x5
    a = conv(4, 3x3, pad=1) -> tanh
    b = a -> conv(4, 1x1) -> sigmoid
    g = a -> globalavgpool -> conv(4, 1x1) -> sigmoid
    mul(a, b, g, a) -> flatten -> dense(3) -> softmax
}
""",
    "sequence": """
network Sequence {
    input x: 3x10
    conv(4, 3, pad=1) -> softplus
    conv_transpose(4, 3, stride=2, pad=1, output_pad=1) -> elu(0.7)          # 4x20
    upsample(2, mode=linear) -> gelu -> adaptivemaxpool(7)
    s = relu6
    t = s -> conv(4, 1) -> hardsigmoid
    u = s -> upsample(2) -> adaptiveavgpool(5) -> channels(1, 3) -> silu
    g = s -> globalmaxpool -> flatten
    v = mul(s, t)
    w = mul(v, g) -> flatten
    uf = u -> flatten
    concat(w, uf) -> dense(6) -> reshape(2x3) -> flatten -> dense(3) -> softmax
}
""",
}


@pytest.fixture(scope="module")
def nets():
    return {name: cnnspec.loads(text) for name, text in NETWORKS.items()}


def inputs_for(model, n, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((n, *shape)) for name, shape in model.input_shapes.items()}


def targets_for(name, model, xs, seed):
    rng = np.random.default_rng(seed + 1)
    n = len(next(iter(xs.values())))
    if name == "unet":
        return rng.integers(0, 3, (n, 8, 8)), "cross_entropy"            # a class per pixel
    if name == "vae":
        return rng.random((n, 1, 6, 6)), "bce"
    return rng.integers(0, model.output_shape[0], n), "cross_entropy"


def test_the_engine_runs_every_layer_kind():
    """No kind of the catalogue is left without an op (compile() never says it cannot run one)."""
    assert set(OPS) == set(LAYERS)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_parameter_gradients_of_the_training_loss(nets, name):
    model = nets[name].compile(dtype="float64", seed=4)
    xs = inputs_for(model, 3, seed=0)
    if name == "vae":
        xs = {"x": np.random.default_rng(0).random((3, 1, 6, 6))}          # images in [0, 1]
    y, loss = targets_for(name, model, xs, seed=0)
    x = xs if len(xs) > 1 else next(iter(xs.values()))
    check_gradients(model, x, y, loss=loss)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_input_gradients_in_evaluation(nets, name):
    """Model.gradient of the scores' sum (weighted by a random seed) with respect to the input
    and to an inner tensor, against central differences of the evaluation-mode forward."""
    model = nets[name].compile(dtype="float64", seed=5)
    for state in model.state.values():
        state["running_var"][...] = np.linspace(0.5, 1.5, state["running_var"].size)
    x = inputs_for(model, 2, seed=1)["x"]
    layer = model.scores_name
    weights = np.random.default_rng(2).standard_normal((2, *model.graph.nodes[layer]["output_shape"]))
    g = model.gradient(x, of=weights, wrt="input")

    def score():
        return float((model.activations(x, [layer])[layer] * weights).sum())

    numeric = numeric_grad(score, x)
    assert np.abs(g["x"] - numeric).max() < 1e-7 * max(1.0, np.abs(numeric).max())
    assert np.abs(numeric).max() > 1e-3


def test_the_vae_adds_beta_times_the_kl_to_the_loss(nets):
    """loss = bce(output, target) + beta * mean over the batch of the KL summed over the code;
    loss_parts has both; the evaluation output decodes mu, the training one mu + exp(logvar/2)*eps
    with eps drawn from the model's generator."""
    model = nets["vae"].compile(dtype="float64", seed=4)
    x = np.random.default_rng(0).random((4, 1, 6, 6))
    acts = model.activations(x, ["dense2", "dense3", "z", "sigmoid1"])      # mu, logvar, z, output
    mu, logvar = acts["dense2"], acts["dense3"]
    np.testing.assert_array_equal(acts["z"], mu)                       # evaluation: z = mu
    kl = np.mean(np.sum(-0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)), axis=1))
    p = acts["sigmoid1"]
    bce = -np.mean(x * np.log(p) + (1 - x) * np.log(1 - p))
    value, _ = model.evaluate(x, x, loss="bce")
    assert value == pytest.approx(bce + 0.5 * kl, rel=1e-12)
    assert model.loss_parts == pytest.approx({"output": bce, "z": 0.5 * kl}, rel=1e-12)

    model.rng = np.random.default_rng(9)
    loss, _ = model.loss_and_grad(x, x, loss="bce")
    eps = np.random.default_rng(9).standard_normal(mu.shape)           # the same draw
    z = model._plan(4).act["z"]
    np.testing.assert_allclose(z, mu + np.exp(logvar / 2) * eps, rtol=1e-13)
    assert model.loss_parts["z"] == pytest.approx(0.5 * kl, rel=1e-12)
    assert loss == pytest.approx(model.loss_parts["output"] + model.loss_parts["z"], rel=1e-15)


def test_the_kl_gradient_reaches_mu_and_logvar_alone():
    """A frozen decoder and beta = 2: the gradients of mu's and logvar's layers still hold the KL's
    part, d(beta * KL)/dmu = beta * mu / N, with z's part."""
    net = cnnspec.loads("network K { input x: 4\n mu = dense(3)\n lv = x -> dense(3)\n"
                        " sample(mu, lv, beta=2.0) -> dense(2, trainable=false) }")
    model = net.compile(dtype="float64", seed=0)
    x = np.random.default_rng(1).standard_normal((5, 4))
    target = np.zeros((5, 2))
    model.params["dense3"]["weight"] = np.zeros((3, 2))              # z does not reach the loss
    model.params["dense3"]["bias"] = np.zeros(2)
    assert model.trainable == {"mu": True, "dense2": True, "dense3": False}
    _, grads = model.loss_and_grad(x, target, loss="mse")
    mu = model.activations(x, ["mu"])["mu"]
    np.testing.assert_allclose(grads["mu"]["bias"], 2.0 * mu.sum(axis=0) / 5, rtol=1e-12)
    lv = model.activations(x, ["dense2"])["dense2"]                      # lv = x -> dense(3)
    np.testing.assert_allclose(grads["dense2"]["bias"], 2.0 * (np.exp(lv) - 1).sum(axis=0) / 10, rtol=1e-12)
    check_gradients(model, x, target, loss="mse")


def test_droppath_in_training_and_in_evaluation():
    text = """network D {
        input x: 4x5x5
        s = conv(4, 3x3, pad=1) -> relu
        b = s -> conv(4, 3x3, pad=1) -> droppath(0.4)
        add(s, b) -> globalavgpool -> flatten -> dense(3) -> softmax
    }"""
    model = cnnspec.loads(text).compile(dtype="float64", seed=2)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((8, 4, 5, 5)), rng.integers(0, 3, 8)
    # evaluation: the identity
    acts = model.activations(x, ["conv2", "droppath1"])
    np.testing.assert_array_equal(acts["droppath1"], acts["conv2"])
    # training: whole samples kept (scaled by 1/(1 - p)) or zeroed, by the generator's uniforms
    model.rng = np.random.default_rng(7)
    model.loss_and_grad(x, y)
    keep = np.random.default_rng(7).random(8) >= 0.4
    assert 0 < keep.sum() < 8
    plan = model._plan(8)
    np.testing.assert_allclose(plan.act["droppath1"], plan.act["conv2"] * (keep / 0.6)[:, None, None, None],
                               rtol=1e-15)
    check_gradients(model, x, y)                     # the mask fixed by reseeding before each loss


def test_several_inputs_take_a_dict():
    text = """network Cond {
        input z: 5
        input label: 3
        concat(z, label) -> dense(6) -> batchnorm -> leaky_relu(0.2) -> dense(2*2*2) -> reshape(2x2x2)
        conv_transpose(1, 2x2, stride=2) -> tanh
    }"""
    model = cnnspec.loads(text).compile(dtype="float64", seed=1)
    assert model.input_names == ["z", "label"] and model.input_shapes == {"z": (5,), "label": (3,)}
    rng = np.random.default_rng(0)
    xs = {"label": np.eye(3)[[0, 2, 1, 1]], "z": rng.standard_normal((4, 5))}     # any order
    target = rng.random((4, 1, 4, 4))
    check_gradients(model, xs, target, loss="mse")
    out = model.forward(xs)
    np.testing.assert_allclose(model.forward(xs, batch=3), out, rtol=1e-13)       # in chunks
    # the concat of flat vectors, and the gradient with respect to both inputs
    acts = model.activations(xs, ["concat1"])
    np.testing.assert_array_equal(acts["concat1"], np.concatenate([xs["z"], xs["label"]], axis=1))
    g = model.gradient(xs, of=np.ones((4, 1, 4, 4)), layer="tanh1", wrt=["z", "label"])
    for name in ("z", "label"):
        numeric = numeric_grad(lambda: float(model.forward(xs).sum()), xs[name])
        np.testing.assert_allclose(g[name], numeric, rtol=1e-7, atol=1e-9)
    loss, _ = model.evaluate(xs, target, loss="l1")
    assert loss == pytest.approx(np.abs(out - target).mean(), rel=1e-12)


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 5)), r"`Cond` has 2 inputs \(z \(5\), label \(3\)\); pass a dict of arrays, "
                       r"\{\"z\": \.\.\., \"label\": \.\.\.\}"),
    ({"z": np.zeros((2, 5))}, r"input `label` of `Cond` is missing; its inputs are z \(5\), label \(3\)"),
    ({"z": np.zeros((2, 5)), "label": np.zeros((2, 3)), "labels": np.zeros((2, 3))},
     r"`Cond` has no input named `labels`"),
    ({"z": np.zeros((2, 5)), "label": np.zeros((2, 4))},
     r"input `label` of `Cond` takes input of shape \(N, 3\), N >= 1; received \(2, 4\)"),
    ({"z": np.zeros((2, 5)), "label": np.zeros((3, 3))},
     r"the inputs of `Cond` have different batch sizes: z 2, label 3"),
    ({"z": np.zeros((2, 5)), "label": np.zeros((2, 3), np.int64)},
     r"input `label` of `Cond` takes floating-point input"),
])
def test_wrong_inputs_are_named(x, message):
    model = cnnspec.loads("network Cond {\n input z: 5\n input label: 3\n concat(z, label) -> dense(2)\n}",
                          file="cond.cnn").compile()
    with pytest.raises(CnnSpecError, match=message) as info:
        model.forward(x)
    if "labels" in message:
        assert info.value.hint == "did you mean `label`?"
    with pytest.raises(CnnSpecError, match=message):
        model.loss_and_grad(x, np.zeros(2, np.int64))


def test_one_input_still_takes_an_array_or_a_dict():
    model = cnnspec.loads(NETWORKS["se"]).compile(dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    np.testing.assert_array_equal(model.forward(x), model.forward({"x": x}))


def test_several_networks_in_one_file_compile_the_chosen_one(specs_dir):
    g = cnnspec.load(specs_dir / "dcgan64.cnn", network="Generator").compile(seed=0)
    d = cnnspec.load(specs_dir / "dcgan64.cnn", network="Discriminator").compile(seed=0)
    z = np.random.default_rng(0).standard_normal((2, 100, 1, 1)).astype(np.float32)
    images = g.forward(z)
    assert images.shape == (2, 3, 64, 64) and np.abs(images).max() <= 1
    scores = d.forward(images)
    assert scores.shape == (2, 1) and ((scores > 0) & (scores < 1)).all()
    # the discriminator's bce on its flattened sigmoid: fused with the sigmoid, labels (N,)
    loss, _ = d.loss_and_grad(images, np.array([0.0, 1.0]), loss="bce")
    p = d._plan(2).act["sigmoid1"].reshape(-1).astype(np.float64)
    assert loss == pytest.approx(-np.mean([np.log(1 - p[0]), np.log(p[1])]), rel=1e-5)


def test_float32_and_float64_agree_on_the_new_layers(nets):
    for name in ("se", "unet", "sequence"):
        x = inputs_for(nets[name].compile(), 2, seed=3)["x"]
        out64 = nets[name].compile(dtype="float64", seed=1).forward(x)
        out32 = nets[name].compile(dtype="float32", seed=1).forward(x.astype(np.float32))
        np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("loss, y, message", [
    ("bce", np.full((2, 3, 8, 8), 1.5), r"bce takes targets in \[0, 1\] \(probabilities\); received 1.5 at "
                                         r"index \(0, 0, 0, 0\)"),
    ("cross_entropy", np.zeros(2, np.int64), r"one per position of the 3x8x8 output, of shape \(2, 8, 8\)"),
    ("l1", np.zeros((2, 3)), r"l1 takes targets of the output's shape \(2, 3, 8, 8\)"),
])
def test_loss_errors(nets, loss, y, message):
    model = nets["unet"].compile(dtype="float64")
    x = np.zeros((2, 2, 8, 8))
    with pytest.raises(CnnSpecError, match=message):
        model.loss_and_grad(x, y, loss=loss)


def test_bce_needs_probabilities():
    model = cnnspec.loads("network L { input x: 4\n dense(3) -> tanh }").compile()
    with pytest.raises(CnnSpecError, match="bce takes probabilities.*`tanh1`, a `tanh` layer") as info:
        model.loss_and_grad(np.zeros((2, 4), np.float32), np.zeros((2, 3)), loss="bce")
    assert "sigmoid" in info.value.hint


def test_per_pixel_cross_entropy_by_hand():
    """The mean over every pixel of every sample of -log softmax over the channels."""
    model = cnnspec.loads("network P { input x: 2x3x4\n conv(3, 1x1) -> softmax }").compile(dtype="float64")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 2, 3, 4)), rng.integers(0, 3, (2, 3, 4))
    logits = model.activations(x, ["conv1"])["conv1"]
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -np.mean(np.take_along_axis(logp, y[:, None], axis=1))
    loss, _ = model.loss_and_grad(x, y)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert model.evaluate(x, y)[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name, loss", [("vae", "bce"), ("unet", "cross_entropy"), ("sequence", "cross_entropy")])
def test_the_layer_api_backend_runs_the_new_layers(nets, name, loss):
    """The reference's layer-API functions (cnnspec.api) in place of the built-in kernels: the
    same training steps (the transposed convolutions, upsampling, the VAE's sample and bce through
    the API; 1-D ones as images of height 1)."""
    api = pytest.importorskip("cnnspec.api")
    from cnnspec.engine import SGD
    from cnnspec.engine.backend import API

    calls = set()

    def counted(fname):
        def call(*args):
            calls.add(fname)
            return getattr(api, fname)(*args)
        return call

    a = nets[name].compile(dtype="float64", seed=3)
    b = nets[name].compile(dtype="float64", seed=3, backend={f: counted(f) for f in API})
    opt_a, opt_b = SGD(a, lr=0.1, momentum=0.9), SGD(b, lr=0.1, momentum=0.9)
    for step in range(2):
        xs = inputs_for(a, 3, seed=step)
        if name == "vae":
            xs = {"x": np.random.default_rng(step).random((3, 1, 6, 6))}
        y, _ = targets_for(name, a, xs, seed=step)
        x = xs["x"]
        for model in (a, b):
            model.rng = np.random.default_rng(step)
        la, oa = a.train_step(x, y, opt_a, loss=loss)
        lb, ob = b.train_step(x, y, opt_b, loss=loss)
        assert la == pytest.approx(lb, rel=1e-12)
        np.testing.assert_allclose(oa, ob, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a._flat_params, b._flat_params, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(b.forward(x), a.forward(x), rtol=1e-10, atol=1e-14)
    expected = {"vae": {"conv_transpose2d_forward", "conv_transpose2d_backward", "vae_sample_forward",
                        "vae_sample_backward", "sigmoid_bce"},
                "unet": {"upsample2d_forward", "upsample2d_backward"},
                "sequence": {"conv_transpose2d_forward", "conv_transpose2d_backward", "upsample2d_forward",
                             "upsample2d_backward"}}[name]
    assert expected <= calls, expected - calls
