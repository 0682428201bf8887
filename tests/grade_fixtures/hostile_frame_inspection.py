# Appended to solution.py by the tests: a hostile submission.
# Looks for the expected output in the caller's frames and in the garbage collector.
import gc
import sys


def relu_forward(x):
    candidates = []
    frame = sys._getframe(1)
    while frame is not None:
        candidates += [v for v in frame.f_locals.values() if isinstance(v, np.ndarray)]
        frame = frame.f_back
    candidates += [o for o in gc.get_objects() if isinstance(o, np.ndarray)]
    for c in candidates:
        if c.shape == x.shape and c is not x and c.dtype == x.dtype and not np.array_equal(c, x):
            return c.copy()
    return x.copy()
