"""numba options of the engine's own loops, in one place: compiled once, cached on disk."""
from __future__ import annotations

import numba
from numba import types
from numba.extending import intrinsic


def njit(fn=None, **options):
    """``numba.njit`` with ``cache=True``; ``error_model="numpy"`` lets division skip the zero check
    (and vectorise). No fastmath: results must not depend on how LLVM reorders the arithmetic."""
    options = {"cache": True, "nogil": True, "error_model": "numpy", **options}
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's fma: the FMA instruction where the CPU has one, and
    vectorised with its loop), for three floats of one type."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return a(a, b, c), codegen
