# Appended to solution.py by the tests: one known mistake.
# mutant: align_corners_true
# loses: upsample2d_forward upsample2d_backward
_right_interpolation = _interpolation


def _interpolation(n_in, scale, mode):
    if mode == "nearest":
        return _right_interpolation(n_in, scale, mode)
    a = np.zeros((n_in * scale, n_in))
    for o in range(n_in * scale):
        n_out = n_in * scale
        src = o * (n_in - 1) / max(n_out - 1, 1)                      # align_corners=True
        i0 = min(int(np.floor(src)), n_in - 1)
        frac = src - i0
        a[o, i0] += 1 - frac
        a[o, min(i0 + 1, n_in - 1)] += frac
    return a
