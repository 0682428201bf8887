"""Syntax tree -> raw graph: blocks expanded, repetitions unrolled, every layer named.

The graph is a ``networkx.DiGraph`` with one node per layer (and one for the input), keyed by the
layer's dotted name (dsl.md §8):

* ``<op><k>``: layers are numbered per kind, in order of appearance within their scope, from 1
  (``conv1``, ``conv2``, ``relu1``; a kind whose name ends in a digit takes an underscore,
  ``relu6_1``, so that it never meets ``relu61``); block instances are numbered the same way per block
  (``basic1``, ``basic2``) and their layers are scoped under them (``basic1.conv2``);
* a statement whose chain is a single layer or block call is named by its bound name
  (``c1 = conv(6, 5x5)`` is the node ``c1``; ``stem = basic(64)`` is the instance ``stem``). It
  still counts as a ``conv`` (a ``basic``), so naming one layer never renames the others;
* the input node is named by the input's name.

A skipped ``if`` body creates no layers and uses up no numbers. Several inputs are input nodes
named by their names (``graph.graph["inputs"]``, in order; ``"input"`` is the first).

Only the structure is checked here (names, blocks, repetition counts, arithmetic, conditions);
layer arguments are checked by the layer catalogue, which ``arg_pos`` lets point at the source.
Sizes of tensors (``in.channels``) are read by analysing the layers built so far.
"""
from __future__ import annotations

import operator
import re
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx

from cnnspec.errors import CnnSpecError, Pos, error_at, nearest
from cnnspec.lang import ast
from cnnspec.lang.imports import blocks_in_scope
from cnnspec.lang.parser import MAX_INT
from cnnspec.lang.train import train_config

MAX_LAYERS = 100_000             # layers plus block instances after expansion
NAME_LAYERS = ("add", "concat", "mul", "sample")   # layers whose operands are tensor names
SIZES = {1: ("channels",), 2: ("channels", "length"), 3: ("channels", "height", "width")}
FUNCTIONS = {"min": min, "max": max}
# arguments that take a size (`5x5`): `5*5` there is a slip for it, elsewhere a number
SIZE_ARGS = ("kernel", "stride", "pad", "dilation", "output_pad", "size", "scale", "shape")
COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
               ">": operator.gt, ">=": operator.ge}
ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv}


def layer_kinds() -> frozenset[str]:
    """The op names of the layer catalogue."""
    from cnnspec.layers import LAYERS

    return frozenset(LAYERS)


def pick_network(module: ast.Module, network: str | None, sources: dict | None = None) -> ast.Network:
    """The network called ``network`` (None: the first one) of ``module``."""
    if not module.networks:
        hint = ("a file of blocks is used with `import` from a file that has a network"
                if module.blocks else "write `network NAME { input x: 1x28x28 ... }`")
        first = [item.pos for item in (*module.blocks[:1], *module.imports[:1], module.train) if item]
        where = min(first, key=lambda pos: (pos.line, pos.col)) if first else Pos(module.file, 1, 1)
        raise error_at(where, "no `network` in this file", sources=sources or {module.file: module.text},
                       hint=hint)
    if network is None:
        return module.networks[0]
    names = [n.name for n in module.networks]
    if network not in names:
        guess = nearest(str(network), names)
        raise error_at(module.networks[0].pos, f"no network `{network}` in this file",
                       sources=sources or {module.file: module.text},
                       hint=f"did you mean `{guess}`?" if guess else f"its networks are: {', '.join(names)}")
    return module.networks[names.index(network)]


def build_graph(module: ast.Module, blocks: dict[str, ast.Block] | None = None,
                sources: dict | None = None, network: str | None = None) -> nx.DiGraph:
    """The raw graph of the network called ``network`` of ``module`` (None: the first one).

    ``blocks`` are the blocks in scope by name (default: the module's own and those of the files
    it imports, which are read now); ``sources`` maps file -> text for error messages (default:
    the module's text; the text of imported files is added).
    """
    sources = dict(sources) if sources is not None else {module.file: module.text}
    if blocks is None:
        blocks = blocks_in_scope(module, sources)
    chosen = pick_network(module, network, sources)
    builder = Builder(blocks, sources)
    builder.check_blocks()
    scope = builder.network(chosen)
    graph = builder.graph
    graph.graph.update(
        network=chosen.name, networks=[n.name for n in module.networks], file=module.file,
        input=builder.inputs[0], inputs=list(builder.inputs), output=scope.current, sources=sources,
        blocks=builder.instances, bound=dict(scope.names), train=None, train_pos={})
    if module.train is not None:
        graph.graph["train"], graph.graph["train_pos"] = train_config(
            module.train, sources, {n.name: n for n in module.networks})
    return graph


