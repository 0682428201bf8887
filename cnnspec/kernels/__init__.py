"""Numba kernels for every layer of dsl.md §6 — forward and backward side by side per family.

This docstring is the interface the engine codes against (kept true by the kernels helper).

Conventions
-----------
* Arrays are C-contiguous NumPy arrays; all float arrays of one call share one dtype, float32 or
  float64.  Labels are int64 (N,), dropout masks are bool, max-pool argmax buffers are int64.
* Spatial arguments are tuples of Python ints (keep them tuples of ints: one numba signature):
  ``kernel (kh, kw)``, ``stride (sh, sw)``, ``pad (top, bottom, left, right)``,
  ``dilation (dh, dw)``.
* 1-D layers run on the 2-D kernels with H = 1: x.reshape(N, C, 1, L), w.reshape(F, Cg, 1, K),
  kernel (1, k), stride (1, s), pad (0, 0, left, right), dilation (1, d).  A reshape of a
  C-contiguous array is free.
* ``*_into`` entry points are plain Python functions that call the njit kernels; they write into
  caller-provided buffers and allocate no arrays of the layer's size (pooling and dense take a
  small scratch row inside numba), so the engine allocates every buffer once per batch size.
  Output sizes are taken from the ``out`` buffer (so pooling ``ceil`` mode is the caller's
  choice of OH/OW).
* Backward entry points take ``accumulate`` (default False): False overwrites ``dx``, True adds
  into it (``dx += ...``), for a tensor that feeds several layers (micrograd's ``+=``).  Only input
  gradients accumulate; parameter gradients (dw, db, dgamma, dbeta) are always overwritten.
  Gradient arguments may be None: that gradient is not computed (network input, frozen layer).
* Element-wise forward may run in place (``out is x``); element-wise backward with
  accumulate=False may run in place (``dx is dout``).

Entry points
------------
Convolution (cross-correlation; groups and dilation supported):
    conv_output_size(size, kernel, stride, pad_before, pad_after, dilation=1) -> int
    conv2d_output_shape(x_shape, w_shape, stride, pad, dilation=(1, 1)) -> (N, F, OH, OW)
    conv2d_workspace_size(x_shape, w_shape, stride, pad, dilation, groups) -> int
        number of elements (x's dtype) of the 1-D ``workspace`` scratch buffer that forward and
        backward need (for the current thread count, see below); one workspace may be shared by all
        layers (scratch during a call only).  Too small a workspace raises ValueError.
    conv2d_forward_into(x, w, b, stride, pad, dilation, groups, out, workspace)
        x (N, C, H, W); w (F, C // groups, KH, KW); b (F,) or None; out (N, F, OH, OW)
    conv2d_backward_into(dout, x, w, stride, pad, dilation, groups, dx, dw, db, workspace,
                         accumulate=False)
        dx (N, C, H, W) or None; dw like w or None; db (F,) or None
    conv2d_forward_step(...), conv2d_backward_step(...)   (the same arguments)
        the call as a function of no arguments for a thread of its own (a training share's
        layer): where the plan chosen then is one compiled call, that call, bound once.

Pooling (out's spatial size is given by the caller; padding never wins a max; avg divides by the
window clipped to the padded input, like PyTorch count_include_pad=True, also in ceil mode;
sum = the plain window sum = avg x its divisor):
    maxpool2d_forward_into(x, kernel, stride, pad, out, argmax)
        argmax int64 (N, C, OH, OW): flat index h*W + w of the chosen input (first maximum in
        row-major order), -1 for a window with no input element (then out = -inf, as PyTorch)
    maxpool2d_backward_into(dout, argmax, dx, accumulate=False)
    maxpool2d_forward_step(...), maxpool2d_backward_step(...)   (the same arguments)
        the call as a step for a thread of its own, bound once (as conv2d_forward_step)
    avgpool2d_forward_into(x, kernel, stride, pad, out)
    avgpool2d_backward_into(dout, kernel, stride, pad, dx, accumulate=False)
    sumpool2d_forward_into(x, kernel, stride, pad, out)
    sumpool2d_backward_into(dout, kernel, stride, pad, dx, accumulate=False)
    global_avgpool_forward_into(x, out)                 x (N, C, *spatial), out (N, C, 1[, 1])
    global_avgpool_backward_into(dout, dx, accumulate=False)
    global_maxpool_forward_into(x, out, argmax)         argmax int64 (N, C): flat spatial index
    global_maxpool_backward_into(dout, argmax, dx, accumulate=False)

Dense (out = x @ w + b):
    dense_forward_into(x, w, b, out, relu=False)        x (N, D); w (D, M); b (M,) or None
    dense_backward_into(dout, x, w, dx, dw, db, accumulate=False, relu_y=None, masked=None)
        relu: a dense -> relu pair, out its relu; relu_y: the pair's backward, dout the relu's
        output gradient, masked by relu_y > 0 into masked (N, M) first
    dense_forward_step(...), dense_backward_step(...)   (the same arguments)
        the call as a step for a thread of its own, bound once (as conv2d_forward_step)

Activations (any shape; softmax over axis 1 of (N, C, *spatial)):
    relu_forward_into(x, out);          relu_backward_into(dout, y, dx, accumulate=False)
    leaky_relu_forward_into(x, slope, out)
    leaky_relu_backward_into(dout, x, slope, dx, accumulate=False)
    sigmoid_forward_into(x, out);       sigmoid_backward_into(dout, y, dx, accumulate=False)
    tanh_forward_into(x, out);          tanh_backward_into(dout, y, dx, accumulate=False)
    softmax_forward_into(x, out);       softmax_backward_into(dout, y, dx, accumulate=False)
        y is the forward OUTPUT (so the forward may run in place); relu: y or x, same sign pattern;
        leaky_relu takes the forward input x (the output works too when slope >= 0).

Batch normalisation (x (N, C, *spatial) per channel, or (N, D) per feature):
    batchnorm_forward_train_into(x, gamma, beta, eps, momentum, running_mean, running_var,
                                 out, mean, invstd, relu=False, relu6=False)
        batch statistics (biased variance); writes mean and invstd = 1/sqrt(var + eps), both
        FLOAT64 (C,) buffers, for the backward; updates running_mean/running_var in place as
        PyTorch does (running = (1 - momentum) * running + momentum * batch, var unbiased); pass
        running_mean=None to skip the update.  relu=True: out = relu(batchnorm(x)) (fused);
        relu6=True: relu6(batchnorm(x)).
    batchnorm_forward_eval_into(x, gamma, beta, eps, running_mean, running_var, out)
    batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dgamma, dbeta, accumulate=False,
                            relu_y=None, relu6=False)
        training-mode backward (batch statistics); relu_y: the fused relu's (relu6=True:
        relu6's) output, dout the gradient of that output.
    batchnorm_backward_eval_into(dout, x, gamma, eps, running_mean, running_var, dx, dgamma,
                                 dbeta, accumulate=False)
        backward of the evaluation-mode forward (a fixed affine map), e.g. for frozen layers.
    The training forward and backward in two halves, for a batch run in shares of samples
    (one per thread, each x the share's samples [first, first + len(x)) of a batch of
    ``batch``; part: float64 (blocks, C, 2), the whole batch's, shared):
    batchnorm_partials_into(x, part, batch=None, first=0)
    batchnorm_forward_from_partials(x, gamma, beta, eps, momentum, running_mean, running_var,
                                    out, mean, invstd, part, batch=None, relu=False, relu6=False)
    batchnorm_grad_partials_into(dout, x, mean, part, batch=None, first=0, relu_y=None,
                                 relu6=False)
    batchnorm_backward_from_partials(dout, x, gamma, mean, invstd, dx, dgamma, dbeta, part,
                                     batch=None, accumulate=False, relu_y=None, relu6=False)
        each share writes its blocks' partials, then (after every share has) the second half
        for its samples; share_blocks(batch, lo, hi) says whether [lo, hi) is whole blocks.
    batchnorm_share_forward_step(x, gamma, beta, eps, momentum, running_mean, running_var, out,
                                 mean, invstd, part, batch, first, barrier, relu=False, relu6=False)
    batchnorm_share_backward_step(dout, x, gamma, mean, invstd, dx, dgamma, dbeta, part, batch,
                                  first, barrier, accumulate=False, relu_y=None, relu6=False)
        the two halves and the meeting (barrier: a _jit.Barrier of the shares) as one step, a
        function of no arguments, on the share's own thread; one compiled call each way.

Dropout, merges:
    dropout_forward_into(x, mask, p, out)               out = x * mask / (1 - p); mask bool
    dropout_backward_into(dout, mask, p, dx, accumulate=False)
    add_into(a, b, out)                                 out = a + b  (n-ary add: call repeatedly)
    add_relu_into(a, b, out)                            out = relu(a + b)  (fused)
    accumulate_into(src, dst)                           dst += src   (the backward of add)
    copy_into(src, dst)                                 dst = src    (same dtype)
    concat_forward_into(xs, out)                        xs: sequence of (N, Ci, *spatial)
    concat_backward_into(dout, dxs, accumulate=False)   dxs: sequence of arrays; an int entry
                                                        (that input's channel count) skips it

Losses (return the loss as a Python float, mean as stated; write the gradient):
    softmax_cross_entropy_into(logits, y, dlogits) -> loss     logits (N, K), y int64 (N,)
    cross_entropy_positions_into(logits, y, dlogits) -> loss   logits (N, K, P), y (N, P): a
        label per position (labels not checked), the mean over N*P
    mse_loss_into(pred, target, dpred) -> loss                 mean over all elements
    bce_loss_into(pred, target, dpred) -> loss                 pred in [0, 1]; logs clamped at -100
    sigmoid_bce_into(logits, target, dlogits) -> loss          BCE of sigmoid(logits), stable
    l1_loss_into(pred, target, dpred) -> loss                  gradient sign(pred - target), 0 at 0

Layers of dsl.md §10 (loaded on first use: a network that does not use them imports nothing):
  Transposed convolution (PyTorch's ConvTranspose; ``output_pad (oh, ow)``; on AVX-512 the
  samples-in-lanes gathers, else batched im2col / col2im and BLAS products; see
  conv_transpose.py):
    conv_transpose2d_output_shape(x_shape, w_shape, stride, pad, output_pad, dilation, groups)
    conv_transpose2d_workspace_size(x_shape, w_shape, stride, pad, output_pad, dilation, groups)
    conv_transpose2d_forward_into(x, w, b, stride, pad, output_pad, dilation, groups, out,
                                  workspace)
        x (N, C, H, W); w (C, F // groups, KH, KW); b (F,) or None; out (N, F, OH, OW),
        OH = (H - 1)*sh - top - bottom + dh*(KH - 1) + oh + 1
    conv_transpose2d_backward_into(dout, x, w, stride, pad, output_pad, dilation, groups, dx, dw,
                                   db, workspace, accumulate=False)
  Depthwise convolution (groups == C, w (F, 1, KH, KW)) runs through conv2d_*_into as any
  convolution (its own loops, depthwise.py).
  Upsampling by integer factors (mode "nearest", "bilinear", "linear" (1-D as H = 1)):
    upsample2d_forward_into(x, scale, mode, out)        scale (sh, sw); out (N, C, H*sh, W*sw)
    upsample2d_backward_into(dout, scale, mode, dx, accumulate=False)
  Adaptive pooling (out's spatial size chosen by the caller; PyTorch's windows):
    adaptive_avgpool2d_forward_into(x, out)
    adaptive_avgpool2d_backward_into(dout, dx, accumulate=False)
    adaptive_maxpool2d_forward_into(x, out, argmax)     argmax int64, as maxpool2d's
    adaptive_maxpool2d_backward_into(dout, argmax, dx, accumulate=False)
  Activations (backward from the forward INPUT x; elu takes alpha after x):
    {relu6,hardswish,hardsigmoid,silu,gelu,softplus}_forward_into(x, out)
    {relu6,hardswish,hardsigmoid,silu,gelu,softplus}_backward_into(dout, x, dx, accumulate=False)
    elu_forward_into(x, alpha, out);    elu_backward_into(dout, x, alpha, dx, accumulate=False)
  Channel operations (x (N, C, *spatial)):
    mul_forward_into(a, b, out)                          equal shapes
    mul_backward_into(dout, other, dx, accumulate=False) one operand's gradient: dout * other
    gate_forward_into(x, gate, out)                      gate (N, C[, 1, 1]) over each plane
    gate_backward_into(dout, x, gate, dx, dgate, accumulate_dx=False, accumulate_dgate=False)
    channel_slice_forward_into(x, start, out)            out = x[:, start:start + C_out]
    channel_slice_backward_into(dout, start, dx, accumulate=False)
    channel_shuffle_forward_into(x, groups, out)
    channel_shuffle_backward_into(dout, groups, dx, accumulate=False)
  Given noise (drawn by the caller):
    droppath_forward_into(x, keep, p, out)               keep bool (N,): whole samples
    droppath_backward_into(dout, keep, p, dx, accumulate=False)
    vae_sample_forward_into(mu, logvar, eps, z) -> kl    kl: float (mean over the batch)
    vae_sample_backward_into(dz, dkl, mu, logvar, eps, dmu, dlogvar, accumulate_mu=False,
                             accumulate_logvar=False)    dz may be None; dkl a number

Everything is also available as the stateless layer API of layer-api.md in ``cnnspec.api``.

Threads, compile, performance
-----------------------------
* Big kernels split their samples (conv, pooling, softmax, concat, gates, training batchnorm),
  channels (depthwise, evaluation batchnorm), output columns (dense) or elements (activations, add, dropout, mul: pieces of 16
  elements) into contiguous ranges run on a small pool of Python threads (``_jit.run_split``;
  ``nogil`` kernels); ``CNNSPEC_THREADS`` sets the count (default: the machine's cores).  Small
  calls stay on the calling thread.  BLAS runs one thread per call (set at import).
* Compile: every kernel for float32 and float64 takes ~70 s the first time (2 cores; the
  kernel tests' cold run minus their warm run); a network compiles only the kernels its layers
  use (convolution: one driver per way of making the matrices; max-pooling: one per kind of
  window), LeNet-5's first training step 7.5 s (median of 4 processes on a quiet machine, 7.3-7.9
  s; 26 compiled functions; 12.7 s before the drivers were split and flattened: every level of
  jitted calls is optimised again inside its caller).  ``cache=True`` makes a second process load
  them all in 0.5 s, after 0.5 s to import this package (numba 0.14 s, scipy.linalg for BLAS
  0.19 s).
* Since issue 16's second round, groups-1 convolutions run their forward (and, where measured
  faster, dx and dw) as register-blocked direct loops on explicit 512-bit vectors
  (``conv_direct.py``, ``_simd.py``), and since its fifth round, where their wide grid wastes
  10% or more (small planes; 8 input channels or more), with the samples in the vector lanes
  (``conv_lanes.py``, also the transposed convolution's), and since its sixth round 3x3
  stride-1 layers of 64 filters on large planes by Winograd F(2x2, 3x3) (``conv_big.py``),
  and since its seventh round 5x5 stride-1 layers of 8+ channels on batches of 16+ by Winograd
  F(4, 5) along the rows (``conv_five.py``); README "### Performance" has the current
  figures.  The table below is the BLAS modes' (the direct kernels off: ``conv._DIRECT =
  False``).
* Measured on this machine (AMD EPYC Zen 4, 2 cores, float32; PyTorch 2.13 with 2 threads,
  timed alternately with ours, best of several runs; the machine was shared, so the absolute
  numbers moved by +-30% between runs, the ratios less; forward+backward counts 3x the
  forward's FLOPs, also without dx):

  conv, GFLOP/s (ours / PyTorch)       forward                          forward+backward
  3x3 64->64 (8,64,56,56) pad 1       183-189 / 123-132 (1.36-1.49)   185-187 / 149-175 (1.07-1.24)
  5x5 16->32 (64,16,14,14) pad 2      162-175 / 242-245 (0.67-0.71)   158-168 / 231-234 (0.69-0.73)
  3x3 3->32 (32,3,32,32) pad 1        107-120 / 126-132 (0.81-0.95)    95-99 / 64-70 (1.40-1.50)
  LeNet conv1 1->6 (64,1,32,32)        61-63 / 38-42 (1.46-1.66)        75-76 / 62-65 (1.14-1.22)
  LeNet conv2 6->16 (64,6,14,14)       95-96 / 154-158 (0.61-0.62)      95-101 / 83-90 (1.12-1.14)

  Training steps (engine + these kernels, SGD momentum), samples/s: LeNet-5 batch 1 5,900
  (PyTorch 1,130: 5.2x), batch 64 21,000-21,800 (PyTorch 16,200-17,100: 1.28x), batch 256
  24,300-26,200 (1.34-1.42x); ResNet-8 (3x32x32, batchnorm) batch 64 1,310-1,320 (PyTorch
  1,250-1,330: 0.99-1.06x).  LeNet layer times at batch 1 (us): conv1 fwd 13, bwd (dw) 17;
  pool1 8; conv2 fwd 15, bwd 30; dense 400-120 fwd 8, bwd 13; the whole step's kernels ~160 us.
"""
from cnnspec.kernels import _blas

