"""Activations, element-wise (computed in place) except softmax, which runs over channels."""
from __future__ import annotations

from cnnspec.layers.base import Layer, as_float


class Activation(Layer):
    in_place = True


class ReLU(Activation):
    op = "relu"


class Sigmoid(Activation):
    op = "sigmoid"


class Tanh(Activation):
    op = "tanh"


class Identity(Activation):
    op = "identity"


class Softmax(Activation):
    op = "softmax"               # over channels / features (axis 1 with the batch)


class LeakyReLU(Activation):
    op = "leaky_relu"
    params = {"slope": 0.01}
    n_positional = 1

    def resolve(self, v, at, in_shapes):
        return {"slope": as_float(v["slope"], "slope", at["slope"])}

    def describe(self, cfg):
        return f"{cfg['slope']:g}"
