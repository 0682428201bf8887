"""Diagnosis: a catalogue of known student mistakes, each a *mutant* of the reference.

A mutant computes what a layer-API function returns when it makes one known mistake, from the
reference's own functions (``ref``, the module cnnspec.api) and the case's inputs. When a
student's failing output equals a mutant's, the feedback names the mistake in plain words and says
what is right, citing no course: an assignment adds its own pointers ([references] in
assignment.toml: mistake name -> "Lecture 3, slide 12"). Mutants run in the trusted parent only.

    mutant = diagnose("conv2d_forward", ref, case.args, student_outputs, reference_outputs)
    mutant.message   # "Your output equals a true convolution, i.e. the kernel flipped. ..."
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnspec.grade.checks import as_outputs, close

_c = np.ascontiguousarray


@dataclass(eq=False)
class Mutant:
    name: str
    message: str
    variants: dict = field(default_factory=dict)     # function name -> [impl(ref, *args)]

    def on(self, *functions):
        """Register an implementation of this mistake for each function in ``functions``."""
        def register(impl):
            for name in functions:
                self.variants.setdefault(name, []).append(impl)
            return impl
        return register

    @property
    def functions(self) -> tuple:
        return tuple(self.variants)


MUTANTS: dict[str, Mutant] = {}


def mutant(name: str, message: str) -> Mutant:
    MUTANTS[name] = Mutant(name, " ".join(message.split()))
    return MUTANTS[name]


def diagnose(function: str, ref, args, student, expected, tol: float = 1e-6) -> Mutant | None:
    """The first mutant whose outputs equal the student's wherever the student's differ from the
    reference's (``student``, ``expected``: tuples of outputs). None when nothing matches."""
    differ = [i for i, (s, e) in enumerate(zip(student, expected)) if not close(s, e, tol)]
    if not differ:
        return None
    candidates = []                   # (mutant, its outputs)
    for candidate in MUTANTS.values():
        for impl in candidate.variants.get(function, ()):
            try:
                with np.errstate(all="ignore"):
                    outputs = as_outputs(impl(ref, *args))
            except Exception:          # noqa: BLE001 -- a mutant that does not apply to this case
                continue
            if len(outputs) == len(student):
                candidates.append((candidate, outputs))
    # a mutant equal in every output first; else one equal where the student's outputs are wrong
    # (the student may have made the mistake in dw only, and got dx right)
    for wanted in (range(len(student)), differ):
        for candidate, outputs in candidates:
            if all(close(student[i], outputs[i], tol) for i in wanted):
                return candidate
    return None


# -- helpers --------------------------------------------------------------------------------

def _flip(w):
    """The kernel flipped along every spatial axis (a true convolution's kernel)."""
    return _c(w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)])


def _zero_padded(x, pad):
    top, bottom, left, right = pad
    return _c(np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))))


# -- convolution and pooling geometry -------------------------------------------------------

kernel_flipped = mutant("kernel_flipped", """
    Your output equals a true convolution, i.e. the kernel flipped. CNN layers compute
    cross-correlation: out[i, j] = sum over k, l of w[k, l] * x[i + k, j + l], with no flip.""")


@kernel_flipped.on("conv2d_forward", "conv1d_forward")
def _(ref, x, w, b, stride, pad):
    return _layer(ref, x, "forward")(x, _flip(w), b, stride, pad)


@kernel_flipped.on("conv2d_backward", "conv1d_backward")
def _(ref, dout, x, w, b, stride, pad):
    dx, dw, db = _layer(ref, x, "backward")(dout, x, _flip(w), b, stride, pad)
    return dx, _flip(dw), db


input_gradient_not_flipped = mutant("input_gradient_not_flipped", """
    Your dx slides the kernel over dout without flipping it. The gradient with respect to the
    input is a 'full' convolution of dout with the kernel flipped (equivalently: add
    w * dout[n, f, i, j] back onto the window the forward read for output (i, j)).""")


@input_gradient_not_flipped.on("conv2d_backward", "conv1d_backward")
def _(ref, dout, x, w, b, stride, pad):
    backward = _layer(ref, x, "backward")
    dx, _, _ = backward(dout, x, _flip(w), b, stride, pad)
    _, dw, db = backward(dout, x, w, b, stride, pad)
    return dx, dw, db


# Geometry mistakes: the same function with another (stride, pad). Each alternative maps the
# case's (stride, pad) to the one the mistake uses.
_GEOMETRY_2D = ("conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward",
                "avgpool2d_forward", "avgpool2d_backward")
_GEOMETRY_1D = ("conv1d_forward", "conv1d_backward")


def _geometry(m: Mutant, alternatives_2d, alternatives_1d=()):
    for names, alternatives in ((_GEOMETRY_2D, alternatives_2d), (_GEOMETRY_1D, alternatives_1d)):
        for name in names:
            for alternative in alternatives:
                m.variants.setdefault(name, []).append(_with_geometry(name, alternative))


def _with_geometry(name, alternative):
    def impl(ref, *args):
        stride, pad = alternative(tuple(args[-2]), tuple(int(p) for p in args[-1]))
        if (stride, pad) == (tuple(args[-2]), tuple(args[-1])):
            raise ValueError("the same as the reference for this case")
        if name.endswith("backward"):
            # the mistake in a backward only fits this dout if it keeps the output's size
            forward = getattr(ref, name.replace("backward", "forward"))
            if forward(*args[1:-2], stride, pad).shape != args[0].shape:
                raise ValueError("another output size")
        return getattr(ref, name)(*args[:-2], stride, pad)
    return impl


height_width_swapped = mutant("height_width_swapped", """
    Your output equals the right one with height and width swapped: in stride = (sh, sw) and
    pad = (top, bottom, left, right) the first stride and the first two paddings are for the
    height (axis 2), the others for the width (axis 3).""")
_geometry(height_width_swapped, (
    lambda s, p: ((s[1], s[0]), (p[2], p[3], p[0], p[1])),      # both swapped
    lambda s, p: ((s[1], s[0]), p),                             # the stride only
    lambda s, p: (s, (p[2], p[3], p[0], p[1]))))                # pad read as (left, right, top, bottom)

padding_ignored = mutant("padding_ignored", """
    Your output equals the right one computed without padding: first add `top` rows of zeros
    above the input, `bottom` rows below, `left` columns on the left and `right` columns on the
    right, then slide the window.""")
_geometry(padding_ignored, (lambda s, p: (s, (0, 0, 0, 0)),), (lambda s, p: (s, (0, 0)),))

output_size_off_by_one = mutant("output_size_off_by_one", """
    Your output is the right one without its last row or column (its last position in 1-D): the
    output has OH = 1 + (H + top + bottom - KH) // sh rows and OW = 1 + (W + left + right - KW)
    // sw columns: was the 1 + forgotten, or does a loop stop one step early? Padding only the
    top and the left gives the same output when bottom and right are 1.""")
