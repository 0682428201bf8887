"""cnnspec.api: the layer API of layer-api.md, as the grader will run it.

Signatures exactly as the contract, dtypes kept, inputs never modified, clear errors, the
lectures' worked examples, and gradients that agree with central differences of the forward.
"""
import inspect
import re

import numpy as np
import pytest

from cnnspec import api
from cnnspec.kernels import reference as R

from conftest import DOCS, numeric_grad

# transcribed from layer-api.md (+ the dilation=1, groups=1 keywords it gives the conv functions,
# also the transposed ones)
SIGNATURES = {
    "conv2d_forward": "x, w, b, stride, pad, dilation=1, groups=1",
    "conv2d_backward": "dout, x, w, b, stride, pad, dilation=1, groups=1",
    "conv1d_forward": "x, w, b, stride, pad, dilation=1, groups=1",
    "conv1d_backward": "dout, x, w, b, stride, pad, dilation=1, groups=1",
    "maxpool2d_forward": "x, kernel, stride, pad",
    "maxpool2d_backward": "dout, x, kernel, stride, pad",
    "avgpool2d_forward": "x, kernel, stride, pad",
    "avgpool2d_backward": "dout, x, kernel, stride, pad",
    "dense_forward": "x, w, b",
    "dense_backward": "dout, x, w, b",
    "relu_forward": "x",
    "relu_backward": "dout, x",
    "sigmoid_forward": "x",
    "sigmoid_backward": "dout, x",
    "tanh_forward": "x",
    "tanh_backward": "dout, x",
    "softmax_forward": "x",
    "softmax_cross_entropy": "logits, y",
    "mse_loss": "pred, target",
    "batchnorm_forward": "x, gamma, beta, eps",
    "batchnorm_backward": "dout, x, gamma, beta, eps",
    "dropout_forward": "x, p, mask",
    "dropout_backward": "dout, p, mask",
    "conv_transpose2d_forward": "x, w, b, stride, pad, output_pad, dilation=1, groups=1",
    "conv_transpose2d_backward": "dout, x, w, b, stride, pad, output_pad, dilation=1, groups=1",
    "upsample2d_forward": "x, scale, mode",
    "upsample2d_backward": "dout, x, scale, mode",
    "bce_loss": "pred, target",
    "sigmoid_bce": "logits, target",
    "vae_sample_forward": "mu, logvar, eps",
    "vae_sample_backward": "dz, dkl, mu, logvar, eps",
}


def signature(fn):
    return ", ".join(str(p) for p in inspect.signature(fn).parameters.values())


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_is_the_contract(name):
    assert signature(getattr(api, name)) == SIGNATURES[name]


def test_public_functions_are_exactly_the_contract():
    public = {n for n, f in vars(api).items() if inspect.isfunction(f) and not n.startswith("_")}
    assert public == set(SIGNATURES) == set(api.__all__)


def test_signatures_match_layer_api_md():
    text = (DOCS / "layer-api.md").read_text()
    found = dict(re.findall(r"^\s*(\w+)\(([^)]*)\) ->", text, flags=re.M))
    found.update(re.findall(r";\s*(\w+)\(([^)]*)\) ->", text))
    assert set(found) == set(SIGNATURES)
    for name, params in found.items():
        assert SIGNATURES[name].startswith(params), name


# -- one call per function: (name, args) with float64 inputs --------------------------------------

rng = np.random.default_rng(7)


def r(*shape):
    return rng.standard_normal(shape)


