# Appended to solution.py by the tests: one known mistake.
# mutant: padding_off_by_one
# loses: conv2d_forward
def conv2d_forward(x, w, b, stride, pad):
    return _conv2d_forward(x, w, b, stride, tuple(p + 1 for p in pad))   # one zero too many a side
