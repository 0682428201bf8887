# Appended to solution.py by the tests: one known mistake.
# mutant: output_padding_ignored
# loses: conv_transpose2d_forward conv_transpose2d_backward
def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    return _ct_forward(x, w, b, stride, pad, (0, 0))                  # output_pad left out


def conv_transpose2d_backward(dout, x, w, b, stride, pad, output_pad):
    oh, ow = output_pad
    rows, cols = dout.shape[2] - oh, dout.shape[3] - ow               # the extra rows never read
    return _ct_backward(dout[:, :, :rows, :cols], x, w, b, stride, pad, (0, 0))
