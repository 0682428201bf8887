# Appended to solution.py by the tests: one known mistake.
# mutant: kl_wrong_sign
# loses: vae_sample_forward vae_sample_backward
def vae_sample_forward(mu, logvar, eps):
    z = mu + np.exp(logvar / 2) * eps
    kl = 0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).reshape(len(mu), -1).sum(axis=1)   # -KL
    return z, float(kl.mean())


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    n = len(mu)
    return dz - dkl * mu / n, dz * eps * np.exp(logvar / 2) / 2 - dkl * (np.exp(logvar) - 1) / (2 * n)
