"""Test cases: inputs for each graded function, made in the trusted process from a seed.

Each case set (public or hidden) has ``count`` *basic* cases — typical sizes — and one case per
*edge* kind of the function's family (stride > 1, asymmetric padding, non-square inputs and
kernels, 1x1 kernels, batch 1, one channel, ...). Inputs are float64 and keep away from kinks and
ties (|x| > 1e-3 for ReLU; distinct values, at least 1e-3 apart, for max-pooling), so that central
differences are meaningful. The same (seed, function, index) always gives the same case.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from cnnspec.grade.functions import FUNCTIONS, forward_of
from cnnspec.layers.base import output_size

EDGES = {
    "conv2d": ("stride 2", "asymmetric padding", "non-square", "1x1 kernel", "batch 1",
               "one channel", "no bias"),
    "conv1d": ("stride 2", "asymmetric padding", "kernel size 1", "batch 1", "one channel",
               "no bias"),
    "maxpool2d": ("overlapping windows", "padding", "non-square", "batch 1", "one channel", "ties"),
    "avgpool2d": ("overlapping windows", "padding", "non-square", "batch 1", "one channel"),
    "dense": ("batch 1", "no bias", "one input feature", "square weight"),
    "relu": ("4-D input", "batch 1", "zeros in the input"),
    "sigmoid": ("4-D input", "batch 1", "large inputs"),
    "tanh": ("4-D input", "batch 1", "large inputs"),
    "softmax": ("large inputs", "batch 1"),
    "cross_entropy": ("large logits", "batch 1"),
    "mse": ("4-D input", "batch 1"),
    "batchnorm": ("4-D input", "3-D input", "batch 1, 4-D input"),
    "dropout": ("4-D input", "batch 1", "p = 0.2"),
    "conv_transpose2d": ("stride 1", "output padding", "asymmetric padding", "non-square", "1x1 kernel",
                         "batch 1", "one channel", "no bias"),
    "upsample2d": ("nearest, scale 3", "bilinear, scale 3", "non-square scale", "scale 1 on one axis",
                   "one row", "batch 1", "one channel"),
    "bce": ("saturated predictions", "binary targets", "4-D input", "batch 1"),
    "sigmoid_bce": ("large logits", "binary targets", "4-D input", "batch 1"),
    "vae_sample": ("batch 1", "one feature", "4-D input"),
}


@dataclass
class Case:
    function: str
    index: int
    kind: str                 # "basic" or an edge kind
    visibility: str           # "public" or "hidden"
    args: tuple               # the function's arguments (float arrays are float64)
    forward_args: tuple       # the arguments of forward_of(function), for numeric gradients
    seed: tuple               # for the numeric check's choice of coordinates

    @property
    def label(self) -> str:
        return f"{self.visibility} case {self.index + 1} ({self.kind})"

    @property
    def is_edge(self) -> bool:
        return self.kind != "basic"


def make_cases(name: str, seed: int, count: int, visibility: str, edges: bool = True) -> list[Case]:
    """``count`` basic cases of function ``name`` plus, with ``edges``, one per edge kind."""
    spec = FUNCTIONS[name]
    kinds = ["basic"] * count + (list(EDGES[spec.family]) if edges else [])
    cases = []
    for index, kind in enumerate(kinds):
        case_seed = (int(seed) & 0xFFFFFFFFFFFF, zlib.crc32(name.encode()), index)
        rng = np.random.default_rng(case_seed)
        inputs, out_shape = GENERATORS[spec.family](rng, kind)
        if spec.kind == "backward":
            # one upstream gradient per output of the forward: an array, or a number for a scalar
            shapes = (out_shape,) if len(spec.upstream) == 1 else out_shape
            for param, shape in zip(spec.upstream, shapes):
                inputs[param] = rng.standard_normal(shape) if shape else float(rng.standard_normal())
        forward = forward_of(spec)
        cases.append(Case(name, index, kind, visibility, tuple(inputs[p] for p in spec.params),
                          tuple(inputs[p] for p in forward.params), case_seed))
    return cases


def cast(args, dtype) -> tuple:
    """The same arguments with every float array converted to ``dtype``."""
    return tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                 for a in args)


# -- generators: (rng, kind) -> ({parameter: value}, shape of the forward's output) --------------

def _away_from_zero(a):
    """Keep |a| > 1e-3 (ReLU's kink)."""
    return np.where(a >= 0, a + 2e-3, a - 2e-3)


def _distinct(rng, shape, low=-3.0, high=3.0):
    """Values at least (high - low) / size apart: no ties, even after a 1e-5 step."""
    size = int(np.prod(shape))
    return rng.permutation(np.linspace(low, high, size)).reshape(shape)


def _common(kind, n, c, bias=True):
    """(n, c, bias) after the edge kinds every layer with weights has: batch 1, one channel, no bias."""
    return 1 if kind == "batch 1" else n, 1 if kind == "one channel" else c, bias and kind != "no bias"


def _conv2d(rng, kind):
    n, c, f = int(rng.integers(2, 4)), int(rng.integers(2, 4)), int(rng.integers(2, 4))
    h = w = int(rng.integers(5, 8))
    kh = kw = 3
    stride = (1, 1)
    pad = (1, 1, 1, 1) if rng.random() < 0.7 else (0, 0, 0, 0)
    bias = True
    if kind == "stride 2":
        stride, h, w = (2, 2), h + 2, w + 2
    elif kind == "asymmetric padding":
        pad = tuple(int(p) for p in rng.permutation([0, 1, 2, 2]))
    elif kind == "non-square":
        h, w = int(rng.integers(5, 7)), int(rng.integers(8, 11))
        kh, kw = (2, 3) if rng.random() < 0.5 else (3, 2)
        stride, pad = (1, 2), (1, 0, 2, 1)
    elif kind == "1x1 kernel":
        kh = kw = 1
        pad = (0, 0, 0, 0)
    n, c, bias = _common(kind, n, c, bias)
    inputs = {"x": rng.standard_normal((n, c, h, w)),
              "w": rng.standard_normal((f, c, kh, kw)) / np.sqrt(c * kh * kw),
              "b": rng.standard_normal(f) if bias else None, "stride": stride, "pad": pad}
    out = (n, f, output_size(h, kh, stride[0], pad[0], pad[1]), output_size(w, kw, stride[1], pad[2], pad[3]))
    return inputs, out


def _conv1d(rng, kind):
    n, c, f = int(rng.integers(2, 4)), int(rng.integers(2, 4)), int(rng.integers(2, 4))
    length, k, stride, pad, bias = int(rng.integers(6, 10)), 3, 1, (1, 1), True
    if kind == "stride 2":
        stride = 2
    elif kind == "asymmetric padding":
        pad = (0, 2) if rng.random() < 0.5 else (2, 1)
    elif kind == "kernel size 1":
        k, pad = 1, (0, 0)
    n, c, bias = _common(kind, n, c, bias)
    inputs = {"x": rng.standard_normal((n, c, length)),
              "w": rng.standard_normal((f, c, k)) / np.sqrt(c * k),
              "b": rng.standard_normal(f) if bias else None, "stride": (stride,), "pad": pad}
    return inputs, (n, f, output_size(length, k, stride, *pad))


def _pool(negative_padding):
    def generate(rng, kind):
        n, c = int(rng.integers(2, 4)), int(rng.integers(2, 4))
        h = w = 2 * int(rng.integers(2, 5))
        kernel, stride, pad, low, high = (2, 2), (2, 2), (0, 0, 0, 0), -3.0, 3.0
        if kind == "overlapping windows":
            kernel, stride, h, w = (3, 3), (2, 2), h + 1, w + 1
        elif kind == "padding":
            kernel, stride, pad = (3, 3), (2, 2), (1, 0, 0, 1)
            if negative_padding:             # all values below the zeros a wrong padding adds
                low, high = -3.0, -0.1
        elif kind == "non-square":
            h, w = int(rng.integers(4, 7)), int(rng.integers(7, 10))
            kernel, stride, pad = (2, 3), (1, 2), (0, 1, 1, 0)
        elif kind == "batch 1":
            n = 1
        elif kind == "one channel":
            c = 1
        x = _distinct(rng, (n, c, h, w), low, high)
        if kind == "ties":                   # a few levels: most windows hold their maximum twice
            kernel, stride, h, w = (3, 3), (2, 2), h + 1, w + 1    # (layer-api.md: the first in
            x = rng.integers(-1, 2, size=(n, c, h, w)).astype(np.float64)   # row-major order wins)
        inputs = {"x": x, "kernel": kernel, "stride": stride, "pad": pad}
        out = (n, c, output_size(h, kernel[0], stride[0], pad[0], pad[1]),
               output_size(w, kernel[1], stride[1], pad[2], pad[3]))
        return inputs, out
    return generate


def _dense(rng, kind):
    n, d, m, bias = int(rng.integers(3, 6)), int(rng.integers(4, 8)), int(rng.integers(2, 4)), True
    if kind == "batch 1":
        n = 1
    elif kind == "no bias":
        bias = False
    elif kind == "one input feature":
        d = 1
    elif kind == "square weight":
        m = d
    inputs = {"x": rng.standard_normal((n, d)), "w": rng.standard_normal((d, m)) / np.sqrt(d),
              "b": rng.standard_normal(m) if bias else None}
    return inputs, (n, m)


def _elementwise(scale_large):
    def generate(rng, kind):
        shape = (int(rng.integers(3, 6)), int(rng.integers(3, 7)))
        scale = 2.0
        if kind == "4-D input":
            shape = (2, 3, 4, 5)
        elif kind == "batch 1":
            shape = (1, shape[1])
        elif kind == "large inputs":
            scale = scale_large
        x = _away_from_zero(rng.standard_normal(shape) * scale)
        if kind == "zeros in the input":          # relu's gradient at x == 0 is 0 (layer-api.md)
            x.reshape(-1)[::3] = 0.0
        return {"x": x}, shape
    return generate


def _softmax(rng, kind):
    shape = (int(rng.integers(3, 6)), int(rng.integers(3, 7)))
    scale = 3.0
    if kind == "large inputs":
        scale = 1e4
    elif kind == "batch 1":
        shape = (1, shape[1])
    return {"x": rng.uniform(-scale, scale, shape)}, shape


def _cross_entropy(rng, kind):
    n, k = int(rng.integers(3, 7)), int(rng.integers(3, 6))
    scale = 3.0
    if kind == "large logits":
        scale = 1e4
    elif kind == "batch 1":
        n = 1
    return {"logits": rng.uniform(-scale, scale, (n, k)),
            "y": rng.integers(0, k, n).astype(np.int64)}, ()


def _mse(rng, kind):
    shape = (int(rng.integers(3, 6)), int(rng.integers(2, 5)))
    if kind == "4-D input":
        shape = (2, 3, 3, 2)
    elif kind == "batch 1":
        shape = (1, shape[1])
    return {"pred": rng.standard_normal(shape), "target": rng.standard_normal(shape)}, ()


def _batchnorm(rng, kind):
    shape = (int(rng.integers(4, 8)), int(rng.integers(2, 5)))
    if kind == "4-D input":
        shape = (2, 3, 3, 4)
    elif kind == "3-D input":
        shape = (3, 2, 5)
    elif kind == "batch 1, 4-D input":
        shape = (1, 3, 3, 3)
    channels = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2.0) + rng.uniform(-1, 1)
    return {"x": x, "gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.standard_normal(channels),
            "eps": 1e-5}, shape


