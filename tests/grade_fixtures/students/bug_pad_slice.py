# base: loops
# CS231n's naive conv backward crops the padding with negative ends: empty when a pad is 0.
def conv2d_backward(dout, x, w, b, stride, pad):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    sh, sw = stride
    top, bottom, left, right = pad
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="constant")
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    window = x_pad[n, :, i * sh:i * sh + HH, j * sw:j * sw + WW]
                    dw[f] += window * dout[n, f, i, j]
                    dx_pad[n, :, i * sh:i * sh + HH, j * sw:j * sw + WW] += w[f] * dout[n, f, i, j]
    dx = dx_pad[:, :, top:-bottom, left:-right]
    db = np.sum(dout, axis=(0, 2, 3)) if b is not None else None
    return dx, dw, db
