# Appended to solution.py by the tests: one known mistake.
# mutant: cross_entropy_gradient_without_onehot
# loses: softmax_cross_entropy
def softmax_cross_entropy(logits, y):
    n = logits.shape[0]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(n), y]).mean()
    return float(loss), probs / n