_blas.single_threaded_blas()

from cnnspec.kernels.activation import (  # noqa: E402
    leaky_relu_backward_into, leaky_relu_forward_into, relu_backward_into, relu_forward_into,
    sigmoid_backward_into, sigmoid_forward_into, softmax_backward_into, softmax_forward_into,
    tanh_backward_into, tanh_forward_into)
from cnnspec.kernels.conv import (  # noqa: E402
    conv2d_backward_into, conv2d_backward_step, conv2d_forward_into, conv2d_forward_step,
    conv2d_output_shape, conv2d_workspace_size, conv_output_size)
from cnnspec.kernels.dense import (  # noqa: E402
    dense_backward_into, dense_backward_step, dense_forward_into, dense_forward_step)
from cnnspec.kernels.loss import (  # noqa: E402
    bce_loss_into, cross_entropy_positions_into, l1_loss_into, mse_loss_into, sigmoid_bce_into,
    softmax_cross_entropy_into)
from cnnspec.kernels.merge import (  # noqa: E402
    accumulate_into, add_into, add_relu_into, concat_backward_into, concat_forward_into, copy_into,
    dropout_backward_into, dropout_forward_into)
from cnnspec.kernels.norm import (  # noqa: E402
    batchnorm_backward_eval_into, batchnorm_backward_from_partials, batchnorm_backward_into,
    batchnorm_forward_eval_into, batchnorm_forward_from_partials, batchnorm_forward_train_into,
    batchnorm_grad_partials_into, batchnorm_partials_into, batchnorm_share_backward_step,
    batchnorm_share_forward_step, share_blocks)
