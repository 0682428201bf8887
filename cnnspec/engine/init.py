"""Initial values of parameters and state, as PyTorch's layers initialise them.

conv and dense: ``kaiming_uniform_(weight, a=sqrt(5))``, which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
and the bias from the same interval (``nn.Conv2d.reset_parameters``, ``nn.Linear.reset_parameters``);
fan_in is (C/groups)*kh*kw for conv and D for dense. batchnorm: weight 1, bias 0, running mean 0,
running variance 1. Values are drawn in float64 from one seeded generator in layer order, then cast,
so a float32 and a float64 model of the same seed hold the same weights up to rounding.
"""
from __future__ import annotations

import math

import numpy as np


def init_params(op: str, config: dict, shapes: dict, rng: np.random.Generator) -> dict:
    """Initial parameters of one layer: {name: float64 array of shapes[name]}."""
    if op == "batchnorm":
        return {name: (np.ones if name == "weight" else np.zeros)(shape) for name, shape in shapes.items()}
    out = {}
    weight = shapes["weight"]
    # conv weight (F, C/groups, *kernel); dense weight (D, M): fan_in is everything but axis 0 for
    # conv, axis 0 for dense (its weight is stored transposed relative to torch's (M, D))
    fan_in = weight[0] if op == "dense" else math.prod(weight[1:])
    bound = 1.0 / math.sqrt(fan_in)
    given = config.get("weights") if op == "conv" else None
    if given is not None:
        out["weight"] = np.array(given, dtype=np.float64).reshape(weight)
    else:
        out["weight"] = rng.uniform(-bound, bound, size=weight)
    if "bias" in shapes:
        # a kernel given with `weights=` is a filter the user chose: a random bias would blur it
        out["bias"] = np.zeros(shapes["bias"]) if given is not None else rng.uniform(-bound, bound, size=shapes["bias"])
    return out


def init_state(op: str, shapes: dict) -> dict:
    """Initial state (batchnorm's running statistics): mean 0, variance 1."""
    return {name: (np.ones if name == "running_var" else np.zeros)(shape) for name, shape in shapes.items()}