def calls():
    x4, w4, b4 = r(2, 3, 6, 5), r(4, 3, 3, 2), r(4)
    x3, w3 = r(2, 3, 9), r(4, 3, 3)
    xd, wd, bd = r(5, 6), r(6, 3), r(3)
    mask = rng.random((2, 3, 6, 5)) > 0.4
    probs = rng.uniform(0.02, 0.98, (5, 6))
    return [
        ("conv2d_forward", (x4, w4, b4, (2, 1), (1, 0, 0, 1))),
        ("conv2d_backward", (r(2, 4, 3, 5), x4, w4, b4, (2, 1), (1, 0, 0, 1))),
        ("conv1d_forward", (x3, w3, b4, 2, (1, 1))),
        ("conv1d_backward", (r(2, 4, 5), x3, w3, b4, 2, (1, 1))),
        ("maxpool2d_forward", (x4, (2, 2), (2, 1), (0, 0, 1, 0))),
        ("maxpool2d_backward", (r(2, 3, 3, 5), x4, (2, 2), (2, 1), (0, 0, 1, 0))),
        ("avgpool2d_forward", (x4, (3, 2), (1, 2), (1, 1, 0, 1))),
        ("avgpool2d_backward", (r(2, 3, 6, 3), x4, (3, 2), (1, 2), (1, 1, 0, 1))),
        ("dense_forward", (xd, wd, bd)),
        ("dense_backward", (r(5, 3), xd, wd, bd)),
        ("relu_forward", (x4,)), ("relu_backward", (r(2, 3, 6, 5), x4)),
        ("sigmoid_forward", (x4,)), ("sigmoid_backward", (r(2, 3, 6, 5), x4)),
        ("tanh_forward", (x4,)), ("tanh_backward", (r(2, 3, 6, 5), x4)),
        ("softmax_forward", (xd,)),
        ("softmax_cross_entropy", (xd, np.array([0, 5, 2, 2, 1]))),
        ("mse_loss", (xd, r(5, 6))),
        ("batchnorm_forward", (x4, r(3), r(3), 1e-5)),
        ("batchnorm_backward", (r(2, 3, 6, 5), x4, r(3), r(3), 1e-5)),
        ("dropout_forward", (x4, 0.4, mask)),
        ("dropout_backward", (r(2, 3, 6, 5), 0.4, mask)),
        ("conv_transpose2d_forward", (x4, r(3, 2, 3, 2), r(2), (2, 1), (1, 0, 0, 1), (1, 0))),
        ("conv_transpose2d_backward", (r(2, 2, 13, 5), x4, r(3, 2, 3, 2), r(2), (2, 1),
                                       (1, 0, 0, 1), (1, 0))),
        ("upsample2d_forward", (x4, (2, 3), "nearest")),
        ("upsample2d_backward", (r(2, 3, 12, 15), x4, (2, 3), "nearest")),
        ("upsample2d_forward", (x4, (3, 2), "bilinear")),
        ("upsample2d_backward", (r(2, 3, 18, 10), x4, (3, 2), "bilinear")),
        ("bce_loss", (probs, rng.random((5, 6)))),
        ("sigmoid_bce", (xd, rng.random((5, 6)))),
        ("vae_sample_forward", (xd, r(5, 6), r(5, 6))),
        ("vae_sample_backward", (r(5, 6), 0.5, xd, r(5, 6), r(5, 6))),
    ]


REFERENCE = {
    "conv2d_forward": R.conv2d_forward, "conv2d_backward": R.conv2d_backward,
    "conv1d_forward": R.conv1d_forward, "conv1d_backward": R.conv1d_backward,
    "maxpool2d_forward": R.maxpool2d_forward, "maxpool2d_backward": R.maxpool2d_backward,
    "avgpool2d_forward": R.avgpool2d_forward, "avgpool2d_backward": R.avgpool2d_backward,
    "dense_forward": R.dense_forward, "dense_backward": R.dense_backward,
    "relu_forward": R.relu_forward, "relu_backward": R.relu_backward,
    "sigmoid_forward": R.sigmoid_forward, "sigmoid_backward": R.sigmoid_backward,
    "tanh_forward": R.tanh_forward, "tanh_backward": R.tanh_backward,
    "softmax_forward": R.softmax_forward, "softmax_cross_entropy": R.softmax_cross_entropy,
    "mse_loss": R.mse_loss, "batchnorm_forward": R.batchnorm_forward,
    "batchnorm_backward": R.batchnorm_backward, "dropout_forward": R.dropout_forward,
    "dropout_backward": R.dropout_backward,
    "conv_transpose2d_forward": R.conv_transpose2d_forward,
    "conv_transpose2d_backward": R.conv_transpose2d_backward,
    "upsample2d_forward": R.upsample2d_forward, "upsample2d_backward": R.upsample2d_backward,
    "bce_loss": R.bce_loss, "sigmoid_bce": R.sigmoid_bce,
    "vae_sample_forward": R.vae_sample_forward, "vae_sample_backward": R.vae_sample_backward,
}


def arrays(result):
    return [a for a in (result if isinstance(result, tuple) else (result,))
            if isinstance(a, np.ndarray)]


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def call_ids():
    return [f"{name}-{i}" for i, (name, _) in enumerate(calls())]


@pytest.mark.parametrize("name,args", calls(), ids=call_ids())
def test_matches_the_reference_and_keeps_inputs(name, args):
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    got = getattr(api, name)(*args)
    for a, b in zip(args, before):
        if isinstance(a, np.ndarray):
            assert np.array_equal(a, b), f"{name} modified an input"
    want = REFERENCE[name](*args)
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    assert len(got_t) == len(want_t)
    for g, w in zip(got_t, want_t):
        if g is None or w is None:
            assert g is None and w is None
            continue
        assert rel_error(g, w) < 1e-9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,args", calls(), ids=call_ids())
