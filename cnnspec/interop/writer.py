"""Imported layers as readable ``.cnn`` text: chains, names where branches need them, repeated
structures as blocks.

* **Regions.** A layer through which every path from the input to the output passes is a cut;
  the layers between two cuts form a region. A region of one layer is a step of the main chain;
  a region with branches (a residual unit, an inception module) ends at its merge, and takes the
  element-wise activations right after it (``add -> relu``).
* **Blocks.** Regions with the same layers, wiring and arguments, except channel counts (and
  square strides), become one ``block``; the arguments that differ become its parameters (``c``,
  ``4*c`` when one is always a multiple of another). A structure met once stays inline.
* **Text.** Chains are written with ``->``; a tensor used by a merge, by several layers or not by
  the next step gets a name (``x1 = ...``); consecutive equal steps are written ``step * N`` or
  ``(a -> b) * N``.

The text is compiled back with the language's own compiler; its layer names key the weights.
"""
from __future__ import annotations

import keyword
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from cnnspec.errors import CnnSpecError, plural
from cnnspec.interop.table import KINDS, Expr
from cnnspec.layers import LAYERS

RESERVED = {"network", "block", "import", "train", "input", "true", "false", "in"}
MERGES = {"add", "concat", "mul", "sample"}        # written with the names of their operands
ELEMENTWISE = {"relu", "sigmoid", "tanh", "leaky_relu", "identity", "relu6", "hardswish", "hardsigmoid",
               "silu", "gelu", "softplus", "elu"}
ABSORBED = ELEMENTWISE | {"shuffle"}     # taken into the branching region they follow
LINE = 96                       # wrap chains longer than this


def generated_base(name: str, blocks=()) -> str | None:
    """The layer kind or block whose generated names ``name`` looks like (``conv2`` -> ``conv``):
    the language's own rule."""
    from cnnspec.lang.build import Builder

    return Builder(dict.fromkeys(blocks), {}).generated_base(name)


