"""The layer catalogue: one definition per layer kind, read by every stage.

``LAYERS[op]`` is the definition of ``op``: its arguments, ``configure`` (check and resolve them
against the input shapes), ``output_shape``, ``param_shapes``, ``state_shapes``, ``macs`` and
``window`` (receptive-field terms). All are pure functions of the configuration and input shapes.
"""
from cnnspec.layers.act import (ELU, GELU, HardSigmoid, HardSwish, Identity, LeakyReLU, ReLU, ReLU6, Sigmoid,
                                SiLU, Softmax, Softplus, Tanh)
from cnnspec.layers.base import Layer, LayerError, fmt_shape
from cnnspec.layers.conv import NAMED_KERNELS, Conv, ConvTranspose
from cnnspec.layers.dense import Dense, DropPath, Dropout, Flatten
from cnnspec.layers.merge import Add, Concat, Mul
from cnnspec.layers.norm import BatchNorm
from cnnspec.layers.pool import (AdaptiveAvgPool, AdaptiveMaxPool, AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool,
                                 SumPool)
from cnnspec.layers.reshape import Channels, Reshape, Shuffle, Upsample
from cnnspec.layers.sample import Sample
from cnnspec.layers.values import Size

LAYERS: dict[str, Layer] = {kind.op: kind() for kind in (
    Conv, MaxPool, AvgPool, SumPool, GlobalAvgPool, GlobalMaxPool, Dense, Flatten, Dropout,
    BatchNorm, ReLU, Sigmoid, Tanh, Softmax, Identity, LeakyReLU, Add, Concat,
    # dsl.md §10
    ConvTranspose, Upsample, Reshape, Mul, ReLU6, HardSwish, HardSigmoid, SiLU, GELU, Softplus, ELU,
    AdaptiveAvgPool, AdaptiveMaxPool, Channels, Shuffle, DropPath, Sample)}

__all__ = ["LAYERS", "Layer", "LayerError", "NAMED_KERNELS", "Size", "fmt_shape"]
