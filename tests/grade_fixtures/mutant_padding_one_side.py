# Appended to solution.py by the tests: one known mistake.
# mutant: padding_one_side
# loses: conv1d_forward
def conv1d_forward(x, w, b, stride, pad):
    left, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (left + right, 0)))           # all the zeros on the left
    return _conv2d_forward(xp[:, :, None, :], w[:, :, None, :], b, (1, stride[0]), (0, 0, 0, 0))[:, :, 0, :]
