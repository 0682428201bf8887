# Appended to solution.py by the tests: one known mistake.
# mutant: maxpool_gradient_assigned
# loses: maxpool2d_backward
def maxpool2d_backward(dout, x, kernel, stride, pad):
    kh, kw = kernel
    sh, sw = stride
    xp = _pad(x, pad, -np.inf)
    dxp = np.zeros_like(xp)
    for n in range(dout.shape[0]):
        for c in range(dout.shape[1]):
            for a in range(dout.shape[2]):
                for b in range(dout.shape[3]):
                    window = xp[n, c, a * sh:a * sh + kh, b * sw:b * sw + kw]
                    k = np.argmax(window)
                    dxp[n, c, a * sh + k // kw, b * sw + k % kw] = dout[n, c, a, b]      # = not +=
    return _unpad(dxp, pad, x.shape[2], x.shape[3]).copy()
