# Appended to solution.py by the tests: one known mistake.
# mutant: padding_cropped_with_negative_end
# loses: conv2d_backward
def conv2d_backward(dout, x, w, b, stride, pad):
    top, bottom, left, right = pad
    dxp, dw, db = _conv2d_backward(dout, _pad(x, pad), w, b, stride, (0, 0, 0, 0))
    return dxp[:, :, top:-bottom, left:-right], dw, db
