"""cnnspec: a declarative graph compiler, CPU trainer and auto-grader for convolutional networks.

    net = cnnspec.load("specs/lenet5.cnn")     # parse, build the graph, analyse it
    net.summary()                              # shapes, params, MACs, memory, receptive fields
    model = net.compile(dtype="float32", seed=0)
"""
from cnnspec.errors import CnnSpecError

__version__ = "0.1.0"
__all__ = ["CnnSpecError", "Network", "load", "loads", "__version__"]


def load(path, **kwargs):
    """Read a ``.cnn`` file and return its analysed :class:`Network`."""
    from cnnspec.network import load as _load

    return _load(path, **kwargs)


def loads(text, **kwargs):
    """Parse ``.cnn`` text and return its analysed :class:`Network`."""
    from cnnspec.network import loads as _loads

    return _loads(text, **kwargs)


def __getattr__(name):
    if name == "Network":
        from cnnspec.network import Network

        return Network
    raise AttributeError(f"module 'cnnspec' has no attribute {name!r}")
