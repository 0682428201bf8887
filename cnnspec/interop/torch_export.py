"""A network as a readable, standalone PyTorch module, and its weights as a state dict.

One ``nn.Module`` class per network; one submodule per layer, named as in the ``.cnn`` file; each
block is a class of its own (its instances are submodules, so ``basic1.conv1`` is the state-dict
key of the layer ``basic1.conv1``); merges (``add``, ``concat``) are written in ``forward``. A
block's class takes the block's parameters (and ``in_channels``) and computes its layers'
arguments from them, as one would write it by hand; where the instances of a block differ in their
layers (an ``if`` in the block), each form gets a class.

A network that ends in ``softmax`` gets ``forward(x, logits=False)``: ``logits=True`` stops
before the softmax, for ``F.cross_entropy`` (the engine's fused softmax–cross-entropy).
"""
from __future__ import annotations

import keyword
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx

from cnnspec import __version__
from cnnspec.errors import CnnSpecError
from cnnspec.interop.table import HELPERS, Ctor, framework_layout, kind
from cnnspec.layers.values import Size

RESERVED_VARS = {"self", "torch", "nn", "F", "math", "logits"}
# the classes (and function) of table.HELPERS
HELPER_CLASSES = {"Pool", "PadConv1d", "PadConv2d", "CropConvTranspose1d", "CropConvTranspose2d", "crop_transposed",
                  "Reshape", "Channels", "DropPath", "Sample"}
# keyword arguments of torch.nn's convolutions at their defaults (a block's instances may differ in
# them); pooling's stride defaults to its kernel, so pooling has none here
DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "output_padding": 0}
CONVOLUTIONS = ("nn.Conv", "PadConv", "nn.ConvTranspose", "CropConvTranspose")


def _defaults(cls: str) -> dict:
    return DEFAULTS if cls.startswith(CONVOLUTIONS) else {}
# constructor arguments that are channel counts: (class prefix, position) -> a block parameter of
# the same value names them even when every instance has the same (other numbers stay literal)
CHANNEL_ARGS = {("nn.Conv", 0), ("nn.Conv", 1), ("PadConv", 0), ("PadConv", 1), ("nn.ConvTranspose", 0),
                ("nn.ConvTranspose", 1), ("CropConvTranspose", 0), ("CropConvTranspose", 1), ("nn.Linear", 0),
                ("nn.Linear", 1), ("nn.BatchNorm", 0)}


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p) or "Block"


def _var(name: str) -> str:
    """A Python variable for a tensor named ``name`` in the .cnn file."""
    return name + "_" if keyword.iskeyword(name) or name in RESERVED_VARS else name


def _param(name: str) -> str:
    """A block parameter as an argument of its class's ``__init__``: a Python keyword (``lambda``),
    ``self`` and the names that ``__init__`` itself uses (``nn``, ``super``, ...) take a trailing
    underscore, as tensors' variables do."""
    return name + "_" if name in HELPER_CLASSES or name == "super" else _var(name)


def _literal(value) -> str:
    return repr(tuple(value) if isinstance(value, Size) else value)


@dataclass
class Entry:
    """One step of a scope's forward: a layer (ctor) or a block instance (cls + its args)."""
    local: str                         # attribute name (the layer's or instance's local name)
    inputs: list                       # tensor locals ("in" for the scope's input)
    ctor: Ctor | None                  # None for merges
    op: str | None = None              # layer op (None for an instance)
    frozen: bool = False
    instance: str | None = None        # the full key of a block instance
    ref: tuple | None = None           # (class key, index): the instance's constructor arguments
    merge_node: dict | None = None


@dataclass
class Program:
    """A scope (the network, or one block instance) as the forward it runs."""
    path: tuple
    entries: list
    output: str                        # the local holding the result ("in": the input itself)
    in_channels: int | None = None
    block_type: str | None = None
    args: dict = field(default_factory=dict)
    inputs: list = field(default_factory=lambda: ["in"])    # the network's input names, or "in"


