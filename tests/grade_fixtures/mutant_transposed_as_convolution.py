# Appended to solution.py by the tests: one known mistake.
# mutant: transposed_as_convolution
# loses: conv_transpose2d_forward
def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    return _conv2d_forward(x, w.transpose(1, 0, 2, 3), b, stride, pad)   # a convolution, channels swapped
