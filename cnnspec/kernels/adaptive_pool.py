"""Adaptive average and max pooling (PyTorch's ``adaptive_avg_pool2d``/``adaptive_max_pool2d``),
forward and backward; 1-D runs with H = 1.  The output size is the ``out`` buffer's.

Output (oh, ow) pools the window of rows [floor(oh*H/OH), ceil((oh+1)*H/OH)) and columns
[floor(ow*W/OW), ceil((ow+1)*W/OW)): windows of uneven sizes that may overlap when OH does not
divide H.
* avg: the window's mean (summed in float64); its gradient spreads dout / window size over it.
* max: the first maximum in row-major order (NaN propagates, as in PyTorch); ``argmax`` holds the
  flat index h*W + w of the winner, the convention of ``maxpool2d``, whose backward
  (``maxpool2d_backward_into``) routes the gradient.
"""
from cnnspec.kernels._jit import jit, num_threads, run_split
from cnnspec.kernels.pool import _take, maxpool2d_backward_into

_PARALLEL_WORK = 1 << 19          # input reads below which one thread is faster


@jit
def _start(i, n_in, n_out):
    return (i * n_in) // n_out


@jit
def _end(i, n_in, n_out):
    return ((i + 1) * n_in + n_out - 1) // n_out


@jit
def _avg_forward(x, out):
    n_, c_, h_, w_ = x.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    for n in range(n_):
        for c in range(c_):
            xp, op = x[n, c], out[n, c]
            for oh in range(oh_):
                h0, h1 = _start(oh, h_, oh_), _end(oh, h_, oh_)
                for ow in range(ow_):
                    w0, w1 = _start(ow, w_, ow_), _end(ow, w_, ow_)
                    s = 0.0
                    for h in range(h0, h1):
                        row = xp[h]
                        for w in range(w0, w1):
                            s += row[w]
                    op[oh, ow] = s / ((h1 - h0) * (w1 - w0))


@jit
def _avg_backward(dout, dx, accumulate):
    n_, c_, h_, w_ = dx.shape
    oh_, ow_ = dout.shape[2], dout.shape[3]
    for n in range(n_):
        for c in range(c_):
            gp, dp = dout[n, c], dx[n, c]
            if not accumulate:
                flat = dp.reshape(dp.size)
                for e in range(flat.size):
                    flat[e] = 0
            for oh in range(oh_):
                h0, h1 = _start(oh, h_, oh_), _end(oh, h_, oh_)
                for ow in range(ow_):
                    w0, w1 = _start(ow, w_, ow_), _end(ow, w_, ow_)
                    g = gp[oh, ow] / ((h1 - h0) * (w1 - w0))
                    for h in range(h0, h1):
                        row = dp[h]
                        for w in range(w0, w1):
                            row[w] += g


@jit
def _max_forward(x, out, argmax):
    n_, c_, h_, w_ = x.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    for n in range(n_):
        for c in range(c_):
            xp, op, ap = x[n, c], out[n, c], argmax[n, c]
            for oh in range(oh_):
                h0, h1 = _start(oh, h_, oh_), _end(oh, h_, oh_)
                for ow in range(ow_):
                    w0, w1 = _start(ow, w_, ow_), _end(ow, w_, ow_)
                    best = xp[h0, w0]
                    arg = h0 * w_ + w0
                    for h in range(h0, h1):
                        row = xp[h]
                        for w in range(w0, w1):
                            v = row[w]
                            t = _take(v, best)
                            best = v if t else best
                            arg = h * w_ + w if t else arg
                    op[oh, ow] = best
                    ap[oh, ow] = arg


def _threads(n, work):
    return 1 if work < _PARALLEL_WORK else min(num_threads(), n)


def adaptive_avgpool2d_forward_into(x, out):
    """out (N, C, OH, OW) = the means of x (N, C, H, W) over PyTorch's adaptive windows."""
    run_split(_avg_forward, x.shape[0], _threads(x.shape[0], x.size),
              lambda t, lo, hi: (x[lo:hi], out[lo:hi]), dynamic=True)


def adaptive_avgpool2d_backward_into(dout, dx, accumulate=False):
    run_split(_avg_backward, dx.shape[0], _threads(dx.shape[0], dx.size),
              lambda t, lo, hi: (dout[lo:hi], dx[lo:hi], bool(accumulate)), dynamic=True)


def adaptive_maxpool2d_forward_into(x, out, argmax):
    """out (N, C, OH, OW) = the maxima over the adaptive windows; argmax int64 (N, C, OH, OW):
    the flat index h*W + w of each window's first maximum."""
    run_split(_max_forward, x.shape[0], _threads(x.shape[0], x.size),
              lambda t, lo, hi: (x[lo:hi], out[lo:hi], argmax[lo:hi]), dynamic=True)


def adaptive_maxpool2d_backward_into(dout, argmax, dx, accumulate=False):
    """dx (+)= dout routed to each window's first maximum (maxpool2d's backward)."""
    maxpool2d_backward_into(dout, argmax, dx, accumulate)
