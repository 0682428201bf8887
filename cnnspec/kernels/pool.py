"""Pooling forward and backward, 2-D; 1-D runs with H = 1.  Global max pooling is pooling with the
window equal to the whole plane; global average pooling has its own loops (a vectorised sum).

Window (oh, ow) covers padded rows oh*sh - top ... + kh and columns ow*sw - left ... + kw.
* max: over the real input elements in the window (padding never wins); ties go to the first
  maximum in row-major order; ``argmax`` keeps the flat index h*W + w of the winner for the
  backward (-1 and out = -inf for a window with no input element, as PyTorch).
* avg: the sum of the real elements divided by the window clipped to the padded input, i.e.
  count_include_pad=True, and in ceil mode the part of a window hanging past the bottom/right
  padding is not counted (PyTorch's avg_pool2d: ``hend = min(hstart + kh, H + pad_bottom)``).
* sum: the plain sum of the window (= avg x its divisor).

The caller chooses OH, OW (the out buffer's shape), which is how ceil mode is expressed.
Samples are independent: big tensors are split over threads by samples (``run_split``).
"""
import numpy as np

from cnnspec.kernels._jit import jit, memory_pieces, num_threads, one_call, run_split, sum64
from cnnspec.kernels.activation import _relu_forward

_ROW_RUNS = 16                    # 2x2 stride-2 rows of this many outputs or more: a row at a
                                  # time (_maxpool_2x2_s2_forward); shorter: planes at a time
                                  # (measured 16x64x64x64, 32 a row: 2.4 ms a row at a time, 3.2
                                  # planes at a time; LeNet-5's 14 a row: 0.36, 0.23)
_GROUP_OUTPUTS = 1024             # outputs of the planes a group holds (_maxpool_2x2_s2_planes)
_PARALLEL_WORK = 1 << 17          # window reads below which one thread is faster (~0.1 ms; 1 << 16
                                  # split LeNet-5 b64's maxpool2, 102k reads, 0.24 ms: no gain)


@jit
def _window(o, step, before, k, size, after):
    """Real rows [lo, hi) of window o and its length clipped to the padded input."""
    start = o * step - before
    end = min(start + k, size + after)
    return max(start, 0), min(start + k, size), end - start


@jit
def _take(v, best):
    """v replaces the running max: larger, or NaN (NaN propagates, as in PyTorch).  ``|``, not
    ``or``: Python's short-circuit ``or`` compiles to branches, and a mispredicted branch per
    window element made max-pooling 10x slower."""
    return (v > best) | (v != v)


@jit
def _window_runs(src, r, sw, kh, kw, ow_, runs):
    """runs[i * kw + j, ow] = src[r + i, ow * sw + j]: element (i, j) of the windows of a row
    of outputs as one unit-stride run, so that the selects over a window read runs, which LLVM
    vectorises; over strided columns it left them scalar for AVX2.  Measured on an AMD EPYC
    (Zen 3), one thread, against the loops over the columns: 3x3 stride 2 padding 1 on
    16x64x32x32 8.0 -> 1.9 ms, on 16x64x112x112 (ResNet-18's at 224) 97 -> 18 ms, 2x2 stride 1
    on 16x64x32x32 15.5 -> 3.6 ms (PyTorch's max_pool2d with its indices: 9.1, 108, 19.6)."""
    for i in range(kh):
        row = src[r + i]
        for j in range(kw):
            run = runs[i * kw + j]
            if sw == 1:                 # the stride known to LLVM: 1.5-3x
                for ow in range(ow_):
                    run[ow] = row[ow + j]
            elif sw == 2:
                for ow in range(ow_):
                    run[ow] = row[2 * ow + j]
            else:
                for ow in range(ow_):
                    run[ow] = row[ow * sw + j]


