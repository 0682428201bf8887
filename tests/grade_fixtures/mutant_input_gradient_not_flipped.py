# Appended to solution.py by the tests: one known mistake.
# mutant: input_gradient_not_flipped
# loses: conv2d_backward
_right_conv2d_backward = conv2d_backward


def conv2d_backward(dout, x, w, b, stride, pad):
    dx, _, _ = _right_conv2d_backward(dout, x, w[:, :, ::-1, ::-1], b, stride, pad)
    _, dw, db = _right_conv2d_backward(dout, x, w, b, stride, pad)
    return dx, dw, db
