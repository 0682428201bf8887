"""A first run explains itself: kernels are compiled before the first batch (``Model.warm_up``)
under a notice that says so, the progress figures exclude that time, and warming up changes no
result. ``cnnspec bench`` reports the cold compile without a bare "0.00 s"."""
import io
import json
import threading
import time

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.engine import Adam, Model, bench
from cnnspec.train.progress import CompileNotice
from test_train import TINY

NET = """
network Warm {
    input x: 2x8x8
    conv(4, 3x3, pad=1) -> batchnorm -> relu -> maxpool(2)
    flatten -> dense(6) -> dropout(0.5) -> dense(3) -> softmax
}
"""


def arrays(model, opt):
    out = {k: v.copy() for k, v in model.arrays().items()}
    out.update({f"opt.{k}": np.copy(v) for k, v in opt.state_dict().items()})
    out["grads"] = model._flat_grads.copy()
    return out


def test_warm_up_changes_nothing():
    """Two steps after a warm-up give bit-identical weights, batchnorm statistics, Adam state and
    dropout masks to two steps without one (float64, the kernels compiled once for both)."""
    net = cnnspec.loads(NET)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 2, 8, 8)), rng.integers(0, 3, 5)

    def run(warm):
        model = Model(net, dtype="float64", seed=3)
        opt = Adam(model, lr=0.01)
        model.train_step(x, y, opt)
        before = arrays(model, opt)
        if warm:
            model.warm_up(opt)
            after = arrays(model, opt)
            assert before.keys() == after.keys()
            for key in before:
                assert np.array_equal(before[key], after[key]), key
        model.train_step(x, y, opt)
        model.train_step(x, y, opt)
        return arrays(model, opt)

    plain, warmed = run(False), run(True)
    for key in plain:
        assert np.array_equal(plain[key], warmed[key]), key
    assert not np.array_equal(plain["dense1.weight"], Model(net, dtype="float64", seed=3).params["dense1"]["weight"])


def test_warm_up_for_evaluation_and_mse():
    net = cnnspec.loads("network S { input x: 3x6x6\n conv(4, 3x3) -> softmax }")   # not class scores
    model = net.compile(dtype="float64")
    weights = model._flat_params.copy()
    model.warm_up(loss=None, training=False, batch=1)
    model.warm_up(loss="mse")                       # trains a step on zeros, then puts everything back
    assert np.array_equal(model._flat_params, weights)


def test_warm_up_two_inputs_and_per_pixel_labels():
    """A network with two inputs (a dict) and a per-pixel classifier warm up like any other."""
    two = cnnspec.loads("""
network Two {
    input img: 1x6x6
    input label: 3
    a = img -> conv(2, 3x3, pad=1) -> flatten
    b = label -> dense(72)
    concat(a, b) -> dense(4) -> softmax
}""")
    model = two.compile(dtype="float64")
    weights = model._flat_params.copy()
    model.warm_up(Adam(model, lr=0.1))
    assert np.array_equal(model._flat_params, weights)
    seg = cnnspec.loads("network Seg { input x: 2x6x6\n conv(3, 3x3, pad=1) -> softmax }")
    model = seg.compile(dtype="float64")
    weights = model._flat_params.copy()
    model.warm_up(Adam(model, lr=0.1))              # labels of shape (N, 6, 6)
    assert np.array_equal(model._flat_params, weights)


def test_compile_notice_says_what_a_slow_first_run_does():
    stream = io.StringIO()
    with CompileNotice(stream, after=0.05, compiling=lambda: True) as notice:
        time.sleep(0.3)
    assert notice.shown and notice.seconds >= 0.3
    text = stream.getvalue()
    assert text.startswith("compiling kernels for this machine: first run only") and text.endswith(" s\n")
    assert float(text.split("... ")[1].split()[0]) >= 0.3
    quiet = io.StringIO()
    with CompileNotice(quiet, after=0.05, compiling=lambda: False) as notice:
        time.sleep(0.3)                                  # slow, but loading numba's cache: nothing to say
    assert not notice.shown and quiet.getvalue() == ""
    with CompileNotice(quiet, after=5, compiling=lambda: True) as notice:
        pass                                             # fast: nothing to say
    assert not notice.shown and quiet.getvalue() == ""
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with CompileNotice(stream, after=0.01, compiling=lambda: True):
            time.sleep(0.2)
            raise KeyboardInterrupt
    assert stream.getvalue().endswith("... stopped\n")
    assert threading.active_count() < 50


def test_the_notice_hears_numba_compile():
    """The default notice counts numba's compile events (a cache load is not one)."""
    import numba

    @numba.njit                                            # a fresh function: compiled here, no cache
    def double(v):
        return 2 * v

    with CompileNotice(io.StringIO(), after=100) as notice:
        assert double(21) == 42
    assert notice.compiles == 1
    with CompileNotice(io.StringIO(), after=100) as notice:
        double(4)                                           # compiled already
    assert notice.compiles == 0


def test_training_figures_exclude_the_compile(tmp_path, monkeypatch, capsys):
    """A slow warm-up that compiles (standing in for a cold numba cache) is announced, reported apart in the
    final line, and counted neither in the epoch's seconds nor in its samples/s."""
    original = Model.warm_up

    def slow(self, *args, **kwargs):                     # a cold cache: a compile, then seconds
        import numba

        numba.njit(lambda v: v + 1)(1)
        time.sleep(1.5)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Model, "warm_up", slow)
    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    assert main(["train", str(spec), "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "compiling kernels for this machine: first run only" in captured.err
    done = next(line for line in captured.out.splitlines() if line.startswith("done in"))
    assert "s of it compiling kernels, first run only)" in done
    compiled = float(done.split("(")[1].split(" s of it")[0])
    assert compiled >= 1.5
    [row] = json.loads((tmp_path / "run" / "log.json").read_text())["epochs"]
    assert row["seconds"] < 1.5


def test_bench_reports_the_cold_compile_without_a_bare_zero():
    results = {
        "machine": {"cpu": "Test CPU", "cores": 2, "threads": 2, "python": "3.11", "numpy": "2",
                    "numba": "0.6", "torch": None},
        "quick": False, "conv": [], "training": [],
        "compile": {"cold": {"import_s": 0.8, "first_step_s": 6.5, "first_step_cpu_s": 6.1,
                             "second_step_s": 0.0031, "first_forward_s": 0.0009,
                             "first_step_range_s": [6.2, 7.4], "rounds": 3},
                    "warm": {"import_s": 0.45, "first_step_s": 0.4, "start_to_first_step_s": 0.92}},
    }
    text = bench.report(results)
    assert "6.5 s to the first training step (median, 6.2-7.4 s over 3 runs; 6.1 s of CPU" in text
    assert "the step itself, once compiled: 3.1 ms" in text and "evaluation forward after it: 900 us" in text
    assert "0.00 s" not in text
    assert [bench.seconds(v) for v in (12.34, 0.5, 0.0042, 0.00004)] == ["12.3 s", "0.50 s", "4.2 ms", "40 us"]


def test_bench_child_reports_every_figure():
    """The child process of ``compile_bench`` reports every figure the report reads (on numba's
    cache as it is: a cold compile here would cost the suite seconds; ``cnnspec bench`` measures it)."""
    info = bench.child_run(None)
    assert set(info) >= {"import_s", "first_step_s", "first_step_cpu_s", "second_step_s", "first_forward_s",
                         "start_to_first_step_s"}
    assert info["first_step_s"] > info["second_step_s"] > 0
