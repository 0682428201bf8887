"""The kernels of dsl.md §10's layers against torch.nn.functional and autograd (skipped where
PyTorch is not installed)."""
import numpy as np
import pytest

from cnnspec import kernels as K

torch = pytest.importorskip("torch")
F = torch.nn.functional

from test_kernels_torch import DTYPES, TOL, close, tensor  # noqa: E402

rng = np.random.default_rng(11)


def randn(*shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# (N, C, H, W, F, KH, KW, stride, padding, output_padding, dilation, groups): torch pads
# symmetrically; every option, and output_padding >= stride (allowed below the dilation)
CONVT = [
    (2, 8, 4, 4, 16, 4, 4, (2, 2), (1, 1), (0, 0), (1, 1), 1),          # DCGAN
    (2, 4, 7, 7, 3, 3, 3, (2, 2), (1, 1), (1, 1), (1, 1), 1),           # auto-encoder
    (1, 6, 3, 5, 4, 3, 2, (3, 2), (0, 1), (2, 1), (1, 1), 2),
    (2, 4, 5, 4, 4, 3, 3, (1, 2), (2, 1), (0, 1), (2, 1), 4),           # depthwise-transposed
    (2, 3, 4, 3, 5, 2, 3, (1, 1), (0, 0), (1, 1), (2, 3), 1),           # op >= stride
    (1, 2, 3, 3, 2, 1, 1, (2, 2), (0, 0), (1, 1), (1, 1), 1),
    (2, 32, 3, 4, 32, 3, 3, (2, 1), (1, 0), (1, 0), (1, 2), 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONVT, ids=str)
def test_conv_transpose2d_matches_torch(case, dtype):
    n, c, h, w, f, kh, kw, stride, padding, op, dil, groups = case
    x, wt = randn(n, c, h, w, dtype=dtype), randn(c, f // groups, kh, kw, dtype=dtype)
    b = randn(f, dtype=dtype)
    pad = (padding[0], padding[0], padding[1], padding[1])
    tx, tw, tb = tensor(x), tensor(wt), tensor(b)
    ref = F.conv_transpose2d(tx, tw, tb, stride, padding, op, groups, dil)
    shape = K.conv_transpose2d_output_shape(x.shape, wt.shape, stride, pad, op, dil, groups)
    assert tuple(ref.shape) == shape
    ws = np.empty(K.conv_transpose2d_workspace_size(x.shape, wt.shape, stride, pad, op, dil,
                                                    groups), dtype)
    out = np.empty(shape, dtype)
    K.conv_transpose2d_forward_into(x, wt, b, stride, pad, op, dil, groups, out, ws)
    close(out, ref, dtype)
    dout = randn(*shape, dtype=dtype)
    ref.backward(torch.from_numpy(dout))
    dx, dw, db = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    K.conv_transpose2d_backward_into(dout, x, wt, stride, pad, op, dil, groups, dx, dw, db, ws)
    close(dx, tx.grad, dtype)
    close(dw, tw.grad, dtype)
    close(db, tb.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose1d_matches_torch(dtype):
    x, w, b = randn(3, 4, 9, dtype=dtype), randn(4, 3, 5, dtype=dtype), randn(6, dtype=dtype)
    tx, tw, tb = tensor(x), tensor(w), tensor(b)
    ref = F.conv_transpose1d(tx, tw, tb, stride=3, padding=2, output_padding=1, groups=2,
                             dilation=2)
    x4, w4 = x[:, :, None, :], w[:, :, None, :]
    geometry = ((1, 3), (0, 0, 2, 2), (0, 1), (1, 2), 2)
    out = np.empty(K.conv_transpose2d_output_shape(x4.shape, w4.shape, *geometry), dtype)
    ws = np.empty(K.conv_transpose2d_workspace_size(x4.shape, w4.shape, *geometry), dtype)
    K.conv_transpose2d_forward_into(x4, w4, b, *geometry, out, ws)
    close(out[:, :, 0], ref, dtype)
    dout = randn(*ref.shape, dtype=dtype)
    ref.backward(torch.from_numpy(dout))
    dx, dw, db = np.empty_like(x4), np.empty_like(w4), np.empty_like(b)
    K.conv_transpose2d_backward_into(dout[:, :, None], x4, w4, *geometry, dx, dw, db, ws)
    close(dx[:, :, 0], tx.grad, dtype)
    close(dw[:, :, 0], tw.grad, dtype)
    close(db, tb.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [(2, 6, 9, 9, 1, 3, (1, 1)), (2, 5, 10, 9, 1, 3, (2, 2)),
                                  (1, 4, 11, 11, 1, 5, (2, 2)), (2, 3, 7, 8, 2, 3, (1, 2))],
                         ids=str)
def test_depthwise_matches_torch(case, dtype):
    n, c, h, w, m, k, stride = case
    x, wt, b = randn(n, c, h, w, dtype=dtype), randn(c * m, 1, k, k, dtype=dtype), randn(c * m,
                                                                                       dtype=dtype)
    pad = (k // 2,) * 4
    tx, tw, tb = tensor(x), tensor(wt), tensor(b)
    ref = F.conv2d(tx, tw, tb, stride, k // 2, 1, c)
    out = np.empty(tuple(ref.shape), dtype)
    ws = np.empty(K.conv2d_workspace_size(x.shape, wt.shape, stride, pad, (1, 1), c), dtype)
    K.conv2d_forward_into(x, wt, b, stride, pad, (1, 1), c, out, ws)
    close(out, ref, dtype)
    dout = randn(*out.shape, dtype=dtype)
    ref.backward(torch.from_numpy(dout))
    dx, dw, db = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    K.conv2d_backward_into(dout, x, wt, stride, pad, (1, 1), c, dx, dw, db, ws)
    close(dx, tx.grad, dtype)
    close(dw, tw.grad, dtype)
    close(db, tb.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [((2, 3, 4, 5), (2, 2)), ((1, 2, 3, 7), (3, 2)),
                                  ((2, 2, 5, 1), (2, 4)), ((1, 3, 2, 3), (1, 3))], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsample_matches_torch(case, mode, dtype):
    shape, scale = case
    x = randn(*shape, dtype=dtype)
    tx = tensor(x)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    ref = F.interpolate(tx, scale_factor=scale, mode=mode, **kwargs)
    out = np.empty(tuple(ref.shape), dtype)
    K.upsample2d_forward_into(x, scale, mode, out)
    close(out, ref, dtype)
    dout = randn(*out.shape, dtype=dtype)
    ref.backward(torch.from_numpy(dout))
    dx = np.empty_like(x)
    K.upsample2d_backward_into(dout, scale, mode, dx)
    close(dx, tx.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_upsampling_1d_matches_torch(dtype):
    x = randn(2, 3, 7, dtype=dtype)
    tx = tensor(x)
    ref = F.interpolate(tx, scale_factor=3, mode="linear", align_corners=False)
    out = np.empty((2, 3, 1, 21), dtype)
    K.upsample2d_forward_into(x[:, :, None], (1, 3), "linear", out)
    close(out[:, :, 0], ref, dtype)
    dout = randn(2, 3, 21, dtype=dtype)
    ref.backward(torch.from_numpy(dout))
    dx = np.empty((2, 3, 1, 7), dtype)
    K.upsample2d_backward_into(dout[:, :, None], (1, 3), "linear", dx)
    close(dx[:, :, 0], tx.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [((2, 3, 8, 8), (4, 4)), ((2, 2, 7, 10), (3, 4)),
                                  ((1, 3, 5, 5), (7, 3)), ((2, 2, 9, 6), (1, 1))], ids=str)
def test_adaptive_pooling_matches_torch(case, dtype):
    shape, size = case
    x = randn(*shape, dtype=dtype)
    dout = randn(*shape[:2], *size, dtype=dtype)
    tx = tensor(x)
    ref = F.adaptive_avg_pool2d(tx, size)
    out = np.empty(tuple(ref.shape), dtype)
    K.adaptive_avgpool2d_forward_into(x, out)
    close(out, ref, dtype)
    ref.backward(torch.from_numpy(dout))
    dx = np.empty_like(x)
    K.adaptive_avgpool2d_backward_into(dout, dx)
    close(dx, tx.grad, dtype)

    tx = tensor(x)
    ref, index = F.adaptive_max_pool2d(tx, size, return_indices=True)
    arg = np.empty(out.shape, np.int64)
    K.adaptive_maxpool2d_forward_into(x, out, arg)
    close(out, ref, dtype)
    np.testing.assert_array_equal(arg, index.numpy())
    ref.backward(torch.from_numpy(dout))
    K.adaptive_maxpool2d_backward_into(dout, arg, dx)
    close(dx, tx.grad, dtype)


# -- activations: values, gradients at the kinks and thresholds, NaN --------------------------------

ACTIVATIONS = {
    "relu6": (F.relu6, K.relu6_forward_into, K.relu6_backward_into),
    "hardswish": (F.hardswish, K.hardswish_forward_into, K.hardswish_backward_into),
    "hardsigmoid": (F.hardsigmoid, K.hardsigmoid_forward_into, K.hardsigmoid_backward_into),
    "silu": (F.silu, K.silu_forward_into, K.silu_backward_into),
    "gelu": (F.gelu, K.gelu_forward_into, K.gelu_backward_into),
    "softplus": (F.softplus, K.softplus_forward_into, K.softplus_backward_into),
    "elu": (lambda t: F.elu(t, 0.7), lambda x, o: K.elu_forward_into(x, 0.7, o),
            lambda g, x, d: K.elu_backward_into(g, x, 0.7, d)),
}
# kinks, thresholds, saturation, infinities; 64 values so that they fall in torch's vectorised
# loops (its scalar loop for a tensor's last elements treats NaN differently, see pointwise.py)
SPECIAL = [0.0, -3.0, 3.0, 6.0, -6.0, 20.0, 20.5, 19.5, -20.0, 40.0, -40.0, 1e-3, -1e-3,
           -2.999, 2.999, 5.999, np.inf, -np.inf, np.nan, -1e4, 1e4, 88.0, -88.0, 100.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_torch(name, dtype):
    tf, fwd, bwd = ACTIVATIONS[name]
    x = (rng.standard_normal(64) * 5).astype(dtype)
    x[:len(SPECIAL)] = SPECIAL
    dout = randn(64, dtype=dtype)
    tx = tensor(x)
    ref = tf(tx)
    ref.backward(torch.from_numpy(dout))
    out, dx = np.empty_like(x), np.empty_like(x)
    fwd(x, out)
    bwd(dout, x, dx)
    want_out, want_dx = ref.detach().numpy().copy(), tx.grad.numpy().copy()
    # At +-inf PyTorch's float32 vector loops depend on the CPU: gelu(inf) is inf with AVX2 and
    # NaN with AVX-512 (its erf approximation); float64 (and mathematics) say inf. There, float64 decides.
    infinite = np.isinf(x)
    t64 = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    tf(t64).backward(torch.from_numpy(dout.astype(np.float64)))
    want_out[infinite] = tf(t64).detach().numpy()[infinite]
    want_dx[infinite] = t64.grad.numpy()[infinite]
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want_out), err_msg="forward NaN")
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(want_dx), err_msg="gradient NaN")
    np.testing.assert_array_equal(np.isinf(out), np.isinf(want_out), err_msg="forward inf")
    finite = np.isfinite(want_out) & np.isfinite(want_dx)
    close(out[finite], want_out[finite], dtype)
    close(dx[finite], want_dx[finite], dtype)
    if name in ("relu6", "hardswish", "hardsigmoid", "elu"):   # PyTorch's choice at the kinks
        kinks = np.isin(x, [0.0, -3.0, 3.0, 6.0])
        np.testing.assert_array_equal(dx[kinks], want_dx[kinks])


# -- gate, droppath, sample/KL by autograd, losses ---------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_gate_matches_torch(dtype):
    x, gate, dout = randn(2, 4, 5, 6, dtype=dtype), randn(2, 4, 1, 1, dtype=dtype), randn(
        2, 4, 5, 6, dtype=dtype)
    tx, tg = tensor(x), tensor(gate)
    ref = tx * tg
    ref.backward(torch.from_numpy(dout))
    out, dx, dg = np.empty_like(x), np.empty_like(x), np.empty_like(gate)
    K.gate_forward_into(x, gate, out)
    K.gate_backward_into(dout, x, gate, dx, dg)
    close(out, ref, dtype)
    close(dx, tx.grad, dtype)
    close(dg, tg.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_shuffle_matches_torch(dtype):
    x = randn(2, 12, 3, 3, dtype=dtype)
    out = np.empty_like(x)
    K.channel_shuffle_forward_into(x, 3, out)
    close(out, F.channel_shuffle(torch.from_numpy(x), 3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_droppath_matches_torchvision_rule(dtype):
    # torchvision.ops.stochastic_depth(mode="row"): noise = bernoulli(1 - p) / (1 - p); x * noise
    x, keep, p = randn(4, 3, 5, dtype=dtype), np.array([1, 0, 1, 1], bool), 0.2
    noise = torch.from_numpy(keep.astype(dtype)).reshape(4, 1, 1).div_(1 - p)
    out = np.empty_like(x)
    K.droppath_forward_into(x, keep, p, out)
    close(out, torch.from_numpy(x) * noise, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vae_sample_and_kl_match_autograd(dtype):
    mu, logvar, eps = randn(5, 6, dtype=dtype), randn(5, 6, dtype=dtype), randn(5, 6, dtype=dtype)
    dz, beta = randn(5, 6, dtype=dtype), 0.8
    tmu, tlv = tensor(mu), tensor(logvar)
    z = tmu + torch.exp(0.5 * tlv) * torch.from_numpy(eps)
    kl = -0.5 * torch.sum(1 + tlv - tmu.pow(2) - tlv.exp(), dim=1).mean()
    ((z * torch.from_numpy(dz)).sum() + beta * kl).backward()
    out = np.empty_like(mu)
    got = K.vae_sample_forward_into(mu, logvar, eps, out)
    close(out, z, dtype)
    assert abs(got - kl.item()) <= TOL[dtype] * abs(kl.item())
    dmu, dlv = np.empty_like(mu), np.empty_like(mu)
    K.vae_sample_backward_into(dz, beta, mu, logvar, eps, dmu, dlv)
    close(dmu, tmu.grad, dtype)
    close(dlv, tlv.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_match_torch(dtype):
    p = rng.uniform(0, 1, (6, 7)).astype(dtype)
    p[0, :4] = [0.0, 1.0, 1e-30, 1 - 1e-7]                 # logs clamped at -100
    t = rng.uniform(0, 1, (6, 7)).astype(dtype)
    t[1, :2] = [0.0, 1.0]
    z = randn(6, 7, dtype=dtype) * dtype(3)
    z[0, :4] = [1e4, -1e4, 50.0, -50.0]                     # stable for |logits| up to 1e4
    for kernel, tf, arg in [(K.bce_loss_into, F.binary_cross_entropy, p),
                            (K.sigmoid_bce_into, F.binary_cross_entropy_with_logits, z),
                            (K.l1_loss_into, F.l1_loss, p)]:
        targ = p.copy() if kernel is K.l1_loss_into else t
        if kernel is K.l1_loss_into:
            targ[2, :3] = arg[2, :3]                        # zero differences: gradient 0
        ta = tensor(arg)
        ref = tf(ta, torch.from_numpy(targ))
        ref.backward()
        d = np.empty_like(arg)
        loss = kernel(arg, targ, d)
        assert np.isfinite(loss)
        assert abs(loss - ref.item()) <= TOL[dtype] * max(1.0, abs(ref.item())), kernel
        close(d, ta.grad, dtype)
