# Appended to solution.py by the tests: one known mistake.
# mutant: padding_cropped_with_negative_end
# loses: conv_transpose2d_forward
def conv_transpose2d_forward(x, w, b, stride, pad, output_pad):
    top, bottom, left, right = pad
    full = _ct_forward(x, w, b, stride, (0, 0, 0, 0), output_pad)       # the full result
    return full[:, :, top:-bottom, left:-right]                          # empty where an end is 0
