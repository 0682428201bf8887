"""The layers of dsl.md §10.1 in the catalogue: output shapes against PyTorch, parameters and MACs
by hand and against PyTorch modules, the regular configuration the engine reads."""
import inspect
import itertools
import math
import random

import pytest

import cnnspec
from cnnspec.layers import LAYERS


def net_of(body: str, shape: str = "3x8x8") -> "cnnspec.Network":
    return cnnspec.loads(f"network T {{\n    input x: {shape}\n    {body}\n}}\n", file="t.cnn")


def test_every_layer_of_section_10_is_in_the_catalogue_with_a_documented_config():
    new = ["conv_transpose", "upsample", "reshape", "mul", "relu6", "hardswish", "hardsigmoid", "silu", "gelu",
           "softplus", "elu", "adaptiveavgpool", "adaptivemaxpool", "channels", "shuffle", "droppath", "sample"]
    assert set(new) <= set(LAYERS)
    for op in new:
        if op in ("relu6", "hardswish", "hardsigmoid", "silu", "gelu", "softplus"):
            continue                                  # no arguments, no config
        doc = inspect.getdoc(type(LAYERS[op])) or ""          # a class's own, or its base's
        assert "config key" in doc.lower(), op


@pytest.mark.parametrize("body, shape, expected", [
    ("conv_transpose(4, 3x3)", "2x5x6", (4, 7, 8)),
    ("conv_transpose(4, 4x4, stride=2, pad=1)", "2x5x6", (4, 10, 12)),
    ("conv_transpose(4, 3x3, stride=2, pad=1, output_pad=1)", "2x7x7", (4, 14, 14)),
    ("conv_transpose(4, 3x3, stride=2, pad=same)", "2x7x5", (4, 14, 10)),
    ("conv_transpose(4, 1x1, stride=3, pad=same)", "2x7x5", (4, 21, 15)),
    ("conv_transpose(4, 5, stride=2, pad=same)", "2x9", (4, 18)),
    ("conv_transpose(4, 3, stride=2, pad=(0, 1))", "2x9", (4, 18)),
    ("conv_transpose(4, 3x3, pad=full)", "2x7x7", (4, 5, 5)),
    ("upsample", "2x5x6", (2, 10, 12)),
    ("upsample(3x2, mode=bilinear)", "2x5x6", (2, 15, 12)),
    ("upsample(4, mode=linear)", "2x5", (2, 20)),
    ("adaptiveavgpool(3x2)", "2x7x5", (2, 3, 2)),
    ("adaptivemaxpool(9)", "2x7", (2, 9)),
    ("flatten -> reshape(5x2x6)", "2x5x6", (5, 2, 6)),
    ("reshape(60)", "2x5x6", (60,)),
    ("channels(1, 3)", "4x5x6", (2, 5, 6)),
    ("flatten -> channels(0, 7)", "4x5x6", (7,)),
    ("shuffle(2)", "4x5x6", (4, 5, 6)),
    ("relu6 -> hardswish -> hardsigmoid -> silu -> gelu -> softplus -> elu(0.5) -> droppath(0.1)", "4x5x6",
     (4, 5, 6)),
])
def test_output_shapes_by_hand(body, shape, expected):
    assert net_of(body, shape).output_shape == expected


def test_transposed_convolution_against_pytorch():
    torch = pytest.importorskip("torch")
    rng = random.Random(0)
    for _ in range(150):
        rank = rng.choice((1, 2))
        n = [rng.randint(1, 9) for _ in range(rank)]
        k = [rng.randint(1, 5) for _ in range(rank)]
        s = [rng.randint(1, 3) for _ in range(rank)]
        d = [rng.randint(1, 2) for _ in range(rank)]
        p = [rng.randint(0, 2) for _ in range(rank)]
        op = [rng.randint(0, max(si, di) - 1) for si, di in zip(s, d)]
        groups = rng.choice((1, 2))
        cin, cout = 2 * rng.randint(1, 2), 2 * rng.randint(1, 3)
        conv = (torch.nn.ConvTranspose1d if rank == 1 else torch.nn.ConvTranspose2d)(
            cin, cout, k, s, p, op, groups=groups, dilation=d, bias=rng.random() < 0.5)
        size = "x".join(map(str, [cin, *n]))
        body = (f"conv_transpose({cout}, {'x'.join(map(str, k))}, stride={'x'.join(map(str, s))}, "
                f"pad={'x'.join(map(str, p))}, output_pad={'x'.join(map(str, op))}, "
                f"dilation={'x'.join(map(str, d))}, groups={groups}, bias={'true' if conv.bias is not None else 'false'})")
        expected = [(ni - 1) * si - 2 * pi + di * (ki - 1) + oi + 1 for ni, ki, si, pi, oi, di in zip(n, k, s, p, op, d)]
        if min(expected) < 1:
            with pytest.raises(cnnspec.CnnSpecError, match="below 1"):
                net_of(body, size)
            continue
        net = net_of(body, size)
        with torch.no_grad():
            out = conv(torch.zeros(1, cin, *n))
        layer = net["conv_transpose1"]
        assert layer["output_shape"] == tuple(out.shape[1:]), body
        assert layer["n_params"] == sum(q.numel() for q in conv.parameters())
        assert layer["params"]["weight"] == tuple(conv.weight.shape)          # PyTorch's layout
        assert layer["macs"] == conv.weight.numel() * math.prod(n)              # fvcore / flop_counter
        cfg = layer["config"]
        assert cfg["pad"] == tuple(v for pi in p for v in (pi, pi)) and cfg["output_pad"] == tuple(op)


