# Appended to solution.py by the tests: a hostile submission.
# Unbounded recursion: through C calls past a raised recursion limit (the stack overflows: a
# crash), and plain recursion under the default limit (RecursionError).
import sys


def _down(n):
    return list(map(_down, [n + 1]))            # each level also recurses in C (map, list)


def _plain(n):
    return _plain(n + 1) + 1


def relu_forward(x):
    sys.setrecursionlimit(10**8)
    return _down(0)


def relu_backward(dout, x):
    sys.setrecursionlimit(1000)
    return _plain(0)
