# Appended to solution.py by the tests: one known mistake.
# mutant: bias_first_only
# loses: dense_forward
def dense_forward(x, w, b):
    out = x @ w
    return out + b[0] if b is not None else out         # one bias for every unit
