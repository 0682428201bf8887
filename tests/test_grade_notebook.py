"""Notebooks as submissions: a notebook grades exactly like its .py twin; IPython syntax is removed
and reported; errors point at cells; malformed notebooks are clear errors, never tracebacks."""
from __future__ import annotations

import json
import re

import pytest

from cnnspec.cli import main as cli_main
from cnnspec.grade import reports
from cnnspec.grade.assignment import load_assignment
from cnnspec.grade.batch import find_submission, run_batch
from cnnspec.grade.grader import Grader
from cnnspec.grade.notebook import NotebookError, notebook_code
from grade_fixtures.support import reference, small_assignment, student

FUNCTIONS = ["conv2d_forward", "conv2d_backward", "relu_forward", "relu_backward", "dense_backward"]


def notebook(cells: list, nbformat: int = 4) -> str:
    """A notebook as Jupyter saves it: cells given as ("code" | "markdown", text); code cells
    get outputs (which the grader must ignore)."""
    out = []
    for kind, text in cells:
        lines = text.splitlines(keepends=True)
        cell = {"cell_type": kind, "metadata": {}, "source": lines}
        if kind == "code":
            cell.update(execution_count=len(out) + 1, outputs=[
                {"output_type": "stream", "name": "stdout", "text": ["raise SystemExit('outputs run?')\n"]}])
        out.append(cell)
    return json.dumps({"cells": out, "metadata": {"kernelspec": {"name": "python3"}},
                       "nbformat": nbformat, "nbformat_minor": 5}, indent=1)


def as_cells(source: str) -> list:
    """The module split into one code cell per top-level statement group (as a student would
    write it: imports, then a function per cell), with notes and IPython syntax between them."""
    parts = re.split(r"\n(?=def |import |from )", source)
    cells = [("markdown", "# Homework 1\nImplement the layers below."),
             ("code", "%matplotlib inline\n!pip install numpy\nimport numpy as np\nnp.zeros?\n")]
    for i, part in enumerate(parts):
        cells.append(("code", part))
        if i == 1:
            cells.append(("code", "%%timeit\nconv2d_forward(x, w, b, (1, 1), (0, 0, 0, 0))\n"))
            cells.append(("markdown", "Now the backward pass."))
    return cells


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    directory = tmp_path_factory.mktemp("twins")
    py = student(directory, "bug_flipped_unfinished")
    nb = directory / "layers.ipynb"
    nb.write_text(notebook(as_cells(py.read_text())))
    grader = Grader(load_assignment(small_assignment(directory / "a", FUNCTIONS)), reference=reference())
    return grader.grade(py, display_name="layers.py"), grader.grade(nb), nb


def test_a_notebook_grades_exactly_like_its_py_twin(twins):
    py, nb, _ = twins
    assert nb.score == py.score and 0 < py.score < py.max_score
    for a, b in zip(py.problems, nb.problems):
        assert a.name == b.name and a.notes == b.notes
        assert [(c.key, c.passed, c.total, c.messages) for c in a.checks] == \
               [(c.key, c.passed, c.total, c.messages) for c in b.checks]
    assert "kernel flipped" in reports.text(nb)            # the diagnosis reaches the notebook too


def test_the_report_says_what_was_removed(twins):
    _, nb, _ = twins
    text = reports.text(nb)
    assert "graded as one module" in text
    for removed in ("cell 2, line 1: `%matplotlib inline`", "cell 2, line 2: `!pip install numpy`",
                    "cell 2, line 4: `np.zeros?`", "the cell magic `%%timeit`"):
        assert removed in text, text
    assert "outputs run?" not in text


def test_removed_lines_keep_blocks_valid_and_lines_in_place():
    code = notebook_code_from([("code", "import numpy as np\nfor i in range(2):\n    !echo hi\nfiles = !ls\n"
                                        "def f(x):\n    return x\n")])
    compile(code.source, "nb", "exec")
    assert code.source.splitlines()[2] == "    pass"
    assert code.locate(5) == "cell 1, line 5"
    assert len(code.removed) == 2


def notebook_code_from(cells, tmp=None):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "n.ipynb"
    path.write_text(notebook(cells))
    return notebook_code(path)


