"""Small networks that between them use every layer kind and argument form of dsl.md §6 (padding
forms, asymmetric and `same` padding with odd totals, ceil mode where Caffe's rule drops a window,
1-D and 2-D, groups, dilation, frozen layers): the cases of the export and import tests."""

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
