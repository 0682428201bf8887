"""The layer catalogue: one definition per layer kind, read by every stage.

``LAYERS[op]`` is the definition of ``op``: its arguments, ``configure`` (check and resolve them
against the input shapes), ``output_shape``, ``param_shapes``, ``state_shapes``, ``macs`` and
``window`` (receptive-field terms). All are pure functions of the configuration and input shapes.
"""
from cnnspec.layers.act import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from cnnspec.layers.base import Layer, LayerError, fmt_shape
from cnnspec.layers.conv import NAMED_KERNELS, Conv
from cnnspec.layers.dense import Dense, Dropout, Flatten
from cnnspec.layers.merge import Add, Concat
from cnnspec.layers.norm import BatchNorm
from cnnspec.layers.pool import AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool, SumPool
from cnnspec.layers.values import Size

LAYERS: dict[str, Layer] = {kind.op: kind() for kind in (
    Conv, MaxPool, AvgPool, SumPool, GlobalAvgPool, GlobalMaxPool, Dense, Flatten, Dropout,
    BatchNorm, ReLU, Sigmoid, Tanh, Softmax, Identity, LeakyReLU, Add, Concat)}

__all__ = ["LAYERS", "Layer", "LayerError", "NAMED_KERNELS", "Size", "fmt_shape"]
