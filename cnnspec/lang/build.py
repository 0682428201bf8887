"""Syntax tree -> raw graph: blocks expanded, repetitions unrolled, every layer named.

The graph is a ``networkx.DiGraph`` with one node per layer (and one for the input), keyed by the
layer's dotted name (dsl.md §8):

* ``<op><k>``: layers are numbered per kind, in order of appearance within their scope, from 1
  (``conv1``, ``conv2``, ``relu1``); block instances are numbered the same way per block
  (``basic1``, ``basic2``) and their layers are scoped under them (``basic1.conv2``);
* a statement whose chain is a single layer or block call is named by its bound name
  (``c1 = conv(6, 5x5)`` is the node ``c1``; ``stem = basic(64)`` is the instance ``stem``). It
  still counts as a ``conv`` (a ``basic``), so naming one layer never renames the others;
* the input node is named by the input's name.

Only the structure is checked here (names, blocks, repetition counts, arithmetic); layer
arguments are checked by the layer catalogue, which ``arg_pos`` lets point at the source.
"""
from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx

from cnnspec.errors import CnnSpecError, error_at, nearest
from cnnspec.lang import ast
from cnnspec.lang.imports import blocks_in_scope
from cnnspec.lang.train import train_config

MAX_LAYERS = 100_000             # layers plus block instances after expansion
MAX_INT = 10 ** 18               # block-parameter arithmetic beyond this is refused
MERGES = ("add", "concat")
ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv}
FALLBACK_LAYERS = (
    "conv", "maxpool", "avgpool", "sumpool", "globalavgpool", "globalmaxpool", "dense", "flatten",
    "dropout", "batchnorm", "relu", "sigmoid", "tanh", "softmax", "identity", "leaky_relu",
    "add", "concat")


def layer_kinds() -> frozenset[str]:
    """The op names of the layer catalogue."""
    try:
        from cnnspec.layers import LAYERS
    except ImportError:
        return frozenset(FALLBACK_LAYERS)
    return frozenset(LAYERS)


def build_graph(module: ast.Module, blocks: dict[str, ast.Block] | None = None,
                sources: dict | None = None) -> nx.DiGraph:
    """The raw graph of ``module``'s network.

    ``blocks`` are the blocks in scope by name (default: the module's own and those of the files
    it imports, which are read now); ``sources`` maps file -> text for error messages (default:
    the module's text; the text of imported files is added).
    """
    sources = dict(sources) if sources is not None else {module.file: module.text}
    if blocks is None:
        blocks = blocks_in_scope(module, sources)
    if module.network is None:
        hint = ("a file of blocks is used with `import` from a file that has a network"
                if module.blocks else "write `network NAME { input x: 1x28x28 ... }`")
        raise CnnSpecError("no `network` in this file", file=module.file, hint=hint)
    builder = Builder(blocks, sources)
    builder.check_blocks()
    scope = builder.network(module.network)
    graph = builder.graph
    graph.graph.update(
        network=module.network.name, file=module.file, input=builder.input_name,
        output=scope.current, sources=sources, blocks=builder.instances, train=None, train_pos={})
    if module.train is not None:
        graph.graph["train"], graph.graph["train_pos"] = train_config(module.train, sources)
    return graph


# Layer names of PyTorch and Keras (lower case, no underscores) -> the layer here, for hints.
FRAMEWORK_NAMES = {
    "linear": "dense", "fc": "dense", "fullyconnected": "dense", "conv1d": "conv", "conv2d": "conv",
    "convolution": "conv", "maxpool1d": "maxpool", "maxpool2d": "maxpool", "maxpooling1d": "maxpool",
    "maxpooling2d": "maxpool", "avgpool1d": "avgpool", "avgpool2d": "avgpool",
    "averagepooling1d": "avgpool", "averagepooling2d": "avgpool", "batchnorm1d": "batchnorm",
    "batchnorm2d": "batchnorm", "batchnormalization": "batchnorm", "adaptiveavgpool2d": "globalavgpool",
    "globalaveragepooling2d": "globalavgpool", "globalaveragepooling1d": "globalavgpool",
    "adaptivemaxpool2d": "globalmaxpool", "globalmaxpooling2d": "globalmaxpool",
    "globalmaxpooling1d": "globalmaxpool", "dropout2d": "dropout", "leakyrelu": "leaky_relu",
    "concatenate": "concat", "cat": "concat", "sum": "add",
}


