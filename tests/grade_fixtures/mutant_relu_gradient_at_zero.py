# Appended to solution.py by the tests: one known mistake.
# mutant: relu_gradient_at_zero
# loses: relu_backward
def relu_backward(dout, x):
    return dout * (x >= 0)