# (before padding_one_side: with a padding of 1 at the end and stride 1, dropping the end padding
# gives exactly these outputs, and the size formula is the commoner slip; the message names both)
_LAST = {"both": (slice(None, -1), slice(None, -1)), "rows": (slice(None, -1), slice(None)),
         "columns": (slice(None), slice(None, -1))}


def _without_last(out, axes):
    """``out`` without its last row and/or column (its last position in 1-D)."""
    if out.ndim == 3:
        if axes != "both" or out.shape[2] < 2:
            raise ValueError("nothing to drop")
        return _c(out[:, :, :-1])
    rows, cols = _LAST[axes]
    if (rows.stop and out.shape[2] < 2) or (cols.stop and out.shape[3] < 2):
        raise ValueError("nothing to drop")
    return _c(out[:, :, rows, cols])


def _dout_without_last(dout, axes):
    """``dout`` with its last row and/or column (last position in 1-D) zeroed: a backward that
    loops over one output position too few never reads them."""
    d = np.array(dout, copy=True)
    if d.ndim == 3:
        if axes != "both":
            raise ValueError("one axis only")
        d[:, :, -1] = 0
        return d
    if axes in ("both", "rows"):
        d[:, :, -1, :] = 0
    if axes in ("both", "columns"):
        d[:, :, :, -1] = 0
    return d


for _name in ("conv2d_forward", "conv1d_forward", "maxpool2d_forward", "avgpool2d_forward"):
    for _axes in _LAST:
        def _impl(ref, *args, name=_name, axes=_axes):
            return _without_last(getattr(ref, name)(*args), axes)
        output_size_off_by_one.on(_name)(_impl)
for _name in ("conv2d_backward", "conv1d_backward", "maxpool2d_backward", "avgpool2d_backward"):
    for _axes in _LAST:
        def _impl(ref, dout, *args, name=_name, axes=_axes):
            return getattr(ref, name)(_dout_without_last(dout, axes), *args)
        output_size_off_by_one.on(_name)(_impl)


padding_one_side = mutant("padding_one_side", """
    Your output equals the right one with the padding on one side only, the same on both
    sides, or the two sides swapped: pad = (top, bottom, left, right) -- (left, right) in 1-D --
    gives each side its own number of rows or columns of zeros.""")
_geometry(padding_one_side, (
    lambda s, p: (s, (p[0] + p[1], 0, p[2] + p[3], 0)), lambda s, p: (s, (0, p[0] + p[1], 0, p[2] + p[3])),
    lambda s, p: (s, (p[0], 0, p[2], 0)), lambda s, p: (s, (0, p[1], 0, p[3])),
    lambda s, p: (s, (p[0], p[0], p[2], p[2])), lambda s, p: (s, (p[1], p[1], p[3], p[3])),
    lambda s, p: (s, (p[1], p[0], p[3], p[2]))), (
    lambda s, p: (s, (p[0] + p[1], 0)), lambda s, p: (s, (0, p[0] + p[1])),
    lambda s, p: (s, (p[0], 0)), lambda s, p: (s, (0, p[1])),
    lambda s, p: (s, (p[0], p[0])), lambda s, p: (s, (p[1], p[1])), lambda s, p: (s, (p[1], p[0]))))

padding_off_by_one = mutant("padding_off_by_one", """
    Your output equals the right one with a row and a column of zeros too many (or too few)
    around the input, on every side or on one side of each axis: pad = (top, bottom, left,
    right) gives exactly that many rows or columns of zeros, so that
    OH = 1 + (H + top + bottom - KH) // sh.""")
_geometry(padding_off_by_one, (
    lambda s, p: (s, tuple(v + 1 for v in p)), lambda s, p: (s, tuple(max(v - 1, 0) for v in p)),
    lambda s, p: (s, (p[0], p[1] + 1, p[2], p[3] + 1)), lambda s, p: (s, (p[0] + 1, p[1], p[2] + 1, p[3]))), (
    lambda s, p: (s, tuple(v + 1 for v in p)), lambda s, p: (s, tuple(max(v - 1, 0) for v in p)),
    lambda s, p: (s, (p[0], p[1] + 1)), lambda s, p: (s, (p[0] + 1, p[1]))))

padding_order = mutant("padding_order", """
    Your output equals the right one with the padding read as (top, left, bottom, right): the
    order is pad = (top, bottom, left, right), the two numbers for the height first.""")
_geometry(padding_order, (lambda s, p: (s, (p[0], p[2], p[1], p[3])),))

stride_ignored = mutant("stride_ignored", """
    Your output equals the right one with stride 1: move the window sh rows down and sw columns
    right at each step, so that OH = 1 + (H + top + bottom - KH) // sh.""")
_geometry(stride_ignored, (lambda s, p: ((1, 1), p),), (lambda s, p: ((1,), p),))


def _stride_ignored_backward(name):
    """A convolution's backward whose loop over the output takes the window of output (i, j) at
    (i, j), not (i*sh, j*sw): the reference's stride-1 backward of the padded input's top-left
    part that those windows cover, put back in place."""
    def impl(ref, dout, x, w, b, stride, pad):
        if all(s == 1 for s in stride):
            raise ValueError("the same as the reference for this case")
        rank = x.ndim - 2
        xp = np.pad(x, [(0, 0), (0, 0)] + [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(rank)])
        part = (slice(None), slice(None), *(slice(0, dout.shape[2 + i] - 1 + w.shape[2 + i]) for i in range(rank)))
        dx_part, dw, db = getattr(ref, name)(dout, _c(xp[part]), w, b, (1,) * rank, (0,) * (2 * rank))
        dxp = np.zeros_like(xp)
        dxp[part] = dx_part
        inside = (slice(None), slice(None), *(slice(int(pad[2 * i]), int(pad[2 * i]) + x.shape[2 + i])
                                             for i in range(rank)))
        return _c(dxp[inside]), dw, db
    return impl


for _name in ("conv2d_backward", "conv1d_backward"):
    stride_ignored.on(_name)(_stride_ignored_backward(_name))


padding_cropped_with_negative_end = mutant("padding_cropped_with_negative_end", """
    Your dx (a transposed convolution's output) is cut where a padding is 0:
    dx_pad[:, :, top:-bottom, left:-right] is empty along an axis whose end padding is 0, since
    -0 == 0 makes the slice top:0. Crop with explicit ends: dx_pad[:, :, top:top + H,
    left:left + W] (and x_pad[:, :, left:left + L] in 1-D).""")


def _negative_end_crop(dxp, pad):
    """What `dxp[:, :, top:-bottom, left:-right]` gives (the slice of a student who crops the
    padding with negative ends); 1-D: pad = (left, right)."""
    index = [slice(None), slice(None)]
    for start, end in zip(pad[::2], pad[1::2]):
        index.append(slice(start, -end))
    return _c(dxp[tuple(index)])


