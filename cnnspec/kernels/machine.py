"""Two kernels that measure the machine rather than a layer (``cnnspec bench``'s scaling ceiling):
the same fixed work on every thread at once against one thread alone tells what a second core
gives on this machine, whatever a network does."""
import numpy as np

from cnnspec.kernels._jit import jit


@jit
def arithmetic(a, turns):
    """``turns`` passes of a multiply-add over ``a``: arithmetic on data in the core's cache."""
    for _ in range(turns):
        for i in range(a.shape[0]):
            a[i] = a[i] * np.float32(0.999) + np.float32(0.001)


@jit
def streaming(a, b, c):
    """``c = a + b / 2``: memory traffic, a twelfth of a flop per byte."""
    for i in range(a.shape[0]):
        c[i] = a[i] + np.float32(0.5) * b[i]
