"""``cnnspec bench``: how fast the engine runs on this machine, beside PyTorch when it is installed.

Measures GFLOP/s of convolution forward and forward+backward on standard shapes (with the
machine's threads and with one thread on each side), the layer API
(``cnnspec.api``) against the engine's kernel calls on the same convolution, the time of the
layers of dsl.md §10 (depthwise, transposed convolution, bilinear upsampling) and of MobileNetV2's
inverted residual block (evaluation forward; training forward+backward), training throughput
(samples/s) of LeNet-5, a small ResNet, a small MobileNetV2 and a small U-Net with the machine's
threads and with one thread on each side, the summary's training-memory estimate against the
measured peak of a training step, the first-call compile time (a fresh process with an empty numba
cache), the time a second process takes from start to its first training step (cache warm) and,
with ``analysis=True``, the speed of the analysis. PyTorch runs the same work in the same process
with as many threads as cnnspec uses. Every timing is taken in rounds: a round runs one side's
calls in a row, then the other's (``timed_rounds``), so a neighbour's load hits both alike (the
layer API and the engine, the same kernels on the same threads, alternate call by call:
``timed_interleaved``); medians and the min-max over the rounds are reported, and ratios are
taken per round. Every figure is returned as data.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# (name, input shape N x C x H x W, filters, kernel, padding on every side)
CONV_CASES = [
    ("3x3 64->64", (8, 64, 56, 56), 64, 3, 1),
    ("5x5 16->32", (64, 16, 14, 14), 32, 5, 2),
    ("3x3 3->32", (32, 3, 32, 32), 32, 3, 1),
]

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

RESNET8 = """
block basic(c) {
    main = conv(c, 3x3, pad=1, bias=false) -> batchnorm -> relu
           -> conv(c, 3x3, pad=1, bias=false) -> batchnorm
    add(in, main) -> relu
}
block down(c) {
    main = conv(c, 3x3, stride=2, pad=1, bias=false) -> batchnorm -> relu
           -> conv(c, 3x3, pad=1, bias=false) -> batchnorm
    skip = in -> conv(c, 1x1, stride=2, bias=false) -> batchnorm
    add(main, skip) -> relu
}
network ResNet8 {
    input image: 3x32x32
    conv(16, 3x3, pad=1, bias=false) -> batchnorm -> relu
    basic(16)
    down(32)
    down(64)
    globalavgpool -> flatten -> dense(10) -> softmax
}
"""

# MobileNetV2's inverted residual block as torchvision builds it (dsl.md §10.2), one block alone
# and a small MobileNetV2-style network at CIFAR size (tests/torch_models.small_mobilenet_v2)
INVERTED = """
block inverted(c, expand=6, stride=1) {
    hidden = in.channels * expand
    if expand != 1 {
        in -> conv(hidden, 1x1, bias=false) -> batchnorm -> relu6
    }
    main = conv(hidden, 3x3, stride=stride, pad=1, groups=hidden, bias=false) -> batchnorm -> relu6
           -> conv(c, 1x1, bias=false) -> batchnorm
    if stride == 1 and in.channels == c {
        add(in, main)
    }
}
"""

MOBILENET_BLOCK = INVERTED + """
network InvertedResidual {
    input x: 24x56x56
    inverted(24)                                  # 24 -> 144 -> depthwise 3x3 -> 24, + shortcut
}
"""

MOBILENET_SMALL = INVERTED + """
network MobileNetV2Small {
    input image: 3x32x32
    conv(16, 3x3, pad=1, bias=false) -> batchnorm -> relu6
    inverted(16, expand=1)
    inverted(24, stride=2) -> inverted(24)
    inverted(32, stride=2) -> inverted(32)
    inverted(64, stride=2)
    conv(128, 1x1, bias=false) -> batchnorm -> relu6
    globalavgpool -> flatten -> dense(10) -> softmax
}
"""

# Layers of dsl.md §10, each beside PyTorch: (name, kind, arguments)
LAYER_CASES = [
    ("depthwise 3x3 s1", "depthwise", dict(shape=(32, 96, 56, 56), kernel=3, stride=1)),
    ("depthwise 3x3 s2", "depthwise", dict(shape=(32, 144, 56, 56), kernel=3, stride=2)),
    ("depthwise 3x3 s1", "depthwise", dict(shape=(32, 144, 28, 28), kernel=3, stride=1)),
    ("conv_transpose 4x4 s2", "conv_transpose", dict(shape=(64, 128, 8, 8), filters=64,
                                                     kernel=4, stride=2, pad=1)),
    ("upsample bilinear x2", "upsample", dict(shape=(16, 64, 32, 32), scale=2, mode="bilinear")),
    ("MobileNetV2 block", "block", dict(shape=(32, 24, 56, 56), text=MOBILENET_BLOCK)),
]

# A small U-Net (specs/unet.cnn's structure, three levels, 16-32-64 channels): transposed
# convolutions up, concat with the encoder's maps, a class per pixel (per-pixel cross-entropy)
UNET_SMALL = """
block double(c) {
    (conv(c, 3x3, pad=1, bias=false) -> batchnorm -> relu) * 2
}
network UNetSmall {
    input image: 3x64x64
    e1 = double(16)                                   # 16x64x64
    e2 = maxpool(2) -> double(32)                     # 32x32x32
    e3 = maxpool(2) -> double(64)                     # 64x16x16
    u2 = conv_transpose(32, 2x2, stride=2)            # 32x32x32
    d2 = concat(e2, u2) -> double(32)
    u1 = conv_transpose(16, 2x2, stride=2)            # 16x64x64
    d1 = concat(e1, u1) -> double(16)
    conv(2, 1x1) -> softmax                           # 2x64x64: a class per pixel
}
"""

# (label, network text, batch sizes)
TRAINING_CASES = [("LeNet-5 1x32x32", LENET5, (1, 64, 256)), ("ResNet-8 3x32x32", RESNET8, (64,)),
                  ("MobileNetV2-S 3x32x32", MOBILENET_SMALL, (64,)), ("U-Net-S 3x64x64", UNET_SMALL, (16,))]

# The training-memory estimate of `cnnspec summary` against a measured training step:
# (label, network text or the name of a file in specs/ with its input replaced, batch)
MEMORY_CASES = [("LeNet-5 1x32x32", LENET5, 64), ("ResNet-18 3x64x64", ("resnet18.cnn", "3x64x64"), 16),
                ("U-Net-S 3x64x64", UNET_SMALL, 16)]

# The layer API (cnnspec.api) against the engine's kernel calls: the shape
API_CASE = ("3x3 64->64", (8, 64, 56, 56), 64, 3, 1)


def timed(fn, min_time: float, repeat: int = 3) -> float:
    """Seconds per call of ``fn``: the best of ``repeat`` runs of as many calls as fill
    ``min_time / repeat`` (after one warm-up call)."""
    return timed_pair(fn, None, min_time, repeat)[0]


def timed_pair(ours, theirs, min_time: float, repeat: int = 3):
    """Seconds per call of ``ours`` and ``theirs`` (None: not measured), measured in alternating
    runs (``timed_rounds``) and the best run of each kept: the one least disturbed."""
    mine, other = timed_rounds(ours, theirs, min_time, repeat)
    return min(mine), (min(other) if other is not None else None)


def timed_rounds(ours, theirs, min_time: float, rounds: int = 5):
    """Seconds per call of ``ours`` and ``theirs`` (None: not measured) in each of ``rounds``
    rounds; a round runs one side's calls in a row, then the other's, so a change of load
    during the bench slows both alike.  Returns (our times, their times or None), one per round."""
    times = timed_sides([ours, theirs], min_time, rounds)
    return times[0], times[1]


# A pause before each side's run of calls: PyTorch's OpenMP threads keep spinning for several
# ms after its last call, on the cores the next side's threads need.  Measured (2 threads, the
# bench's 5x5 16->32 forward, 5 calls timed after 10 of another's, 15 rounds; medians): 4.42 ms
# a call right after PyTorch's, 3.44 after NumPy's (a cache-evicting sum, no threads); after
# PyTorch's and a pause of 5 ms 4.02, of 20 ms 3.76, of 100 ms 3.82 (NumPy's 3.81).  Without
# the pause every run of cnnspec's calls after the first round paid it, PyTorch's none.
SIDE_PAUSE = 0.05


def _pause():
    time.sleep(SIDE_PAUSE)


def timed_sides(fns, min_time: float, rounds: int = 5, around=None) -> list:
    """Seconds per call of each function of ``fns`` (None: not measured, None returned) in each of
    ``rounds`` rounds of ``timed_rounds``: each side's calls in a row within a round (alternating
    single calls would let two thread pools slow each other), the sides one after the other,
    each after a pause (SIDE_PAUSE: the other side's threads at rest), about ``min_time``
    seconds per side.  Each side first runs once to warm up and once to be timed.
    ``around``: per side, None or a zero-argument callable giving the context each of that side's
    runs of calls is made in (``using_threads``: sides on different thread counts)."""
    around = [a or contextlib.nullcontext for a in (around or [None] * len(fns))]
    calls = {}
    for i, fn in enumerate(fns):
        if fn is None:
            continue
        with around[i]():
            fn()
            start = time.perf_counter()
            fn()
            once = max(time.perf_counter() - start, 1e-7)
        calls[i] = max(1, int(min_time / rounds / once))
    times = [[] if fn is not None else None for fn in fns]
    for _ in range(rounds):
        for i, count in calls.items():
            fn = fns[i]
            _pause()
            with around[i]():
                start = time.perf_counter()
                for _ in range(count):
                    fn()
                times[i].append((time.perf_counter() - start) / count)
    return times


def timed_interleaved(first, second, other, min_time: float, rounds: int = 15):
    """Seconds per call of ``first`` and ``second``, two functions that run the same kernels on
    the same threads (the engine's calls and the layer API's), and of ``other`` (None: not
    measured), in each of ``rounds`` rounds: a round runs ``first`` and ``second`` alternating
    call by call (first, second, second, first, ...: neither is always the one after the other),
    each call timed, then ``other``'s calls in a row (PyTorch's: its own thread pool would slow
    the others' calls if it were interleaved), each run after a pause (SIDE_PAUSE).  About ``min_time`` seconds per side.  Timed in
    blocks (``timed_sides``), a neighbour's burst of load fell on one side's block and the
    per-round ratio of two equal sides read 0.6-1.6; interleaved, it lands on both.  Every call is
    in the sums, so a cost that only some calls pay (page faults, say) is counted.  Returns
    (first's times, second's times, other's times or None), one per round."""
    first()
    second()
    start = time.perf_counter()
    first()
    second()
    once = max((time.perf_counter() - start) / 2, 1e-7)
    quads = max(1, round(min_time / rounds / once / 2))      # first, second, second, first
    calls = None
    if other is not None:
        other()
        start = time.perf_counter()
        other()
        calls = max(1, int(min_time / rounds / max(time.perf_counter() - start, 1e-7)))
    times = ([], [], [] if other is not None else None)
    clock = time.perf_counter
    for _ in range(rounds):
        spent = [0.0, 0.0]
        _pause()
        for _ in range(quads):
            for side, fn in ((0, first), (1, second), (1, second), (0, first)):
                start = clock()
                fn()
                spent[side] += clock() - start
        times[0].append(spent[0] / (2 * quads))
        times[1].append(spent[1] / (2 * quads))
        if other is not None:
            _pause()
            start = clock()
            for _ in range(calls):
                other()
            times[2].append((clock() - start) / calls)
    return times


def settle_malloc():
    """Put glibc's malloc in the state a long-running program reaches, before anything is timed.

    glibc serves a block above its mmap threshold (128 KiB at start) with fresh pages from the
    kernel, and raises the threshold to the size of the first such block freed (up to 32 MiB).
    A program that frees blocks of many sizes soon serves them from its heap; but one that asks
    for one size with alignment again and again, as PyTorch's CPU allocator does (64-byte aligned
    blocks, each a page larger than the last threshold), keeps mapping fresh pages: PyTorch's
    depthwise 3x3 on 32x144x28x28 took 10,000 page faults and 15-100 ms per call in a fresh
    process, none and 2.4-2.9 ms once a larger block had been freed.  Which state a row met
    depended on the rows before it.  So the threshold is set where a long-running program's ends
    up, 32 MiB (M_MMAP_THRESHOLD), for every row, PyTorch's blocks and the layer API's new
    outputs alike; and the heap's free top is kept (M_TRIM_THRESHOLD 1 GiB): glibc otherwise gives
    it back to the kernel once twice the threshold is free there, and a call that frees more
    (PyTorch's forward+backward of the same depthwise row, its fresh gradients) faulted
    1,700-17,600 pages back in on the next call (22-69 ms against 16.6-18 ms).  Setting either
    threshold turns glibc's dynamic threshold off, so both are set: the trim threshold alone, set
    first, would leave the mmap threshold at 128 KiB and every large block a fresh mapping (the
    layer API's 6.4 MB conv output: 547 page faults a call, PyTorch's 4,700).  Settled, neither
    faults after its first call (checked per call with getrusage in the API row: the engine's,
    the API's and PyTorch's calls).  For the bench's process: it keeps up to 1 GiB of freed
    memory.  A no-op with other allocators."""
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # glibc's malloc.h


@contextlib.contextmanager
def using_threads(threads: int | None, torch=None):
    """cnnspec's kernels (``CNNSPEC_THREADS``) and PyTorch (``set_num_threads``) on ``threads``
    threads inside the block (None: as they are).  Plans made inside keep workspaces for that many
    threads: make models inside the block."""
    if threads is None:
        yield
        return
    saved_env = os.environ.get("CNNSPEC_THREADS")
    saved_torch = torch.get_num_threads() if torch is not None else None
    os.environ["CNNSPEC_THREADS"] = str(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("CNNSPEC_THREADS", None)
        else:
            os.environ["CNNSPEC_THREADS"] = saved_env
        if torch is not None:
            torch.set_num_threads(saved_torch)


def _spread(values):
    """(median, min, max) of a list of figures."""
    return float(np.median(values)), float(min(values)), float(max(values))


def _quartiles(values):
    """(first, third) quartile of a list of figures."""
    return float(np.percentile(values, 25)), float(np.percentile(values, 75))


def _layer_steps(kind, args, torch):
    """(forward, forward+backward) of cnnspec's kernels and, with torch, of PyTorch, on the
    same float32 data."""
    from cnnspec import kernels as K

    rng = np.random.default_rng(0)
    x = rng.standard_normal(args["shape"], dtype=np.float32)
    n, c, h, w = x.shape
    F = torch.nn.functional if torch is not None else None
    if kind == "depthwise":                   # MobileNet's: groups = C, no bias, pad k // 2
        k, s = args["kernel"], args["stride"]
        weight = rng.standard_normal((c, 1, k, k), dtype=np.float32) * 0.3
        geometry = ((s, s), (k // 2,) * 4, (1, 1), c)
        out = np.zeros(K.conv2d_output_shape(x.shape, weight.shape, *geometry[:3]), np.float32)
        ws = np.zeros(K.conv2d_workspace_size(x.shape, weight.shape, *geometry), np.float32)

        def forward():
            K.conv2d_forward_into(x, weight, None, *geometry, out, ws)

        def backward():
            K.conv2d_backward_into(dout, x, weight, *geometry, dx, dw, None, ws)

        def torch_forward(tx, tw):
            return F.conv2d(tx, tw, None, s, k // 2, 1, c)
    elif kind == "conv_transpose":            # DCGAN's: 4x4, stride 2, pad 1, no bias
        k, s, p, f = args["kernel"], args["stride"], args["pad"], args["filters"]
        weight = rng.standard_normal((c, f, k, k), dtype=np.float32) * 0.05
        geometry = ((s, s), (p,) * 4, (0, 0), (1, 1), 1)
        out = np.zeros(K.conv_transpose2d_output_shape(x.shape, weight.shape, *geometry),
                       np.float32)
        ws = np.zeros(K.conv_transpose2d_workspace_size(x.shape, weight.shape, *geometry),
                      np.float32)

        def forward():
            K.conv_transpose2d_forward_into(x, weight, None, *geometry, out, ws)

        def backward():
            K.conv_transpose2d_backward_into(dout, x, weight, *geometry, dx, dw, None, ws)

        def torch_forward(tx, tw):
            return F.conv_transpose2d(tx, tw, None, s, p)
    elif kind == "upsample":
        scale, mode = args["scale"], args["mode"]
        weight = None
        out = np.zeros((n, c, h * scale, w * scale), np.float32)

        def forward():
            K.upsample2d_forward_into(x, (scale, scale), mode, out)

        def backward():
            K.upsample2d_backward_into(dout, (scale, scale), mode, dx)

        def torch_forward(tx, tw):
            return F.interpolate(tx, scale_factor=scale, mode=mode, align_corners=False)
    elif kind == "block":
        return _block_steps(args, x, torch)
    else:
        raise ValueError(f"unknown layer bench {kind!r}")
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    dx = np.zeros_like(x)
    dw = None if weight is None else np.zeros_like(weight)

    def forward_backward():
        forward()
        backward()

    steps = [forward, forward_backward]
    if torch is None:
        return steps + [None, None]
    tx = torch.from_numpy(x).requires_grad_(True)
    tw = None if weight is None else torch.from_numpy(weight).requires_grad_(True)
    tdout = torch.from_numpy(dout)

    def t_forward():
        with torch.no_grad():
            torch_forward(tx, tw)

    def t_forward_backward():
        tx.grad = None
        if tw is not None:
            tw.grad = None
        torch_forward(tx, tw).backward(tdout)

    return steps + [t_forward, t_forward_backward]


def _block_steps(args, x, torch):
    """A network of one block (``args["text"]``): the evaluation forward, and the training
    forward + backward (mse against zeros, parameter gradients included), of the engine's plan and
    of the same network in PyTorch (TorchNet: torch.nn.functional, the same weights)."""
    import cnnspec

    model = cnnspec.loads(args["text"]).compile(dtype="float32", seed=0)
    assert model.input_shape == x.shape[1:], (model.input_shape, x.shape)
    target = np.zeros((len(x), *model.output_shape), np.float32)
    plan = model._plan(len(x))
    training = plan.training("mse")
    inputs = {model.input_name: x}
    steps = [lambda: plan.forward(inputs), lambda: training.run(inputs, target)]
    if torch is None:
        return steps + [None, None]
    from cnnspec.engine.torch_ref import TorchNet

    tnet = TorchNet(model)
    tx, ttarget = torch.from_numpy(x), torch.from_numpy(target)
    params = tnet.parameters()

    def t_forward():
        with torch.no_grad():
            tnet.forward(tx, training=False)

    def t_forward_backward():
        for p in params:
            p.grad = None
        torch.nn.functional.mse_loss(tnet.forward(tx, training=True), ttarget).backward()

    return steps + [t_forward, t_forward_backward]


def layer_bench(name, kind, args, min_time, torch=None, rounds=5) -> dict:
    """Milliseconds per call of one layer, forward and forward+backward, float32, over
    ``rounds`` alternating rounds with PyTorch: medians and (min, max); ratio = PyTorch's time /
    cnnspec's, per round (above 1: cnnspec is faster)."""
    forward, forward_backward, t_forward, t_forward_backward = _layer_steps(kind, args, torch)
    row = {"name": name, "kind": kind, "shape": list(args["shape"]), "rounds": rounds}
    for key, ours, theirs in (("forward", forward, t_forward),
                              ("forward_backward", forward_backward, t_forward_backward)):
        mine, other = timed_rounds(ours, theirs, min_time, rounds)
        row["ms_" + key] = _spread([1e3 * t for t in mine])
        if other is not None:
            row["torch_ms_" + key] = _spread([1e3 * t for t in other])
            row["ratio_" + key] = _spread([b / a for a, b in zip(mine, other)])
    return row


def _conv_data(shape, filters, k, pad):
    """Float32 x, weight, bias and an upstream gradient of a k x k stride-1 convolution."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    weight = rng.standard_normal((filters, shape[1], k, k), dtype=np.float32) * 0.1
    bias = rng.standard_normal(filters, dtype=np.float32)
    n, _, h, w = shape
    dout = rng.standard_normal((n, filters, h + 2 * pad - k + 1, w + 2 * pad - k + 1), dtype=np.float32)
    return x, weight, bias, dout


def _torch_conv(torch, x, weight, bias, dout, pad):
    """PyTorch's (forward, forward+backward) of the same convolution."""
    tx = torch.from_numpy(x).requires_grad_(True)
    tw = torch.from_numpy(weight).requires_grad_(True)
    tb = torch.from_numpy(bias).requires_grad_(True)
    tdout = torch.from_numpy(dout)
    F = torch.nn.functional

    def t_forward():
        with torch.no_grad():
            F.conv2d(tx, tw, tb, padding=pad)

    def t_forward_backward():
        tx.grad = tw.grad = tb.grad = None
        F.conv2d(tx, tw, tb, padding=pad).backward(tdout)

    return t_forward, t_forward_backward


def conv_bench(name, shape, filters, k, pad, min_time, torch=None, repeat=5) -> dict:
    """GFLOP/s of one float32 convolution: forward (FLOPs = 2 x MACs) and forward+backward
    (3x the forward's FLOPs: the output, the input gradient, the weight gradient), over
    ``repeat`` rounds beside PyTorch: the medians (``gflops_*``), (median, min, max) of the rounds
    (``*_spread``) and the per-round ratio cnnspec / PyTorch (``ratio_*``: its median)."""
    from cnnspec import kernels as K

    x, weight, bias, dout = _conv_data(shape, filters, k, pad)
    n, c = shape[:2]
    oh, ow = dout.shape[2:]
    out = np.zeros(dout.shape, np.float32)
    dx, dw, db = np.zeros_like(x), np.zeros_like(weight), np.zeros_like(bias)
    geometry = ((1, 1), (pad,) * 4, (1, 1), 1)
    ws = np.zeros(K.conv2d_workspace_size(x.shape, weight.shape, *geometry), np.float32)
    flops = 2.0 * n * filters * oh * ow * c * k * k

    def forward():
        K.conv2d_forward_into(x, weight, bias, *geometry, out, ws)

    def forward_backward():
        K.conv2d_forward_into(x, weight, bias, *geometry, out, ws)
        K.conv2d_backward_into(dout, x, weight, *geometry, dx, dw, db, ws)

    t_forward = t_forward_backward = None
    if torch is not None:
        t_forward, t_forward_backward = _torch_conv(torch, x, weight, bias, dout, pad)
    row = {"name": name, "shape": list(shape), "filters": filters, "kernel": k, "pad": pad, "rounds": repeat}
    for key, ours, theirs, work in (("forward", forward, t_forward, flops),
                                    ("forward_backward", forward_backward, t_forward_backward, 3 * flops)):
        mine, other = timed_rounds(ours, theirs, min_time, repeat)
        row[f"gflops_{key}_spread"] = _spread([work / t / 1e9 for t in mine])
        row[f"gflops_{key}"] = row[f"gflops_{key}_spread"][0]
        if other is not None:
            row[f"torch_gflops_{key}_spread"] = _spread([work / t / 1e9 for t in other])
            row[f"torch_gflops_{key}"] = row[f"torch_gflops_{key}_spread"][0]
            row[f"ratio_{key}_spread"] = _spread([b / a for a, b in zip(mine, other)])
            row[f"ratio_{key}"] = row[f"ratio_{key}_spread"][0]
    return row


def api_bench(name, shape, filters, k, pad, min_time, torch=None, rounds=5) -> dict:
    """The layer API against the engine on one float32 convolution: ``cnnspec.api``'s
    conv2d_forward and conv2d_backward (checked arguments, new output arrays each call) and the
    kernel calls of the engine's plan (buffers made once), beside PyTorch; ms per call over
    ``rounds`` rounds of ``timed_interleaved`` (median, min, max), and per round engine time / api
    time (``api_vs_engine_*``: 1.0 = as fast; ``*_quartiles`` too) and PyTorch time / api time
    (``ratio_*``); ``faults_*``: page faults per timed call of each side (getrusage around each
    call: a cost the API's new arrays would pay if malloc mapped fresh pages for them)."""
    from cnnspec import api
    from cnnspec import kernels as K

    x, weight, bias, dout = _conv_data(shape, filters, k, pad)
    geometry = ((1, 1), (pad,) * 4, (1, 1), 1)
    out = np.zeros(dout.shape, np.float32)
    dx, dw, db = np.zeros_like(x), np.zeros_like(weight), np.zeros_like(bias)
    ws = np.zeros(K.conv2d_workspace_size(x.shape, weight.shape, *geometry), np.float32)
    sides = {
        "forward": (lambda: K.conv2d_forward_into(x, weight, bias, *geometry, out, ws),
                    lambda: api.conv2d_forward(x, weight, bias, 1, pad)),
        "backward": (lambda: K.conv2d_backward_into(dout, x, weight, *geometry, dx, dw, db, ws),
                     lambda: api.conv2d_backward(dout, x, weight, bias, 1, pad)),
    }
    theirs = {"forward": None, "backward": None}
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_(True)
        tw = torch.from_numpy(weight).requires_grad_(True)
        tb = torch.from_numpy(bias).requires_grad_(True)
        tout = torch.nn.functional.conv2d(tx, tw, tb, padding=pad)
        tdout = torch.from_numpy(dout)
        theirs["forward"] = _torch_conv(torch, x, weight, bias, dout, pad)[0]

        def t_backward():
            tx.grad = tw.grad = tb.grad = None
            tout.backward(tdout, retain_graph=True)
        theirs["backward"] = t_backward
    row = {"name": name, "shape": list(shape), "filters": filters, "kernel": k, "pad": pad, "rounds": rounds}
    for key, (engine, layer_api) in sides.items():
        counted = [_faults_counted(fn) for fn in (engine, layer_api, theirs[key])]
        t_engine, t_api, t_torch = timed_interleaved(*(fn for fn, _ in counted), min_time, rounds)
        # per timed call: the first two calls of each side warm up and calibrate
        row[f"faults_{key}"] = {who: sum(log[2:]) / max(1, len(log) - 2)
                                for who, (_, log) in zip(("engine", "api", "torch"), counted) if log is not None}
        row[f"engine_ms_{key}"] = _spread([1e3 * t for t in t_engine])
        row[f"api_ms_{key}"] = _spread([1e3 * t for t in t_api])
        ratios = [a / b for a, b in zip(t_engine, t_api)]
        row[f"api_vs_engine_{key}"] = _spread(ratios)
        row[f"api_vs_engine_{key}_quartiles"] = _quartiles(ratios)
        if t_torch is not None:
            row[f"torch_ms_{key}"] = _spread([1e3 * t for t in t_torch])
            row[f"ratio_{key}"] = _spread([b / a for a, b in zip(t_api, t_torch)])
            row[f"engine_ratio_{key}"] = _spread([b / a for a, b in zip(t_engine, t_torch)])
    return row


def _faults_counted(fn):
    """(fn wrapped to log the page faults of each call, the log); (None, None) for None; fn
    itself and an empty log where getrusage is missing."""
    if fn is None:
        return None, None
    log = []
    try:
        import resource
    except ImportError:
        return fn, log

    def counted():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        log.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counted, log


def _labels(rng, model, batch):
    """Class labels for a batch: one per sample, or one per pixel of a KxHxW output."""
    k, *spatial = model.output_shape
    return rng.integers(0, k, (batch, *spatial) if spatial else batch)


def training_bench(label, text, batch, min_time, torch=None, repeat=3, threads=None) -> dict:
    """Samples per second of training steps (SGD with momentum, cross-entropy) at one batch size,
    over ``repeat`` alternating rounds with PyTorch: the median (``samples_per_s``) and the
    (median, min, max) of the rounds (``*_spread``); ratio = cnnspec's / PyTorch's, per round.
    ``threads``: both sides on that many threads (None: as they are)."""
    return training_rows(label, text, batch, min_time, torch, repeat, (threads,))[0]


def training_rows(label, text, batch, min_time, torch=None, repeat=3, counts=(None,)) -> list:
    """:func:`training_bench`'s row for each thread count of ``counts``, all timed in the same
    rounds (one model per count, each side's steps in a row on its count of threads), so that a
    change of the machine's speed between minutes hits every count alike.  With 1 among the
    counts, each other count's row also has the scaling per round: ``scaling_spread`` (cnnspec's
    samples/s on that many threads / on one) and ``torch_scaling_spread``."""
    import cnnspec
    from cnnspec.engine import SGD

    sides, around = [], []
    for count in counts:
        with using_threads(count, torch):
            net = cnnspec.loads(text)
            model = net.compile(dtype="float32", seed=0)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((batch, *model.input_shape), dtype=np.float32)
            y = _labels(rng, model, batch)
            opt = SGD(model, lr=0.01, momentum=0.9)
            sides.append(lambda model=model, x=x, y=y, opt=opt: model.train_step(x, y, opt))
            if torch is not None:
                from cnnspec.engine.torch_ref import TorchNet

                tnet = TorchNet(model)
                topt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9)
                tx, ty = torch.from_numpy(x), torch.from_numpy(y)

                def torch_step(tnet=tnet, topt=topt, tx=tx, ty=ty):
                    topt.zero_grad()
                    loss = tnet.loss(tx, ty)
                    loss.backward()
                    topt.step()
            sides.append(torch_step if torch is not None else None)
        around += [lambda count=count: using_threads(count, torch)] * 2
    times = timed_sides(sides, min_time, repeat, around)
    rows = []
    for k, count in enumerate(counts):
        mine, other = times[2 * k], times[2 * k + 1]
        row = {"network": label, "batch": batch, "params": model.n_params, "rounds": repeat,
               "threads": count, "samples_per_s_spread": _spread([batch / t for t in mine])}
        row["samples_per_s"] = row["samples_per_s_spread"][0]
        if torch is not None:
            row["torch_samples_per_s_spread"] = _spread([batch / t for t in other])
            row["torch_samples_per_s"] = row["torch_samples_per_s_spread"][0]
            row["ratio_spread"] = _spread([b / a for a, b in zip(mine, other)])
            row["ratio"] = row["ratio_spread"][0]
        if count and count > 1 and 1 in counts:
            one = counts.index(1)
            row["scaling_spread"] = _spread([a / b for a, b in zip(times[2 * one], mine)])
            if torch is not None:
                row["torch_scaling_spread"] = _spread([a / b for a, b in zip(times[2 * one + 1], other)])
        rows.append(row)
    return rows


# What the machine itself gives a second thread: the same fixed work on every thread at once
# (each thread its own arrays), against one thread doing it alone.  On a virtual machine whose
# vCPUs share physical cores with other guests this is well under 2: the training rows' scaling
# is to be read against it.  Measured on the 2-vCPU Zen 3 of the performance log (run H, 5
# rounds): the L1 loop 1.79x (1.03-1.85), the stream 0.99x (0.92-1.27).
_ARITHMETIC = 2048                    # float32 elements per thread: 8 KiB, in L1
_ARITHMETIC_TURNS = 20000             # passes over them a call: ~2-5 ms
_STREAMED = 4 << 20                   # float32 elements per array, three arrays per thread: 48 MiB


def machine_scaling(threads: int, min_time: float, rounds: int = 5) -> dict:
    """How much faster ``threads`` threads get through a fixed amount of work per thread than one
    thread through one such amount, on the engine's own threads (``_jit.run_split``, every piece
    on its own thread): a loop on data in each core's L1 (``arithmetic``) and a stream through
    arrays larger than the last-level cache (``memory``).  Per round, ``threads`` x (one
    thread's seconds) / (all threads' seconds); (median, min, max) over ``rounds`` rounds, the
    two counts' calls in a row each round (``timed_sides``)."""
    from cnnspec.kernels import _jit
    from cnnspec.kernels.machine import arithmetic, streaming

    # each thread's cells 256 bytes clear of any other's: a cache line written by two cores
    # (numpy's small arrays lie side by side) made two threads slower than one, 0.8x
    cells = [np.ones(_ARITHMETIC + 128, np.float32)[64:-64] for _ in range(threads)]
    streams = [tuple(np.ones(_STREAMED, np.float32) for _ in range(3)) for _ in range(threads)]
    out = {"threads": threads, "rounds": rounds}
    for name, fn, args in (("arithmetic", arithmetic, [(c, _ARITHMETIC_TURNS) for c in cells]),
                           ("memory", streaming, streams)):
        def one(fn=fn, args=args):
            fn(*args[0])

        def many(fn=fn, args=args):
            _jit.run_split(fn, threads, threads, lambda t, lo, hi: args[t], pieces=threads, together=True)
        alone, together = timed_sides([one, many], min_time, rounds)
        out[name] = _spread([threads * a / b for a, b in zip(alone, together)])
    return out


def _network_text(spec) -> str | None:
    """A MEMORY_CASES network: its text, or (file in specs/, input size) read with the input
    replaced (None when the specs folder is not there: an installed package)."""
    if isinstance(spec, str):
        return spec
    name, size = spec
    path = Path(__file__).resolve().parents[2] / "specs" / name
    if not path.exists():
        return None
    import re

    return re.sub(r"(input \w+:\s*)[0-9x]+", lambda m: m.group(1) + size, path.read_text(), count=1)


def memory_bench(label, text, batch) -> dict:
    """The summary's training-memory estimate (float32, ``batch``) against the peak of what a
    float32 model allocates to make its first training step (SGD with momentum, as the estimate
    counts one optimizer slot for it): parameters, gradients, optimizer state, the plan's
    activations, gradients and workspace, traced with tracemalloc (NumPy reports its arrays to it;
    the input batch is made before, the kernels loaded before).  ``ratio`` = estimate / measured."""
    import tracemalloc

    import cnnspec
    from cnnspec.engine import SGD

    net = cnnspec.loads(text)
    graph = net.graph
    train = dict(graph.graph.get("train") or {})
    graph.graph["train"] = {**train, "optimizer": {"name": "sgd", "momentum": 0.9}}
    try:
        estimate = net.summary(batch=batch)["totals"]["memory_bytes"]["training"]
    finally:
        graph.graph["train"] = train or None
    rng = np.random.default_rng(0)
    shape = graph.nodes[graph.graph["input"]]["output_shape"]
    # the kernels loaded (or compiled) first, by a step of another model at the same batch (at
    # batch 2, LeNet-5's step at batch 16 then measured 4.05 MiB, 1.7 more than at the second
    # try: the kernels a larger batch reaches, the threads' first split): what numba and the
    # thread pool keep of them is not the step's memory
    warm = net.compile(dtype="float32", seed=0)
    warm.train_step(rng.standard_normal((batch, *shape), dtype=np.float32), _labels(rng, warm, batch),
                    SGD(warm, lr=0.01, momentum=0.9))
    del warm
    x = rng.standard_normal((batch, *shape), dtype=np.float32)
    tracemalloc.start()
    try:
        model = net.compile(dtype="float32", seed=0)
        y = _labels(rng, model, batch)
        model.train_step(x, y, SGD(model, lr=0.01, momentum=0.9))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"network": label, "batch": batch, "estimate_bytes": int(estimate), "measured_bytes": int(peak),
            "ratio": estimate / peak}


# A child process: imports, compiles LeNet-5, makes one training step (wall and CPU time), then a
# second one (the step without compiling) and an evaluation forward, says when.
CHILD = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np
import cnnspec
from cnnspec.engine import SGD
imported = time.perf_counter()
cpu = time.process_time()
net = cnnspec.loads(sys.argv[1])
model = net.compile(dtype="float32", seed=0)
opt = SGD(model, lr=0.01, momentum=0.9)
x = np.zeros((64, *model.input_shape), np.float32)
y = np.zeros(64, np.int64)
model.train_step(x, y, opt)
stepped = time.perf_counter()
step_cpu = time.process_time() - cpu
print("STEP", flush=True)
model.train_step(x, y, opt)
again = time.perf_counter()
model.forward(x)
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "first_step_s": stepped - imported,
                  "first_step_cpu_s": step_cpu, "second_step_s": again - stepped,
                  "first_forward_s": done - again}), flush=True)
"""


def child_run(cache_dir: str | None) -> dict:
    """Run CHILD with ``NUMBA_CACHE_DIR=cache_dir`` (None: numba's cache as it is); time from
    spawn to its first training step."""
    env = dict(os.environ) if cache_dir is None else {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    start = time.perf_counter()
    # unbuffered bytes: a text pipe's readline reads ahead, and when the child is quick the
    # figures' line lands in that buffer, where communicate() (reading the pipe itself) never
    # sees it (the suite failed so on a busy machine: "output 'STEP\n'", exit status 0)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, LENET5], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0, env=env)
    line = proc.stdout.readline().decode()
    to_step = time.perf_counter() - start
    rest, err = (part.decode(errors="replace") for part in proc.communicate())
    lines = rest.strip().splitlines()
    if proc.returncode != 0 or line.strip() != "STEP" or not lines:
        raise RuntimeError(f"bench child failed (exit status {proc.returncode}, output {(line + rest)[-300:]!r}):"
                           f"\n{err[-2000:]}")
    info = json.loads(lines[-1])
    info["start_to_first_step_s"] = to_step
    return info


def compile_bench(rounds: int = 3) -> dict:
    """First-call compile time (``rounds`` processes, each with an empty numba cache: the median
    and range are reported) and a second process's start-to-first-step on a warm cache."""
    colds = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="cnnspec-bench-") as cache:
            colds.append(child_run(cache))
            warm = child_run(cache)
    cold = {key: statistics.median(run[key] for run in colds) for key in colds[0]}
    cold["first_step_range_s"] = [min(r["first_step_s"] for r in colds), max(r["first_step_s"] for r in colds)]
    cold["rounds"] = rounds
    return {"cold": cold, "warm": warm}


def analysis_bench(specs_dir: Path | None = None) -> dict:
    """Cold ``cnnspec summary specs/resnet50.cnn`` in a subprocess; analysis of 1,000 layers."""
    import cnnspec

    out = {}
    specs_dir = specs_dir or Path(__file__).resolve().parents[2] / "specs"
    resnet50 = specs_dir / "resnet50.cnn"
    if resnet50.exists():
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cnnspec", "summary", str(resnet50)],
                              capture_output=True, text=True)
        out["summary_resnet50_s"] = time.perf_counter() - start
        out["summary_resnet50_ok"] = proc.returncode == 0
    text = "network Deep {\n    input x: 8x16x16\n    (conv(8, 3x3, pad=1) -> relu) * 500\n}\n"
    start = time.perf_counter()
    net = cnnspec.loads(text)
    loaded = time.perf_counter()
    net.summary_table()
    out["layers"] = len(net.graph) - 1
    out["load_1000_layers_s"] = loaded - start
    out["summary_1000_layers_s"] = time.perf_counter() - loaded
    return out


