# Appended to solution.py by the tests: one known mistake.
# mutant: weight_gradient_transposed
# loses: dense_backward
def dense_backward(dout, x, w, b):
    db = dout.sum(axis=0) if b is not None else None
    return dout @ w.T, dout.T @ x, db
