"""No input text makes the front end raise anything but CnnSpecError: random text, mutations of
the dsl.md examples (characters deleted, inserted, swapped; tokens shuffled, dropped, repeated)
and extreme inputs (deep nesting, long expressions, huge counts and numbers, binary junk)."""
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnspec.errors import CnnSpecError
from cnnspec.lang import compile_source
from test_lang import DSL

EXAMPLES = [f for f in re.findall(r"^```[^\n]*\n(.*?)^```", DSL.read_text(), re.S | re.M)
            if "network " in f]

SNIPPETS = ["->", "(", ")", "[", "]", "{", "}", "=", ",", "*", "//", "-", ":", "\n", "#", '"',
            "x", "5x5", "1e-5", "0", "99999999", "in", "add", "concat", "input", "network",
            "block", "train", "import", "true", "basic", "relu", "mnist:d", "\x00", "\t", "é"]
TOKEN = re.compile(r"#[^\n]*|\s+|\w+|->|//|.", re.S)
FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def compiles_or_fails_cleanly(text: str):
    """Build the text; a CnnSpecError must render (file:line:col and caret) without failing."""
    try:
        compile_source(text, "fuzz.cnn")
    except CnnSpecError as err:
        rendered = str(err)
        assert rendered.startswith("fuzz.cnn")
        if err.line is not None and err.source_line is not None:
            assert "^" in rendered


@FAST
@given(st.text(max_size=300))
def test_random_text(text):
    compiles_or_fails_cleanly(text)


@FAST
@given(st.lists(st.sampled_from(SNIPPETS + ["relu", "conv(8, 3x3)", "image", " "]), max_size=60))
def test_random_token_soup(tokens):
    compiles_or_fails_cleanly("network N {\n  input image: 1x8x8\n" + " ".join(tokens) + "\n}\n")


edit = st.tuples(st.sampled_from(["delete", "insert", "swap"]), st.integers(0, 10 ** 6),
                 st.integers(0, 10 ** 6), st.sampled_from(SNIPPETS) | st.characters())


@FAST
@given(st.sampled_from(EXAMPLES or [""]), st.lists(edit, min_size=1, max_size=4))
def test_character_mutations_of_the_examples(example, edits):
    text = list(example)
    for kind, i, j, snippet in edits:
        i, j = i % (len(text) + 1), j % (len(text) + 1)
        if kind == "delete":
            del text[i:i + 1 + j % 3]
        elif kind == "insert":
            text.insert(i, snippet)
        elif text:
            i, j = i % len(text), j % len(text)
            text[i], text[j] = text[j], text[i]
    compiles_or_fails_cleanly("".join(text))


@FAST
@given(st.sampled_from(EXAMPLES or [""]), st.data())
def test_token_mutations_of_the_examples(example, data):
    tokens = TOKEN.findall(example)
    start = data.draw(st.integers(0, len(tokens) - 1))
    end = data.draw(st.integers(start + 1, min(len(tokens), start + 12)))
    kind = data.draw(st.sampled_from(["shuffle", "drop", "repeat", "move"]))
    piece = tokens[start:end]
    if kind == "shuffle":
        piece = data.draw(st.permutations(piece))
    elif kind == "drop":
        piece = []
    elif kind == "repeat":
        piece = piece * data.draw(st.integers(2, 4))
    else:
        where = data.draw(st.integers(0, len(tokens)))
        tokens = tokens[:where] + piece + tokens[where:]
    compiles_or_fails_cleanly("".join(tokens[:start] + piece + tokens[end:]))


H = "network N {\n    input x: 1x8x8\n"


EXTREME = {
    "empty": "", "blank lines": "\n\n", "comment": "#", "keyword": "network", "no body": "network N",
    "open body": "network N {", "brace": "}", "deep braces": "{" * 5000, "deep parens": "(" * 5000,
    "binary junk": bytes(range(256)).decode("latin-1") * 4,
    "byte order mark": "\ufeffnetwork N { input x: 3 }",
    "odd whitespace": "\r\n\t\x0b\x0c",
    "deep groups": H + "(" * 5000 + "relu" + ")" * 5000 + "\n}",
    "deep lists": H + "conv(1, 3x3, weights=" + "[" * 5000 + "]" * 5000 + ")\n}",
    "many minus signs": H + "dense(" + "-" * 20000 + "1)\n}",
    "long sum": "block a(c) { dense(" + "c + " * 20000 + "1) }\n" + H + "    a(1)\n}",
    "long negation": "block a(c) { dense(" + "-" * 20000 + "c) }\n" + H + "    a(1)\n}",
    "huge count": H + "relu * " + "9" * 50000 + "\n}",
    "product count": H + "relu * 99999 * 99999\n}",
    "deep block calls": "".join(f"block k{i}x() {{ k{i + 1}x }}\n" for i in range(2000))
                        + "block k2000x() { relu }\n" + H + "    k0x\n}",
    "huge input": H + "input y: " + "9" * 10000 + "\n}",
    "long import": 'import "' + "x" * 5000 + '"\n' + H + "}",
    "import root": 'import "/"\n' + H + "}",
    "import nothing": 'import ""\n' + H + "}",
    "long data": H + "}\ntrain {\n    data = " + "a:" * 5000 + "\n}",
    "nested augment": H + "}\ntrain {\n    augment = " + "[" * 90 + "]" * 90 + "\n}",
}


@pytest.mark.parametrize("name", list(EXTREME))
def test_extreme_inputs(name):
    compiles_or_fails_cleanly(EXTREME[name])
