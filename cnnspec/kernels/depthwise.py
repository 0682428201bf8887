"""Depthwise convolution, forward and backward: a grouped convolution with one input channel per
group (groups == C > 1, w (F, 1, KH, KW), F = m*C; MobileNet's and EfficientNet's 3x3 and 5x5
layers have m = 1).  ``conv2d_*_into`` (conv.py) send these here.

    out[n, f, oh, ow] = b[f] + sum_{i,j} w[f, 0, i, j] * xpad[n, f // m, oh*sh + i*dh, ow*sw + j*dw]

The general path runs each group as a BLAS product, here (1 x KH*KW) @ (KH*KW x columns): far
too small (MobileNetV2's 3x3 on 32x96x56x56 took 116 ms there, PyTorch 181 ms).  Here every
plane is a few vectorised loops, on conv.py's layout:

* the padded plane is split into stride phases by conv's ``_split_sample`` (a plane is a sample of
  one channel): phase (a, b) = xpad[a::sh, b::sw], and tap (i, j) reads phase ((i*dh) % sh,
  (j*dw) % sw) shifted by ((i*dh)//sh, (j*dw)//sw) (``conv._tap_offset``), so every tap of every
  stride and dilation is a run of the phase buffer;
* the output is computed on the "wide" grid of the phase rows (rows of Wq >= OW, the extra columns
  dropped when copied out), in chunks of rows: each loop runs over ~500 contiguous elements
  instead of one output row (rows of 14 to 56 elements left most of each loop to its scalar
  remainder: 1.8x slower);
* forward: ``wide += w[i, 0] * tap(i, 0) + ... + w[i, KW-1] * tap(i, KW-1)`` per kernel row i (the
  taps of a row in one loop for KW = 3 and 5);
* backward: dout on the wide grid (zeros on the extra columns), then per tap the adjoint
  ``dphase[tap window] += w * dwide`` (merged back into dx by conv's ``_merge_phases``) and
  ``acc[tap] += dwide * tap window``: a row of partial sums per tap (a scalar running sum adds one
  element per FP-add latency), summed into dw in float64 once per channel.

Channels are split over threads in contiguous ranges: every output (out, dx planes, dw and db
rows) belongs to one thread, so no partial sums are merged and results do not depend on timing.
"""
import numpy as np

from cnnspec.kernels._jit import jit, num_threads, run_split, sum64
from cnnspec.kernels.conv import (_merge_phases, _phase_shape, _phase_shape_jit, _split_sample,
                                  _tap_offset, _zero, conv_output_size)

_PARALLEL_MACS = 1 << 20          # below this many multiply-adds one thread is faster
_CHUNK = 512                      # elements of the wide grid per loop (a chunk of rows)


