# Appended to solution.py by the tests: one known mistake.
# mutant: transposed_padding_not_cropped
# loses: conv_transpose2d_forward
def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    return _ct_forward(x, w, b, stride, (0, 0, 0, 0), output_pad)     # the full result, uncropped
