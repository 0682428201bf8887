"""``import "other.cnn"``: the blocks in scope of a file, from itself and the files it imports.

Paths are relative to the importing file (to the working directory for text without a file).
Imports are transitive: importing a file brings in its blocks and those of the files it imports.
A file reached twice (a diamond) counts once; a cycle of imports, a missing file and two blocks
of the same name are located errors. Networks and train sections of imported files are ignored.
"""
from __future__ import annotations

import contextvars
import os

from cnnspec.errors import CnnSpecError, error_at, not_utf8
from cnnspec.lang import ast
from cnnspec.lang.parser import parse, source_text
from cnnspec.limits import read_text

# A folder (real path) that imports must stay inside, or None: `cnnspec serve` sets it while it
# analyses text sent by the browser, so that an import cannot read a file outside its folder.
IMPORT_ROOT: contextvars.ContextVar = contextvars.ContextVar("cnnspec_import_root", default=None)


def blocks_in_scope(module: ast.Module, sources: dict) -> dict[str, ast.Block]:
    """Block name -> definition for ``module``; adds the text of every imported file to ``sources``."""
    loaded: dict[str, list[ast.Block]] = {}          # real path -> blocks it brings

    def visit(mod: ast.Module, chain: tuple) -> list[ast.Block]:
        found = []
        for imp in mod.imports:
            path = os.path.normpath(os.path.join(os.path.dirname(mod.file or ""), imp.path))
            real = os.path.realpath(path)
            root = IMPORT_ROOT.get()
            if root is not None and os.path.commonpath([real, root]) != root:
                raise error_at(imp.pos, f"`{imp.path}` is outside the folder being served", sources=sources,
                               hint="imports may only read files inside that folder")
            if real in chain:
                cycle = " -> ".join(os.path.basename(p) for p in (*chain[chain.index(real):], real))
                raise error_at(imp.pos, f"cyclic import of `{imp.path}`", sources=sources,
                               hint=f"the files import each other: {cycle}")
            if real not in loaded:
                text = source_text(read(path, imp, sources))
                sources[path] = text
                loaded[real] = visit(parse(text, path), (*chain, real))
            found += loaded[real]
        return found + mod.blocks

    root = (os.path.realpath(module.file),) if module.file else ()
    blocks: dict[str, ast.Block] = {}
    for block in visit(module, root):
        first = blocks.setdefault(block.name, block)
        if first is not block:
            raise error_at(block.pos, f"block `{block.name}` is defined twice", sources=sources,
                           hint=f"it is also defined at {first.pos.file or '<string>'}:{first.pos.line}")
    return blocks


def read(path: str, imp: ast.Import, sources: dict) -> str:
    """The text of an imported file, or a located error at the import."""
    if not os.path.exists(path):
        raise error_at(imp.pos, f"cannot find `{imp.path}`", sources=sources,
                       hint=f"imports are relative to the importing file; looked for {path}")
    try:
        return read_text(path, "file")
    except UnicodeDecodeError as err:
        raise error_at(imp.pos, f"`{imp.path}` is {not_utf8(err)}", sources=sources) from None
    except CnnSpecError as err:           # not a regular file, too large, unreadable
        raise error_at(imp.pos, f"cannot import `{imp.path}`: {err.message}", sources=sources,
                       hint=err.hint) from None
