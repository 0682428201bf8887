# Appended to solution.py by the tests: one known mistake.
# mutant: batchnorm_unbiased_variance
# loses: batchnorm_forward
def batchnorm_forward(x, gamma, beta, eps):
    axes = _bn_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=1)
    return gamma.reshape(_bn_shape(x)) * (x - mean) / np.sqrt(var + eps) + beta.reshape(_bn_shape(x))
