"""Training by samples (``plan.BySamples``): on several threads, a network without batch
statistics runs its batch in shares of samples, one per thread, each through every layer; the
parameter gradients are the shares' sums added in order.  Checked against the same steps run
layer by layer on one thread (float64: equal to rounding), with uneven shares (batch 7 on 3
threads), frozen layers, input gradients, a given output gradient (forward_train/backward), the
fusions (relu -> maxpool, add -> relu) and multi-input layers; batchnorm, whose shares meet for
the batch statistics (the same statistics as one thread's, bit for bit); and that networks with
dropout, small batches, and shares that would cut a batchnorm's block of partial sums, do not
run so.
"""
import functools
import threading

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
    shared (SHARE_MACS 1, SHARE_EXTRA without limit); ``layers(fn)``: fn() on one thread, layer
    by layer."""
    monkeypatch.setattr(plan_module, "SHARE_MACS", 1)
    monkeypatch.setattr(plan_module, "SHARE_EXTRA", float("inf"))

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
        opt = SGD(model, lr=0.1, momentum=0.9)
        values = [model.train_step(*_data(model, n, seed), opt) for seed in range(3)]  # new
        # inputs each step: each share copies its rows of them
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


LOSS_NETS = {
    "mse": ("conv(4, 3x3, pad=1) -> relu -> flatten -> dense(3)", "mse"),
    "l1": ("conv(4, 3x3, pad=1) -> relu -> flatten -> dense(3)", "l1"),
    "bce": ("conv(4, 3x3, pad=1) -> relu -> flatten -> dense(3) -> sigmoid", "bce"),
    "bce_probabilities": ("conv(4, 3x3, pad=1) -> relu -> flatten -> dense(3) -> hardsigmoid", "bce"),
    "cross_entropy_logits": ("conv(4, 3x3, pad=1) -> relu -> flatten -> dense(3)", "cross_entropy"),
    "cross_entropy_positions": ("conv(4, 3x3, pad=1) -> relu -> conv(3, 1x1) -> softmax", "cross_entropy"),
}


@pytest.mark.parametrize("case", list(LOSS_NETS))
def test_every_built_in_loss_by_samples_equals_layer_by_layer(shares, case):
    """One pool call a step: each share computes its rows of the loss (the gradient scaled by
    the whole batch's count, each sample's terms summed in one order), for every built-in loss
    and the fused final activations: the losses, outputs and parameters of three steps equal
    one thread's to rounding (float64, uneven shares: 7 samples on 3 threads)."""
    body, loss = LOSS_NETS[case]
    text = f"network L {{ input x: 2x5x4\n {body} }}"

    def train():
        model = _model(text)
        opt = SGD(model, lr=0.1, momentum=0.9)
        rng = np.random.default_rng(4)
        x = rng.standard_normal((7, *model.input_shape))
        k, *spatial = model.output_shape
        if loss == "cross_entropy":
            y = rng.integers(0, k, (7, *spatial) if spatial else 7)
        else:
            y = rng.uniform(0, 1, (7, *model.output_shape))
        values = [model.train_step(x, y, opt, loss=loss) for _ in range(3)]
        return model, values, model._plan(7).training(loss).shares
    serial, serial_values, none = shares.layers(train)
    model, values, used = shares(train, 3)
    assert none is None and used is not None and used.step_shares
    for (value, out), (value1, out1) in zip(values, serial_values):
        assert value == pytest.approx(value1, rel=1e-12)
        _close(out, out1)
    _close(model._flat_params, serial._flat_params)


@pytest.mark.parametrize("layer", ["dropout(0.3)", "droppath(0.3)"])
def test_random_layers_train_layer_by_layer(shares, layer):
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


# batchnorm everywhere it can be: first layer (its input needs no gradient), fused with relu and
# relu6, after an add, on dense features, frozen, and followed by something other than a relu
BN_NET = """
network Norms {
    input image: 3x8x8
    a = image -> batchnorm -> conv(4, 3x3, pad=1, bias=false) -> batchnorm -> relu
    b = a -> conv(4, 3x3, pad=1) -> batchnorm -> relu6
    s = add(a, b) -> batchnorm -> tanh
    c = s -> conv(5, 1x1) -> batchnorm(momentum=0.3) -> relu -> maxpool(2)
    f = c -> flatten -> dense(12) -> batchnorm -> relu
    f -> dense(6) -> batchnorm -> softmax
}
"""


