# Appended to solution.py by the tests: one known mistake.
# mutant: dropout_divides_by_p
# loses: dropout_backward
def dropout_backward(dout, p, mask):
    return dout * mask / p
