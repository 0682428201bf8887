# Appended to solution.py by the tests: one known mistake.
# mutant: average_instead_of_max
# loses: maxpool2d_forward
def maxpool2d_forward(x, kernel, stride, pad):
    kh, kw = kernel
    oh, ow = _out_size(x.shape[2], x.shape[3], kh, kw, stride, pad)
    return _windows(_pad(x, pad), kh, kw, stride[0], stride[1], oh, ow).mean(axis=(4, 5))
