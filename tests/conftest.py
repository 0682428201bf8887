"""Shared test set-up. Area-specific fixtures live in each area's own test modules."""
from pathlib import Path

import numpy as np
import pytest

from threadpoolctl import threadpool_limits

# The tests compare values, not speed (`cnnspec bench` measures speed, with its own thread settings),
# and run on one thread of BLAS and of PyTorch: their threads wait for each other spinning, which on
# a 2-core machine shared with other work made a float64 EfficientNet-B0 forward at 3x32x32 take
# 25-40 s on two threads against 0.2 s on one, and 200 NumPy (300x600)@(600x400) products 14-18 s
# against 2.3-3.2 s. (The kernels' own threads, CNNSPEC_THREADS, are kept: they do not spin.)
ONE_THREAD = threadpool_limits(limits=1)
try:
    import torch
except ImportError:
    torch = None
else:
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SEEDS = ROOT.parent / "shared" / "seeds"
SHARED_DOCS = ROOT.parent / "shared" / "docs"
# The contracts (dsl.md, layer-api.md) are copied into tests/contracts/ so that their tests run in a
# clone without shared/ beside it; test_contract_copies_are_current checks them against shared/.
CONTRACTS = ROOT / "tests" / "contracts"
DOCS = SHARED_DOCS if (SHARED_DOCS / "dsl.md").is_file() else CONTRACTS


@pytest.fixture
def specs_dir() -> Path:
    return SPECS


def numeric_grad(f, x, h=1e-5):
    """Central differences of the scalar f() with respect to every entry of x (float64)."""
    grad = np.zeros_like(x)
    flat, g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        g[i] = (plus - minus) / (2 * h)
    return grad


MISSING = object()                  # a key left out of a damaged checkpoint state


def assert_damages_refused(path, good: dict, damages, resume) -> None:
    """Each ``(key, value)`` of ``damages`` written into the checkpoint state ``path`` (``good``
    with ``key`` set to ``value``, or left out for ``MISSING``) makes ``resume()`` refuse it with
    the one error that names the key and the file; ``good`` is written back afterwards."""
    import json

    from cnnspec.errors import CnnSpecError

    for key, value in damages:
        state = {k: v for k, v in good.items() if k != key}
        if value is not MISSING:
            state[key] = value
        path.write_text(json.dumps(state))
        with pytest.raises(CnnSpecError) as info:
            resume()
        assert info.value.message == f"cannot resume from this checkpoint: its state has no valid {key}", \
            (key, value, info.value.message)
        assert info.value.file == str(path)
    path.write_text(json.dumps(good))
