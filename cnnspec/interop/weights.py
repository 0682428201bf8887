"""The weights an export carries: a weights file (checked against the network, names and shapes),
a dict of arrays, or the engine's seeded initial weights (so the exported model computes what
``net.compile(seed=...)`` computes)."""
from __future__ import annotations

import os

import numpy as np


def network_arrays(network, weights=None, seed: int = 0, dtype: str = "float32") -> dict:
    """``{"layer.param": array}`` for every parameter and state array of ``network``: from
    ``weights`` (a path to an ``.npz`` file or a dict keyed like one) or, without it, the values
    ``Model(network, seed=seed)`` starts from. Names and shapes are checked as ``Model.load``
    checks them (a CnnSpecError says which differ)."""
    from cnnspec.engine.model import Model      # parameters and their initial values; no numba

    model = Model(network, dtype=dtype, seed=seed)
    if weights is not None:
        if isinstance(weights, (str, os.PathLike)):
            model.load(weights)
        else:
            _load_dict(model, weights)
    return {key: np.array(value) for key, value in model.arrays().items()}


def _load_dict(model, arrays: dict) -> None:
    import tempfile

    from cnnspec.errors import CnnSpecError

    with tempfile.TemporaryDirectory() as tmp:           # one checking path: Model.load's
        path = os.path.join(tmp, "weights.npz")
        try:
            np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
        except (TypeError, ValueError) as exc:
            raise CnnSpecError(f"weights must be a dict of arrays keyed 'layer.param': {exc}") from None
        try:
            model.load(path)
        except CnnSpecError as err:
            raise CnnSpecError(err.message, hint=err.hint) from None
