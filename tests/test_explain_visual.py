"""Gradient ascent in input space (`cnnspec filters --ascent`), receptive fields on the input
(`cnnspec run --rf`), and the `explain` / `filters` commands."""
import numpy as np
import pytest

import cnnspec
from cnnspec import CnnSpecError
from cnnspec.cli import main
from cnnspec.data.shapes import make_shapes
from cnnspec.explain import ascent, receptive_field
from cnnspec.explain.fields import parse_unit
from cnnspec.layers.conv import NAMED_KERNELS
from conftest import SPECS


@pytest.fixture(scope="module")
def lenet():
    return cnnspec.load(SPECS / "lenet5.cnn").compile(dtype="float32", seed=0)


# -- gradient ascent -------------------------------------------------------------------------------

def test_ascent_climbs_and_beats_random_inputs(lenet):
    result = ascent(lenet, "conv2", channels=[0, 3, 7, 12], steps=40, lr=0.05, jitter=0, seed=1)
    history = result.objective
    assert history.shape == (41, 4) and result.inputs.shape == (4, 1, 32, 32)
    steps = np.diff(history, axis=0)
    assert (steps < 0).mean() < 0.1                         # monotonic, or nearly (clipping, step size)
    assert (history[-1] > history[0] + 0.1).all()
    assert result.inputs.min() >= 0 and result.inputs.max() <= 1
    pictures, _ = make_shapes(300, (1, 32, 32), seed=0)
    noise = np.random.default_rng(0).random((300, 1, 32, 32), dtype=np.float32)
    for others in (pictures, noise):
        best = lenet.activations(others, ["conv2"])["conv2"][:, [0, 3, 7, 12]].mean(axis=(2, 3)).max(axis=0)
        assert (history[-1] > best + 0.25 * np.abs(best) + 0.05).all(), (history[-1], best)


def test_ascent_is_seeded_and_jitter_and_blur_run(lenet):
    a = ascent(lenet, "conv1", channels=[1, 2], steps=6, jitter=2, blur=0.8, blur_every=2, seed=3)
    b = ascent(lenet, "conv1", channels=[1, 2], steps=6, jitter=2, blur=0.8, blur_every=2, seed=3)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    c = ascent(lenet, "conv1", channels=[1, 2], steps=6, jitter=2, blur=0.8, blur_every=2, seed=4)
    assert not np.array_equal(a.inputs, c.inputs)
    assert (a.objective[-1] > a.objective[0]).all()


def test_ascent_of_a_fixed_kernel_finds_the_kernel():
    """One 3x3 window, no nonlinearity: the optimum in [0, 1] is 1 where the kernel is positive
    and 0 where it is negative (the kernel's own pattern)."""
    names = ["sobel_x", "sobel_y", "laplacian", "edge_diag"]
    net = cnnspec.loads("network K {\n input image: 1x3x3\n conv(4, 3x3, weights=[%s], bias=false)\n}" % ", ".join(names))
    model = net.compile(dtype="float32")
    result = ascent(model, "conv1", steps=60, lr=0.05, jitter=0, seed=0)
    for k, name in enumerate(names):
        kernel = np.array(NAMED_KERNELS[name], dtype=float)
        x = result.inputs[k, 0]
        assert np.corrcoef(x.ravel(), kernel.ravel())[0, 1] > 0.85, name
        assert (x[kernel > 0] > 0.99).all() and (x[kernel < 0] < 0.01).all(), name


def test_ascent_on_edges_cnn_follows_the_kernels():
    """edges.cnn's 'same'-padded 128x128 maps: a zero-sum kernel's mean activation depends only on
    the borders, so Sobel x wants dark left and bright right, Sobel y dark top and bright bottom;
    the blur (all weights positive) wants everything bright."""
    model = cnnspec.load(SPECS / "edges.cnn").compile(dtype="float32")
    result = ascent(model, "conv1", channels=[0, 1, 5], steps=30, lr=0.1, jitter=0, seed=0)
    sobel_x, sobel_y, blur = (result.inputs[k, 0] for k in range(3))
    assert sobel_x[:, 0].mean() < 0.05 and sobel_x[:, -1].mean() > 0.95
    assert sobel_y[0].mean() < 0.05 and sobel_y[-1].mean() > 0.95
    assert blur.mean() > 0.95
    assert (result.objective[-1] > result.objective[0]).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer="image"), "choose a layer after the input"),
    (dict(layer="conv2", channels=[16]), "channels 0..15"),
    (dict(layer="conv2", steps=-1), "the number of steps must be a whole number >= 0"),
    (dict(layer="conv2", lr=0), "the step size must be a number > 0"),
    (dict(layer="conv2", blur=float("nan")), "the blur must be"),
    (dict(layer="nope"), "no layer named `nope`"),
])
def test_ascent_errors(lenet, kwargs, message):
    with pytest.raises(CnnSpecError, match=message):
        ascent(lenet, **kwargs)


# -- receptive fields ------------------------------------------------------------------------------