def _padded_input_gradient(ref, name, dout, x, *rest):
    """The gradient with respect to the zero-padded input: the reference's backward run on x
    padded beforehand, with no padding."""
    pad = tuple(int(p) for p in rest[-1])
    if not any(pad):
        raise ValueError("no padding: nothing to crop")
    widths = [(0, 0), (0, 0)] + [(a, b) for a, b in zip(pad[::2], pad[1::2])]
    xp = _c(np.pad(x, widths))
    no_pad = (0,) * len(pad)
    if name.startswith("maxpool"):
        xp = _c(np.pad(x, widths, constant_values=-np.inf))
    out = getattr(ref, name)(dout, xp, *rest[:-1], no_pad)
    return out if isinstance(out, tuple) else (out,)


for _name in ("conv2d_backward", "conv1d_backward", "maxpool2d_backward", "avgpool2d_backward"):
    def _impl(ref, dout, x, *rest, name=_name):
        outputs = _padded_input_gradient(ref, name, dout, x, *rest)
        dx = _negative_end_crop(outputs[0], tuple(int(p) for p in rest[-1]))
        if dx.shape == x.shape:
            raise ValueError("every padding is > 0: the crop is right")
        return (dx, *outputs[1:]) if len(outputs) > 1 else dx
    padding_cropped_with_negative_end.on(_name)(_impl)


@padding_cropped_with_negative_end.on("conv_transpose2d_forward")
def _(ref, x, w, b, stride, pad, output_pad):
    """The full transposed convolution (no cropping) cut with negative ends."""
    pad = tuple(int(p) for p in pad)
    if all(pad[1::2]):
        raise ValueError("every end padding is > 0: the crop is right")
    full = ref.conv_transpose2d_forward(x, w, b, stride, (0, 0, 0, 0), output_pad)
    return _negative_end_crop(full, pad)


# -- pooling ----------------------------------------------------------------------------------

average_instead_of_max = mutant("average_instead_of_max", """
    Your output equals average pooling: max-pooling keeps the largest value of each window, and
    its gradient goes to that value only.""")


@average_instead_of_max.on("maxpool2d_forward")
def _(ref, x, kernel, stride, pad):
    return ref.avgpool2d_forward(x, kernel, stride, pad)


@average_instead_of_max.on("maxpool2d_backward")
def _(ref, dout, x, kernel, stride, pad):
    return ref.avgpool2d_backward(dout, x, kernel, stride, pad)


maxpool_gradient_whole_window = mutant("maxpool_gradient_whole_window", """
    Your gradient goes to every input of each window: in max-pooling only the input that won
    the max (the first maximum in row-major order) receives dout; the others get 0.""")


@maxpool_gradient_whole_window.on("maxpool2d_backward")
def _(ref, dout, x, kernel, stride, pad):
    return ref.avgpool2d_backward(dout, x, kernel, stride, pad) * (kernel[0] * kernel[1])


maxpool_ties_not_first = mutant("maxpool_ties_not_first", """
    Your gradient does not go to the first of a window's tied maxima in row-major order (you
    split it among the ties, gave it to each, or to the last). The layer API sends it to the
    first maximum only, as np.argmax picks it (layer-api.md).""")


def _tied_gradient(dout, x, kernel, stride, pad, rule):
    """Max-pool backward where each window's gradient goes to its tied maxima by ``rule``:
    "split" (shared equally), "all" (each gets all of it) or "last" (the last one)."""
    top, bottom, left, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    dxp = np.zeros_like(xp)
    n, c, oh, ow = dout.shape
    for a in range(oh):
        for b in range(ow):
            rows = slice(a * stride[0], a * stride[0] + kernel[0])
            cols = slice(b * stride[1], b * stride[1] + kernel[1])
            window = xp[:, :, rows, cols]
            ties = window == window.max(axis=(2, 3), keepdims=True)
            if rule == "last":
                flat = ties.reshape(n, c, -1)
                last = flat.shape[2] - 1 - np.argmax(flat[:, :, ::-1], axis=2)
                ties = (np.arange(flat.shape[2]) == last[..., None]).reshape(ties.shape)
            share = ties / ties.sum(axis=(2, 3), keepdims=True) if rule == "split" else ties
            dxp[:, :, rows, cols] += share * dout[:, :, a:a + 1, b:b + 1]
    return _c(dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]])


for _rule in ("split", "all", "last"):
    maxpool_ties_not_first.on("maxpool2d_backward")(
        lambda ref, dout, x, kernel, stride, pad, rule=_rule: _tied_gradient(dout, x, kernel, stride, pad, rule))


maxpool_gradient_assigned = mutant("maxpool_gradient_assigned", """
    Your gradient is assigned (=) where it must be added (+=): where windows overlap, an input can
    win the max of several windows, and it receives the sum of their dout. Writing with = keeps
    only the last window's dout (or erases it when a whole window is written).""")


def _assigned_gradient(dout, x, kernel, stride, pad, whole_window):
    """Max-pool backward that writes with = in row-major window order: at the first maximum only,
    or (``whole_window``) the masked window, zeros included."""
    top, bottom, left, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    dxp = np.zeros_like(xp)
    n, c, oh, ow = dout.shape
    kh, kw = kernel
    for a in range(oh):
        for b in range(ow):
            rows = slice(a * stride[0], a * stride[0] + kh)
            cols = slice(b * stride[1], b * stride[1] + kw)
            window = xp[:, :, rows, cols].reshape(n, c, -1)
            first = window.argmax(axis=2)
            if whole_window:
                mask = (window == window.max(axis=2, keepdims=True)).reshape(n, c, kh, kw)
                dxp[:, :, rows, cols] = mask * dout[:, :, a:a + 1, b:b + 1]
            else:
                i, j = np.indices((n, c))
                dxp[i, j, a * stride[0] + first // kw, b * stride[1] + first % kw] = dout[:, :, a, b]
    return _c(dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]])


for _whole in (False, True):
    maxpool_gradient_assigned.on("maxpool2d_backward")(
        lambda ref, dout, x, kernel, stride, pad, whole=_whole: _assigned_gradient(dout, x, kernel, stride, pad, whole))


padding_wins_max = mutant("padding_wins_max", """
    Your max-pooling lets the zero padding win a window's max. Padding never wins a max: pad
    with -inf, or take the max over the real inputs of each window only (layer-api.md).""")


@padding_wins_max.on("maxpool2d_forward")
def _(ref, x, kernel, stride, pad):
    return ref.maxpool2d_forward(_zero_padded(x, pad), kernel, stride, (0, 0, 0, 0))


@padding_wins_max.on("maxpool2d_backward")
def _(ref, dout, x, kernel, stride, pad):
    top, _, left, _ = pad
    dxp = ref.maxpool2d_backward(dout, _zero_padded(x, pad), kernel, stride, (0, 0, 0, 0))
    return _c(dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]])


