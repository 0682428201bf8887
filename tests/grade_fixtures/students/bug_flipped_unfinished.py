# base: loops
# A true convolution (kernel flipped) and a backward not written yet.
def conv2d_forward(x, w, b, stride, pad):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="constant")
    H_out = 1 + (H + top + bottom - HH) // sh
    W_out = 1 + (W + left + right - WW) // sw
    out = np.zeros((N, F, H_out, W_out), dtype=x.dtype)
    flipped = w[:, :, ::-1, ::-1]
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, :, i * sh:i * sh + HH, j * sw:j * sw + WW]
                    out[n, f, i, j] = np.sum(window * flipped[f]) + (b[f] if b is not None else 0)
    return out


def conv2d_backward(dout, x, w, b, stride, pad):
    pass
