# base: im2col
# Written for NumPy 1.x: np.int and int() of a one-element array (errors in NumPy 2).
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
                    k = np.argwhere(window.ravel() == window.max())[0]
                    r, s = int(k) // pw, int(k) % pw
                    dx_pad[n, c, i * sh + r, j * sw + s] += dout[n, c, i, j]
    return dx_pad[:, :, top:top + H, left:left + W]


def softmax_cross_entropy(logits, y):
    N = logits.shape[0]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    loss = -np.sum(log_probs[np.arange(N), y.astype(np.int)]) / N
    dx = np.exp(log_probs)
    dx[np.arange(N), y] -= 1
    return loss, dx / N