class TorchWriter:
    def __init__(self, network):
        self.net = network
        self.graph = network.graph
        output = self.graph.graph["output"]
        self.live = [n for n in self.graph.nodes if n in nx.ancestors(self.graph, output) | {output}]
        self.live_set = set(self.live)
        self.instances = {k: v for k, v in self.graph.graph.get("blocks", {}).items()}
        self.helpers = set()
        self.classes = {}                  # structure key -> {"programs": instances, "name": class}
        self.class_names = set()

    # -- scopes ------------------------------------------------------------------------------------
    def program(self, path: tuple) -> Program:
        prefix = ".".join(path) + "." if path else ""
        depth = len(path)
        under = [n for n in self.live if n.startswith(prefix) and self.graph.nodes[n]["op"] != "input"]
        under_set = set(under)
        # the scope's input: what its layers read from outside
        outside = {i for n in under for i in self.graph.nodes[n]["inputs"] if i not in under_set}
        if path and len(outside) > 1:
            raise CnnSpecError(f"block instance `{'.'.join(path)}` reads several tensors from outside")
        scope_input = next(iter(outside)) if path else None
        net_inputs = [] if path else [n for n in self.graph.graph.get("inputs") or [self.net.input_name]]

        entries, seen = [], set()
        for n in under:
            node = self.graph.nodes[n]
            first = n[len(prefix):].split(".")[0]
            if len(node["scope"]) == depth:                  # a layer of this scope
                ctor = kind(node["op"]).torch(node)           # None: a merge, written in forward
                if ctor is not None and ctor.helper:
                    self.helpers.add(ctor.helper)
                inputs = [self._local_tensor(i, prefix, scope_input, under_set) for i in node["inputs"]]
                frozen = bool(node.get("n_params")) and not node.get("trainable", True)
                entries.append(Entry(first, inputs, ctor, node["op"], frozen,
                                     merge_node=node if ctor is None else None))
            elif first not in seen:                            # a block instance, in order of its first layer
                seen.add(first)
                key = prefix + first
                inner = self.program((*path, first))
                if not inner.entries:
                    continue
                cls, ref = self.block_class(inner)
                inp = self._local_tensor(self._instance_input(key), prefix, scope_input, under_set)
                entries.append(Entry(first, [inp], Ctor(cls), None, instance=key, ref=ref))
        # the scope's output
        if path:
            escaping = [n for n in under if n == self.graph.graph["output"] or any(
                s not in under_set for s in self.graph.successors(n) if s in self.live_set)]
            out = self._local_tensor(escaping[-1], prefix, scope_input, under_set) if escaping else "in"
        else:
            out = self._local_tensor(self.graph.graph["output"], prefix, scope_input, under_set)
        channels = self.graph.nodes[scope_input]["output_shape"][0] if path else None
        info = self.instances.get(".".join(path), {}) if path else {}
        return Program(path, entries, out, channels, info.get("type"), dict(info.get("args", {})),
                       net_inputs or ["in"])

    def _instance_input(self, key):
        prefix = key + "."
        under = {n for n in self.live if n.startswith(prefix)}
        outside = {i for n in under for i in self.graph.nodes[n]["inputs"] if i not in under}
        return next(iter(outside))

    def _local_tensor(self, node_name, prefix, scope_input, under_set):
        """The local a tensor is known by in a scope: ``in`` (a block's input), an input's name (in
        the network), a layer's local name, or the local name of the (child) instance computing it."""
        if scope_input is None and self.graph.nodes[node_name]["op"] == "input":
            return node_name
        if node_name == scope_input or node_name not in under_set:
            return "in"
        return node_name[len(prefix):].split(".")[0]

    # -- block classes -----------------------------------------------------------------------------
    def block_class(self, prog: Program):
        """(class name, constructor kwargs) for a block instance; classes are shared between the
        instances of a block whose layers have the same form."""
        shape_key = (prog.block_type, prog.output, tuple(
            (e.local, tuple(e.inputs), e.op, e.frozen, e.ref[0] if e.ref else None,
             None if e.ctor is None else (e.ctor.cls, tuple(_shape_of(v) for v in e.ctor.args),
                                         tuple((k, _shape_of(v)) for k, v in e.ctor.kwargs.items()
                                               if not (k in _defaults(e.ctor.cls) and isinstance(v, int)))))
            for e in prog.entries))
        group = self.classes.setdefault(shape_key, {"programs": [], "name": None})
        group["programs"].append(prog)
        if group["name"] is None:
            base = _camel(prog.block_type or "Block")
            name, k = base, 2
            while name in self.class_names or name in RESERVED_VARS or name in HELPER_CLASSES:
                name, k = f"{base}{k}", k + 1
            self.class_names.add(name)
            group["name"] = name
        return group["name"], (shape_key, len(group["programs"]) - 1)

    def resolve_classes(self):
        """Write each block class from all its instances: numbers that vary become expressions of
        the block's parameters and ``in_channels``."""
        sources, ctor_args = [], {}
        for shape_key, group in self.classes.items():
            progs = group["programs"]
            envs = [{"in_channels": p.in_channels, **{_param(k): _as_int(v) for k, v in p.args.items()
                                                      if _as_int(v) is not None}} for p in progs]
            used, extra = [], []
            lines = []
            for pos, entry in enumerate(progs[0].entries):
                if entry.ctor is None:
                    continue
                if entry.ref is not None:                 # a nested block: its class's arguments
                    values = [ctor_args[p.entries[pos].ref] for p in progs]
                    kwargs = {k: self._expr([v[k] for v in values], envs, used, extra, f"{entry.local}_{k}",
                                            prefer_in=k == "in_channels", named=True) for k in values[0]}
                    lines.append((entry, [], kwargs))
                    continue
                variants = [p.entries[pos].ctor for p in progs]
                # the first argument of these is the channels of their input: `in_channels` when
                # that input is the block's, else (preferably) an expression of the parameters
                reads_in = entry.op in ("conv", "dense", "batchnorm") and entry.inputs == ["in"]
                channel = [any(entry.ctor.cls.startswith(prefix) and pos == a for prefix, pos in CHANNEL_ARGS)
                           for a in range(len(entry.ctor.args))]
                args = [self._expr([v.args[a] for v in variants], envs, used, extra, f"{entry.local}_arg{a}",
                                   prefer_in=reads_in and a == 0, named=channel[a])
                        for a in range(len(entry.ctor.args))]
                # keyword arguments some instances leave at their default (stride=1) take it
                fullest = max(variants, key=lambda v: len(v.kwargs)).kwargs
                keys = list(dict.fromkeys([*fullest, *(k for v in variants for k in v.kwargs)]))
                kwargs, defaults = {}, _defaults(entry.ctor.cls)
                for key in keys:
                    values = [v.kwargs.get(key, defaults.get(key)) for v in variants]
                    if key in defaults and all(value == defaults[key] for value in values):
                        continue
                    kwargs[key] = self._expr(values, envs, used, extra, f"{entry.local}_{key}", False,
                                             named=key == "groups")
                lines.append((entry, args, kwargs))
            params = ["in_channels"] if "in_channels" in used else []
            params += [_param(p) for p in progs[0].args if _param(p) in used and _param(p) != "in_channels"]
            params += [name for name, _ in extra]
            for i, env in enumerate(envs):
                values = {name: env[name] for name in params if name in env}
                values.update({name: vals[i] for name, vals in extra})
                ctor_args[(shape_key, i)] = values
            signature = ", ".join(["self"] + params)
            doc = f"block {progs[0].block_type}" + (
                f"({', '.join(progs[0].args)})" if progs[0].args else "")
            body = [f"class {group['name']}(nn.Module):",
                    f'    """{doc} of the .cnn file."""',
                    "",
                    f"    def __init__({signature}):",
                    "        super().__init__()"]
            for entry, args, kwargs in lines:
                body += self._construct(entry, args, kwargs)
            body += [""] + self.forward(progs[0], "x")
            sources.append("\n".join(body))
        return sources, ctor_args

    def _expr(self, values, envs, used, extra, fallback, prefer_in, named=True):
        """Python source for an argument whose value in each instance is ``values``: a literal
        when every instance has the same (unless ``named``: a channel count, which a parameter of
        the same value names), else an expression of the parameters that fits every instance."""
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        if ints and len(set(values)) == 1 and not named:
            return _literal(values[0])
        if ints:
            names = [n for n in envs[0] if all(n in env for env in envs)]
            names.sort(key=lambda n: (n != "in_channels") if prefer_in else (n == "in_channels"))
            for n in names:
                if all(env[n] == v for env, v in zip(envs, values)):
                    used.append(n)
                    return n
            for n in names:
                for m in range(2, 65):
                    if all(env[n] * m == v for env, v in zip(envs, values)):
                        used.append(n)
                        return f"{m} * {n}"
                    if all(env[n] and env[n] % m == 0 and env[n] // m == v for env, v in zip(envs, values)):
                        used.append(n)
                        return f"{n} // {m}"
            for a in names:
                for b in names:
                    if a < b and all(env[a] * env[b] == v for env, v in zip(envs, values)):
                        used += [a, b]
                        return f"{a} * {b}"
            if len(set(values)) == 1:
                return _literal(values[0])
        elif all(v == values[0] for v in values):
            return _literal(values[0])
        name = re.sub(r"\W", "_", fallback)
        extra.append((name, values))
        return name

    def _construct(self, entry, args, kwargs) -> list:
        """``self.NAME = Cls(args, key=value)`` (sources already), and freezing when it is frozen."""
        parts = list(args) + [f"{k}={v}" for k, v in kwargs.items()]
        call = f"{entry.ctor.cls}({', '.join(parts)})"
        lines = [f"        self.add_module({entry.local!r}, {call})" if _odd(entry.local) else
                 f"        self.{entry.local} = {call}"]
        if entry.frozen:
            lines.append(f"        {self._ref(entry.local)}.requires_grad_(False)          # trainable=false")
        return lines

    def _ref(self, local):
        return f"self._modules[{local!r}]" if _odd(local) else f"self.{local}"

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, prog: Program, input_var: str, logits_flag=False) -> list:
        """The lines of ``forward``: one assignment per step; a tensor used later than the next
        step (or by a merge) keeps a variable named after its layer, the chain reuses one."""
        entries = prog.entries
        users = defaultdict(list)
        for k, e in enumerate(entries):
            for t in dict.fromkeys(e.inputs):
                users[t].append(k)
        producer = {e.local: k for k, e in enumerate(entries)}
        producer.update({name: -1 for name in prog.inputs})

        def needs(t):
            ks = users.get(t, [])
            return len(ks) > 1 or any(entries[k].ctor is None for k in ks) or (ks and ks[0] != producer[t] + 1) \
                or (t == prog.output and entries and producer.get(t, -1) != len(entries) - 1)

        if prog.inputs == ["in"]:
            var = {"in": input_var if not needs("in") or input_var != "x" else "inp"}
        else:
            var = {name: _var(name) for name in prog.inputs}
        chain = "h" if "x" in var.values() else "x"
        lines = []
        signature = ", ".join(["self", *var.values()]) + (", logits=False" if logits_flag else "")
        lines.append(f"    def forward({signature}):")
        for k, e in enumerate(entries):
            args = [var[t] for t in e.inputs]
            if e.ctor is None:
                expr = kind(e.op).torch_merge(e.merge_node, args)
            else:
                expr = f"{self._ref(e.local)}({', '.join(args)})"
            target = _var(e.local) if needs(e.local) else chain
            if logits_flag and k == len(entries) - 1:
                lines.append(f"        if logits:                       # the scores before `{e.local}`")
                lines.append(f"            return {args[0]}")
            lines.append(f"        {target} = {expr}")
            var[e.local] = target
        lines.append(f"        return {var[prog.output]}")
        return lines

    # -- the file ----------------------------------------------------------------------------------
    def network_class(self) -> str:
        prog = self.program(())
        sources, ctor_args = self.resolve_classes()
        name = _var(self.net.name)
        while name in self.class_names or name in HELPER_CLASSES:
            name += "Net"
        out_node = self.graph.nodes[self.graph.graph["output"]]
        logits = out_node["op"] == "softmax" and not out_node["scope"] and len(prog.entries) > 0
        inputs = ", ".join(f"{n} {'x'.join(map(str, self.graph.nodes[n]['output_shape']))}" for n in prog.inputs)
        doc = [f'    """{self.net.name}' + (f" ({os.path.basename(self.net.file)})" if self.net.file else "")
               + f": input{'s' if len(prog.inputs) > 1 else ''} {inputs}."]
        if logits:
            doc.append("")
            doc.append("    forward(x, logits=True) returns the scores before the final softmax (for F.cross_entropy).")
            doc.append('    """')
        else:
            doc[-1] += '"""'
        body = [f"class {name}(nn.Module):"] + doc + ["", "    def __init__(self):", "        super().__init__()"]
        for entry in prog.entries:
            if entry.ctor is None:
                continue
            if entry.ref is not None:
                body += self._construct(entry, [], {k: _literal(v) for k, v in ctor_args[entry.ref].items()})
            else:
                body += self._construct(entry, [_literal(a) for a in entry.ctor.args],
                                        {k: _literal(v) for k, v in entry.ctor.kwargs.items()})
        body += [""] + self.forward(prog, None, logits_flag=logits)
        self.network_name = name
        return "\n\n\n".join(sources + ["\n".join(body)])


