# Appended to solution.py by the tests: one known mistake.
# mutant: softmax_wrong_axis
# loses: softmax_forward
def softmax_forward(x):
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)
