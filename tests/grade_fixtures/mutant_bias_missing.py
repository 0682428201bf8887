# Appended to solution.py by the tests: one known mistake.
# mutant: bias_missing
# loses: dense_forward
def dense_forward(x, w, b):
    return x @ w
