"""The relu fusions of cnnspec's training step, on the graph alone: which layer pairs the engine's
plan runs as one kernel call (``engine.plan.Plan.relu_fusions``, ``relu_pool_fusions``), and so
which gradients the summary's training-memory estimate counts.  One rule for both; the engine
passes ``builtin`` (is this layer's op the engine's own kernel, not a custom implementation),
the summary counts every layer as built in.  Pure Python: no numba, no NumPy."""
from __future__ import annotations

from collections import Counter


def _all_builtin(name) -> bool:
    return True


def relu_fusions(graph, order, output, skip=(), builtin=_all_builtin) -> dict:
    """{layer: relu} for every batchnorm, dense, or add of two operands, whose only consumer is
    a relu, and {batchnorm: relu6} likewise (MobileNetV2's); none of them in ``skip``, the layer
    not the network's ``output``, both ``builtin``."""
    nodes = graph.nodes
    consumers = Counter(i for name in order for i in nodes[name]["inputs"])
    fused = {}
    for name in order:
        node = nodes[name]
        if node["op"] not in ("relu", "relu6") or name in skip or len(node["inputs"]) != 1:
            continue
        src = node["inputs"][0]
        if (src in skip or consumers[src] != 1 or src == output or not builtin(name)
                or not builtin(src)):
            continue
        kind = nodes[src]["op"]
        if kind == "batchnorm" or (node["op"] == "relu" and (
                kind == "dense" or kind == "add" and len(nodes[src]["inputs"]) == 2)):
            fused[src] = name
    return fused


def relu_pool_fusions(graph, order, output, skip=(), taken=(), builtin=_all_builtin) -> dict:
    """{relu: maxpool} for every relu (not in ``taken``, the relus of :func:`relu_fusions`) whose
    input feeds it alone and whose only consumer is a maxpool; none in ``skip``, the relu not the
    ``output``, both ``builtin``."""
    nodes = graph.nodes
    consumers = Counter(i for name in order for i in nodes[name]["inputs"])
    users = {i: name for name in order for i in nodes[name]["inputs"]}
    fused = {}
    for name in order:
        node = nodes[name]
        if (node["op"] != "relu" or name in skip or name in taken or len(node["inputs"]) != 1
                or not builtin(name) or consumers[name] != 1 or name == output
                or consumers[node["inputs"][0]] != 1):
            continue
        pool = users[name]
        if nodes[pool]["op"] == "maxpool" and builtin(pool) and pool not in skip:
            fused[name] = pool
    return fused
