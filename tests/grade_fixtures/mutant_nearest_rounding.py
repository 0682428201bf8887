# Appended to solution.py by the tests: one known mistake.
# mutant: nearest_rounding
# loses: upsample2d_forward upsample2d_backward
def _nearest(o, n_in, scale):
    return min(int(o / scale + 0.5), n_in - 1)                        # rounded, not floor