@dataclass
class Scope:
    """One body being expanded: the network's, or one block instance's."""
    path: tuple[str, ...]                          # enclosing block instances, outermost first
    current: str                                   # the node holding the current tensor
    params: dict = field(default_factory=dict)     # block parameter -> value
    names: dict = field(default_factory=dict)      # bound name (and `in`) -> node
    bound_at: dict = field(default_factory=dict)   # bound name -> Pos
    counts: Counter = field(default_factory=Counter)   # layers and instances so far, per kind
    block: str | None = None                       # the block this body belongs to

    def key(self, local: str) -> str:
        return ".".join((*self.path, local))


class Builder:
    """Expands one network into ``self.graph`` (nodes) and ``self.instances`` (block instances)."""

    def __init__(self, blocks: dict[str, ast.Block], sources: dict):
        self.blocks = blocks
        self.sources = sources
        self.kinds = layer_kinds()
        self.graph = nx.DiGraph()
        self.instances: dict[str, dict] = {}
        self.input_name = None

    def fail(self, pos, message, hint=None) -> CnnSpecError:
        return error_at(pos, message, sources=self.sources, hint=hint)

    @staticmethod
    def suggest(word, candidates) -> str | None:
        known = FRAMEWORK_NAMES.get(word.lower().replace("_", ""))
        if known in candidates:                   # a PyTorch or Keras name
            return f"PyTorch's or Keras's `{word}` is called `{known}` here"
        guess = nearest(word, candidates)
        return f"did you mean `{guess}`?" if guess else None

    # -- blocks ---------------------------------------------------------------------------------
    def check_blocks(self):
        """Block names and parameters are usable, and no block calls itself, directly or not."""
        for block in self.blocks.values():
            if block.name in self.kinds:
                raise self.fail(block.pos, f"block `{block.name}` has the name of a layer",
                                hint="choose another name for the block")
            base = self.generated_base(block.name)
            if block.name == "in" or base:
                raise self.fail(block.pos, f"`{block.name}` cannot name a block",
                                hint=f"its instances would be named like `{base}` layers" if base else
                                "`in` is a block's input")
            seen = set()
            for param in block.params:
                if param.name in seen or param.name == "in":
                    raise self.fail(param.pos, f"parameter `{param.name}` of block `{block.name}` "
                                    + ("appears twice" if param.name in seen else "is reserved"))
                seen.add(param.name)
        self.check_recursion()

    def calls(self, block: ast.Block) -> list:
        """(block name, pos) of every block call in the body of ``block``."""
        found = []

        def visit(step):
            if isinstance(step, ast.Repeat):
                visit(step.step)
            elif isinstance(step, ast.Group):
                for inner in step.chain.steps:
                    visit(inner)
            elif isinstance(step, (ast.Name, ast.Call)) and step.name in self.blocks:
                found.append((step.name, step.pos))

        for statement in block.body:
            if isinstance(statement, ast.Statement):
                for step in statement.chain.steps:
                    visit(step)
        return found

    def check_recursion(self):
        """Depth-first search over block calls, without Python recursion."""
        done = set()
        for root in self.blocks:
            if root in done:
                continue
            path, todo = [root], [iter(self.calls(self.blocks[root]))]
            while todo:
                callee, pos = next(todo[-1], (None, None))
                if callee is None:
                    done.add(path.pop())
                    todo.pop()
                elif callee in path:
                    cycle = " -> ".join(path[path.index(callee):] + [callee])
                    raise self.fail(pos, f"block `{callee}` calls itself ({cycle})",
                                    hint="a block may call other blocks, but not itself, directly or not")
                elif callee not in done:
                    path.append(callee)
                    todo.append(iter(self.calls(self.blocks[callee])))

    # -- names ----------------------------------------------------------------------------------
    def generated_base(self, name: str) -> str | None:
        """The layer kind or block ``name`` would be a generated name of (``conv2`` -> ``conv``)."""
        stem = name.rstrip("0123456789")
        for end in range(len(stem), len(name)):          # every split into a base and a number
            if name[:end] in self.kinds or name[:end] in self.blocks:
                return name[:end]
        return None

    def check_name(self, name: str, pos, scope: Scope):
        """``name`` may be bound in ``scope``: not bound yet, and no layer, block or generated name."""
        if name == "in":
            raise self.fail(pos, "`in` cannot be bound", hint="`in` is the input of a block")
        if name in scope.names:
            first = scope.bound_at[name]
            raise self.fail(pos, f"`{name}` is already bound",
                            hint=f"it was bound at line {first.line}; choose another name")
        if name in self.kinds:
            raise self.fail(pos, f"`{name}` is a layer, so it cannot name a tensor",
                            hint="choose another name")
        if name in self.blocks:
            raise self.fail(pos, f"`{name}` is a block, so it cannot name a tensor",
                            hint="choose another name")
        if name in scope.params:
            raise self.fail(pos, f"`{name}` is a parameter of block `{scope.block}`",
                            hint="choose another name")
        base = self.generated_base(name)
        if base:
            raise self.fail(pos, f"`{name}` looks like a generated layer name",
                            hint=f"layers are named {base}1, {base}2, ... in order; choose a name "
                                 f"that is not a layer or block name followed by a number")

    def bind(self, scope: Scope, name: str, node: str, pos):
        scope.names[name] = node
        scope.bound_at[name] = pos

    def local_name(self, scope: Scope, kind: str, name: str | None) -> str:
        """The name in ``scope`` of the next ``kind`` (``name`` when the statement gives one)."""
        scope.counts[kind] += 1
        return name or f"{kind}{scope.counts[kind]}"

    def grow(self, key: str, pos):
        """Account for one more layer or block instance named ``key``."""
        if key in self.graph or key in self.instances:
            raise self.fail(pos, f"the name `{key}` is given twice")
        if len(self.graph) + len(self.instances) >= MAX_LAYERS:
            raise self.fail(pos, f"the network expands to more than {MAX_LAYERS} layers",
                            hint="check the repetition counts")

    def add_node(self, key, op, args, kwargs, inputs, pos, arg_pos, scope: Scope):
        self.grow(key, pos)
        self.graph.add_node(key, op=op, args=args, kwargs=kwargs, inputs=list(inputs), pos=pos,
                            arg_pos=arg_pos, scope=scope.path)
        for index, source in enumerate(inputs):
            if not self.graph.has_edge(source, key):    # add(x, x): one edge, both inputs
                self.graph.add_edge(source, key, index=index)
        return key

    # -- bodies ---------------------------------------------------------------------------------
    def network(self, network: ast.Network) -> Scope:
        body = network.body
        inputs = [s for s in body if isinstance(s, ast.Input)]
        if not inputs:
            raise self.fail(network.pos, f"network `{network.name}` has no input",
                            hint="start its body with `input NAME: SHAPE`, e.g. `input image: 1x28x28`")
        first = inputs[0]
        if len(inputs) > 1:
            raise self.fail(inputs[1].pos, "a network has exactly one input",
                            hint=f"the first is at line {first.pos.line}")
        if body[0] is not first:
            raise self.fail(first.pos, "`input` must be the first statement of the network")
        if not 1 <= len(first.shape) <= 3 or min(first.shape) < 1:
            raise self.fail(first.pos, f"bad input shape {'x'.join(map(str, first.shape))}",
                            hint="write CxHxW (image), CxL (sequence) or D (vector), every size >= 1")
        scope = Scope(path=(), current=first.name)
        self.check_name(first.name, first.name_pos, scope)
        self.bind(scope, first.name, first.name, first.name_pos)
        self.add_node(first.name, "input", (), {"shape": tuple(first.shape)}, [], first.pos, {}, scope)
        self.input_name = first.name
        self.statements(body[1:], scope)
        return scope

    def statements(self, body: list, scope: Scope):
        for statement in body:
            if isinstance(statement, ast.Input):
                raise self.fail(statement.pos, "`input` is only the first statement of a network",
                                hint="a block takes its input as `in`" if scope.block else None)
            try:
                self.statement(statement, scope)
            except RecursionError:
                raise self.fail(statement.pos, "this statement is nested too deeply") from None

    def statement(self, statement: ast.Statement, scope: Scope):
        """Feed the chain the current tensor (or the tensor or merge it starts from); bind its output."""
        target = statement.target
        if target is not None:
            self.check_name(target, statement.target_pos, scope)
        steps = statement.chain.steps
        name = target if len(steps) == 1 else None       # one layer or block: it takes the name
        first, x = steps[0], scope.current
        if isinstance(first, ast.Name) and first.name in scope.names:
            x, steps = scope.names[first.name], steps[1:]
        elif isinstance(first, ast.Call) and first.name in MERGES:
            x, steps = self.merge(first, scope, name), steps[1:]
        elif isinstance(first, ast.Name) and first.name not in self.kinds | self.blocks.keys():
            known = [*scope.names, *self.kinds, *self.blocks]
            hint = self.suggest(first.name, known)
            if first.name == "in":
                hint = f"`in` is a block's input; here the input is `{self.input_name}`"
            elif first.name in scope.params:
                hint = f"`{first.name}` is a parameter of block `{scope.block}`, a value, not a tensor"
            raise self.fail(first.pos, f"unknown name `{first.name}`", hint=hint)
        for step in steps:
            x = self.step(step, scope, x, name)
        scope.current = x
        if target is not None:
            self.bind(scope, target, x, statement.target_pos)

    def step(self, step, scope: Scope, x: str, name: str | None = None) -> str:
        """Apply one step to the tensor ``x``; returns the node holding the result."""
        if isinstance(step, ast.Repeat):
            for _ in range(self.count(step.count, scope)):
                x = self.step(step.step, scope, x)
            return x
        if isinstance(step, ast.Group):
            for inner in step.chain.steps:
                x = self.step(inner, scope, x)
            return x
        what = step.name
        if what in MERGES:
            if isinstance(step, ast.Name):
                raise self.fail(step.pos, f"`{what}` needs the tensors to merge, e.g. `{what}(a, b)`")
            raise self.fail(step.name_pos, f"`{what}` merges named tensors, so it must start a chain",
                            hint=f"bind the tensors to names and write `{what}(a, b)` at the start "
                                 "of a statement")
        if what in self.kinds:
            return self.layer(step, scope, x, name)
        if what in self.blocks:
            return self.instance(step, scope, x, name)
        where = getattr(step, "name_pos", step.pos)
        if what in scope.names:
            raise self.fail(where, f"`{what}` is a tensor, not a layer",
                            hint=f"a chain can only start from a name: begin a statement with "
                                 f"`{what} -> ...`")
        raise self.fail(where, f"unknown layer or block `{what}`",
                        hint=self.suggest(what, [*self.kinds, *self.blocks]))

    def layer(self, step, scope: Scope, x: str, name: str | None) -> str:
        args, kwargs, arg_pos = self.arguments(step, scope) if isinstance(step, ast.Call) else ((), {}, {})
        key = scope.key(self.local_name(scope, step.name, name))
        return self.add_node(key, step.name, args, kwargs, [x], step.pos, arg_pos, scope)

    def merge(self, call: ast.Call, scope: Scope, name: str | None) -> str:
        """``add(a, b)``/``concat(a, b, c)``: the operands are tensor names, in order."""
        inputs, kwargs, arg_pos = [], {}, {}
        for arg in call.args:
            if arg.key is not None:
                kwargs[arg.key], arg_pos[arg.key] = self.value(arg.value, scope.params), arg.pos
                continue
            operand = arg.value
            if not isinstance(operand, ast.Name):
                raise self.fail(arg.pos, f"`{call.name}` takes names of tensors, e.g. `{call.name}(a, b)`")
            if operand.name not in scope.names:
                raise self.fail(operand.pos, f"unknown name `{operand.name}`",
                                hint=self.suggest(operand.name, scope.names)
                                or f"bind it first with `{operand.name} = ...`")
            arg_pos[len(inputs)] = arg.pos
            inputs.append(scope.names[operand.name])
        if len(inputs) < 2:
            raise self.fail(call.pos, f"`{call.name}` merges at least two tensors, e.g. `{call.name}(a, b)`")
        key = scope.key(self.local_name(scope, call.name, name))
        return self.add_node(key, call.name, (), kwargs, inputs, call.pos, arg_pos, scope)

    def instance(self, step, scope: Scope, x: str, name: str | None) -> str:
        """Expand a block call: its body, fed ``x`` as ``in``, in a scope of its own."""
        block = self.blocks[step.name]
        values = self.block_args(block, step, scope)
        local = self.local_name(scope, block.name, name)
        key = scope.key(local)
        self.grow(key, step.pos)
        self.instances[key] = {"type": block.name, "args": values, "scope": scope.path, "pos": step.pos}
        inner = Scope(path=(*scope.path, local), current=x, params=values, names={"in": x},
                      block=block.name)
        self.statements(block.body, inner)
        return inner.current

    # -- arguments and values -------------------------------------------------------------------
    def arguments(self, call: ast.Call, scope: Scope):
        """(args tuple, kwargs dict, arg_pos {index or key: Pos}) of a layer call."""
        args, kwargs, arg_pos = [], {}, {}
        for arg in call.args:
            self.check_not_product(arg.value)
            value = self.value(arg.value, scope.params)
            if arg.key is None:
                if kwargs:
                    raise self.fail(arg.pos, "a positional argument follows a keyword argument",
                                    hint="positional arguments come first, then `key=value`")
                arg_pos[len(args)] = arg.pos
                args.append(value)
            elif arg.key in kwargs:
                raise self.fail(arg.pos, f"argument `{arg.key}` is given twice")
            else:
                kwargs[arg.key], arg_pos[arg.key] = value, arg.pos
        return tuple(args), kwargs, arg_pos

    def check_not_product(self, expr):
        """``5*5`` written for the size ``5x5``."""
        if not (isinstance(expr, ast.BinOp) and expr.op == "*"):
            return
        if all(isinstance(side, ast.Literal) and type(side.value) is int for side in (expr.left, expr.right)):
            a, b = expr.left.value, expr.right.value
            raise self.fail(expr.pos, f"`{a}*{b}` multiplies two numbers",
                            hint=f"a size is written `{a}x{b}`; the number is `{a * b}`")

    def block_args(self, block: ast.Block, step, scope: Scope) -> dict:
        """Values of ``block``'s parameters for this call: positional, keyword, then defaults."""
        params = [p.name for p in block.params]
        signature = f"{block.name}({', '.join(params)})"
        given, keywords = {}, False
        for arg in getattr(step, "args", []):
            if arg.key is None:
                if keywords:
                    raise self.fail(arg.pos, "a positional argument follows a keyword argument",
                                    hint="positional arguments come first, then `key=value`")
                if len(given) >= len(params):
                    raise self.fail(arg.pos, f"block `{block.name}` takes {len(params)} argument"
                                    f"{'' if len(params) == 1 else 's'}", hint=f"it is {signature}")
                key = params[len(given)]
            else:
                key, keywords = arg.key, True
                if key not in params:
                    raise self.fail(arg.pos, f"block `{block.name}` has no parameter `{key}`",
                                    hint=self.suggest(key, params) or f"it is {signature}")
                if key in given:
                    raise self.fail(arg.pos, f"parameter `{key}` is given twice")
            given[key] = self.value(arg.value, scope.params)
        values = {}
        for param in block.params:
            if param.name in given:
                values[param.name] = given[param.name]
            elif param.default is not None:
                values[param.name] = self.value(param.default, values)
            else:
                raise self.fail(step.pos, f"block `{block.name}` needs argument `{param.name}`",
                                hint=f"it is {signature}")
        return values

    def count(self, expr, scope: Scope) -> int:
        n = self.value(expr, scope.params)
        if type(n) is not int:
            raise self.fail(expr.pos, f"a repetition count must be an integer, got {n!r}")
        if not 1 <= n <= MAX_LAYERS:
            raise self.fail(expr.pos, f"a repetition count must be between 1 and {MAX_LAYERS}, got {n}")
        return n

    def value(self, expr, params: dict):
        """The Python value of an expression; names that are not parameters stay words (``same``)."""
        if isinstance(expr, ast.Literal):
            return expr.value
        if isinstance(expr, ast.Name):
            return params.get(expr.name, expr.name)
        if isinstance(expr, ast.TupleOf):
            return tuple(self.value(item, params) for item in expr.items)
        if isinstance(expr, ast.ListOf):
            return [self.value(item, params) for item in expr.items]
        if isinstance(expr, ast.Neg):
            v = self.value(expr.operand, params)
            if type(v) not in (int, float):
                raise self.fail(expr.pos, f"cannot negate {v!r}")
            return -v
        if isinstance(expr, ast.BinOp):
            left, right = self.value(expr.left, params), self.value(expr.right, params)
            for side, v in ((expr.left, left), (expr.right, right)):
                if type(v) is not int:
                    raise self.fail(side.pos, f"arithmetic needs integers, got {v!r}")
            if expr.op == "//" and right == 0:
                raise self.fail(expr.pos, "division by zero")
            result = ARITHMETIC[expr.op](left, right)
            if abs(result) > MAX_INT:
                raise self.fail(expr.pos, f"number too large (more than {MAX_INT})")
            return result
        raise self.fail(expr.pos, f"`{expr.name}(...)` is not a value here",
                        hint="layers and blocks are steps of a chain, not argument values")
