# Appended to solution.py by the tests: one known mistake.
# mutant: padding_ignored
# loses: conv2d_forward
_right_conv2d_forward = conv2d_forward


def conv2d_forward(x, w, b, stride, pad):
    return _right_conv2d_forward(x, w, b, stride, (0, 0, 0, 0))
