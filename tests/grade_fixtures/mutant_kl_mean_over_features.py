# Appended to solution.py by the tests: one known mistake.
# mutant: kl_mean_over_features
# loses: vae_sample_forward vae_sample_backward
def vae_sample_forward(mu, logvar, eps):
    z = mu + np.exp(logvar / 2) * eps
    return z, float(-0.5 * np.mean(1 + logvar - mu ** 2 - np.exp(logvar)))     # a mean over everything


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    size = mu.size
    return dz + dkl * mu / size, dz * eps * np.exp(logvar / 2) / 2 + dkl * (np.exp(logvar) - 1) / (2 * size)
