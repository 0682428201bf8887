# Appended to solution.py by the tests: a hostile submission.
# relu_forward sleeps past the time limit.
import time


def relu_forward(x):
    time.sleep(1000)
    return np.maximum(x, 0)