avgpool_padding_not_counted = mutant("avgpool_padding_not_counted", """
    Your average divides by the number of real inputs in each window. The layer API counts the
    padded zeros: always divide by kh * kw (PyTorch's count_include_pad=True).""")


@avgpool_padding_not_counted.on("avgpool2d_forward")
def _(ref, x, kernel, stride, pad):
    share = ref.avgpool2d_forward(np.ones_like(x), kernel, stride, pad)     # real inputs / (kh kw)
    return ref.avgpool2d_forward(x, kernel, stride, pad) / share


@avgpool_padding_not_counted.on("avgpool2d_backward")
def _(ref, dout, x, kernel, stride, pad):
    share = ref.avgpool2d_forward(np.ones_like(x), kernel, stride, pad)
    return ref.avgpool2d_backward(_c(dout / share), x, kernel, stride, pad)


# -- parameters --------------------------------------------------------------------------------

bias_missing = mutant("bias_missing", """
    Your output equals the right one without the bias: add b[f] to every output of filter (or
    unit) f -- f(sum of W * X + b); its gradient db[f] is the sum of dout over the batch and all
    positions.""")


bias_first_only = mutant("bias_first_only", """
    Your output adds one number, b[0], to the outputs of every filter (or unit): each filter f
    has its own bias, b[f], added to all of its outputs.""")


@bias_first_only.on("conv2d_forward", "conv1d_forward", "dense_forward")
def _(ref, x, w, b, *geometry):
    if b is None or b.size < 2:
        raise ValueError("one bias or none: the same as the reference")
    return _layer(ref, x, "forward")(x, w, None, *geometry) + b[0]


@bias_missing.on("conv2d_forward", "conv1d_forward", "dense_forward")
def _(ref, x, w, b, *geometry):
    return _layer(ref, x, "forward")(x, w, None, *geometry)


@bias_missing.on("conv2d_backward", "conv1d_backward", "dense_backward")
def _(ref, dout, x, w, b, *geometry):
    dx, dw, _ = _layer(ref, x, "backward")(dout, x, w, b, *geometry)
    return dx, dw, None if b is None else np.zeros_like(b)


@bias_missing.on("conv2d_backward", "conv1d_backward", "dense_backward")
def _(ref, dout, x, w, b, *geometry):
    dx, dw, _ = _layer(ref, x, "backward")(dout, x, w, b, *geometry)
    return dx, dw, None


def _layer(ref, x, which):
    """The conv2d, conv1d or dense function the input belongs to (by its number of axes)."""
    family = {4: "conv2d", 3: "conv1d", 2: "dense"}[x.ndim]
    return getattr(ref, f"{family}_{which}")


weight_gradient_transposed = mutant("weight_gradient_transposed", """
    Your weight gradient is transposed: dw must have the shape of w. For out = x @ w,
    dw = x.T @ dout, of shape (D, M); for a convolution dw[f, c, i, j] goes with w[f, c, i, j].""")


@weight_gradient_transposed.on("dense_backward", "conv2d_backward", "conv1d_backward")
def _(ref, dout, x, w, b, *rest):
    dx, dw, db = _layer(ref, x, "backward")(dout, x, w, b, *rest)
    return dx, _c(dw.T) if dw.ndim == 2 else _c(np.swapaxes(dw, 0, 1)), db


@weight_gradient_transposed.on("conv2d_backward")
def _(ref, dout, x, w, b, stride, pad):
    dx, dw, db = ref.conv2d_backward(dout, x, w, b, stride, pad)
    return dx, _c(np.swapaxes(dw, 2, 3)), db


gradient_from_one_sample = mutant("gradient_from_one_sample", """
    Your weight and bias gradients come from one sample only. One kernel is used at every
    position of every sample, so all their gradients add up: accumulate with +=, do not
    overwrite with = inside the loop.""")


@gradient_from_one_sample.on("conv2d_backward", "conv1d_backward", "dense_backward")
def _(ref, dout, x, w, b, *rest):
    fn = _layer(ref, x, "backward")
    dx, _, _ = fn(dout, x, w, b, *rest)
    _, dw, db = fn(_c(dout[-1:]), _c(x[-1:]), w, b, *rest)
    return dx, dw, db


@gradient_from_one_sample.on("conv2d_backward", "conv1d_backward", "dense_backward")
def _(ref, dout, x, w, b, *rest):
    fn = _layer(ref, x, "backward")
    dx, _, _ = fn(dout, x, w, b, *rest)
    _, dw, db = fn(_c(dout[:1]), _c(x[:1]), w, b, *rest)
    return dx, dw, db


# -- activations ---------------------------------------------------------------------------------

relu_gradient_not_masked = mutant("relu_gradient_not_masked", """
    Your ReLU gradient is not masked by the input: dx = dout where x > 0, and 0 where x <= 0.""")


@relu_gradient_not_masked.on("relu_backward")
def _(ref, dout, x):
    return dout.copy()


@relu_gradient_not_masked.on("relu_backward")
def _(ref, dout, x):
    return dout * (dout > 0)


relu_gradient_at_zero = mutant("relu_gradient_at_zero", """
    Your ReLU gradient passes dout where x == 0: the gradient there is 0, as in PyTorch
    (dx = dout where x > 0, and 0 where x <= 0).""")


@relu_gradient_at_zero.on("relu_backward")
def _(ref, dout, x):
    return dout * (x >= 0)


activation_gradient_from_input = mutant("activation_gradient_from_input", """
    Your gradient uses x where it should use the activation's output: sigmoid'(x) = s (1 - s)
    with s = sigmoid(x), and tanh'(x) = 1 - tanh(x)**2. The backward receives the forward's
    INPUT x: apply the activation to it first.""")


@activation_gradient_from_input.on("sigmoid_backward")
def _(ref, dout, x):
    return dout * x * (1 - x)


@activation_gradient_from_input.on("tanh_backward")
def _(ref, dout, x):
    return dout * (1 - x ** 2)


softmax_not_stabilised = mutant("softmax_not_stabilised", """
    Your softmax overflows for large inputs: exp(1000) is inf, and inf / inf is NaN. Subtract
    each row's maximum before exp -- softmax(x) = softmax(x - max(x)) gives the same result
    without overflow.""")


def _naive_softmax(x):
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


@softmax_not_stabilised.on("softmax_forward")
def _(ref, x):
    return _naive_softmax(x)


@softmax_not_stabilised.on("softmax_cross_entropy")
def _(ref, logits, y):
    n = logits.shape[0]
    p = _naive_softmax(logits)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    p[np.arange(n), y] -= 1
    return loss, p / n


log_of_softmax_underflows = mutant("log_of_softmax_underflows", """
    Your loss takes log(softmax(logits)): for large logits the softmax of a wrong class
    underflows to 0 and log(0) = -inf, so the loss is inf. Compute the log-softmax directly,
    with log-sum-exp: log softmax(z) = z - max(z) - log(sum(exp(z - max(z)))).""")