SMOOTH = """
network Smooth {
    input image: 2x24x24
    conv(3, 3x3) -> tanh -> avgpool(2)
    conv(4, 3x3, stride=2, pad=1) -> sigmoid
    conv(2, 2x2)
}
"""


def test_the_box_is_the_analysis_field_clipped(lenet):
    x = make_shapes(1, (1, 32, 32), seed=2)[0][0]
    view = receptive_field(lenet, x, "conv2", (4, 5))
    assert view.unclipped == ((8, 21), (10, 23))             # 14x14, jump 2, no padding: rows 2*4 ..
    assert view.box == view.unclipped
    view = receptive_field(lenet, x, "maxpool2", (4, 0))     # 16x16, jump 4: rows 16..31, cols 0..15
    assert view.unclipped == ((16, 31), (0, 15))
    padded = cnnspec.loads("network P {\n input image: 1x10x10\n conv(2, 5x5, pad=2) -> conv(2, 3x3, pad=1)\n}")
    model = padded.compile(dtype="float32")
    view = receptive_field(model, np.ones((1, 10, 10), np.float32), "conv2", (0, 9))
    assert view.unclipped == ((-3, 3), (6, 12)) and view.box == ((0, 3), (6, 9))


@pytest.mark.parametrize("layer, positions", [("conv1", [(0, 0), (13, 27)]), ("conv2", [(0, 0), (4, 5), (9, 9)]),
                                              ("maxpool2", [(0, 0), (2, 3), (4, 4)])])
def test_the_gradient_stays_in_the_box(lenet, layer, positions):
    x = make_shapes(1, (1, 32, 32), seed=2)[0][0]
    for position in positions:
        view = receptive_field(lenet, x, layer, position)
        assert view.inside(), (layer, position)


def test_the_gradient_fills_the_box_without_gaps():
    """Smooth activations, no dilation: the effective field reaches every border of the box (the
    clipped one at the input's edges)."""
    model = cnnspec.loads(SMOOTH).compile(dtype="float64", seed=1)
    x = np.random.default_rng(0).random(model.input_shape)
    for layer, position in [("conv3", (2, 2)), ("conv3", (0, 0)), ("conv3", (4, 1)), ("conv2", (5, 5)),
                            ("avgpool1", (3, 7))]:
        view = receptive_field(model, x, layer, position)
        assert view.inside()
        nonzero = np.argwhere(view.effective != 0)
        bounds = tuple(zip(nonzero.min(axis=0).tolist(), nonzero.max(axis=0).tolist()))
        assert bounds == view.box, (layer, position, bounds, view.box)


def test_dilated_fields_have_gaps_inside_the_box():
    model = cnnspec.loads("network D {\n input image: 1x16x16\n conv(2, 3x3, dilation=4) -> conv(1, 3x3)\n}").compile(
        dtype="float64", seed=0)
    view = receptive_field(model, np.random.default_rng(0).random((1, 16, 16)), "conv2", (3, 3))
    assert view.inside() and view.unclipped == ((3, 13), (3, 13))
    seen = [0, 1, 2, 4, 5, 6, 8, 9, 10]                      # 3x3 taps 4 apart, then 3 neighbours
    expected = np.zeros((11, 11), bool)
    expected[np.ix_(seen, seen)] = True
    np.testing.assert_array_equal(view.effective[3:14, 3:14] != 0, expected)


def test_sequence_fields(tmp_path):
    from cnnspec.explain.pictures import plot_field

    model = cnnspec.loads("network S {\n input w: 3x30\n conv(4, 5, pad=2) -> tanh -> conv(2, 3, stride=2)\n}").compile(
        dtype="float64", seed=0)
    x = np.random.default_rng(1).standard_normal((3, 30))
    for position, box in [(0, (-2, 4)), (7, (12, 18)), (13, (24, 30))]:    # field 7, jump 2, padding 2
        view = receptive_field(model, x, "conv2", (position,))
        assert view.unclipped == (box,) and view.box == ((max(box[0], 0), min(box[1], 29)),)
        nonzero = np.flatnonzero(view.effective)
        assert (nonzero.min(), nonzero.max()) == view.box[0]
    plot_field(x, view, tmp_path / "rf.png")
    assert (tmp_path / "rf.png").stat().st_size > 1000


@pytest.mark.parametrize("text", ["conv2", "conv2:", ":3,4", "conv2:a,b"])
def test_unit_syntax_errors(text):
    with pytest.raises(CnnSpecError, match="--rf takes LAYER:ROW,COL"):
        parse_unit(text)


def test_field_errors(lenet):
    x = np.zeros((1, 32, 32), np.float32)
    with pytest.raises(CnnSpecError, match="outside the layer's 10x10 positions"):
        receptive_field(lenet, x, "conv2", (10, 0))
    with pytest.raises(CnnSpecError, match="no positions on the input"):
        receptive_field(lenet, x, "dense1", (0,))


