"""Judging one output: is it what the API returns (a plain ndarray of the right shape and dtype,
a number for a loss, None for db without a bias), and is it close to the expected values?

Every value here came out of the sandbox through protocol.decode, so arrays are fresh plain
ndarrays of a numeric dtype; what the child reported instead of an array ({"$bad": why}) keeps its
reason, and anything else it might send is refused with a reason too.
"""
from __future__ import annotations

import re

import numpy as np


def rel_error(a, b) -> float:
    """CS231n's relative error, max |a - b| / max(1e-8, |a| + |b|), in float64 (inf with NaN)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))
    if np.isnan(err).any():
        return float("inf")
    return float(err.max())


def as_outputs(value) -> tuple:
    """A function's return value as a tuple of outputs (a single array is a 1-tuple)."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return (value,)


def close(a, b, tol: float) -> bool:
    """Equal shapes and values within ``tol`` (NaN and inf must sit at the same places), or both
    None. Used to match a student's outputs with a mutant's."""
    if a is None or b is None:
        return a is None and b is None
    if not _is_number(a) and not isinstance(a, np.ndarray):
        return False
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False
    special = ~np.isfinite(a) | ~np.isfinite(b)
    if special.any():
        same = (np.isnan(a) & np.isnan(b)) | (a == b)
        if not same[special].all():
            return False
        a, b = a[~special], b[~special]
    return rel_error(a, b) < tol


def _is_number(v) -> bool:
    return isinstance(v, (float, int)) and not isinstance(v, bool)


def unwrap(value, returns: tuple):
    """The decoded reply of a function as (outputs tuple, problem): ``problem`` says why the
    return value as a whole is not what the API returns (else None)."""
    multiple = len(returns) > 1
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()
        if key in ("$tuple", "$list") and isinstance(inner, list):
            if not multiple:
                kind = "a tuple" if key == "$tuple" else "a list"
                return (None,), f"returned {kind} of {len(inner)} values; expected one array"
            if len(inner) != len(returns):
                return (None,) * len(returns), (f"returned {len(inner)} values; expected "
                                                 f"{len(returns)}: ({', '.join(returns)})")
            return tuple(_item(v) for v in inner), None
    if multiple:
        return (None,) * len(returns), (f"returned {describe(_item(value))}; expected a tuple "
                                        f"({', '.join(returns)})")
    return (_item(value),), None


def shorten(text, limit: int = 600) -> str:
    """``text`` in at most about ``limit`` characters, cut after a whole sentence when one ends in
    the last third, else after a whole word, and marked " [...]": never mid-word."""
    text = " ".join(str(text).split()) if len(str(text)) > limit else str(text)
    if len(text) <= limit:
        return text
    head = text[:limit]
    end = max(head.rfind(". "), head.rfind("; "), head.rfind(": "))
    if end >= limit * 2 // 3:
        return head[:end + 1] + " [...]"
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip(" ,;:") + " [...]"


# NumPy 2 (and 1.24) removed names that course code written for NumPy 1.x still uses
NUMPY_RENAMED = {"int": "int (or np.int64)", "float": "float (or np.float64)", "bool": "bool (or np.bool_)",
                 "object": "object", "str": "str", "long": "int", "complex": "complex", "unicode": "str",
                 "float_": "np.float64", "complex_": "np.complex128", "NaN": "np.nan", "NAN": "np.nan",
                 "Inf": "np.inf", "Infinity": "np.inf", "infty": "np.inf", "PINF": "np.inf",
                 "NINF": "-np.inf", "product": "np.prod", "cumproduct": "np.cumprod",
                 "sometrue": "np.any", "alltrue": "np.all", "trapz": "np.trapezoid", "in1d": "np.isin",
                 "row_stack": "np.vstack", "asfarray": "np.asarray(x, dtype=float)", "round_": "np.round",
                 "string_": "np.bytes_", "unicode_": "np.str_", "msort": "np.sort(x, axis=0)",
                 "find_common_type": "np.result_type", "mat": "np.asarray"}


