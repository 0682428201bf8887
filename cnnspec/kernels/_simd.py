"""Explicit SIMD vectors for numba kernels: one 64-byte vector (16 float32 or 8 float64 lanes).

LLVM's auto-vectorisers cannot keep a block of accumulators in registers across a reduction
loop (the loop they vectorise is the innermost one), and on AVX-512 machines they prefer 256-bit
vectors.  A register-blocked kernel (``conv_direct.py``) therefore holds its accumulators as
values of :class:`Vec`, an LLVM ``<16 x float>`` / ``<8 x double>``; LLVM lowers each operation
to one 512-bit instruction where the CPU has AVX-512, and to two or four 256/128-bit ones where it
does not (the same results: every lane is computed alone).

Operations (callable from numba kernels only): ``vzero(a)`` (a vector of a's dtype, zero),
``vload(a, i)`` (a[i : i + lanes], unaligned, no bounds check: the caller keeps i + lanes <=
a.size), ``vsplat(a, i)`` (lanes copies of a[i]), ``vstore(a, i, v)``, ``vfma(acc, u, v)``
(acc + u * v with one rounding, per lane: ``llvm.fma``, as BLAS's FMA kernels compute) and ``vlanes(a)`` (the lanes, a compile-time
constant).  No fastmath anywhere: each lane is IEEE arithmetic in a fixed order.

``yzero``, ``yload``, ``ysplat`` and ``ylanes`` are the same for half vectors, 32 bytes (8
float32 or 4 float64 lanes: one AVX2 register).  AVX2 has 16 such registers, so a kernel for it
keeps at most 12 accumulators of these (``conv_direct._direct_sample_narrow``); the other
operations (``vfma``, ``vstore``, ``vadd``, ...) take vectors of either width.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

VECTOR_BYTES = 64


class Vec(types.Type):
    """A SIMD vector of ``lanes`` elements of ``dtype`` (a numba float type), ``size`` bytes."""

    def __init__(self, dtype, size=VECTOR_BYTES):
        self.dtype = dtype
        self.lanes = size // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec({dtype}x{self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        scalar = ir.FloatType() if fe_type.dtype == types.float32 else ir.DoubleType()
        super().__init__(dmm, fe_type, ir.VectorType(scalar, fe_type.lanes))


def lanes_of(dtype) -> int:
    """Lanes of a vector of NumPy dtype ``dtype`` (16 for float32, 8 for float64)."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def _element_pointer(context, builder, arr_type, arr, index):
    array = context.make_array(arr_type)(context, builder, arr)
    return builder.gep(array.data, [index])


def _zero(size):
    @intrinsic
    def zero(typingctx, arr):
        vec = Vec(arr.dtype, size)

        def codegen(context, builder, sig, args):
            return ir.Constant(context.get_value_type(vec), None)

        return vec(arr), codegen
    return zero


def _lanes(size):
    @intrinsic
    def lanes(typingctx, arr):
        count = Vec(arr.dtype, size).lanes

        def codegen(context, builder, sig, args):
            return context.get_constant(types.intp, count)

        return types.intp(arr), codegen
    return lanes


def _load(size):
    @intrinsic
    def load(typingctx, arr, index):
        vec = Vec(arr.dtype, size)

        def codegen(context, builder, sig, args):
            ptr = _pointer(context, builder, sig, args, 0, 1)
            vptr = builder.bitcast(ptr, context.get_value_type(vec).as_pointer())
            return builder.load(vptr, align=arr.dtype.bitwidth // 8)

        return vec(arr, index), codegen
    return load


def _splat(size):
    @intrinsic
    def splat(typingctx, arr, index):
        """A vector of lanes copies of arr[index] (no bounds check)."""
        vec = Vec(arr.dtype, size)

        def codegen(context, builder, sig, args):
            value = builder.load(_pointer(context, builder, sig, args, 0, 1))
            vty = context.get_value_type(vec)
            undef = ir.Constant(vty, ir.Undefined)
            one = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
            mask = ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count)
            return builder.shuffle_vector(one, undef, mask)

        return vec(arr, index), codegen
    return splat


