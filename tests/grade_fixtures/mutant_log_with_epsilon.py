# Appended to solution.py by the tests: one known mistake.
# mutant: log_with_epsilon
# loses: softmax_cross_entropy
def softmax_cross_entropy(logits, y):
    n = logits.shape[0]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(n), y] + 1e-12))
    d = p.copy()
    d[np.arange(n), y] -= 1
    return float(loss), d / n