# Layer names of PyTorch and Keras (lower case, no underscores) -> the layer here, for hints.
FRAMEWORK_NAMES = {
    "linear": "dense", "fc": "dense", "fullyconnected": "dense", "conv1d": "conv", "conv2d": "conv",
    "convolution": "conv", "maxpool1d": "maxpool", "maxpool2d": "maxpool", "maxpooling1d": "maxpool",
    "maxpooling2d": "maxpool", "avgpool1d": "avgpool", "avgpool2d": "avgpool",
    "averagepooling1d": "avgpool", "averagepooling2d": "avgpool", "batchnorm1d": "batchnorm",
    "batchnorm2d": "batchnorm", "batchnormalization": "batchnorm", "adaptiveavgpool2d": "adaptiveavgpool",
    "globalaveragepooling2d": "globalavgpool", "globalaveragepooling1d": "globalavgpool",
    "adaptivemaxpool2d": "adaptivemaxpool", "globalmaxpooling2d": "globalmaxpool",
    "globalmaxpooling1d": "globalmaxpool", "dropout2d": "dropout", "leakyrelu": "leaky_relu",
    "concatenate": "concat", "cat": "concat", "sum": "add", "convtranspose1d": "conv_transpose",
    "convtranspose2d": "conv_transpose", "conv2dtranspose": "conv_transpose",
    "conv1dtranspose": "conv_transpose", "deconv": "conv_transpose", "deconvolution": "conv_transpose",
    "upsampling1d": "upsample", "upsampling2d": "upsample", "interpolate": "upsample",
    "upsamplingnearest2d": "upsample", "upsamplingbilinear2d": "upsample",
    "multiply": "mul", "swish": "silu", "adaptiveavgpool1d": "adaptiveavgpool",
    "adaptivemaxpool1d": "adaptivemaxpool", "channelshuffle": "shuffle", "stochasticdepth": "droppath",
    "view": "reshape",
}

# Layers of PyTorch and Keras that have no counterpart here: said so, rather than a far guess
# (only while cnnspec has no layer of that name).
NO_COUNTERPART = {
    "lstm", "gru", "rnn", "simplernn", "lstmcell", "grucell", "rnncell", "bidirectional", "convlstm2d",
    "embedding", "embeddingbag", "layernorm", "layernormalization", "groupnorm", "groupnormalization",
    "instancenorm1d", "instancenorm2d", "localresponsenorm", "multiheadattention", "attention",
    "transformer", "transformerencoder", "transformerdecoder", "timedistributed", "lambda",
    "prelu", "rrelu", "selu", "mish", "logsoftmax", "softmin", "zeropadding1d", "zeropadding2d",
    "cropping1d", "cropping2d", "spatialdropout1d", "spatialdropout2d", "alphadropout", "pixelshuffle",
    "unfold", "fold",
}


@dataclass
class Scope:
    """One body being expanded: the network's, or one block instance's (an ``if`` body belongs to
    the scope around it)."""
    path: tuple[str, ...]                          # enclosing block instances, outermost first
    current: str                                   # the node holding the current tensor
    params: dict = field(default_factory=dict)     # block parameter or constant -> value
    names: dict = field(default_factory=dict)      # bound name (and `in`) -> node
    bound_at: dict = field(default_factory=dict)   # bound name or constant -> Pos
    counts: Counter = field(default_factory=Counter)   # layers and instances so far, per kind
    block: str | None = None                       # the block this body belongs to
    constants: set = field(default_factory=set)    # which of `params` are constants
    skipped: dict = field(default_factory=dict)    # name bound in a skipped `if` body -> its Pos

    def key(self, local: str) -> str:
        return ".".join((*self.path, local))


