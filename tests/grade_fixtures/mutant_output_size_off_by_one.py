# Appended to solution.py by the tests: one known mistake.
# mutant: output_size_off_by_one
# loses: conv2d_forward maxpool2d_forward
def conv2d_forward(x, w, b, stride, pad):
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    (sh, sw), (top, bottom, left, right) = stride, pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    OH = (H + top + bottom - KH) // sh               # the 1 + forgotten
    OW = (W + left + right - KW) // sw
    out = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for i in range(OH):
        for j in range(OW):
            window = xp[:, :, i * sh:i * sh + KH, j * sw:j * sw + KW]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + b[:, None, None] if b is not None else out


def maxpool2d_forward(x, kernel, stride, pad):
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel, stride, pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    OH, OW = (H + top + bottom - kh) // sh, (W + left + right - kw) // sw    # the 1 + forgotten
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for i in range(OH):
        for j in range(OW):
            out[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
    return out