def _dropout(rng, kind):
    # p drawn away from 0.5, where dividing by p and by 1 - p agree (a classic mistake passed
    # every basic case at p = 0.5)
    shape, p = (int(rng.integers(3, 6)), int(rng.integers(3, 7))), float(rng.choice([0.25, 0.4, 0.6, 0.75]))
    if kind == "4-D input":
        shape = (2, 3, 3, 3)
    elif kind == "batch 1":
        shape = (1, shape[1])
    elif kind == "p = 0.2":
        p = 0.2
    return {"x": rng.standard_normal(shape), "p": p, "mask": rng.random(shape) >= p}, shape


def _conv_transpose2d(rng, kind):
    n, c, f = int(rng.integers(2, 4)), int(rng.integers(2, 4)), int(rng.integers(2, 4))
    h = w = int(rng.integers(3, 5))
    kh = kw = int(rng.choice([3, 4]))
    stride, pad, output_pad, bias = (2, 2), (1, 1, 1, 1), (0, 0), True
    if kh == 3 and rng.random() < 0.5:
        output_pad = (1, 1)                  # the auto-encoder's: doubles the size
    if kind == "stride 1":
        stride, output_pad = (1, 1), (0, 0)
    elif kind == "output padding":
        kh = kw = 3
        output_pad = (1, 0) if rng.random() < 0.5 else (0, 1)
    elif kind == "asymmetric padding":
        kh = kw = 4
        pad = tuple(int(p) for p in rng.permutation([0, 1, 2, 1]))
    elif kind == "non-square":
        h, w = int(rng.integers(2, 4)), int(rng.integers(4, 6))
        kh, kw = (3, 2) if rng.random() < 0.5 else (2, 3)
        stride, pad, output_pad = (2, 1), (1, 0, 0, 1), (1, 0)
    elif kind == "1x1 kernel":
        kh = kw = 1
        pad, output_pad = (0, 0, 0, 0), (1, 1)
    n, c, bias = _common(kind, n, c, bias)
    inputs = {"x": rng.standard_normal((n, c, h, w)),
              "w": rng.standard_normal((c, f, kh, kw)) / np.sqrt(c * kh * kw),
              "b": rng.standard_normal(f) if bias else None, "stride": stride, "pad": pad,
              "output_pad": output_pad}
    out = (n, f, (h - 1) * stride[0] - pad[0] - pad[1] + kh + output_pad[0],
           (w - 1) * stride[1] - pad[2] - pad[3] + kw + output_pad[1])
    return inputs, out


