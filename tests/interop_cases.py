"""The cases of the export and import tests: small networks that between them use every layer kind
and argument form of dsl.md §6 (ZOO: padding forms, asymmetric and `same` padding with odd totals,
ceil mode where Caffe's rule drops a window, 1-D and 2-D, groups, dilation, frozen layers) and §10
(ZOO10), and every network of every spec in specs/ (at a small input size where the spec allows).

``CASES`` names them all; ``network(case)``, ``inputs(case)`` and ``engine_output(case, dtype)``
(the engine's evaluation-mode output, seed 0, computed once per session) are what the tests
compare PyTorch, ONNX Runtime and imported networks with.
"""
import functools
import re

import numpy as np

import cnnspec
from conftest import SPECS

ZOO = {
    # conv: every padding form, stride, dilation, groups, bias or not, 2-D
    "conv2d": """
network Conv2d {
    input image: 4x13x11
    a = conv(6, 3x3, pad=same, stride=2) -> relu
    b = image -> conv(6, 3x2, pad=(0, 2, 1, 0), dilation=2x1, groups=2, bias=false) -> leaky_relu(0.2)
    c = image -> conv(6, 5x5, pad=full, stride=3) -> tanh -> maxpool(2x2, stride=1, ceil=true)
    e = image -> conv(6, 4x4, pad=same, stride=2, trainable=false) -> identity
    concat(a, e) -> conv(8, 3x3, pad=valid, groups=4) -> batchnorm(eps=0.001, momentum=0.2)
    f = conv(8, 3x3, pad=1) -> sigmoid
    g = b -> conv(8, 3x3, pad=(0, 1, 2, 0), stride=2x3)
    h = c -> conv(8, 2x2, pad=(0, 2, 1, 1), dilation=2)
    add(f, g, h) -> relu -> flatten -> dropout(0.3) -> dense(7) -> softmax
}
""",
    # pooling: max/avg/sum, padding (asymmetric too), ceil mode incl. Caffe's dropped window
    "pools2d": """
network Pools2d {
    input image: 3x9x10
    t = conv(4, 3x3, pad=1)
    a = t -> maxpool(3x3, stride=2, pad=1, ceil=true)
    b = t -> avgpool(3x3, stride=2, pad=1, ceil=true)
    c = t -> sumpool(2x3, stride=2x2, pad=(1, 0, 0, 2), ceil=true)
    d = t -> maxpool(2x2, stride=3, pad=(0, 1, 1, 0), ceil=true)
    e = t -> avgpool(4x4, stride=3, pad=2, ceil=true)
    f = t -> sumpool(2x2)
    g = t -> maxpool(3x3, pad=2)
    x1 = a -> globalavgpool
    x2 = b -> globalmaxpool
    x3 = c -> globalavgpool
    x4 = d -> globalmaxpool
    x5 = e -> globalavgpool
    x6 = f -> globalmaxpool
    x7 = g -> globalavgpool
    concat(x1, x2, x3, x4, x5, x6, x7) -> flatten -> batchnorm -> dense(5, bias=false)
}
""",
    # 1-D: conv, pools (sum in 1-D), batchnorm over channels, global pools
    "seq1d": """
network Seq1d {
    input words: 6x20
    t = words -> conv(8, 3, pad=same, stride=2) -> batchnorm -> relu
    a = t -> maxpool(3, stride=2, pad=1, ceil=true)
    b = t -> sumpool(3, stride=2, pad=(0, 2), ceil=true)
    c = t -> avgpool(2, pad=1)
    x1 = a -> conv(5, 2, pad=(1, 0), dilation=2, groups=1)
    x2 = b -> conv(5, 2, pad=(1, 1), dilation=2)
    x3 = c -> conv(8, 3, pad=1, groups=8, bias=false)
    y = x3 -> globalavgpool
    s = add(x1, x2) -> globalmaxpool
    concat(s, y) -> flatten -> dense(3, trainable=false) -> tanh
}
""",
    # a flat input: dense, batchnorm per feature, leaky relu, add of three
    "flat": """
network Flat {
    input z: 12
    t = z -> dense(16) -> batchnorm(momentum=0.3) -> leaky_relu
    a = t -> dense(16) -> relu
    b = t -> dense(16, bias=false) -> sigmoid
    c = t -> identity
    add(a, b, c) -> dropout(0.5) -> dense(4) -> softmax
}
""",
}


