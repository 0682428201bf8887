# base: im2col
# A small constant inside the log "to avoid log(0)".
def softmax_cross_entropy(logits, y):
    n = len(y)
    p = softmax_forward(logits)
    loss = -np.mean(np.log(p[np.arange(n), y] + 1e-16))
    p[np.arange(n), y] -= 1
    return float(loss), p / n
