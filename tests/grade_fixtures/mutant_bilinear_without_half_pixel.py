# Appended to solution.py by the tests: one known mistake.
# mutant: bilinear_without_half_pixel
# loses: upsample2d_forward upsample2d_backward
def _source(o, n_in, scale):
    return o / scale                                                  # no half-pixel offset
