# base: im2col
# Max-pool backward that assigns the gradient instead of adding it: an input that wins two
# overlapping windows keeps only the last window's gradient.
def maxpool2d_backward(dout, x, kernel, stride, pad):
    N, C, H, W = x.shape
    ph, pw = kernel
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    dx_pad = np.zeros_like(x_pad)
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    window = x_pad[n, c, i * sh:i * sh + ph, j * sw:j * sw + pw]
                    k = np.argmax(window)
                    dx_pad[n, c, i * sh + k // pw, j * sw + k % pw] = dout[n, c, i, j]
    return dx_pad[:, :, top:top + H, left:left + W]
