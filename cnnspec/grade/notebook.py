"""Jupyter notebooks as submissions: the code cells of an ``.ipynb`` file become the module graded.

    code = notebook_code(Path("layers.ipynb"))
    code.source            # the code cells, one after the other, IPython syntax removed
    code.removed           # ["cell 2, line 1: %matplotlib inline", ...] for the report
    code.locate(12)        # "cell 3, line 2": where line 12 of ``source`` came from

Read in the trusted parent (JSON, nbformat 4, as Jupyter writes it); the module then runs in the
sandbox exactly as a ``.py`` file does. Outputs, markdown and raw cells are ignored. What plain
Python cannot run is removed, and the report says so: line magics (``%matplotlib inline``), cell
magics (a cell starting with ``%%``, removed whole), shell escapes (``!pip install ...``,
``files = !ls``) and help requests (``np.zeros?``). ``get_ipython()`` calls are left in: they fail
at import like any other name the sandbox does not define, and the report shows where.

A file that is not a notebook (not JSON, no ``cells`` list, a cell whose source is not text) is a
:class:`NotebookError` saying what and where.
"""
from __future__ import annotations

import io
import json
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from cnnspec.errors import CnnSpecError

MAX_NOTEBOOK_BYTES = 64 * 2 ** 20      # outputs (plots) make notebooks large; their code is small
_MAGIC = re.compile(r"^\s*(%|!)")                              # %time x, %%cell, !ls
_SHELL_ASSIGN = re.compile(r"^\s*[\w.,\s()\[\]]+=\s*[%!]")      # files = !ls, t = %timeit -o f()
_HELP = re.compile(r"^\s*[\w.]+\s*\?\??\s*$")                  # np.zeros?  np.zeros??
_LINE = re.compile(r"\bline (\d+)\b")


class NotebookError(CnnSpecError):
    """The file cannot be read as a notebook."""


@dataclass
class NotebookCode:
    """The module made of a notebook's code cells."""

    source: str
    cells: list = field(default_factory=list)      # (first line in ``source``, cell number, lines)
    removed: list = field(default_factory=list)    # what was removed, in words, for the report
    code_cells: int = 0

    def locate(self, line: int) -> str:
        """``line`` of :attr:`source` as "cell K, line L" (cells numbered from 1 among all
        cells, as Jupyter shows their order)."""
        for first, number, count in self.cells:
            if first <= line < first + count:
                return f"cell {number}, line {line - first + 1}"
        return f"line {line}"

    def relocate(self, text: str) -> str:
        """Every "line N" in ``text`` (a traceback's words) as "cell K, line L"."""
        return _LINE.sub(lambda m: self.locate(int(m.group(1))), text)

    def summary(self) -> str:
        """One line for the report: what was graded, what was removed."""
        text = f"the notebook's {self.code_cells} code cell{'s' * (self.code_cells != 1)} graded as one module"
        if self.removed:
            shown = "; ".join(self.removed[:6])
            more = f"; and {len(self.removed) - 6} more" if len(self.removed) > 6 else ""
            text += (f"; removed as IPython syntax that plain Python cannot run: {shown}{more}")
        return text


def read_notebook(path) -> dict:
    """The notebook's JSON, or a NotebookError."""
    from cnnspec import limits

    path = Path(path)
    try:
        data = limits.read_bytes(path, "notebook", MAX_NOTEBOOK_BYTES)
    except CnnSpecError as err:
        hint = err.hint
        if "larger than" in err.message:
            hint = "clear its outputs (Kernel > Restart & Clear Output) and save it again"
        raise NotebookError(err.message, file=str(path), hint=hint) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"not a notebook: byte {exc.start} is not UTF-8 text", file=str(path)) from None
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"not a notebook: invalid JSON ({exc.msg})", file=str(path), line=exc.lineno,
                            col=exc.colno, source_line=_line(text, exc.lineno),
                            hint="a notebook is saved by Jupyter as JSON; open it in Jupyter and save it "
                                 "again") from None
    except RecursionError:
        raise NotebookError("not a notebook: its JSON is nested too deeply", file=str(path)) from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        found = "no `cells` list" if isinstance(notebook, dict) else f"a JSON {type(notebook).__name__}"
        version = notebook.get("nbformat") if isinstance(notebook, dict) else None
        hint = ("this is an nbformat 3 notebook: open it in a current Jupyter and save it (nbformat 4)"
                if version == 3 else "a notebook is saved by Jupyter as JSON with a `cells` list")
        raise NotebookError(f"not a notebook: {found}", file=str(path), hint=hint)
    return notebook


def notebook_code(path) -> NotebookCode:
    """The code cells of the notebook at ``path`` as one module (see the module docstring)."""
    notebook = read_notebook(path)
    lines, cells, removed = [], [], []
    code_cells = 0
    for number, cell in enumerate(notebook["cells"], 1):
        if not isinstance(cell, dict):
            raise NotebookError(f"not a notebook: cell {number} is not an object", file=str(path))
        if cell.get("cell_type") != "code":
            continue
        code_cells += 1
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise NotebookError(f"not a notebook: the source of cell {number} is not text", file=str(path))
        body = source.splitlines()
        if body and body[0].lstrip().startswith("%%"):
            removed.append(f"cell {number}: the cell magic {_short(body[0])} (the whole cell, "
                           f"{len(body)} line{'s' * (len(body) != 1)})")
            body = [""] * len(body)         # keep the numbering of what follows
        else:
            continued = False
            for i, line in enumerate(body):
                # IPython syntax only starts a logical line: `% x)` or `!= y)` continuing a bracket,
                # and a docstring's `%timeit f(x)`, are Python
                magic = continued or ((_MAGIC.match(line) or _SHELL_ASSIGN.match(line) or _HELP.match(line))
                                      and not _continues(body[:i]))
                if magic:
                    if not continued:
                        removed.append(f"cell {number}, line {i + 1}: {_short(line)}")
                    continued = line.rstrip().endswith("\\")
                    # a removed line becomes `pass` at its indentation, so that a block it was the
                    # whole body of (`for ...:` then `!cmd`) still compiles
                    indent = line[:len(line) - len(line.lstrip())]
                    body[i] = f"{indent}pass" if indent else ""
        cells.append((len(lines) + 1, number, max(len(body), 1)))
        lines += body or [""]
        lines.append("")                    # cells are separated as Jupyter runs them
    return NotebookCode("\n".join(lines) + "\n", cells, removed, code_cells)


def _continues(lines) -> bool:
    """Whether the Python of ``lines`` ends inside a statement (an open bracket, a triple-quoted
    string, a backslash continuation): Python's own tokenizer says so ("EOF in multi-line
    statement/string"). Code it cannot read is the cell's own error, reported when it runs."""
    text = "\n".join(lines) + "\n"
    try:
        for _ in tokenize.generate_tokens(io.StringIO(text).readline):
            pass
    except tokenize.TokenError as err:
        return "EOF" in str(err)
    except SyntaxError:
        return False
    return False


def _short(line: str) -> str:
    line = line.strip()
    return f"`{line if len(line) <= 60 else line[:57] + '...'}`"


def _line(text: str, number: int) -> str | None:
    lines = text.splitlines()
    return lines[number - 1][:200] if 0 < number <= len(lines) else None
