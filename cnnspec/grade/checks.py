"""Judging one output: is it what the API returns (a plain ndarray of the right shape and dtype,
a number for a loss, None for db without a bias), and is it close to the expected values?

Every value here came out of the sandbox through protocol.decode, so arrays are fresh plain
ndarrays of a numeric dtype; what the child reported instead of an array ({"$bad": why}) keeps its
reason, and anything else it might send is refused with a reason too.
"""
from __future__ import annotations

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


class Bad:
    """A returned value that is not an array or a number: why, in plain words."""

    def __init__(self, why: str):
        self.why = str(why)[:200]

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
    """Why ``got`` does not match ``expected`` within ``tol`` (None when it does). With
    ``show_values`` (public cases) the first large difference is shown: index, got, expected."""
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
            message += f": got {float(got_a):.6g}, expected {float(exp_a):.6g}"
        elif len(bad):
            index = tuple(int(i) for i in bad[0])
            message += (f"; first large difference at index {index}: got {got_a[index]:.6g}, "
                        f"expected {exp_a[index]:.6g}")
    return message