def readme_section(title="## When you outgrow one CPU"):
    """The text of a README section (up to the next `## ` heading)."""
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end if end >= 0 else None]


def code_blocks(section, lang=""):
    """The fenced code blocks of ``section`` whose opening fence says ``lang`` ("" for plain ones)."""
    blocks, current, fence = [], None, None
    for line in section.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, fence = [], line[3:].strip()
            else:
                if fence == lang:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


# dsl.md §10: every new layer kind, with the argument forms PyTorch cannot say directly
# (asymmetric transposed-convolution padding, adaptive pooling to sizes that do not divide)
ZOO10 = {
    "transposed": """
network Transposed {
    input image: 4x5x6
    a = conv_transpose(6, 3x3, stride=2, pad=1, output_pad=1) -> relu6
    b = image -> conv_transpose(6, 4x4, stride=2, pad=(2, 0, 0, 2), bias=false) -> hardswish
    c = image -> conv_transpose(6, 2x2, stride=2, groups=2, dilation=1) -> hardsigmoid
    d = image -> conv_transpose(6, 3x3, stride=2, pad=same, dilation=2) -> silu
    e = add(a, b) -> gelu
    f = add(c, d) -> softplus
    concat(e, f) -> elu(0.5) -> conv_transpose(3, 3x2, pad=(0, 1, 1, 0), output_pad=0) -> elu
}
""",
    "resampling": """
network Resampling {
    input image: 3x7x6
    t = conv(4, 3x3, pad=1)
    a = t -> upsample(2) -> adaptiveavgpool(5x4) -> flatten
    b = t -> upsample(2, mode=bilinear) -> adaptivemaxpool(5x4) -> flatten
    c = t -> upsample(2x3) -> adaptiveavgpool(7x6) -> flatten
    d = t -> adaptiveavgpool(3x4) -> upsample(2x3, mode=bilinear) -> adaptivemaxpool(3x4) -> flatten
    e = t -> adaptivemaxpool(1) -> upsample(5x4) -> adaptiveavgpool(1) -> flatten
    concat(a, b, c, d, e) -> dense(3)
}
""",
    "gates": """
network Gates {
    input image: 8x6x6
    t = conv(8, 3x3, pad=1) -> batchnorm -> relu
    gate = t -> globalavgpool -> conv(4, 1x1) -> relu -> conv(8, 1x1) -> hardsigmoid
    se = mul(t, gate)
    flatgate = t -> globalavgpool -> flatten -> dense(8) -> sigmoid
    g2 = mul(se, flatgate)
    left = g2 -> channels(0, 4)
    right = g2 -> channels(4, 8) -> conv(4, 3x3, pad=1, groups=4) -> droppath(0.2)
    p = mul(left, right)
    concat(p, right) -> shuffle(2) -> conv(6, 1x1) -> globalmaxpool
}
""",
    "vae": """
network Vae {
    input image: 1x8x8
    h = conv(4, 3x3, stride=2, pad=1) -> relu -> flatten -> dense(16) -> relu
    mu = h -> dense(6)
    logvar = h -> dense(6)
    z = sample(mu, logvar, beta=0.5)
    dense(36) -> relu -> reshape(4x3x3) -> conv_transpose(1, 4x4, stride=2, pad=1) -> sigmoid
}
""",
    "seq": """
network Seq {
    input words: 4x9
    t = conv(6, 3, pad=1) -> relu
    a = t -> conv_transpose(4, 3, stride=2, pad=(1, 0), output_pad=1) -> upsample(2, mode=linear)
        -> adaptiveavgpool(7)
    b = t -> upsample(3) -> adaptivemaxpool(7) -> conv(4, 1)
    concat(a, b) -> shuffle(4) -> channels(1, 7) -> globalavgpool -> flatten -> dense(2)
}
""",
    "conditional": """
network Conditional {
    input z: 8
    input label: 3
    concat(z, label) -> dense(32) -> batchnorm -> leaky_relu(0.2) -> dense(2*4*4) -> tanh -> reshape(2x4x4)
    conv_transpose(1, 4x4, stride=2, pad=1) -> tanh
}
""",
}


# ---- every network of specs/ ---------------------------------------------------------------------------

