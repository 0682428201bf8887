"""The graded functions: one definition per function of layer-api.md, read by the template, the
case generator, the checks and the reports.

A *forward* function maps inputs to ``out``; a *backward* function receives ``dout`` and the
forward's inputs again and returns the gradient of ``sum(forward(...) * dout)`` with respect to
some of them; a *loss* returns ``(loss, gradient of loss w.r.t. its first argument)``.
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
]}


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
