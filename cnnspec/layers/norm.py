"""Batch normalisation: per channel on CxHxW / CxL, per feature on flat input."""
from __future__ import annotations

from cnnspec.layers.base import Layer, as_bool, as_float


class BatchNorm(Layer):
    op = "batchnorm"
    params = {"eps": 1e-5, "momentum": 0.1, "trainable": True}

    def resolve(self, v, at, in_shapes):
        return {"eps": as_float(v["eps"], "eps", at["eps"], 0.0, low_open=True),
                "momentum": as_float(v["momentum"], "momentum", at["momentum"], 0.0, 1.0),
                "trainable": as_bool(v["trainable"], "trainable", at["trainable"])}

    def param_shapes(self, cfg, in_shapes):        # gamma and beta, named as PyTorch names them
        return {"weight": (in_shapes[0][0],), "bias": (in_shapes[0][0],)}

    def state_shapes(self, cfg, in_shapes):
        return {"running_mean": (in_shapes[0][0],), "running_var": (in_shapes[0][0],)}

    def describe(self, cfg):
        return "" if cfg["trainable"] else "frozen"
