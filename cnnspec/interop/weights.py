"""The weights an export carries: a weights file (checked against the network, names and shapes),
a dict of arrays, or the engine's seeded initial weights (so the exported model computes what
``net.compile(seed=...)`` computes).

The initial weights are drawn here as ``Model`` draws them (same generator, same layer order, the
same per-layer rule ``engine.init.init_params``), without building a Model: networks whose layers
the engine cannot run yet (dsl.md §10) export too. A test holds the two equal.
"""
from __future__ import annotations

import math
import os

import numpy as np

from cnnspec.errors import CnnSpecError


def initial_arrays(network, seed: int = 0, dtype: str = "float64") -> dict:
    """``{"layer.param": array}``: the parameters and state ``Model(network, seed=seed)`` starts
    from (float64 draws, cast to ``dtype``)."""
    from cnnspec.engine import init
    from cnnspec.engine.model import topological

    graph = network.graph
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(2)[0])
    params, state = {}, {}
    for name in topological(graph):
        node = graph.nodes[name]
        if node["op"] == "input":
            continue
        shapes = {k: tuple(v) for k, v in node.get("params", {}).items()}
        if shapes:
            values = init.init_params(node["op"], node["config"], shapes, rng)
            params.update({f"{name}.{k}": np.asarray(values[k], dtype) for k in shapes})
        if node.get("state"):
            values = init.init_state(node["op"], {k: tuple(v) for k, v in node["state"].items()})
            state.update({f"{name}.{k}": np.asarray(v, dtype) for k, v in values.items()})
    return {**params, **state}


def network_arrays(network, weights=None, seed: int = 0, dtype: str = "float32") -> dict:
    """``{"layer.param": array}`` for every parameter and state array of ``network``: from
    ``weights`` (a path to an ``.npz`` file, or a dict keyed like one) or, without it, the engine's
    initial weights for ``seed``. Names and shapes must match (a CnnSpecError lists what does not)."""
    expected = initial_arrays(network, seed, "float64")
    if weights is None:
        return {k: v.astype(dtype) for k, v in expected.items()}
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
    shape = lambda a: "x".join(map(str, a.shape)) or "scalar"        # noqa: E731
    lines = [f"  missing: {k} ({shape(v)})" for k, v in expected.items() if k not in arrays]
    lines += [f"  unexpected: {k} ({shape(v)})" for k, v in arrays.items() if k not in expected]
    lines += [f"  shape mismatch: {k} is {shape(arrays[k])} in the file, {shape(v)} in the network"
              for k, v in expected.items() if k in arrays and arrays[k].shape != v.shape]
    lines += [f"  not numbers: {k} ({arrays[k].dtype})" for k in expected
              if k in arrays and arrays[k].dtype.kind not in "fiu"]
    if lines:
        raise CnnSpecError("\n".join([f"weights do not match network `{network.name}`:"] + lines), file=path)
    bad = [k for k in expected if not np.all(np.isfinite(arrays[k]))]
    if bad:
        raise CnnSpecError(f"weights hold NaN or infinite values: {', '.join(bad[:5])}"
                           + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""), file=path)
    return {k: np.asarray(arrays[k], dtype) for k in expected}


def count(arrays: dict) -> int:
    return sum(math.prod(v.shape) for v in arrays.values())
