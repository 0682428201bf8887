# Appended to solution.py by the tests: one known mistake.
# mutant: transposed_kernel_flipped
# loses: conv_transpose2d_forward conv_transpose2d_backward
def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    # stretch x with zeros, pad it by k - 1 all round, convolve with the channels swapped -- but
    # without flipping the kernel
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    stretched = np.zeros((n, c, (h - 1) * stride[0] + 1, (wd - 1) * stride[1] + 1), dtype=x.dtype)
    stretched[:, :, ::stride[0], ::stride[1]] = x
    full = _conv2d_forward(stretched, w.transpose(1, 0, 2, 3), None, (1, 1), (kh - 1, kh - 1, kw - 1, kw - 1))
    oh, ow, rows, cols = _ct_crop(full.shape[2], full.shape[3], pad, output_pad)
    out = np.zeros((n, w.shape[1], oh, ow), dtype=x.dtype)
    out[:, :, :rows, :cols] = full[:, :, pad[0]:pad[0] + rows, pad[2]:pad[2] + cols]
    return out + b.reshape(1, -1, 1, 1) if b is not None else out


def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad):
    # the gradients of the forward above: the right ones for the flipped kernel
    dx, dw, db = _ct_backward(dout, x, w[:, :, ::-1, ::-1], b, stride, pad, output_pad)
    return dx, dw[:, :, ::-1, ::-1].copy(), db
