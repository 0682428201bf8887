"""conv_five.py: 5x5 stride-1 convolutions by Winograd F(4, 5) along the rows (forward and dx
with the samples in the vector lanes, dw with the filters in them; conv._use_c5), against the
float64 NumPy reference."""
import numpy as np
import pytest

from cnnspec import kernels as K
from cnnspec.kernels import conv
from cnnspec.kernels import reference as R
from cnnspec.kernels.conv import _Plan

rng = np.random.default_rng(55)

# max error / max |reference|, float64 reference: measured float32 4e-7 - 2e-6, dw up to 5e-6
# (the direct loops 1.4e-7 - 1e-6: the transforms' constants reach 21/4, 8 and 1/90); the
# kernels in float64 (not routed there) 2e-15 - 3e-15
TOL = {np.float32: 1e-5}

# (N, C, H, W, F, pad (t, b, l, r), bias): batches of 16+ samples (chunks of lanes)
CASES = [
    (33, 16, 14, 14, 32, (2, 2, 2, 2), True),    # the bench's row; 3 chunks, the last of 1 sample
    (17, 3, 9, 7, 6, (1, 2, 0, 3), True),        # rows of 9 (a tile with 1 output), uneven pad
    (16, 9, 5, 6, 13, (2, 2, 2, 2), False),      # rows of 6 (a tile with 2), F, C odd
    (20, 8, 11, 12, 16, (0, 0, 0, 0), True),     # no padding, rows of 7 (a tile with 3)
    (18, 5, 3, 3, 9, (4, 4, 4, 4), True),        # full padding: a 7x7 output of a 3x3 input
]


def scale_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("blocks", ["wide", "narrow"])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_c5_matches_reference(case, blocks, monkeypatch, dtype=np.float32):
    """Forward, dx and dw + db by conv_five (2 threads: the forward's and dx's chunks taken
    dynamically, dw's pieces summed in order) against the float64 reference; nothing written
    around out (a slice of a bigger array), dx accumulated, dw alone the same; the workspace
    starts NaN (the kernels clear what they read); in AVX-512's blocks and in AVX2's
    (``narrow``), on any machine.  float32 only: float64 takes the kernels before
    (conv._use_c5)."""
    n, c, h, w, f, pad, bias = case
    monkeypatch.setattr(conv, "_WIDE_VECTORS", blocks == "wide")
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_PARALLEL_MACS", 0)
    monkeypatch.setattr(conv, "_C5", True)
    monkeypatch.setenv("CNNSPEC_THREADS", "2")
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c, 5, 5)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    geometry = ((1, 1), pad, (1, 1), 1)
    plan = _Plan(x.shape, wt.shape, *geometry)
    assert None not in (plan.c5, plan.c5_dx, plan.c5_dw)
    assert plan.narrow == (blocks == "narrow")
    from cnnspec.kernels import conv_five
    calls = []
    monkeypatch.setattr(conv_five, "run",
                        lambda *a, run=conv_five.run: calls.append("run") or run(*a))
    monkeypatch.setattr(conv_five, "weight_grad",
                        lambda *a, grad=conv_five.weight_grad: calls.append("dw") or grad(*a))
    ws = np.full(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), np.nan, dtype)
    shape = K.conv2d_output_shape(x.shape, wt.shape, *geometry[:3])
    big = np.full((n + 2,) + tuple(shape[1:]), np.nan, dtype)
    big[0] = big[-1] = 7.0
    K.conv2d_forward_into(x, wt, b, *geometry, big[1:-1], ws)
    assert (big[0] == 7).all() and (big[-1] == 7).all()
    f64 = [None if a is None else a.astype(np.float64) for a in (x, wt, b)]
    assert scale_error(big[1:-1], R.conv2d_forward(*f64, *geometry)) < TOL[dtype]
    dout = rng.standard_normal(shape).astype(dtype)
    rdx, rdw, rdb = R.conv2d_backward(dout.astype(np.float64), *f64, *geometry)
    bigx = np.full((n + 2, c, h, w), 1.0, dtype)
    bigx[0] = bigx[-1] = 7.0
    dw, db = np.empty_like(wt), np.empty(f, dtype)
    K.conv2d_backward_into(dout, x, wt, *geometry, bigx[1:-1], dw, db if bias else None, ws,
                           accumulate=True)
    assert (bigx[0] == 7).all() and (bigx[-1] == 7).all()
    assert scale_error(bigx[1:-1] - 1, rdx) < TOL[dtype]
    assert scale_error(dw, rdw) < TOL[dtype]
    if bias:
        assert scale_error(db, rdb) < TOL[dtype]
    dw2 = np.empty_like(wt)
    K.conv2d_backward_into(dout, x, wt, *geometry, None, dw2, None, ws)
    assert np.array_equal(dw2, dw)
    # conv_five ran (a batch of one chunk, on 2 threads, takes the kernels before)
    assert calls == ([] if n <= 16 else ["run", "run", "dw", "dw"]), calls