@jit
def _max_2x2(src, sh, sw, outp, argp, runs):
    """2x2 windows inside src; argp = 4 * row + column of the winner in its window (the first
    maximum wins, a NaN wins: the last one).  ``runs``: scratch of (4, OW) (_window_runs)."""
    oh_, ow_ = outp.shape
    r0, r1, r2, r3 = runs[0], runs[1], runs[2], runs[3]
    for oh in range(oh_):
        _window_runs(src, oh * sh, sw, 2, 2, ow_, runs)
        orow, arow = outp[oh], argp[oh]
        for ow in range(ow_):
            m, a = r0[ow], 0
            v = r1[ow]
            t = _take(v, m)
            m, a = (v if t else m), (1 if t else a)
            v = r2[ow]
            t = _take(v, m)
            m, a = (v if t else m), (4 if t else a)
            v = r3[ow]
            t = _take(v, m)
            m, a = (v if t else m), (5 if t else a)
            orow[ow] = m
            arow[ow] = a


@jit
def _max_3x3(src, sh, sw, outp, argp, runs):
    """3x3 windows inside src, unrolled like _max_2x2 (the loops of _max_small ran 2.6x slower on
    ResNet's 3x3 stride-2 pooling); argp = 4 * row + column of the winner in its window.
    ``runs``: scratch of (9, OW)."""
    oh_, ow_ = outp.shape
    for oh in range(oh_):
        _window_runs(src, oh * sh, sw, 3, 3, ow_, runs)
        orow, arow = outp[oh], argp[oh]
        for ow in range(ow_):
            m, a = runs[0, ow], 0
            v = runs[1, ow]
            t = _take(v, m)
            m, a = (v if t else m), (1 if t else a)
            v = runs[2, ow]
            t = _take(v, m)
            m, a = (v if t else m), (2 if t else a)
            v = runs[3, ow]
            t = _take(v, m)
            m, a = (v if t else m), (4 if t else a)
            v = runs[4, ow]
            t = _take(v, m)
            m, a = (v if t else m), (5 if t else a)
            v = runs[5, ow]
            t = _take(v, m)
            m, a = (v if t else m), (6 if t else a)
            v = runs[6, ow]
            t = _take(v, m)
            m, a = (v if t else m), (8 if t else a)
            v = runs[7, ow]
            t = _take(v, m)
            m, a = (v if t else m), (9 if t else a)
            v = runs[8, ow]
            t = _take(v, m)
            m, a = (v if t else m), (10 if t else a)
            orow[ow] = m
            arow[ow] = a


@jit
def _max_small(src, kh, kw, sh, sw, outp, argp):
    """Windows of at most 3x3 inside src (no bounds tests); argp gets the winner's offset in
    its window as 4 * row + column."""
    oh_, ow_ = outp.shape
    for oh in range(oh_):
        r = oh * sh
        for ow in range(ow_):
            c = ow * sw
            m = src[r, c]
            bi = 0
            bj = 0
            for i in range(kh):
                for j in range(kw):
                    v = src[r + i, c + j]
                    t = _take(v, m)
                    bi = i if t else bi
                    bj = j if t else bj
                    m = v if t else m
            outp[oh, ow] = m
            argp[oh, ow] = 4 * bi + bj


@jit
def _offsets_to_index(argp, sh, sw, pt, pl, h_, w_, kh, kw):
    """argp = h * W + w of the winner from its window offsets (argp holds 4 * row + col).
    A winner in the -inf border ties with input elements that are all -inf (padding never wins):
    the window's first input element (row-major) takes it, as PyTorch; -1 only for a window with
    no input element."""
    oh_, ow_ = argp.shape
    for oh in range(oh_):
        for ow in range(ow_):
            h = oh * sh + (argp[oh, ow] >> 2) - pt
            w = ow * sw + (argp[oh, ow] & 3) - pl
            real = (h >= 0) & (h < h_) & (w >= 0) & (w < w_)
            if not real:
                h0, w0 = oh * sh - pt, ow * sw - pl
                h, w = max(h0, 0), max(w0, 0)
                real = (h < h_) & (h < h0 + kh) & (w < w_) & (w < w0 + kw)
            argp[oh, ow] = h * w_ + w if real else -1


@jit
def _bordered_copy(xp, top, left, fill, dst):
    """dst (hs, ws) = fill with xp at (top, left).  Plain loops: numba's 2-D slice assignment
    took 3 s to compile (its broadcasting machinery)."""
    h_, w_ = xp.shape
    hs, ws = dst.shape
    for r in range(hs):
        row = dst[r]
        if r < top or r >= top + h_:
            for e in range(ws):
                row[e] = fill
            continue
        src = xp[r - top]
        for e in range(left):
            row[e] = fill
        inner = row[left:]
        for e in range(w_):
            inner[e] = src[e]
        for e in range(left + w_, ws):
            row[e] = fill


