# Appended to solution.py by the tests: a hostile submission.
# Return values that are not what the API returns, some of them pretending to be right.
class Liar:
    def __init__(self, values):
        self.values = values

    def __eq__(self, other):
        return True

    def __array__(self, dtype=None, copy=None):
        return self.values


class Sneaky(np.ndarray):
    def __eq__(self, other):
        return np.ones(np.shape(other), bool)


def relu_forward(x):
    return Liar(np.maximum(x, 0))                           # the right values, in disguise


def relu_backward(dout, x):
    return (dout * (x > 0)).view(Sneaky)                    # the right values, a lying subclass


def sigmoid_forward(x):
    return (1 / (1 + np.exp(-x))).tolist()                  # a list


def tanh_forward(x):
    return np.tanh(x).astype(np.float32)                    # the wrong dtype


def dense_forward(x, w, b):
    return np.full((x.shape[0], w.shape[1]), np.nan)        # NaN


def softmax_forward(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).T             # the wrong shape


def mse_loss(pred, target):
    diff = pred - target
    return "small", 2 * diff / diff.size                    # a loss that is not a number