# where a spec allows (global pooling before the head, or fully convolutional), the tests run it at a
# small input: the torchvision architectures at 3x32x32 (Inception-v3 at its smallest, 3x75x75), the
# U-Nets at 3x16x16 (four halvings)
SMALL_INPUT = {"resnet18": "3x32x32", "resnet50": "3x32x32", "googlenet": "3x32x32", "mobilenet_v2": "3x32x32",
               "mobilenet_v3_small": "3x32x32", "efficientnet_b0": "3x32x32", "shufflenet_v2": "3x32x32",
               "inception_v3": "3x75x75", "unet256": "3x16x16", "unet_bilinear": "3x16x16", "edges": "1x16x16"}
# AlexNet and VGG-16 keep their input size (their dense layers read the last map whole), with a
# fraction of their channels and dense units: 61M and 138M parameters are 244 MB and 553 MB files,
# slow to write and read on a shared 2-core machine; their layer kinds, strides and paddings stay
NARROW = {"alexnet": 4, "vgg16": 8}


def without_train(text: str) -> str:
    """The networks alone: the training-memory total depends on the train section's optimizer,
    which neither an ONNX file nor a PyTorch module carries."""
    return re.sub(r"\ntrain\s*\{[^}]*\}", "\n", text)


def narrow(text: str, factor: int) -> str:
    text = re.sub(r"conv\((\d+)", lambda m: f"conv({int(m.group(1)) // factor}", text)
    return text.replace("dense(4096)", f"dense({4096 // factor})")


def resize(text: str, size: str) -> str:
    """``text`` with its first input declared ``size`` (CxHxW)."""
    text, count = re.subn(r"(input \w+: )\d+x\d+x\d+", lambda m: m.group(1) + size, text, count=1)
    assert count == 1
    return text


def spec_text(stem: str, small: bool = True) -> str:
    """specs/STEM.cnn without its train section; with ``small``, as the output comparisons run it:
    narrowed (AlexNet, VGG-16) or at its small input size. ``small=False`` is the spec itself."""
    text = without_train((SPECS / f"{stem}.cnn").read_text())
    if small and stem in NARROW:
        text = narrow(text, NARROW[stem])
    if small and stem in SMALL_INPUT:
        text = resize(text, SMALL_INPUT[stem])
    return text


# "lenet5.cnn", "dcgan.cnn:Generator": one case per network of each spec
SPEC_CASES = [f"{path.name}:{name}" if len(names) > 1 else path.name
              for path in sorted(SPECS.glob("*.cnn"))
              for names in [re.findall(r"^network (\w+)", path.read_text(), re.M)] for name in names]
CASES = sorted(ZOO) + sorted(ZOO10) + SPEC_CASES


def case_text(case: str, small: bool = True) -> tuple:
    """``(text, network name or None)`` of a case."""
    if case in ZOO or case in ZOO10:
        return (ZOO.get(case) or ZOO10[case]), None
    file, _, name = case.partition(":")
    return spec_text(file[:-len(".cnn")], small), name or None


@functools.lru_cache(maxsize=None)
def network(case: str, small: bool = True):
    """The case's network (do not modify it: it is shared)."""
    text, name = case_text(case, small)
    file = str(SPECS / case.partition(":")[0]) if case.endswith(".cnn") or ":" in case else None
    return cnnspec.loads(text, file=file, network=name)


def inputs(case: str, batch: int = 2, seed: int = 0) -> dict:
    """{input name: (batch, *shape) float64}, standard normal: the same for every test of a case."""
    net = network(case)
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((batch, *shape)) for name, shape in net.input_shapes.items()}


def as_engine_input(xs: dict, dtype="float64"):
    xs = {k: v.astype(dtype) for k, v in xs.items()}
    return xs if len(xs) > 1 else next(iter(xs.values()))


@functools.lru_cache(maxsize=None)
def engine_output(case: str, dtype: str) -> np.ndarray:
    """The engine's evaluation-mode output for ``inputs(case)`` with its initial weights of seed 0."""
    model = network(case).compile(dtype=dtype, seed=0)
    out = model.forward(as_engine_input(inputs(case), dtype))
    out.flags.writeable = False
    return out


def rel(a, b) -> float:
    """The largest difference relative to the largest value of ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))