def usable(name: str, blocks=(), taken=()) -> bool:
    """``name`` may be bound or declared in a ``.cnn`` file."""
    return (bool(re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", name)) and name not in RESERVED
            and name not in LAYERS and name not in blocks and name not in taken
            and not generated_base(name, blocks))


# ---- regions ---------------------------------------------------------------------------------------

def regions(layers) -> list:
    """[(entry, [layer indices])]: the network cut at every layer all paths pass through."""
    consumers = defaultdict(set)
    for i, layer in enumerate(layers):
        for j in set(layer.inputs):
            consumers[j].add(i)
    inputs = sorted({j for layer in layers for j in layer.inputs if j < 0}, reverse=True)   # -1, -2, ...
    remaining = {j: len(consumers[j]) for j in inputs}
    open_ = set(inputs)
    found, current, entry = [], [], -1
    for i, layer in enumerate(layers):
        for j in set(layer.inputs):
            remaining[j] -= 1
            if remaining[j] == 0:
                open_.discard(j)
        current.append(i)
        if consumers[i]:
            remaining[i] = len(consumers[i])
            open_.add(i)
        if open_ == {i} or i == len(layers) - 1:
            found.append((entry, current))
            entry, current = i, []
    merged = []                 # a branching region takes the activations (shuffles) right after its merge
    for entry, nodes in found:
        if merged and len(merged[-1][1]) > 1 and len(nodes) == 1 and layers[nodes[0]].op in ABSORBED \
                and merged[-1][1][-1] == entry:
            merged[-1][1].append(nodes[0])
        else:
            merged.append((entry, list(nodes)))
    return merged


def _freeze(value):
    if isinstance(value, np.ndarray):
        return ("array", value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    return value


def slot_values(layer) -> dict:
    """{argument: value} of the arguments of ``layer`` that may become block parameters."""
    out = {}
    for key in KINDS[layer.op].slots:
        value = layer.kwargs.get(key)
        if key == "stride" and value is not None:
            if len(set(value)) != 1:
                continue
            value = int(value[0])
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = value
    return out


def signature(layers, entry, nodes) -> tuple | None:
    """The structure of a region, numbers of its slots aside; None when it reads more than its
    entry from outside (a network's second input): no block."""
    local = {entry: "in", **{i: k for k, i in enumerate(nodes)}}
    if any(j not in local for i in nodes for j in layers[i].inputs):
        return None
    parts = []
    for i in nodes:
        layer = layers[i]
        slots = slot_values(layer)
        fixed = tuple(sorted((k, _freeze(v)) for k, v in layer.kwargs.items() if k not in slots))
        parts.append((layer.op, tuple(local[j] for j in layer.inputs), fixed, tuple(sorted(slots))))
    return tuple(parts)


@dataclass
class Block:
    name: str
    nodes: list                  # the layers of the first instance (the body's order)
    params: list                 # parameter names
    exprs: dict                  # (position in region, argument) -> value or Expr
    instances: list = field(default_factory=list)   # (entry, nodes, args)


def find_blocks(layers, parts, hints) -> dict:
    """{region index: Block} for the branching regions whose structure repeats."""
    groups = defaultdict(list)
    for r, (entry, nodes) in enumerate(parts):
        if len(nodes) > 1:
            key = signature(layers, entry, nodes)
            if key is not None:
                groups[key].append(r)
    blocks, names = {}, []
    for members in (g for g in groups.values() if len(g) > 1):
        first = parts[members[0]][1]
        slots = [(k, key) for k, i in enumerate(first) for key in sorted(slot_values(layers[i]))]
        values = [[slot_values(layers[parts[r][1][k]])[key] for r in members] for k, key in slots]
        params, exprs, kinds = [], {}, []          # params: values per instance; kinds: base names
        for (k, key), vals in zip(slots, values):
            if len(set(vals)) == 1:
                exprs[k, key] = ("literal", vals[0])
                continue
            for p, pvals in enumerate(params):
                ratios = {v // pv if pv and v % pv == 0 else None for v, pv in zip(vals, pvals)}
                if len(ratios) == 1 and None not in ratios:
                    exprs[k, key] = ("times", next(iter(ratios)), p)
                    break
            else:
                exprs[k, key] = ("times", 1, len(params))
                params.append(vals)
                kinds.append("stride" if key == "stride" else "c")
        total = defaultdict(int)
        for base in kinds:
            total[base] += 1
        seen, pnames = defaultdict(int), []
        for base in kinds:
            seen[base] += 1
            pnames.append(base if total[base] == 1 else f"{base}{seen[base]}")
        for key, e in exprs.items():
            if e[0] == "literal":
                exprs[key] = e[1]
            else:
                exprs[key] = Expr(pnames[e[2]] if e[1] == 1 else f"{e[1]}*{pnames[e[2]]}")
        name = _block_name(layers, [parts[r] for r in members], hints, names)
        names.append(name)
        block = Block(name, first, pnames, exprs)
        for r in members:
            entry, nodes = parts[r]
            block.instances.append((entry, nodes, [p[members.index(r)] for p in params]))
            blocks[r] = block
    return blocks


def _block_name(layers, instances, hints, taken) -> str:
    bases = set()
    for _, nodes in instances:
        prefixes = {hints.get(i, "").split(".")[0] for i in nodes if "." in hints.get(i, "")}
        m = re.fullmatch(r"([A-Za-z_][A-Za-z_0-9]*?)_?(\d+)", prefixes.pop()) if len(prefixes) == 1 else None
        bases.add(m.group(1) if m else None)
    base = bases.pop() if len(bases) == 1 else None
    if base is not None and not usable(base, taken) and usable(f"{base}_b", taken):
        pass                                     # a second form of the same block: unit, unit_b
    elif base is None or not usable(base, taken):
        ops = {layers[i].op for i in instances[0][1]}
        base = "residual" if "add" in ops else "inception" if "concat" in ops else "gated" if "mul" in ops else "unit"
        strided = all(any(max(layers[i].kwargs.get("stride", (1,))) > 1 for i in nodes) for _, nodes in instances)
        base += "_down" if strided else ""
    name, letter = base, "b"
    while not usable(name, taken):
        name, letter = f"{base}_{letter}", chr(ord(letter) + 1)
    return name


# ---- text ------------------------------------------------------------------------------------------

@dataclass
class Item:
    """One step of a body: a layer, or a block instance standing for its layers."""
    inputs: list
    output: int
    text: str
    layers: list
    merge: str | None = None
    hint: str | None = None
    op: str | None = None


def layer_text(layer, kwargs=None) -> str:
    return KINDS[layer.op].text(layer.op, layer.kwargs if kwargs is None else kwargs)


def compress(steps: list, ops: list | None = None) -> list:
    """Consecutive equal steps (or runs of steps) as ``step * N`` / ``(a -> b) * N``; a run does
    not start with an activation (``(conv -> relu) * 2``, not ``conv -> (relu -> conv) * 1 -> relu``)."""
    out, p = [], 0
    ops = ops or [None] * len(steps)
    while p < len(steps):
        best = (1, 1)
        for length in range(1, 5):
            if length > 1 and ops[p] in ELEMENTWISE:
                break
            reps = 1
            while steps[p + reps * length:p + (reps + 1) * length] == steps[p:p + length]:
                reps += 1
            if reps > 1 and length * reps > best[0] * best[1]:
                best = (length, reps)
        length, reps = best
        if reps == 1:
            out.append(steps[p])
        elif length == 1:
            out.append(f"{steps[p]} * {reps}")
        else:
            out.append(f"({' -> '.join(steps[p:p + length])}) * {reps}")
        p += length * reps
    return out


class Body:
    """Writes the statements of one body (the network's or a block's)."""

    def __init__(self, items, entries: dict, taken):
        """``entries``: {tensor: name} of the body's inputs, the first the current tensor."""
        self.items, self.lines = items, []
        self.names = dict(entries)
        self.taken = set(taken)
        self.counter = 0
        producer = {item.output: k for k, item in enumerate(items)}
        producer.update({entry: -1 for entry in entries})
        users = defaultdict(list)
        for k, item in enumerate(items):
            for t in dict.fromkeys(item.inputs):
                users[t].append(k)
        self.need = {t: len(ks) > 1 or any(items[c].merge for c in ks) or ks[0] != producer[t] + 1
                     for t, ks in users.items()}

    def fresh(self) -> str:
        while True:
            self.counter += 1
            name = f"x{self.counter}"
            if usable(name, taken=self.taken):
                self.taken.add(name)
                return name

    def write(self) -> list:
        head, steps, ops = None, [], []
        current = next(iter(self.names))

        def flush(target=None):
            nonlocal head, steps, ops
            if head is None and not steps:
                return
            parts = ([head] if head else []) + compress(steps, ops)
            if target and len(parts) == 1 and head is None:        # `t = relu` would rename the layer
                parts = [self.names[start]] + parts
            self.emit(target, parts)
            head, steps, ops = None, [], []

        start = current
        for item in self.items:
            if item.merge:
                flush()
                operands = ", ".join(self.names[t] for t in item.inputs)
                head, start = item.text.replace(f"{item.merge}(", f"{item.merge}({operands}, ", 1) \
                    if item.text.endswith(")") else f"{item.merge}({operands})", None
            elif item.hint and item.inputs == [current] and usable(item.hint, taken=self.taken):
                flush()
                self.taken.add(item.hint)
                self.emit(item.hint, [item.text])
                self.names[item.output] = item.hint
                current = item.output
                continue
            elif item.inputs[0] == current and (head is not None or steps):
                steps.append(item.text)
                ops.append(item.op)
            elif item.inputs[0] == current and not self.need.get(current):
                start = current                     # a new statement fed the current tensor
                steps.append(item.text)
                ops.append(item.op)
            else:
                flush()
                head, start = self.names[item.inputs[0]], item.inputs[0]
                steps.append(item.text)
                ops.append(item.op)
            current = item.output
            if self.need.get(item.output):
                self.names[item.output] = self.fresh()
                flush(self.names[item.output])
        flush()
        return self.lines

    def emit(self, target, parts):
        first = f"{target} = " if target else ""
        text, lines = first + parts[0], []
        for part in parts[1:]:
            if len(text) + 4 + len(part) > LINE:
                lines.append(text)
                text = " " * (len(first) + 4) + "-> " + part if lines else part
            else:
                text += " -> " + part
        lines.append(text)
        self.lines += lines


def write(layers, importer, path, name=None):
    """``(network, weights, text)`` of the imported ``layers`` (see the module docstring)."""
    import cnnspec
    from cnnspec.interop.onnx_import import describe

    hints = {i: layer.node for i, layer in enumerate(layers)} if importer.from_cnnspec else {}
    parts = regions(layers)
    blocks = find_blocks(layers, parts, hints)
    block_names = {b.name for b in blocks.values()}
    input_names = []
    for k, (given, shape) in enumerate(importer.inputs):
        candidate = given if importer.from_cnnspec else re.sub(r"\W", "_", given)
        if not usable(candidate, block_names, input_names):
            candidate = {3: "image", 2: "x"}.get(len(shape), "x") + (str(k + 1) if len(importer.inputs) > 1 else "")
            candidate = candidate if usable(candidate, block_names, input_names) else f"input_{k + 1}"
        input_names.append(candidate)
    net_name = name or _network_name(importer.model, path)

    # the block bodies
    text_blocks, emitted = [], set()
    for block in blocks.values():
        if block.name in emitted:
            continue
        emitted.add(block.name)
        entry, nodes, _ = block.instances[0]
        items = []
        for k, i in enumerate(nodes):
            layer = layers[i]
            kwargs = dict(layer.kwargs)
            for (pos, key), e in block.exprs.items():
                if pos == k:
                    kwargs[key] = e
            items.append(_item(layer, i, kwargs, None))
        body = Body(items, {entry: "in"}, set(block.params) | block_names | {"in"})
        params = f"({', '.join(block.params)})" if block.params else ""
        text_blocks.append(f"block {block.name}{params} {{\n"
                           + "".join(f"    {line}\n" for line in body.write()) + "}\n")

    # the network body, in order, block instances as single steps
    items, order = [], []
    for r, (entry, nodes) in enumerate(parts):
        if r in blocks:
            block = blocks[r]
            args = next(a for e, n, a in block.instances if n == nodes)
            call = block.name + (f"({', '.join(str(a) for a in args)})" if block.params else "")
            items.append(Item([entry], nodes[-1], call, list(nodes)))
            order += nodes
            continue
        for i in nodes:
            hint = hints.get(i)
            items.append(_item(layers[i], i, None, hint if hint and "." not in hint else None))
            order.append(i)
    taken = block_names | set(input_names)
    body = Body(items, {-(k + 1): n for k, n in enumerate(input_names)}, taken)
    lines = body.write()
    declared = "".join(f"    input {n}: {'x'.join(str(v) for v in shape)}\n"
                       for n, (_, shape) in zip(input_names, importer.inputs))
    header = (f"# Imported by cnnspec from {os.path.basename(path)} ({describe(importer.model)}):\n"
              f"# {plural(len(layers), 'layer')}" + (f", {plural(len(block_names), 'repeated structure')} "
                                                      f"written as blocks" if block_names else "") + ".\n")
    text = header + "".join(b + "\n" for b in text_blocks) + (
        f"network {net_name} {{\n{declared}"
        + "".join(f"    {line}\n" for line in lines) + "}\n")
    try:
        net = cnnspec.loads(text)
    except CnnSpecError as err:                  # a bug of this module, shown with the text
        raise CnnSpecError(f"the imported network does not compile (a bug in cnnspec import): "
                           f"{err.render()}\n--- text ---\n{text}", file=os.fspath(path)) from None
    names = [n for n in net.graph.nodes if net[n]["op"] != "input"]
    if len(names) != len(order) or any(net[n]["op"] != layers[i].op or tuple(net[n]["output_shape"]) !=
                                       tuple(layers[i].shape) for n, i in zip(names, order)):
        raise CnnSpecError("the imported network differs from the ONNX graph (a bug in cnnspec import)\n"
                           f"--- text ---\n{text}", file=os.fspath(path))
    weights = {}
    for n, i in zip(names, order):
        for key, value in {**layers[i].params, **layers[i].state}.items():
            weights[f"{n}.{key}"] = np.asarray(value, np.float32)
    return net, weights, text


def _item(layer, index, kwargs, hint) -> Item:
    merge = layer.op if layer.op in MERGES else None
    return Item(list(layer.inputs), index, layer_text(layer, kwargs), [index], merge, hint, layer.op)


def _network_name(model, path) -> str:
    name = model.graph.name
    if not name or name in ("main_graph", "torch_jit", "torch-jit-export", "graph") or \
            not usable(name) or keyword.iskeyword(name):
        stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(os.fspath(path)))[0])
        name = "".join(part[:1].upper() + part[1:] for part in stem.split("_") if part) or "Imported"
        if not re.match(r"[A-Za-z_]", name):
            name = "Net" + name
    return name


__all__ = ["Block", "compress", "find_blocks", "regions", "usable", "write"]
