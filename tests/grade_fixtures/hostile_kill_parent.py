# Appended to solution.py by the tests: a hostile submission.
# Signals: to the grader, to the grader's process group, to its own group.
import os
import signal


def relu_forward(x):
    os.kill(os.getppid(), signal.SIGKILL)
    return np.maximum(x, 0)


def relu_backward(dout, x):
    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
    return dout * (x > 0)


def sigmoid_forward(x):
    os.kill(0, signal.SIGKILL)              # its own process group: only itself (a new session)
    return 1 / (1 + np.exp(-x))


def tanh_forward(x):
    os.killpg(0, signal.SIGTERM)
    return np.tanh(x)
