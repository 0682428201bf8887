"""``Network``: a parsed, built and analysed ``.cnn`` network, and the entry points that make one."""
from __future__ import annotations

import os

import networkx as nx

from cnnspec.analysis import infer
from cnnspec.analysis.summary import summarize, table
from cnnspec.errors import CnnSpecError, plural
from cnnspec.limits import gc_paused


def load(path, network: str | None = None) -> "Network":
    """Read a ``.cnn`` file and return its analysed :class:`Network`: the one called ``network``,
    or the first of the file."""
    from cnnspec.lang import compile_file

    path = os.fspath(path)
    with gc_paused():
        return Network(infer(compile_file(path, network=_check_name(network))))


def loads(text: str, file: str | None = None, network: str | None = None) -> "Network":
    """Parse ``.cnn`` text (``file`` names it in errors and anchors relative imports); the
    network called ``network``, or the first."""
    from cnnspec.lang import compile_source

    with gc_paused():
        return Network(infer(compile_source(_check_text(text), file=file, network=_check_name(network))))


def load_all(path) -> dict:
    """Every network of a ``.cnn`` file, analysed: ``{name: Network}`` in the order written."""
    from cnnspec.lang import read_source

    path = os.fspath(path)
    return loads_all(read_source(path), file=path)


def loads_all(text: str, file: str | None = None) -> dict:
    """Every network of ``.cnn`` text, analysed: ``{name: Network}`` in the order written."""
    from cnnspec.lang import compile_all

    with gc_paused():
        return {name: Network(infer(graph)) for name, graph in compile_all(_check_text(text), file).items()}


def _check_text(text):
    if not isinstance(text, str):
        raise CnnSpecError(f"expected .cnn text as a str, received {type(text).__name__}")
    return text


def _check_name(network):
    if network is not None and not isinstance(network, str):
        raise CnnSpecError(f"network is the name of a network of the file, received {network!r}")
    return network


class Network:
    """A network described in a ``.cnn`` file.

    ``graph`` is a ``networkx.DiGraph`` with one node per layer (keyed by its dotted name) carrying
    the resolved configuration and the analysis (see :func:`cnnspec.analysis.infer`).
    """

    def __init__(self, graph: nx.DiGraph):
        self.graph = graph

    @property
    def name(self) -> str:
        return self.graph.graph["network"]

    @property
    def file(self) -> str | None:
        return self.graph.graph.get("file")

    @property
    def networks(self) -> list:
        """The names of every network of the file this one is in (it is one of them)."""
        return list(self.graph.graph.get("networks") or [self.name])

    @property
    def input_name(self) -> str:
        """The first input's name (the current tensor a network starts from)."""
        return self.graph.graph["input"]

    @property
    def input_names(self) -> list:
        """Every input's name, in the order declared."""
        return list(self.graph.graph.get("inputs") or [self.input_name])

    @property
    def input_shapes(self) -> dict:
        """{input name: shape} of every input, in the order declared."""
        return {name: tuple(self.graph.nodes[name]["output_shape"]) for name in self.input_names}

    @property
    def loss_terms(self) -> list:
        """Layers that add to the training loss (``sample``'s KL term): [{"layer", "term", "weight"}]."""
        return [{"layer": name, **self.graph.nodes[name]["loss_term"]} for name in self.graph.graph.get("loss_terms", [])]

    @property
    def input_shape(self) -> tuple:
        return tuple(self.graph.nodes[self.input_name]["output_shape"])

    @property
    def output_name(self) -> str:
        return self.graph.graph["output"]

    @property
    def output_shape(self) -> tuple:
        return tuple(self.graph.nodes[self.output_name]["output_shape"])

    @property
    def train_config(self) -> dict:
        """The file's ``train`` section as plain values ({} when it has none)."""
        return dict(self.graph.graph.get("train") or {})

    @property
    def warnings(self) -> list:
        return list(self.graph.graph.get("warnings", []))

    def layers(self) -> list:
        """Layer names in topological order (the input first)."""
        return list(self.graph.nodes)

    def __getitem__(self, name: str) -> dict:
        return self.graph.nodes[name]

    def summary(self, batch: int = 1, dtype: str = "float32", depth: int | None = None) -> dict:
        """Per-layer shapes, parameters, MACs, memory and receptive fields, and totals, as data:
        the same object ``cnnspec summary --json`` prints. ``depth=N`` lists every block instance
        nested N levels deep as one entry (``"op": "block"``) instead of its layers."""
        _check_batch(batch)
        with gc_paused():
            return summarize(self.graph, batch, dtype, depth)

    def summary_table(self, batch: int = 1, dtype: str = "float32", depth: int | None = None,
                      columns=None) -> str:
        """The summary as a table (what ``cnnspec summary`` prints); ``depth`` as in
        :meth:`summary`, ``columns`` the columns to show, e.g. ``"op,output,kernel,params"``
        (keys of ``cnnspec.analysis.summary.COLUMNS``, or ``"all"``)."""
        _check_batch(batch)
        with gc_paused():
            return table(self.graph, batch, dtype, depth, columns)

    def render(self, path, fmt: str | None = None, until: str | None = None) -> str:
        """Draw the graph with graphviz to ``path`` (.svg, .png, .pdf or .dot); returns the path
        written. ``until`` draws only that layer and the layers that feed it."""
        from cnnspec.render.graph import render

        return render(self, os.fspath(path), fmt, until)

    def to_dot(self) -> str:
        from cnnspec.render.graph import dot_source

        return dot_source(self)

    def _repr_svg_(self):
        from cnnspec.render.graph import svg

        return svg(self)

    def compile(self, dtype: str = "float32", seed: int = 0, **kwargs):
        """A runnable :class:`cnnspec.engine.Model` of this network (numba kernels)."""
        from cnnspec.engine import Model

        return Model(self, dtype=dtype, seed=seed, **kwargs)

    def to_torch(self, weights=None, seed: int = 0, dtype: str = "float32"):
        """This network as a ``torch.nn.Module`` (evaluation mode) holding ``weights`` (an ``.npz``
        file or a dict ``{"layer.param": array}``; default: the engine's initial weights for
        ``seed``). Its source is ``module.source``. Needs PyTorch."""
        from cnnspec.interop.torch_export import to_torch

        return to_torch(self, weights, seed, dtype)

    def to_onnx(self, path=None, weights=None, seed: int = 0):
        """Write this network as an ONNX model (opset 21) to ``path``; returns the ModelProto.
        ``weights`` as for :meth:`to_torch`. Needs the ``onnx`` package."""
        from cnnspec.interop.onnx_export import to_onnx

        return to_onnx(self, path, weights, seed)

    def __repr__(self) -> str:
        t = self.summary()["totals"]
        inputs = ", ".join(f"{name} {shape}" for name, shape in self.input_shapes.items())
        layers = plural(len(self.graph) - len(self.input_names), "layer")
        return (f"<Network {self.name}: {layers}, input {inputs}, "
                f"output {self.output_shape}, {t['params']:,} params, {t['macs']:,} MACs>")


def _check_batch(batch) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CnnSpecError(f"batch must be a positive integer, received: {batch!r}")
