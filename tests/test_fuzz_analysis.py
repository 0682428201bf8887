"""Fuzzing the whole analysis (issue 17): mutated specs go through the parser, the builder, the
layer catalogue, the summary and the drawing's DOT text, and end in success or in a located
CnnSpecError (file:line:col and a caret), never in another exception.

Mutations of the shipped specs (specs/*.cnn) and of dsl.md's examples: numbers replaced by
extreme ones (0, -1, 10^18, 2^63, 10^400, 1e308, 1e999, ...), words replaced by other layer names,
arguments and keywords, arguments inserted, tokens dropped, repeated or swapped. Seeded
(``derandomize=True``) and bounded: every example is a few milliseconds of analysis.
"""
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnspec
from cnnspec.errors import CnnSpecError
from conftest import SPECS
from test_lang import DSL

SOURCES = [(str(path), path.read_text()) for path in sorted(SPECS.glob("*.cnn"))]
SOURCES += [(str(SPECS / "dsl_example.cnn"), text)
            for text in re.findall(r"^```[^\n]*\n(.*?)^```", DSL.read_text(), re.S | re.M) if "network " in text]
TOKEN = re.compile(r"#[^\n]*|\s+|\d+x\d+(?:x\d+)*|\d+\.\d*(?:e-?\d+)?|\d+|\w+|->|//|.", re.S)
NUMBERS = ["0", "-1", "1", "2", "3", "7", "0.5", "-0.0", "1e-300", "1e308", "1e999", "2147483648",
           "9223372036854775808", "1000000000000000000", "1000000000000000001", "0x0", "1x0", "100000x100000",
           "1000000000000000000x1000000000000000000", "3x3x3", "1" + "0" * 400, "9" * 5000]
WORDS = ["conv", "maxpool", "avgpool", "sumpool", "globalavgpool", "globalmaxpool", "dense", "flatten",
         "dropout", "batchnorm", "relu", "softmax", "identity", "leaky_relu", "add", "concat", "sigmoid",
         "tanh", "same", "valid", "full", "true", "false", "pad", "stride", "dilation", "groups", "bias",
         "weights", "trainable", "ceil", "kernel", "filters", "units", "p", "sobel_x", "in", "input",
         "network", "block", "train", "x", "image", "basic", "stem", "epochs", "batch", "lr"]
INSERTS = [", dilation={}", ", groups={}", ", pad={}", ", stride={}", ", weights=[[{}]]", ", ceil=true",
           ", pad=({}, 0, 0, {})", ", trainable=false", ", bias=false"]
RUNS = {"examples": 0}
FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def analyse(file: str, text: str) -> None:
    """Success, or a located CnnSpecError; anything else fails the test."""
    RUNS["examples"] += 1
    try:
        net = cnnspec.loads(text, file=file)
        net.summary(batch=3)
        net.summary_table()
        net.to_dot()
    except CnnSpecError as err:
        rendered = str(err)
        assert err.file is not None and err.line is not None and err.col is not None, rendered
        assert rendered.startswith(f"{err.file}:{err.line}:{err.col}: error: "), rendered
        if err.source_line is not None:
            assert "^" in rendered.splitlines()[2], rendered


source = st.sampled_from(SOURCES)


def positions(tokens, kind):
    return [i for i, tok in enumerate(tokens) if kind(tok)]


@FUZZ
@given(source, st.data())
def test_extreme_numbers(src, data):
    file, text = src
    tokens = TOKEN.findall(text)
    numbers = positions(tokens, lambda t: t[:1].isdigit())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.sampled_from(numbers))
        tokens[i] = data.draw(st.sampled_from(NUMBERS))
    analyse(file, "".join(tokens))


ARGUMENT = re.compile(r"(?<=[(,=])\s*[^(),=\n]+(?=[,)])")


@FUZZ
@given(source, st.data())
def test_extreme_argument_values(src, data):
    """One argument of a layer, block or train setting replaced by an extreme number."""
    file, text = src
    spans = [m.span() for m in ARGUMENT.finditer(text)]
    start, end = data.draw(st.sampled_from(spans))
    analyse(file, text[:start] + data.draw(st.sampled_from(NUMBERS)) + text[end:])


@FUZZ
@given(source, st.data())
def test_words_swapped(src, data):
    file, text = src
    tokens = TOKEN.findall(text)
    words = positions(tokens, lambda t: t[:1].isalpha() or t[:1] == "_")
    for _ in range(data.draw(st.integers(1, 3))):
        tokens[data.draw(st.sampled_from(words))] = data.draw(st.sampled_from(WORDS))
    analyse(file, "".join(tokens))


@FUZZ
@given(source, st.data())
def test_arguments_inserted(src, data):
    file, text = src
    closing = [m.start() for m in re.finditer(r"\)", text)]
    at = data.draw(st.sampled_from(closing))
    insert = data.draw(st.sampled_from(INSERTS)).format(*[data.draw(st.sampled_from(NUMBERS))] * 2)
    analyse(file, text[:at] + insert + text[at:])


@FUZZ
@given(source, st.data())
def test_tokens_dropped_repeated_swapped(src, data):
    file, text = src
    tokens = TOKEN.findall(text)
    start = data.draw(st.integers(0, len(tokens) - 1))
    end = data.draw(st.integers(start + 1, min(len(tokens), start + 8)))
    kind = data.draw(st.sampled_from(["drop", "repeat", "swap"]))
    piece = tokens[start:end]
    if kind == "drop":
        piece = []
    elif kind == "repeat":
        piece = piece * data.draw(st.integers(2, 3))
    else:
        other = data.draw(st.integers(0, len(tokens) - 1))
        tokens[other], piece = piece[0], [tokens[other]] + piece[1:]
    analyse(file, "".join(tokens[:start] + piece + tokens[end:]))


def test_the_fuzzing_ran():
    """Runs after the five above (file order): they tried this many inputs between them."""
    print(f"\nfuzzed the analysis with {RUNS['examples']} mutated specs")
    assert RUNS["examples"] >= 5 * 300
