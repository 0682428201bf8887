"""Model.gradient: evaluation-mode gradients of a layer's output with respect to the input and to
intermediate layers, against central differences and PyTorch's autograd (through TorchNet, which
runs the graph with torch.nn.functional). Float64 throughout."""
import numpy as np
import pytest

import cnnspec
from cnnspec import CnnSpecError
import test_engine
from conftest import numeric_grad

RESIDUAL = test_engine.RESIDUAL.replace("add(b, r, s) -> maxpool(2)", "add(b, r, s) -> dropout(0.3) -> maxpool(2)")
assert "dropout" in RESIDUAL

INCEPTION = """
network Inception {
    input x: 3x6x6
    stem = conv(4, 3x3, pad=1) -> tanh
    b1 = stem -> conv(2, 1x1) -> sigmoid
    b2 = stem -> maxpool(3x3, stride=1, pad=1) -> conv(3, 3x3, pad=1)
    concat(b1, b2, stem) -> avgpool(2) -> flatten -> dense(6) -> batchnorm -> dropout(0.5) -> dense(3) -> softmax
}
"""

TEXT = """
network Text {
    input words: 5x12
    conv(4, 3, pad=same) -> leaky_relu(0.1) -> maxpool(2) -> conv(3, 3) -> globalmaxpool -> flatten -> dense(2)
}
"""


@pytest.fixture(scope="module")
def models():
    out = {}
    rng = np.random.default_rng(5)
    for name, text in (("residual", RESIDUAL), ("inception", INCEPTION), ("text", TEXT)):
        model = cnnspec.loads(text).compile(dtype="float64", seed=3)
        for state in model.state.values():           # running statistics that are not 0 and 1
            state["running_mean"][...] = rng.standard_normal(state["running_mean"].shape)
            state["running_var"][...] = rng.random(state["running_var"].shape) + 0.5
        out[name] = model
    return out


def inputs(model, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *model.input_shape))


def test_scores_are_the_logits_before_a_final_softmax(models):
    assert models["residual"].scores_name == "dense1"
    assert models["text"].scores_name == "dense1" == models["text"].output_name


def test_scores_are_the_logit_before_a_final_sigmoid():
    """A binary classifier's score is its logit: the gradient of dense(1) -> sigmoid's score with
    respect to the input is the dense weight (not sigmoid' times it)."""
    model = cnnspec.loads("network B {\n input x: 4\n dense(1) -> sigmoid\n}").compile(dtype="float64")
    assert model.scores_name == "dense1"
    x = np.random.default_rng(0).standard_normal((3, 4))
    grads = model.gradient(x)
    assert np.allclose(grads["x"], np.broadcast_to(model.params["dense1"]["weight"][:, 0], (3, 4)), rtol=1e-12)


@pytest.mark.parametrize("name, wrt", [("residual", ["input", "s", "basic1.batchnorm1", "dropout1"]),
                                       ("inception", ["input", "tanh1", "conv2", "batchnorm1"]),
                                       ("text", ["input", "conv1", "maxpool1"])])
def test_gradient_matches_central_differences(models, name, wrt):
    """d score / d input against central differences of the score (one class per sample), while
    intermediate tensors are asked for too (PyTorch checks those below)."""
    model = models[name]
    x = inputs(model, n=2)
    classes = np.array([1, 0])
    g = model.gradient(x, of=classes, wrt=wrt)
    assert list(g) == [model.input_name if w == "input" else w for w in wrt]

    def score():
        return model.activations(x, [model.scores_name])[model.scores_name][np.arange(2), classes].sum()

    numeric = numeric_grad(score, x)
    analytic = g[model.input_name]
    assert np.abs(analytic - numeric).max() < 1e-7 * max(1.0, np.abs(numeric).max())
    assert np.abs(analytic).max() > 1e-3                  # a real signal, not zeros on both sides


@pytest.fixture(scope="module")
def torch_ref():
    pytest.importorskip("torch")
    from cnnspec.engine import torch_ref
    return torch_ref


def torch_gradients(torch_ref, model, x, layer, seed, wrt):
    """d sum(seed * layer) / d each of wrt, by PyTorch's autograd in evaluation mode."""
    import torch

    tnet = torch_ref.TorchNet(model)
    values = {model.input_name: torch.tensor(x, requires_grad=True)}
    for name, step in tnet.steps:
        values[name] = step([values[i] for i in model.graph.nodes[name]["inputs"]], False)
        values[name].retain_grad()
    (values[layer] * torch.as_tensor(seed)).sum().backward()
    return {name: values[name].grad.numpy() for name in wrt}, {name: v.detach().numpy() for name, v in values.items()}


