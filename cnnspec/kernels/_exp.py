"""``exp`` and ``log`` for numba kernels that LLVM can vectorise: fdlibm's, without branches.

numba compiles ``np.exp`` to a call of the C library's ``exp`` (or ``expf``) per element, so a
loop that calls it stays scalar: the per-pixel softmax and cross-entropy of a segmentation
network (K = 2 classes at 16 x 64 x 64 positions) spent 2/3 of their time in those calls.
:func:`exp` is straight-line arithmetic (no call, no branch: the special cases are selects), so
a loop over positions compiles to SIMD instructions, 8 float64 lanes at a time on AVX-512.

The algorithm is fdlibm's ``e_exp.c`` (Sun, 1993; glibc's and musl's ancestor):
x = k ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so that k * ln2_hi is exact), exp(r) =
1 + r + r c / (2 - c) with c = r - r^2 P(r^2) (a degree-5 minimax polynomial), then times 2^k,
made from its bits as two factors 2^(k//2) and 2^(k - k//2) so that every result from the
subnormal ones up to the overflow to inf comes out of normal factors.  Error under 1 ulp (fdlibm's
bound); measured against the C library on 10^7 arguments: at most 1 ulp, the same float64 value
for ~99.9% of them, and every result rounded to float32 equal to the C library's rounded.  NaN in,
NaN out; exp(-inf) = 0; exp(+inf) = inf; results past the float64 range are 0 and inf.

:func:`log` is fdlibm's ``e_log.c`` likewise: x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)),
s = f / (2 + f), log(1 + f) = f - s (f - R) or its variant with f^2/2 (fdlibm's choice, kept), R a
degree-7 polynomial in s^2; subnormal x scaled by 2^54 first.  Error under 1 ulp; log(0) = -inf,
log(x < 0) = NaN, log(inf) = inf, NaN in, NaN out.

Kernels call them as ``exp(value)``, ``log(value)`` (any float type; computed and returned in
float64).  ``exp`` is an ordinary jitted function, compiled once per argument type and shared:
LLVM inlines it into the loops that call it.  ``log`` is larger than LLVM's inlining threshold,
so numba inlines it (``inline="always"``) where it is called: a call per element kept the
per-pixel cross-entropy's loop scalar (1.35-1.6 ms against 0.9-1.0).  Compiling them costs a
first run ~0.5 s (exp for float32 and float64 arguments, log).  numba's cache
checks only the source file of the function it compiles: after editing this file, delete
``cnnspec/kernels/__pycache__``.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from cnnspec.kernels._jit import jit, jit_inline

_LOG2E = 1.44269504088896338700e+00
_LN2_HI = 6.93147180369123816490e-01       # the upper 32 bits of ln2: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_P1 = 1.66666666666666019037e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08


_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01


@intrinsic
def _float64_from_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits``."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _bits_of(typingctx, value):
    """The IEEE bits of the float64 ``value``, as an int64."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@jit
def exp(x):
    """e ** x in float64 (see the module docstring)."""
    x = np.float64(x)
    c = x if x > -746.0 else -746.0          # NaN too: no NaN reaches the integer conversion
    c = c if c < 710.0 else 710.0
    k = np.floor(c * _LOG2E + 0.5)
    hi = c - k * _LN2_HI
    lo = k * _LN2_LO
    r = hi - lo
    t = r * r
    cr = r - t * (_P1 + t * (_P2 + t * (_P3 + t * (_P4 + t * _P5))))
    y = 1.0 - ((lo - (r * cr) / (2.0 - cr)) - hi)
    ki = np.int64(k)
    half = ki >> 1
    y = (y * _float64_from_bits((half + 1023) << 52)) * _float64_from_bits((ki - half + 1023) << 52)
    return y if x == x else x


@jit_inline
def log(x):
    """The natural logarithm of x in float64 (see the module docstring)."""
    x = np.float64(x)
    tiny = x < 2.2250738585072014e-308                 # subnormal (or 0, negative, NaN: below)
    v = x * 18014398509481984.0 if tiny else x         # 2^54: a normal number
    hx = _bits_of(v) >> 32                              # the upper word, as fdlibm reads it
    k = (hx >> 20) - 1023 - (54 if tiny else 0)
    hx = hx & 0x000fffff
    i = (hx + 0x95f64) & 0x100000                       # 1 + f >= sqrt(2): halve it, k + 1
    k += i >> 20
    v = _float64_from_bits(((hx | (i ^ 0x3ff00000)) << 32) | (_bits_of(v) & 0xffffffff))
    f = v - 1.0
    s = f / (2.0 + f)
    dk = np.float64(k)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    wide = ((hx - 0x6147a) | (0x6b851 - hx)) > 0         # fdlibm's test for the f^2/2 form
    y = (dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f) if wide else
         dk * _LN2_HI - ((s * (f - r) - dk * _LN2_LO) - f))
    y = y if x < np.inf else x                         # inf (NaN fails every test: below)
    y = y if x > 0.0 else (-np.inf if x == 0.0 else np.nan)
    return y if x == x else x