def _upsample2d(rng, kind):
    n, c = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    h, w = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    scale, mode = (2, 2), ("bilinear" if rng.random() < 0.5 else "nearest")
    if kind == "nearest, scale 3":
        scale, mode = (3, 3), "nearest"
    elif kind == "bilinear, scale 3":
        scale, mode = (3, 3), "bilinear"
    elif kind == "non-square scale":
        scale, mode = (2, 3), "bilinear"
    elif kind == "scale 1 on one axis":
        scale, mode = (1, 2), "bilinear"
    elif kind == "one row":
        h, mode = 1, "bilinear"
    n, c, _ = _common(kind, n, c)
    inputs = {"x": rng.standard_normal((n, c, h, w)), "scale": scale, "mode": mode}
    return inputs, (n, c, h * scale[0], w * scale[1])


def _probabilities_shape(rng, kind):
    shape = (int(rng.integers(3, 6)), int(rng.integers(2, 6)))
    if kind == "4-D input":
        shape = (2, 2, 3, 3)
    elif kind == "batch 1":
        shape = (1, shape[1])
    return shape


def _bce(rng, kind):
    shape = _probabilities_shape(rng, kind)
    pred = rng.uniform(0.02, 0.98, shape)
    target = rng.random(shape)
    if kind == "binary targets":
        target = (target < 0.5).astype(np.float64)
    elif kind == "saturated predictions":
        # a sigmoid's outputs: exactly 0 and 1 (sigmoid(-800), sigmoid(40) in float64), 1e-60
        # (a log below -100); the others plain; binary targets, some of them against the prediction
        shape = (4, 6)
        z = rng.permutation(np.array([-800.0, -800.0, 40.0, 40.0, 800.0, -138.0 * np.log(10)]
                                     + list(rng.uniform(-3, 3, 18))))
        with np.errstate(over="ignore"):
            pred = (1 / (1 + np.exp(-z))).reshape(shape)
        target = (rng.random(shape) < 0.5).astype(np.float64)
        target.flat[:6] = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    return {"pred": pred, "target": target}, ()


