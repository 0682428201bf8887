"""cnnspec.explain against Captum (PyTorch) on the same weights: Grad-CAM (LayerGradCam +
LayerAttribution.interpolate), saliency (Saliency), SmoothGrad (NoiseTunnel, fed the same noise)
and occlusion (Occlusion); LeNet-5 as a hand-written torch module, and a 3-channel network
through the graph's functional PyTorch twin. Also the upsampling against F.interpolate, the
command, and the errors."""
import numpy as np
import pytest

import cnnspec
from cnnspec import CnnSpecError
from cnnspec.data.shapes import make_shapes
from cnnspec.explain import gradcam, occlusion, saliency, smoothgrad, upsample
from conftest import SPECS

TOL = 1e-5                  # relative to the map's largest value (float64: median 1e-15, at most 4e-8)

RGB = """
network Rgb {
    input image: 3x16x16
    conv(5, 3x3, pad=1) -> relu -> conv(6, 3x3, stride=2) -> relu
    conv(4, 3x3, pad=same) -> tanh -> globalavgpool -> flatten -> dense(3) -> softmax
}
"""


@pytest.fixture(scope="module")
def lenet():
    model = cnnspec.load(SPECS / "lenet5.cnn").compile(dtype="float64", seed=11)
    x, _ = make_shapes(4, (1, 32, 32), seed=1)
    return model, x.astype(np.float64)