def test_dtype_is_kept(name, args, dtype):
    args = tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
                 for a in args)
    for out in arrays(getattr(api, name)(*args)):
        assert out.dtype == dtype


def test_db_is_none_without_bias():
    x, w = r(2, 3, 5, 5), r(4, 3, 3, 3)
    assert api.conv2d_backward(r(2, 4, 3, 3), x, w, None, (1, 1), (0, 0, 0, 0))[2] is None
    assert api.conv1d_backward(r(2, 4, 3), x[:, :, 0], w[:, :, 0], None, 1, (0, 0))[2] is None
    assert api.dense_backward(r(2, 4), r(2, 5), r(5, 4), None)[2] is None


@pytest.mark.parametrize("call,message", [
    (lambda: api.conv2d_forward(r(3, 5, 5), r(2, 3, 3, 3), None, (1, 1), (0, 0, 0, 0)),
     "x must be 4-D"),
    (lambda: api.conv2d_forward(r(1, 3, 5, 5), r(2, 4, 3, 3), None, (1, 1), (0, 0, 0, 0)),
     "x has 3 channels but w"),
    (lambda: api.conv2d_forward(r(1, 3, 5, 5), r(2, 3, 3, 3), r(3), (1, 1), (0, 0, 0, 0)),
     "b has shape"),
    (lambda: api.conv2d_forward(r(1, 3, 2, 2), r(2, 3, 3, 3), None, (1, 1), (0, 0, 0, 0)),
     "output height would be 0"),
    (lambda: api.conv2d_forward(r(1, 3, 5, 5), r(2, 3, 3, 3), None, (0, 1), (0, 0, 0, 0)),
     "stride values must be >= 1"),
    (lambda: api.conv2d_forward(r(1, 3, 5, 5), r(2, 3, 3, 3), None, (1, 1), (0, 0, 0)),
     "pad must have 4 values"),
    (lambda: api.conv2d_backward(r(1, 2, 2, 2), r(1, 3, 5, 5), r(2, 3, 3, 3), None, (1, 1),
                                 (0, 0, 0, 0)), "dout has shape"),
    (lambda: api.conv1d_forward(r(1, 3, 5, 5), r(2, 3, 3), None, 1, (0, 0)), "x must be 3-D"),
    (lambda: api.maxpool2d_forward(r(3, 4, 4), (2, 2), (2, 2), (0, 0, 0, 0)), "x must be 4-D"),
    (lambda: api.dense_forward(r(2, 5), r(4, 3), None), "x has 5 features but w"),
    (lambda: api.softmax_cross_entropy(r(3, 4), np.array([0, 1])), "y must have shape"),
    (lambda: api.softmax_cross_entropy(r(2, 4), np.array([0, 4])), "label 4"),
    (lambda: api.mse_loss(r(2, 3), r(3, 2)), "target has shape"),
    (lambda: api.batchnorm_forward(r(4, 3), r(2), r(3), 1e-5), "gamma has shape"),
    (lambda: api.dropout_forward(r(2, 3), 1.0, np.ones((2, 3), bool)), "p must be in"),
    (lambda: api.dropout_forward(r(2, 3), 0.5, np.ones((3, 2), bool)), "mask has shape"),
    (lambda: api.conv_transpose2d_forward(r(1, 3, 4, 4), r(4, 2, 3, 3), None, 2, 1, 0),
     "x has 3 channels but w of shape"),
    (lambda: api.conv_transpose2d_forward(r(1, 3, 4, 4), r(3, 2, 3, 3), r(3), 2, 1, 0),
     "b has shape"),
    (lambda: api.conv_transpose2d_forward(r(1, 3, 4, 4), r(3, 2, 3, 3), None, 2, 1, 2),
     "output_pad must be smaller than the stride or the dilation"),
    (lambda: api.conv_transpose2d_forward(r(1, 3, 4, 4), r(3, 2, 3, 3), None, 1, 1, -1),
     "output_pad values must be >= 0"),
    (lambda: api.conv_transpose2d_forward(r(1, 3, 1, 1), r(3, 2, 1, 1), None, 1, (1, 0, 0, 0),
                                          0), "output height would be 0"),
    (lambda: api.conv_transpose2d_forward(r(1, 4, 3, 3), r(4, 2, 3, 3), None, 1, 0, 0,
                                          groups=3), "not divisible by groups=3"),
    (lambda: api.conv_transpose2d_backward(r(1, 2, 5, 5), r(1, 3, 4, 4), r(3, 2, 3, 3), None, 2,
                                           1, 1), "dout has shape"),
    (lambda: api.upsample2d_forward(r(1, 2, 3, 3), 2, "bicubic"), "mode must be"),
    (lambda: api.upsample2d_forward(r(1, 2, 3, 3), (2, 0), "nearest"),
     "scale values must be >= 1"),
    (lambda: api.upsample2d_forward(r(2, 3, 3), 2, "nearest"), "x must be 4-D"),
    (lambda: api.upsample2d_backward(r(1, 2, 5, 6), r(1, 2, 3, 3), 2, "nearest"),
     "dout has shape"),
    (lambda: api.bce_loss(np.array([0.5, 1.5]), np.array([0.0, 1.0])), "pred must hold values"),
    (lambda: api.bce_loss(np.array([0.5, 0.5]), np.array([0.0, -1.0])),
     "target must hold values"),
    (lambda: api.bce_loss(np.array([0.5, 0.5]), np.array([0.0, 1.0, 1.0])), "target has shape"),
    (lambda: api.sigmoid_bce(r(2, 3), r(3, 2)), "target has shape"),
    (lambda: api.vae_sample_forward(r(2, 3), r(2, 3), r(3, 2)), "eps has shape"),
    (lambda: api.vae_sample_backward(r(2, 3), [1, 2], r(2, 3), r(2, 3), r(2, 3)),
     "dkl must be a number"),
    (lambda: api.vae_sample_forward(np.array(1.0), np.array(1.0), np.array(1.0)),
     "mu must be \\(N, ...\\)"),
    (lambda: api.softmax_cross_entropy(r(3, 4), np.array(["a", "b", "c"])),
     "y must hold integer class labels"),
    (lambda: api.softmax_cross_entropy(r(3, 4), np.array([0, np.nan, 1])),
     "y must hold integer class labels"),
    (lambda: api.softmax_cross_entropy(r(3, 4), np.array([0, 1.5, 1])),
     "y must hold integer class labels"),
    (lambda: api.batchnorm_forward(r(4, 3), r(3), r(3), "x"), "eps must be a number, got 'x'"),
    (lambda: api.batchnorm_backward(r(4, 3), r(4, 3), r(3), r(3), None), "eps must be a number"),
    (lambda: api.dropout_forward(r(2, 3), None, np.ones((2, 3), bool)), "p must be a number"),
    (lambda: api.dropout_backward(r(2, 3), "0.5", np.ones((2, 3), bool)),
     "p must be a number, got '0.5'"),
    (lambda: api.relu_forward(r(2, 3) * 1j), "x must be real, got complex values"),
    (lambda: api.conv2d_forward(r(1, 3, 5, 5), r(2, 3, 3, 3) + 0j, None, 1, 0),
     "w must be real"),
])
def test_bad_arguments_raise_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- the lectures' worked examples (shared/seeds) ------------------------------------------------

