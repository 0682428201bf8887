"""The graded functions: one definition per function of layer-api.md, read by the template, the
case generator, the checks and the reports.

A *forward* function maps inputs to ``out``; a *backward* function receives ``dout`` and the
forward's inputs again and returns the gradient of ``sum(forward(...) * dout)`` with respect to
some of them (a forward of several outputs, ``vae_sample_forward``'s ``(z, kl)``, has one upstream
gradient per output: ``sum(z * dz) + kl * dkl``); a *loss* returns ``(loss, gradient of loss
w.r.t. its first argument)``.

``GROUPS`` names sets of functions an assignment may grade: ``core`` (the default assignment of
``cnnspec grade init``), ``generative`` (layer-api.md's encoder-decoders and generative networks).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    params: tuple            # argument names, in order
    returns: tuple           # names of the returned values (one name: a single array)
    kind: str                # "forward" | "backward" | "loss"
    family: str              # which case generator makes its inputs (cases.py)
    doc: str                 # the template's docstring: what it computes, shapes
    forward: str | None = None                     # backward: the forward it differentiates
    grads: dict = field(default_factory=dict)      # returned name -> forward argument it is d/d of
    upstream: tuple = ("dout",)                    # backward: the arguments holding the gradients
                                                   # of the forward's outputs, in order

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(self.params)})"


def _f(name, params, returns, kind, family, doc, **kw) -> FunctionSpec:
    return FunctionSpec(name, tuple(params.split()), tuple(returns.split()), kind, family,
                        doc.strip("\n"), **kw)


_CONV2D = """x (N, C, H, W); w (F, C, KH, KW); b (F,) or None
    stride (sh, sw); pad (top, bottom, left, right): zeros added above, below, left, right"""
_CONV1D = """x (N, C, L); w (F, C, K); b (F,) or None
    stride (s,); pad (left, right)"""
_POOL = """x (N, C, H, W); kernel (kh, kw); stride (sh, sw); pad (top, bottom, left, right)"""
_CONV_T = """x (N, C, H, W); w (C, F, KH, KW) -- PyTorch's ConvTranspose2d layout: INPUT channels first
    b (F,) or None; stride (sh, sw); pad (top, bottom, left, right): cropped from the output
    output_pad (oh, ow): added at the bottom and the right"""

FUNCTIONS: dict[str, FunctionSpec] = {spec.name: spec for spec in [
    _f("conv2d_forward", "x w b stride pad", "out", "forward", "conv2d", f"""
2-D convolution as CNNs compute it: cross-correlation (the kernel is NOT flipped), plus bias.

    {_CONV2D}
    Returns out (N, F, OH, OW), OH = 1 + (H + top + bottom - KH) // sh,
                                OW = 1 + (W + left + right - KW) // sw
"""),
    _f("conv2d_backward", "dout x w b stride pad", "dx dw db", "backward", "conv2d", f"""
Gradients of conv2d_forward(x, w, b, stride, pad), given dout = dL/dout (N, F, OH, OW).

    {_CONV2D}
    Returns (dx, dw, db): dx like x, dw like w, db (F,) -- db is None when b is None
""", forward="conv2d_forward", grads={"dx": "x", "dw": "w", "db": "b"}),
    _f("conv1d_forward", "x w b stride pad", "out", "forward", "conv1d", f"""
1-D convolution (cross-correlation) plus bias, e.g. over the words of a sentence.

    {_CONV1D}
    Returns out (N, F, OL), OL = 1 + (L + left + right - K) // s
"""),
    _f("conv1d_backward", "dout x w b stride pad", "dx dw db", "backward", "conv1d", f"""
Gradients of conv1d_forward(x, w, b, stride, pad), given dout (N, F, OL).

    {_CONV1D}
    Returns (dx, dw, db): dx like x, dw like w, db (F,) -- db is None when b is None
""", forward="conv1d_forward", grads={"dx": "x", "dw": "w", "db": "b"}),
    _f("maxpool2d_forward", "x kernel stride pad", "out", "forward", "maxpool2d", f"""
Max-pooling: the largest value of each window. Padding never wins a max (pad with -inf).

    {_POOL}
    Returns out (N, C, OH, OW), OH = 1 + (H + top + bottom - kh) // sh, OW likewise
"""),
    _f("maxpool2d_backward", "dout x kernel stride pad", "dx", "backward", "maxpool2d", f"""
Gradient of maxpool2d_forward: each dout goes to the input that won its window's max.
Ties: the first maximum in row-major order takes the gradient.

    {_POOL}; dout (N, C, OH, OW)
    Returns dx like x
