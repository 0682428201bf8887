# Appended to solution.py by the tests: one known mistake.
# mutant: gradient_from_one_sample
# loses: conv2d_backward
_right_conv2d_backward = conv2d_backward


def conv2d_backward(dout, x, w, b, stride, pad):
    dx, _, _ = _right_conv2d_backward(dout, x, w, b, stride, pad)
    for n in range(x.shape[0]):                       # '=' where '+=' was meant
        _, dw, db = _right_conv2d_backward(dout[n:n + 1], x[n:n + 1], w, b, stride, pad)
    return dx, dw, db