def numpy_hint(message: str, version: str | None = None, warning: bool = False) -> str | None:
    """A hint for an error (or, ``warning``, a DeprecationWarning) that comes from code written
    for an older NumPy (np.int, int() of an array with one element), naming the replacement; None
    for any other message."""
    version = version or np.__version__
    status = f"deprecated in NumPy {version} (an error in later releases)" if warning else \
        f"an error in NumPy {version}, which grades your code"
    found = re.search(r"module 'numpy' has no attribute '(\w+)'", message) or \
        re.search(r"`np\.(\w+)` was (?:removed|a deprecated alias)", message)
    if found:
        name = found.group(1)
        instead = NUMPY_RENAMED.get(name)
        use = f": use {instead} instead" if instead else ""
        return (f"hint: np.{name} does not exist in NumPy {version}, which grades your code (it was removed "
                f"in NumPy 1.24 or 2.0){use}")
    if ("only 0-dimensional arrays can be converted to Python scalars" in message
            or "only length-1 arrays can be converted" in message
            or "Conversion of an array with ndim > 0 to a scalar" in message):
        return (f"hint: int(a) or float(a) of an array with one element but one or more axes (e.g. "
                f"np.argwhere(...)[0] or a (1,) slice) is {status}: use a.item() or index it down to a "
                f"number, e.g. int(a[0])")
    return None


class Bad:
    """A returned value that is not an array or a number: why, in plain words."""

    def __init__(self, why: str):
        self.why = shorten(why, 200)

    def __repr__(self):
        return f"Bad({self.why!r})"


def _item(v):
    if v is None or isinstance(v, np.ndarray):
        return v
    if isinstance(v, dict) and len(v) == 1:
        (key, inner), = v.items()
        if key == "$num" and _is_number(inner):
            return float(inner)
        if key == "$scalar" and isinstance(inner, np.ndarray) and inner.ndim == 0:
            return inner
        if key == "$bad" and isinstance(inner, str):
            return Bad(inner)
    return Bad("a value the grader cannot read")


def describe(v) -> str:
    if isinstance(v, Bad):
        return v.why
    if v is None:
        return "None"
    if isinstance(v, float):
        return "a float"
    return f"an array of shape {v.shape} and dtype {v.dtype}"


def squeezed_like(got, expected):
    """``got`` as an array of ``expected``'s shape when the two differ at most by axes of size 1
    (a (1, M) array for an (M,) one, a 1-element array for a number); else None."""
    if not isinstance(got, np.ndarray) or got.dtype.kind not in "fiub":
        return None
    shape = np.shape(expected)
    if got.shape == shape:
        return got
    if [d for d in got.shape if d != 1] == [d for d in shape if d != 1] and got.size == int(np.prod(shape)):
        return got.reshape(shape)
    return None


