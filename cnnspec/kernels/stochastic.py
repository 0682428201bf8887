"""The layers that take their noise from the caller, forward and backward: droppath's per-sample
keep-mask and the VAE's sample (the engine draws both from the model's seeded generator, the
layer API takes them as arguments, so every function stays deterministic).

* droppath (stochastic depth, torchvision's ``stochastic_depth(mode="row")``): sample n of x is
  kept and scaled by 1/(1 - p), or zeroed: out[n] = x[n] * keep[n] * (1/(1 - p)), the scale
  rounded in x's dtype first as torchvision's ``noise.div_(survival_rate)`` does.
* sample (the reparameterisation trick), mu, logvar, eps of one shape (N, D...):
      z = mu + exp(logvar/2) * eps
      kl = mean over the batch of sum over the features of -(1 + logvar - mu^2 - exp(logvar))/2
  backward, for upstream gradients dz (of z) and dkl (of kl, a number):
      dmu     = dz + dkl * mu / N
      dlogvar = dz * eps * exp(logvar/2) / 2 + dkl * (exp(logvar) - 1) / (2N)
"""
import numpy as np

from cnnspec.kernels._jit import jit
from cnnspec.kernels.activation import _flat


@jit
def _droppath(x, keep, scale, out, accumulate):
    """out[n] (+)= x[n] * scale where keep[n], else 0 (out[n] untouched when accumulating);
    x, out (N, S)."""
    for n in range(x.shape[0]):
        src, dst = x[n], out[n]
        if keep[n]:
            if accumulate:
                for e in range(dst.size):
                    dst[e] += src[e] * scale
            else:
                for e in range(dst.size):
                    dst[e] = src[e] * scale
        elif not accumulate:
            for e in range(dst.size):
                dst[e] = 0


@jit
def _sample_forward(mu, logvar, eps, z):
    """z = mu + exp(logvar/2) * eps; returns the KL summed over everything (float64)."""
    total = 0.0
    for i in range(z.size):
        lv = logvar[i]
        z[i] = mu[i] + np.exp(lv / 2) * eps[i]
        total += 1.0 + lv - np.float64(mu[i]) * mu[i] - np.exp(np.float64(lv))
    return -0.5 * total


@jit
def _sample_backward(dz, dkl_n, mu, logvar, eps, dmu, dlogvar, need_dz, need_mu, need_logvar,
                     acc_mu, acc_logvar):
    """dkl_n = dkl / N (float64)."""
    for i in range(mu.size):
        g = dz[i] if need_dz else 0.0
        lv = logvar[i]
        if need_mu:
            d = g + dkl_n * mu[i]
            dmu[i] = dmu[i] + d if acc_mu else d
        if need_logvar:
            d = g * eps[i] * np.exp(lv / 2) / 2 + dkl_n * (np.exp(np.float64(lv)) - 1) / 2
            dlogvar[i] = dlogvar[i] + d if acc_logvar else d


def _rows(a):
    return a.reshape(a.shape[0], -1)


def _scale(dtype, p):
    t = np.dtype(dtype).type
    return t(1) / t(1 - p)


def droppath_forward_into(x, keep, p, out):
    """out (N, ...) = x[n] * 1/(1 - p) for the samples n with keep[n] (bool (N,)), else 0."""
    _droppath(_rows(x), keep, _scale(x.dtype, p), _rows(out), False)


def droppath_backward_into(dout, keep, p, dx, accumulate=False):
    _droppath(_rows(dout), keep, _scale(dout.dtype, p), _rows(dx), bool(accumulate))


def vae_sample_forward_into(mu, logvar, eps, z):
    """z (N, ...) = mu + exp(logvar/2) * eps; returns kl (float): the KL divergence of
    N(mu, exp(logvar)) from N(0, 1), summed over the features, averaged over the batch."""
    return float(_sample_forward(_flat(mu), _flat(logvar), _flat(eps), _flat(z))) / mu.shape[0]


def vae_sample_backward_into(dz, dkl, mu, logvar, eps, dmu, dlogvar, accumulate_mu=False,
                             accumulate_logvar=False):
    """dmu (+)= dL/dmu, dlogvar (+)= dL/dlogvar for the gradient dz of z (None: 0) and dkl of
    the KL term (a number: the weight the loss gives it, beta).  dmu or dlogvar may be None;
    each has its own accumulate flag (two inputs)."""
    flat_mu = _flat(mu)
    empty = flat_mu[:0]
    _sample_backward(empty if dz is None else _flat(dz), float(dkl) / mu.shape[0], flat_mu,
                     _flat(logvar), _flat(eps), empty if dmu is None else _flat(dmu),
                     empty if dlogvar is None else _flat(dlogvar), dz is not None,
                     dmu is not None, dlogvar is not None, bool(accumulate_mu),
                     bool(accumulate_logvar))
