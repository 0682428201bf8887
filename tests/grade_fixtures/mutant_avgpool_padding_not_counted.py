# Appended to solution.py by the tests: one known mistake.
# mutant: avgpool_padding_not_counted
# loses: avgpool2d_forward
def avgpool2d_forward(x, kernel, stride, pad):
    kh, kw = kernel
    oh, ow = _out_size(x.shape[2], x.shape[3], kh, kw, stride, pad)
    sums = _windows(_pad(x, pad), kh, kw, stride[0], stride[1], oh, ow).sum(axis=(4, 5))
    ones = _windows(_pad(np.ones_like(x), pad), kh, kw, stride[0], stride[1], oh, ow).sum(axis=(4, 5))
    return sums / ones                                               # real inputs only