def nothing_computed(name: str, got, expected, inputs: dict, got32=None) -> str | None:
    """Why output ``got`` (of ``expected``'s shape; values known to be wrong) shows that nothing
    was computed: one value everywhere (NaN too, which equals nothing), no finite value at all,
    an input returned unchanged, or values that change from one call to the next for the same
    input (random numbers). None when it computed something."""
    if expected is None or not isinstance(got, np.ndarray):
        return None
    g = np.asarray(got, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if g.size > 1 and np.ptp(e) > 0:
            if np.all(g == g.flat[0]) or np.isnan(g).all():
                return f"{name} computes nothing: it is {float(g.flat[0]):g} everywhere"
            if not np.isfinite(g).any():
                return f"{name} computes nothing: no value of it is a finite number (only inf and nan)"
        for param, value in inputs.items():
            if (isinstance(value, np.ndarray) and value.shape == g.shape and np.array_equal(g, value)
                    and not np.array_equal(e, value)):
                return f"{name} computes nothing: it is the input {param}, unchanged"
        if isinstance(got32, np.ndarray) and got32.shape == got.shape and got32.dtype.kind == "f":
            g32 = np.asarray(got32, dtype=np.float64)
            if np.isfinite(g).all() and np.isfinite(g32).all():
                scale = np.linalg.norm(g) + np.linalg.norm(g32)
                if scale > 0 and np.linalg.norm(g - g32) / scale > 0.1:
                    return (f"{name} is not a function of the inputs: float32 and float64 copies of "
                            f"the same inputs give different values (random numbers?)")
    return None


def output_problem(name: str, got, expected, dtype) -> str | None:
    """Why ``got`` is not an acceptable value for output ``name`` (expected: the reference's
    value), checking type, shape, dtype -- not the values. None when acceptable."""
    if expected is None:
        return None if got is None else f"{name} should be None here (b is None)"
    if np.ndim(expected) == 0:                       # a loss: any real number will do
        if _is_number(got) or (isinstance(got, np.ndarray) and got.ndim == 0 and got.dtype.kind == "f"):
            return None
        return f"{name} is {describe(got)}; expected a number"
    if isinstance(got, Bad):
        return f"{name} is {got.why}"
    if got is None:
        return f"{name} is None; expected an array of shape {expected.shape}"
    if not isinstance(got, np.ndarray) or got.ndim == 0:
        return f"{name} is {describe(got)}; expected an array of shape {expected.shape}"
    if got.shape != expected.shape:
        return f"{name} has shape {got.shape}; expected {expected.shape}"
    if got.dtype != np.dtype(dtype):
        return f"{name} has dtype {got.dtype}; expected {np.dtype(dtype)} (the input's dtype)"
    return None


def value_problem(name: str, got, expected, tol: float, show_values: bool) -> str | None:
    """Why ``got`` (of the float64 call) does not match ``expected`` within ``tol`` (None when
    it does). With ``show_values`` (public cases) the first large difference is shown: index,
    got, expected, to as many digits as tell them apart."""
    if expected is None:
        return None
    got_a = np.asarray(got, dtype=np.float64)
    exp_a = np.asarray(expected, dtype=np.float64)
    if np.isnan(got_a).any() and not np.isnan(exp_a).any():
        return f"{name} contains NaN"
    if np.isinf(got_a).any() and not np.isinf(exp_a).any():
        return f"{name} contains inf (an overflow?)"
    err = rel_error(got_a, exp_a)
    if err < tol:
        return None
    message = f"{name} does not match the expected values (relative error {err:.1e})"
    if show_values:
        with np.errstate(invalid="ignore", over="ignore"):
            each = np.abs(got_a - exp_a) / np.maximum(1e-8, np.abs(got_a) + np.abs(exp_a))
        bad = np.argwhere(~(each < tol))
        if got_a.ndim == 0:
            message += f": got {_digits(got_a, exp_a)}, expected {_digits(exp_a, got_a)}"
        elif len(bad):
            index = tuple(int(i) for i in bad[0])
            message += (f"; first large difference at index {index}: got "
                        f"{_digits(got_a[index], exp_a[index])}, expected "
                        f"{_digits(exp_a[index], got_a[index])}")
    if err < 1e-6:                  # (the float64 run's comparison: value_problem's only use)
        message += ("; that is float32's precision (about 7 digits): was it computed in float32, "
                    "or through a float32 array?")
    return message


FLOAT32_TOLERANCE = 1e-4      # of the output's scale: float32 keeps about 7 digits


def upstream_scale(spec, args) -> float:
    """The largest magnitude of a backward's upstream gradients among ``args`` (0 for a forward or
    a loss): the size of the rounding a float32 backward makes at best."""
    values = [np.asarray(a, dtype=np.float64) for p, a in zip(spec.params, args) if p in spec.upstream]
    finite = [v[np.isfinite(v)] for v in values] if spec.kind == "backward" else []
    return max((float(np.max(np.abs(v))) for v in finite if v.size), default=0.0)


def float32_problem(name: str, got, expected, floor: float = 0.0, tol: float = FLOAT32_TOLERANCE) -> str | None:
    """Why ``got``, an output of the float32 call, is not what the reference computes from the same
    float32 inputs (``expected``), at float32's precision: the largest difference relative to the
    largest expected magnitude, or to ``floor`` when that is larger (a backward's upstream
    gradient: tanh's textbook ``dout * (1 - y**2)`` at |x| ~ 9 loses every digit of ``1 - y**2`` in
    float32, a rounding of ``dout``'s size, not a mistake). None when it matches (or there is
    nothing to compare)."""
    if expected is None:
        return None
    g = np.asarray(got, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if g.shape != e.shape or e.size == 0:
        return None
    if not np.isfinite(g).all() and np.isfinite(e).all():
        return f"with float32 inputs, {name} contains inf or NaN (an overflow in float32?)"
    finite = np.isfinite(e)
    scale = max(float(np.max(np.abs(e[finite]))) if finite.any() else 0.0, floor)
    with np.errstate(invalid="ignore"):
        err = float(np.max(np.abs(g[finite] - e[finite]))) / max(scale, 1e-8) if finite.any() else 0.0
    if err < tol:
        return None
    return (f"with float32 inputs, {name} does not match the expected values (error {err:.1e} of its "
            f"scale, where float32's rounding gives about 1e-6), although the float64 call does: the "
            f"function must compute the same thing for float32 arrays")


def _digits(value, other) -> str:
    """``value`` to 6 significant digits, or to as many as tell it from ``other``."""
    for digits in (6, 9, 12, 17):
        text = f"{float(value):.{digits}g}"
        if text != f"{float(other):.{digits}g}":
            return text
    return text
