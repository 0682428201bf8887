"""The fast reader (cnnspec/lang/fastparse.py) against Lark, and the cost of long files (issue 17).

* Same tree: for every spec of the repository, every example of dsl.md and README.md, every spec
  written in the tests, and thousands of seeded mutations of them, the fast reader gives exactly
  the syntax tree (positions included) of Lark's parser and transformer, or gives up (and Lark,
  the reader of record, explains the error). It never accepts what Lark refuses.
* Linear cost, counted rather than timed: reading, building, analysing and summarising twice the
  layers runs at most about twice the Python lines (a quadratic step anywhere in those passes
  would run about four times as many).
"""
import ast as pyast
import gc
import random
import re
import sys

import pytest

import cnnspec
from cnnspec.lang import fastparse, parser
from conftest import ROOT, SPECS
from test_lang import DSL


def lark_items(text: str, file: str):
    """The top-level items as Lark's parser and the transformer make them (the reader of record)."""
    tree = parser.lark_parser().parse(text)
    return parser.ToAst(file, text).transform(tree)


def corpus() -> list[str]:
    texts = [path.read_text() for path in sorted(SPECS.glob("*.cnn"))]
    for doc in (DSL, ROOT / "README.md"):
        texts += re.findall(r"^```[^\n]*\n(.*?)^```", doc.read_text(), re.S | re.M)
    for test in sorted((ROOT / "tests").glob("test_*.py")):
        for node in pyast.walk(pyast.parse(test.read_text())):
            if isinstance(node, pyast.Constant) and isinstance(node.value, str) and "{" in node.value \
                    and re.search(r"\b(network|block|train)\b", node.value):
                texts.append(node.value)
    texts.append("network N {\n    input x: 8\n    y = -(-3) * -x.channels + (1, 2,) // 2 >= 4 and not not a or [1, 2,]\n"
                 "    (a -> b) * 3 -> c(1, k=2,)\n  -> d # c\n    if n == 1 or not (m < 2) { e }\n}\n"
                 "block b(c, d=2*c,) {\n    conv(c, 3x3,\n        pad=1)\n}\ntrain {\n    data = mnist:data/x\n"
                 "    lr = 1.5e-3\n    augment = [flip, crop(4)]\n    optimizer = adam(betas=(0.9, 0.999))\n}\n")
    return texts


def compare(text: str) -> str:
    """'same' (both readers give this tree), 'gave up' (the fast reader left it to Lark) or
    'refused' (both refuse); fails when the fast reader accepts what Lark refuses or differs."""
    text = text.removeprefix("\ufeff")
    try:
        fast = fastparse.parse_items(text, "f.cnn", parser.MAX_INT, parser.MAX_NESTING)
    except (fastparse.GiveUp, RecursionError):
        fast = None
    try:
        slow = lark_items(text, "f.cnn")
    except Exception as err:                     # a syntax error, or a located error of the transformer
        assert fast is None, f"the fast reader accepts what Lark refuses ({err!r}):\n{text}"
        return "refused"
    if fast is None:
        return "gave up"
    assert fast == slow, f"the readers differ on:\n{text}"
    return "same"


PIECES = ["->", "(", ")", ",", "=", "*", "-", "+", "//", "==", "<", " and ", " or ", "not ", "if ", "{", "}",
          "\n", " ", "# c\n", "x", "3x3", "1.5", "1e999", "[", "]", ".", "in.channels", '"s"', "mnist:a/b",
          "true", "7", ":", "\t", "\r\n", "9" * 30, "input ", "train", "block b ", "network N ", "@"]


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text) + 1)
        j = min(len(text), i + rng.randint(0, 5))
        text = text[:i] + (rng.choice(PIECES) if rng.random() < 0.75 else "") + text[j:]
    return text


def test_the_fast_reader_gives_lark_s_tree_or_gives_up():
    texts = corpus()
    assert len(texts) > 150
    outcomes = [compare(text) for text in texts]
    assert "gave up" not in outcomes and outcomes.count("same") > 150     # every valid one is read fast
    rng = random.Random(17)
    mutated = [compare(mutate(rng, rng.choice(texts))) for _ in range(3000)]
    assert mutated.count("same") >= 150 and mutated.count("refused") >= 300, \
        {k: mutated.count(k) for k in set(mutated)}