def _sigmoid_bce(rng, kind):
    shape = _probabilities_shape(rng, kind)
    logits = rng.standard_normal(shape) * 3
    target = rng.random(shape)
    if kind == "binary targets":
        target = (target < 0.5).astype(np.float64)
    elif kind == "large logits":
        logits = rng.uniform(-1e4, 1e4, shape)
        target = (rng.random(shape) < 0.5).astype(np.float64)
    return {"logits": logits, "target": target}, ()


def _vae_sample(rng, kind):
    shape = (int(rng.integers(3, 6)), int(rng.integers(2, 6)))
    if kind == "batch 1":
        shape = (1, shape[1])
    elif kind == "one feature":
        shape = (shape[0], 1)
    elif kind == "4-D input":
        shape = (2, 3, 2, 2)
    inputs = {"mu": rng.standard_normal(shape), "logvar": rng.uniform(-2.0, 1.0, shape),
              "eps": rng.standard_normal(shape)}
    return inputs, (shape, ())


GENERATORS = {
    "conv2d": _conv2d, "conv1d": _conv1d, "maxpool2d": _pool(True), "avgpool2d": _pool(False),
    "dense": _dense, "relu": _elementwise(2.0), "sigmoid": _elementwise(300.0),
    "tanh": _elementwise(30.0), "softmax": _softmax, "cross_entropy": _cross_entropy,
    "mse": _mse, "batchnorm": _batchnorm, "dropout": _dropout,
    "conv_transpose2d": _conv_transpose2d, "upsample2d": _upsample2d, "bce": _bce,
    "sigmoid_bce": _sigmoid_bce, "vae_sample": _vae_sample,
}
