# Appended to solution.py by the tests: one known mistake.
# mutant: bce_epsilon_instead_of_clamp
# loses: bce_loss
def bce_loss(pred, target):
    eps = 1e-7
    loss = -np.mean(target * np.log(pred + eps) + (1 - target) * np.log(1 - pred + eps))
    dpred = (pred - target) / np.maximum(pred * (1 - pred), 1e-12) / pred.size
    return float(loss), dpred