CROSS = [[-1, 1, -1], [1, 1, 1], [-1, 1, -1]]
X_SHAPE = [[1, -1, 1], [-1, 1, -1], [1, -1, 1]]
CROSS_IMAGE = [[-1, 1, -1, -1, -1, -1],
               [1, 1, 1, -1, -1, -1],
               [-1, 1, -1, -1, -1, -1],
               [-1, -1, -1, 1, -1, 1],
               [-1, -1, -1, -1, 1, -1],
               [-1, -1, -1, 1, -1, 1]]


def conv(image, kernels, stride=(1, 1), pad=(0, 0, 0, 0)):
    x = np.array(image, float)[None, None]
    w = np.array(kernels, float)
    w = w[None, None] if w.ndim == 2 else w[:, None]
    return api.conv2d_forward(x, w, None, stride, pad)[0]


def test_lecture_000_cross_detector():
    fmap = conv(CROSS_IMAGE, CROSS)[0]
    assert fmap.shape == (4, 4)                       # "4x4 instead of 6x6"
    assert fmap[0, 0] == 9 and fmap[0, 1] == -1       # the slide's "9  -1"
    # wide convolution with zero padding, "+" and "X" kernels: first rows of both maps
    maps = conv(CROSS_IMAGE, [CROSS, X_SHAPE], pad=(1, 1, 1, 1))
    assert maps.shape == (2, 6, 6)
    assert maps[0, 0, :3].tolist() == [0, -2, 0]
    assert maps[1, 0, :3].tolist() == [-2, 4, -2]


