# Appended to solution.py by the tests: one known mistake.
# mutant: sigmoid_bce_unstable
# loses: sigmoid_bce
def sigmoid_bce(logits, target):
    p = 1 / (1 + np.exp(-logits))                                     # exactly 0 or 1 for large |x|
    loss = -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
    return float(loss), (p - target) / logits.size
