# Appended to solution.py by the tests: one known mistake.
# mutant: bilinear_source_not_clamped
# loses: upsample2d_forward upsample2d_backward
def _source(o, n_in, scale):
    return (o + 0.5) / scale - 0.5                                    # not clamped at 0: -1 reads the last