def test_lecture_000_max_pooling():
    plus = [[-0.1, -4, -0.1, -7.9, -4, -4],
            [-4, 17.5, -2, 1.9, -2, -4],
            [-0.1, -2, -2, -2, -9.8, -0.1],
            [-7.9, 1.9, -2, -2, 9.7, -4],
            [-4, -2, -9.8, 9.7, -13.7, 7.7],
            [-4, -4, -0.1, -4, 7.7, -4]]
    x_map = [[-3.9, 7.8, -3.9, 3.9, 0, 0],
             [7.8, -13.7, 5.8, -5.9, -2, 0],
             [-3.9, 5.8, -2, -2, 5.8, -3.9],
             [3.9, -5.9, -2, 5.8, -13.7, 7.8],
             [0, -2, 5.8, -13.7, 17.5, -11.7],
             [0, 0, -3.9, 7.8, -11.7, 7.8]]
    pooled = api.maxpool2d_forward(np.array([[plus, x_map]]), (2, 2), (2, 2), (0, 0, 0, 0))[0]
    assert pooled[0].tolist() == [[17.5, 1.9, -2], [1.9, -2, 9.7], [-2, 9.7, 7.7]]
    assert pooled[1].tolist() == [[7.8, 5.8, 0], [5.8, 5.8, 7.8], [0, 7.8, 17.5]]


def test_lecture_002_sobel():
    image = [[3, 2, 1], [1, 2, 3], [1, 1, 1]]
    sobel_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    assert conv(image, sobel_x)[0].tolist() == [[2]]


LECTURE_002_INPUT = [[1, 2, 0, 3, 1],
                     [1, 0, 0, 2, 2],
                     [2, 1, 2, 1, 1],
                     [0, 0, 1, 0, 0],
                     [1, 2, 1, 1, 1]]
LECTURE_002_KERNEL = [[-1, 1, 2], [1, 1, 0], [-1, -2, 0]]


def test_lecture_002_padding_and_stride():
    no_pad = conv(LECTURE_002_INPUT, LECTURE_002_KERNEL)[0]
    assert no_pad.shape == (3, 3) and no_pad[0, 0] == -2           # "Without Padding": -2
    padded = conv(LECTURE_002_INPUT, LECTURE_002_KERNEL, pad=(1, 1, 1, 1))[0]
    assert padded.shape == (5, 5) and padded[0, 0] == -1           # "With Padding": -1
    strided = conv(LECTURE_002_INPUT, LECTURE_002_KERNEL, stride=(2, 2))[0]
    assert strided.shape == (2, 2) and strided[0].tolist() == [-2, 3]      # "Stride 2"
    both = conv(LECTURE_002_INPUT, LECTURE_002_KERNEL, stride=(2, 2), pad=(1, 1, 1, 1))[0]
    assert both.shape == (3, 3)                                     # "Stride 2 - With Padding"
    assert both[0, :2].tolist() == [-1, 2] and both[1, 0] == 3


def test_lecture_004_x_kernel():
    image = [[1, 1, 1, 0, 0],
             [0, 1, 1, 1, 0],
             [0, 0, 1, 1, 1],
             [0, 0, 1, 1, 0],
             [0, 1, 1, 0, 0]]
    kernel = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    assert conv(image, kernel)[0].tolist() == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]


# -- worked examples of dsl.md §10's layers, by hand ---------------------------------------------


