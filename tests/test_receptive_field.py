"""Receptive fields against input gradients in PyTorch.

Each network is rebuilt in PyTorch from its layers' resolved configurations, with every weight 1
and no bias (so nothing cancels); the gradient of the sum over channels of one output position
with respect to the input is nonzero exactly on the input positions that position depends on.
Its extent, per axis, must be the interval the analysis predicts for that position (clipped to
the input), for every output position; and the largest number of input positions any interior
output position sees must be the reported size.
"""
import math
from fractions import Fraction

import pytest

import cnnspec
from cnnspec.analysis import receptive_field as rf

torch = pytest.importorskip("torch")
F = torch.nn.functional


def net_of(body: str, shape: str = "1x24x24", blocks: str = "") -> "cnnspec.Network":
    return cnnspec.loads(f"{blocks}\nnetwork T {{\n    input x: {shape}\n{body}\n}}\n", file="t.cnn")


def run_torch(net, x):
    """The network's output for x, every weight 1, biases 0 (layers the field tests use)."""
    values = {}
    for name in net.layers():
        node = net[name]
        op, cfg = node["op"], node["config"]
        xs = [values[i] for i in node["inputs"]]
        rank = len(node["output_shape"]) - 1
        if op == "input":
            y = x
        elif op == "conv":
            w = torch.ones(cfg["filters"], xs[0].shape[1] // cfg["groups"], *cfg["kernel"], dtype=x.dtype)
            p = cfg["pad"]
            padded = F.pad(xs[0], [v for i in reversed(range(rank)) for v in (p[2 * i], p[2 * i + 1])])
            conv = F.conv2d if rank == 2 else F.conv1d
            y = conv(padded, w, stride=cfg["stride"], dilation=cfg["dilation"], groups=cfg["groups"])
        elif op == "conv_transpose":
            w = torch.ones(xs[0].shape[1], cfg["filters"] // cfg["groups"], *cfg["kernel"], dtype=x.dtype)
            conv = F.conv_transpose2d if rank == 2 else F.conv_transpose1d
            full = conv(xs[0], w, stride=cfg["stride"], dilation=cfg["dilation"], groups=cfg["groups"],
                        output_padding=cfg["output_pad"])
            p = cfg["pad"]
            index = [slice(None), slice(None)]
            for i in range(rank):
                index.append(slice(p[2 * i], full.shape[2 + i] - p[2 * i + 1]))
            y = full[tuple(index)]
        elif op == "avgpool":
            p = cfg["pad"]
            padded = F.pad(xs[0], [v for i in reversed(range(rank)) for v in (p[2 * i], p[2 * i + 1])])
            pool = F.avg_pool2d if rank == 2 else F.avg_pool1d
            y = pool(padded, cfg["kernel"], cfg["stride"], ceil_mode=cfg["ceil"])
        elif op == "upsample":
            mode = {"nearest": "nearest", "bilinear": "bilinear", "linear": "linear"}[cfg["mode"]]
            kwargs = {} if mode == "nearest" else {"align_corners": False}
            y = F.interpolate(xs[0], scale_factor=tuple(float(s) for s in cfg["scale"]), mode=mode, **kwargs)
        elif op == "adaptiveavgpool":
            pool = F.adaptive_avg_pool2d if rank == 2 else F.adaptive_avg_pool1d
            y = pool(xs[0], cfg["size"])
        elif op == "add":
            y = sum(xs)
        elif op == "mul":
            y = math.prod(xs)
        elif op == "concat":
            y = torch.cat(xs, 1)
        elif op in ("relu", "identity", "batchnorm"):
            y = xs[0]
        else:
            raise AssertionError(f"the field tests do not use {op}")
        values[name] = y
        assert tuple(y.shape[1:]) == tuple(node["output_shape"]), name
    return values[net.output_name]


def gradient_extents(net, layer=None):
    """{output position: ((lo, hi) per axis)} of the input positions each output position of
    ``layer`` (default: the output) depends on, from the Jacobian computed by autograd (None for
    a position that depends on no input)."""
    layer = layer or net.output_name
    saved = net.graph.graph["output"]
    net.graph.graph["output"] = layer

    # The Jacobian's rows, a chunk of output positions at a time: every layer here treats the
    # samples of a batch apart, so sample i of a batch of ones, seeded with output position i,
    # gets that position's gradient (one backward pass per chunk instead of one per position).
    # float64: a bilinear weight that is zero in exact arithmetic (scale 3) is not in float32.
    try:
        x = torch.ones(1, *net.input_shape, dtype=torch.float64)
        out_sizes = tuple(run_torch(net, x).shape[2:])
        count = math.prod(out_sizes)
        rows = []
        for start in range(0, count, 512):
            size = min(512, count - start)
            x = torch.ones(size, *net.input_shape, dtype=torch.float64, requires_grad=True)
            out = run_torch(net, x).sum(1).reshape(size, count)           # every channel of each position
            seed = torch.zeros(size, count, dtype=torch.float64)
            seed[torch.arange(size), torch.arange(start, start + size)] = 1
            (grad,) = torch.autograd.grad(out, x, seed)
            rows.append(grad.abs().sum(1) != 0)                            # over input channels
    finally:
        net.graph.graph["output"] = saved
    depends = torch.cat(rows).reshape(*out_sizes, *net.input_shape[1:])
    rank = len(out_sizes)
    lows, highs = [], []
    for a in range(rank):                              # per axis: first and last input index used
        other = [rank + b for b in range(rank) if b != a]
        used = depends.any(dim=other[0]) if other else depends
        index = torch.arange(used.shape[-1])
        lows.append(torch.where(used, index, used.shape[-1]).min(-1).values)
        highs.append(torch.where(used, index, -1).max(-1).values)
    found = {}
    for o in _positions(out_sizes):
        if int(highs[0][o]) < 0:
            found[o] = None
        else:
            found[o] = tuple((int(lows[a][o]), int(highs[a][o])) for a in range(rank))
    return found


def _positions(sizes):
    if len(sizes) == 1:
        return [(i,) for i in range(sizes[0])]
    return [(i, j) for i in range(sizes[0]) for j in range(sizes[1])]


def predicted(field, o, n):
    """The predicted interval of output position o per axis, clipped to the input sizes n (None
    when it holds no input position), and whether it lies inside the input (then no clipping
    happened)."""
    axis_out = []
    inside = True
    for a, (lo, hi) in enumerate(rf.interval(field, o)):
        inside &= lo >= 0 and hi <= n[a] - 1
        axis_out.append((max(lo, 0), min(hi, n[a] - 1)))
    if any(lo > hi for lo, hi in axis_out):
        return None, inside
    return tuple(axis_out), inside


def check_against_gradients(net, layer=None, need_interior=True, hull=False):
    """Every output position's measured extent is the predicted one (with ``hull``, inside it:
    dilated taps skip positions, so the hull is an upper bound)."""
    layer = layer or net.output_name
    field = net[layer]["receptive_field"]
    n = net.input_shape[1:]
    measured = gradient_extents(net, layer)
    sizes = [0] * len(n)
    interior = 0
    for o, extents in measured.items():
        want, inside = predicted(field, o, n)
        if hull:
            assert extents is None or all(lo >= wlo and hi <= whi for (lo, hi), (wlo, whi) in zip(extents, want)), \
                (o, extents, want)
            continue
        assert extents == want, (layer, o, extents, want)
        if extents is None:
            continue
        if inside:
            interior += 1
            for a, (lo, hi) in enumerate(extents):
                sizes[a] = max(sizes[a], hi - lo + 1)
    if need_interior:
        assert interior, "no output position whose field lies inside the input"
        assert sizes == field["size"], (sizes, field["size"])
    return field


# ---- merges: the union per axis ------------------------------------------------------------------

def test_the_issue_example_is_three_by_three():
    net = net_of("a = x -> conv(4, 1x3, pad=0x1)\n b = x -> conv(4, 3x1, pad=1x0)\n concat(a, b)", "1x9x9")
    field = check_against_gradients(net)
    assert field["size"] == [3, 3] and field["padding"] == [1, 1] and field["aligned"]


def test_inception_v3_like_asymmetric_branches_union_per_axis():
    blocks = """
block e(c) {
    b1 = in -> conv(c, 1x1)
    b2 = in -> conv(c, 1x1) -> conv(c, 1x3, pad=0x1)
    b3 = in -> conv(c, 1x1) -> conv(c, 3x3, pad=1) -> conv(c, 3x1, pad=1x0)
    b4 = in -> avgpool(3x3, stride=1, pad=1) -> conv(c, 1x1)
    concat(b1, b2, b3, b4)
}
"""
    net = net_of("conv(2, 3x3, stride=2) -> e(2)", "1x21x21", blocks)
    field = check_against_gradients(net)
    # rows: 3 (stem) + 2*2 (3x3) + 2*2 (3x1) in b3; columns: 3 + 2*2 (b2's 1x3, b3's 3x3, b4's pool)
    assert field["size"] == [11, 7]


def test_union_of_a_small_and_a_large_path_keeps_the_large_one_on_each_axis():
    net = net_of("a = x -> conv(1, 5x1, pad=2x0)\n b = x -> conv(1, 1x7, pad=0x3)\n add(a, b) -> conv(1, 3x3, pad=1)",
                 "1x15x15")
    field = check_against_gradients(net)
    assert field["size"] == [7, 9]


def test_shifted_paths_are_unioned_and_flagged():
    # a 2x2 window starts at the unit, a padded 3x3 one before it: union [o-1, o+1]
    net = net_of("a = x -> conv(1, 2x2, pad=(0, 1, 0, 1))\n b = x -> conv(1, 3x3, pad=1)\n add(a, b)", "1x9x9")
    field = check_against_gradients(net)
    assert field["size"] == [3, 3]
    assert not field["aligned"]


# ---- layers that enlarge: fractional strides --------------------------------------------------------

@pytest.mark.parametrize("body", [
    "upsample(2)",
    "upsample(3)",
    "upsample(2x3)",
    "upsample(2, mode=bilinear)",
    "upsample(3, mode=bilinear)",
    "upsample(2x3, mode=bilinear)",
    "conv_transpose(1, 4x4, stride=2, pad=1)",
    "conv_transpose(1, 3x3, stride=2, pad=1, output_pad=1)",
    "conv_transpose(1, 3x3, stride=2, pad=same)",
    "conv_transpose(1, 2x2, stride=2)",
    "conv_transpose(1, 1x1, stride=2)",                       # odd outputs see nothing
    "conv_transpose(1, 5x3, stride=3x2, pad=(2, 1, 0, 1))",
    "conv_transpose(1, 3x3, pad=1)",
    "adaptiveavgpool(5x3)",
    "adaptiveavgpool(4x4)",
    "adaptiveavgpool(11x9)",                                  # larger than the input: overlapping windows
])
def test_one_enlarging_layer(body):
    net = net_of(body, "1x8x8")
    check_against_gradients(net, need_interior="adaptive" not in body and "1x1" not in body)


def test_dilated_transposed_convolution_is_within_the_hull():
    net = net_of("conv_transpose(1, 3x3, stride=2, dilation=2, pad=2)", "1x8x8")
    check_against_gradients(net, hull=True, need_interior=False)
    net = net_of("conv_transpose(1, 3x3, stride=3, dilation=2, pad=2)", "1x8x8")
    check_against_gradients(net, hull=True, need_interior=False)


@pytest.mark.parametrize("body", [
    # unit o reads input i only where o + pad - t*dilation is a multiple of the stride: with
    # stride 2 and dilation 2 the odd units read nothing; with stride 3 and dilation 2 every unit
    # reads exactly one input (taps 0, 2, 4 fall on different residues mod 3)
    "conv_transpose(1, 3x3, stride=2, dilation=2, pad=2)",
    "conv_transpose(1, 3x3, stride=3, dilation=2, pad=2)",
    "conv_transpose(1, 3x3, stride=3, dilation=2) -> conv(1, 3x3, pad=1)",
])
def test_dilated_strided_transposed_convolution_is_exact(body):
    net = net_of(body, "1x6x6")
    field = check_against_gradients(net, need_interior=False)
    if "stride=3, dilation=2, pad=2" in body:
        assert field["size"] == [1, 1]


@pytest.mark.parametrize("body", [
    # units 3o-1 of the transposed convolution read nothing; a window over only such units
    # depends on no input either
    "conv_transpose(1, 1x1, stride=3) -> conv(1, 1x1, stride=3, pad=(1, 0, 1, 0)) -> conv(1, 2x2)",
    "conv_transpose(1, 1x1, stride=3) -> conv(1, 2x2, stride=3, pad=(2, 0, 2, 0))",
    "conv_transpose(1, 1x1, stride=3, pad=(2, 2, 2, 2), output_pad=2) -> conv(1, 1x1, stride=3)"
    " -> avgpool(2, stride=2, pad=1)",
])
def test_units_that_read_only_gaps_have_empty_fields(body):
    net = net_of(body, "1x8x8")
    check_against_gradients(net, need_interior=False)
    assert net[net.output_name]["receptive_field"]["size"] == [0, 0]


def test_fractional_stride_is_exact_and_printed_as_a_fraction():
    net = net_of("conv_transpose(1, 4x4, stride=2, pad=1) -> upsample(3)", "1x6x6")
    field = check_against_gradients(net, "conv_transpose1")
    assert field["stride"] == [Fraction(1, 2)] * 2 and field["size"] == [2, 2]
    field = check_against_gradients(net)
    assert field["stride"] == [Fraction(1, 6)] * 2
    s = net.summary()["layers"][-1]["receptive_field"]
    assert s["stride"] == ["1/6", "1/6"] and s["size"] == [2, 2]
    assert "1/6" in net.summary_table()


@pytest.mark.parametrize("body", [
    # down then up: the field of a unit depends on its position modulo 2
    "conv(1, 3x3, stride=2, pad=1) -> upsample(2)",
    "conv(1, 3x3, stride=2, pad=1) -> upsample(2, mode=bilinear) -> conv(1, 3x3, pad=1)",
    "avgpool(2) -> conv(1, 3x3, pad=1) -> conv_transpose(1, 2x2, stride=2)",
    "conv_transpose(1, 4x4, stride=2, pad=1) -> conv_transpose(1, 4x4, stride=2, pad=1)",    # DCGAN
    "upsample(2) -> upsample(2, mode=bilinear) -> conv(1, 3x3, stride=2)",
    "conv(1, 3x3, stride=3) -> upsample(2) -> conv(1, 2x2, stride=2) -> conv_transpose(1, 3x3, stride=3)",
])
def test_chains_through_enlarging_layers(body):
    check_against_gradients(net_of(body, "1x12x12" if "conv_transpose(1, 4x4" in body else "1x24x24"))


UNET = """
block down(c) {
    conv(c, 3x3, pad=1) -> relu
}
network U {
    input x: 1x32x32
    e1 = down(2)
    e2 = maxpool(2) -> down(2)
    b = maxpool(2) -> down(2)
    u2 = b -> UP2
    d2 = concat(u2, e2) -> down(2)
    u1 = d2 -> UP1
    concat(u1, e1) -> down(2) -> conv(1, 1x1)
}
"""


@pytest.mark.parametrize("up", ["conv_transpose(2, 2x2, stride=2)", "upsample(2, mode=bilinear)"])
def test_unet_fields_against_gradients(up):
    text = UNET.replace("UP2", up).replace("UP1", up).replace("maxpool", "avgpool")
    net = cnnspec.loads(text, file="t.cnn")
    check_against_gradients(net)
    assert net.warnings == []


def test_paths_of_different_jumps_are_flagged():
    net = net_of("a = x -> avgpool(2) -> upsample(2)\n b = x -> conv(1, 3x3, pad=1)\n concat(a, b)", "1x8x8")
    check_against_gradients(net)
    assert net[net.output_name]["receptive_field"]["aligned"]        # U-Net-like: same jump
    net = net_of("a = x -> conv(1, 2x2, stride=2)\n b = a -> upsample(2) -> avgpool(2)\n concat(a, b)", "1x8x8")
    check_against_gradients(net)
    assert net[net.output_name]["receptive_field"]["aligned"]
    net = net_of("a = x -> conv(1, 3x3, stride=2, pad=1)\n b = x -> conv(1, 1x1, stride=2)\n concat(a, b)",
                 "1x8x8")
    assert net[net.output_name]["receptive_field"]["aligned"]        # same centre, same jump
    net = net_of("a = x -> conv(1, 2x2, stride=2)\n b = x -> conv(1, 1x1, stride=2)\n concat(a, b)", "1x8x8")
    assert not net[net.output_name]["receptive_field"]["aligned"]    # centres half a pixel apart
    assert any("not aligned" in w for w in net.warnings)