def _layout(x_shape, w_shape, stride, pad, dilation):
    """(rows per chunk, phase buffer elements, elements per thread).  A thread's slice holds
    [phases | their gradient | a chunk of the wide grid | partial sums (m, taps, chunk)]; the
    phase buffer ends with the (KW-1)*dw//sw zeros that the wide grid's last row reads."""
    hq, wq = _phase_shape(x_shape[2], x_shape[3], stride, pad)
    f_, _, kh, kw = w_shape
    oh = conv_output_size(x_shape[2], kh, stride[0], pad[0], pad[1], dilation[0])
    rows = max(1, min(oh, _CHUNK // wq))
    phases = stride[0] * stride[1] * hq * wq + (kw - 1) * dilation[1] // stride[1]
    q = rows * wq
    m = f_ // x_shape[1]
    return rows, phases, 2 * phases + q + m * kh * kw * q


def workspace_size(x_shape, w_shape, stride, pad, dilation, threads):
    """Elements of the scratch workspace the depthwise kernels need with ``threads`` threads."""
    return threads * _layout(x_shape, w_shape, stride, pad, dilation)[2]


@jit
def _tap_offsets(kernel, stride, dilation, wq, plane):
    """Offset of each tap's window in the phase buffer (``conv._tap_offset``), once per call:
    its divisions, repeated per row, cost more than the row's multiply-adds."""
    kh, kw = kernel
    offsets = np.empty(kh * kw, np.uint64)
    for i in range(kh):
        for j in range(kw):
            offsets[i * kw + j] = _tap_offset(i, j, 1, plane, wq, stride, dilation)
    return offsets


# Flat arrays and unsigned indices (np.uint64) throughout, as in conv.py: an unsigned index needs
# no negative-index test, which would keep LLVM from vectorising the loops.


@jit
def _wide_chunk(xp, wf, f, bias, kernel, offsets, start, q, wide):
    """wide[:q] = bias + the taps of filter f over the wide grid from element ``start``."""
    kh, kw = kernel
    for e in range(q):
        wide[e] = bias
    for i in range(kh):
        w0 = (f * kh + i) * kw
        t = i * kw
        if kw == 3:
            o0, o1, o2 = offsets[t] + start, offsets[t + 1] + start, offsets[t + 2] + start
            a, b, c = wf[w0], wf[w0 + 1], wf[w0 + 2]
            for e in range(q):
                u = np.uint64(e)
                wide[u] += a * xp[o0 + u] + b * xp[o1 + u] + c * xp[o2 + u]
        elif kw == 5:
            o0, o1, o2 = offsets[t] + start, offsets[t + 1] + start, offsets[t + 2] + start
            o3, o4 = offsets[t + 3] + start, offsets[t + 4] + start
            a, b, c, d, g = wf[w0], wf[w0 + 1], wf[w0 + 2], wf[w0 + 3], wf[w0 + 4]
            for e in range(q):
                u = np.uint64(e)
                wide[u] += (a * xp[o0 + u] + b * xp[o1 + u] + c * xp[o2 + u] + d * xp[o3 + u]
                            + g * xp[o4 + u])
        else:
            for j in range(kw):
                o = offsets[t + j] + start
                a = wf[w0 + j]
                for e in range(q):
                    u = np.uint64(e)
                    wide[u] += a * xp[o + u]


@jit
def _forward(x, w, b, stride, pad, dilation, out, rows, phases, buf, c0, c1):
    """Output planes of input channels [c0, c1), every sample."""
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = w.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    m = f_ // c_
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    xp, wide = buf[:phases], buf[2 * phases:2 * phases + rows * wq]
    wf, of = w.reshape(w.size), out.reshape(out.size)
    offsets = _tap_offsets((kh, kw), stride, dilation, wq, hq * wq)
    for c in range(c0, c1):
        for n in range(n_):
            _split_sample(x[n, c].reshape(1, 1, h_, w_), 0, stride, pad,
                          c == c0 and n == 0, xp)
            for k in range(m):
                f = c * m + k
                bias = b[f] if b.size > 0 else 0.0
                base = (n * f_ + f) * oh_ * ow_
                for oh0 in range(0, oh_, rows):
                    r = min(rows, oh_ - oh0)
                    _wide_chunk(xp, wf, f, bias, (kh, kw), offsets, np.uint64(oh0 * wq), r * wq,
                                wide)
                    for rr in range(r):              # drop the extra columns
                        dst = np.uint64(base + (oh0 + rr) * ow_)
                        src = np.uint64(rr * wq)
                        for e in range(ow_):
                            of[dst + np.uint64(e)] = wide[src + np.uint64(e)]


@jit
def _backward(dout, x, w, stride, pad, dilation, dx, dw, db, accumulate, need_dx, need_dw,
              need_db, rows, phases, buf, c0, c1):
    """dx planes, dw and db rows of input channels [c0, c1)."""
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = w.shape
    oh_, ow_ = dout.shape[2], dout.shape[3]
    m = f_ // c_
    taps = kh * kw
    hq, wq = _phase_shape_jit(h_, w_, stride, pad)
    chunk = rows * wq
    xp, dxp = buf[:phases], buf[phases:2 * phases]
    dwide = buf[2 * phases:2 * phases + chunk]
    acc = buf[2 * phases + chunk:2 * phases + chunk + m * taps * chunk]
    wf, df = w.reshape(w.size), dout.reshape(dout.size)
    dwf = dw.reshape(dw.size)
    offsets = _tap_offsets((kh, kw), stride, dilation, wq, hq * wq)
    for c in range(c0, c1):
        if need_dw:
            _zero(acc)
        dbs = np.zeros(m)
        for n in range(n_):
            if need_dw:
                _split_sample(x[n, c].reshape(1, 1, h_, w_), 0, stride, pad,
                              c == c0 and n == 0, xp)
            if need_dx:
                _zero(dxp)
            for k in range(m):
                f = c * m + k
                base = (n * f_ + f) * oh_ * ow_
                if need_db:
                    dbs[k] += sum64(df[base:base + oh_ * ow_])
                if not (need_dx or need_dw):
                    continue
                for oh0 in range(0, oh_, rows):
                    r = min(rows, oh_ - oh0)
                    q = r * wq
                    for rr in range(r):              # dout on the wide grid
                        src = np.uint64(base + (oh0 + rr) * ow_)
                        dst = np.uint64(rr * wq)
                        for e in range(ow_):
                            dwide[dst + np.uint64(e)] = df[src + np.uint64(e)]
                        for e in range(ow_, wq):
                            dwide[dst + np.uint64(e)] = 0
                    start = np.uint64(oh0 * wq)
                    for t in range(taps):
                        o = offsets[t] + start
                        if need_dw:
                            a = np.uint64((k * taps + t) * chunk)
                            for e in range(q):
                                u = np.uint64(e)
                                acc[a + u] += dwide[u] * xp[o + u]
                        if need_dx:
                            v = wf[f * taps + t]
                            for e in range(q):
                                u = np.uint64(e)
                                dxp[o + u] += v * dwide[u]
            if need_dx:
                _merge_phases(dxp, stride, pad, 0, accumulate, dx[n, c].reshape(1, 1, h_, w_))
        for k in range(m):
            f = c * m + k
            if need_dw:
                for t in range(taps):
                    a = (k * taps + t) * chunk
                    dwf[f * taps + t] = sum64(acc[a:a + chunk])
            if need_db:
                db[f] = dbs[k]


def _threads(channels, macs):
    return 1 if macs < _PARALLEL_MACS else min(num_threads(), channels)


def _check(workspace, need):
    if workspace.size < need:
        raise ValueError(f"conv2d workspace too small: {workspace.size} elements, need {need} "
                         f"(conv2d_workspace_size)")


def forward_into(x, w, b, stride, pad, dilation, out, workspace, empty1):
    """out (N, F, OH, OW) = depthwise conv of x (N, C, H, W) by w (F, 1, KH, KW) + b (F,);
    ``empty1`` (an empty 1-D array of x's dtype) stands for b=None."""
    c_ = x.shape[1]
    threads = _threads(c_, out.size * w.shape[2] * w.shape[3])
    rows, phases, per = _layout(x.shape, w.shape, stride, pad, dilation)
    _check(workspace, threads * per)
    b = empty1 if b is None else b
    run_split(_forward, c_, threads, lambda t, lo, hi: (
        x, w, b, stride, pad, dilation, out, rows, phases, workspace[t * per:(t + 1) * per],
        lo, hi), dynamic=True)


def backward_into(dout, x, w, stride, pad, dilation, dx, dw, db, workspace, accumulate, empty1,
                  empty4):
    """dx (+)= dL/dx, dw = dL/dw, db = dL/db (each may be None: not computed); ``empty1`` and
    ``empty4`` (empty arrays of x's dtype) stand for None."""
    c_ = x.shape[1]
    threads = _threads(c_, 2 * dout.size * w.shape[2] * w.shape[3])
    rows, phases, per = _layout(x.shape, w.shape, stride, pad, dilation)
    _check(workspace, threads * per)
    run_split(_backward, c_, threads, lambda t, lo, hi: (
        dout, x, w, stride, pad, dilation, empty4 if dx is None else dx,
        empty4 if dw is None else dw, empty1 if db is None else db, bool(accumulate),
        dx is not None, dw is not None, db is not None, rows, phases,
        workspace[t * per:(t + 1) * per], lo, hi), dynamic=True)