@jit
def _maxpool_2x2_forward(x, stride, out, argmax, relu):
    """2x2 windows that lie inside x (no padding, no ceil overhang): LeNet's and VGG's pooling.
    One driver per kind of window, chosen in Python (``_maxpool_driver``): a network compiles
    only the kinds it uses (all kinds behind one branch took LeNet-5's first step 3.9 s longer).
    Stride 2 along the rows has a driver of its own (_maxpool_2x2_s2_forward).  Every driver
    takes ``relu`` last: the relu of each plane's outputs, while in cache (the training step's
    relu -> maxpool pair, ``maxpool2d_forward_into``)."""
    runs = np.empty((4, out.shape[3]), x.dtype)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            _max_2x2(x[n, c], stride[0], stride[1], out[n, c], argmax[n, c], runs)
            _offsets_to_index(argmax[n, c], stride[0], stride[1], 0, 0, x.shape[2], x.shape[3],
                              2, 2)
            if relu:
                _relu_plane(out[n, c])


@jit
def _max_of_four(a, b, c, d, i, w_):
    """(max, flat index) of a 2x2 window read as a, b (its top row) and c, d, whose top-left
    element is at flat index i in a plane of width w_: the first maximum in row-major order,
    a NaN winning (``_take``)."""
    m = a
    t = _take(b, m)
    m, i1 = (b if t else m), (i + 1 if t else i)
    t = _take(c, m)
    m, i1 = (c if t else m), (i + w_ if t else i1)
    t = _take(d, m)
    m, i1 = (d if t else m), (i + w_ + 1 if t else i1)
    return m, i1


@jit
def _maxpool_2x2_s2_forward(x, sh, out, argmax, relu):
    """_maxpool_2x2_forward for stride (sh, 2): one pass per output row, from its two input
    rows, writing the winner's flat index at once (the same values, first-wins ties and NaN as
    _max_2x2 then _offsets_to_index): 1.2-6x faster than the two passes (U-Net-S's 16x64x64
    pooling 1.66 -> 0.31 ms, LeNet-5's first 0.55 -> 0.27, on an Intel Xeon).  The two rows'
    even and odd columns are first copied into four runs (_window_runs), so that the selects
    read unit-stride runs, which LLVM vectorises for AVX2 too: on an AMD EPYC (Zen 3) it left
    the loop over stride-2 columns scalar (LeNet-5's first pooling 1.11 ms, 0.37 ms with the
    runs; 0.28 with the four runs copied in one loop of its own, not kept: one copy loop)."""
    w_, ow_ = x.shape[3], out.shape[3]
    runs = np.empty((4, ow_), x.dtype)
    te, to, be, bo = runs[0], runs[1], runs[2], runs[3]
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            src, outp, argp = x[n, c], out[n, c], argmax[n, c]
            for oh in range(out.shape[2]):
                _window_runs(src, sh * oh, 2, 2, 2, ow_, runs)
                orow, arow = outp[oh], argp[oh]
                base = sh * oh * w_
                for ow in range(ow_):
                    orow[ow], arow[ow] = _max_of_four(te[ow], to[ow], be[ow], bo[ow],
                                                      base + 2 * ow, w_)
            if relu:
                _relu_plane(outp)


