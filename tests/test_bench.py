"""``cnnspec bench``: the command registers without numba, the measurements and the report run.

No timed assertions: only that figures are produced and reported.
"""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from cnnspec.engine import bench


def test_cli_module_does_not_import_numba():
    code = ("import sys, argparse, cnnspec.engine.cli as c; p = argparse.ArgumentParser(); "
            "c.register(p.add_subparsers()); assert 'numba' not in sys.modules, 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_arguments():
    from cnnspec.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--json", "--analysis"])
    assert args.quick and args.json and args.analysis and args.func.__module__ == "cnnspec.engine.cli"


def test_timed_is_positive():
    assert 0 < bench.timed(lambda: sum(range(100)), 0.01) < 0.01


def test_conv_and_training_measurements():
    row = bench.conv_bench("tiny", (2, 3, 8, 8), 4, 3, 1, 0.01)
    assert row["gflops_forward"] > 0 and row["gflops_forward_backward"] > 0
    row = bench.training_bench("LeNet-5", bench.LENET5, 2, 0.01)
    assert row["samples_per_s"] > 0 and row["params"] == 61706


def test_conv_measurement_beside_pytorch():
    torch = pytest.importorskip("torch")
    row = bench.conv_bench("tiny", (2, 3, 8, 8), 4, 3, 1, 0.01, torch)
    assert row["ratio_forward"] > 0 and row["torch_gflops_forward_backward"] > 0


@pytest.mark.parametrize("kind,args", [
    ("depthwise", dict(shape=(2, 4, 6, 6), kernel=3, stride=2)),
    ("conv_transpose", dict(shape=(2, 4, 3, 3), filters=3, kernel=4, stride=2, pad=1)),
    ("upsample", dict(shape=(2, 3, 4, 4), scale=2, mode="bilinear")),
    ("block", dict(shape=(2, 8, 6, 6), text=bench.MOBILENET_BLOCK.replace("24x56x56", "8x6x6").replace(
        "inverted(24)", "inverted(8, expand=2)"))),
])
def test_layer_measurements(kind, args):
    row = bench.layer_bench("tiny", kind, args, 0.01, rounds=3)
    for key in ("ms_forward", "ms_forward_backward"):
        median, low, high = row[key]
        assert 0 < low <= median <= high
    assert "ratio_forward" not in row


def test_layer_measurement_beside_pytorch():
    torch = pytest.importorskip("torch")
    row = bench.layer_bench("tiny", "depthwise", dict(shape=(2, 4, 6, 6), kernel=3, stride=1),
                            0.01, torch, rounds=3)
    assert row["ratio_forward"][1] > 0 and row["torch_ms_forward_backward"][0] > 0


def test_block_and_small_mobilenet_beside_pytorch():
    torch = pytest.importorskip("torch")
    text = bench.MOBILENET_BLOCK.replace("24x56x56", "8x6x6").replace("inverted(24)", "inverted(8, expand=2)")
    row = bench.layer_bench("block", "block", dict(shape=(2, 8, 6, 6), text=text), 0.01, torch, rounds=3)
    assert row["torch_ms_forward"][0] > 0 and row["ratio_forward_backward"][0] > 0
    row = bench.training_bench("MobileNetV2-S", bench.MOBILENET_SMALL, 2, 0.01, torch, repeat=3)
    median, low, high = row["samples_per_s_spread"]
    assert row["samples_per_s"] == median and 0 < low <= median <= high
    from torch_models import small_mobilenet_v2

    assert row["ratio"] == row["ratio_spread"][0] > 0
    assert row["params"] == sum(p.numel() for p in small_mobilenet_v2().parameters()) == 70_538
    assert bench.timed_rounds(lambda: None, None, 0.01, 4)[1] is None
    assert len(bench.timed_rounds(lambda: None, lambda: None, 0.01, 4)[1]) == 4


def test_report_lists_every_figure():
    results = {
        "machine": {"cpu": "Test CPU", "cores": 2, "threads": 2, "python": "3.11", "numpy": "2", "numba": "0.6",
                    "torch": "2.13"},
        "quick": True,
        "conv": [{"name": "3x3 64->64", "shape": [8, 64, 56, 56], "gflops_forward": 150.0,
                  "gflops_forward_backward": 120.0, "torch_gflops_forward": 180.0,
                  "torch_gflops_forward_backward": 160.0, "ratio_forward": 150 / 180,
                  "ratio_forward_backward": 0.75}],
        "layers": [{"name": "depthwise 3x3 s1", "kind": "depthwise", "shape": [32, 96, 56, 56],
                    "rounds": 7, "ms_forward": [12.5, 11.0, 14.0],
                    "ms_forward_backward": [40.0, 38.0, 45.0],
                    "torch_ms_forward": [25.0, 24.0, 30.0],
                    "torch_ms_forward_backward": [60.0, 55.0, 70.0],
                    "ratio_forward": [2.0, 1.7, 2.3], "ratio_forward_backward": [1.5, 1.2, 1.8]}],
        "training": [{"network": "LeNet-5 1x32x32", "batch": 64, "samples_per_s": 9000.0,
                      "torch_samples_per_s": 8600.0, "ratio": 9000 / 8600}],
        "compile": {"cold": {"import_s": 0.4, "first_step_s": 20.0, "first_forward_s": 1.0},
                    "warm": {"import_s": 0.4, "first_step_s": 0.5, "first_forward_s": 0.1,
                             "start_to_first_step_s": 1.2}},
        "analysis": {"summary_resnet50_s": 0.5, "layers": 1000, "load_1000_layers_s": 0.3,
                     "summary_1000_layers_s": 0.1},
    }
    text = bench.report(results)
    for expected in ("Test CPU", "torch 2.13", "3x3 64->64", "8x64x56x56", "150.0", "180.0", "0.83x",
                     "0.75x", "batch 64", "9000", "1.05x", "20.0 s", "1.2 s", "resnet50", "1000-layer",
                     "depthwise 3x3 s1", "32x96x56x56", "median of 7 rounds", "12.50 (11.00-14.00)",
                     "25.00 (24.00-30.00)", "2.00x (1.70-2.30)", "1.50x (1.20-1.80)"):
        assert expected in text, expected
    results["machine"]["torch"] = None
    for row in results["conv"] + results["layers"] + results["training"]:
        for key in [k for k in row if k.startswith(("torch", "ratio"))]:
            del row[key]
    assert "ratio" not in bench.report(results)


def test_api_against_engine_beside_pytorch():
    torch = pytest.importorskip("torch")
    row = bench.api_bench("tiny", (2, 3, 8, 8), 4, 3, 1, 0.01, torch, rounds=3)
    for key in ("engine_ms_forward", "api_ms_backward", "api_vs_engine_forward", "torch_ms_backward",
                "ratio_forward", "engine_ratio_backward"):
        median, low, high = row[key]
        assert 0 < low <= median <= high, key
    assert row["rounds"] == 3
    assert set(row["faults_forward"]) == {"engine", "api", "torch"}
    assert all(n >= 0 for n in row["faults_backward"].values())
    assert "page faults per call: forward engine" in bench.report(
        {"machine": {"cpu": "X", "cores": 2, "threads": 2, "numpy": "2", "numba": "0", "torch": "2"},
         "conv": [], "layers": [], "training": [], "api": row})


def test_interleaved_rounds_alternate_the_two_sides_call_by_call():
    """The layer API's row: the engine's and the API's calls alternate (each side first in turn),
    every call is counted, PyTorch's side runs in a block after them."""
    calls = []
    first, second, other = (lambda: calls.append("e")), (lambda: calls.append("a")), (lambda: calls.append("t"))
    t_first, t_second, t_other = bench.timed_interleaved(first, second, other, 0.01, 4)
    assert len(t_first) == len(t_second) == len(t_other) == 4
    timed = "".join(calls).split("t", 2)[2]          # after the warm-up and calibration calls
    rounds = [r for r in timed.split("t") if r]
    assert len(rounds) == 4 and all(r == rounds[0] for r in rounds)
    assert rounds[0].startswith("eaae") and rounds[0] == "eaae" * (len(rounds[0]) // 4)
    assert bench.timed_interleaved(first, second, None, 0.01, 3)[2] is None


def test_each_side_runs_after_a_pause(monkeypatch):
    """Every timed run of one side's calls starts after a pause (PyTorch's threads spin on after
    its last call, on the cores the next side needs): in timed_sides, and in timed_interleaved
    before the alternating calls and before PyTorch's block."""
    events = []
    monkeypatch.setattr(bench, "_pause", lambda: events.append("|"))
    a, b = (lambda: events.append("a")), (lambda: events.append("b"))
    bench.timed_sides([a, b], 0.001, 3)
    timed = "".join(events)[4:]                      # after the warm-up and calibration calls
    assert timed.startswith("|")
    assert [set(run) for run in timed.split("|")[1:]] == [{"a"}, {"b"}] * 3, timed
    events.clear()
    bench.timed_interleaved(a, b, lambda: events.append("t"), 0.001, 2)
    timed = "".join(events).split("t", 2)[2]
    assert [set(run) for run in timed.split("|")[1:]] == [{"a", "b"}, {"t"}] * 2, timed


def test_the_api_row_reports_its_quartiles_and_only_its_rows(monkeypatch):
    monkeypatch.setattr(bench, "API_CASE", ("tiny", (2, 3, 8, 8), 4, 3, 1))
    results = bench.run(quick=True, use_torch=False, rounds=3, only=["api"])
    assert results["conv"] == results["training"] == results["layers"] == results["memory"] == []
    assert "compile" not in results
    row = results["api"]
    low, high = row["api_vs_engine_forward_quartiles"]
    assert row["rounds"] == 3 and row["api_vs_engine_forward"][1] <= low <= high <= row["api_vs_engine_forward"][2]
    text = bench.report(results)
    assert "rounds of calls alternating" in text and f"(quartiles {low:.2f}-{high:.2f}; " in text
    assert "convolution" not in text and "training" not in text
    with pytest.raises(ValueError, match="unknown bench rows"):
        bench.run(only=["apis"])
    from cnnspec.cli import build_parser

    assert build_parser().parse_args(["bench", "--only", "api, memory"]).only == ["api", "memory"]
    bad = subprocess.run([sys.executable, "-m", "cnnspec", "bench", "--only", "api,speed"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown rows speed: choose from conv, api" in bad.stderr


def test_training_rows_on_one_thread_restore_the_threads():

    torch = pytest.importorskip("torch")
    saved = torch.get_num_threads()
    torch.set_num_threads(2)                   # not the 1 the bench sets (conftest runs the tests on 1)
    try:
        before_env, before_torch = os.environ.get("CNNSPEC_THREADS"), torch.get_num_threads()
        row = bench.training_bench("LeNet-5", bench.LENET5, 2, 0.01, torch, repeat=3, threads=1)
        assert row["threads"] == 1 and row["samples_per_s"] > 0 and row["ratio"] > 0
        assert os.environ.get("CNNSPEC_THREADS") == before_env and torch.get_num_threads() == before_torch == 2
    finally:
        torch.set_num_threads(saved)


def test_training_rows_time_the_thread_counts_in_the_same_rounds(monkeypatch):
    """The scaling is per round: each round's 1-thread time over its 2-thread time (sides in the
    order cnnspec 2t, torch 2t, cnnspec 1t, torch 1t), and each side runs on its own count."""
    seen = []

    def fake_sides(fns, min_time, rounds=5, around=None):
        for fn, context in zip(fns, around):
            with context():
                seen.append(os.environ.get("CNNSPEC_THREADS"))
        return [[1.0, 2.0, 4.0], None, [3.0, 3.0, 6.0], None]

    monkeypatch.setattr(bench, "timed_sides", fake_sides)
    before = os.environ.get("CNNSPEC_THREADS")
    many, one = bench.training_rows("LeNet-5", bench.LENET5, 2, 0.01, repeat=3, counts=(2, 1))
    assert seen == ["2", "2", "1", "1"] and os.environ.get("CNNSPEC_THREADS") == before
    assert (many["threads"], one["threads"]) == (2, 1)
    assert many["scaling_spread"] == (1.5, 1.5, 3.0) and "scaling_spread" not in one
    assert many["samples_per_s_spread"] == (1.0, 0.5, 2.0) and one["samples_per_s"] == 2 / 3
    text = bench.report({"machine": {"cpu": "Test CPU", "cores": 2, "threads": 2, "python": "3.11",
                                     "numpy": "2", "numba": "0.6", "torch": None},
                         "conv": [], "layers": [], "training": [many, one], "memory": []})
    assert "per round, median (min-max)" in text and "cnnspec 1.50x (1.50-3.00)" in text


def test_training_rows_measure_both_counts_for_real():
    many, one = bench.training_rows("LeNet-5", bench.LENET5, 2, 0.01, repeat=3, counts=(2, 1))
    low, high = many["scaling_spread"][1:]
    assert 0 < low <= many["scaling_spread"][0] <= high and one["samples_per_s"] > 0


def test_unet_row_trains_per_pixel():
    row = bench.training_bench("U-Net-S", bench.UNET_SMALL.replace("3x64x64", "3x16x16"), 2, 0.01, repeat=3)
    assert row["samples_per_s"] > 0


def test_memory_estimate_against_measured():
    row = bench.memory_bench("LeNet-5", bench.LENET5, 4)
    assert row["estimate_bytes"] > 0 and row["measured_bytes"] > 0
    assert row["ratio"] == row["estimate_bytes"] / row["measured_bytes"]
    # ResNet-18 read from specs/ with its input replaced
    text = bench._network_text(("resnet18.cnn", "3x64x64"))
    assert "3x64x64" in text and "224" not in text.split("input", 1)[1].split("\n", 1)[0]


MEMORY_NETS = [
    ("LeNet-5", bench.LENET5, 4),                                     # relu -> maxpool fused
    ("ResNet-8", bench.RESNET8, 4),                                   # batchnorm -> relu, add -> relu
    ("U-Net-S", bench.UNET_SMALL.replace("3x64x64", "3x16x16"), 2),   # a relu read twice, concat
    ("MobileNetV2-S", bench.MOBILENET_SMALL, 2),                      # batchnorm -> relu6
    ("add-relu-maxpool", "network A {\n input x: 2x8x8\n a = conv(4, 3x3, pad=1) -> batchnorm -> relu\n"
                         " b = a -> conv(4, 3x3, pad=1) -> batchnorm\n add(a, b) -> relu -> maxpool(2)\n"
                         " flatten -> dense(8) -> softmax\n}", 16),           # add -> relu, not relu -> maxpool
    ("dropout", "network D {\n input x: 3x12x12\n conv(8, 3x3) -> relu -> maxpool(2)\n"
                " conv(8, 3x3, pad=1) -> batchnorm -> relu -> dropout(0.5) -> flatten -> dense(4) -> softmax\n}", 3),
]


def _numpy_bytes(tracemalloc):
    """Bytes of NumPy arrays allocated since tracemalloc started and still alive."""
    import numpy as np

    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.parametrize("label,text,batch", MEMORY_NETS, ids=[n[0] for n in MEMORY_NETS])
def test_training_memory_estimate_is_what_the_engine_allocates(label, text, batch, monkeypatch):
    """The summary's count of a training step's buffers against the NumPy arrays the engine makes:
    a plan (the outputs, max-pooling's argmax, dropout's mask and draws; its workspace, which the
    estimate leaves out, taken off) and its training step (the gradients), traced by tracemalloc.
    Layer by layer: the shares of training by samples (a gradient and a workspace per thread,
    which the estimate does not model) are in the peak's test below."""
    import tracemalloc

    import cnnspec
    from cnnspec.analysis.summary import training_buffers
    from cnnspec.engine import plan as plan_module

    monkeypatch.setattr(plan_module, "BY_SAMPLES", False)

    net = cnnspec.loads(text)
    estimate = training_buffers(net.graph, batch, 4)
    model = net.compile(dtype="float32", seed=0)
    model._plan(1).training("cross_entropy")             # kernels and caches loaded first
    model._plans.clear()
    tracemalloc.start()
    try:
        plan = model._plan(batch)
        plan_bytes = _numpy_bytes(tracemalloc) - next(iter(plan.ops.values())).ws.nbytes
        tracemalloc.stop()
        tracemalloc.start()
        plan.training("cross_entropy")
        gradient_bytes = _numpy_bytes(tracemalloc)
    finally:
        tracemalloc.stop()
    # beyond the estimate: batchnorm's float64 batch statistics, the loss's scratch (bytes)
    values = estimate["values"] + estimate["side"]
    assert values <= plan_bytes <= 1.01 * values + 8192, (values, plan_bytes)
    assert estimate["gradients"] <= gradient_bytes <= 1.01 * estimate["gradients"] + 8192, (
        estimate["gradients"], gradient_bytes)


def test_training_memory_estimate_tracks_the_measured_peak():
    """The whole estimate (parameters, gradients, momentum too) against the peak a first training
    step allocates (bench.memory_bench, tracemalloc), two threads: within 20% below (the
    convolutions' workspace is not counted) and never more than 5% above."""
    for label, text, batch in [("LeNet-5", bench.LENET5, 64), ("ResNet-8", bench.RESNET8, 32),
                               ("U-Net-S", bench.UNET_SMALL.replace("3x64x64", "3x32x32"), 16)]:
        with bench.using_threads(2):
            row = bench.memory_bench(label, text, batch)
        assert 0.8 <= row["ratio"] <= 1.05, (label, row)


def test_report_prints_scaling_api_and_memory():
    spread = [1.0, 0.9, 1.1]
    results = {
        "machine": {"cpu": "Test CPU", "cores": 2, "threads": 2, "python": "3.11", "numpy": "2", "numba": "0.6",
                    "torch": "2.13"},
        "conv": [{"name": "3x3 64->64", "shape": [8, 64, 56, 56], "threads": 1, "rounds": 5,
                  **{f"{what}_{key}{end}": ([v, v, v] if end else v)
                     for what, v in (("gflops", 100.0), ("torch_gflops", 80.0), ("ratio", 1.25))
                     for key in ("forward", "forward_backward") for end in ("", "_spread")}}],
        "layers": [],
        "api": {"name": "3x3 64->64", "shape": [8, 64, 56, 56], "rounds": 5,
                **{f"{what}_{key}": spread for what in ("engine_ms", "api_ms", "api_vs_engine", "torch_ms",
                                                        "ratio", "engine_ratio")
                   for key in ("forward", "backward")}},
        "training": [{"network": "LeNet-5", "batch": 64, "threads": 2, "rounds": 5, "samples_per_s": 9000.0,
                      "samples_per_s_spread": [9000.0, 8000.0, 9500.0], "torch_samples_per_s": 6000.0,
                      "torch_samples_per_s_spread": [6000.0, 5000.0, 6500.0], "ratio": 1.5,
                      "ratio_spread": [1.5, 1.4, 1.6]},
                     {"network": "LeNet-5", "batch": 64, "threads": 1, "rounds": 5, "samples_per_s": 5000.0,
                      "samples_per_s_spread": [5000.0, 4000.0, 5500.0], "torch_samples_per_s": 4000.0,
                      "torch_samples_per_s_spread": [4000.0, 3000.0, 4500.0], "ratio": 1.25,
                      "ratio_spread": [1.25, 1.2, 1.3]}],
        "memory": [{"network": "LeNet-5", "batch": 64, "estimate_bytes": 3 * 2 ** 20,
                    "measured_bytes": 4 * 2 ** 20, "ratio": 0.75}],
    }
    text = bench.report(results)
    for expected in ("8x64x56x56    1t forward", "1.25x (1.25-1.25)", "api/engine 1.00x (0.90-1.10)",
                     "9000 (8000-9500)", "1.50x (1.40-1.60)", "2 threads", "1 thread ", "cnnspec 1.80x",
                     "torch 1.50x", "estimate    3.0 MiB", "measured    4.0 MiB", "estimate/measured 0.75"):
        assert expected in text, expected


def test_a_failed_compile_child_is_reported_not_fatal(monkeypatch):
    def fail(rounds):
        raise RuntimeError("bench child failed (exit status 0, output 'STEP\\n')")

    monkeypatch.setattr(bench, "compile_bench", fail)
    monkeypatch.setattr(bench, "CONV_CASES", [])
    monkeypatch.setattr(bench, "LAYER_CASES", [])
    monkeypatch.setattr(bench, "TRAINING_CASES", [])
    monkeypatch.setattr(bench, "MEMORY_CASES", [])
    monkeypatch.setattr(bench, "API_CASE", ("tiny", (2, 3, 8, 8), 4, 3, 1))
    results = bench.run(quick=True, use_torch=False, rounds=2)
    assert "compile" not in results and "exit status 0" in results["compile_error"]
    assert "compile: not measured: bench child failed" in bench.report(results)


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc's malloc (its dynamic mmap threshold) is what settle_malloc settles")
def test_the_bench_settles_malloc_before_timing():
    """A call that allocates three 14 MB blocks (64-byte aligned, as PyTorch's CPU allocator asks)
    and frees them: in a fresh process glibc gives the pages back after each call (43 MB free at
    the heap's top, above its trim threshold) and the next call faults them in again; after
    ``settle_malloc`` they stay in the heap, as in a long-running program.  So do six 25 MB
    blocks (150 MB free at the top: above the trim threshold the free of 31 MiB alone leaves)."""
    code = """if True:
        import ctypes, resource, sys
        from cnnspec.engine import bench
        libc = ctypes.CDLL(None)

        def faults(n=14_450_688, k=3):             # the output of a 32x144x28x28 float32 layer
            counts = []
            for _ in range(4):
                start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                blocks = [ctypes.c_void_p() for _ in range(k)]
                for p in blocks:
                    assert libc.posix_memalign(ctypes.byref(p), 64, n) == 0
                    ctypes.memset(p, 1, n)
                for p in blocks:
                    libc.free(p)
                counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
            return counts[-1]

        class Mallinfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]
        libc.mallinfo2.restype = Mallinfo2

        def mapped(n):                          # fresh mappings glibc makes for an n-byte block
            start = libc.mallinfo2().hblks
            p = ctypes.c_void_p()
            assert libc.posix_memalign(ctypes.byref(p), 64, n) == 0
            count = libc.mallinfo2().hblks - start
            libc.free(p)
            return count

        if sys.argv[1] == "150":                # settled at once, then 150 MB a call
            bench.settle_malloc()
            print(faults(25_000_000, 6))
        elif sys.argv[1].startswith("trim first"):  # a trim threshold set before: no dynamic threshold
            libc.mallopt(-1, 1 << 30)
            if sys.argv[1] == "trim first, settled":
                bench.settle_malloc()
            print(mapped(6_422_528))            # the layer API's conv output, 8x64x56x56 float32
        else:
            before = faults()
            bench.settle_malloc()
            print(before, faults())
    """
    run = lambda *args: subprocess.run([sys.executable, "-c", code, *args], check=True,
                                       capture_output=True, text=True).stdout
    assert int(run("150")) < 100         # 30,000 a call without the trim threshold
    # a single block's page faults depend on where small allocations land beside its hole (the
    # next aligned request may not fit the hole: fresh pages at the top in some runs), so the
    # mmap threshold is checked by what it decides: the block comes from the heap, not a mapping
    assert int(run("trim first")) == 1               # the mmap threshold left at 128 KiB
    assert int(run("trim first, settled")) == 0
    before, after = map(int, run("14").split())
    # fresh pages every call: how many of the three blocks depends on where the imports left
    # the heap's top (two here, one in some runs of the whole file), never none
    assert before >= 14_450_688 // 4096, (before, after)
    assert after < 100, (before, after)                         # the heap's, reused


def test_machine_scaling_kernels_compute_what_they_say():
    """The ceiling's two loops against NumPy (float32, the same operations in the same order)."""
    from cnnspec.kernels.machine import arithmetic, streaming

    rng = np.random.default_rng(3)
    a = rng.standard_normal(100).astype(np.float32)
    expected = a.copy()
    for _ in range(7):
        expected = expected * np.float32(0.999) + np.float32(0.001)
    arithmetic(a, 7)
    assert np.array_equal(a, expected)
    x, y = rng.standard_normal((2, 50)).astype(np.float32)
    out = np.empty(50, np.float32)
    streaming(x, y, out)
    assert np.array_equal(out, x + np.float32(0.5) * y)


def test_machine_scaling_runs_each_count_in_the_same_rounds(monkeypatch):
    """Per round: threads x (one thread's time) / (all threads' time); and the two-thread side runs
    a piece on each of two threads at once (a piece of each thread's own arrays)."""
    from cnnspec.kernels import _jit

    calls = []

    def fake_sides(fns, min_time, rounds=5, around=None):
        for fn in fns:
            fn()
        return [[1.0, 1.0, 2.0], [1.0, 2.0, 1.6]]

    def fake_split(fn, n, threads, args_for, pieces=None, together=False, **kw):
        calls.append((n, threads, pieces, together, [id(args_for(t, 0, 0)[0]) for t in range(threads)]))

    monkeypatch.setattr(bench, "timed_sides", fake_sides)
    monkeypatch.setattr(_jit, "run_split", fake_split)
    monkeypatch.setattr(bench, "_STREAMED", 64)
    out = bench.machine_scaling(2, 0.01, 3)
    assert out["arithmetic"] == out["memory"] == (2.0, 1.0, 2.5)
    assert len(calls) == 2 and all(c[:4] == (2, 2, 2, True) and len(set(c[4])) == 2 for c in calls)
    results = {"machine": {"cpu": "Test CPU", "cores": 2, "threads": 2, "python": "3.11", "numpy": "2",
                           "numba": "0.6", "torch": None},
               "conv": [], "layers": [], "memory": [], "machine_scaling": out,
               "training": [{"network": "LeNet-5", "batch": 64, "threads": t, "rounds": 3, "samples_per_s": s,
                             **({"scaling_spread": [1.5, 1.2, 1.7]} if t == 2 else {})}
                            for t, s in ((2, 9.0), (1, 6.0))]}
    text = bench.report(results)
    assert "the machine: 2 threads against 1" in text
    assert "cache 2.00x (1.00-2.50)" in text and "memory 2.00x (1.00-2.50)" in text


def test_machine_scaling_for_real():
    out = bench.machine_scaling(2, 0.01, 2)
    for name in ("arithmetic", "memory"):
        med, low, high = out[name]
        assert 0 < low <= med <= high, (name, out)
