"""Activations, element-wise (computed in place) except softmax, which runs over channels.

Each is the function of ``torch.nn.functional`` of the same name (``gelu`` the exact one, with
erf; ``softplus`` with beta 1, threshold 20). Only ``leaky_relu`` (config key ``slope``) and
``elu`` (config key ``alpha``) have arguments."""
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


class ScaledActivation(Activation):
    """An activation with one number argument, ``arg`` (its config key), defaulting to ``default``."""
    arg, default = "", 0.0

    def __init_subclass__(cls):
        cls.params = {cls.arg: cls.default}
        cls.n_positional = 1

    def resolve(self, v, at, in_shapes):
        return {self.arg: as_float(v[self.arg], self.arg, at[self.arg])}

    def describe(self, cfg):
        return f"{cfg[self.arg]:g}"


class LeakyReLU(ScaledActivation):
    """x if x > 0 else slope*x. Config key: ``slope``."""
    op = "leaky_relu"
    arg, default = "slope", 0.01

class ReLU6(Activation):
    op = "relu6"                 # min(max(x, 0), 6)


class HardSwish(Activation):
    op = "hardswish"             # x * relu6(x + 3) / 6


class HardSigmoid(Activation):
    op = "hardsigmoid"           # relu6(x + 3) / 6


class SiLU(Activation):
    op = "silu"                  # x * sigmoid(x) (swish)


class GELU(Activation):
    op = "gelu"                  # x * Phi(x) = x/2 * (1 + erf(x / sqrt(2)))


class Softplus(Activation):
    op = "softplus"              # log(1 + exp(x)); x itself above 20, as PyTorch


class ELU(ScaledActivation):
    """x if x > 0 else alpha*(exp(x) - 1). Config key: ``alpha``."""
    op = "elu"
    arg, default = "alpha", 1.0
