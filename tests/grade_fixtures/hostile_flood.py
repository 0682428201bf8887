# Appended to solution.py by the tests: a hostile submission.
# Floods stdout and stderr on every call (and returns the right values).
import sys


def relu_forward(x):
    sys.stdout.write("x" * 2_000_000)
    sys.stderr.write("y" * 2_000_000)
    return np.maximum(x, 0)