@pytest.mark.parametrize("spins", [None, 0], ids=["spinning", "sleeping"])
@pytest.mark.parametrize("n, threads", [(16, 2), (8, 4), (2, 2), (40, 2)])
def test_batchnorm_shares_meet_for_the_statistics(shares, monkeypatch, n, threads, spins):
    """Every share's batchnorm waits for the others' partial sums: the running statistics of
    the first batchnorm (on the input itself) are those of one thread bit for bit (the same
    blocks' sums in the same order), the others' and the steps equal to rounding (a share's
    kernels are chosen for its size; the parameter gradients are sums in shares).  Spinning,
    the shares meet inside the batchnorm's compiled call; without spinning (``CNNSPEC_SPIN_US``
    0) every share but the last to come finishes the step after sleeping."""
    if spins is not None:
        monkeypatch.setattr(_jit, "_spin_count", spins)
    def train(frozen=()):
        model = _model(BN_NET)
        model.set_trainable(list(frozen), False)
        xs, y = _data(model, n)
        opt = SGD(model, lr=0.1, momentum=0.9)
        first = model.train_step(xs, y, opt)
        state = {k: {s: v.copy() for s, v in st.items()} for k, st in model.state.items()}
        values = [first] + [model.train_step(xs, y, opt) for _ in range(2)]
        model.backprop(xs, y, inputs=("image",))
        grads = {k: v.copy() for k, v in model.input_grads.items()}
        return model, values, state, grads, model._plan(n).training("cross_entropy").shares
    for frozen in ((), ("batchnorm2", "batchnorm5")):
        serial, serial_values, serial_state, serial_grads, none = shares.layers(lambda: train(frozen))
        model, values, state, grads, used = shares(lambda: train(frozen), threads)
        assert none is None and used is not None and used.count == threads
        for key, v in serial_state["batchnorm1"].items():
            np.testing.assert_array_equal(state["batchnorm1"][key], v, err_msg=key)
        for layer, st in serial_state.items():
            for key, v in st.items():
                _close(state[layer][key], v)
        for (loss, out), (loss1, out1) in zip(values, serial_values):
            assert loss == pytest.approx(loss1, rel=1e-12)
            _close(out, out1)
        _close(model._flat_params, serial._flat_params)
        for key in model.state:
            for name in model.state[key]:
                _close(model.state[key][name], serial.state[key][name])
        _close(grads["image"], serial_grads["image"])
        if frozen:
            start, stop = model._spans["batchnorm2"]
            assert not model._flat_grads[start:stop].any()


def test_shares_that_would_cut_a_batchnorm_block_train_layer_by_layer(shares):
    """A batch of 12 has its batchnorm's partial sums in 8 blocks starting at samples 0, 1, 3,
    4, 6, 7, 9, 10: two shares (0..5, 6..11) keep them whole, three (cut at 4 and 8) would not."""
    def build(n):
        model = _model(BN_NET)
        xs, y = _data(model, n)
        model.train_step(xs, y, SGD(model, lr=0.1))
        return model._plan(n).training("cross_entropy").shares
    assert shares(lambda: build(12), 2) is not None
    assert shares(lambda: build(12), 3) is None
    assert shares(lambda: build(9), 3) is not None          # blocks 0..7, 9: cut at 3 and 6


def test_a_share_that_fails_releases_the_others(shares, monkeypatch):
    """An error in one share while the others wait for it at a batchnorm reaches the caller as
    itself (not the others' broken wait), and the next step runs."""
    from cnnspec import kernels as K

    maker, fail = K.batchnorm_share_forward_step, [True]

    def failing(*args):
        step, first = maker(*args), args[12]

        def failing_step():
            if first and fail[0]:
                raise FloatingPointError("share 2 failed")
            step()
        return failing_step
    monkeypatch.setattr(K, "batchnorm_share_forward_step", failing)

    def run():
        model = _model(BN_NET)
        xs, y = _data(model, 16)
        opt = SGD(model, lr=0.1)
        with pytest.raises(FloatingPointError, match="share 2 failed"):
            model.train_step(xs, y, opt)
        fail[0] = False
        loss, _ = model.train_step(xs, y, opt)
        assert model._plan(16).training("cross_entropy").shares is not None
        return loss
    assert np.isfinite(shares(run, 2))


