# Appended to solution.py by the tests: one known mistake.
# mutant: transposed_gradient_kernel_flipped
# loses: conv_transpose2d_backward
def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad):
    dx, _, _ = _ct_backward(dout, x, w[:, :, ::-1, ::-1], b, stride, pad, output_pad)   # flipped, as conv's dx
    _, dw, db = _ct_backward(dout, x, w, b, stride, pad, output_pad)
    return dx, dw, db
