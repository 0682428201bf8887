# Appended to solution.py by the tests: one known mistake.
# mutant: nearest_rounding
# loses: upsample2d_forward upsample2d_backward
_right_interpolation = _interpolation


def _interpolation(n_in, scale, mode):
    if mode != "nearest":
        return _right_interpolation(n_in, scale, mode)
    a = np.zeros((n_in * scale, n_in))
    for o in range(n_in * scale):
        a[o, min(int(o / scale + 0.5), n_in - 1)] = 1                 # rounded, not floor
    return a