""", forward="maxpool2d_forward", grads={"dx": "x"}),
    _f("avgpool2d_forward", "x kernel stride pad", "out", "forward", "avgpool2d", f"""
Average pooling: the mean of each window, padded zeros counted (divide by kh * kw).

    {_POOL}
    Returns out (N, C, OH, OW), OH = 1 + (H + top + bottom - kh) // sh, OW likewise
"""),
    _f("avgpool2d_backward", "dout x kernel stride pad", "dx", "backward", "avgpool2d", f"""
Gradient of avgpool2d_forward, given dout (N, C, OH, OW).

    {_POOL}
    Returns dx like x
""", forward="avgpool2d_forward", grads={"dx": "x"}),
    _f("dense_forward", "x w b", "out", "forward", "dense", """
Fully connected layer: out = x @ w + b.

    x (N, D); w (D, M); b (M,) or None
    Returns out (N, M)
"""),
    _f("dense_backward", "dout x w b", "dx dw db", "backward", "dense", """
Gradients of dense_forward(x, w, b), given dout (N, M).

    x (N, D); w (D, M); b (M,) or None
    Returns (dx, dw, db): dx (N, D), dw (D, M), db (M,) -- db is None when b is None
""", forward="dense_forward", grads={"dx": "x", "dw": "w", "db": "b"}),
    _f("relu_forward", "x", "out", "forward", "relu", """
ReLU, element-wise: max(x, 0). x of any shape; returns out like x.
"""),
    _f("relu_backward", "dout x", "dx", "backward", "relu", """
Gradient of relu_forward(x), given dout like x. The gradient at x == 0 is 0. Returns dx like x.
""", forward="relu_forward", grads={"dx": "x"}),
    _f("sigmoid_forward", "x", "out", "forward", "sigmoid", """
Logistic sigmoid, element-wise: 1 / (1 + exp(-x)). x of any shape; returns out like x.
"""),
    _f("sigmoid_backward", "dout x", "dx", "backward", "sigmoid", """
