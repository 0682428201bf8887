"""cnnspec.kernels._exp: exp and log for vectorised kernel loops, against the C library's.

The reference is numba's own np.exp / np.log (calls of the C library's exp and log, correctly
rounded in nearly every case); fdlibm's algorithms are within 1 ulp of the exact value, so the
two may differ by one unit in the last place, never more, and must agree on every special value.
"""
import numba
import numpy as np
import pytest

from cnnspec.kernels._exp import exp, log


@numba.njit(nogil=True, error_model="numpy")
def _ours(kind, x, out):
    for i in range(x.size):
        out[i] = exp(x[i]) if kind == 0 else log(x[i])


@numba.njit(nogil=True, error_model="numpy")
def _libm(kind, x, out):
    for i in range(x.size):
        out[i] = np.exp(x[i]) if kind == 0 else np.log(x[i])


@numba.njit(nogil=True, error_model="numpy")
def _exp_loop(x, out):
    for i in range(x.size):
        out[i] = exp(x[i])


@numba.njit(nogil=True, error_model="numpy")
def _log_loop(x, out):
    for i in range(x.size):
        out[i] = log(x[i])


def _both(kind, x):
    ours, ref = np.empty_like(x), np.empty_like(x)
    _ours(kind, x, ours)
    _libm(kind, x, ref)
    return ours, ref


def _ulps(a, b):
    """|a - b| in units in the last place (same-signed finite values or equal infinities)."""
    return np.abs(a.view(np.int64) - b.view(np.int64))


EXP_SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 5e-324,
                        709.782712893384, 709.7827128933841, 710.0, 1e308,      # overflow edge
                        -708.3964185322641, -708.4, -744.44007192138, -745.1332191019411,
                        -745.1332191019412, -746.0, -1e308,                     # subnormal edge
                        0.5 * np.log(2.0), -0.5 * np.log(2.0), np.log(2.0), 88.72283935546875])

LOG_SPECIAL = np.array([1.0, 2.0, 0.5, np.e, np.sqrt(2.0), np.sqrt(0.5), 1.0 + 2.0 ** -52,
                        1.0 - 2.0 ** -53, 0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 5e-324,
                        1e-310, 2.2250738585072014e-308, 2.225073858507201e-308,
                        1.7976931348623157e308, 1e-300])


@pytest.mark.parametrize("kind, special", [(0, EXP_SPECIAL), (1, LOG_SPECIAL)], ids=["exp", "log"])
def test_special_values_agree_with_the_c_library(kind, special):
    ours, ref = _both(kind, special)
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), (special, ours, ref)
    fine = ~np.isnan(ref)
    assert np.array_equal(np.isinf(ours[fine]), np.isinf(ref[fine]))
    assert np.array_equal(np.signbit(ours[fine]), np.signbit(ref[fine]))
    assert _ulps(ours[fine], ref[fine]).max() <= 1, (special, ours, ref)
    # the exact cases are exact
    if kind == 0:
        assert _ours_one(0, 0.0) == 1.0 and _ours_one(0, -np.inf) == 0.0
    else:
        assert _ours_one(1, 1.0) == 0.0 and _ours_one(1, 0.0) == -np.inf


def _ours_one(kind, value):
    out = np.empty(1)
    _ours(kind, np.array([value]), out)
    return out[0]


def test_exp_within_one_ulp_over_the_float64_range():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-750.0, 712.0, 1_000_000), rng.uniform(-3.0, 3.0, 500_000),
                        rng.uniform(-746.0, -700.0, 200_000), rng.uniform(700.0, 710.0, 200_000),
                        rng.uniform(-1e-6, 1e-6, 100_000)])
    ours, ref = _both(0, x)
    ulps = _ulps(ours, ref)
    assert ulps.max() <= 1
    assert (ulps == 0).mean() > 0.85                  # mostly the very same value


def test_log_within_one_ulp_from_subnormals_to_the_largest_float():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.exp(rng.uniform(-744.0, 709.0, 1_000_000)), rng.uniform(0.0, 10.0, 500_000),
                        rng.uniform(1 - 1e-6, 1 + 1e-6, 200_000), rng.uniform(0.0, 2.2e-308, 200_000)])
    ours, ref = _both(1, x)
    ulps = _ulps(ours, ref)
    assert ulps.max() <= 1
    assert (ulps == 0).mean() > 0.95


@pytest.mark.parametrize("kind", [0, 1], ids=["exp", "log"])
def test_rounded_to_float32_the_same_as_the_c_library(kind):
    """What float32 kernels store: float32(ours) == float32(the C library's float64 result)."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(1_000_000) * 30).astype(np.float32).astype(np.float64)
    if kind == 1:
        x = np.abs(x) + np.float64(np.float32(1e-30))
    ours, ref = _both(kind, x)
    with np.errstate(over="ignore"):
        assert np.array_equal(ours.astype(np.float32), ref.astype(np.float32))


@pytest.mark.parametrize("loop", [_exp_loop, _log_loop], ids=["exp", "log"])
def test_a_loop_over_them_calls_no_library_function(loop):
    """The point of the module: straight-line code, which LLVM vectorises (a call per element
    would keep the loop scalar)."""
    x = np.linspace(0.5, 2.0, 64)
    loop(x, np.empty_like(x))
    ir = loop.inspect_llvm(loop.signatures[0])
    body = [line for line in ir.splitlines() if "call" in line and ("@exp" in line or "@log" in line
                                                                   or "llvm.exp" in line or "llvm.log" in line)]
    assert body == []