@jit
def _maxpool_2x2_s2_planes(x, sh, out, argmax, relu):
    """_maxpool_2x2_s2_forward for rows of fewer than _ROW_RUNS outputs: the outputs of a group
    of whole planes (at most _GROUP_OUTPUTS) at once, their windows' four elements copied into
    four runs (and the top-left element's flat index into a fifth), then one select loop over
    the group, which LLVM vectorises however short the rows (the per-row loops ran scalar: ~60
    ns a row).  On an AMD EPYC (Zen 3), one thread: LeNet-5's second pooling at batch 64 (5
    outputs a row) 0.48 -> 0.09 ms, its first (14 a row) 0.36 -> 0.23 ms; PyTorch's max_pool2d
    with indices 0.66 and 1.83 ms."""
    h_, w_ = x.shape[2], x.shape[3]
    oh_, ow_ = out.shape[2], out.shape[3]
    xf, of, af = x.reshape(x.size), out.reshape(out.size), argmax.reshape(argmax.size)
    plane = oh_ * ow_
    group = max(1, _GROUP_OUTPUTS // plane)
    cap = group * plane
    runs = np.empty(4 * cap, x.dtype)
    corner = np.empty(cap, np.int64)
    c1, c2, c3 = np.uint64(cap), np.uint64(2 * cap), np.uint64(3 * cap)
    one = np.uint64(1)
    for p0 in range(0, x.shape[0] * x.shape[1], group):
        k = np.uint64(0)
        for p in range(p0, min(x.shape[0] * x.shape[1], p0 + group)):
            for oh in range(oh_):
                base = sh * oh * w_
                top = np.uint64(p * h_ * w_ + base)
                bottom = top + np.uint64(w_)
                for ow in range(ow_):
                    u = np.uint64(ow)
                    runs[k] = xf[top + 2 * u]
                    runs[c1 + k] = xf[top + 2 * u + one]
                    runs[c2 + k] = xf[bottom + 2 * u]
                    runs[c3 + k] = xf[bottom + 2 * u + one]
                    corner[k] = base + 2 * ow
                    k += one
        o = np.uint64(p0 * plane)
        for e in range(k):
            u = np.uint64(e)
            of[o + u], af[o + u] = _max_of_four(runs[u], runs[c1 + u], runs[c2 + u],
                                                runs[c3 + u], corner[u], w_)
        if relu:
            group_out = of[o:o + k]
            _relu_forward(group_out, group_out)


@jit
def _maxpool_3x3_forward(x, stride, out, argmax, relu):
    """3x3 windows inside x (see _maxpool_2x2_forward)."""
    runs = np.empty((9, out.shape[3]), x.dtype)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            _max_3x3(x[n, c], stride[0], stride[1], out[n, c], argmax[n, c], runs)
            _offsets_to_index(argmax[n, c], stride[0], stride[1], 0, 0, x.shape[2], x.shape[3],
                              3, 3)
            if relu:
                _relu_plane(out[n, c])


@jit
def _maxpool_small_forward(x, kernel, stride, pad, out, argmax, scratch, relu):
    """2 to 3 rows and columns with padding or a ceil overhang (or 2x3, 3x2): each plane copied
    into ``scratch`` with a -inf border, then the straight-line windows."""
    h_, w_ = x.shape[2], x.shape[3]
    oh_, ow_ = out.shape[2], out.shape[3]
    kh, kw = kernel
    sh, sw = stride
    hs, ws = max((oh_ - 1) * sh + kh, h_ + pad[0]), max((ow_ - 1) * sw + kw, w_ + pad[2])
    src = scratch[:hs * ws].reshape(hs, ws)
    runs = np.empty((9, ow_), x.dtype)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            outp, argp = out[n, c], argmax[n, c]
            _bordered_copy(x[n, c], pad[0], pad[2], -np.inf, src)
            if kh == 2 and kw == 2:
                _max_2x2(src, sh, sw, outp, argp, runs)
            elif kh == 3 and kw == 3:
                _max_3x3(src, sh, sw, outp, argp, runs)
            else:
                _max_small(src, kh, kw, sh, sw, outp, argp)
            _offsets_to_index(argp, sh, sw, pad[0], pad[2], h_, w_, kh, kw)
            if relu:
                _relu_plane(outp)


@jit
def _maxpool_general_forward(x, kernel, stride, pad, out, argmax, relu):
    """Any window (global max pooling, big kernels): loops clipped to the input."""
    h_, w_ = x.shape[2], x.shape[3]
    oh_, ow_ = out.shape[2], out.shape[3]
    kh, kw = kernel
    sh, sw = stride
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            xp, outp, argp = x[n, c], out[n, c], argmax[n, c]
            for oh in range(oh_):
                h0, h1, _ = _window(oh, sh, pad[0], kh, h_, pad[1])
                for ow in range(ow_):
                    w0, w1, _ = _window(ow, sw, pad[2], kw, w_, pad[3])
                    best = xp[0, 0]
                    arg = -1
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            v = xp[h, w]
                            t = _take(v, best) | (arg < 0)
                            best = v if t else best
                            arg = h * w_ + w if t else arg
                    outp[oh, ow] = best if arg >= 0 else -np.inf
                    argp[oh, ow] = arg
            if relu:
                _relu_plane(outp)


@jit
def _relu_plane(out):
    """out = relu(out) in place, a plane (2-D) row by row (activation's kernel)."""
    for h in range(out.shape[0]):
        _relu_forward(out[h], out[h])


def _maxpool_driver(x, kernel, stride, pad, out):
    """(driver, the arguments after x) for this pooling: see _maxpool_2x2_forward."""
    kh, kw = kernel
    if not (2 <= kh <= 3 and 2 <= kw <= 3):
        return _maxpool_general_forward, (kernel, stride, pad)
    oh_, ow_ = out.shape[2], out.shape[3]
    need_h, need_w = (oh_ - 1) * stride[0] + kh, (ow_ - 1) * stride[1] + kw
    if pad[0] == 0 and pad[2] == 0 and need_h <= x.shape[2] and need_w <= x.shape[3] and kh == kw:
        if kh == 2 and stride[1] == 2:
            return (_maxpool_2x2_s2_forward if ow_ >= _ROW_RUNS else _maxpool_2x2_s2_planes,
                    (stride[0],))
        return (_maxpool_2x2_forward if kh == 2 else _maxpool_3x3_forward), (stride,)
    size = max(need_h, x.shape[2] + pad[0]) * max(need_w, x.shape[3] + pad[2])
    return _maxpool_small_forward, (kernel, stride, pad, size)


@jit
def _maxpool_backward(dout, argmax, dx, accumulate, y, after_relu):
    """dx[n, c] (+)= each window's gradient sent to its argmax: flat loops over the planes, in one
    function (a per-plane helper cost a level of compiling, 0.25 s of LeNet-5's first step).
    ``after_relu``: the forward pooled x and took the relu of the result (``y``, the output), which
    is the pooling of relu(x); a window whose output is <= 0 sends nothing, as the relu's backward
    would have zeroed it at its argmax (the relu leaves positive values and their order alone, so
    the window's argmax over x is its argmax over relu(x))."""
    hw, ohw = dx.shape[2] * dx.shape[3], dout.shape[2] * dout.shape[3]
    dxf, df, af = dx.reshape(dx.size), dout.reshape(dout.size), argmax.reshape(argmax.size)
    yf = y.reshape(y.size)
    if not accumulate:
        for e in range(dxf.size):            # a loop: see conv._zero
            dxf[e] = 0
    for p in range(dx.shape[0] * dx.shape[1]):
        dst, g, a = dxf[p * hw:(p + 1) * hw], df[p * ohw:(p + 1) * ohw], af[p * ohw:(p + 1) * ohw]
        if after_relu:
            yp = yf[p * ohw:(p + 1) * ohw]
            for e in range(ohw):
                if a[e] >= 0 and not yp[e] <= 0:     # the relu's mask: y <= 0 sends nothing
                    dst[a[e]] += g[e]
        else:
            for e in range(ohw):
                if a[e] >= 0:
                    dst[a[e]] += g[e]


@jit
def _sum_small(src, kh, kw, sh, sw, outp):
    """Window sums over src (no bounds tests; kh, kw literal, see _max_small)."""
    oh_, ow_ = outp.shape
    for oh in range(oh_):
        r = oh * sh
        for ow in range(ow_):
            c = ow * sw
            s = 0.0
            for i in range(kh):
                for j in range(kw):
                    s += src[r + i, c + j]
            outp[oh, ow] = s


@jit
def _spread_small(g, kh, kw, sh, sw, dst):
    """The adjoint of _sum_small: dst[window] += g[oh, ow]."""
    oh_, ow_ = g.shape
    for oh in range(oh_):
        r = oh * sh
        for ow in range(ow_):
            c = ow * sw
            for i in range(kh):
                for j in range(kw):
                    dst[r + i, c + j] += g[oh, ow]


@jit
def _small_window(kernel, stride, pad, h_, w_, oh_, ow_):
    """(use the straight-line path, scratch rows, scratch columns, and whether x needs a border)."""
    kh, kw = kernel
    need_h, need_w = (oh_ - 1) * stride[0] + kh, (ow_ - 1) * stride[1] + kw
    small = 2 <= kh <= 3 and 2 <= kw <= 3
    inside = pad[0] == 0 and pad[2] == 0 and need_h <= h_ and need_w <= w_
    return small, max(need_h, h_ + pad[0]), max(need_w, w_ + pad[2]), not inside


@jit
def _divide(outp, stride, pad, kernel, h_, w_):
    """outp /= the window clipped to the padded input (count_include_pad, PyTorch's ceil rule)."""
    oh_, ow_ = outp.shape
    for oh in range(oh_):
        _, _, hn = _window(oh, stride[0], pad[0], kernel[0], h_, pad[1])
        for ow in range(ow_):
            _, _, wn = _window(ow, stride[1], pad[2], kernel[1], w_, pad[3])
            outp[oh, ow] = outp[oh, ow] / (hn * wn)


@jit
def _avgpool_plane(xp, kernel, stride, pad, divide, outp, scratch):
    h_, w_ = xp.shape
    oh_, ow_ = outp.shape
    small, hs, ws, border = _small_window(kernel, stride, pad, h_, w_, oh_, ow_)
    if small:
        src = xp
        if border:                           # zeros around x: padding adds nothing to a sum
            src = scratch[:hs * ws].reshape(hs, ws)
            _bordered_copy(xp, pad[0], pad[2], 0.0, src)
        kh, kw, sh, sw = kernel[0], kernel[1], stride[0], stride[1]
        if kh == 2 and kw == 2:
            _sum_small(src, 2, 2, sh, sw, outp)
        elif kh == 3 and kw == 3:
            _sum_small(src, 3, 3, sh, sw, outp)
        elif kh == 2:
            _sum_small(src, 2, 3, sh, sw, outp)
        else:
            _sum_small(src, 3, 2, sh, sw, outp)
    else:
        for oh in range(oh_):
            h0, h1, _ = _window(oh, stride[0], pad[0], kernel[0], h_, pad[1])
            for ow in range(ow_):
                w0, w1, _ = _window(ow, stride[1], pad[2], kernel[1], w_, pad[3])
                s = 0.0
                for h in range(h0, h1):
                    row = xp[h]
                    for w in range(w0, w1):
                        s += row[w]
                outp[oh, ow] = s
    if divide:
        _divide(outp, stride, pad, kernel, h_, w_)


@jit
def _avgpool_forward(x, kernel, stride, pad, divide, out):
    _, hs, ws, _ = _small_window(kernel, stride, pad, x.shape[2], x.shape[3], out.shape[2],
                                 out.shape[3])
    scratch = np.empty(hs * ws, x.dtype)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            _avgpool_plane(x[n, c], kernel, stride, pad, divide, out[n, c], scratch)


@jit
def _avgpool_backward_plane(doutp, kernel, stride, pad, divide, dxp, accumulate, g, scratch):
    h_, w_ = dxp.shape
    oh_, ow_ = doutp.shape
    g[:] = doutp
    if divide:
        _divide(g, stride, pad, kernel, h_, w_)
    small, hs, ws, _ = _small_window(kernel, stride, pad, h_, w_, oh_, ow_)
    if small:                                # spread into a bordered copy, then crop
        dst = scratch[:hs * ws].reshape(hs, ws)
        dst[:] = 0
        kh, kw, sh, sw = kernel[0], kernel[1], stride[0], stride[1]
        if kh == 2 and kw == 2:
            _spread_small(g, 2, 2, sh, sw, dst)
        elif kh == 3 and kw == 3:
            _spread_small(g, 3, 3, sh, sw, dst)
        elif kh == 2:
            _spread_small(g, 2, 3, sh, sw, dst)
        else:
            _spread_small(g, 3, 2, sh, sw, dst)
        for h in range(h_):                  # plain loops, see _bordered_copy
            src, row = dst[pad[0] + h, pad[2]:], dxp[h]
            if accumulate:
                for e in range(w_):
                    row[e] += src[e]
            else:
                for e in range(w_):
                    row[e] = src[e]
        return
    if not accumulate:
        dxp[:] = 0
    for oh in range(oh_):
        h0, h1, _ = _window(oh, stride[0], pad[0], kernel[0], h_, pad[1])
        for ow in range(ow_):
            w0, w1, _ = _window(ow, stride[1], pad[2], kernel[1], w_, pad[3])
            for h in range(h0, h1):
                row = dxp[h]
                for w in range(w0, w1):
                    row[w] += g[oh, ow]


@jit
def _avgpool_backward(dout, kernel, stride, pad, divide, dx, accumulate):
    _, hs, ws, _ = _small_window(kernel, stride, pad, dx.shape[2], dx.shape[3], dout.shape[2],
                                 dout.shape[3])
    scratch = np.empty(hs * ws, dx.dtype)
    g = np.empty(dout.shape[2:], np.float64)
    for n in range(dx.shape[0]):
        for c in range(dx.shape[1]):
            _avgpool_backward_plane(dout[n, c], kernel, stride, pad, divide, dx[n, c],
                                    accumulate, g, scratch)


def _threads(n, work):
    return 1 if work < _PARALLEL_WORK else min(num_threads(), n)


def _by_samples(fn, n, work, args_for, by_slot=False):
    """fn(*args_for(t, lo, hi)) over samples [lo, hi), on threads for big ``work`` (window reads):
    ``memory_pieces``' 2 or 4 pieces per thread (``by_slot``: the dynamic split's, t the
    thread's slot, for a per-thread scratch)."""
    threads = _threads(n, work)
    if by_slot or threads <= 1:
        run_split(fn, n, threads, args_for, dynamic=True)
    else:
        run_split(fn, n, threads, args_for, pieces=memory_pieces(n, threads, work))


# -- entry points (x, out, dx 4-D C-contiguous; see the package docstring) ---------------------


# Samples are split over threads for big tensors: x[lo:hi] is a C-contiguous view.


def maxpool2d_forward_into(x, kernel, stride, pad, out, argmax, relu=False):
    """``relu``: out = relu(maxpool(x)), which equals maxpool(relu(x)) bit for bit (a relu before
    the pooling fused into it; its backward then takes ``after_relu``)."""
    driver, work, small, args_for = _maxpool_forward_call(x, kernel, stride, pad, out, argmax, relu)
    _by_samples(driver, x.shape[0], work, args_for, small)


def maxpool2d_forward_step(x, kernel, stride, pad, out, argmax, relu=False):
    """``maxpool2d_forward_into`` with these arguments as a step for a thread of its own (a
    training share's layer): its one compiled call, bound once (``_jit.one_call``)."""
    driver, _, _, args_for = _maxpool_forward_call(x, kernel, stride, pad, out, argmax, relu)
    return one_call(driver, x.shape[0], args_for)


def _maxpool_forward_call(x, kernel, stride, pad, out, argmax, relu):
    """(driver, work, whether by slot, args_for) of a max pooling's forward, as ``_by_samples``
    takes them."""
    driver, args = _maxpool_driver(x, kernel, stride, pad, out)
    work, small = out.size * kernel[0] * kernel[1], driver is _maxpool_small_forward
    relu = bool(relu)                               # each plane's outputs, in the driver's call
    if small:                                       # a scratch plane per thread
        kernel, stride, pad, size = args
        scratch = np.empty((_threads(x.shape[0], work), size), x.dtype)
        args_for = lambda t, lo, hi: (x[lo:hi], kernel, stride, pad, out[lo:hi], argmax[lo:hi],  # noqa: E731
                                      scratch[t], relu)
    else:
        args_for = lambda t, lo, hi: (x[lo:hi], *args, out[lo:hi], argmax[lo:hi], relu)  # noqa: E731
    return driver, work, small, args_for


def maxpool2d_backward_into(dout, argmax, dx, accumulate=False, after_relu=None):
    """``after_relu``: the output of a forward with ``relu=True``; dx is then the gradient of the
    fused relu's input."""
    _by_samples(_maxpool_backward, dx.shape[0], dx.size,
                _maxpool_backward_args(dout, argmax, dx, accumulate, after_relu))


def maxpool2d_backward_step(dout, argmax, dx, accumulate=False, after_relu=None):
    """``maxpool2d_backward_into`` as a step, bound once (as ``maxpool2d_forward_step``)."""
    return one_call(_maxpool_backward, dx.shape[0],
                    _maxpool_backward_args(dout, argmax, dx, accumulate, after_relu))


def _maxpool_backward_args(dout, argmax, dx, accumulate, after_relu):
    y = dout if after_relu is None else after_relu
    return lambda t, lo, hi: (dout[lo:hi], argmax[lo:hi], dx[lo:hi], bool(accumulate), y[lo:hi],
                              after_relu is not None)


def _avgpool(x, kernel, stride, pad, divide, out):
    _by_samples(_avgpool_forward, x.shape[0], out.size * kernel[0] * kernel[1],
                lambda t, lo, hi: (x[lo:hi], kernel, stride, pad, divide, out[lo:hi]))


def _avgpool_grad(dout, kernel, stride, pad, divide, dx, accumulate):
    _by_samples(_avgpool_backward, dx.shape[0], dout.size * kernel[0] * kernel[1],
                lambda t, lo, hi: (dout[lo:hi], kernel, stride, pad, divide, dx[lo:hi],
                                   bool(accumulate)))


def avgpool2d_forward_into(x, kernel, stride, pad, out):
    _avgpool(x, kernel, stride, pad, True, out)


def avgpool2d_backward_into(dout, kernel, stride, pad, dx, accumulate=False):
    _avgpool_grad(dout, kernel, stride, pad, True, dx, accumulate)


def sumpool2d_forward_into(x, kernel, stride, pad, out):
    _avgpool(x, kernel, stride, pad, False, out)


def sumpool2d_backward_into(dout, kernel, stride, pad, dx, accumulate=False):
    _avgpool_grad(dout, kernel, stride, pad, False, dx, accumulate)


def _planes(a):
    """(N, C, *spatial) -> the 4-D view (N, C, 1, S) the pooling kernels take."""
    return a.reshape(a.shape[0], a.shape[1], 1, -1)


_WHOLE = (0, 0, 0, 0)


@jit
def _global_avg_forward(x, out):
    """out[n, c] = the mean of plane x[n, c] (N, C, 1, S): a vectorised float64 sum (the window
    loops of _avgpool_plane add one element per FP-add latency, 4x slower)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[n, c, 0, 0] = sum64(x[n, c, 0]) / x.shape[3]


@jit
def _global_avg_backward(dout, dx, accumulate):
    """dx[n, c, 0, :] (+)= dout[n, c] / S."""
    for n in range(dx.shape[0]):
        for c in range(dx.shape[1]):
            g = dout[n, c, 0, 0] / dx.shape[3]
            d = dx[n, c, 0]
            if accumulate:
                for e in range(d.size):
                    d[e] += g
            else:
                for e in range(d.size):
                    d[e] = g


def global_avgpool_forward_into(x, out):
    """out (N, C, 1[, 1]) = the mean of each plane of x (N, C, *spatial)."""
    x4, out4 = _planes(x), _planes(out)
    _by_samples(_global_avg_forward, x4.shape[0], x4.size,
                lambda t, lo, hi: (x4[lo:hi], out4[lo:hi]))


def global_avgpool_backward_into(dout, dx, accumulate=False):
    dout4, dx4 = _planes(dout), _planes(dx)
    _by_samples(_global_avg_backward, dx4.shape[0], dx4.size,
                lambda t, lo, hi: (dout4[lo:hi], dx4[lo:hi], bool(accumulate)))


def global_maxpool_forward_into(x, out, argmax):
    """out (N, C, 1[, 1]) = the max of each plane; argmax int64 (N, C): flat spatial index."""
    x4 = _planes(x)
    s = x4.shape[3]
    maxpool2d_forward_into(x4, (1, s), (1, s), _WHOLE, _planes(out), _planes(argmax))


def global_maxpool_backward_into(dout, argmax, dx, accumulate=False):
    maxpool2d_backward_into(_planes(dout), _planes(argmax), _planes(dx), accumulate)