def test_batchnorm_halves_in_shares_equal_the_whole_call():
    """The kernels' two halves, run for two shares of a batch, write what one call writes (bit
    for bit); a share that cuts a block is refused."""
    from cnnspec import kernels as K

    rng = np.random.default_rng(4)
    n, c = 12, 3
    x = rng.standard_normal((n, c, 5, 4)).astype(np.float32) * 3 + 1
    dout = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    for relu in (False, True):
        whole = {k: np.zeros(c) for k in ("mean", "invstd")}
        rm, rv, out = np.zeros(c, np.float32), np.ones(c, np.float32), np.empty_like(x)
        K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, rm, rv, out, whole["mean"],
                                       whole["invstd"], relu=relu)
        dx, dg, db = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
        K.batchnorm_backward_into(dout, x, gamma, whole["mean"], whole["invstd"], dx, dg, db,
                                  relu_y=out if relu else None)
        part = np.empty((8, c, 2))
        rm2, rv2, out2 = np.zeros(c, np.float32), np.ones(c, np.float32), np.empty_like(x)
        dx2, dg2, db2 = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
        cuts = [(0, 6), (6, 12)]
        stats = [(np.zeros(c), np.zeros(c)) for _ in cuts]
        for lo, hi in cuts:
            K.batchnorm_partials_into(x[lo:hi], part, n, lo)
        for (lo, hi), (mean, invstd) in zip(cuts, stats):
            first = lo == 0
            K.batchnorm_forward_from_partials(x[lo:hi], gamma, beta, 1e-5, 0.1, rm2 if first else None,
                                              rv2 if first else None, out2[lo:hi], mean, invstd, part, n,
                                              relu=relu)
            np.testing.assert_array_equal(mean, whole["mean"])
            np.testing.assert_array_equal(invstd, whole["invstd"])
        y = out2 if relu else None
        for lo, hi in cuts:
            K.batchnorm_grad_partials_into(dout[lo:hi], x[lo:hi], stats[0][0], part, n, lo,
                                           None if y is None else y[lo:hi])
        for lo, hi in cuts:
            K.batchnorm_backward_from_partials(dout[lo:hi], x[lo:hi], gamma, stats[0][0], stats[0][1],
                                               dx2[lo:hi], dg2 if lo == 0 else None, db2 if lo == 0 else None,
                                               part, n, relu_y=None if y is None else y[lo:hi])
        for a, b in ((out2, out), (rm2, rm), (rv2, rv), (dx2, dx), (dg2, dg), (db2, db)):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="cut a block"):
        K.batchnorm_partials_into(x[:8], part, n, 0)         # blocks start at 0, 1, 3, 4, 6, 7, 9, 10
    for bad in (np.empty((4, c, 2)), np.empty((8, c, 2), np.float32), np.empty((8, c + 1, 2)), [0.0]):
        with pytest.raises(ValueError, match="partial sums: expected a contiguous float64 array"):
            K.batchnorm_partials_into(x[:6], bad, n, 0)
        with pytest.raises(ValueError, match="partial sums"):
            K.batchnorm_backward_from_partials(dout[:6], x[:6], gamma, stats[0][0], stats[0][1],
                                               dx2[:6], None, None, bad, n)
    assert K.share_blocks(12, 0, 6) == (0, 4) and K.share_blocks(12, 0, 8) is None


