"""Work split over threads gives the serial path's results, bit for bit, and the NumPy
reference's: element-wise kernels (pieces of 16 elements), softmax, concat, gates and the
per-pixel cross-entropy (ranges of samples), the optimizers' update (ranges of parameters, frozen
layers between them). The splits are forced on tiny arrays (thresholds at 1, 3 threads: uneven
pieces, more threads than pieces), with odd sizes and batch 1. Also: the optimizers store
subnormal momentum as 0, where torch keeps it, and still reach torch's parameters.
"""
import numpy as np
import pytest

import cnnspec
from cnnspec import kernels as K
from cnnspec.engine import SGD, Adam, AdamW, optim
from cnnspec.kernels import _jit
from cnnspec.kernels import reference as R

SHAPES = [(1, 1, 1, 37), (3, 5, 7, 9), (2, 3, 40, 41)]      # 37 = 16 + 16 + 5: three pieces


@pytest.fixture
def split(monkeypatch):
    """``run(fn)``: fn() on one thread, then split on three, whatever the size; returns both
    results and checks that the second run was split."""
    monkeypatch.setattr(_jit, "_PARALLEL_ELEMENTS", 1)
    calls = []
    original = _jit.run_split

    def counting(fn, n, threads, args_for, **options):
        calls.append(threads)
        return original(fn, n, threads, args_for, **options)

    monkeypatch.setattr(_jit, "run_split", counting)

    def run(fn, expect_split=True):
        monkeypatch.setenv("CNNSPEC_THREADS", "1")
        serial = fn()
        calls.clear()
        monkeypatch.setenv("CNNSPEC_THREADS", "3")
        threaded = fn()
        assert any(t > 1 for t in calls) == expect_split, calls
        return serial, threaded
    return run


def same(a, b):
    """Bit-for-bit equal (NaN in the same places)."""
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert np.array_equal(u, v, equal_nan=True), np.max(np.abs(u.astype(float) - v.astype(float)))


def near(actual, expected, dtype):
    """Equal to rounding, relative to the array's scale (sums that cancel lose digits)."""
    scale = np.max(np.abs(expected)) if np.size(expected) else 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=(1e-6 if dtype == np.float32 else 1e-14) * scale)