def test_errors_point_at_the_cell_and_its_line(tmp_path):
    path = tmp_path / "layers.ipynb"
    path.write_text(notebook([("code", "import numpy as np\n"),
                              ("markdown", "text"),
                              ("code", "def relu_forward(x):\n    return np.maximum(x, 0)\n"),
                              ("code", "x = 1\ny = undefined_name + 1\n")]))
    assignment = load_assignment(small_assignment(tmp_path / "a", ["relu_forward"]))
    result = Grader(assignment, reference=reference()).grade(path)
    assert "importing your file stopped at cell 4, line 2: NameError" in result.import_error
    assert result.problems[0].score == result.problems[0].max_score      # defined before the error


@pytest.mark.parametrize("text, message", [
    ("{not json", "not a notebook: invalid JSON"),
    ("[1, 2]", "not a notebook: a JSON list"),
    ('{"worksheets": [], "nbformat": 3}', "nbformat 3 notebook"),
    ('{"cells": [{"cell_type": "code", "source": 5}]}', "the source of cell 1 is not text"),
    ('{"cells": ["x"]}', "cell 1 is not an object"),
    (b"\xff\xfe{", "is not UTF-8 text"),
])
def test_a_malformed_notebook_is_a_clear_error_and_scores_zero(tmp_path, capsys, text, message):
    path = tmp_path / "layers.ipynb"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(NotebookError) as err:
        notebook_code(path)
    assert message in str(err.value) or message in (err.value.hint or "")
    homework = small_assignment(tmp_path / "a", ["relu_forward"])
    assert cli_main(["grade", str(homework), str(path), "--public"]) == 0
    out = capsys.readouterr().out
    assert "Not graded: your notebook could not be read" in out and "Traceback" not in out
    assert "0 / " in out.splitlines()[0]


def test_batch_and_gradescope_folders_find_a_notebook(tmp_path):
    folder = tmp_path / "submissions" / "bob"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / ".ipynb_checkpoints" / "layers-checkpoint.ipynb").write_text("{}")
    (folder / "hw1.ipynb").write_text(notebook([("code", "def relu_forward(x):\n    return x * (x > 0)\n")]))
    entry = find_submission(folder, "layers.py")
    assert entry.path == folder / "hw1.ipynb"
    (tmp_path / "submissions" / "carol.ipynb").write_text(notebook([("code", "def relu_forward(x):\n    return x\n")]))
    homework = small_assignment(tmp_path / "a", ["relu_forward"])
    out = tmp_path / "book.csv"
    run_batch(homework, tmp_path / "submissions", out, public_only=True,
              grader=Grader(load_assignment(homework), reference=reference(), public_only=True))
    rows = {r.split(",")[0]: r for r in out.read_text().splitlines()[1:]}
    assert set(rows) == {"bob", "carol"}
    assert rows["bob"].split(",")[1:3] == ["2.0", "2.0"] and rows["carol"].split(",")[1] == "0.0"


def test_lines_continuing_a_statement_are_python_not_ipython_syntax(tmp_path):
    """`% x.size)` and `!= x)` continuing a bracket, and `%timeit ...` in a docstring, are Python
    (IPython looks for its syntax only where a logical line starts): they are kept, and the notebook
    grades as its .py twin does. They were removed, and the notebook did not compile (0 points)."""
    source = ('import numpy as np\n'
              'def relu_forward(x):\n'
              '    """ReLU, elementwise.\n'
              '    %timeit relu_forward(np.ones(10))\n'
              '    """\n'
              '    label = ("relu of %d values"\n'
              '             % x.size)\n'
              '    nans = (x\n'
              '            != x)\n'
              '    return np.where(nans, x, np.maximum(x, 0))\n')
    compile(source, "layers.py", "exec")                       # the reference: plain Python runs it
    code = notebook_code_from([("code", "%matplotlib inline\n"), ("code", source)])
    assert code.removed == ["cell 1, line 1: `%matplotlib inline`"]
    assert code.source.splitlines()[2:12] == source.splitlines()
    nb = tmp_path / "layers.ipynb"
    nb.write_text(notebook([("code", "%matplotlib inline\n"), ("code", source)]))
    py = tmp_path / "layers.py"
    py.write_text(source)
    grader = Grader(load_assignment(small_assignment(tmp_path / "a", ["relu_forward"])), reference=reference())
    twin, graded = grader.grade(py), grader.grade(nb)
    assert twin.score == twin.max_score > 0
    assert graded.score == twin.score and graded.import_error is None, reports.text(graded)