def machine(threads: int, torch=None) -> dict:
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__,
            "torch": torch.__version__ if torch is not None else None}


# The groups of rows ``run(only=...)`` (``cnnspec bench --only``) chooses from
GROUPS = ("conv", "api", "layers", "training", "memory", "compile")


def run(quick: bool = False, analysis: bool = False, use_torch: bool = True, compile_times: bool = True,
        progress=None, rounds: int | None = None, only=None) -> dict:
    """Every measurement, as a dict (what ``cnnspec bench --json`` prints). ``rounds``: alternating
    rounds per measurement (default 3 quick, else 5, 7 for the layer rows and 15 for the layer API's
    interleaved rounds).  ``only``: the groups of GROUPS to run (None: all)."""
    from cnnspec.kernels._jit import num_threads

    only = set(GROUPS if only is None else only)
    if only - set(GROUPS):
        raise ValueError(f"unknown bench rows {sorted(only - set(GROUPS))}: choose from {', '.join(GROUPS)}")

    say = progress or (lambda message: None)
    settle_malloc()
    threads = num_threads()
    torch = None
    if use_torch:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            torch = None
    min_time = 0.3 if quick else 2.0
    repeat = rounds or (3 if quick else 5)
    layer_rounds = rounds or (3 if quick else 7)
    api_rounds = rounds or (5 if quick else 15)
    results = {"machine": machine(threads, torch), "quick": quick, "conv": [], "layers": [],
               "training": [], "memory": []}
    for case in CONV_CASES if "conv" in only else ():
        # with the machine's threads and with one on each side: PyTorch's OpenMP threads suffer
        # most when another process holds a core, so the one-thread rows are the steadier ones
        for count in sorted({threads, 1}, reverse=True):
            say(f"conv {case[0]}, {count} thread{'s' * (count > 1)}")
            with using_threads(count, torch):
                row = conv_bench(*case, min_time, torch, repeat)
            results["conv"].append({**row, "threads": count})
    if "api" in only:
        say(f"layer API against the engine, conv {API_CASE[0]}")
        results["api"] = api_bench(*API_CASE, min_time, torch, api_rounds)
    for name, kind, args in LAYER_CASES if "layers" in only else ():
        say(f"layer {name} {'x'.join(map(str, args['shape']))}")
        results["layers"].append(layer_bench(name, kind, args, min_time, torch, layer_rounds))
    for label, text, batches in TRAINING_CASES if "training" in only else ():
        for batch in batches:
            # the thread counts timed in the same rounds: the scaling is measured, not inferred
            # from two rows that the machine's changing speed moves apart
            counts = tuple(sorted({threads, 1}, reverse=True))
            say(f"training {label} batch {batch}, {' and '.join(map(str, counts))} thread"
                f"{'s' * (counts != (1,))}")
            results["training"] += training_rows(label, text, batch, min_time, torch, repeat, counts)
    if "training" in only and threads > 1:
        say(f"the machine: {threads} threads against 1 on the same work each")
        results["machine_scaling"] = machine_scaling(threads, min_time, repeat)
    for label, spec, batch in MEMORY_CASES if "memory" in only else ():
        text = _network_text(spec)
        if text is not None:
            say(f"memory {label} batch {batch}")
            results["memory"].append(memory_bench(label, text, batch))
    if compile_times and "compile" in only:
        rounds = 1 if quick else 3
        say(f"compile times ({2 * rounds} child processes)")
        try:
            results["compile"] = compile_bench(rounds)
        except RuntimeError as e:                     # the other figures are still reported
            results["compile_error"] = str(e)
    if analysis:
        say("analysis")
        results["analysis"] = analysis_bench()
    return results