def test_well_formed_files_are_not_read_by_lark(monkeypatch):
    """cnnspec.loads reads a valid file with the fast reader alone; a syntax error still comes
    from Lark, located and with its caret, as before."""
    text = (SPECS / "resnet18.cnn").read_text()
    expected = cnnspec.loads(text, file="resnet18.cnn").summary()

    def refuse(*args, **kwargs):
        raise AssertionError("Lark was asked to read a well-formed file")

    monkeypatch.setattr(type(parser.lark_parser()), "parse", refuse)
    assert cnnspec.loads(text, file="resnet18.cnn").summary() == expected
    with pytest.raises(AssertionError, match="Lark was asked"):
        cnnspec.loads("network N {\n    input x: 1x8x8\n    conv(4 3x3)\n}\n")
    monkeypatch.undo()
    with pytest.raises(cnnspec.CnnSpecError) as err:
        cnnspec.loads("network N {\n    input x: 1x8x8\n    conv(4 3x3)\n}\n", file="bad.cnn")
    assert str(err.value).splitlines()[:3] == ["bad.cnn:3:12: error: unexpected `3x3`",
                                               "        conv(4 3x3)", "               ^~~"]


def written_out(layers: int, shape: str) -> str:
    """A network of ``layers`` layers written out one by one, in one of three shapes."""
    if shape == "statements":
        body = "    conv(8, 3x3, pad=1) -> relu\n" * (layers // 2)
    elif shape == "chain":
        body = "    " + " -> ".join(["conv(8, 3x3, pad=1)", "relu"] * (layers // 2)) + "\n"
    else:
        body = "".join(f"    t{i} = {f't{i - 1}' if i else 'x'} -> conv(8, 3x3, pad=1)\n" for i in range(layers))
    return "network N {\n    input x: 8x8x8\n" + body + "}\n"


def python_steps(text: str) -> int:
    """Python lines run (function calls and loop iterations included) reading, building,
    analysing and summarising ``text``."""
    steps = [0]

    def trace(frame, event, arg):
        steps[0] += 1
        return trace

    sys.settrace(trace)
    try:
        net = cnnspec.loads(text, file="long.cnn")
        net.summary()
    finally:
        sys.settrace(None)
    assert len(net.graph) > 1
    return steps[0]


@pytest.mark.parametrize("shape", ["statements", "chain", "named"])
def test_long_files_cost_linear_work(shape):
    cnnspec.loads(written_out(20, shape))                 # warm: imports, grammar, caches
    small, large = (python_steps(written_out(n, shape)) for n in (600, 1200))
    assert large <= 2.05 * small, (shape, small, large)


def test_the_garbage_collector_is_paused_while_reading_and_back_after():
    from cnnspec.limits import gc_paused

    seen = []
    assert gc.isenabled()
    with gc_paused():
        seen.append(gc.isenabled())
        with gc_paused():
            seen.append(gc.isenabled())
        seen.append(gc.isenabled())
    assert seen == [False, False, False] and gc.isenabled()
    with pytest.raises(cnnspec.CnnSpecError):
        cnnspec.loads("network N {\n    input x: 1x8x8\n    conv(4, 3x3) -> nope\n}\n")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()                     # a caller's own choice is kept
    finally:
        gc.enable()


def test_the_layer_limit_counts_layers_not_inputs():
    from cnnspec.lang import compile_source
    from cnnspec.limits import gc_paused

    head = "network N {\n    input x: 8x8x8\n    conv(8, 3x3, pad=1) -> relu * "
    with gc_paused():                 # as cnnspec.loads builds it: 100000 nodes, no collection passes
        assert len(compile_source(head + "99999\n}\n")) == 1 + 100_000
        with pytest.raises(cnnspec.CnnSpecError, match="expands to more than 100000 layers"):
            compile_source(head + "100000\n}\n")