def test_transposed_convolution_by_hand():
    """A 2x2 image through a 2x2 kernel with stride 2: each input pixel stamps the kernel, scaled
    by its value, into its own 2x2 block of the 4x4 output."""
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = api.conv_transpose2d_forward(x, w, None, 2, 0, 0)[0, 0]
    assert out.tolist() == [[1, 2, 2, 4],
                            [3, 4, 6, 8],
                            [3, 6, 4, 8],
                            [9, 12, 12, 16]]
    # stride 1: the stamps overlap and add up; padding 1 crops the border of that 3x3 result
    ones = np.ones((1, 1, 2, 2))
    assert api.conv_transpose2d_forward(ones, ones, None, 1, 0, 0)[0, 0].tolist() == \
        [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    assert api.conv_transpose2d_forward(ones, ones, None, 1, 1, 0)[0, 0].tolist() == [[4]]
    # output_pad adds a row and a column that no input reaches: only the bias (0.5) lands there
    padded = api.conv_transpose2d_forward(x, w, np.array([0.5]), 2, 0, 1)[0, 0]
    assert padded.shape == (5, 5)
    assert padded[4].tolist() == [0.5] * 5 and padded[:, 4].tolist() == [0.5] * 5
    assert padded[0, :2].tolist() == [1.5, 2.5]
    # backward: dx of an all-ones dout is each pixel's kernel sum (1+2+3+4); dw sums the pixels;
    # db counts the 16 outputs
    dx, dw, db = api.conv_transpose2d_backward(np.ones((1, 1, 4, 4)), x, w, np.zeros(1), 2, 0, 0)
    assert dx[0, 0].tolist() == [[10, 10], [10, 10]]
    assert dw[0, 0].tolist() == [[10, 10], [10, 10]] and db.tolist() == [16]


def test_transposed_convolution_is_the_adjoint_of_convolution():
    """<conv(y), x> == <y, conv_transpose(x)> with the same weights: why it 'undoes' the shape."""
    x, y, w = r(2, 3, 4, 4), r(2, 5, 7, 7), r(3, 5, 3, 3)
    conv_y = api.conv2d_forward(y, w, None, (2, 2), (1, 1, 1, 1))
    convt_x = api.conv_transpose2d_forward(x, w, None, (2, 2), (1, 1, 1, 1), (0, 0))
    assert conv_y.shape == x.shape and convt_x.shape == y.shape
    assert abs(np.sum(conv_y * x) - np.sum(y * convt_x)) < 1e-9 * np.sum(np.abs(conv_y * x))


def test_upsampling_by_hand():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert api.upsample2d_forward(x, 2, "nearest")[0, 0].tolist() == [[1, 1, 2, 2],
                                                                      [1, 1, 2, 2],
                                                                      [3, 3, 4, 4],
                                                                      [3, 3, 4, 4]]
    # bilinear, align_corners=False: output o reads source (o + 0.5)/2 - 0.5 = -0.25 (clamped
    # to 0), 0.25, 0.75, 1.25 (clamped to the last pixel); a row [a, b] becomes
    # [a, .75a + .25b, .25a + .75b, b], and so do the columns
    assert api.upsample2d_forward(x, 2, "bilinear")[0, 0].tolist() == [[1.0, 1.25, 1.75, 2.0],
                                                                       [1.5, 1.75, 2.25, 2.5],
                                                                       [2.5, 2.75, 3.25, 3.5],
                                                                       [3.0, 3.25, 3.75, 4.0]]
    # backward of all-ones: each pixel receives its total weight, (1 + .75 + .25)^2 = 4 for
    # bilinear, the 2x2 block = 4 for nearest
    for mode in ("nearest", "bilinear"):
        assert api.upsample2d_backward(np.ones((1, 1, 4, 4)), x, 2, mode)[0, 0].tolist() == \
            [[4, 4], [4, 4]]


def test_binary_cross_entropy_by_hand():
    loss, d = api.bce_loss(np.array([[0.5, 0.8]]), np.array([[1.0, 0.0]]))
    assert abs(loss - (np.log(2) + np.log(5)) / 2) < 1e-12        # -log .5, -log(1 - .8)
    assert np.allclose(d, [[-0.5 / 0.25 / 2, 0.8 / 0.16 / 2]])
    loss, d = api.bce_loss(np.array([0.0, 1.0]), np.array([1.0, 0.0]))   # log(0) clamped
    assert loss == 100 and np.all(np.isfinite(d))
    loss, d = api.sigmoid_bce(np.array([0.0, 1e4, -1e4]), np.array([1.0, 1.0, 1.0]))
    assert abs(loss - (np.log(2) + 0 + 1e4) / 3) < 1e-9 and np.allclose(d, [-0.5 / 3, 0, -1 / 3])


def test_vae_sample_by_hand():
    mu, logvar, eps = np.array([[1.0, 0.0]]), np.array([[0.0, np.log(4)]]), np.array([[2.0, 1.0]])
    z, kl = api.vae_sample_forward(mu, logvar, eps)
    assert z.tolist() == [[3.0, 2.0]]                 # 1 + 1*2, 0 + 2*1
    # KL per feature: (mu^2 + sigma^2 - 1 - log sigma^2)/2: (1 + 1 - 1 - 0)/2 + (0 + 4 - 1 - log 4)/2
    assert abs(kl - (0.5 + (3 - np.log(4)) / 2)) < 1e-12
    dmu, dlogvar = api.vae_sample_backward(np.zeros((1, 2)), 1.0, mu, logvar, eps)
    assert dmu.tolist() == [[1.0, 0.0]] and np.allclose(dlogvar, [[0.0, 1.5]])   # (e^lv - 1)/2


# -- the grader's own check: backward against central differences of the forward ----------------


def away_from_kinks(*shape):
    x = r(*shape)
    x[np.abs(x) < 1e-3] = 0.5
    return x


@pytest.mark.parametrize("name,inputs,extra", [
    ("conv2d", ["x", "w", "b"], dict(stride=(2, 1), pad=(1, 0, 2, 1))),
    ("conv1d", ["x", "w", "b"], dict(stride=1, pad=(2, 0))),
    ("maxpool2d", ["x"], dict(kernel=(2, 3), stride=(1, 2), pad=(1, 0, 0, 1))),
    ("avgpool2d", ["x"], dict(kernel=(3, 2), stride=(2, 1), pad=(1, 1, 0, 1))),
    ("dense", ["x", "w", "b"], {}),
    ("relu", ["x"], {}), ("sigmoid", ["x"], {}), ("tanh", ["x"], {}),
    ("batchnorm", ["x", "gamma", "beta"], dict(eps=1e-5)),
])
def test_backward_agrees_with_central_differences(name, inputs, extra):
    values = {
        "conv2d": dict(x=away_from_kinks(2, 2, 5, 4), w=r(3, 2, 3, 2), b=r(3)),
        "conv1d": dict(x=r(2, 2, 7), w=r(3, 2, 3), b=r(3)),
        "maxpool2d": dict(x=away_from_kinks(2, 2, 5, 6)),
        "avgpool2d": dict(x=r(2, 2, 5, 4)),
        "dense": dict(x=r(3, 4), w=r(4, 2), b=r(2)),
        "relu": dict(x=away_from_kinks(3, 4)), "sigmoid": dict(x=r(3, 4)),
        "tanh": dict(x=r(3, 4)),
        "batchnorm": dict(x=r(5, 3, 2), gamma=r(3), beta=r(3)),
    }[name]
    forward, backward = getattr(api, name + "_forward"), getattr(api, name + "_backward")
    args = dict(values, **extra)
    out = forward(**args)
    dout = r(*out.shape)
    grads = backward(dout, **args)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for key, grad in zip(inputs, grads):
        numeric = numeric_grad(lambda: float(np.sum(forward(**args) * dout)), values[key])
        assert rel_error(grad, numeric) < 1e-6, key


@pytest.mark.parametrize("name,args", [
    ("conv_transpose2d", dict(w=r(2, 3, 3, 2), b=r(3), stride=(2, 1), pad=(1, 0, 2, 1),
                              output_pad=(1, 0))),
    ("upsample2d", dict(scale=(2, 3), mode="nearest")),
    ("upsample2d", dict(scale=(3, 2), mode="bilinear")),
])
def test_new_backward_agrees_with_central_differences(name, args):
    x = r(2, 2, 3, 4)
    forward, backward = getattr(api, name + "_forward"), getattr(api, name + "_backward")
    dout = r(*forward(x, **args).shape)
    grads = backward(dout, x, **args)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for key, grad in zip(["x", "w", "b"], grads):
        value = x if key == "x" else args[key]
        numeric = numeric_grad(lambda: float(np.sum(forward(x, **args) * dout)), value)
        assert rel_error(grad, numeric) < 1e-6, key


def test_new_losses_agree_with_central_differences():
    p, t, z = rng.uniform(0.05, 0.95, (3, 4)), rng.random((3, 4)), r(3, 4)
    _, dp = api.bce_loss(p, t)
    assert rel_error(dp, numeric_grad(lambda: api.bce_loss(p, t)[0], p)) < 1e-6
    _, dz = api.sigmoid_bce(z, t)
    assert rel_error(dz, numeric_grad(lambda: api.sigmoid_bce(z, t)[0], z)) < 1e-6
    mu, logvar, eps, g = r(3, 4), r(3, 4), r(3, 4), r(3, 4)

    def objective():                                  # <z, g> + 0.3 kl
        z_, kl = api.vae_sample_forward(mu, logvar, eps)
        return float(np.sum(z_ * g)) + 0.3 * kl
    dmu, dlogvar = api.vae_sample_backward(g, 0.3, mu, logvar, eps)
    assert rel_error(dmu, numeric_grad(objective, mu)) < 1e-6
    assert rel_error(dlogvar, numeric_grad(objective, logvar)) < 1e-6


def test_losses_agree_with_central_differences():
    z, y = r(4, 5), np.array([1, 0, 4, 4])
    _, dz = api.softmax_cross_entropy(z, y)
    assert rel_error(dz, numeric_grad(lambda: api.softmax_cross_entropy(z, y)[0], z)) < 1e-6
    p, t = r(3, 4), r(3, 4)
    _, dp = api.mse_loss(p, t)
    assert rel_error(dp, numeric_grad(lambda: api.mse_loss(p, t)[0], p)) < 1e-6


def test_softmax_is_stable_for_large_logits():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4 + 1, -1e4]])
    assert np.all(np.isfinite(api.softmax_forward(z)))
    loss, d = api.softmax_cross_entropy(z, np.array([1, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert abs(loss - 0.5 * (2e4 + np.log(2 + np.e))) < 1e-9


def test_dropout_rescales_kept_values():
    x = np.ones((2, 4))
    mask = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], bool)
    assert api.dropout_forward(x, 0.5, mask).tolist() == [[2, 0, 2, 0], [0, 0, 2, 2]]
    assert api.dropout_backward(x, 0.5, mask).tolist() == [[2, 0, 2, 0], [0, 0, 2, 2]]


@pytest.mark.parametrize("kernel,stride,pad", [(3, 2, 1), (2, 2, 1), (3, 1, 1), (2, 1, 1),
                                               (3, 3, (1, 0, 2, 0))])
def test_max_pooling_gradient_of_all_minus_inf_windows_reaches_the_input(kernel, stride, pad):
    # padding never wins a max: a window whose input elements are all -inf sends its gradient
    # to its first input element (row-major), as PyTorch, never into the padding
    x = np.full((1, 1, 5, 5), -np.inf)
    out = api.maxpool2d_forward(x, kernel, stride, pad)
    dx = api.maxpool2d_backward(np.ones_like(out), x, kernel, stride, pad)
    assert np.all(out == -np.inf)
    assert dx.sum() == out.size


def test_reference_max_pooling_gradient_of_all_minus_inf_windows():
    x = np.full((1, 1, 3, 3), -np.inf)
    dx = R.maxpool2d_backward(np.ones((1, 1, 2, 2)), x, (3, 3), (2, 2), (1, 1, 1, 1))
    assert dx[0, 0].tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("x_shape,w_shape,groups", [((0, 3, 5, 5), (4, 3, 3, 3), 1),
                                                    ((0, 4, 5, 5), (4, 4, 1, 1), 1),
                                                    ((0, 8, 6, 6), (8, 4, 3, 3), 2)])
def test_convolution_of_an_empty_batch(monkeypatch, x_shape, w_shape, groups):
    # as PyTorch: an empty output, zero weight and bias gradients (on any number of threads)
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    x, w, b = np.empty(x_shape), np.ones(w_shape), np.ones(w_shape[0])
    out = api.conv2d_forward(x, w, b, 1, 1, groups=groups)
    assert out.shape == (0, w_shape[0]) + tuple(n + 2 - k + 1 for n, k in zip(x_shape[2:],
                                                                               w_shape[2:]))
    dx, dw, db = api.conv2d_backward(out, x, w, b, 1, 1, groups=groups)
    assert dx.shape == x_shape and not dw.any() and not db.any()
    assert api.conv1d_forward(x[:, :, 0], w[:, :, 0], b, 1, 1, groups=groups).shape == (
        (0, w_shape[0], x_shape[3] + 2 - w_shape[3] + 1))


def test_zero_dimensional_arrays_keep_their_shape():
    # as PyTorch: the element-wise functions and losses of 0-d arrays give 0-d results
    x, d, t = np.array(-0.75), np.array(2.0), np.array(0.25)
    s = 1 / (1 + np.exp(0.75))
    for name, y, dx in [("relu", 0.0, 0.0), ("sigmoid", s, 2 * s * (1 - s)),
                        ("tanh", np.tanh(-0.75), 2 * (1 - np.tanh(-0.75) ** 2))]:
        out, grad = getattr(api, name + "_forward")(x), getattr(api, name + "_backward")(d, x)
        assert out.shape == grad.shape == ()
        assert out == pytest.approx(y, rel=1e-15) and grad == pytest.approx(dx, rel=1e-15)
    loss, dpred = api.mse_loss(x, t)
    assert dpred.shape == () and loss == 1.0 and dpred == -2.0
    loss, dlogits = api.sigmoid_bce(x, t)
    assert dlogits.shape == () and dlogits == pytest.approx(s - 0.25, rel=1e-15)
    assert loss == pytest.approx(-(0.25 * np.log(s) + 0.75 * np.log(1 - s)), rel=1e-15)
    loss, dpred = api.bce_loss(t, np.array(1.0))
    assert dpred.shape == () and loss == pytest.approx(np.log(4), rel=1e-15)


def test_batch_normalisation_of_no_channels_and_float_labels():
    # as PyTorch: zero channels give empty results; whole-number float labels are labels
    x = np.empty((4, 0, 3, 3))
    assert api.batchnorm_forward(x, np.empty(0), np.empty(0), 1e-5).shape == x.shape
    dx, dgamma, dbeta = api.batchnorm_backward(x, x, np.empty(0), np.empty(0), 1e-5)
    assert dx.shape == x.shape and dgamma.shape == dbeta.shape == (0,)
    logits = r(3, 4)
    assert api.softmax_cross_entropy(logits, np.array([0.0, 2.0, 1.0]))[0] == (
        api.softmax_cross_entropy(logits, np.array([0, 2, 1]))[0])