def seconds(value: float) -> str:
    """3.2 -> "3.2 s", 0.0042 -> "4.2 ms", 0.00004 -> "40 us": never a bare 0.00."""
    if value >= 1:
        return f"{value:.1f} s"
    if value >= 0.1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} us"


def _figure(spread, digits=1, unit="") -> str:
    """(median, min, max) as 'median (min-max)'; a bare number as itself."""
    if not isinstance(spread, (list, tuple)):
        return f"{spread:.{digits}f}{unit}"
    med, lo, hi = spread
    return f"{med:.{digits}f}{unit} ({lo:.{digits}f}-{hi:.{digits}f})"


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def report(results: dict) -> str:
    """The human-readable table of ``run()``'s results."""
    m = results["machine"]
    torch = m["torch"] is not None
    lines = [f"cnnspec bench on {m['cpu']} ({m['cores']} cores, {m['threads']} threads); "
             f"numpy {m['numpy']}, numba {m['numba']}" + (f", torch {m['torch']}" if torch else ", no torch"),
             "medians of alternating rounds, (min-max) over the rounds"
             + ("; ratios above 1: cnnspec is faster" if torch else "")]
    rounds = results["conv"][0].get("rounds") if results["conv"] else None
    if results["conv"]:
        lines += ["", "convolution, float32: GFLOP/s (Nt: N threads on each side)"
                  + (f", {rounds} rounds" if rounds else "")
                  + ("; ratio = cnnspec / torch per round" if torch else "")]
    for row in results["conv"]:
        shape = "x".join(map(str, row["shape"]))
        for key, what in (("forward", "forward"), ("forward_backward", "fwd+bwd")):
            count = row.get("threads")
            who = f"{count}t" if count else ""
            text = (f"  {row['name']:11} {shape:13} {who:3}{what:8} "
                    f"{_figure(row.get(f'gflops_{key}_spread', row['gflops_' + key])):>20}")
            if torch:
                text += (f"  torch {_figure(row.get(f'torch_gflops_{key}_spread', row['torch_gflops_' + key])):>20}"
                         f"  {_figure(row.get(f'ratio_{key}_spread', row['ratio_' + key]), 2, 'x')}")
            lines.append(text)
    if results.get("api"):
        row = results["api"]
        shape = "x".join(map(str, row["shape"]))
        lines += ["", f"layer API (cnnspec.api) against the engine's kernel calls, conv {row['name']} {shape}: "
                      f"ms per call, {row['rounds']} rounds of calls alternating; api/engine = engine time / api "
                      f"time per round"]
        for key in ("forward", "backward"):
            ratio = _figure(row['api_vs_engine_' + key], 2, 'x')
            if f"api_vs_engine_{key}_quartiles" in row:           # median (quartiles; min-max)
                low, high = row[f"api_vs_engine_{key}_quartiles"]
                ratio = ratio.replace(" (", f" (quartiles {low:.2f}-{high:.2f}; ")
            text = (f"  {key:8}  engine {_figure(row['engine_ms_' + key], 2)}  api {_figure(row['api_ms_' + key], 2)}"
                    f"  api/engine {ratio}")
            if "torch_ms_" + key in row:
                text += (f"  torch {_figure(row['torch_ms_' + key], 2)}  api vs torch "
                         f"{_figure(row['ratio_' + key], 2, 'x')}")
            lines.append(text)
        if "faults_forward" in row:
            lines.append("  page faults per call: " + "; ".join(
                f"{key} " + ", ".join(f"{who} {n:.1f}" for who, n in row["faults_" + key].items())
                for key in ("forward", "backward")))
    if results.get("layers"):
        lines += ["", f"layers of dsl.md §10, float32: ms per call, median of "
                      f"{results['layers'][0]['rounds']} rounds (min-max)"
                  + ("; ratio = torch / cnnspec" if torch else "")]
        for row in results["layers"]:
            shape = "x".join(map(str, row["shape"]))
            for key, what in (("forward", "forward"), ("forward_backward", "fwd+bwd")):
                med, lo, hi = row["ms_" + key]
                text = f"  {row['name']:21} {shape:12} {what:8} {med:8.2f} ({lo:.2f}-{hi:.2f})"
                if torch:
                    tmed, tlo, thi = row["torch_ms_" + key]
                    rmed, rlo, rhi = row["ratio_" + key]
                    text += (f"  torch {tmed:8.2f} ({tlo:.2f}-{thi:.2f})  "
                             f"{rmed:5.2f}x ({rlo:.2f}-{rhi:.2f})")
                lines.append(text)
    rounds = results["training"][0].get("rounds") if results["training"] else None
    if results["training"]:
        lines += ["", "training (SGD, momentum), float32: samples/s"
                  + (f", median of {rounds} rounds (min-max)" if rounds else "")
                  + ("; ratio = cnnspec / torch per round" if torch else "")]
    speed = {}
    for row in results["training"]:
        count = row.get("threads")
        who = f"{count} thread{'s' * (count > 1)}" if count else ""
        speed[row["network"], row["batch"], count] = row
        text = (f"  {row['network']:22} batch {row['batch']:<4} {who:9} "
                f"{_figure(row.get('samples_per_s_spread', row['samples_per_s']), 0):>20}")
        if torch:
            text += (f"  torch {_figure(row.get('torch_samples_per_s_spread', row['torch_samples_per_s']), 0):>20}"
                     f"  {_figure(row.get('ratio_spread', row['ratio']), 2, 'x')}")
        lines.append(text)
    scaling = [(key, row, speed[key[:2] + (1,)]) for key, row in speed.items()
               if key[2] and key[2] > 1 and key[:2] + (1,) in speed]
    if scaling:
        measured = all("scaling_spread" in many for _, many, _ in scaling)
        lines += ["", "scaling: samples/s with {0} threads / with 1 thread ({1})".format(
            scaling[0][0][2], "per round, median (min-max)" if measured else "medians")]
        for (label, batch, count), many, one in scaling:
            mine = many.get("scaling_spread", many["samples_per_s"] / one["samples_per_s"])
            text = f"  {label:22} batch {batch:<4} cnnspec {_figure(mine, 2, 'x'):19}"
            if torch:
                theirs = many.get("torch_scaling_spread",
                                  many["torch_samples_per_s"] / one["torch_samples_per_s"])
                text += f"   torch {_figure(theirs, 2, 'x')}"
            lines.append(text)
    ceiling = results.get("machine_scaling")
    if ceiling:
        lines += [f"  the machine: {ceiling['threads']} threads against 1, the same work on each "
                  f"(the ceiling of the rows above)",
                  f"    a loop on data in each core's cache {_figure(ceiling['arithmetic'], 2, 'x'):19}"
                  f"   a stream through memory {_figure(ceiling['memory'], 2, 'x')}"]
    if results.get("memory"):
        lines += ["", "training memory, float32: the summary's estimate against the measured peak of a "
                      "training step (tracemalloc)"]
        for row in results["memory"]:
            lines.append(f"  {row['network']:22} batch {row['batch']:<4} estimate {_mib(row['estimate_bytes']):>10}"
                         f"  measured {_mib(row['measured_bytes']):>10}  estimate/measured {row['ratio']:.2f}")
    if "compile" in results:
        cold, warm = results["compile"]["cold"], results["compile"]["warm"]
        low, high = cold.get("first_step_range_s", [cold["first_step_s"]] * 2)
        rounds = cold.get("rounds", 1)
        spread = f", {low:.1f}-{high:.1f} s over {rounds} runs" if rounds > 1 else ""
        cpu = f"; {cold['first_step_cpu_s']:.1f} s of CPU" if "first_step_cpu_s" in cold else ""
        step = (f"the step itself, once compiled: {seconds(cold['second_step_s'])}; "
                if "second_step_s" in cold else "")
        lines += ["", "compile (LeNet-5, training steps at batch 64)",
                  f"  empty numba cache (a first run): {cold['first_step_s']:.1f} s to the first training step "
                  f"(median{spread}{cpu}; import {seconds(cold['import_s'])})",
                  f"    {step}the evaluation forward after it: {seconds(cold['first_forward_s'])} "
                  f"(no new kernels to compile)",
                  f"  second process, cache warm:      {seconds(warm['start_to_first_step_s'])} from start to its "
                  f"first training step (import {seconds(warm['import_s'])})"]
    if "compile_error" in results:
        lines += ["", "compile: not measured: " + results["compile_error"]]
    if "analysis" in results:
        a = results["analysis"]
        lines += ["", "analysis"]
        if "summary_resnet50_s" in a:
            lines.append(f"  cnnspec summary specs/resnet50.cnn (cold process): {a['summary_resnet50_s']:.2f} s")
        lines.append(f"  {a['layers']}-layer network: parse+build+analyse {a['load_1000_layers_s']:.3f} s, "
                     f"summary table {a['summary_1000_layers_s']:.3f} s")
    return "\n".join(lines)
