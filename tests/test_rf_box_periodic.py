"""run --rf and the report's box after upsampling / transposed convolutions: per unit, the
analysis's exact interval (the field depends on the unit's position modulo the upsampling)."""
import numpy as np

import cnnspec
from cnnspec.analysis import receptive_field as rf
from cnnspec.explain.fields import field_box, receptive_field
from cnnspec.report.build import report_data

SPEC = """network Up {
    input x: 1x10x11
    upsample(2) -> conv(2, 3x3, pad=1) -> relu -> conv_transpose(2, 4x4, stride=2, pad=1)
}"""


def test_box_is_the_analysed_interval_and_holds_the_gradient():
    net = cnnspec.loads(SPEC)
    model = net.compile(dtype="float64", seed=0)
    x = np.random.default_rng(0).random((1, 10, 11))
    for layer in ("upsample1", "conv1", "conv_transpose1"):
        node = dict(net.graph.nodes[layer], name=layer)
        h, w = node["output_shape"][1:]
        for pos in [(0, 0), (1, 1), (2, 3), (h - 1, w - 2)]:
            want = tuple(rf.interval(node["receptive_field"], pos))
            assert field_box(node, pos) == want, (layer, pos)
            view = receptive_field(model, x, layer, pos)
            assert view.inside(), (layer, pos, view.box)


def test_report_gives_the_per_unit_tables():
    data = report_data(cnnspec.loads(SPEC))
    layers = data["layers"] if isinstance(data["layers"], list) else list(data["layers"].values())
    conv = next(layer for layer in layers if layer.get("name") == "conv1")
    units = conv["field"]["units"]
    assert [u["period"] for u in units] == [2, 2]