vzero, vlanes, vload, vsplat = (_zero(VECTOR_BYTES), _lanes(VECTOR_BYTES), _load(VECTOR_BYTES),
                                _splat(VECTOR_BYTES))
HALF_BYTES = VECTOR_BYTES // 2
yzero, ylanes, yload, ysplat = (_zero(HALF_BYTES), _lanes(HALF_BYTES), _load(HALF_BYTES),
                                _splat(HALF_BYTES))


@intrinsic
def vstore(typingctx, arr, index, value):
    def codegen(context, builder, sig, args):
        vptr = builder.bitcast(_pointer(context, builder, sig, args, 0, 1),
                               args[2].type.as_pointer())
        builder.store(args[2], vptr, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, index, value), codegen


@intrinsic
def vfma(typingctx, acc, a, b):
    """acc + a * b, lane by lane, one rounding (llvm.fma)."""
    if not (isinstance(acc, Vec) and a == acc and b == acc):
        return None

    def codegen(context, builder, sig, args):
        vty = args[0].type
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3),
            f"llvm.fma.v{vty.count}f{acc.dtype.bitwidth}")
        return builder.call(fma, [args[1], args[2], args[0]])

    return acc(acc, a, b), codegen


def _pairwise(build):
    """An intrinsic (a, b) -> build(builder, a, b) for two vectors of one type, a vector of that
    type: the lane-wise operations below, the masks of relu's gradients and the shuffles."""
    @intrinsic
    def pairwise(typingctx, a, b):
        if not (isinstance(a, Vec) and b == a):
            return None

        def codegen(context, builder, sig, args):
            return build(builder, args[0], args[1])

        return a(a, b), codegen
    return pairwise


vadd = _pairwise(lambda b, x, y: b.fadd(x, y))      # x + y, lane by lane
vsub = _pairwise(lambda b, x, y: b.fsub(x, y))      # x - y, lane by lane


@intrinsic
def vtranspose(typingctx, src, si, sstride, dst, di, dstride, lo, hi, accumulate):
    """Transpose a lanes x lanes block: vector k of the result (lo <= k < hi) is lane k of the
    vectors src[si + j*sstride] (j < lanes); it is stored at dst[di + k*dstride], or added there
    when ``accumulate``.  One shuffle network (log2(lanes) stages of lanes/2 pairs), no scalar
    moves: 64 shuffles for a 16 x 16 float32 block."""
    if src.dtype != dst.dtype:
        return None
    vec = Vec(src.dtype)

    def codegen(context, builder, sig, args):
        src_, si_, ss_, dst_, di_, ds_, lo_, hi_, acc_ = args
        vty = context.get_value_type(vec)
        n = vty.count
        intp = context.get_value_type(types.intp)

        def index(value, position):
            return context.cast(builder, value, sig.args[position], types.intp)

        si_, ss_, di_, ds_, lo_, hi_ = (index(si_, 1), index(ss_, 2), index(di_, 4),
                                        index(ds_, 5), index(lo_, 6), index(hi_, 7))
        align = src.dtype.bitwidth // 8
        rows = []
        for j in range(n):
            at = builder.add(si_, builder.mul(ss_, ir.Constant(intp, j)))
            ptr = builder.bitcast(_element_pointer(context, builder, sig.args[0], src_, at),
                                  vty.as_pointer())
            rows.append(builder.load(ptr, align=align))
        d = 1
        while d < n:
            for i in range(n):
                if i & d:
                    continue
                a, b = rows[i], rows[i + d]
                lo = [p if not p & d else n + p - d for p in range(n)]
                hi = [p + d if not p & d else n + p for p in range(n)]
                mask = lambda m: ir.Constant(ir.VectorType(ir.IntType(32), n), m)
                rows[i] = builder.shuffle_vector(a, b, mask(lo))
                rows[i + d] = builder.shuffle_vector(a, b, mask(hi))
            d *= 2
        acc = context.cast(builder, acc_, sig.args[8], types.boolean)
        for k in range(n):
            kk = ir.Constant(intp, k)
            inside = builder.and_(builder.icmp_signed("<", kk, hi_),
                                  builder.icmp_signed(">=", kk, lo_))
            with builder.if_then(inside, likely=True):
                at = builder.add(di_, builder.mul(ds_, ir.Constant(intp, k)))
                ptr = builder.bitcast(_element_pointer(context, builder, sig.args[3], dst_, at),
                                      vty.as_pointer())
                with builder.if_else(acc) as (then, otherwise):
                    with then:
                        old = builder.load(ptr, align=align)
                        builder.store(builder.fadd(old, rows[k]), ptr, align=align)
                    with otherwise:
                        builder.store(rows[k], ptr, align=align)
        return context.get_dummy_value()

    return types.none(src, si, sstride, dst, di, dstride, lo, hi, accumulate), codegen