class Builder:
    """Expands one network into ``self.graph`` (nodes) and ``self.instances`` (block instances)."""

    def __init__(self, blocks: dict[str, ast.Block], sources: dict):
        from cnnspec.layers import LAYERS

        self.blocks = blocks
        self.sources = sources
        self.kinds = layer_kinds()
        self.name_layers = frozenset(op for op, kind in LAYERS.items() if kind.takes_names)
        self.graph = nx.DiGraph()
        self.graph.graph["file"] = None
        self.instances: dict[str, dict] = {}
        self.inputs: list[str] = []
        self.order: list[str] = []                 # nodes in the order they were added
        self.shapes: dict[str, tuple] = {}         # output shapes of the nodes analysed so far

    @property
    def input_name(self) -> str | None:
        return self.inputs[0] if self.inputs else None

    def fail(self, pos, message, hint=None) -> CnnSpecError:
        return error_at(pos, message, sources=self.sources, hint=hint)

    @staticmethod
    def suggest(word, candidates, layer: bool = False) -> str | None:
        """A hint for an unknown ``word``; ``layer``: it stands where a layer goes, so the names of
        PyTorch's and Keras's layers are recognised (``Linear``, ``ReLU6``, ``LSTM``)."""
        key = word.lower().replace("_", "")
        for known in (FRAMEWORK_NAMES.get(key), word.lower(), key) if layer else ():
            if known in candidates and known != word:     # a PyTorch or Keras name (`Linear`, `ReLU`)
                return f"PyTorch's or Keras's `{word}` is called `{known}` here"
        if layer and key in NO_COUNTERPART and key not in candidates:
            return (f"`{word}` is a PyTorch or Keras layer that cnnspec does not have; "
                    f"`cnnspec help language` lists the layers")
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
        """(block name, pos) of every block call in the body of ``block`` (``if`` bodies included)."""
        found = []

        def visit(step):
            if isinstance(step, ast.BinOp):
                visit(step.left)
            elif isinstance(step, ast.Group):
                for inner in step.chain.steps:
                    visit(inner)
            elif isinstance(step, (ast.Name, ast.Call)) and step.name in self.blocks:
                found.append((step.name, step.pos))

        def statements(body):
            for statement in body:
                if isinstance(statement, ast.Statement):
                    for step in statement.chain.steps:
                        visit(step)
                elif isinstance(statement, ast.If):
                    statements(statement.body)

        statements(block.body)
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
        """The layer kind or block ``name`` would be a generated name of (``conv2`` -> ``conv``,
        ``relu6_2`` -> ``relu6``)."""
        stem = name.rstrip("0123456789")
        if stem != name and stem.endswith("_") and stem[:-1][-1:].isdigit() and \
                (stem[:-1] in self.kinds or stem[:-1] in self.blocks):
            return stem[:-1]
        for end in range(len(stem), len(name)):          # every split into a base and a number
            if name[:end] in self.kinds or name[:end] in self.blocks:
                return name[:end]
        return None

    def check_name(self, name: str, pos, scope: Scope):
        """``name`` may be bound in ``scope``: not bound yet, and no layer, block or generated name."""
        if name == "in":
            raise self.fail(pos, "`in` cannot be bound", hint="`in` is the input of a block")
        if name in scope.names or name in scope.constants:
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
        if name in FUNCTIONS:
            raise self.fail(pos, f"`{name}` is a function of sizes, so it cannot be bound",
                            hint="choose another name")
        base = self.generated_base(name)
        if base:
            raise self.fail(pos, f"`{name}` looks like a generated layer name",
                            hint=f"layers are named {generated_name(base, 1)}, {generated_name(base, 2)}, "
                                 "... in order; choose a name "
                                 f"that is not a layer or block name followed by a number")

    def bind(self, scope: Scope, name: str, node: str, pos):
        scope.names[name] = node
        scope.bound_at[name] = pos

    def local_name(self, scope: Scope, kind: str, name: str | None) -> str:
        """The name in ``scope`` of the next ``kind`` (``name`` when the statement gives one)."""
        scope.counts[kind] += 1
        return name or generated_name(kind, scope.counts[kind])

    def grow(self, key: str, pos, layer: bool = True):
        """Account for one more layer or block instance named ``key`` (inputs are not layers)."""
        if key in self.graph or key in self.instances:
            raise self.fail(pos, f"the name `{key}` is given twice")
        if layer and len(self.graph) - len(self.inputs) + len(self.instances) >= MAX_LAYERS:
            raise self.fail(pos, f"the network expands to more than {MAX_LAYERS} layers",
                            hint="check the repetition counts")

    def add_node(self, key, op, args, kwargs, inputs, pos, arg_pos, scope: Scope):
        self.grow(key, pos, layer=op != "input")
        self.graph.add_node(key, op=op, args=args, kwargs=kwargs, inputs=list(inputs), pos=pos,
                            arg_pos=arg_pos, scope=scope.path)
        self.order.append(key)
        for index, source in enumerate(inputs):
            if not self.graph.has_edge(source, key):    # add(x, x): one edge, both inputs
                self.graph.add_edge(source, key, index=index)
        return key

    def shape(self, node: str) -> tuple:
        """The output shape of ``node``, analysing the layers added before it that are not yet."""
        if node not in self.shapes:
            from cnnspec.analysis import configure

            nodes = self.graph.nodes
            for name in self.order[len(self.shapes):]:
                data = nodes[name]
                if data["op"] == "input":
                    self.shapes[name] = tuple(data["kwargs"]["shape"])
                else:
                    in_shapes = [self.shapes[i] for i in data["inputs"]]
                    self.shapes[name] = configure(self.graph, name, in_shapes, self.sources)[2]
                if name == node:
                    break
        return self.shapes[node]

    # -- bodies ---------------------------------------------------------------------------------
    def network(self, network: ast.Network) -> Scope:
        body = network.body
        inputs = [s for s in body if isinstance(s, ast.Input)]
        if not inputs:
            raise self.fail(network.pos, f"network `{network.name}` has no input",
                            hint="start its body with `input NAME: SHAPE`, e.g. `input image: 1x28x28`")
        first = inputs[0]
        if body[0] is not first:
            raise self.fail(first.pos, "`input` must be the first statement of the network",
                            hint="the current tensor starts as the first input declared")
        scope = Scope(path=(), current=first.name)
        for statement in body:
            if isinstance(statement, ast.Input):
                self.input(statement, scope)
            else:
                self.statements([statement], scope)
        return scope

    def input(self, statement: ast.Input, scope: Scope):
        """``input NAME: SHAPE``: an input node; the first one is the current tensor."""
        shape = statement.shape
        if not 1 <= len(shape) <= 3 or min(shape) < 1:
            raise self.fail(statement.pos, f"bad input shape {'x'.join(map(str, shape))}",
                            hint="write CxHxW (image), CxL (sequence) or D (vector), every size >= 1")
        self.check_name(statement.name, statement.name_pos, scope)
        self.bind(scope, statement.name, statement.name, statement.name_pos)
        self.add_node(statement.name, "input", (), {"shape": tuple(shape)}, [], statement.pos, {}, scope)
        self.inputs.append(statement.name)

    def statements(self, body: list, scope: Scope):
        for statement in body:
            if isinstance(statement, ast.Input):
                hint = ("a block takes its input as `in`" if scope.block else
                        "declare the inputs at the top level of the network")
                raise self.fail(statement.pos, "`input` is only a statement of a network's body",
                                hint=hint)
            try:
                if isinstance(statement, ast.If):
                    self.if_(statement, scope)
                else:
                    self.statement(statement, scope)
            except RecursionError:
                raise self.fail(statement.pos, "this statement is nested too deeply") from None

    def if_(self, statement: ast.If, scope: Scope):
        """``if COND { body }``: the body's statements run in ``scope`` when COND holds."""
        if self.condition(statement.condition, scope):
            self.statements(statement.body, scope)
            return
        for name, pos in bound_names(statement.body):
            scope.skipped.setdefault(name, statement.pos)

    def statement(self, statement: ast.Statement, scope: Scope):
        """Feed the chain the current tensor (or the tensor or merge it starts from); bind its
        output. A right side that is an integer expression binds a constant instead."""
        target = statement.target
        if target is not None:
            self.check_name(target, statement.target_pos, scope)
        steps = statement.chain.steps
        if len(steps) == 1 and self.is_value(steps[0], scope):
            self.constant(statement, scope)
            return
        name = target if len(steps) == 1 else None       # one layer or block: it takes the name
        first, x = steps[0], scope.current
        if isinstance(first, ast.Name) and first.name in scope.names:
            x, steps = scope.names[first.name], steps[1:]
        elif isinstance(first, ast.Call) and first.name in self.name_layers:
            x, steps = self.merge(first, scope, name), steps[1:]
        elif isinstance(first, ast.Name) and first.name not in self.kinds | self.blocks.keys():
            raise self.unknown_name(first, scope, layer=True)
        for step in steps:
            x = self.step(step, scope, x, name)
        scope.current = x
        if target is not None:
            self.bind(scope, target, x, statement.target_pos)

    def unknown_name(self, expr: ast.Name, scope: Scope, layer: bool = False) -> CnnSpecError:
        known = [*scope.names, *self.kinds, *self.blocks]
        hint = self.suggest(expr.name, known, layer)
        if expr.name == "in":
            hint = f"`in` is a block's input; here the input is `{self.input_name}`"
        elif expr.name in scope.skipped:
            hint = (f"`{expr.name}` is bound in the `if` body at line {scope.skipped[expr.name].line}, "
                    "whose condition did not hold")
        elif expr.name in scope.params:
            what = "a constant" if expr.name in scope.constants else f"a parameter of block `{scope.block}`"
            hint = f"`{expr.name}` is {what}, a value, not a tensor"
        else:
            generated = re.fullmatch(r"([a-z_0-9]*[a-z_])(\d+)", expr.name)
            if generated and generated[1] in self.kinds | self.blocks.keys():
                hint = (f"`{expr.name}` is how summaries name a layer, not a name in the file: bind "
                        f"the tensor first, e.g. `a = {generated[1]}(...)`, then write `a -> ...`")
        return self.fail(expr.pos, f"unknown name `{expr.name}`", hint=hint)

    def constant(self, statement: ast.Statement, scope: Scope):
        """``NAME = EXPR`` with an integer expression on the right: a constant of the scope."""
        expr = statement.chain.steps[0]
        if statement.target is None:
            raise self.fail(expr.pos, "a value on its own is not a statement",
                            hint="bind it to a name (`n = ...`) to use it as a constant, or write a "
                                 "chain of layers")
        value = self.value(expr, scope)
        if isinstance(value, str):
            raise self.fail(expr.pos, f"`{value}` is a word, not a value to bind",
                            hint="constants are numbers, sizes or conditions")
        scope.params[statement.target] = value
        scope.constants.add(statement.target)
        scope.bound_at[statement.target] = statement.target_pos

    def is_value(self, expr, scope: Scope) -> bool:
        """Whether a right side is an expression of values rather than a chain: it does not start
        from a tensor name, a layer, a block or a group of steps."""
        while True:
            if isinstance(expr, (ast.BinOp, ast.Compare, ast.BoolOp)):
                expr = expr.left
            elif isinstance(expr, ast.Neg):
                expr = expr.operand
            else:
                break
        if isinstance(expr, ast.Name):
            return expr.name in scope.params and expr.name not in scope.names
        if isinstance(expr, ast.Call):
            return expr.name in FUNCTIONS and expr.name not in self.kinds | self.blocks.keys()
        return not isinstance(expr, ast.Group)

    def step(self, step, scope: Scope, x: str, name: str | None = None) -> str:
        """Apply one step to the tensor ``x``; returns the node holding the result."""
        repeat = split_repeat(step)
        if repeat is not None:
            inner, count = repeat
            for _ in range(self.count(count, scope)):
                x = self.step(inner, scope, x)
            return x
        if isinstance(step, ast.Group):
            for inner in step.chain.steps:
                x = self.step(inner, scope, x)
            return x
        if isinstance(step, ast.BinOp) and step.op == "//":
            raise self.fail(step.pos, "a value is not a step of a chain",
                            hint="comments start with `#`; `//` is integer division")
        if not isinstance(step, (ast.Name, ast.Call)):
            raise self.fail(step.pos, "a value is not a step of a chain",
                            hint="steps are layers or blocks joined by `->`; a value is an argument, "
                                 "or a constant bound with `NAME = ...`")
        what = step.name
        if what in self.name_layers:
            example = self.name_example(what)
            if isinstance(step, ast.Name):
                raise self.fail(step.pos, f"`{what}` needs the tensors to "
                                          f"{self.name_verb(what).replace('multiplie', 'multiply')}, "
                                          f"e.g. `{example}`")
            raise self.fail(step.name_pos, f"`{what}` {self.name_verb(what)}s named tensors, so it must "
                                           "start a chain",
                            hint=f"bind the tensors to names and write `{example}` at the start "
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
        if what in scope.params:
            raise self.fail(where, f"`{what}` is a value, not a layer",
                            hint="values are arguments of layers, e.g. `conv(c, 3x3)`")
        raise self.fail(where, f"unknown layer or block `{what}`",
                        hint=self.suggest(what, [*self.kinds, *self.blocks], layer=True))

    @staticmethod
    def name_example(op: str) -> str:
        return "z = sample(mu, logvar)" if op == "sample" else f"{op}(a, b)"

    @staticmethod
    def name_verb(op: str) -> str:
        return {"sample": "sample", "mul": "multiplie"}.get(op, "merge")

    def layer(self, step, scope: Scope, x: str, name: str | None) -> str:
        args, kwargs, arg_pos = self.arguments(step, scope) if isinstance(step, ast.Call) else ((), {}, {})
        key = scope.key(self.local_name(scope, step.name, name))
        return self.add_node(key, step.name, args, kwargs, [x], step.pos, arg_pos, scope)

    def merge(self, call: ast.Call, scope: Scope, name: str | None) -> str:
        """``add(a, b)``, ``concat(a, b, c)``, ``mul(x, gate)``, ``sample(mu, logvar)``: the
        positional operands are tensor names, in order; keywords are values."""
        from cnnspec.layers import LAYERS

        inputs, kwargs, arg_pos = [], {}, {}
        for arg in call.args:
            if arg.key is not None:
                if arg.key in kwargs:
                    raise self.fail(arg.pos, f"argument `{arg.key}` is given twice")
                kwargs[arg.key], arg_pos[arg.key] = self.value(arg.value, scope), arg.pos
                continue
            if kwargs:
                raise self.fail(arg.pos, "a positional argument follows a keyword argument",
                                hint="positional arguments come first, then `key=value`")
            operand = arg.value
            if not isinstance(operand, ast.Name):
                raise self.fail(arg.pos, f"`{call.name}` takes names of tensors, e.g. "
                                         f"`{self.name_example(call.name)}`")
            if operand.name not in scope.names:
                if operand.name in scope.params or operand.name in scope.skipped:
                    raise self.unknown_name(operand, scope)
                raise self.fail(operand.pos, f"unknown name `{operand.name}`",
                                hint=self.suggest(operand.name, scope.names)
                                or f"bind it first with `{operand.name} = ...`")
            arg_pos[len(inputs)] = arg.pos
            inputs.append(scope.names[operand.name])
        wanted = LAYERS[call.name].n_inputs
        if wanted is None and len(inputs) < 2:
            raise self.fail(call.pos, f"`{call.name}` {self.name_verb(call.name)}s at least two tensors, "
                                      f"e.g. `{self.name_example(call.name)}`")
        if wanted is not None and len(inputs) != wanted:
            raise self.fail(call.pos, f"`{call.name}` takes {wanted} tensors, got {len(inputs)}",
                            hint=f"write `{self.name_example(call.name)}`")
        key = scope.key(self.local_name(scope, call.name, name))
        return self.add_node(key, call.name, (), kwargs, inputs, call.pos, arg_pos, scope)

    def instance(self, step, scope: Scope, x: str, name: str | None) -> str:
        """Expand a block call: its body, fed ``x`` as ``in``, in a scope of its own."""
        block = self.blocks[step.name]
        values = self.block_args(block, step, scope, x)
        local = self.local_name(scope, block.name, name)
        key = scope.key(local)
        self.grow(key, step.pos)
        self.instances[key] = {"type": block.name, "args": values, "scope": scope.path, "pos": step.pos}
        inner = Scope(path=(*scope.path, local), current=x, params=dict(values), names={"in": x},
                      block=block.name)
        self.statements(block.body, inner)
        return inner.current

    # -- arguments and values -------------------------------------------------------------------
    def arguments(self, call: ast.Call, scope: Scope):
        """(args tuple, kwargs dict, arg_pos {index or key: Pos}) of a layer call."""
        from cnnspec.layers import LAYERS

        args, kwargs, arg_pos = [], {}, {}
        names = list(LAYERS[call.name].params) if call.name in LAYERS else []
        for i, arg in enumerate(call.args):
            if arg.key in SIZE_ARGS or (arg.key is None and i < len(names) and names[i] in SIZE_ARGS):
                self.check_not_product(arg.value)
            value = self.value(arg.value, scope)
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
        """``5*5`` written for the size ``5x5`` (only where a size is due: a product of numbers
        is a number elsewhere, ``dense(16*8)``)."""
        if not (isinstance(expr, ast.BinOp) and expr.op == "*"):
            return
        if all(isinstance(side, ast.Literal) and type(side.value) is int for side in (expr.left, expr.right)):
            a, b = expr.left.value, expr.right.value
            raise self.fail(expr.pos, f"`{a}*{b}` multiplies two numbers",
                            hint=f"a size is written `{a}x{b}`; the number is `{a * b}`")

    def block_args(self, block: ast.Block, step, scope: Scope, x: str) -> dict:
        """Values of ``block``'s parameters for this call: positional, keyword, then defaults
        (which may use earlier parameters and the sizes of ``in``)."""
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
            given[key] = self.value(arg.value, scope)
        values = {}
        callee = Scope(path=scope.path, current=x, params=values, names={"in": x}, block=block.name)
        for param in block.params:
            if param.name in given:
                values[param.name] = given[param.name]
            elif param.default is not None:
                values[param.name] = self.value(param.default, callee)
            else:
                raise self.fail(step.pos, f"block `{block.name}` needs argument `{param.name}`",
                                hint=f"it is {signature}")
        return values

    def count(self, expr, scope: Scope) -> int:
        n = self.value(expr, scope)
        if type(n) is not int:
            raise self.fail(expr.pos, f"a repetition count must be an integer, got {n!r}")
        if not 1 <= n <= MAX_LAYERS:
            raise self.fail(expr.pos, f"a repetition count must be between 1 and {MAX_LAYERS}, got {n}")
        return n

    def condition(self, expr, scope: Scope) -> bool:
        """The truth of an ``if`` condition: comparisons of integers joined by and, or, not."""
        if not isinstance(expr, (ast.Compare, ast.BoolOp, ast.Not)):
            if isinstance(expr, ast.Name) and expr.name in scope.names:
                self.comparand(expr, scope)                  # a tensor: conditions are on integers
            value = self.value(expr, scope)
            if type(value) is bool:
                return value
            raise self.fail(expr.pos, f"a condition compares integers, got {self.show(value)}",
                            hint="e.g. `if expand != 1 { ... }` or `if stride == 1 and in.channels == c { ... }`")
        return self.value(expr, scope)

    @staticmethod
    def show(value) -> str:
        return f"`{value}`" if isinstance(value, str) else repr(value)

    def value(self, expr, scope: Scope):
        """The Python value of an expression; names that are not parameters or constants stay
        words (``same``)."""
        params = scope.params
        if isinstance(expr, ast.Literal):
            return expr.value
        if isinstance(expr, ast.Name):
            return params.get(expr.name, expr.name)
        if isinstance(expr, ast.Attribute):
            return self.size_of(expr, scope)
        if isinstance(expr, ast.TupleOf):
            return tuple(self.value(item, scope) for item in expr.items)
        if isinstance(expr, ast.ListOf):
            return [self.value(item, scope) for item in expr.items]
        if isinstance(expr, ast.Neg):
            v = self.value(expr.operand, scope)
            if type(v) not in (int, float):
                raise self.fail(expr.pos, f"cannot negate {v!r}")
            return -v
        if isinstance(expr, ast.BinOp):
            left, right = self.value(expr.left, scope), self.value(expr.right, scope)
            for side, v in ((expr.left, left), (expr.right, right)):
                if type(v) is not int:
                    raise self.fail(side.pos, f"arithmetic needs integers, got {v!r}")
            if expr.op == "//" and right == 0:
                raise self.fail(expr.pos, "division by zero")
            return self.checked(ARITHMETIC[expr.op](left, right), expr)
        if isinstance(expr, ast.Compare):
            left, right = (self.comparand(side, scope) for side in (expr.left, expr.right))
            return COMPARISONS[expr.op](left, right)
        if isinstance(expr, ast.BoolOp):
            left = self.truth(expr.left, scope, expr.op)
            if (expr.op == "and" and not left) or (expr.op == "or" and left):
                self.truth(expr.right, scope, expr.op)          # still checked, not short-cut
                return left
            return self.truth(expr.right, scope, expr.op)
        if isinstance(expr, ast.Not):
            return not self.truth(expr.operand, scope, "not")
        if isinstance(expr, ast.Call) and expr.name in FUNCTIONS:
            return self.function(expr, scope)
        if isinstance(expr, ast.Group):
            raise self.fail(expr.pos, "a chain of layers is not a value",
                            hint="layers are steps of a chain, not argument values")
        raise self.fail(expr.pos, f"`{expr.name}(...)` is not a value here",
                        hint="layers and blocks are steps of a chain, not argument values")

    def checked(self, result: int, expr) -> int:
        if abs(result) > MAX_INT:
            raise self.fail(expr.pos, f"number too large (more than {MAX_INT})")
        return result

    def comparand(self, expr, scope: Scope) -> int:
        """One side of a comparison: an integer (a tensor is refused: conditions are on sizes)."""
        if isinstance(expr, ast.Name) and expr.name in scope.names:
            raise self.fail(expr.pos, f"conditions are on integers, and `{expr.name}` is a tensor",
                            hint=f"compare one of its sizes, e.g. `{expr.name}.channels`")
        value = self.value(expr, scope)
        if type(value) is not int:
            raise self.fail(expr.pos, f"conditions are on integers, got {self.show(value)}",
                            hint="compare numbers, block parameters, constants or sizes such as "
                                 "`in.channels`")
        return value

    def truth(self, expr, scope: Scope, op: str) -> bool:
        value = self.value(expr, scope)
        if type(value) is not bool:
            raise self.fail(expr.pos, f"`{op}` joins conditions, got {self.show(value)}",
                            hint="a condition is a comparison such as `stride == 1`")
        return value

    def function(self, call: ast.Call, scope: Scope) -> int:
        """``min(a, b, ...)`` and ``max(a, b, ...)`` of integers."""
        if not call.args:
            raise self.fail(call.pos, f"`{call.name}` needs at least one integer, e.g. `{call.name}(a, b)`")
        values = []
        for arg in call.args:
            if arg.key is not None:
                raise self.fail(arg.pos, f"`{call.name}` takes no keyword arguments")
            value = self.value(arg.value, scope)
            if type(value) is not int:
                raise self.fail(arg.pos, f"`{call.name}` takes integers, got {self.show(value)}")
            values.append(value)
        return FUNCTIONS[call.name](values)

    def size_of(self, expr: ast.Attribute, scope: Scope) -> int:
        """``x.channels``, ``x.height``, ``x.width`` (``x.length`` in 1-D) of a tensor name."""
        if expr.name not in scope.names:
            if expr.name in scope.params or expr.name in scope.skipped:
                raise self.unknown_name(ast.Name(expr.name, expr.name_pos), scope)
            raise self.fail(expr.name_pos, f"unknown tensor `{expr.name}`",
                            hint=self.suggest(expr.name, scope.names)
                            or "sizes are read from `in`, the input's name or a bound name")
        shape = self.shape(scope.names[expr.name])
        sizes = SIZES[len(shape)]
        if expr.attr not in sizes:
            kind = {1: "a flat vector", 2: "a sequence (CxL)", 3: "an image (CxHxW)"}[len(shape)]
            guess = nearest(expr.attr, sizes)
            hint = (f"did you mean `{guess}`? " if guess else "") + f"it has {', '.join('.' + s for s in sizes)}"
            raise self.fail(expr.attr_pos, f"`{expr.name}` is {kind} of shape "
                            f"{'x'.join(map(str, shape))}: it has no size `.{expr.attr}`", hint=hint)
        return shape[sizes.index(expr.attr)]


def generated_name(kind: str, k: int) -> str:
    """``conv`` 2 -> ``conv2``; a kind ending in a digit takes an underscore: ``relu6_2``."""
    return f"{kind}_{k}" if kind[-1].isdigit() else f"{kind}{k}"


def split_repeat(step):
    """``step * count`` -> (step, count expression), or None when ``step`` is no repetition.

    The parser reads ``conv(8, 3x3) * c + 1`` as ``(conv * c) + 1``; the count is everything
    written after the ``*`` (here ``c + 1``), as the language has always read it."""
    path, node = [], step
    while isinstance(node, ast.BinOp):
        if node.op == "*" and isinstance(node.left, (ast.Name, ast.Call, ast.Group)):
            count = node.right
            for outer in reversed(path):
                count = ast.BinOp(outer.op, count, outer.right, outer.pos)
            return node.left, count
        path.append(node)
        node = node.left
    return None


def bound_names(body: list):
    """(name, Pos) of every statement target in ``body`` and the ``if`` bodies inside it."""
    for statement in body:
        if isinstance(statement, ast.Statement) and statement.target is not None:
            yield statement.target, statement.target_pos
        elif isinstance(statement, ast.If):
            yield from bound_names(statement.body)