# -- the commands ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("explain")
    x, y = make_shapes(1, (1, 32, 32), seed=7)
    Image.fromarray((x[0, 0] * 255).round().astype(np.uint8)).save(folder / "shape.png")
    np.save(folder / "shape.npy", x[0])
    lenet = cnnspec.load(SPECS / "lenet5.cnn").compile(dtype="float32", seed=0)
    lenet.save(folder / "w.npz")
    return folder


@pytest.mark.parametrize("method", ["gradcam", "saliency", "smoothgrad", "occlusion"])
def test_explain_command(picture, capsys, method):
    from cnnspec.explain.methods import explain

    out, npy = picture / f"{method}.png", picture / f"{method}.npy"
    extra = {"smoothgrad": ["--samples", "8"], "occlusion": ["--window", "6x4", "--stride", "3x2"]}.get(method, [])
    status = main(["explain", str(SPECS / "lenet5.cnn"), "--weights", str(picture / "w.npz"), "--input",
                   str(picture / "shape.npy"), "--method", method, "--class", "triangle", "-o", str(out),
                   "--npy", str(npy), *extra])
    assert status == 0
    text = capsys.readouterr().out
    assert "of class 7 triangle" in text and f"wrote {out}" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = cnnspec.load(SPECS / "lenet5.cnn").compile(dtype="float32", seed=0)
    model.load(picture / "w.npz")
    options = {"smoothgrad": {"samples": 8}, "occlusion": {"window": (6, 4), "stride": (3, 2)}}.get(method, {})
    expected = explain(model, np.load(picture / "shape.npy"), method, 7, **options).map
    np.testing.assert_allclose(np.load(npy), expected, rtol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--method", "saliency"], "say where the map goes"),
    (["--class", "hexagon", "-o", "x.png"], "'hexagon' is neither an index 0..9 nor a class name"),
    (["--method", "saliency", "--layer", "conv1", "-o", "x.png"], "--layer is Grad-CAM's"),
    (["--method", "occlusion", "--window", "0", "-o", "x.png"], "--window takes a size such as 4 or 4x4"),
])
def test_explain_command_errors(picture, capsys, args, message):
    status = main(["explain", str(SPECS / "lenet5.cnn"), "--input", str(picture / "shape.npy"), *args])
    assert status == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_filters_command(picture, capsys):
    out, npy = picture / "ascent.png", picture / "ascent.npy"
    assert main(["filters", str(SPECS / "lenet5.cnn"), "--weights", str(picture / "w.npz"), "--layer", "conv2",
                 "--ascent", "--channels", "0", "5", "--steps", "5", "-o", str(out), "--npy", str(npy)]) == 0
    assert "conv2: 2 channels, 5 steps" in capsys.readouterr().out
    assert np.load(npy).shape == (2, 1, 32, 32) and out.stat().st_size > 1000
    assert main(["filters", str(SPECS / "lenet5.cnn"), "-o", str(picture / "k.png")]) == 0
    assert "(conv1)" in capsys.readouterr().out
    assert main(["filters", str(SPECS / "lenet5.cnn"), "--layer", "relu1", "-o", str(picture / "k.png")]) == 1
    assert "has no kernels to draw" in capsys.readouterr().err


def test_filters_and_explain_choose_the_network(picture, capsys):
    """--network picks a network of a file with several (a GAN's discriminator); a wrong name says
    which networks there are."""
    assert main(["filters", str(SPECS / "dcgan64.cnn"), "--network", "Discriminator", "--layer", "conv1", "--ascent",
                 "--channels", "0", "--steps", "2", "-o", str(picture / "d.png"), "--npy", str(picture / "d.npy")]) == 0
    assert "conv1: 1 channel" in capsys.readouterr().out
    assert np.load(picture / "d.npy").shape == (1, 3, 64, 64)                 # the discriminator's input
    assert main(["filters", str(SPECS / "dcgan64.cnn"), "--network", "Critic", "-o", str(picture / "d.png")]) == 1
    err = capsys.readouterr().err
    assert "Critic" in err and "Discriminator" in err and "Traceback" not in err
    np.save(picture / "face.npy", np.random.default_rng(0).random((3, 64, 64)))
    assert main(["explain", str(SPECS / "dcgan64.cnn"), "--network", "Discriminator", "--input",
                 str(picture / "face.npy"), "--method", "saliency", "--npy", str(picture / "sal.npy")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("Discriminator on face.npy: predicted class 0\n")   # no class name: 1 output
    assert np.load(picture / "sal.npy").shape == (64, 64)


def test_run_rf(picture, capsys):
    out = picture / "rf.png"
    assert main(["run", str(SPECS / "lenet5.cnn"), "--weights", str(picture / "w.npz"), "--input",
                 str(picture / "shape.png"), "--rf", "conv2:4,5", "--rf-out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "conv2 at 4,5 sees input 8..21 x 10..23" in text and out.stat().st_size > 1000
    assert main(["run", str(SPECS / "lenet5.cnn"), "--input", str(picture / "shape.png"), "--rf", "conv2:40,5",
                 "--rf-out", str(out)]) == 1
    assert "outside the layer's 10x10 positions" in capsys.readouterr().err
