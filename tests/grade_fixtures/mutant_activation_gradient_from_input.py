# Appended to solution.py by the tests: one known mistake.
# mutant: activation_gradient_from_input
# loses: sigmoid_backward
def sigmoid_backward(dout, x):
    return dout * x * (1 - x)