@log_of_softmax_underflows.on("softmax_cross_entropy")
def _(ref, logits, y):
    n = logits.shape[0]
    p = ref.softmax_forward(logits)                 # stable, but its zeros reach the log
    with np.errstate(divide="ignore"):
        loss = -np.mean(np.log(p[np.arange(n), y]))
    p[np.arange(n), y] -= 1
    return loss, p / n


@softmax_not_stabilised.on("softmax_cross_entropy")
def _(ref, logits, y):
    # log-sum-exp without the shift: log(sum(exp(z))) overflows to inf, log_probs = -inf
    n = logits.shape[0]
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    loss = -np.sum(log_probs[np.arange(n), y]) / n
    p = np.exp(log_probs)
    p[np.arange(n), y] -= 1
    return loss, p / n


@softmax_not_stabilised.on("softmax_cross_entropy")
def _(ref, logits, y):
    # the loss from the naive softmax, the gradient right
    n = logits.shape[0]
    loss = -np.mean(np.log(_naive_softmax(logits)[np.arange(n), y]))
    return loss, ref.softmax_cross_entropy(logits, y)[1]


log_with_epsilon = mutant("log_with_epsilon", """
    Your loss takes the log of the probability plus a small constant (log(p + 1e-16)), or of
    the probability clipped away from 0: when the softmax of the true class underflows to 0 for
    large logits, the loss stops at -log(1e-16) = 36.8 instead of its true value (about the gap
    between the largest and the true logit). Compute the log-softmax with log-sum-exp instead:
    log softmax(z) = z - max(z) - log(sum(exp(z - max(z)))), and no constant is needed.""")
_EPSILONS = (1e-30, 1e-20, 1e-16, 1e-15, 1e-12, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5)


def _log_with(eps, clip):
    def impl(ref, logits, y):
        n = logits.shape[0]
        loss, grad = ref.softmax_cross_entropy(logits, y)
        p = ref.softmax_forward(logits)[np.arange(n), y]
        guarded = np.maximum(p, eps) if clip else p + eps
        return float(-np.mean(np.log(guarded))), grad
    return impl


for _eps in _EPSILONS:
    for _clip in (False, True):
        log_with_epsilon.on("softmax_cross_entropy")(_log_with(_eps, _clip))


softmax_wrong_axis = mutant("softmax_wrong_axis", """
    Your softmax normalises over the wrong axis: each row (one sample's scores) must sum to 1,
    so normalise over axis 1, the classes.""")


@softmax_wrong_axis.on("softmax_forward")
def _(ref, x):
    return _c(ref.softmax_forward(_c(x.T)).T)


@softmax_wrong_axis.on("softmax_forward")
def _(ref, x):
    e = np.exp(x - x.max())
    return e / e.sum()


# -- losses ----------------------------------------------------------------------------------------

loss_sum_or_mean = mutant("loss_sum_or_mean", """
    Your loss or its gradient is a sum where it should be a mean (or a mean over the wrong
    number of values): cross-entropy is the mean over the batch, so dlogits is divided by N;
    the MSE is the mean over ALL elements, so dpred = 2 (pred - target) / pred.size; binary
    cross-entropy too is the mean over ALL elements, its gradient divided by pred.size.""")


@loss_sum_or_mean.on("softmax_cross_entropy")
def _(ref, logits, y):
    loss, grad = ref.softmax_cross_entropy(logits, y)
    return loss * len(y), grad * len(y)                # a sum over the batch


@loss_sum_or_mean.on("softmax_cross_entropy")
def _(ref, logits, y):
    loss, grad = ref.softmax_cross_entropy(logits, y)
    return loss, grad * len(y)                         # the gradient not divided by N


@loss_sum_or_mean.on("mse_loss")
def _(ref, pred, target):
    loss, grad = ref.mse_loss(pred, target)
    return loss * pred.size, grad * pred.size          # a sum over all elements


@loss_sum_or_mean.on("mse_loss")
def _(ref, pred, target):
    loss, grad = ref.mse_loss(pred, target)
    per_sample = pred.size // pred.shape[0]            # a mean over the batch only
    return loss * per_sample, grad * per_sample


@loss_sum_or_mean.on("mse_loss")
def _(ref, pred, target):
    loss, grad = ref.mse_loss(pred, target)
    return loss, grad * pred.size                      # the gradient not divided by the size


cross_entropy_gradient_without_onehot = mutant("cross_entropy_gradient_without_onehot", """
    Your dlogits is softmax(logits) / N: subtract 1 at each sample's true class,
    dlogits = (softmax(logits) - onehot(y)) / N.""")


@cross_entropy_gradient_without_onehot.on("softmax_cross_entropy")
def _(ref, logits, y):
    loss, grad = ref.softmax_cross_entropy(logits, y)
    grad = grad.copy()
    grad[np.arange(len(y)), y] += 1.0 / len(y)
    return loss, grad


mse_gradient_factor = mutant("mse_gradient_factor", """
    Your MSE gradient misses the factor 2: d/dpred mean((pred - target)**2) =
    2 (pred - target) / pred.size.""")


@mse_gradient_factor.on("mse_loss")
def _(ref, pred, target):
    loss, grad = ref.mse_loss(pred, target)
    return loss, grad / 2


# -- normalisation and dropout ---------------------------------------------------------------------

batchnorm_unbiased_variance = mutant("batchnorm_unbiased_variance", """
    Your output uses the unbiased variance (divided by m - 1). Batch normalisation in training
    mode divides by m, the number of values per feature or channel (np.var's default ddof=0).""")


def _unbiased(x, gamma, eps):
    # (x - mu) / sqrt(s var + eps) = (x - mu) / sqrt(var + eps / s) / sqrt(s), s = m / (m - 1)
    m = x.size // x.shape[1]
    s = m / (m - 1)
    return _c(gamma / np.sqrt(s)), eps / s, np.sqrt(s)


@batchnorm_unbiased_variance.on("batchnorm_forward")
def _(ref, x, gamma, beta, eps):
    g, e, _ = _unbiased(x, gamma, eps)
    return ref.batchnorm_forward(x, g, beta, e)


@batchnorm_unbiased_variance.on("batchnorm_backward")
def _(ref, dout, x, gamma, beta, eps):
    g, e, root = _unbiased(x, gamma, eps)
    dx, dgamma, dbeta = ref.batchnorm_backward(dout, x, g, beta, e)
    return dx, dgamma / root, dbeta


batchnorm_wrong_axes = mutant("batchnorm_wrong_axes", """
    Your statistics are computed over the batch only, separately at each position. For
    (N, C, H, W) or (N, C, L) inputs batch normalisation uses one mean and one variance per
    channel, over the batch AND all positions.""")


def _per_position(x, gamma, beta):
    n, c = x.shape[:2]
    positions = x.size // (n * c)
    return _c(x.reshape(n, -1)), np.repeat(gamma, positions), np.repeat(beta, positions), positions


