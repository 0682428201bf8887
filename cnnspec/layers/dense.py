"""Fully connected layer (out = x @ w + b, w of shape (D, M)), flatten, dropout and droppath."""
from __future__ import annotations

import math

from cnnspec.layers.base import REQUIRED, Layer, LayerError, as_bool, as_float, as_int, fmt_shape


class Dense(Layer):
    op = "dense"
    params = {"units": REQUIRED, "bias": True, "trainable": True}
    n_positional = 1
    example = "dense(10)"

    def check_inputs(self, in_shapes):
        super().check_inputs(in_shapes)
        if len(in_shapes[0]) != 1:
            raise LayerError(f"`dense` needs a flat input, got {fmt_shape(in_shapes[0])}",
                             hint="add `flatten` first")

    def resolve(self, v, at, in_shapes):
        return {"units": as_int(v["units"], "units", at["units"]),
                "bias": as_bool(v["bias"], "bias", at["bias"]),
                "trainable": as_bool(v["trainable"], "trainable", at["trainable"])}

    def output_shape(self, cfg, in_shapes):
        return (cfg["units"],)

    def param_shapes(self, cfg, in_shapes):
        shapes = {"weight": (in_shapes[0][0], cfg["units"])}
        if cfg["bias"]:
            shapes["bias"] = (cfg["units"],)
        return shapes

    def macs(self, cfg, in_shapes, out_shape):
        return in_shapes[0][0] * cfg["units"]

    def describe(self, cfg):
        return str(cfg["units"]) + ("" if cfg["trainable"] else ", frozen")


class Flatten(Layer):
    op = "flatten"
    in_place = True              # a view: no new memory

    def output_shape(self, cfg, in_shapes):
        return (math.prod(in_shapes[0]),)


class Dropout(Layer):
    op = "dropout"
    params = {"p": REQUIRED}
    n_positional = 1
    in_place = True
    example = "dropout(0.5)"

    def resolve(self, v, at, in_shapes):
        return {"p": as_float(v["p"], f"{self.op} probability p", at["p"], 0.0, 1.0, high_open=True)}

    def describe(self, cfg):
        return f"p={cfg['p']:g}"


class DropPath(Dropout):
    """Stochastic depth (EfficientNet's residual branches): in training, each sample's whole input
    is zeroed with probability p and the rest scaled by 1/(1-p); identity at evaluation.

    Config key: ``p``."""
    op = "droppath"
    example = "droppath(0.2)"
