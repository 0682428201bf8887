"""Training by samples (``plan.BySamples``): on several threads, a network without batch
statistics runs its batch in shares of samples, one per thread, each through every layer; the
parameter gradients are the shares' sums added in order.  Checked against the same steps run
layer by layer on one thread (float64: equal to rounding), with uneven shares (batch 7 on 3
threads), frozen layers, input gradients, a given output gradient (forward_train/backward), the
fusions (relu -> maxpool, add -> relu) and multi-input layers; and that networks with batchnorm
or dropout, and small batches, do not run so.
"""
import numpy as np
import pytest

import cnnspec
from cnnspec.engine import SGD, plan as plan_module
from cnnspec.kernels import _jit

NET = """
network Shares {
    input image: 3x12x11
    input extra: 5
    p = image -> conv(4, 3x3, pad=1) -> relu -> maxpool(2)
    a = p -> conv(6, 3x3, stride=2, pad=1) -> relu
    b = p -> conv(6, 1x1, stride=2) -> relu
    s = add(a, b) -> relu -> flatten
    c = image -> avgpool(2) -> conv(3, 3x3, pad=1) -> tanh
    g = concat(p, c) -> globalavgpool -> flatten
    d = extra -> dense(7) -> sigmoid
    concat(s, g, d) -> dense(12) -> leaky_relu(0.1) -> dense(5) -> softmax
}
"""


def _model(text=NET, dtype="float64"):
    return cnnspec.loads(text).compile(dtype=dtype, seed=3)


def _data(model, n, seed=0):
    rng = np.random.default_rng(seed)
    xs = {name: rng.standard_normal((n, *shape)) for name, shape in model.input_shapes.items()}
    return xs, rng.integers(0, model.output_shape[0], n)


@pytest.fixture
def shares(monkeypatch):
    """``run(fn, threads)``: fn() with training by samples on ``threads`` threads, every batch
    shared (SHARE_MACS 1); ``layers(fn)``: fn() on one thread, layer by layer."""
    monkeypatch.setattr(plan_module, "SHARE_MACS", 1)

    def run(fn, threads):
        monkeypatch.setenv("CNNSPEC_THREADS", str(threads))
        return fn()

    def layers(fn):
        monkeypatch.setenv("CNNSPEC_THREADS", "1")
        return fn()
    run.layers = layers
    return run


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("n, threads", [(7, 3), (2, 2), (16, 2)])
def test_sgd_steps_by_samples_equal_layer_by_layer(shares, n, threads):
    def train():
        model = _model()
        xs, y = _data(model, n)
        opt = SGD(model, lr=0.1, momentum=0.9)
        values = [model.train_step(xs, y, opt) for _ in range(3)]
        training = model._plan(n).training("cross_entropy")
        return model, values, training
    serial, serial_values, serial_training = shares.layers(train)
    model, values, training = shares(train, threads)
    assert serial_training.shares is None
    assert training.shares is not None and training.shares.count == min(threads, n)
    for (loss, out), (loss1, out1) in zip(values, serial_values):
        assert loss == pytest.approx(loss1, rel=1e-12)
        _close(out, out1)
    _close(model._flat_params, serial._flat_params)


def test_frozen_layers_input_gradients_and_a_given_output_gradient(shares):
    def run():
        model = _model()
        model.set_trainable(["conv1", "dense2"], False)
        xs, y = _data(model, 9, seed=1)
        model.backprop(xs, y, inputs=("image", "extra"))
        grads, inputs = model._flat_grads.copy(), model.input_grads
        out = model.forward_train(xs)
        dout = np.random.default_rng(2).standard_normal(out.shape)
        given = model.backward(dout, inputs=["image"])
        return grads, inputs, out, given, model._flat_grads.copy()
    expected = shares.layers(run)
    actual = shares(run, 3)
    for a, b in zip(actual, expected):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for key in a:
                _close(a[key], b[key])
        else:
            _close(a, b)
    frozen = _model()
    frozen.set_trainable(["conv1", "dense2"], False)
    start, stop = frozen._spans["conv1"]
    assert not actual[0][start:stop].any()          # a frozen layer's gradient is not written


def test_float32_lenet_by_samples_within_rounding(shares):
    from cnnspec.engine import bench

    def train():
        model = _model(bench.LENET5, "float32")
        xs, y = _data(model, 10)
        x = xs["image"].astype(np.float32)
        opt = SGD(model, lr=0.01, momentum=0.9)
        for _ in range(2):
            model.train_step(x, y, opt)
        return model._flat_params.copy(), model._plan(10).training("cross_entropy").shares
    expected, none = shares.layers(train)
    actual, used = shares(train, 2)
    assert none is None and used is not None
    # the parameter gradients' sums in two parts: float32 rounding of the sums
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("layer", ["batchnorm", "dropout(0.3)"])
def test_batch_statistics_and_random_layers_train_layer_by_layer(shares, layer):
    text = f"""
network N {{
    input image: 2x6x6
    conv(3, 3x3, pad=1) -> {layer} -> relu -> flatten -> dense(4) -> softmax
}}
"""
    def build():
        model = _model(text)
        xs, y = _data(model, 8)
        model.train_step(xs, y, SGD(model, lr=0.1))
        return model._plan(8).training("cross_entropy").shares
    assert shares(build, 2) is None


def test_small_batches_train_layer_by_layer(monkeypatch):
    """Below SHARE_MACS multiply-adds per share (LeNet-5 at batch 1 and 4), the layers split as
    before: a step too small to share pays no hand-offs."""
    from cnnspec.engine import bench

    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    model = _model(bench.LENET5, "float32")
    for n, expect in ((1, False), (4, False), (64, True)):
        xs, y = _data(model, n)
        model.train_step(xs["image"].astype(np.float32), y, SGD(model, lr=0.01))
        assert (model._plan(n).training("cross_entropy").shares is not None) == expect, n


def test_alone_runs_kernels_on_one_thread(monkeypatch):
    monkeypatch.setenv("CNNSPEC_THREADS", "3")
    seen = []
    _jit.alone([lambda: seen.append(_jit.num_threads()),
                lambda: _jit.alone([lambda: seen.append(_jit.num_threads())]),
                lambda: seen.append(_jit.num_threads())])
    seen.append(_jit.num_threads())
    assert seen == [1, 1, 1, 3]
    with pytest.raises(ValueError):
        _jit.alone([lambda: int("x")])
    assert _jit.num_threads() == 3


def test_no_memory_for_the_shares_trains_layer_by_layer(shares, monkeypatch):
    """Where a second parameter gradient and workspace would not fit in what the machine has
    available, the step splits layer by layer instead of refusing."""
    model = _model()
    xs, y = _data(model, 8)
    plan_bytes = 20 * 2 ** 20
    monkeypatch.setattr(plan_module, "available_memory", lambda: plan_bytes)

    def build():
        model._plans.clear()
        model.train_step(xs, y, SGD(model, lr=0.1))
        return model._plan(8)
    plan = shares(build, 2)
    used = plan.training("cross_entropy").shares.used         # the plan's and the step's buffers
    monkeypatch.setattr(plan_module, "available_memory", lambda: used + 1)
    plan = shares(build, 2)
    assert plan.training("cross_entropy").shares is None          # and the step ran