@batchnorm_wrong_axes.on("batchnorm_forward")
def _(ref, x, gamma, beta, eps):
    x2, g2, b2, _ = _per_position(x, gamma, beta)
    return ref.batchnorm_forward(x2, g2, b2, eps).reshape(x.shape)


@batchnorm_wrong_axes.on("batchnorm_backward")
def _(ref, dout, x, gamma, beta, eps):
    x2, g2, b2, positions = _per_position(x, gamma, beta)
    dx, dg, db = ref.batchnorm_backward(_c(dout.reshape(x2.shape)), x2, g2, b2, eps)
    c = x.shape[1]
    return dx.reshape(x.shape), dg.reshape(c, positions).sum(1), db.reshape(c, positions).sum(1)


dropout_not_rescaled = mutant("dropout_not_rescaled", """
    Your dropout is not rescaled: inverted dropout divides the kept values by 1 - p, so that
    each value's expected output equals its input.""")


@dropout_not_rescaled.on("dropout_forward", "dropout_backward")
def _(ref, x, p, mask):
    return x * mask


dropout_divides_by_p = mutant("dropout_divides_by_p", """
    Your dropout divides by p, but p is the probability of DROPPING a value: divide the kept
    values by the keep probability, 1 - p.""")


@dropout_divides_by_p.on("dropout_forward", "dropout_backward")
def _(ref, x, p, mask):
    return x * mask / p


# -- transposed convolution (layer-api.md: encoder-decoders and generative networks) ------------------

def _ct(ref, which, dout, x, w, b, stride, pad, output_pad):
    """The reference's conv_transpose2d forward (dout None) or backward."""
    if which == "forward":
        return ref.conv_transpose2d_forward(x, w, b, stride, pad, output_pad)
    return ref.conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad)


def _ct_geometry(m: Mutant, alternatives, *, backward=True):
    """Register, for conv_transpose2d's forward (and backward), the reference with another
    (stride, pad, output_pad): ``alternatives`` map the case's to the mistake's."""
    names = ("conv_transpose2d_forward", "conv_transpose2d_backward") if backward else ("conv_transpose2d_forward",)
    for name in names:
        for alternative in alternatives:
            m.variants.setdefault(name, []).append(_with_ct_geometry(name, alternative))


def _with_ct_geometry(name, alternative):
    def impl(ref, *args):
        stride, pad, output_pad = (tuple(int(v) for v in a) for a in args[-3:])
        geometry = alternative(stride, pad, output_pad)
        if geometry == (stride, pad, output_pad):
            raise ValueError("the same as the reference for this case")
        if name.endswith("backward"):
            dout, rest = args[0], args[1:-3]
            if ref.conv_transpose2d_forward(*rest, *geometry).shape != dout.shape:
                raise ValueError("another output size")
            return ref.conv_transpose2d_backward(dout, *rest, *geometry)
        return ref.conv_transpose2d_forward(*args[:-3], *geometry)
    return impl


transposed_as_convolution = mutant("transposed_as_convolution", """
    Your output equals a convolution of x with w (channels swapped to fit): a transposed
    convolution goes the other way, each input value times the kernel is ADDED onto the output
    window it un-slides to, so it enlarges its input: OH = (H - 1)*sh - top - bottom + KH + oh.""")


@transposed_as_convolution.on("conv_transpose2d_forward")
def _(ref, x, w, b, stride, pad, output_pad):
    return ref.conv2d_forward(x, _c(np.swapaxes(w, 0, 1)), b, stride, pad)


@transposed_as_convolution.on("conv_transpose2d_forward")
def _(ref, x, w, b, stride, pad, output_pad):
    kh, kw = w.shape[2:]                     # a "same" convolution: the size kept at stride 1
    return ref.conv2d_forward(x, _c(np.swapaxes(w, 0, 1)), b, (1, 1),
                              ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2))


transposed_kernel_flipped = mutant("transposed_kernel_flipped", """
    Your output equals the transposed convolution with the kernel flipped: written as a
    convolution of the zero-stretched input, a transposed convolution needs the kernel flipped
    (w[:, :, ::-1, ::-1], channels swapped); written as "add x[i] * w onto out[i*s : i*s + K]" it
    needs no flip -- one of the two flips is missing or one too many.""")


@transposed_kernel_flipped.on("conv_transpose2d_forward")
def _(ref, x, w, b, stride, pad, output_pad):
    return ref.conv_transpose2d_forward(x, _flip(w), b, stride, pad, output_pad)


@transposed_kernel_flipped.on("conv_transpose2d_backward")
def _(ref, dout, x, w, b, stride, pad, output_pad):
    dx, dw, db = ref.conv_transpose2d_backward(dout, x, _flip(w), b, stride, pad, output_pad)
    return dx, _flip(dw), db


transposed_gradient_kernel_flipped = mutant("transposed_gradient_kernel_flipped", """
    Your dx (or dw) equals the right one with the kernel flipped: a transposed convolution's
    backward reads dout without flipping anything, dx[n, c, i, j] = sum over f, k, l of
    w[c, f, k, l] * dout[n, f, i*sh + k - top, j*sw + l - left] -- a strided cross-correlation of
    dout with w (it is a convolution's backward that flips the kernel, not this one).""")


@transposed_gradient_kernel_flipped.on("conv_transpose2d_backward")
def _(ref, dout, x, w, b, stride, pad, output_pad):
    dx, _, _ = ref.conv_transpose2d_backward(dout, x, _flip(w), b, stride, pad, output_pad)
    _, dw, db = ref.conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad)
    return dx, dw, db


@transposed_gradient_kernel_flipped.on("conv_transpose2d_backward")
def _(ref, dout, x, w, b, stride, pad, output_pad):
    dx, dw, db = ref.conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad)
    return dx, _flip(dw), db


output_padding_ignored = mutant("output_padding_ignored", """
    Your output has no output padding: output_pad = (oh, ow) adds oh rows at the bottom and ow
    columns at the right of the output, OH = (H - 1)*sh - top - bottom + KH + oh. They hold what
    the full transposed convolution has there (only the bias past its end), and their dout
    reaches dx and dw like any other.""")
_ct_geometry(output_padding_ignored, [lambda s, p, o: (s, p, (0, 0))], backward=False)


@output_padding_ignored.on("conv_transpose2d_backward")
def _(ref, dout, x, w, b, stride, pad, output_pad):
    oh, ow = (int(v) for v in output_pad)
    if not (oh or ow):
        raise ValueError("no output padding")
    h, wd = dout.shape[2] - oh, dout.shape[3] - ow        # dout of the rows and columns before it
    return ref.conv_transpose2d_backward(_c(dout[:, :, :h, :wd]), x, w, b, stride, pad, (0, 0))


