# Appended to solution.py by the tests: one known mistake.
# mutant: loss_sum_or_mean
# loses: mse_loss
def mse_loss(pred, target):
    diff = pred - target
    return float(np.sum(diff ** 2)), 2 * diff                       # a sum, not a mean
