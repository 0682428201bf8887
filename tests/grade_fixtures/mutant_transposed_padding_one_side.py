# Appended to solution.py by the tests: one known mistake.
# mutant: transposed_padding_one_side
# loses: conv_transpose2d_forward conv_transpose2d_backward
def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    top, bottom, left, right = pad
    return _ct_forward(x, w, b, stride, (0, top + bottom, 0, left + right), output_pad)   # all at the end


def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad):
    top, bottom, left, right = pad
    return _ct_backward(dout, x, w, b, stride, (0, top + bottom, 0, left + right), output_pad)
