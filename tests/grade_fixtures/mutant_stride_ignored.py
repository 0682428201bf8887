# Appended to solution.py by the tests: one known mistake.
# mutant: stride_ignored
# loses: maxpool2d_forward
_right_maxpool2d_forward = maxpool2d_forward


def maxpool2d_forward(x, kernel, stride, pad):
    return _right_maxpool2d_forward(x, kernel, (1, 1), pad)
