# base: im2col
# Max-pool backward writing the masked window with `=`: overlapping windows overwrite each other.
def maxpool2d_backward(dout, x, kernel, stride, pad):
    N, C, H, W = x.shape
    ph, pw = kernel
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    dx = np.zeros_like(x_pad)
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    window = x_pad[n, c, i * sh:i * sh + ph, j * sw:j * sw + pw]
                    mask = window == np.max(window)
                    dx[n, c, i * sh:i * sh + ph, j * sw:j * sw + pw] = mask * dout[n, c, i, j]
    return dx[:, :, top:top + H, left:left + W]