def _odd(local: str) -> bool:
    """A layer name Python cannot write as an attribute (a keyword)."""
    return keyword.iskeyword(local)


def _shape_of(value):
    """What must be equal for two constructor arguments to share one expression."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return "int"
    return value


def _as_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, Size)) and value and len(set(value)) == 1 and isinstance(value[0], int):
        return int(value[0])
    return None


# ---- public entry points ---------------------------------------------------------------------------

def torch_source(networks, source_file: str | None = None, module_file: str | None = None) -> tuple:
    """``(text, class names)``: the Python source of a module file defining one ``nn.Module``
    class per network of ``networks`` (one Network or a list). Its docstring shows loading the
    first network's state dict, named as :func:`export_torch` names it beside ``module_file``
    (the .py written; default: named after the .cnn file, as ``export`` names it without ``-o``)."""
    networks = networks if isinstance(networks, (list, tuple)) else [networks]
    classes, names, helpers, taken = [], [], set(), set()
    for net in networks:
        _check_names(net)
        writer = TorchWriter(net)
        writer.class_names |= taken
        text = writer.network_class()
        taken |= writer.class_names | {writer.network_name}
        classes.append(text)
        names.append(writer.network_name)
        helpers |= writer.helpers
    origin = source_file or networks[0].file
    usage = [f"    model = {names[0]}()",
             f"    model.load_state_dict(torch.load(\"{_pt_hint(module_file or origin, names[0], len(names))}\"))"]
    doc = [f'"""{", ".join(n.name for n in networks)}: exported by cnnspec {__version__}'
           + (f" from {os.path.basename(origin)}" if origin else "") + ".",
           "",
           *usage,
           "",
           "One submodule per layer, named as in the .cnn file (dense layers are nn.Linear, whose weight",
           "is (out, in)); blocks are classes; merges are written in forward.",
           '"""']
    imports = (["import math", ""] if "Pool" in helpers else []) + [
        "import torch", "import torch.nn.functional as F", "from torch import nn"]
    helper_src = [HELPERS[h].strip("\n") for h in sorted(helpers)]
    parts = ["\n".join(doc + imports)] + helper_src + classes
    return "\n\n\n".join(parts) + "\n", names