@pytest.mark.parametrize("k, s, d", list(itertools.product((1, 2, 3, 4, 5), (1, 2, 3), (1, 2))))
def test_same_transposed_convolution_is_pytorchs_usual_padding(k, s, d):
    """pad=same gives in*stride, cropping ceil(P/2) before and floor(P/2) after, P = d*(k-1)+1-s:
    PyTorch's ConvTranspose2d(padding=ceil(P/2), output_padding=P % 2), the same values."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = net_of(f"conv_transpose(1, {k}, stride={s}, dilation={d}, pad=same)", "1x7")
    cfg = net["conv_transpose1"]["config"]
    assert net.output_shape == (1, 7 * s)
    total = d * (k - 1) + 1 - s
    x = torch.randn(1, 1, 7, dtype=torch.float64)
    w = torch.randn(1, 1, k, dtype=torch.float64)
    full = F.conv_transpose1d(x, w, stride=s, dilation=d)
    before, after = cfg["pad"]
    ours = F.pad(full, (0, cfg["output_pad"][0]))[..., before:full.shape[-1] + cfg["output_pad"][0] - after]
    if total >= 0:
        assert (before, after, cfg["output_pad"]) == (-(-total // 2), total // 2, (0,))
        if total % 2 < max(s, d):                      # expressible as PyTorch's arguments
            theirs = F.conv_transpose1d(x, w, stride=s, dilation=d, padding=-(-total // 2), output_padding=total % 2)
            assert torch.equal(ours, theirs)
    else:
        assert (before, after, cfg["output_pad"]) == (0, 0, (-total,))
        theirs = F.conv_transpose1d(x, w, stride=s, dilation=d, output_padding=-total)
        assert torch.equal(ours, theirs)


def test_upsample_and_adaptive_pools_against_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.zeros(1, 3, 5, 7)
    for body, ref in [("upsample(2)", F.interpolate(x, scale_factor=2)),
                      ("upsample(3x2, mode=bilinear)", F.interpolate(x, scale_factor=(3, 2), mode="bilinear")),
                      ("adaptiveavgpool(3x4)", F.adaptive_avg_pool2d(x, (3, 4))),
                      ("adaptivemaxpool(6x9)", F.adaptive_max_pool2d(x, (6, 9)))]:
        assert net_of(body, "3x5x7").output_shape == tuple(ref.shape[1:]), body


def test_params_macs_and_memory_of_the_new_layers():
    net = net_of("a = conv_transpose(6, 3x3, stride=2, groups=3, bias=false)\n"
                 "b = a -> upsample(2) -> adaptiveavgpool(4x4) -> channels(1, 5) -> shuffle(2)\n"
                 "g = a -> globalavgpool -> conv(6, 1x1) -> hardsigmoid\n"
                 "mul(a, g) -> relu6 -> droppath(0.2) -> flatten -> reshape(6x17x17)", "3x8x8")
    a = net["a"]
    assert a["output_shape"] == (6, 17, 17)
    assert a["params"] == {"weight": (3, 2, 3, 3)} and a["n_params"] == 54
    assert a["macs"] == 3 * 2 * 9 * 64                               # C*(F/groups)*k per input position
    for name in ("upsample1", "adaptiveavgpool1", "channels1", "shuffle1", "mul1"):
        assert net[name]["macs"] == 0 and net[name]["n_params"] == 0
        assert net[name]["activations"] == math.prod(net[name]["output_shape"])
    for name in ("relu6_1", "droppath1", "reshape1", "flatten1"):
        assert net[name]["activations"] == 0                          # in place, or a view
    assert net["channels1"]["output_shape"] == (4, 4, 4)


def test_regular_configs_for_the_engine():
    net = net_of("conv_transpose(4, 3x2, stride=2x1, pad=(1, 0, 0, 1), output_pad=1x0, dilation=1)\n"
                 "upsample(2, mode=bilinear) -> adaptivemaxpool(5) -> channels(0, 2) -> shuffle(2)", "2x6x6")
    assert net["conv_transpose1"]["config"] == {
        "filters": 4, "kernel": (3, 2), "stride": (2, 1), "pad": (1, 0, 0, 1), "output_pad": (1, 0),
        "dilation": (1, 1), "groups": 1, "bias": True, "trainable": True}
    assert net["upsample1"]["config"] == {"scale": (2, 2), "mode": "bilinear"}
    assert net["adaptivemaxpool1"]["config"] == {"size": (5, 5)}
    assert net["channels1"]["config"] == {"start": 0, "stop": 2}
    assert net["shuffle1"]["config"] == {"groups": 2}
    assert net_of("elu", "2x3")["elu1"]["config"] == {"alpha": 1.0}


def test_describe_for_tables_and_drawings():
    net = net_of("conv_transpose(4, 4x4, stride=2, pad=1) -> upsample(2, mode=bilinear) -> adaptiveavgpool(3) "
                 "-> channels(0, 2) -> shuffle(2) -> elu(0.5)", "2x6x6")
    table = net.summary_table()
    for text in ("conv_transpose(4, 4x4, stride 2x2, pad 1)", "upsample(2x2, bilinear)", "adaptiveavgpool(3x3)",
                 "channels(0:2)", "shuffle(2)", "elu(0.5)"):
        assert text in table, text