def data(shape, dtype, seed=0, scale=4.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    x.reshape(-1)[::7] = 0                      # the kinks: 0, and relu6's 6
    x.reshape(-1)[3::11] = 6
    return x


FORWARD = ["relu", "sigmoid", "tanh", "relu6", "hardswish", "hardsigmoid", "silu", "gelu", "softplus"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", FORWARD + ["leaky_relu", "elu"])
def test_activations_split_equal_serial(split, name, shape, dtype):
    x, dout = data(shape, dtype), data(shape, dtype, seed=1)
    start = data(shape, dtype, seed=2)
    arg = () if name in FORWARD else (0.3,)
    forward, backward = getattr(K, f"{name}_forward_into"), getattr(K, f"{name}_backward_into")
    # relu, sigmoid, tanh take the forward output; the others the input
    uses_y = name in ("relu", "sigmoid", "tanh")

    def run():
        y = np.zeros_like(x)
        forward(x, *arg, y)
        saved = y if uses_y else x
        dx = np.zeros_like(x)
        backward(dout, saved, *arg, dx)
        acc = start.copy()
        backward(dout, saved, *arg, acc, accumulate=True)
        g = dout.copy()                         # in place: dx is dout
        backward(g, saved, *arg, g)
        return y, dx, acc, g

    serial, threaded = split(run, expect_split=x.size > 16)
    same(serial, threaded)
    if name == "relu":
        np.testing.assert_array_equal(threaded[0], R.relu_forward(x))
        np.testing.assert_array_equal(threaded[1], R.relu_backward(dout, x))
        near(threaded[2], start + R.relu_backward(dout, x), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_merges_split_equal_serial_and_numpy(split, shape, dtype):
    a, b, start = data(shape, dtype), data(shape, dtype, seed=1), data(shape, dtype, seed=2)
    mask = np.random.default_rng(3).random(shape) > 0.3

    def run():
        out = {"add": np.zeros_like(a), "mul": np.zeros_like(a), "dropout": np.zeros_like(a),
               "ddropout": start.copy(), "dmul": start.copy(), "copy": np.zeros_like(a), "acc": start.copy()}
        K.add_into(a, b, out["add"])
        K.mul_forward_into(a, b, out["mul"])
        K.mul_backward_into(a, b, out["dmul"], accumulate=True)
        K.dropout_forward_into(a, mask, 0.3, out["dropout"])
        K.dropout_backward_into(b, mask, 0.3, out["ddropout"], accumulate=True)
        K.copy_into(a, out["copy"])
        K.accumulate_into(b, out["acc"])
        return tuple(out.values())

    serial, threaded = split(run, expect_split=a.size > 16)
    same(serial, threaded)
    add, mul, dropout, ddropout, dmul, copy, acc = threaded
    np.testing.assert_array_equal(add, a + b)
    np.testing.assert_array_equal(mul, a * b)
    near(dmul, start + a.astype(float) * b, dtype)          # maybe one fused multiply-add
    near(dropout, R.dropout_forward(a, 0.3, mask), dtype)
    near(ddropout, start + R.dropout_backward(b, 0.3, mask), dtype)
    np.testing.assert_array_equal(copy, a)
    np.testing.assert_array_equal(acc, start + b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_by_samples_split_equal_serial_and_numpy(split, n, dtype):
    """softmax, concat, channel slice and gates: ranges of samples (batch 1: no split)."""
    x, dout = data((n, 6, 3, 5), dtype), data((n, 6, 3, 5), dtype, seed=1)
    other = data((n, 2, 3, 5), dtype, seed=2)
    gate = data((n, 6, 1, 1), dtype, seed=3)
    start = data((n, 6, 3, 5), dtype, seed=4)

    def run():
        y, dx = np.zeros_like(x), start.copy()
        K.softmax_forward_into(x, y)
        K.softmax_backward_into(dout, y, dx, accumulate=True)
        cat = np.zeros((n, 8, 3, 5), dtype)
        K.concat_forward_into([x, other], cat)
        dcat0, dcat1 = start.copy(), np.zeros_like(other)
        K.concat_backward_into(cat * 2, [dcat0, 2], accumulate=True)     # input 1 skipped
        K.concat_backward_into(cat * 2, [6, dcat1])
        part = np.zeros((n, 3, 3, 5), dtype)
        K.channel_slice_forward_into(x, 2, part)
        dslice = start.copy()
        K.channel_slice_backward_into(part, 2, dslice, accumulate=True)
        gated, dgx, dg = np.zeros_like(x), start.copy(), np.zeros_like(gate)
        K.gate_forward_into(x, gate, gated)
        K.gate_backward_into(dout, x, gate, dgx, dg, accumulate_dx=True)
        return y, dx, cat, dcat0, dcat1, part, dslice, gated, dgx, dg

    serial, threaded = split(run, expect_split=n > 1)
    same(serial, threaded)
    y, dx, cat, dcat0, dcat1, part, dslice, gated, dgx, dg = threaded
    near(y, R.softmax_forward(x), dtype)
    near(dx, start + R.softmax_backward(dout, x), dtype)
    np.testing.assert_array_equal(cat, R.concat_forward([x, other]))
    np.testing.assert_array_equal(dcat0, start + 2 * x)
    np.testing.assert_array_equal(dcat1, 2 * other)
    np.testing.assert_array_equal(part, x[:, 2:5])
    expected = start.copy()
    expected[:, 2:5] += x[:, 2:5]
    np.testing.assert_array_equal(dslice, expected)
    np.testing.assert_array_equal(gated, x * gate)
    near(dgx, start + dout.astype(float) * gate, dtype)
    near(dg, (dout.astype(float) * x).sum(axis=(2, 3), keepdims=True), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, act", [(1, "relu"), (3, None), (11, "relu6"), (20, "relu")])
def test_batchnorm_training_split_equal_serial_and_numpy(split, monkeypatch, n, act, dtype):
    """Training batchnorm by blocks of the batch (11 samples: 8 blocks of 1 or 2) and ranges of
    samples: bit for bit the same on 1 and 3 threads, the NumPy reference to rounding."""
    from cnnspec.kernels import norm

    monkeypatch.setattr(norm, "_PARALLEL_SIZE", 1)
    monkeypatch.setattr(norm, "run_split", _jit.run_split)      # the fixture's, which counts
    x, dout = data((n, 5, 3, 4), dtype) + dtype(50), data((n, 5, 3, 4), dtype, seed=1)
    gamma, beta = data((5,), dtype, seed=2), data((5,), dtype, seed=3)
    fused = {"relu": {"relu": True}, "relu6": {"relu6": True}, None: {}}[act]

    def run():
        rm, rv = np.zeros(5, dtype), np.ones(5, dtype)
        y, mean, invstd = np.zeros_like(x), np.zeros(5), np.zeros(5)
        K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, rm, rv, y, mean, invstd, **fused)
        dx, dg, db = np.ones_like(x), np.zeros_like(gamma), np.zeros_like(beta)
        K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dg, db, accumulate=True,
                                  relu_y=y if act else None, relu6=act == "relu6")
        return y, rm, rv, mean, invstd, dx, dg, db

    serial, threaded = split(run, expect_split=n > 1)
    same(serial, threaded)
    y, rm, rv, mean, invstd, dx, dg, db = threaded
    bn = R.batchnorm_forward(x, gamma, beta, 1e-5)
    top = {"relu": np.inf, "relu6": 6, None: None}[act]
    near(y, bn if top is None else np.clip(bn, 0, top), dtype)
    erm, erv = R.batchnorm_running_update(x, np.zeros(5, dtype), np.ones(5, dtype), 0.1)
    near(rm, erm, dtype)
    near(rv, erv, dtype)
    g = dout if top is None else np.where((bn > 0) & (bn < top), dout, 0)
    rdx, rdg, rdb = R.batchnorm_backward(g, x, gamma, beta, 1e-5)
    near(dx, 1 + rdx, dtype)
    near(dg, rdg, dtype)
    near(db, rdb, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k, p", [(1, 2, 1), (3, 5, 7), (4, 2, 33)])
def test_cross_entropy_per_position(split, n, k, p, dtype):
    """The per-position kernel against the row kernel on transposed copies (what the plan did
    before: the same gradient bit for bit) and against NumPy; the loss is the same whatever the
    split (the samples' sums are added in order)."""
    rng = np.random.default_rng(n * 100 + p)
    z = (rng.standard_normal((n, k, p)) * 5).astype(dtype)
    y = rng.integers(0, k, (n, p))

    def run():
        dz = np.zeros_like(z)
        loss = K.cross_entropy_positions_into(z, y, dz)
        return np.array([loss]), dz

    serial, threaded = split(run, expect_split=n > 1)
    same(serial, threaded)
    (loss,), dz = threaded
    rows = np.ascontiguousarray(z.transpose(0, 2, 1)).reshape(-1, k)
    drows = np.zeros_like(rows)
    row_loss = K.softmax_cross_entropy_into(rows, y.reshape(-1), drows)
    np.testing.assert_array_equal(dz, drows.reshape(n, p, k).transpose(0, 2, 1))
    ref_loss, ref_grad = R.softmax_cross_entropy(rows.astype(np.float64), y.reshape(-1))
    assert abs(loss - row_loss) <= 1e-12 * abs(row_loss)
    assert abs(loss - ref_loss) <= (1e-6 if dtype == np.float32 else 1e-12) * abs(ref_loss)
    np.testing.assert_allclose(drows, ref_grad, atol=1e-7 if dtype == np.float32 else 1e-15)


NET = """
network Small {
    input x: 7
    dense(5) -> relu
    dense(4) -> relu
    dense(3)
}
"""


@pytest.mark.parametrize("make", [lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda m: SGD(m, lr=0.1), lambda m: Adam(m, lr=1e-2, weight_decay=0.01),
                                  lambda m: AdamW(m, lr=1e-2)], ids=["sgd-momentum", "sgd", "adam", "adamw"])
def test_optimizer_update_split_equal_serial(monkeypatch, make):
    """The update over parameter ranges on 3 threads, the middle layer frozen (a gap between the
    segments): the parameters and state of one thread's update, bit for bit."""
    monkeypatch.setattr(optim, "_PARALLEL_PARAMS", 1)
    calls = []
    original = optim.run_split
    monkeypatch.setattr(optim, "run_split", lambda fn, n, threads, args_for, **options: (
        calls.append(threads), original(fn, n, threads, args_for, **options)))
    network = cnnspec.loads(NET)
    fresh = network.compile(dtype="float32", seed=0)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("CNNSPEC_THREADS", threads)
        model = network.compile(dtype="float32", seed=0)
        model.set_trainable("dense2", False)
        opt = make(model)
        for step in range(4):
            rng = np.random.default_rng(step)
            model._flat_grads[...] = rng.standard_normal(model._flat_grads.shape)
            opt.step()
        results.append((model._flat_params.copy(), {k: np.copy(v) for k, v in opt.state_dict().items()}))
        np.testing.assert_array_equal(model.params["dense2"]["weight"], fresh.params["dense2"]["weight"])
        assert not np.array_equal(model.params["dense3"]["weight"], fresh.params["dense3"]["weight"])
    assert max(calls) == 3
    (p1, s1), (p3, s3) = results
    np.testing.assert_array_equal(p1, p3)
    for key in s1:
        np.testing.assert_array_equal(s1[key], s3[key])


def test_subnormal_momentum_stored_as_zero_same_parameters_as_torch():
    """A gradient that stops: torch's momentum decays into the subnormals (where it would stick
    at the smallest one: 0.9 * 2**-149 rounds back up); cnnspec's becomes 0. The parameters stay equal
    to torch's, bit for bit; Adam's second moment of tiny gradients likewise."""
    torch = pytest.importorskip("torch")
    tiny = np.finfo(np.float32).tiny
    network = cnnspec.loads(NET)
    for kind in ("sgd", "adam"):
        model = network.compile(dtype="float32", seed=0)
        tensors = [torch.tensor(v.copy(), requires_grad=True) for g in model.params.values() for v in g.values()]
        views = [v for g in model.params.values() for v in g.values()]
        grads = [v for g in model._grads.values() for v in g.values()]
        if kind == "sgd":
            opt, topt = SGD(model, lr=0.01, momentum=0.9), torch.optim.SGD(tensors, lr=0.01, momentum=0.9)
        else:
            opt, topt = Adam(model, lr=1e-3), torch.optim.Adam(tensors, lr=1e-3)
        rng = np.random.default_rng(0)
        for step in range(300 if kind == "sgd" else 30):
            for g, t in zip(grads, tensors):
                # sgd: one tiny gradient, then none (its momentum decays 0.9 a step into the
                # subnormals and sticks); adam: gradients whose squares are subnormal
                value = (rng.standard_normal(g.shape) * (1e-20 if kind == "adam" else 1e-36)
                         if step == 0 or kind == "adam" else np.zeros(g.shape))
                g[...] = value
                t.grad = torch.tensor(value, dtype=torch.float32)
            opt.step()
            topt.step()
        for v, t in zip(views, tensors):
            np.testing.assert_array_equal(v, t.detach().numpy())
        if kind == "sgd":
            theirs = np.concatenate([topt.state[t]["momentum_buffer"].numpy().ravel() for t in tensors])
            ours = opt.buf
        else:
            theirs = np.concatenate([topt.state[t]["exp_avg_sq"].numpy().ravel() for t in tensors])
            ours = opt.v
        subnormal = (theirs != 0) & (np.abs(theirs) < tiny)
        assert subnormal.sum() > theirs.size // 2             # the case this test is about
        assert np.all(ours[subnormal] == 0)
        np.testing.assert_array_equal(ours[~subnormal], theirs[~subnormal])


# -- the pool ------------------------------------------------------------------------------------

def _pieces(n, threads):
    """run_split's pieces of range(n), as filled in by each piece: out[i] = its piece number + 1."""
    out = np.zeros(n, np.int64)

    def fn(t, lo, hi):
        out[lo:hi] = t + 1
    _jit.run_split(fn, n, threads, lambda t, lo, hi: (t, lo, hi))
    return out


def test_pool_cuts_contiguous_pieces_and_raises_a_workers_error():
    np.testing.assert_array_equal(_pieces(7, 3), [1, 1, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(_pieces(2, 3), [2, 3])             # more threads than items

    def fn(t):
        if t == 2:
            raise ValueError("piece 2 failed")
    with pytest.raises(ValueError, match="piece 2 failed"):
        _jit.run_split(fn, 3, 3, lambda t, lo, hi: (t,))
    np.testing.assert_array_equal(_pieces(6, 3), [1, 1, 2, 2, 3, 3])  # still serving


@pytest.mark.parametrize("n, threads, per_thread", [(100, 3, 4), (10, 3, 4), (2, 3, 4),
                                                    (1000, 2, 4), (100, 3, 2), (13, 2, 2),
                                                    (3, 2, 2), (9, 2, 1)])
def test_dynamic_split_runs_the_fixed_pieces_once(n, threads, per_thread):
    """Dynamic: min(n, per_thread * threads) fixed pieces (4 per thread unless told), each run
    once, by whichever thread is free, with that thread's slot (0: the calling thread)."""
    import threading

    seen, main = [], threading.get_ident()

    def fn(slot, lo, hi):
        seen.append((lo, hi, slot, threading.get_ident() == main))
    if per_thread == 4:
        _jit.run_split(fn, n, threads, lambda t, lo, hi: (t, lo, hi), dynamic=True)
    else:
        _jit.run_split(fn, n, threads, lambda t, lo, hi: (t, lo, hi), dynamic=True,
                       per_thread=per_thread)
    pieces = min(n, per_thread * threads)
    assert sorted((lo, hi) for lo, hi, _, _ in seen) == [(c * n // pieces, (c + 1) * n // pieces)
                                                           for c in range(pieces)]
    for _, _, slot, on_main in seen:
        assert 0 <= slot < threads and (slot == 0) == on_main


def test_caller_does_not_wait_for_a_worker_that_has_not_started(monkeypatch):
    """A worker that is not running when a call is posted (descheduled on a busy machine; here
    one that never wakes) holds nothing up: the calling thread takes every piece left, with its
    own slot, and returns; with the worker back, the next call is shared again."""
    import threading

    class Asleep:
        index, sleeping = 1, True

        def __init__(self):
            self.wake = threading.Lock()
            self.wake.acquire()

    monkeypatch.setattr(_jit, "_workers", [Asleep()])
    seen, main = [], threading.get_ident()

    def fn(slot, lo, hi):
        seen.append((lo, hi, slot, threading.get_ident() == main))
    caller = threading.Thread(target=_jit.run_split,
                              args=(fn, 10, 2, lambda t, lo, hi: (t, lo, hi)), kwargs={"dynamic": True})
    main = None
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "the caller waited for a worker that never started"
    assert sorted((lo, hi) for lo, hi, _, _ in seen) == [(c * 10 // 8, (c + 1) * 10 // 8) for c in range(8)]
    assert {slot for _, _, slot, _ in seen} == {0}
    monkeypatch.undo()
    np.testing.assert_array_equal(_pieces(6, 2), [1, 1, 1, 2, 2, 2])


def test_caller_takes_pieces_from_the_front_and_workers_from_the_back():
    """Each thread keeps its end of the range (its data stays in its core's cache from one call
    to the next): the calling thread's pieces are a prefix, the worker's the rest."""
    import threading
    import time

    main = threading.get_ident()
    for _ in range(3):
        seen = []

        def fn(slot, lo, hi):
            seen.append((lo, threading.get_ident() == main))
            time.sleep(0.005)                           # the worker has time to join
        _jit.run_split(fn, 8, 2, lambda t, lo, hi: (t, lo, hi), dynamic=True)
        caller = sorted(lo for lo, on_main in seen if on_main)
        worker = sorted(lo for lo, on_main in seen if not on_main)
        assert caller == list(range(len(caller))) and worker == list(range(len(caller), 8)), seen


def test_pool_nested_and_concurrent_calls_run_every_piece():
    """A call made while the workers serve another (from inside a piece, or from a second Python
    thread) runs its pieces in its own thread: no deadlock, the same pieces."""
    import threading

    inner = []

    def outer(t):
        inner.append(_pieces(5, 2))
    _jit.run_split(outer, 2, 2, lambda t, lo, hi: (t,))
    for result in inner:
        np.testing.assert_array_equal(result, [1, 1, 2, 2, 2])
    failures = []

    def hammer():
        for _ in range(200):
            if not np.array_equal(_pieces(9, 3), [1, 1, 1, 2, 2, 2, 3, 3, 3]):
                failures.append(1)
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def _child_pieces(queue):
    queue.put(_pieces(4, 2).tolist())


def test_pool_in_a_forked_child():
    """A child forked after the workers started has none of them: it starts its own."""
    import multiprocessing

    _pieces(4, 2)                                   # the parent's workers exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_pieces, args=(queue,))
    child.start()
    result = queue.get(timeout=60)
    child.join(60)
    assert result == [1, 1, 2, 2]


def test_spin_while_waits_for_a_change_or_gives_up():
    """``_spin_while(signals, slot, value, equal, spins)``: True once ``signals[slot]`` stops
    being (``equal``) or becomes (not ``equal``) ``value``, False after ``spins`` turns; a store
    from another thread ends the wait."""
    import threading
    import time

    signals = np.zeros(16, np.int64)
    signals[8] = 5
    assert not _jit._spin_while(signals, 8, 5, True, 1000)
    assert _jit._spin_while(signals, 8, 4, True, 1000)
    assert _jit._spin_while(signals, 8, 5, False, 1000)
    assert not _jit._spin_while(signals, 8, 6, False, 1000)
    assert not _jit._spin_while(signals, 8, 5, True, 0)

    def later():
        time.sleep(0.01)
        signals[0] = 1
    other = threading.Thread(target=later)
    other.start()
    assert _jit._spin_while(signals, 0, 0, True, 10 ** 12)     # ends with the store, not the count
    other.join()
    assert _jit._spins() >= 0


@pytest.mark.parametrize("value, turns", [("0", 0), ("250", None), ("1e300", None),
                                          ("ten", ValueError), ("-5", ValueError),
                                          ("nan", ValueError), ("inf", ValueError)])
def test_spin_time_from_the_environment(monkeypatch, value, turns):
    """CNNSPEC_SPIN_US: how long a waiting thread spins before it sleeps; 0 none; a value that
    is not a number of microseconds is refused by name (an error the CLI prints as a message)."""
    from cnnspec.errors import CnnSpecError

    monkeypatch.setattr(_jit, "_spin_count", None)
    monkeypatch.setenv("CNNSPEC_SPIN_US", value)
    if turns is ValueError:
        with pytest.raises(CnnSpecError, match="CNNSPEC_SPIN_US"):
            _jit._spins()
    elif turns == 0:
        assert _jit._spins() == 0
    else:
        turns = _jit._spins()
        assert 0 < turns <= 1 << 62
        assert _jit._spin_while(np.zeros(1, np.int64), 0, 1, True, turns)   # taken as an int64


@pytest.mark.parametrize("spins", [0, 50, None], ids=["sleeping", "short-spin", "default"])
def test_workers_join_calls_whether_they_spin_or_sleep(monkeypatch, spins):
    """Between calls a worker spins (CNNSPEC_SPIN_US), then sleeps: calls in a burst, calls
    after a pause longer than the spin, and with no spinning at all, each run every piece once,
    and the worker takes part (woken by its lock when asleep)."""
    import threading
    import time

    if spins is not None:
        monkeypatch.setattr(_jit, "_spin_count", spins)
    main, helped = threading.get_ident(), 0
    for call in range(40):
        ran = []

        def fn(c, lo, hi):
            ran.append((c, threading.get_ident() != main))
            time.sleep(0.001)                                # (the GIL released: the worker can take a piece)
        _jit.run_split(fn, 4, 2, lambda t, lo, hi: (t, lo, hi), pieces=4)
        assert sorted(c for c, _ in ran) == [0, 1, 2, 3]
        helped += any(worker for _, worker in ran)
        if call % 3 == 0:
            time.sleep(0.005)                                # the short spin ends: asleep
    assert helped > 0


@pytest.mark.parametrize("spins", [0, None], ids=["sleeping", "spinning"])
def test_barrier_meets_every_round_breaks_and_resets(monkeypatch, spins):
    """``_jit.Barrier`` (the shares' meetings): no party leaves a round before every party came
    to it, spinning or asleep; ``abort`` raises BrokenBarrierError in a waiter and in whoever
    comes later, ``reset`` makes it whole."""
    import threading
    import time

    if spins is not None:
        monkeypatch.setattr(_jit, "_spin_count", spins)
    barrier, reached, early = _jit.Barrier(3), [0, 0, 0], []

    def party(i):
        for r in range(200):
            reached[i] = r + 1
            if r % 50 == i:
                time.sleep(0.002)                            # some rounds, one party comes late
            barrier.wait()
            if min(reached) < r + 1:
                early.append((i, r))
    threads = [threading.Thread(target=party, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads) and not early

    raised = []

    def waiter():
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            raised.append(True)
    alone = threading.Thread(target=waiter)
    alone.start()
    time.sleep(0.05)
    barrier.abort()
    alone.join(60)
    assert raised == [True] and barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()
    barrier.reset()
    assert not barrier.broken
    others = [threading.Thread(target=barrier.wait) for _ in range(2)]
    for t in others:
        t.start()
    barrier.wait()
    for t in others:
        t.join(60)
    assert not any(t.is_alive() for t in others)


# -- convolution: the forward's dynamic pieces, the backward's pieces with their own partials ----

@pytest.mark.parametrize("case", [
    dict(x=(5, 3, 9, 8), w=(4, 3, 1, 1), stride=(1, 1), pad=(0, 0, 0, 0), groups=1, mode=0),     # im2col
    dict(x=(5, 3, 9, 8), w=(4, 3, 3, 3), stride=(2, 2), pad=(1, 1, 1, 1), groups=1, mode=1),     # gather
    dict(x=(5, 32, 6, 7), w=(8, 16, 3, 3), stride=(1, 1), pad=(1, 1, 1, 1), groups=2, mode=2),   # kn2row
    dict(x=(5, 3, 9, 8), w=(4, 3, 3, 3), stride=(1, 1), pad=(1, 2, 0, 1), groups=1, mode=3),     # rowtap
    dict(x=(1, 3, 9, 8), w=(4, 3, 3, 3), stride=(1, 1), pad=(1, 1, 1, 1), groups=1, mode=3),     # batch 1
], ids=["im2col", "gather", "kn2row", "rowtap", "batch1"])
def test_conv_split_matches_numpy_and_does_not_depend_on_timing(monkeypatch, case):
    from cnnspec.kernels import conv
    from cnnspec.kernels.conv import _cached_plan

    monkeypatch.setattr(conv, "_PARALLEL_MACS", 1)
    monkeypatch.setenv("CNNSPEC_THREADS", "3")
    rng = np.random.default_rng(7)
    x = rng.standard_normal(case["x"])
    w = rng.standard_normal(case["w"])
    b = rng.standard_normal(case["w"][0])
    stride, pad, groups = case["stride"], case["pad"], case["groups"]
    out = np.zeros(K.conv2d_output_shape(x.shape, w.shape, stride, pad))
    ws = np.zeros(K.conv2d_workspace_size(x.shape, w.shape, stride, pad, (1, 1), groups))
    assert _cached_plan(x.shape, w.shape, stride, pad, (1, 1), groups).mode == case["mode"]
    K.conv2d_forward_into(x, w, b, stride, pad, (1, 1), groups, out, ws)
    np.testing.assert_allclose(out, R.conv2d_forward(x, w, b, stride, pad, groups=groups), rtol=1e-10,
                               atol=1e-10)
    dout = rng.standard_normal(out.shape)
    runs = []
    for _ in range(3):
        dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
        K.conv2d_backward_into(dout, x, w, stride, pad, (1, 1), groups, dx, dw, db, ws)
        runs.append((dx, dw, db))
    ref = R.conv2d_backward(dout, x, w, b, stride, pad, groups=groups)
    for got, want in zip(runs[0], ref):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    for other in runs[1:]:
        same(runs[0], other)


def test_conv_plan_while_another_thread_imports_the_direct_kernels(monkeypatch):
    """Two threads compiling their first networks at once: one may plan a convolution while the
    other is still importing conv_direct (its module in sys.modules, half made). The plan's key
    must not read an attribute the module does not have yet (it raised AttributeError)."""
    import sys
    import types

    from cnnspec.kernels import conv

    half_made = types.ModuleType("cnnspec.kernels.conv_direct")
    monkeypatch.setitem(sys.modules, "cnnspec.kernels.conv_direct", half_made)
    rules = conv._rules()
    assert rules[-1] is None
    monkeypatch.undo()
    from cnnspec.kernels import conv_direct
    assert conv._rules()[-1] == conv_direct.DW_GROUP_ELEMENTS


@pytest.mark.parametrize("setting", ["CNNSPEC_THREADS=two", "CNNSPEC_SPIN_US=fast"])
def test_a_bad_thread_setting_is_a_message_not_a_traceback(tmp_path, setting):
    """`cnnspec train` with CNNSPEC_THREADS or CNNSPEC_SPIN_US set to nonsense: exit 1 and one
    message naming the variable, no Python traceback."""
    import os
    import subprocess
    import sys

    name, value = setting.split("=")
    env = {**os.environ, name: value}
    env.pop("CNNSPEC_THREADS" if name == "CNNSPEC_SPIN_US" else "CNNSPEC_SPIN_US", None)
    if name == "CNNSPEC_SPIN_US":
        env["CNNSPEC_THREADS"] = "2"                        # a split call asks for the spin time
    from pathlib import Path

    spec = Path(__file__).resolve().parents[1] / "specs" / "lenet5.cnn"
    done = subprocess.run([sys.executable, "-m", "cnnspec", "train", str(spec), "--epochs", "1",
                           "--batch", "64", "--out", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and f"error: {name} must be" in done.stderr, done.stderr