def test_pieces_that_run_together_refuse_to_nest(monkeypatch):
    """``run_split(together=True)`` needs a thread per piece: from inside a piece it would wait
    for itself, so it refuses."""
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    seen, errors = [], []

    def outer(lo):
        try:
            _jit.run_split(lambda: None, 2, 2, lambda t, a, b: (), pieces=2, together=True)
        except RuntimeError as error:
            errors.append(error)
        seen.append(lo)
    _jit.run_split(outer, 2, 2, lambda t, lo, hi: (lo,), pieces=2)
    assert sorted(seen) == [0, 1] and len(errors) == 2
    barrier = threading.Barrier(2)                       # two pieces that meet: both ran at once
    met = []
    _jit.run_split(lambda i: met.append(barrier.wait()), 2, 2, lambda t, lo, hi: (lo,), pieces=2,
                   together=True)
    assert sorted(met) == [0, 1]


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


def test_gradient_copies_beyond_a_tenth_of_the_step_train_layer_by_layer(monkeypatch):
    """The shares' copies of the parameter gradients (one per thread but the first) stay within
    SHARE_EXTRA of the step's buffers, so that the summary's memory estimate (a step layer by
    layer) holds: a dense-heavy network at a small batch (its gradients outweigh its
    activations) trains layer by layer, a larger batch of it by samples; the workspaces of the
    shares are cut from the plan's where it holds them."""
    monkeypatch.setattr(plan_module, "SHARE_MACS", 1)
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    text = """
network Wide {
    input image: 4x16x16
    conv(8, 3x3, pad=1) -> relu -> flatten -> dense(64) -> relu -> dense(10) -> softmax
}
"""
    def shares(n, extra):
        monkeypatch.setattr(plan_module, "SHARE_EXTRA", extra)
        model = _model(text)
        xs, y = _data(model, n)
        model.train_step(xs, y, SGD(model, lr=0.1))
        return model._flat_grads.nbytes, model._plan(n).training("cross_entropy").shares
    grads, small = shares(4, float("inf"))
    assert grads > 0.1 * small.used                 # shared only without the limit
    assert shares(4, 0.1)[1] is None
    grads, large = shares(512, 0.1)
    assert large is not None and grads <= 0.1 * large.used
    assert large.workspace_bytes == 0               # the plan's workspace holds both shares'


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, with_dx", [((8, 6, 14, 14), (16, 6, 5, 5), True),
                                                       ((8, 1, 32, 32), (6, 1, 5, 5), False)])
