# Appended to solution.py by the tests: one known mistake.
# mutant: mse_gradient_factor
# loses: mse_loss
def mse_loss(pred, target):
    diff = pred - target
    return float(np.mean(diff ** 2)), diff / diff.size
