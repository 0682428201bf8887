# Appended to solution.py by the tests: one known mistake.
# mutant: align_corners_true
# loses: upsample2d_forward upsample2d_backward
def _source(o, n_in, scale):
    return o * (n_in - 1) / max(n_in * scale - 1, 1)                 # align_corners=True