Gradient of sigmoid_forward(x) (note: x is the forward's INPUT), given dout like x.
Returns dx like x.
""", forward="sigmoid_forward", grads={"dx": "x"}),
    _f("tanh_forward", "x", "out", "forward", "tanh", """
Hyperbolic tangent, element-wise. x of any shape; returns out like x.
"""),
    _f("tanh_backward", "dout x", "dx", "backward", "tanh", """
Gradient of tanh_forward(x) (note: x is the forward's INPUT), given dout like x.
Returns dx like x.
""", forward="tanh_forward", grads={"dx": "x"}),
    _f("softmax_forward", "x", "out", "forward", "softmax", """
Softmax over axis 1 (the classes): out[n, k] = exp(x[n, k]) / sum_j exp(x[n, j]).
Must be stable for |x| up to 1e4 (subtract each row's max first).

    x (N, K); returns out (N, K)
"""),
    _f("softmax_cross_entropy", "logits y", "loss dlogits", "loss", "cross_entropy", """
Softmax followed by cross-entropy, averaged over the batch.

    logits (N, K); y (N,) integer labels in [0, K)
    Returns (loss, dlogits): loss a float = mean over n of -log softmax(logits)[n, y[n]];
    dlogits (N, K) = d loss / d logits
    Must stay finite for logits up to 1e4 (compute log softmax with log-sum-exp).
""", grads={"dlogits": "logits"}),
    _f("mse_loss", "pred target", "loss dpred", "loss", "mse", """
Mean squared error, the mean over ALL elements of (pred - target) ** 2.

    pred, target: the same shape
    Returns (loss, dpred): loss a float; dpred like pred = d loss / d pred
""", grads={"dpred": "pred"}),
    _f("batchnorm_forward", "x gamma beta eps", "out", "forward", "batchnorm", """
Batch normalisation in training mode: normalise with the batch's mean and BIASED variance
(divide by the number of values m, not m - 1), then scale and shift:
out = gamma * (x - mean) / sqrt(var + eps) + beta.

    x (N, D): statistics per feature over the batch; or x (N, C, H, W) / (N, C, L): statistics
    per channel over the batch and all positions. gamma, beta (D,) or (C,); eps a float.
    Returns out like x
"""),
    _f("batchnorm_backward", "dout x gamma beta eps", "dx dgamma dbeta", "backward", "batchnorm",
       """
Gradients of batchnorm_forward(x, gamma, beta, eps), given dout like x (the batch statistics
depend on x: differentiate through them).

    Returns (dx, dgamma, dbeta): dx like x; dgamma, dbeta like gamma
""", forward="batchnorm_forward", grads={"dx": "x", "dgamma": "gamma", "dbeta": "beta"}),
    _f("dropout_forward", "x p mask", "out", "forward", "dropout", """
Inverted dropout with a given keep-mask: out = x * mask / (1 - p).

    x of any shape; p the drop probability (a float in [0, 1)); mask bool, like x (True = keep)
    Returns out like x
"""),
    _f("dropout_backward", "dout p mask", "dx", "backward", "dropout", """
Gradient of dropout_forward(x, p, mask), given dout like x. Returns dx like dout.
""", forward="dropout_forward", grads={"dx": "x"}),
    _f("conv_transpose2d_forward", "x w b stride pad output_pad", "out", "forward", "conv_transpose2d", f"""
Transposed 2-D convolution (PyTorch's ConvTranspose2d): each input value, times the kernel, is
ADDED onto the output window it "un-slides" to -- input (i, j) of channel c adds
x[n, c, i, j] * w[c, f, :, :] to full[n, f, i*sh : i*sh + KH, j*sw : j*sw + KW] -- where full
has (H - 1)*sh + KH rows and (W - 1)*sw + KW columns. The kernel is not flipped. Then:
pad = (top, bottom, left, right) rows and columns are CROPPED from full (not added),
output_pad = (oh, ow) rows and columns of zeros are added at the bottom and the right (they
choose among the sizes a strided convolution maps to the same size; oh < sh, ow < sw), and the
bias is added everywhere.

    {_CONV_T}
    Returns out (N, F, OH, OW), OH = (H - 1)*sh - top - bottom + KH + oh,
                                OW = (W - 1)*sw - left - right + KW + ow
"""),
    _f("conv_transpose2d_backward", "dout x w b stride pad output_pad", "dx dw db", "backward",
       "conv_transpose2d", f"""
Gradients of conv_transpose2d_forward(x, w, b, stride, pad, output_pad), given dout (N, F, OH,
OW). dx[n, c, i, j] is the sum of dout over the window input (i, j) was added onto (the crop
shifts it by (top, left)), weighted by w[c, f]: a strided cross-correlation of dout with w,
no flip.

    {_CONV_T}
    Returns (dx, dw, db): dx like x, dw like w, db (F,) -- db is None when b is None
""", forward="conv_transpose2d_forward", grads={"dx": "x", "dw": "w", "db": "b"}),
    _f("upsample2d_forward", "x scale mode", "out", "forward", "upsample2d", """
Upsampling by integer factors, as PyTorch's F.interpolate(x, scale_factor=scale, mode=mode,
align_corners=False).

    x (N, C, H, W); scale (sh, sw) integers; mode "nearest" or "bilinear"
    nearest:  out[n, c, o, p] = x[n, c, o // sh, p // sw]  (floor, never rounding)
    bilinear: along each axis, output o reads the input at src = (o + 0.5) / s - 0.5 (a
              pixel's centre; align_corners=False), clamped below at 0: with i0 = floor(src),
              i1 = min(i0 + 1, size - 1), l = src - i0, the value is (1 - l) * x[i0] + l * x[i1];
              rows first, then columns (the two axes are independent)
    Returns out (N, C, H*sh, W*sw)
"""),
    _f("upsample2d_backward", "dout x scale mode", "dx", "backward", "upsample2d", """
Gradient of upsample2d_forward(x, scale, mode), given dout (N, C, H*sh, W*sw): each dout goes
back to the input values the forward read for it, with the same weights (nearest: every input
collects the sum of its sh x sw block).

    Returns dx like x
""", forward="upsample2d_forward", grads={"dx": "x"}),
    _f("bce_loss", "pred target", "loss dpred", "loss", "bce", """
Binary cross-entropy of probabilities, the mean over ALL elements, as PyTorch's
F.binary_cross_entropy: loss = mean(-(target * log(pred) + (1 - target) * log(1 - pred))).
A sigmoid's output can be exactly 0 or 1 in floating point, and log(0) = -inf: clamp each log
at -100 (max(log(p), -100), max(log(1 - p), -100)), and divide the gradient by
max(pred * (1 - pred), 1e-12) instead of pred * (1 - pred).

    pred, target: the same shape; pred in [0, 1] (probabilities), target in [0, 1]
    Returns (loss, dpred): loss a float; dpred like pred = d loss / d pred
            = (pred - target) / max(pred * (1 - pred), 1e-12) / pred.size
""", grads={"dpred": "pred"}),
    _f("sigmoid_bce", "logits target", "loss dlogits", "loss", "sigmoid_bce", """
Binary cross-entropy of sigmoid(logits), the mean over ALL elements, computed from the logits
(PyTorch's F.binary_cross_entropy_with_logits). Must stay finite and exact for |logits| up to
1e4, where sigmoid(logits) is exactly 0 or 1: use log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|))
and log(1 - sigmoid(x)) = log(sigmoid(x)) - x, never exp of a large positive number.

    logits, target: the same shape; target in [0, 1]
    Returns (loss, dlogits): loss a float; dlogits like logits = (sigmoid(logits) - target) / size
""", grads={"dlogits": "logits"}),
    _f("vae_sample_forward", "mu logvar eps", "z kl", "forward", "vae_sample", """
The reparameterised sample of a variational auto-encoder and its KL term. The code's standard
deviation is exp(logvar / 2) (logvar is the log of the VARIANCE), the noise eps is given:

    z  = mu + exp(logvar / 2) * eps
    kl = KL(N(mu, exp(logvar)) || N(0, 1)) SUMMED over each sample's features, then AVERAGED
         over the batch: mean over n of sum over i of -(1 + logvar - mu**2 - exp(logvar)) / 2

    mu, logvar, eps: the same shape (N, D) or (N, C, H, W) (everything but axis 0 is features)
    Returns (z, kl): z like mu; kl a float (>= 0)
"""),
    _f("vae_sample_backward", "dz dkl mu logvar eps", "dmu dlogvar", "backward", "vae_sample", """
Gradients of the loss with respect to mu and logvar, given dz = dL/dz (like mu) and dkl = dL/dkl
(a number: the weight the loss gives the KL term, often 1 or a beta), through both outputs of
vae_sample_forward(mu, logvar, eps).

    Returns (dmu, dlogvar), each like mu
""", forward="vae_sample_forward", grads={"dmu": "mu", "dlogvar": "logvar"}, upstream=("dz", "dkl")),
]}

_GENERATIVE = ("conv_transpose2d_forward", "conv_transpose2d_backward", "upsample2d_forward",
               "upsample2d_backward", "bce_loss", "sigmoid_bce", "vae_sample_forward", "vae_sample_backward")
GROUPS = {"core": tuple(name for name in FUNCTIONS if name not in _GENERATIVE), "generative": _GENERATIVE}


def forward_of(spec: FunctionSpec) -> FunctionSpec:
    """The function whose outputs a backward/loss's gradients differentiate (a loss: itself)."""
    return FUNCTIONS[spec.forward] if spec.forward else spec


TEMPLATE_HEADER = '''"""{title}: the layer API of layer-api.md, in plain Python and NumPy.

Implement every function below. Rules:
  * arrays are NumPy, channels first, batch first: (N, C, H, W);
  * do not modify the input arrays; return new arrays of the input's dtype (float32 or float64);
  * backward functions receive the forward's inputs again (no cache object);
  * only NumPy and the standard library; these imports are refused:
{forbidden}

Check your work on the public cases at home:
    cnnspec grade assignment.toml {submission} --public

Environment: the grader that wrote this file runs Python {python} and NumPy {numpy} (every report
says which it graded with). NumPy 2 removed np.int, np.float, np.bool8, np.product, ... and
refuses int() or float() of an array with one element but one or more axes (use a.item()).

Speed: each call of a function must finish within the assignment's time_per_case (10 s by
default). The network problem runs LeNet-5 on batches of 2 and 4 images (32x32): a correct
implementation with Python loops over the batch, the filters and the output positions (like
CS231n's naive layers) takes well under a second per call, so loops are fine.
"""
import numpy as np
'''


def template(names, *, title="Homework", submission="layers.py", forbidden=("cnnspec",)) -> str:
    """The student's starting file: every function in ``names`` (and the forward each backward
    needs), a docstring stating shapes, raising NotImplementedError."""
    wanted = set(names)
    for name in names:
        if FUNCTIONS[name].forward:
            wanted.add(FUNCTIONS[name].forward)
    refused = textwrap.fill(", ".join(sorted(forbidden)) or "none", width=90,
                            initial_indent="    ", subsequent_indent="    ")
    import platform

    import numpy

    parts = [TEMPLATE_HEADER.format(title=title, submission=submission, forbidden=refused,
                                    python=platform.python_version(), numpy=numpy.__version__)]
    for spec in FUNCTIONS.values():
        if spec.name not in wanted:
            continue
        doc = "\n".join(("    " + line).rstrip() for line in spec.doc.splitlines()).lstrip()
        if spec.name not in names:
            doc += "\n\n    (Not graded on its own: the grader uses it to check your backward.)"
        parts.append(f'\n\ndef {spec.signature}:\n    """{doc}\n    """\n'
                     f'    raise NotImplementedError("{spec.name}")\n')
    return "".join(parts)
