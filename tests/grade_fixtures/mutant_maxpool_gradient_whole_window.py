# Appended to solution.py by the tests: one known mistake.
# mutant: maxpool_gradient_whole_window
# loses: maxpool2d_backward
def maxpool2d_backward(dout, x, kernel, stride, pad):
    kh, kw = kernel
    sh, sw = stride
    oh, ow = dout.shape[2:]
    dxp = np.zeros_like(_pad(x, pad))
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += dout     # every input of the window
    return _unpad(dxp, pad, x.shape[2], x.shape[3]).copy()