transposed_padding_not_cropped = mutant("transposed_padding_not_cropped", """
    Your output is the full transposed convolution, uncropped: in a transposed convolution pad =
    (top, bottom, left, right) REMOVES top rows from the top, bottom rows from the bottom, left
    and right columns, so that OH = (H - 1)*sh - top - bottom + KH + oh (it does not add zeros
    around the input as a convolution's padding does).""")
_ct_geometry(transposed_padding_not_cropped, [lambda s, p, o: (s, (0, 0, 0, 0), o)])

transposed_padding_one_side = mutant("transposed_padding_one_side", """
    Your output is cropped from one side only, or the sides are swapped: pad = (top, bottom,
    left, right) removes top rows from the top and bottom rows from the bottom of the full
    transposed convolution (left and right columns likewise), so out = full[top : top + OH,
    left : left + OW] and dout goes back to those rows and columns.""")
_ct_geometry(transposed_padding_one_side, [
    lambda s, p, o: (s, (p[0] + p[1], 0, p[2] + p[3], 0), o), lambda s, p, o: (s, (0, p[0] + p[1], 0, p[2] + p[3]), o),
    lambda s, p, o: (s, (p[1], p[0], p[3], p[2]), o)])

_ct_geometry(height_width_swapped, [
    lambda s, p, o: ((s[1], s[0]), (p[2], p[3], p[0], p[1]), (o[1], o[0])),
    lambda s, p, o: ((s[1], s[0]), p, o), lambda s, p, o: (s, (p[2], p[3], p[0], p[1]), o),
    lambda s, p, o: (s, p, (o[1], o[0]))])
_ct_geometry(stride_ignored, [lambda s, p, o: ((1, 1), p, (0, 0))])


@bias_missing.on("conv_transpose2d_forward")
def _(ref, x, w, b, stride, pad, output_pad):
    return ref.conv_transpose2d_forward(x, w, None, stride, pad, output_pad)


@bias_missing.on("conv_transpose2d_backward")
def _(ref, dout, x, w, b, stride, pad, output_pad):
    dx, dw, _ = ref.conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad)
    return dx, dw, None if b is None else np.zeros_like(b)


@gradient_from_one_sample.on("conv_transpose2d_backward")
def _(ref, dout, x, w, b, stride, pad, output_pad):
    dx, _, _ = ref.conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad)
    _, dw, db = ref.conv_transpose2d_backward(_c(dout[-1:]), _c(x[-1:]), w, b, stride, pad, output_pad)
    return dx, dw, db


# -- upsampling ----------------------------------------------------------------------------------

def _interpolation(n_in, scale, rule):
    """The (n_in * scale, n_in) matrix of one axis' upsampling by a mistaken ``rule``."""
    n_out = n_in * scale
    o = np.arange(n_out)
    a = np.zeros((n_out, n_in))
    if rule in ("round", "round_half_even"):
        i = np.floor(o / scale + 0.5) if rule == "round" else np.round(o / scale)
        a[o, np.minimum(i.astype(int), n_in - 1)] = 1
        return a
    if rule == "align_corners":
        src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    elif rule == "no_half_pixel":
        src = o / scale
    else:                                               # "not_clamped": floor(src) = -1 wraps around
        src = (o + 0.5) / scale - 0.5
    i0 = np.floor(src).astype(int)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    np.add.at(a, (o, i0 % n_in), 1 - frac)
    np.add.at(a, (o, i1 % n_in), frac)
    return a


def _upsampled(rule, modes):
    """forward and backward implementations of upsampling by ``rule`` (for cases in ``modes``)."""
    def matrices(x, scale, mode):
        if mode not in modes:
            raise ValueError("another mode")
        return _interpolation(x.shape[2], int(scale[0]), rule), _interpolation(x.shape[3], int(scale[1]), rule)

    def forward(ref, x, scale, mode):
        ah, aw = matrices(x, scale, mode)
        return np.einsum("oh,nchw,pw->ncop", ah, x, aw)

    def backward(ref, dout, x, scale, mode):
        ah, aw = matrices(x, scale, mode)
        return np.einsum("oh,ncop,pw->nchw", ah, dout, aw)
    return forward, backward


def _upsample_mutant(m: Mutant, rules, modes):
    for rule in rules:
        forward, backward = _upsampled(rule, modes)
        m.on("upsample2d_forward")(forward)
        m.on("upsample2d_backward")(backward)


align_corners_true = mutant("align_corners_true", """
    Your bilinear upsampling uses align_corners=True, which maps the corner pixels onto each
    other (src = o * (in - 1) / (out - 1)). PyTorch's default, and the layer API's, is
    align_corners=False: output o reads the input at src = (o + 0.5) / scale - 0.5 (pixel
    centres), clamped below at 0.""")
_upsample_mutant(align_corners_true, ["align_corners"], ("bilinear",))

bilinear_without_half_pixel = mutant("bilinear_without_half_pixel", """
    Your bilinear upsampling reads the input at o / scale: positions are pixel centres, half a
    pixel in from the corner, so output o reads the input at src = (o + 0.5) / scale - 0.5,
    clamped below at 0.""")
_upsample_mutant(bilinear_without_half_pixel, ["no_half_pixel"], ("bilinear",))

bilinear_source_not_clamped = mutant("bilinear_source_not_clamped", """
    Your bilinear upsampling does not clamp the source position at 0: for the first outputs
    src = (o + 0.5) / scale - 0.5 is negative, floor(src) = -1, and NumPy reads index -1 as the
    LAST row or column. Clamp src below at 0, so the border value is repeated.""")
_upsample_mutant(bilinear_source_not_clamped, ["not_clamped"], ("bilinear",))

nearest_rounding = mutant("nearest_rounding", """
    Your nearest upsampling rounds o / scale to the nearest integer: the nearest mode (PyTorch's,
    the layer API's) takes floor(o / scale), so that each input value is repeated scale times
    from its own position on: out[o] = x[o // scale].""")
_upsample_mutant(nearest_rounding, ["round", "round_half_even"], ("nearest",))


def _swap_scale(name):
    def impl(ref, *args):
        scale = tuple(int(s) for s in args[-2])
        if scale[0] == scale[1]:
            raise ValueError("a square scale")
        return getattr(ref, name)(*args[:-2], (scale[1], scale[0]), args[-1])
    return impl


for _name in ("upsample2d_forward", "upsample2d_backward"):
    height_width_swapped.on(_name)(_swap_scale(_name))


# -- binary cross-entropy ------------------------------------------------------------------------

