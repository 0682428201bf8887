"""Receptive fields against input gradients in PyTorch.

Each network is rebuilt in PyTorch from its layers' resolved configurations, with every weight 1
and no bias (so nothing cancels); the gradient of the sum over channels of one output position
with respect to the input is nonzero exactly on the input positions that position depends on.
Its extent, per axis, must be the interval the analysis predicts, [o*j - p, o*j - p + r - 1]
(clipped to the input), for every output position; and the largest number of input positions
any interior output position sees must be the reported size.
"""
import math

import pytest

import cnnspec

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
    ``layer`` (default: the output) depends on, measured with autograd."""
    layer = layer or net.output_name
    sub = net
    shape = sub.input_shape
    x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
    saved = sub.graph.graph["output"]
    sub.graph.graph["output"] = layer
    try:
        y = run_torch(sub, x)
    finally:
        sub.graph.graph["output"] = saved
    found = {}
    out_sizes = y.shape[2:]
    for o in _positions(out_sizes):
        (g,) = torch.autograd.grad(y[(0, slice(None), *o)].sum(), x, retain_graph=True)
        nz = g[0].abs().sum(0).nonzero()
        found[o] = tuple((int(nz[:, a].min()), int(nz[:, a].max())) for a in range(len(out_sizes)))
    return found


def _positions(sizes):
    if len(sizes) == 1:
        return [(i,) for i in range(sizes[0])]
    return [(i, j) for i in range(sizes[0]) for j in range(sizes[1])]


def predicted(field, o, n):
    """The predicted interval of output position o on one axis, clipped to the input size n,
    and whether it lies inside the input (then no clipping happened)."""
    axis_out = []
    inside = True
    for a, oa in enumerate(o):
        j, p, r = field["stride"][a], field["padding"][a], field["extent"][a]
        lo, hi = math.ceil(oa * j - p), math.floor(oa * j - p + r - 1)
        inside &= lo >= 0 and hi <= n[a] - 1
        axis_out.append((max(lo, 0), min(hi, n[a] - 1)))
    return tuple(axis_out), inside


def check_against_gradients(net, layer=None, need_interior=True):
    layer = layer or net.output_name
    field = net[layer]["receptive_field"]
    n = net.input_shape[1:]
    measured = gradient_extents(net, layer)
    sizes = [0] * len(n)
    interior = 0
    for o, extents in measured.items():
        want, inside = predicted(field, o, n)
        assert extents == want, (layer, o, extents, want)
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
