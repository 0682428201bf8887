# Appended to solution.py by the tests: one known mistake.
# mutant: stride_ignored
# loses: conv2d_backward
def conv2d_backward(dout, x, w, b, stride, pad):
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    top, bottom, left, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = xp[:, :, i:i + KH, j:j + KW]                   # the stride forgotten here
            dw += np.tensordot(dout[:, :, i, j], window, axes=([0], [0]))
            dxp[:, :, i:i + KH, j:j + KW] += np.tensordot(dout[:, :, i, j], w, axes=([1], [0]))
    db = dout.sum(axis=(0, 2, 3)) if b is not None else None
    return dxp[:, :, top:top + H, left:left + W], dw, db