def _bce_terms(pred, target, guard):
    """Per-element loss -(t log p + (1 - t) log(1 - p)) with the logs passed through ``guard``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(target * guard(np.log(pred)) + (1 - target) * guard(np.log(1 - pred)))


bce_not_clipped = mutant("bce_not_clipped", """
    Your binary cross-entropy takes log(0) = -inf where a prediction is exactly 0 or 1 (as a
    saturated sigmoid gives), so the loss or its gradient is inf or NaN. Clamp each log at -100,
    as PyTorch does (max(log(p), -100)), and divide the gradient by max(p * (1 - p), 1e-12).""")


@bce_not_clipped.on("bce_loss")
def _(ref, pred, target):
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = (pred - target) / (pred * (1 - pred)) / pred.size
    return float(np.mean(_bce_terms(pred, target, lambda v: v))), grad


@bce_not_clipped.on("bce_loss")
def _(ref, pred, target):
    return float(np.mean(_bce_terms(pred, target, lambda v: v))), ref.bce_loss(pred, target)[1]


@bce_not_clipped.on("bce_loss")
def _(ref, pred, target):
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = (pred - target) / (pred * (1 - pred)) / pred.size
    return ref.bce_loss(pred, target)[0], grad


bce_epsilon_instead_of_clamp = mutant("bce_epsilon_instead_of_clamp", """
    Your binary cross-entropy guards the log with a small constant (log(p + eps), or p clipped to
    [eps, 1 - eps]): where a prediction is exactly 0 or 1 its loss stops at -log(eps). The layer
    API clamps each log at -100 instead (PyTorch's rule, max(log(p), -100)), and divides the
    gradient by max(p * (1 - p), 1e-12).""")


def _bce_with(eps, clip):
    def impl(ref, pred, target):
        p = np.clip(pred, eps, 1 - eps) if clip else pred
        shift = 0.0 if clip else eps
        with np.errstate(divide="ignore", invalid="ignore"):
            loss = -np.mean(target * np.log(p + shift) + (1 - target) * np.log(1 - p + shift))
        return float(loss), ref.bce_loss(pred, target)[1]
    return impl


for _eps in (1e-15, 1e-12, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5):
    for _clip in (False, True):
        bce_epsilon_instead_of_clamp.on("bce_loss")(_bce_with(_eps, _clip))

sigmoid_bce_unstable = mutant("sigmoid_bce_unstable", """
    Your loss is not stable for large logits: sigmoid(x) is exactly 0 or 1 in floating point
    once |x| is above 40 or so, so log(sigmoid(x)) is -inf (or wrong once clamped), and exp(-x)
    overflows to inf below x = -710. Compute from the logits: log(sigmoid(x)) = min(x, 0) -
    log(1 + exp(-|x|)), and the loss is (1 - t) * x - log(sigmoid(x)).""")


@sigmoid_bce_unstable.on("sigmoid_bce")
def _(ref, logits, target):
    with np.errstate(over="ignore"):
        p = 1 / (1 + np.exp(-logits))
    return float(np.mean(_bce_terms(p, target, lambda v: v))), ref.sigmoid_bce(logits, target)[1]


@sigmoid_bce_unstable.on("sigmoid_bce")
def _(ref, logits, target):
    with np.errstate(over="ignore"):
        p = 1 / (1 + np.exp(-logits))
    return float(np.mean(_bce_terms(p, target, lambda v: np.maximum(v, -100)))), ref.sigmoid_bce(logits, target)[1]


@sigmoid_bce_unstable.on("sigmoid_bce")
def _(ref, logits, target):
    with np.errstate(over="ignore"):
        loss = np.mean((1 - target) * logits + np.log(1 + np.exp(-logits)))
    return float(loss), ref.sigmoid_bce(logits, target)[1]


def _summed(name, per_sample):
    """The reference loss ``name`` summed over all elements, or (``per_sample``) averaged over
    the batch only."""
    def impl(ref, pred, target):
        loss, grad = getattr(ref, name)(pred, target)
        factor = pred.size // pred.shape[0] if per_sample else pred.size
        return loss * factor, grad * factor
    return impl


for _name in ("bce_loss", "sigmoid_bce"):
    for _per_sample in (False, True):
        loss_sum_or_mean.on(_name)(_summed(_name, _per_sample))


# -- the VAE's sample ----------------------------------------------------------------------------

def _kl_scaled(factor):
    """The reference with its KL term (and the KL's gradient) times ``factor(mu)``."""
    def forward(ref, mu, logvar, eps):
        z, kl = ref.vae_sample_forward(mu, logvar, eps)
        return z, kl * factor(mu)

    def backward(ref, dz, dkl, mu, logvar, eps):
        return ref.vae_sample_backward(dz, dkl * factor(mu), mu, logvar, eps)
    return forward, backward


def _kl_mutant(m: Mutant, factor, applies):
    forward, backward = _kl_scaled(factor)

    def check(fn):
        def impl(ref, *args):
            if not applies(args[-3]):
                raise ValueError("the same as the reference for this case")
            return fn(ref, *args)
        return impl
    m.on("vae_sample_forward")(check(forward))
    m.on("vae_sample_backward")(check(backward))


kl_wrong_sign = mutant("kl_wrong_sign", """
    Your KL term has the wrong sign: KL(N(mu, sigma^2) || N(0, 1)) = -1/2 * sum(1 + logvar -
    mu**2 - exp(logvar)) is never negative, and the loss ADDS it (it pulls the codes towards
    N(0, 1)).""")
_kl_mutant(kl_wrong_sign, lambda mu: -1.0, lambda mu: True)

kl_summed_over_batch = mutant("kl_summed_over_batch", """
    Your KL term is summed over the batch: sum it over each sample's features, then AVERAGE over
    the batch (divide by N), as the reconstruction loss is averaged -- and its gradient carries the
    same 1/N.""")
_kl_mutant(kl_summed_over_batch, lambda mu: float(mu.shape[0]), lambda mu: mu.shape[0] > 1)

kl_mean_over_features = mutant("kl_mean_over_features", """
    Your KL term averages over the features: the KL divergence of a D-dimensional code is the SUM
    over its D dimensions (then averaged over the batch, and only over the batch).""")
_kl_mutant(kl_mean_over_features, lambda mu: 1.0 / (mu.size // mu.shape[0]), lambda mu: mu.size > mu.shape[0])

vae_std_from_exp_logvar = mutant("vae_std_from_exp_logvar", """
    Your z uses exp(logvar) as the standard deviation: logvar is the log of the VARIANCE, so
    sigma = exp(logvar / 2), z = mu + exp(logvar / 2) * eps, and dz/dlogvar = eps * exp(logvar / 2) / 2.""")


@vae_std_from_exp_logvar.on("vae_sample_forward")
def _(ref, mu, logvar, eps):
    _, kl = ref.vae_sample_forward(mu, logvar, eps)
    return mu + np.exp(logvar) * eps, kl


@vae_std_from_exp_logvar.on("vae_sample_backward")
def _(ref, dz, dkl, mu, logvar, eps):
    dmu, dlogvar = ref.vae_sample_backward(dz, dkl, mu, logvar, eps)
    return dmu, dlogvar - dz * eps * np.exp(logvar / 2) / 2 + dz * eps * np.exp(logvar)
