"""cnnspec: a declarative graph compiler, CPU trainer and auto-grader for convolutional networks.

    net = cnnspec.load("specs/lenet5.cnn")     # parse, build the graph, analyse it
    gan = cnnspec.load_all("specs/dcgan.cnn")  # {"Generator": Network, "Discriminator": Network}
    net.summary()                              # shapes, params, MACs, memory, receptive fields
    model = net.compile(dtype="float32", seed=0)
"""
from cnnspec.errors import CnnSpecError

__version__ = "0.1.0"
__all__ = ["CnnSpecError", "Network", "from_onnx", "load", "load_all", "loads", "loads_all", "__version__"]


def load(path, **kwargs):
    """Read a ``.cnn`` file and return its analysed :class:`Network` (``network=NAME`` picks one
    of several; the first by default)."""
    from cnnspec.network import load as _load

    return _load(path, **kwargs)


def loads(text, **kwargs):
    """Parse ``.cnn`` text and return its analysed :class:`Network` (``file=``, ``network=``)."""
    from cnnspec.network import loads as _loads

    return _loads(text, **kwargs)


def load_all(path):
    """Every network of a ``.cnn`` file, analysed: ``{name: Network}`` in the order written."""
    from cnnspec.network import load_all as _load_all

    return _load_all(path)


def loads_all(text, **kwargs):
    """Every network of ``.cnn`` text, analysed: ``{name: Network}`` (``file=``)."""
    from cnnspec.network import loads_all as _loads_all

    return _loads_all(text, **kwargs)


def from_onnx(path, name=None):
    """Read an ONNX model: returns ``(network, weights)``, the analysed :class:`Network` and its
    weights ``{"layer.param": array}`` (what ``cnnspec import`` writes). Needs ``onnx``."""
    from cnnspec.interop.onnx_import import from_onnx as _from_onnx

    return _from_onnx(path, name)


def __getattr__(name):
    if name == "Network":
        from cnnspec.network import Network

        return Network
    raise AttributeError(f"module 'cnnspec' has no attribute {name!r}")