@pytest.fixture(scope="module")
def torch_lenet(lenet):
    """LeNet-5 written as one writes it in PyTorch, with the cnnspec model's weights copied in."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("captum")
    nn, F = torch.nn, torch.nn.functional
    model, _ = lenet

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):                                   # the logits: no softmax
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc3(F.relu(self.fc2(x)))

    net = LeNet5().double().eval()
    pairs = {"conv1": net.conv1, "conv2": net.conv2, "dense1": net.fc1, "dense2": net.fc2, "dense3": net.fc3}
    with torch.no_grad():
        for name, module in pairs.items():
            w = model.params[name]["weight"]
            module.weight.copy_(torch.from_numpy(w.T.copy() if name.startswith("dense") else w.copy()))
            module.bias.copy_(torch.from_numpy(model.params[name]["bias"].copy()))
    return net


def tensor(x):
    import torch
    return torch.from_numpy(np.ascontiguousarray(x))[None]


def close(ours, theirs):
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape
    scale = max(np.abs(theirs).max(), 1e-12)
    err = np.abs(ours - theirs).max() / scale
    assert err < TOL, f"relative difference {err:.3g}"


def test_upsampling_matches_interpolate():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    values = np.random.default_rng(0).random((5, 7))
    for size in [(32, 32), (9, 20), (5, 7), (3, 4)]:
        for mode in ("bilinear", "nearest"):
            theirs = F.interpolate(torch.from_numpy(values)[None, None], size, mode=mode)[0, 0].numpy()
            np.testing.assert_allclose(upsample(values, size, mode), theirs, rtol=0, atol=1e-12, err_msg=f"{size} {mode}")
    sequence = np.random.default_rng(1).random(6)
    theirs = F.interpolate(torch.from_numpy(sequence)[None, None], 15, mode="linear")[0, 0].numpy()
    np.testing.assert_allclose(upsample(sequence, (15,)), theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer, target", [(None, None), ("conv2", 3), ("conv1", None)])
def test_gradcam_matches_captum(lenet, torch_lenet, layer, target):
    from captum.attr import LayerAttribution, LayerGradCam

    model, xs = lenet
    module = {None: torch_lenet.conv2, "conv2": torch_lenet.conv2, "conv1": torch_lenet.conv1}[layer]
    positive = 0
    for x in xs:
        for relu in (True, False):              # without the ReLU the map is never trivially zero
            ours = gradcam(model, x, target, layer, relu=relu)
            logits = torch_lenet(tensor(x))[0].detach().numpy()
            assert ours.predicted == int(np.argmax(logits)) and ours.layer == (layer or "conv2")
            assert ours.score == pytest.approx(logits[ours.target], rel=1e-12)
            cam = LayerGradCam(torch_lenet, module).attribute(tensor(x), target=ours.target, relu_attributions=relu)
            close(ours.raw, cam[0, 0].detach().numpy())
            up = LayerAttribution.interpolate(cam, (32, 32), interpolate_mode="bilinear")
            close(ours.map, up[0, 0].detach().numpy())
            positive += relu and ours.map.max() > 0
            assert relu or np.abs(ours.raw).max() > 0
    assert positive >= 2


def test_saliency_matches_captum(lenet, torch_lenet):
    from captum.attr import Saliency

    model, xs = lenet
    for x, target in zip(xs, (None, 0, 7, 9)):
        ours = saliency(model, x, target)
        theirs = Saliency(torch_lenet).attribute(tensor(x).requires_grad_(), target=ours.target, abs=True)
        close(ours.map, theirs[0].amax(dim=0).detach().numpy())


def test_smoothgrad_matches_captum_with_the_same_noise(lenet, torch_lenet, monkeypatch):
    import torch
    from captum.attr import NoiseTunnel, Saliency

    model, xs = lenet
    x, samples, level, seed = xs[2], 12, 0.2, 5
    ours = smoothgrad(model, x, samples=samples, noise=level, seed=seed)
    sigma = level * (x.max() - x.min())
    assert ours.settings["sigma"] == pytest.approx(sigma)
    noise = np.random.default_rng(seed).standard_normal((samples, *x.shape)) * sigma   # as documented

    def normal(mean, std, *args, **kwargs):                   # Captum draws its noise with torch.normal
        assert tuple(std.shape) == noise.shape and mean == 0
        assert np.allclose(std.numpy(), sigma)
        return torch.from_numpy(noise.copy())

    monkeypatch.setattr(torch, "normal", normal)
    theirs = NoiseTunnel(Saliency(torch_lenet)).attribute(tensor(x), nt_type="smoothgrad", nt_samples=samples,
                                                         stdevs=float(sigma), target=ours.target, abs=True)
    close(ours.map, theirs[0].amax(dim=0).detach().numpy())
    vanilla = saliency(model, x).map
    assert not np.allclose(ours.map, vanilla)                 # the noise did something


@pytest.mark.parametrize("window, stride, baseline, target", [(4, 2, 0.0, None), ((5, 3), (3, 2), 0.5, 2),
                                                              (3, 3, 0.0, 6), (32, 1, 0.0, None)])
def test_occlusion_matches_captum(lenet, torch_lenet, window, stride, baseline, target):
    from captum.attr import Occlusion

    model, xs = lenet
    x = xs[3]
    ours = occlusion(model, x, target, window=window, stride=stride, baseline=baseline)
    w = (window, window) if isinstance(window, int) else window
    s = (stride, stride) if isinstance(stride, int) else stride
    theirs = Occlusion(torch_lenet).attribute(tensor(x), sliding_window_shapes=(1, *w), strides=(1, *s),
                                              baselines=baseline, target=ours.target, perturbations_per_eval=64)
    close(ours.map, theirs[0, 0].detach().numpy())


@pytest.fixture(scope="module")
def rgb():
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    from cnnspec.engine import torch_ref

    model = cnnspec.loads(RGB).compile(dtype="float64", seed=2)
    x = np.random.default_rng(3).random((3, 16, 16))
    tnet = torch_ref.TorchNet(model)
    return model, x, lambda t: tnet.forward(t, logits=True)


def test_three_channels_match_captum(rgb):
    """Saliency's max over channels, SmoothGrad's noise on every channel, occlusion windows that
    cover all channels: on a colour network."""
    import torch
    from captum.attr import Occlusion, Saliency

    model, x, forward = rgb
    for target in range(3):
        ours = saliency(model, x, target)
        theirs = Saliency(forward).attribute(tensor(x).requires_grad_(), target=target, abs=True)
        close(ours.map, theirs[0].amax(dim=0).detach().numpy())
        ours = occlusion(model, x, target, window=(4, 3), stride=2, baseline=0.25)
        theirs = Occlusion(forward).attribute(tensor(x), sliding_window_shapes=(3, 4, 3), strides=(3, 2, 2),
                                              baselines=0.25, target=target, perturbations_per_eval=64)
        assert torch.allclose(theirs[0, 0], theirs[0, 2])      # the same over channels
        close(ours.map, theirs[0, 0].numpy())


def test_gradcam_on_probabilities_matches_captum(rgb):
    from captum.attr import LayerAttribution, LayerGradCam

    model, x, _ = rgb
    values = {}
    probabilities, hook = hooked(model, "conv3", model.output_name, values)

    for target in range(3):
        ours = gradcam(model, x, target, score="probability", upsampling="nearest")
        assert ours.layer == "conv3" and ours.score_kind == "probability"
        cam = LayerGradCam(probabilities, hook).attribute(tensor(x), target=target, relu_attributions=True)
        close(ours.raw, cam[0, 0].detach().numpy())
        up = LayerAttribution.interpolate(cam, (16, 16), interpolate_mode="nearest")
        close(ours.map, up[0, 0].detach().numpy())
        assert ours.score == pytest.approx(values[model.output_name][0, target].item(), rel=1e-12)


def hooked(model, layer, output, values=None):
    """The model's graph in PyTorch (TorchNet) as a function of the input returning ``output``, and
    an identity module applied to ``layer``'s output for Captum's layer methods to hook."""
    import torch

    from cnnspec.engine import torch_ref

    tnet = torch_ref.TorchNet(model)
    hook = torch.nn.Identity()

    def forward(t):
        v = {model.input_name: t}
        for name, step in tnet.steps:
            v[name] = step([v[i] for i in model.graph.nodes[name]["inputs"]], False)
            if name == layer:
                v[name] = hook(v[name])
        if values is not None:
            values.update(v)
        return v[output]
    return forward, hook


def test_occlusion_attributions_are_score_drops(lenet):
    """Without Captum: one window covering everything gives score(x) - score(baseline) everywhere."""
    model, xs = lenet
    x = xs[0]
    ours = occlusion(model, x, 4, window=32, stride=32, baseline=0.0)
    logits = model.activations(np.stack([x, np.zeros_like(x)]), ["dense3"])["dense3"][:, 4]
    np.testing.assert_allclose(ours.map, logits[0] - logits[1], rtol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda m, x: gradcam(m, x, 10), "class 10 is not one of `LeNet5`'s classes 0..9"),
    (lambda m, x: gradcam(m, x, layer="dense1"), "Grad-CAM needs a layer with channels and rows and columns"),
    (lambda m, x: gradcam(m, x, layer="conv9"), "no layer named `conv9`"),
    (lambda m, x: gradcam(m, x, upsampling="cubic"), "unknown upsampling"),
    (lambda m, x: saliency(m, x[0]), "explain one input of shape 1x32x32"),
    (lambda m, x: saliency(m, x, score="prob"), "unknown score"),
    (lambda m, x: smoothgrad(m, x, samples=0), "at least 1 sample"),
    (lambda m, x: smoothgrad(m, x, noise=-1.0), "noise level must be a number >= 0"),
    (lambda m, x: occlusion(m, x, window=40), "larger than the input"),
    (lambda m, x: occlusion(m, x, window=3, stride=4), "larger than the window"),
    (lambda m, x: occlusion(m, x, window=(3, 3, 3)), "must be 2 positive integers"),
])
def test_errors(lenet, call, message):
    model, xs = lenet
    with pytest.raises(CnnSpecError, match=message):
        call(model, xs[0])


def test_not_a_classifier():
    model = cnnspec.load(SPECS / "edges.cnn").compile(dtype="float64")
    with pytest.raises(CnnSpecError, match="does not output class scores"):
        saliency(model, np.zeros(model.input_shape))


SEQUENCE = """
network Seq {
    input words: 4x20
    conv(5, 3, pad=same) -> relu -> conv(3, 3, stride=2) -> tanh -> globalmaxpool -> flatten -> dense(2)
}
"""


def test_sequences_match_captum():
    """1-D inputs: Grad-CAM upsampled linearly (F.interpolate "linear"), saliency, occlusion."""
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    from captum.attr import LayerAttribution, LayerGradCam, Occlusion, Saliency

    model = cnnspec.loads(SEQUENCE).compile(dtype="float64", seed=4)
    x = np.random.default_rng(5).standard_normal((4, 20))
    logits, hook = hooked(model, "conv2", model.scores_name)

    for target in (0, 1):
        ours = gradcam(model, x, target, relu=False)
        cam = LayerGradCam(logits, hook).attribute(tensor(x), target=target, relu_attributions=False)
        close(ours.raw, cam[0, 0].detach().numpy())
        close(ours.map, LayerAttribution.interpolate(cam, 20, interpolate_mode="linear")[0, 0].detach().numpy())
        ours = saliency(model, x, target)
        close(ours.map, Saliency(logits).attribute(tensor(x).requires_grad_(), target=target, abs=True)[0].amax(dim=0).numpy())
        ours = occlusion(model, x, target, window=3, stride=2, baseline=0.1)
        theirs = Occlusion(logits).attribute(tensor(x), sliding_window_shapes=(4, 3), strides=(4, 2), baselines=0.1,
                                             target=target)
        close(ours.map, theirs[0, 0].numpy())


def test_weights_that_are_not_finite_are_an_error():
    """A NaN in one weight makes every score NaN (as in NumPy: NaN * 0 is NaN): no class is
    predicted and no map is drawn; the error names the layer and the array."""
    model = cnnspec.load(SPECS / "lenet5.cnn").compile(dtype="float64", seed=0)
    model.params["conv2"]["weight"][3, 0, 1, 1] = np.nan
    x = np.random.default_rng(0).random(model.input_shape)
    for method in (gradcam, saliency, occlusion):
        with pytest.raises(CnnSpecError, match=r"first layer whose output is not finite is `conv2` \(conv2.weight holds NaN"):
            method(model, x)