def test_c5_narrow_blocks_give_the_same_bits(monkeypatch):
    """AVX2's blocks of the products (each half of the lanes alone, 3 tiles x 4 filters; dw 6 k
    x 16 filters) sum the same terms in the same order as AVX-512's: forward, dx and dw bit for
    bit."""
    monkeypatch.setattr(conv, "_DIRECT_ALL", True)
    monkeypatch.setattr(conv, "_C5", True)
    n, c, h, w, f, pad, _ = CASES[0]
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((f, c, 5, 5)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    geometry = ((1, 1), pad, (1, 1), 1)
    shape = K.conv2d_output_shape(x.shape, wt.shape, *geometry[:3])
    dout = rng.standard_normal(shape).astype(np.float32)
    results = []
    for wide in (True, False):
        monkeypatch.setattr(conv, "_WIDE_VECTORS", wide)
        ws = np.zeros(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), np.float32)
        out, dx, dw, db = (np.empty(shape, np.float32), np.empty_like(x), np.empty_like(wt),
                           np.empty_like(b))
        K.conv2d_forward_into(x, wt, b, *geometry, out, ws)
        K.conv2d_backward_into(dout, x, wt, *geometry, dx, dw, db, ws)
        results.append((out, dx, dw, db))
    for a, b2 in zip(*results):
        assert np.array_equal(a, b2)


def test_c5_error_is_near_the_direct_loops():
    """float32 on the bench's row: Winograd's error is within a few times the direct loops'
    (measured 1.6e-6 against 2-4e-7 of the output's scale)."""
    x = rng.standard_normal((16, 16, 14, 14)).astype(np.float32)
    wt = rng.standard_normal((32, 16, 5, 5)).astype(np.float32)
    geometry = ((1, 1), (2, 2, 2, 2), (1, 1), 1)
    ref = R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), None, *geometry)
    errors = {}
    for switch in (False, True):
        conv._C5 = switch
        try:
            ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, *geometry), np.float32)
            out = np.empty(ref.shape, np.float32)
            K.conv2d_forward_into(x, wt, None, *geometry, out, ws)
        finally:
            conv._C5 = None
        errors[switch] = scale_error(out, ref)
    assert errors[True] < 3e-6 and errors[True] < 20 * errors[False], errors


def test_c5_rules(monkeypatch):
    """Where the rules put conv_five: 5x5 stride 1, batch >= 16; the forward from 8 channels or
    32 filters, dx from 8 channels and 8 filters, dw from 8 channels and 16 filters (AVX2: 32);
    not LeNet-5's layers (their first step's compile), small batches, 3x3, strides or
    dilations.  The rules of an AVX-512 machine and of an AVX2 one, whatever this one has
    (plans are made, not run)."""
    monkeypatch.setattr(conv, "_WIDE_VECTORS", True)

    def plan(x, w, s=1, p=2, d=1):
        p = _Plan(x, w, (s, s), (p,) * 4, (d, d), 1)
        return p.c5 is not None, p.c5_dx is not None, p.c5_dw is not None
    assert plan((64, 16, 14, 14), (32, 16, 5, 5)) == (True, True, True)     # the bench's row
    assert plan((64, 32, 28, 28), (32, 32, 5, 5)) == (True, True, True)
    assert plan((32, 16, 28, 28), (16, 16, 5, 5)) == (True, True, True)
    assert plan((64, 8, 14, 14), (8, 8, 5, 5)) == (True, True, False)       # dw: 8 filters
    assert plan((64, 3, 32, 32), (32, 3, 5, 5)) == (True, False, False)     # 3 channels
    for x, w, s, pad, d in (((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1),    # LeNet-5's conv2
                            ((64, 1, 32, 32), (6, 1, 5, 5), 1, 0, 1),     # and conv1
                            ((8, 16, 14, 14), (32, 16, 5, 5), 1, 2, 1),   # 8 samples
                            ((64, 16, 14, 14), (32, 16, 3, 3), 1, 1, 1),
                            ((64, 16, 28, 28), (32, 16, 5, 5), 2, 2, 1),
                            ((64, 16, 28, 28), (32, 16, 5, 5), 1, 4, 2),
                            ((64, 64, 56, 56), (64, 64, 5, 5), 1, 2, 1)):  # slice too big
        assert plan(x, w, s, pad, d) == (False, False, False), (x, w, s, pad, d)
    # without AVX-512 the same, but dw from 32 filters (AVX2's blocks of 16 read dM padded to 32)
    monkeypatch.setattr(conv, "_WIDE_VECTORS", False)
    assert plan((64, 16, 14, 14), (32, 16, 5, 5)) == (True, True, True)     # the bench's row
    assert plan((64, 32, 28, 28), (32, 32, 5, 5)) == (True, True, True)
    assert plan((32, 16, 28, 28), (16, 16, 5, 5)) == (True, True, False)    # dw: 16 filters
    assert plan((64, 8, 14, 14), (8, 8, 5, 5)) == (True, True, False)
    assert plan((64, 3, 32, 32), (32, 3, 5, 5)) == (True, False, False)
    assert plan((64, 6, 14, 14), (16, 6, 5, 5), 1, 0) == (False, False, False)   # LeNet-5's