from cnnspec.kernels.pool import (  # noqa: E402
    avgpool2d_backward_into, avgpool2d_forward_into, global_avgpool_backward_into,
    global_avgpool_forward_into, global_maxpool_backward_into, global_maxpool_forward_into,
    maxpool2d_backward_into, maxpool2d_backward_step, maxpool2d_forward_into,
    maxpool2d_forward_step, sumpool2d_backward_into, sumpool2d_forward_into)

# The kernels of dsl.md §10's layers, imported on first access (PEP 562): importing this package
# and running a network without them costs nothing more.
_LAZY = {
    "conv_transpose": ("conv_transpose_output_size", "conv_transpose2d_output_shape",
                       "conv_transpose2d_workspace_size", "conv_transpose2d_forward_into",
                       "conv_transpose2d_backward_into"),
    "upsample": ("upsample2d_forward_into", "upsample2d_backward_into"),
    "adaptive_pool": ("adaptive_avgpool2d_forward_into", "adaptive_avgpool2d_backward_into",
                      "adaptive_maxpool2d_forward_into", "adaptive_maxpool2d_backward_into"),
    "pointwise": tuple(f"{name}_{way}_into" for name in ("relu6", "hardswish", "hardsigmoid",
                                                         "silu", "gelu", "softplus", "elu")
                       for way in ("forward", "backward")),
    "channel_ops": ("mul_forward_into", "mul_backward_into", "gate_forward_into",
                    "gate_backward_into", "channel_slice_forward_into",
                    "channel_slice_backward_into", "channel_shuffle_forward_into",
                    "channel_shuffle_backward_into"),
    "stochastic": ("droppath_forward_into", "droppath_backward_into", "vae_sample_forward_into",
                   "vae_sample_backward_into"),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnspec.kernels' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"cnnspec.kernels.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAMES))
