"""The kernels against torch.nn.functional (skipped where PyTorch is not installed)."""
import numpy as np
import pytest

from cnnspec import kernels as K
from cnnspec.kernels import reference as R

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-9, np.float32: 1e-4}
rng = np.random.default_rng(99)


def error(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if dtype == np.float64:
        return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
    return float(np.max(np.abs(a - b)) / max(1e-8, np.max(np.abs(a) + np.abs(b))))


def close(a, b, dtype):
    if isinstance(b, torch.Tensor):
        b = b.detach().numpy()
    assert error(a, b, dtype) < TOL[dtype]


def tensor(a, grad=True):
    return torch.from_numpy(a.copy()).requires_grad_(grad)


# (N, C, H, W, F, KH, KW, stride, pad (t, b, l, r), dilation, groups)
CONV = [
    (2, 3, 9, 8, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (2, 4, 9, 8, 6, 3, 2, (2, 1), (0, 2, 1, 0), (1, 1), 2),
    (2, 32, 8, 8, 32, 3, 3, (1, 1), (1, 1, 1, 1), (2, 2), 2),
    (3, 16, 7, 7, 8, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (1, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (2, 3, 11, 13, 4, 5, 3, (3, 2), (2, 1, 0, 3), (1, 2), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV, ids=str)
def test_conv2d_matches_torch(case, dtype):
    n, c, h, w, f, kh, kw, stride, pad, dil, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    shape = K.conv2d_output_shape(x.shape, wt.shape, stride, pad, dil)
    ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, stride, pad, dil, groups), dtype)
    out = np.empty(shape, dtype)
    K.conv2d_forward_into(x, wt, b, stride, pad, dil, groups, out, ws)
    tx, tw, tb = tensor(x), tensor(wt), tensor(b)
    ref = F.conv2d(F.pad(tx, (pad[2], pad[3], pad[0], pad[1])), tw, tb, stride=stride,
                   dilation=dil, groups=groups)
    close(out, ref, dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    ref.backward(torch.from_numpy(dout))
    dx, dw, db = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    K.conv2d_backward_into(dout, x, wt, stride, pad, dil, groups, dx, dw, db, ws)
    close(dx, tx.grad, dtype)
    close(dw, tw.grad, dtype)
    close(db, tb.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_matches_torch(dtype):
    x = rng.standard_normal((3, 5, 20)).astype(dtype)
    w = rng.standard_normal((7, 5, 3)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    out = R.conv1d_forward(x, w, b, 2, (1, 2), dilation=2)
    ref = F.conv1d(F.pad(tensor(x), (1, 2)), tensor(w), tensor(b), stride=2, dilation=2)
    close(out, ref, dtype)
    # the kernels run 1-D as 2-D with H = 1
    x4, w4 = x[:, :, None, :], w[:, :, None, :]
    shape = K.conv2d_output_shape(x4.shape, w4.shape, (1, 2), (0, 0, 1, 2), (1, 2))
    o = np.empty(shape, dtype)
    ws = np.empty(K.conv2d_workspace_size(x4.shape, w4.shape, (1, 2), (0, 0, 1, 2), (1, 2)),
                  dtype)
    K.conv2d_forward_into(x4, w4, b, (1, 2), (0, 0, 1, 2), (1, 2), 1, o, ws)
    close(o[:, :, 0, :], ref, dtype)


# (N, C, H, W, kernel, stride, pad (symmetric, as PyTorch), ceil)
POOLS = [
    (2, 3, 7, 9, (3, 3), (2, 2), (1, 1), True),
    (2, 2, 8, 8, (2, 2), (2, 2), (0, 0), False),
    (1, 2, 10, 7, (4, 3), (3, 2), (2, 1), True),
    (2, 1, 6, 6, (3, 3), (3, 3), (1, 1), True),
    (1, 3, 5, 11, (2, 3), (2, 2), (1, 0), True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOLS, ids=str)
def test_pooling_matches_torch(case, dtype):
    n, c, h, w, k, s, p, ceil = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    pad = (p[0], p[0], p[1], p[1])
    shape = (n, c, R.pool_output_size(h, k[0], s[0], p[0], p[0], ceil),
             R.pool_output_size(w, k[1], s[1], p[1], p[1], ceil))
    dout = rng.standard_normal(shape).astype(dtype)

    tx = tensor(x)
    ref = F.max_pool2d(tx, k, s, p, ceil_mode=ceil)
    assert tuple(ref.shape) == shape
    out, arg = np.empty(shape, dtype), np.empty(shape, np.int64)
    K.maxpool2d_forward_into(x, k, s, pad, out, arg)
    close(out, ref, dtype)
    ref.backward(torch.from_numpy(dout))
    dx = np.empty_like(x)
    K.maxpool2d_backward_into(dout, arg, dx)
    close(dx, tx.grad, dtype)

    tx = tensor(x)
    ref = F.avg_pool2d(tx, k, s, p, ceil_mode=ceil, count_include_pad=True)
    out = np.empty(shape, dtype)
    K.avgpool2d_forward_into(x, k, s, pad, out)
    close(out, ref, dtype)
    ref.backward(torch.from_numpy(dout))
    K.avgpool2d_backward_into(dout, k, s, pad, dx)
    close(dx, tx.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 6), (4, 3, 5, 6), (3, 4, 9)], ids=str)
def test_batchnorm_matches_torch(shape, dtype):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 5).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    tx, tg, tb = tensor(x), tensor(gamma), tensor(beta)
    ref = F.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=0.1, eps=1e-5)
    out, mean, invstd = np.empty_like(x), np.empty(c), np.empty(c)
    K.batchnorm_forward_train_into(x, gamma, beta, 1e-5, 0.1, rm, rv, out, mean, invstd)
    close(out, ref, dtype)
    close(rm, trm, dtype)
    close(rv, trv, dtype)                      # unbiased variance in the running average
    dout = rng.standard_normal(shape).astype(dtype)
    ref.backward(torch.from_numpy(dout))
    dx, dg, db = np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
    K.batchnorm_backward_into(dout, x, gamma, mean, invstd, dx, dg, db)
    close(dx, tx.grad, dtype)
    close(dg, tg.grad, dtype)
    close(db, tb.grad, dtype)

    ref = F.batch_norm(torch.from_numpy(x), trm, trv, tg, tb, training=False, eps=1e-5)
    K.batchnorm_forward_eval_into(x, gamma, beta, 1e-5, rm, rv, out)
    close(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_and_losses_match_torch(dtype):
    x = (rng.standard_normal((6, 10)) * 4).astype(dtype)
    dout = rng.standard_normal((6, 10)).astype(dtype)
    for fwd, bwd, tf, from_output in [
            (K.relu_forward_into, K.relu_backward_into, F.relu, True),
            (K.sigmoid_forward_into, K.sigmoid_backward_into, torch.sigmoid, True),
            (K.tanh_forward_into, K.tanh_backward_into, torch.tanh, True),
            (K.softmax_forward_into, K.softmax_backward_into, lambda t: F.softmax(t, 1), True),
            (lambda a, o: K.leaky_relu_forward_into(a, 0.1, o),
             lambda g, a, d: K.leaky_relu_backward_into(g, a, 0.1, d),
             lambda t: F.leaky_relu(t, 0.1), False)]:
        tx = tensor(x)
        ref = tf(tx)
        out, dx = np.empty_like(x), np.empty_like(x)
        fwd(x, out)
        close(out, ref, dtype)
        ref.backward(torch.from_numpy(dout))
        # from PyTorch's own output: a last-bit difference of the forwards (sigmoid(16) is
        # 1 - 1e-7) would be magnified a billion times in 1 - y, and tell nothing of the backward
        bwd(dout, ref.detach().numpy() if from_output else x, dx)
        close(dx, tx.grad, dtype)

    z = (rng.standard_normal((6, 10)) * 1e4).astype(dtype)
    y = rng.integers(0, 10, 6)
    tz = tensor(z)
    ref = F.cross_entropy(tz, torch.from_numpy(y))
    ref.backward()
    d = np.empty_like(z)
    loss = K.softmax_cross_entropy_into(z, y, d)
    assert abs(loss - ref.item()) <= TOL[dtype] * abs(ref.item())
    close(d, tz.grad, dtype)

    t = rng.standard_normal((6, 10)).astype(dtype)
    tx = tensor(x)
    ref = F.mse_loss(tx, torch.from_numpy(t))
    ref.backward()
    loss = K.mse_loss_into(x, t, d)
    assert abs(loss - ref.item()) <= TOL[dtype] * ref.item()
    close(d, tx.grad, dtype)
