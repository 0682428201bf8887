# Appended to solution.py by the tests: one known mistake.
# mutant: kl_summed_over_batch
# loses: vae_sample_forward vae_sample_backward
def vae_sample_forward(mu, logvar, eps):
    z = mu + np.exp(logvar / 2) * eps
    return z, float(-0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar)))      # summed over the batch too


def vae_sample_backward(dz, dkl, mu, logvar, eps):
    return dz + dkl * mu, dz * eps * np.exp(logvar / 2) / 2 + dkl * (np.exp(logvar) - 1) / 2
