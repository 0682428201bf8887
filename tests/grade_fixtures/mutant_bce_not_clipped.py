# Appended to solution.py by the tests: one known mistake.
# mutant: bce_not_clipped
# loses: bce_loss
def bce_loss(pred, target):
    loss = -np.mean(target * np.log(pred) + (1 - target) * np.log(1 - pred))   # log(0) = -inf
    dpred = (pred - target) / (pred * (1 - pred)) / pred.size
    return float(loss), dpred
