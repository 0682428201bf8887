"""The weights an export carries: a weights file (checked against the network, names and shapes),
a dict of arrays, or the engine's seeded initial weights — those of ``net.compile(dtype, seed)``
itself, so the exported model computes what that model computes.
"""
from __future__ import annotations

import os

import numpy as np

from cnnspec.errors import CnnSpecError


def network_arrays(network, weights=None, seed: int = 0, dtype: str = "float32") -> dict:
    """``{"layer.param": array}`` (of ``dtype``) for every parameter and state array of ``network``:
    from ``weights`` (a path to an ``.npz`` file, or a dict keyed like one) or, without it, the
    initial weights of the engine's model for ``seed``. Names and shapes must match, and the values
    be finite (a CnnSpecError lists what does not)."""
    model = network.compile(dtype=dtype, seed=seed)       # no numba: kernels load when a model runs
    expected = model.arrays()
    if weights is None:
        return expected
    path = None
    if isinstance(weights, (str, os.PathLike)):
        from cnnspec.npz import read_npz

        path = os.fspath(weights)
        arrays = read_npz(path, "weights")
    elif isinstance(weights, dict):
        arrays = {k: np.asarray(v) for k, v in weights.items()}
    else:
        raise CnnSpecError(f"weights are a path to an .npz file or a dict of arrays keyed 'layer.param', "
                           f"received {type(weights).__name__}")
    from cnnspec.engine.model import describe_mismatches, weight_mismatches

    if any(weight_mismatches(expected, arrays)):
        raise CnnSpecError(describe_mismatches(model.name, expected, arrays), file=path)
    refuse_non_finite({k: arrays[k] for k in expected}, path)
    return {k: np.asarray(arrays[k], dtype) for k in expected}


def refuse_non_finite(arrays: dict, path=None) -> None:
    """A CnnSpecError naming the arrays (``{"layer.param": array}``) that hold NaN or infinite
    values: a damaged file or a diverged model."""
    bad = [k for k, v in arrays.items() if not np.all(np.isfinite(v))]
    if bad:
        raise CnnSpecError(f"weights hold NaN or infinite values: {', '.join(bad[:5])}"
                           + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""), file=path)
