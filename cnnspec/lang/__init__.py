"""The `.cnn` language front end: text -> syntax tree -> raw graph (see shared/docs/dsl.md).

    graph = compile_file("specs/lenet5.cnn")        # parse, read the imports, build the first network
    graph = compile_file("dcgan.cnn", network="Discriminator")
    graphs = compile_all(text, file="gan.cnn")      # {name: graph} of every network of the file
    graph = compile_source(text, file="net.cnn")
    module = parse(text, file="net.cnn")            # just the syntax tree (cnnspec.lang.ast)
    graph = build_graph(module)

Every mistake in the text is a located :class:`cnnspec.errors.CnnSpecError`. Where dsl.md is
silent, the language does this:

* ``block NAME { ... }`` may omit the parentheses; a block called without arguments may omit
  them too (``act``, ``act()``). Defaults may use earlier parameters: ``block b(c, d=2*c)``.
* ``stem = basic(64)`` names the block instance (``stem.conv1``), as ``c1 = conv(...)`` names a
  layer. Bound names may not look like generated ones (``conv2``, ``basic1``), nor be ``in``, a
  layer, a block or a block parameter. The reserved words are ``network block import train
  input true false``.
* Only the first step of a statement may be a tensor name or a merge; ``x = in`` binds a name
  to an existing tensor. ``add(x, x)`` is allowed (one edge, two inputs).
* Arithmetic is on integers; ``5*5`` (two number literals) is refused as a likely ``5x5``.
* Repetition counts are 1..100000 and a network expands to at most 100000 layers and block
  instances; brackets nest at most 100 deep.
* Imports are transitive, and relative to the importing file (to the working directory for
  text without a file); a file's network and train section are ignored when it is imported.
* The train section syntax is described in :mod:`cnnspec.lang.train`.
* Several networks of a file share its blocks, imports and train section; their names differ.
  Inputs after the first may be declared anywhere at the network's top level (not inside ``if``).
* ``if`` has no ``else``. Conditions and constants evaluate like Python's (``//`` floors), but
  ``and``/``or`` join conditions only, and comparisons do not chain. ``and``, ``or``, ``not``
  and ``if`` are reserved words. A constant may also hold a size (``k = 3x3``) or a number.
"""
from __future__ import annotations

import re

import networkx as nx

from cnnspec.errors import CnnSpecError, Pos, error_at, not_utf8_error
from cnnspec.lang.build import MAX_LAYERS, build_graph
from cnnspec.lang.imports import blocks_in_scope
from cnnspec.lang.parser import parse, source_text
from cnnspec.limits import read_text

__all__ = ["MAX_LAYERS", "build_graph", "blocks_in_scope", "compile_all", "compile_file", "compile_source",
           "parse", "read_source"]


def compile_source(text: str, file: str | None = None, network: str | None = None) -> nx.DiGraph:
    """The raw graph of the network called ``network`` (None: the first) in ``text`` (named
    ``file`` in messages; imports are relative to it, or to the working directory when None)."""
    text = source_text(text)
    try:
        return build_graph(parse(text, file), network=network)
    except RecursionError:                       # a last guard: every pass is meant to be shallow
        raise too_deep(text, file) from None


def compile_all(text: str, file: str | None = None) -> dict:
    """{network name: raw graph} of every network in ``text``, in the order written (the file is
    parsed and its imports read once)."""
    text = source_text(text)
    try:
        module = parse(text, file)
        sources = {file: text}
        blocks = blocks_in_scope(module, sources)
        if not module.networks:
            return {None: build_graph(module, blocks, sources)}      # raises "no `network`"
        return {n.name: build_graph(module, blocks, sources, network=n.name) for n in module.networks}
    except RecursionError:
        raise too_deep(text, file) from None


def too_deep(text: str, file: str | None) -> CnnSpecError:
    """"nested too deeply", located at the bracket that opens the deepest nesting of ``text``."""
    depth, deepest, where = 0, 0, 0
    for match in re.finditer(r'"[^"\n]*"|#[^\n]*|[][(){}]', text):
        char = match.group()
        if char in "([{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, match.start()
        elif char in ")]}":
            depth = max(0, depth - 1)
    line = text.count("\n", 0, where) + 1
    col = where - (text.rfind("\n", 0, where) + 1) + 1
    return error_at(Pos(file, line, col), "the file is nested too deeply to read", sources={file: text},
                    hint=f"brackets, blocks and repetitions nest {deepest} deep here; flatten the expression "
                         "or split it into blocks")


def read_source(path) -> str:
    """The text of the `.cnn` file at ``path`` (a located error when it cannot be read)."""
    path = str(path)
    try:
        return read_text(path, ".cnn file")
    except UnicodeDecodeError as err:
        raise not_utf8_error(err, path) from None


def compile_file(path, network: str | None = None) -> nx.DiGraph:
    """The raw graph of the network called ``network`` (None: the first) of the file at ``path``."""
    path = str(path)
    return compile_source(read_source(path), path, network)