def test_conv_steps_bound_once_write_what_the_calls_write(monkeypatch, dtype, x_shape, w_shape,
                                                          with_dx):
    """``conv2d_forward_step`` / ``conv2d_backward_step`` (a training share's layer): where the
    layer runs on one thread, its calls are bound with their arguments (LeNet-5's convolutions,
    conv2 and conv1 as in the network, without dx: whichever kernels this CPU's plans choose,
    the direct loops, the lanes or the row of taps), and the step writes what
    ``conv2d_forward_into`` / ``conv2d_backward_into`` write, bit for bit, again on new values
    of the same buffers (and a strided layer's, by the plan's own kernels); a layer on several
    threads keeps the call itself."""
    from cnnspec import kernels as K
    from cnnspec.kernels import reference as R

    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    geo = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    out_shape = K.conv2d_output_shape(x.shape, w.shape, geo[0], geo[1])
    ws = np.zeros(K.conv2d_workspace_size(x.shape, w.shape, *geo), dtype)
    out, out2 = np.empty(out_shape, dtype), np.empty(out_shape, dtype)
    dout = rng.standard_normal(out_shape).astype(dtype)
    dx, dw, db = np.empty_like(x) if with_dx else None, np.empty_like(w), np.empty_like(b)
    dx2, dw2, db2 = np.empty_like(x) if with_dx else None, np.empty_like(w), np.empty_like(b)

    def bound(step):
        return isinstance(step, functools.partial)

    steps = []
    _jit.alone([lambda: steps.extend([K.conv2d_forward_step(x, w, b, *geo, out, ws),
                                      K.conv2d_backward_step(dout, x, w, *geo, dx, dw, db, ws)])])
    assert bound(steps[0]) and bound(steps[1])
    for _ in range(2):
        _jit.alone(steps)
        _jit.alone([lambda: K.conv2d_forward_into(x, w, b, *geo, out2, ws),
                    lambda: K.conv2d_backward_into(dout, x, w, *geo, dx2, dw2, db2, ws)])
        for a, e in ((out, out2), (dx, dx2), (dw, dw2), (db, db2)):
            assert np.array_equal(a, e)
        x[...] = rng.standard_normal(x.shape)
        dout[...] = rng.standard_normal(dout.shape)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    x[...] = rng.standard_normal(x.shape)                   # the last values, against NumPy
    dout[...] = rng.standard_normal(dout.shape)
    _jit.alone(steps)
    rdx, rdw, rdb = R.conv2d_backward(dout, x, w, b, *geo[:3])
    for a, e in ((out, R.conv2d_forward(x, w, b, *geo[:3])), (dx, rdx), (dw, rdw), (db, rdb)):
        if a is not None:
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol * np.abs(e).max())
    strided = ((2, 2), (1, 1, 1, 1), (1, 1), 1)
    ws2 = np.zeros(K.conv2d_workspace_size(x.shape, w.shape, *strided), dtype)
    out3 = np.empty(K.conv2d_output_shape(x.shape, w.shape, strided[0], strided[1]), dtype)
    out5 = np.empty_like(out3)
    step = K.conv2d_forward_step(x, w, b, *strided, out3, ws2)     # the plan's own kernels
    step()
    K.conv2d_forward_into(x, w, b, *strided, out5, ws2)
    assert bound(step) and np.array_equal(out3, out5)
    big = rng.standard_normal((64, 6, 32, 32)).astype(dtype)                  # two threads
    ws3 = np.zeros(K.conv2d_workspace_size(big.shape, w.shape, *geo), dtype)
    out4 = np.empty(K.conv2d_output_shape(big.shape, w.shape, geo[0], geo[1]), dtype)
    assert not bound(K.conv2d_forward_step(big, w, b, *geo, out4, ws3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_and_dense_steps_bound_once_write_what_the_calls_write(dtype):
    """``maxpool2d_*_step`` and ``dense_*_step`` (a training share's layers): each one compiled
    call bound with its arguments, writing what the ``*_into`` calls write, bit for bit, on
    every combination of the options the engine passes (the relu fused before a pooling or
    after a dense, accumulated input gradients, no bias, no dx), again on new values of the same
    buffers (a bound scratch, the dense bias gradient's sums, starts each call afresh); the
    results checked against NumPy's too."""
    from cnnspec import kernels as K
    from cnnspec.kernels import reference as R

    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3, 9, 8)).astype(dtype)
    pooled = (4, 3, 4, 4)
    xd = rng.standard_normal((4, 10)).astype(dtype)
    w = rng.standard_normal((10, 6)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    dyd = rng.standard_normal((4, 6)).astype(dtype)

    def both(make):
        """The buffers each way (bound step, plain call): ``make()`` gives (outputs, step maker
        ``f(kind, *outputs)``), kind "step" or "into"."""
        got, want = make(), make()
        steps = []
        _jit.alone([lambda: steps.append(got[1]("step", *got[0]))])
        assert isinstance(steps[0], functools.partial)
        for _ in range(2):
            for a in (x, xd, dyd):
                a[...] = rng.standard_normal(a.shape)
            for outs in (got[0], want[0]):              # accumulated gradients start alike
                for a in outs:
                    a[...] = 0.5
            _jit.alone(steps)
            _jit.alone([lambda: want[1]("into", *want[0])()])
            for a, e in zip(got[0], want[0]):
                assert np.array_equal(a, e)
        return got[0]

    def call(kind, name, *args):
        f = getattr(K, f"{name}_{kind}")
        return f(*args) if kind == "step" else (lambda: f(*args))

    for relu, k, s in ((False, (2, 2), (2, 2)), (True, (3, 3), (2, 2)), (False, (3, 2), (1, 2))):
        shape = (4, 3, (9 - k[0]) // s[0] + 1, (8 - k[1]) // s[1] + 1)
        out, arg = both(lambda: ((np.empty(shape, dtype), np.empty(shape, np.int64)),
                                 lambda kind, o, a: call(kind, "maxpool2d_forward", x, k, s,
                                                         (0, 0, 0, 0), o, a, relu)))
        ref = R.maxpool2d_forward(np.maximum(x, 0) if relu else x, k, s, (0, 0, 0, 0))
        assert np.array_equal(out, ref[0] if isinstance(ref, tuple) else ref)
    argmax = np.empty(pooled, np.int64)
    y = np.empty(pooled, dtype)
    K.maxpool2d_forward_into(x, (2, 2), (2, 2), (0, 0, 0, 0), y, argmax, True)
    dy = rng.standard_normal(pooled).astype(dtype)
    for acc, after in ((False, None), (True, None), (True, y), (False, y)):
        both(lambda: ((np.empty_like(x),),
                      lambda kind, dx: call(kind, "maxpool2d_backward", dy, argmax, dx, acc,
                                            after)))
    for bias, relu in ((b, False), (None, True), (b, True)):
        (out,) = both(lambda: ((np.empty((4, 6), dtype),),
                               lambda kind, o: call(kind, "dense_forward", xd, w, bias, o, relu)))
        ref = xd @ w + (0 if bias is None else bias)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, np.maximum(ref, 0) if relu else ref, rtol=tol, atol=tol)
    relu_y = np.maximum(rng.standard_normal((4, 6)), 0).astype(dtype)
    for acc, with_dx, relu in ((False, True, False), (True, True, True), (False, False, True)):
        dx, dw, db = both(lambda: (
            (np.empty_like(xd), np.empty_like(w), np.empty_like(b), np.empty((4, 6), dtype)),
            lambda kind, dx, dw, db, masked: call(
                kind, "dense_backward", dyd, xd, w, dx if with_dx else None, dw, db, acc,
                relu_y if relu else None, masked if relu else None)))[:3]
        g = dyd * (relu_y > 0) if relu else dyd
        tol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(dw, xd.T @ g, rtol=tol, atol=tol)
        np.testing.assert_allclose(db, g.sum(axis=0), rtol=tol, atol=tol)
        np.testing.assert_allclose(dx, (0.5 if acc else 0) + g @ w.T if with_dx else 0.5, rtol=tol,
                                   atol=tol)


def test_lenet_shares_run_bound_calls():
    """LeNet-5 at batch 64 on two threads: every step of a share but its inputs' copy and its
    rows of the loss is one compiled call bound once (no layer's Python between its kernels)."""
    from cnnspec.engine.bench import TRAINING_CASES, _labels, using_threads

    label, text, _ = next(c for c in TRAINING_CASES if c[0].startswith("LeNet-5"))
    with using_threads(2):
        model = cnnspec.loads(text).compile(dtype="float32", seed=0)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, *model.input_shape), dtype=np.float32)
        model.train_step(x, _labels(rng, model, 64), SGD(model, lr=0.01))
        shares = model._plans[64].training("cross_entropy", (), True).shares
    for steps in shares.step_shares:
        unbound = [s for s in steps if not isinstance(s, functools.partial)]
        assert len(steps) == 16 and len(unbound) == 2, [getattr(s, "__qualname__", s)
                                                        for s in unbound]


def test_a_thread_count_changed_between_steps_makes_the_plan_again(monkeypatch):
    """CNNSPEC_THREADS changed after a model ran (a notebook that sets it): the next step makes
    its plan for the new count (workspaces are per thread: a conv's plan made for one thread
    raised "conv2d workspace too small" on two), and computes what a model made for it computes."""
    from cnnspec.engine.bench import MOBILENET_SMALL

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 32, 32))
    y = rng.integers(0, 10, 16)

    def steps(model, counts):
        opt = SGD(model, lr=0.01, momentum=0.9)
        for count in counts:
            monkeypatch.setenv("CNNSPEC_THREADS", str(count))
            model.train_step(x, y, opt)
        return model.arrays()

    changed = steps(_model(MOBILENET_SMALL), (1, 2, 1))
    for name, value in steps(_model(MOBILENET_SMALL), (1, 1, 1)).items():
        np.testing.assert_allclose(changed[name], value, rtol=1e-9, atol=1e-12)
