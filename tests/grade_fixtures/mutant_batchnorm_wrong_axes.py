# Appended to solution.py by the tests: one known mistake.
# mutant: batchnorm_wrong_axes
# loses: batchnorm_forward
def batchnorm_forward(x, gamma, beta, eps):
    mean = x.mean(axis=0, keepdims=True)                             # over the batch only
    var = x.var(axis=0, keepdims=True)
    return gamma.reshape(_bn_shape(x)) * (x - mean) / np.sqrt(var + eps) + beta.reshape(_bn_shape(x))
