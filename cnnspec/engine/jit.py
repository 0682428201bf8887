"""numba options of the engine's own loops, in one place: compiled once, cached on disk."""
from __future__ import annotations

import numba


def njit(fn=None, **options):
    """``numba.njit`` with ``cache=True``; ``error_model="numpy"`` lets division skip the zero check
    (and vectorise). No fastmath: results must not depend on how LLVM reorders the arithmetic."""
    options = {"cache": True, "nogil": True, "error_model": "numpy", **options}
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)