@pytest.mark.parametrize("name, layer, wrt", [
    ("residual", None, ["input", "s", "relu1", "basic1.conv1", "basic1.batchnorm1", "add1", "dropout1"]),
    ("residual", "basic1.relu2", ["input", "relu1", "basic1.relu2"]),
    ("inception", None, ["input", "tanh1", "conv3", "maxpool1", "concat1", "batchnorm1"]),
    ("inception", "softmax1", ["input", "dense1"]),
    ("text", "conv2", ["input", "conv1", "leaky_relu1"]),
])
def test_gradient_matches_pytorch(models, torch_ref, name, layer, wrt):
    model = models[name]
    x = inputs(model, n=3, seed=1)
    target = layer or model.scores_name
    shape = model.graph.nodes[target]["output_shape"]
    seed = np.random.default_rng(2).standard_normal((3, *shape))
    g = model.gradient(x, of=seed, wrt=wrt, layer=layer)
    names = [model.input_name if w == "input" else w for w in wrt]
    expected, values = torch_gradients(torch_ref, model, x, target, seed, names)
    for n in names:
        np.testing.assert_allclose(g[n], expected[n], rtol=1e-9, atol=1e-12, err_msg=n)
        np.testing.assert_allclose(g.activations[n], values[n], rtol=1e-9, atol=1e-12, err_msg=n)
    np.testing.assert_allclose(g.activations[target], values[target], rtol=1e-9, atol=1e-12)


def test_unit_and_class_seeds(models, torch_ref):
    model = models["residual"]
    x = inputs(model, n=2, seed=4)
    g = model.gradient(x, of=(2, 3, 5), wrt="input", layer="basic1.conv2")
    seed = np.zeros((2, 4, 8, 8))
    seed[:, 2, 3, 5] = 1
    expected, _ = torch_gradients(torch_ref, model, x, "basic1.conv2", seed, ["x"])
    np.testing.assert_allclose(g["x"], expected["x"], rtol=1e-9, atol=1e-12)
    one = model.gradient(x, of=2)["x"]                    # class 2 for every sample
    seed = np.zeros((2, 3))
    seed[:, 2] = 1
    np.testing.assert_allclose(one, model.gradient(x, of=seed)["x"], rtol=0, atol=0)
    np.testing.assert_allclose(model.gradient(x)["x"], model.gradient(x, of=np.ones((2, 3)))["x"], rtol=0, atol=0)


def test_buffers_are_made_once_and_results_are_copies(models):
    model = models["residual"]
    x = inputs(model, n=2)
    first = model.gradient(x, of=0, wrt=["input", "s"])
    plan = model._plan(2)
    backprop, count = plan._backprop[("dense1", ("x", "s"))], len(plan._backprop)
    second = model.gradient(x, of=1, wrt=["input", "s"])
    assert plan._backprop[("dense1", ("x", "s"))] is backprop and len(plan._backprop) == count
    assert not np.allclose(first["x"], second["x"])        # the first result was not overwritten
    again = model.gradient(x, of=0, wrt=["input", "s"])
    np.testing.assert_array_equal(first["x"], again["x"])
    np.testing.assert_array_equal(first["s"], again["s"])


def test_batches_larger_than_a_chunk(models):
    model = models["text"]
    x = inputs(model, n=7, seed=3)
    whole = model.gradient(x, of=np.arange(7) % 2, wrt="input")["words"]
    chunked = model.gradient(x, of=np.arange(7) % 2, wrt="input", batch=3)["words"]
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=0)


def test_training_state_is_left_alone(models):
    """Evaluation mode: running statistics unchanged, dropout the identity (same gradient twice)."""
    model = models["inception"]
    before = {k: v.copy() for k, v in model.state["batchnorm1"].items()}
    x = inputs(model, n=2)
    a = model.gradient(x, of=1)["x"]
    b = model.gradient(x, of=1)["x"]
    np.testing.assert_array_equal(a, b)
    for k, v in before.items():
        np.testing.assert_array_equal(model.state["batchnorm1"][k], v)


@pytest.mark.parametrize("kwargs, message", [
    (dict(wrt="nope"), "no layer named `nope`"),
    (dict(wrt="dense1", layer="s"), "`s` does not depend on `dense1`"),
    (dict(of=(1, 2)), r"unit index \(1, 2\) is not a valid index"),
    (dict(of=7), r"unit index \(7,\) is not a valid index"),
    (dict(of=np.zeros((2, 4))), "expected a unit index, 2 class indices or an array of shape"),
    (dict(of=np.array([0, 1, 2])), "3 class indices for 2 samples"),
    (dict(of=np.array([0, 5])), r"class indices must lie in \[0, 3\)"),
    (dict(wrt=[]), "names no tensor"),
    (dict(wrt=3), "takes layer names"),
])
def test_gradient_errors(models, kwargs, message):
    model = models["residual"]
    with pytest.raises(CnnSpecError, match=message):
        model.gradient(inputs(model, n=2), **kwargs)