@intrinsic
def vprefetch(typingctx, arr, index):
    """Hint that arr[index]'s line will be read soon (llvm.prefetch, read, into L1)."""
    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], index)
        i8p = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32),
                                                            ir.IntType(32)]), "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(ir.IntType(32), 0),
                          ir.Constant(ir.IntType(32), 3), ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return types.none(arr, index), codegen


@intrinsic
def line_offset(typingctx, arr):
    """Elements from arr[0] to the first element on a 64-byte line boundary (0 .. lanes - 1):
    a kernel that lays out its scratch from there loads whole lines, never one split over two
    (NumPy's large arrays start 16 bytes past a line)."""
    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        i64 = ir.IntType(64)
        address = builder.ptrtoint(array.data, i64)
        misaligned = builder.and_(builder.sub(ir.Constant(i64, 0), address), ir.Constant(i64, 63))
        return builder.udiv(misaligned, ir.Constant(i64, arr.dtype.bitwidth // 8))

    return types.intp(arr), codegen


@intrinsic
def vzero_below(typingctx, v, k):
    """v with its lanes below k (an integer) set to zero, the rest kept (a compare and a blend):
    a row's last vector that overlaps the one before it counts each element once so."""
    if not isinstance(v, Vec):
        return None

    def codegen(context, builder, sig, args):
        vty = args[0].type
        n = vty.count
        ity = ir.VectorType(ir.IntType(32), n)
        k32 = builder.trunc(context.cast(builder, args[1], sig.args[1], types.int64),
                            ir.IntType(32))
        ks = builder.insert_element(ir.Constant(ity, ir.Undefined), k32,
                                    ir.Constant(ir.IntType(32), 0))
        ks = builder.shuffle_vector(ks, ks, ir.Constant(ity, [0] * n))
        keep = builder.icmp_signed(">=", ir.Constant(ity, list(range(n))), ks)
        return builder.select(keep, args[0], ir.Constant(vty, None))

    return v(v, k), codegen


@intrinsic
def vadd_wide(typingctx, acc, index, v):
    """acc[index : index + lanes of v] += v's lanes in float64 (acc a float64 array; v of float32
    widened exactly, or of float64): running float32 sums folded into float64 ones, lane by
    lane, a load, a widening, an add and a store per 4 lanes."""
    if not (isinstance(v, Vec) and acc.dtype == types.float64):
        return None

    def codegen(context, builder, sig, args):
        n = args[2].type.count
        wty = ir.VectorType(ir.DoubleType(), n)
        value = args[2] if v.dtype == types.float64 else builder.fpext(args[2], wty)
        ptr = builder.bitcast(_pointer(context, builder, sig, args, 0, 1), wty.as_pointer())
        builder.store(builder.fadd(builder.load(ptr, align=8), value), ptr, align=8)
        return context.get_dummy_value()

    return types.none(acc, index, v), codegen


@intrinsic
def vload_like(typingctx, arr, index, like):
    """A vector of ``like``'s type (its lanes unused) from arr[index:] (arr of its dtype, no
    bounds check): a kernel's accumulators kept in an array between loops."""
    if not (isinstance(like, Vec) and arr.dtype == like.dtype):
        return None

    def codegen(context, builder, sig, args):
        vptr = builder.bitcast(_pointer(context, builder, sig, args, 0, 1),
                               context.get_value_type(like).as_pointer())
        return builder.load(vptr, align=arr.dtype.bitwidth // 8)

    return like(arr, index, like), codegen


def _widened(v):
    return Vec(types.float64, v.lanes * 8)


@intrinsic
def vwiden(typingctx, v):
    """v's lanes in float64 (float32 widened exactly; float64 as it is): a vector of as many
    lanes, twice the bytes."""
    if not isinstance(v, Vec):
        return None
    wide = _widened(v)

    def codegen(context, builder, sig, args):
        if v.dtype == types.float64:
            return args[0]
        return builder.fpext(args[0], context.get_value_type(wide))

    return wide(v), codegen


@intrinsic
def vfill(typingctx, v, x):
    """A vector of v's type with every lane x (converted to v's dtype)."""
    if not isinstance(v, Vec):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(v)
        value = context.cast(builder, args[1], sig.args[1], v.dtype)
        one = builder.insert_element(ir.Constant(vty, ir.Undefined), value,
                                     ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, one, ir.Constant(
            ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count))

    return v(v, x), codegen


@intrinsic
def vhsum(typingctx, v):
    """The sum of v's lanes, added one after the other in lane order (in v's dtype)."""
    if not isinstance(v, Vec):
        return None

    def codegen(context, builder, sig, args):
        total = builder.extract_element(args[0], ir.Constant(ir.IntType(32), 0))
        for lane in range(1, args[0].type.count):
            total = builder.fadd(total, builder.extract_element(
                args[0], ir.Constant(ir.IntType(32), lane)))
        return total

    return v.dtype(v), codegen


def _keep(test):
    """An intrinsic (g, y) -> g's lanes where test(builder, y) holds, zeros elsewhere."""
    return _pairwise(lambda b, g, y: b.select(test(b, y), g, _zeros_like(g)))


def _zeros_like(value):
    return ir.Constant(value.type, None)


# relu's backward rule (0 where y <= 0; a NaN y lets g through) and relu6's (g where 0 < y < 6)
vkeep_relu = _keep(lambda b, y: b.fcmp_unordered(">", y, _zeros_like(y)))
vkeep_relu6 = _keep(lambda b, y: b.and_(
    b.fcmp_ordered(">", y, _zeros_like(y)),
    b.fcmp_ordered("<", y, ir.Constant(y.type, [6.0] * y.type.count))))


# -- masked loads and stores, shuffles (depthwise.py's flat kernels) --------------------------

@intrinsic
def vload_masked(typingctx, arr, index, masks, mi):
    """arr[index : index + lanes] with the lanes whose bit in masks[mi] is clear read as zero
    (and not read at all: index may point before or past the array where masked)."""
    vec = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vec)
        ptr = _pointer(context, builder, sig, args, 0, 1)
        mask = _mask_bits(context, builder, sig, args, 2, 3, vty.count)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [ptr.type, ir.IntType(32), mask.type, vty]),
            f"llvm.masked.load.v{vty.count}f{arr.dtype.bitwidth}.p0")
        return builder.call(fn, [ptr, ir.Constant(ir.IntType(32), arr.dtype.bitwidth // 8),
                                 mask, ir.Constant(vty, None)])

    return vec(arr, index, masks, mi), codegen


@intrinsic
def vstore_masked(typingctx, arr, index, value, masks, mi):
    """arr[index + l] = value[l] for the lanes l whose bit in masks[mi] is set."""
    def codegen(context, builder, sig, args):
        vty = args[2].type
        ptr = _pointer(context, builder, sig, args, 0, 1)
        mask = _mask_bits(context, builder, sig, args, 3, 4, vty.count)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vty, ptr.type, ir.IntType(32),
                                                             mask.type]),
            f"llvm.masked.store.v{vty.count}f{arr.dtype.bitwidth}.p0")
        builder.call(fn, [args[2], ptr, ir.Constant(ir.IntType(32), arr.dtype.bitwidth // 8),
                          mask])
        return context.get_dummy_value()

    return types.none(arr, index, value, masks, mi), codegen


def _shuffle(pick):
    """An intrinsic (a, b) -> the vector of lanes pick(lanes) of a's and b's lanes side by side."""
    return _pairwise(lambda b, x, y: b.shuffle_vector(x, y, ir.Constant(
        ir.VectorType(ir.IntType(32), x.type.count), pick(x.type.count))))


vevens = _shuffle(lambda n: [2 * k for k in range(n)])          # a0 a2 .. b0 b2 ..
vodds = _shuffle(lambda n: [2 * k + 1 for k in range(n)])       # a1 a3 .. b1 b3 ..
vlow = _shuffle(lambda n: [k // 2 + (k % 2) * n for k in range(n)])              # a0 b0 a1 b1 ..
vhigh = _shuffle(lambda n: [n // 2 + k // 2 + (k % 2) * n for k in range(n)])    # the upper halves


def _pointer(context, builder, sig, args, a, i):
    """_element_pointer of args[a] at index args[i] (not inbounds: masked lanes may lie outside)."""
    index = context.cast(builder, args[i], sig.args[i], types.intp)
    return _element_pointer(context, builder, sig.args[a], args[a], index)


def _mask_bits(context, builder, sig, args, a, i, lanes):
    index = context.cast(builder, args[i], sig.args[i], types.intp)
    array = context.make_array(sig.args[a])(context, builder, args[a])
    bits = builder.load(builder.gep(array.data, [index], inbounds=True))
    bits = builder.trunc(bits, ir.IntType(lanes)) if lanes < 16 else bits
    return builder.bitcast(bits, ir.VectorType(ir.IntType(1), lanes))


@intrinsic
def vgather(typingctx, arr, index, offsets, oi, masks, mi):
    """The lanes l of arr[index + offsets[oi + l]] (offsets int32), those whose bit in masks[mi]
    is clear read as zero (and not read at all).  One AVX-512 gather."""
    vec = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vec)
        n = vty.count
        ptr = _pointer(context, builder, sig, args, 0, 1)
        oarr = context.make_array(sig.args[2])(context, builder, args[2])
        oi = context.cast(builder, args[3], sig.args[3], types.intp)
        optr = builder.gep(oarr.data, [oi], inbounds=True)
        ivty = ir.VectorType(ir.IntType(32), n)
        offs = builder.load(builder.bitcast(optr, ivty.as_pointer()), align=4)
        if n < 16:                                    # float64: 8 of the int32 offsets
            first = ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(n)))
            offs = builder.shuffle_vector(offs, offs, first)
        i64 = ir.IntType(64)
        step = ir.Constant(ir.VectorType(i64, n), [arr.dtype.bitwidth // 8] * n)
        base = builder.ptrtoint(ptr, i64)
        bases = builder.insert_element(ir.Constant(ir.VectorType(i64, n), None), base,
                                       ir.Constant(ir.IntType(32), 0))
        bases = builder.shuffle_vector(bases, bases, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                                 [0] * n))
        addr = builder.add(bases, builder.mul(builder.sext(offs, ir.VectorType(i64, n)), step))
        pty = ptr.type
        ptrs = builder.inttoptr(addr, ir.VectorType(pty, n))
        mask = _mask_bits(context, builder, sig, args, 4, 5, n)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [ptrs.type, ir.IntType(32), mask.type, vty]),
            f"llvm.masked.gather.v{n}f{arr.dtype.bitwidth}.v{n}p0")
        return builder.call(fn, [ptrs, ir.Constant(ir.IntType(32), arr.dtype.bitwidth // 8),
                                 mask, ir.Constant(vty, None)])

    return vec(arr, index, offsets, oi, masks, mi), codegen
