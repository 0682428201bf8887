# Appended to solution.py by the tests: one known mistake.
# mutant: height_width_swapped
# loses: conv2d_forward
_right_conv2d_forward = conv2d_forward


def conv2d_forward(x, w, b, stride, pad):
    top, bottom, left, right = pad
    return _right_conv2d_forward(x, w, b, (stride[1], stride[0]), (left, right, top, bottom))