def _pt_hint(origin, name, count) -> str:
    """The state dict's file name beside the file ``origin`` (a .cnn or the module's .py)."""
    stem = os.path.splitext(os.path.basename(origin))[0] if origin else name.lower()
    return _pt_name(stem, name, count)


def _pt_name(stem: str, name: str, count: int) -> str:
    """The state dict file of the network whose class is ``name`` beside the module ``stem.py``."""
    return f"{stem}.pt" if count == 1 else f"{stem}.{name}.pt"


def _check_names(net):
    import torch.nn as nn

    # the class's names and those every instance sets in __init__ (`training`, `_modules`, ...:
    # `self.training = nn.ReLU()` builds, then `.eval()` raises TypeError)
    taken = set(dir(nn.Module)) | set(vars(nn.Module())) | {"T_destination", "call_super_init", "dump_patches"}
    for n in net.graph.nodes:
        for part in n.split("."):
            if part in taken:
                raise CnnSpecError(f"the layer `{n}` has a name that torch.nn.Module uses for itself "
                                   f"(`{part}`); rename it in the .cnn file to export it to PyTorch")


def state_dict(network, arrays: dict, dtype: str = "float32") -> dict:
    """The PyTorch state dict of ``network``'s module from cnnspec arrays ``layer.param``."""
    import numpy as np
    import torch

    graph = network.graph
    output = graph.graph["output"]
    live = nx.ancestors(graph, output) | {output}
    out = {}
    for key, value in arrays.items():
        layer, param = key.rsplit(".", 1)
        if layer not in live:
            continue
        op = graph.nodes[layer]["op"]
        value = framework_layout(op, param, np.asarray(value))
        out[key] = torch.tensor(np.ascontiguousarray(value), dtype=getattr(torch, dtype))
        if op == "batchnorm" and param == "running_var":
            out[f"{layer}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def module_from_source(text: str, name: str, tag: str = "cnnspec_export"):
    """Execute generated source as a fresh module and return the class ``name``."""
    import sys
    import types

    module = types.ModuleType(f"{tag}_{name}")
    module.__file__ = f"<cnnspec export of {name}>"
    sys.modules[module.__name__] = module              # classes pickle and inspect by module
    exec(compile(text, module.__file__, "exec"), module.__dict__)
    return getattr(module, name)


def to_torch(network, weights=None, seed: int = 0, dtype: str = "float32"):
    """``network`` as a ``torch.nn.Module`` instance holding ``weights`` (an ``.npz`` file or a
    dict; default: the engine's initial weights for ``seed``), in evaluation mode."""
    from cnnspec.interop.deps import require
    from cnnspec.interop.weights import network_arrays

    torch = require("torch")
    if dtype not in ("float32", "float64"):
        raise CnnSpecError(f"unknown dtype `{dtype}`; choose float32 or float64")
    text, names = torch_source(network)
    cls = module_from_source(text, names[0])
    module = cls().to(getattr(torch, dtype))       # the dtype first: loading copies into it
    module.load_state_dict(state_dict(network, network_arrays(network, weights, seed, dtype), dtype))
    module.source = text
    return module.eval()


def export_torch(networks, path, weights=None, seed: int = 0) -> list:
    """Write the module file ``path`` (.py) and one state dict per network beside it (``stem.pt``,
    or ``stem.NAME.pt`` for several networks). ``weights``: one per network (a list) or one for a
    single network. Returns ``[(class name, state dict path)]``."""
    from cnnspec.atomic import write_atomic, write_text
    from cnnspec.interop.deps import require
    from cnnspec.interop.weights import network_arrays

    torch = require("torch")
    networks = networks if isinstance(networks, (list, tuple)) else [networks]
    weights = weights if isinstance(weights, (list, tuple)) else [weights] * len(networks)
    path = os.fspath(path)
    stem = os.path.splitext(path)[0]
    text, names = torch_source(networks, module_file=path)     # its docstring: the files written here
    pts = [_pt_name(stem, name, len(networks)) for name in names]
    states = [state_dict(net, network_arrays(net, w, seed)) for net, w in zip(networks, weights)]
    written = []
    write_text(path, text, "module file")
    for name, sd, pt in zip(names, states, pts):
        write_atomic(pt, lambda tmp, sd=sd: torch.save(sd, tmp), "state dict")
        written.append((name, pt))
    return written
