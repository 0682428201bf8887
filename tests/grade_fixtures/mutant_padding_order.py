# Appended to solution.py by the tests: one known mistake.
# mutant: padding_order
# loses: conv2d_forward
def conv2d_forward(x, w, b, stride, pad):
    top, left, bottom, right = pad                      # the order is (top, bottom, left, right)
    return _conv2d_forward(x, w, b, stride, (top, bottom, left, right))
