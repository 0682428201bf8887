# Appended to solution.py by the tests: one known mistake.
# mutant: maxpool_ties_not_first
# loses: maxpool2d_backward
def maxpool2d_backward(dout, x, kernel, stride, pad):
    kh, kw = kernel
    sh, sw = stride
    xp = _pad(x, pad, -np.inf)
    dxp = np.zeros_like(xp)
    for a in range(dout.shape[2]):
        for b in range(dout.shape[3]):
            window = xp[:, :, a * sh:a * sh + kh, b * sw:b * sw + kw]
            winners = window == window.max(axis=(2, 3), keepdims=True)
            count = winners.sum(axis=(2, 3), keepdims=True)            # ties share the gradient
            dxp[:, :, a * sh:a * sh + kh, b * sw:b * sw + kw] += winners * dout[:, :, a:a + 1, b:b + 1] / count
    return _unpad(dxp, pad, x.shape[2], x.shape[3]).copy()
