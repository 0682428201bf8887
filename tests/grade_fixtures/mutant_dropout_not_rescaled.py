# Appended to solution.py by the tests: one known mistake.
# mutant: dropout_not_rescaled
# loses: dropout_forward
def dropout_forward(x, p, mask):
    return x * mask
