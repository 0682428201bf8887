# Appended to solution.py by the tests: one known mistake.
# mutant: softmax_not_stabilised
# loses: softmax_forward
def softmax_forward(x):
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)
