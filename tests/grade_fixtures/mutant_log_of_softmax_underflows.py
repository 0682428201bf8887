# Appended to solution.py by the tests: one known mistake.
# mutant: log_of_softmax_underflows
# loses: softmax_cross_entropy
def softmax_cross_entropy(logits, y):
    n = logits.shape[0]
    probs = softmax_forward(logits)                       # stable softmax ...
    loss = -np.mean(np.log(probs[np.arange(n), y]))       # ... but log(0) = -inf for large logits
    dlogits = probs.copy()
    dlogits[np.arange(n), y] -= 1
    return float(loss), dlogits / n
