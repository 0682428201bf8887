"""Every front-end mistake is a located CnnSpecError: file:line:col, the source line, a caret
under the offending token and, where one helps, a hint (dsl.md §9)."""
import pytest

from cnnspec.errors import CnnSpecError
from cnnspec.lang import compile_source

HEAD = "network N {\n    input image: 1x28x28\n"      # the body starts on line 3


def error_of(text: str) -> CnnSpecError:
    with pytest.raises(CnnSpecError) as info:
        compile_source(text, "f.cnn")
    return info.value


# (source, line, col, caret width or None, message fragment, hint fragment or None)
CASES = {
    # -- syntax
    "missing arrow": (HEAD + "    conv(6, 5x5) relu\n}\n", 3, 18, 4, "missing `->` before `relu`",
                      "joined by `->`"),
    "missing arrow before call": (HEAD + "    relu maxpool(2)\n}\n", 3, 10, 7,
                                  "missing `->` before `maxpool`", "joined by `->`"),
    "unclosed paren at arrow": (HEAD + "    conv(6, 5x5 -> relu\n}\n", 3, 17, 2,
                                "missing `)` before `->`", "`(` at line 3, column 9 is not closed"),
    "unclosed paren at brace": (HEAD + "    conv(6, 5x5\n}\n", 3, 9, 1, "unclosed `(`", "`)`"),
    "unclosed paren at end": (HEAD + "    conv(6, 5x5", 3, 9, 1, "unclosed `(`", "`)`"),
    "unclosed bracket": (HEAD + "    conv(1, 3x3, weights=[[1, 2]\n}\n", 3, 26, 1, "unclosed `[`", "`]`"),
    "missing brace at end": (HEAD + "    relu\n", 1, 11, 1, "missing `}` before the end of the file",
                             "`{` at line 1, column 11 is never closed"),
    "missing brace before network": ("block b(c) {\n    conv(c, 3x3)\n\n" + HEAD + "    b(3)\n}\n",
                                     4, 1, 7, "missing `}` before `network`",
                                     "`{` at line 1, column 12 is never closed"),
    "two settings on a line": (HEAD + "    relu\n}\ntrain {\n    epochs = 1 batch = 8\n}\n", 6, 16, 5,
                               "missing end of line before `batch`", "on a line of its own"),
    "pytorch name": (HEAD + "    flatten -> Linear(10)\n}\n", 3, 16, 6, "unknown layer or block `Linear`",
                     "PyTorch's or Keras's `Linear` is called `dense` here"),
    "keras name": (HEAD + "    BatchNormalization\n}\n", 3, 5, 18, "unknown name `BatchNormalization`",
                   "`BatchNormalization` is called `batchnorm` here"),
    "5*5": (HEAD + "    conv(6, 5*5)\n}\n", 3, 13, 3, "`5*5` multiplies two numbers", "`5x5`"),
    "5 x 5": (HEAD + "    conv(6, 5 x 5)\n}\n", 3, 13, 1, "a size is written without spaces", "`5x5`"),
    "stray bracket": (HEAD + "    relu ]\n}\n", 3, 10, 1, "unmatched `]`", "`{` at line 1"),
    "stray brace": (HEAD + "}\n}\n", 4, 1, 1, "unmatched `}`", "nothing is open"),
    "stray character": (HEAD + "    relu $\n}\n", 3, 10, 1, "unexpected character `$`", None),
    # characters pasted from slides, PDFs and word processors, and habits of other languages
    "capital X in a size": (HEAD + "    conv(6, 5X5)\n}\n", 3, 13, 1, "a size is written with a lowercase `x`",
                            "`5x5`"),
    "capital X in the input": ("network N {\n    input image: 1X28X28\n}\n", 2, 18, 1,
                               "a size is written with a lowercase `x`", "`1x28x28`"),
    "times sign": ("network N {\n    input image: 1\u00d728\u00d728\n}\n", 2, 19, 1,
                   "unexpected character `\u00d7`", "the letter x"),
    "arrow sign": (HEAD + "    conv(6, 5x5) \u2192 relu\n}\n", 3, 18, 1, "unexpected character `\u2192`",
                   "`->`"),
    "minus sign": (HEAD + "    leaky_relu(\u22120.1)\n}\n", 3, 16, 1, "unexpected character `\u2212`", "`-`"),
    "curly quotes": ('import \u201cx.cnn\u201d\n' + HEAD + "}\n", 1, 8, 1, "unexpected character `\u201c`",
                     'plain double quotes `"`'),
    "no-break space": (HEAD + "\u00a0   relu\n}\n", 3, 1, 1, "unexpected character '\\xa0'", "no-break space"),
    "semicolon": (HEAD + "    relu;\n}\n", 3, 9, 1, "unexpected character `;`", "no `;` is needed"),
    "input without its keyword": ("network N {\n    image: 1x28x28\n    image -> relu\n}\n", 2, 10, 1,
                                  "unexpected `:`", "`input image: 1x28x28`"),
    "train setting with a colon": (HEAD + "}\ntrain {\n    epochs: 3\n}\n", 5, 11, 1, "unexpected `:`",
                                   "`epochs = ...`"),
    "C comment line": ("// LeNet\n" + HEAD + "}\n", 1, 1, 2, "unexpected `//`", "comments start with `#`"),
    "C comment after a step": (HEAD + "    conv(6, 5x5)  // six maps\n}\n", 3, 19, 2,
                               "`//` is integer division, not a comment", "comments start with `#`"),
    "division then a missing arrow": (HEAD + "    conv(8 // 2, 3x3) relu\n}\n", 3, 23, 4,
                                      "missing `->` before `relu`", "joined by `->`"),
    "C comment of one word": (HEAD + "    conv(6, 5x5)  // maps\n}\n", 3, 5, 21,
                              "a value is not a step of a chain", "comments start with `#`"),
    "stray token": (HEAD + "    relu = = relu\n}\n", 3, 12, 1, "unexpected `=`", "expected"),
    "binary junk": (HEAD + "    relu\x00\n}\n", 3, 9, 1, "unexpected character '\\x00'", None),
    "slash": (HEAD + "    conv(6/2, 3x3)\n}\n", 3, 11, 1, "unexpected `/`", "`//`"),
    "unterminated string": ('import "x.cnn\n' + HEAD + "}\n", 1, 8, 1, "unterminated string", '`"`'),
    "missing colon": ("network N {\n    input image 1x28x28\n}\n", 2, 17, 7, "unexpected `1x28x28`",
                      "`:`"),
    "line starting with arrow": (HEAD + "\n    -> relu\n}\n", 4, 5, 2, "unexpected `->`", None),
    "input used as a value": (HEAD + "    x = input -> relu\n}\n", 3, 9, 5, "unexpected `input`",
                              "refer to the input by its name"),
    "keyword as a name": (HEAD + "    train = relu\n}\n", 3, 5, 5, "unexpected `train`", "reserved word"),
    "missing brace before train": (HEAD + "    relu\ntrain {\n    epochs = 1\n}\n", 4, 1, 5,
                                   "missing `}` before `train`", "`{` at line 1, column 11"),
    "unclosed paren before block": (HEAD + "    conv(1, 3x3\nblock b() { relu }\n", 3, 9, 1,
                                    "unclosed `(`", "`)`"),
    "misspelt network": ("netwrok N {\n    input v: 10\n}\n", 1, 1, 7, "unknown item `netwrok`",
                         "did you mean `network`?"),
    "unknown item": (HEAD + "}\nlayers {\n}\n", 4, 1, 6, "unknown item `layers`", "`train { ... }`"),
    "else": ("block b(c) {\n    if c > 1 {\n        relu\n    } else {\n        tanh\n    }\n}\n" + HEAD
             + "    b(2)\n}\n", 4, 7, 4, "`if` has no `else`", "the complementary condition"),
    "a summary's layer name": (HEAD + "    conv(4, 3x3)\n    x = conv1 -> relu\n}\n", 4, 9, 5,
                               "unknown name `conv1`", "bind the tensor first, e.g. `a = conv(...)`"),
    "two networks of one name": (HEAD + "}\n" + HEAD + "}\n", 4, 9, 1, "network `N` is defined twice", "line 1"),
    "two trains": (HEAD + "}\ntrain { }\ntrain { }\n", 5, 1, 9, "at most one `train`", "line 4"),
    "nesting": (HEAD + "    conv(" + "(" * 150 + "1" + ")" * 150 + ")\n}\n", 3, 108, 1,
                "nested more than 100 deep", None),
    "number too large": (HEAD + "    dense(" + "9" * 5000 + ")\n}\n", 3, 11, 5000, "number too large", None),
    # -- names
    "unknown layer": (HEAD + "    conv(6, 5x5) -> mxpool(2)\n}\n", 3, 21, 6,
                      "unknown layer or block `mxpool`", "did you mean `maxpool`?"),
    "unknown bare layer": (HEAD + "    conv(6, 5x5) -> rleu\n}\n", 3, 21, 4,
                           "unknown layer or block `rleu`", "did you mean `relu`?"),
    "unknown first name": (HEAD + "    main = conv(1, 3x3)\n    mian -> relu\n}\n", 4, 5, 4,
                           "unknown name `mian`", "did you mean `main`?"),
    "unknown block": ("block basic(c) { relu }\n" + HEAD + "    basci(3)\n}\n", 4, 5, 5,
                      "unknown layer or block `basci`", "did you mean `basic`?"),
    "unknown merge operand": ("block b() {\n    mian = relu\n    add(in, main)\n}\n" + HEAD
                              + "    b\n}\n", 3, 13, 4, "unknown name `main`", "did you mean `mian`?"),
    "in outside a block": (HEAD + "    in -> relu\n}\n", 3, 5, 2, "unknown name `in`",
                           "here the input is `image`"),
    "rebinding": (HEAD + "    x = relu\n    x = relu\n}\n", 4, 5, 1, "`x` is already bound", "line 3"),
    "rebinding the input": (HEAD + "    image = relu\n}\n", 3, 5, 5, "`image` is already bound", None),
    "shadowing a layer": (HEAD + "    relu = conv(1, 3x3)\n}\n", 3, 5, 4, "`relu` is a layer", None),
    "shadowing a block": ("block b() { relu }\n" + HEAD + "    b = relu\n}\n", 4, 5, 1,
                          "`b` is a block", None),
    "shadowing a parameter": ("block b(c) { c = relu }\n" + HEAD + "    b(1)\n}\n", 1, 14, 1,
                              "`c` is a parameter of block `b`", None),
    "binding in": ("block b() { in = relu }\n" + HEAD + "    b\n}\n", 1, 13, 2, "`in` cannot be bound",
                   None),
    "generated name": (HEAD + "    conv2 = conv(1, 3x3)\n    conv(1, 3x3)\n}\n", 3, 5, 5,
                       "`conv2` looks like a generated layer name", "conv1, conv2"),
    "generated instance name": ("block b() { relu }\n" + HEAD + "    b3 = relu\n}\n", 4, 5, 2,
                                "`b3` looks like a generated layer name", None),
    "tensor used as a layer": (HEAD + "    x = relu\n    relu -> x\n}\n", 4, 13, 1,
                               "`x` is a tensor, not a layer", "begin a statement with `x -> ...`"),
    "merge inside a chain": (HEAD + "    relu -> add(image, image)\n}\n", 3, 13, 3,
                             "`add` merges named tensors, so it must start a chain", None),
    "merge of one": (HEAD + "    concat(image)\n}\n", 3, 5, 13, "merges at least two tensors", None),
    "merge of a value": (HEAD + "    add(image, 3)\n}\n", 3, 16, 1, "takes names of tensors", None),
    "merge without operands": (HEAD + "    relu -> add\n}\n", 3, 13, 3, "`add` needs the tensors", None),
    # -- network structure
    "no input": ("network N {\n    relu\n}\n", 1, 9, 1, "network `N` has no input", "input NAME: SHAPE"),
    "input not first": ("network N {\n    relu\n    input x: 3\n}\n", 3, 5, 10,
                        "`input` must be the first statement", None),
    "two inputs of one name": (HEAD + "    input image: 3\n}\n", 3, 11, 5, "`image` is already bound", "line 2"),
    "input in a block": ("block a() { input x: 3 }\n" + HEAD + "    a\n}\n", 1, 13, 10,
                         "`input` is only a statement of a network's body", "`in`"),
    "bad input shape": ("network N {\n    input x: 1x2x3x4\n}\n", 2, 5, 16, "bad input shape 1x2x3x4",
                        "CxHxW"),
    "zero input size": ("network N {\n    input x: 0x8\n}\n", 2, 5, 12, "bad input shape 0x8", None),
    # -- blocks and values
    "recursion": ("block a(c) { b(c) }\nblock b(c) { a(c) }\n" + HEAD + "    a(3)\n}\n", 2, 14, 4,
                  "block `a` calls itself (a -> b -> a)", None),
    "direct recursion": ("block a() {\n    relu -> (a) * 2\n}\n" + HEAD + "    relu\n}\n", 2, 14, 1,
                         "block `a` calls itself (a -> a)", None),
    "block named like a layer": ("block relu() { sigmoid }\n" + HEAD + "}\n", 1, 7, 4,
                                 "block `relu` has the name of a layer", None),
    "block named like a generated name": ("block conv2() { relu }\n" + HEAD + "}\n", 1, 7, 5,
                                          "`conv2` cannot name a block", None),
    "duplicate block": ("block b() { relu }\nblock b() { sigmoid }\n" + HEAD + "}\n", 2, 7, 1,
                        "block `b` is defined twice", None),
    "duplicate parameter": ("block b(c, c) { relu }\n" + HEAD + "}\n", 1, 12, 1,
                            "parameter `c` of block `b` appears twice", None),
    "unknown block keyword": ("block b(c, k=3) { relu }\n" + HEAD + "    b(1, kk=2)\n}\n", 4, 10, 4,
                              "block `b` has no parameter `kk`", "did you mean `k`?"),
    "too many block arguments": ("block b(c) { relu }\n" + HEAD + "    b(1, 2)\n}\n", 4, 10, 1,
                                 "block `b` takes 1 argument", "b(c)"),
    "missing block argument": ("block b(c, k=3) { relu }\n" + HEAD + "    b(k=1)\n}\n", 4, 5, 6,
                               "block `b` needs argument `c`", "b(c, k)"),
    "block argument twice": ("block b(c) { relu }\n" + HEAD + "    b(1, c=2)\n}\n", 4, 10, 3,
                             "parameter `c` is given twice", None),
    "positional after keyword": (HEAD + "    conv(stride=2, 6)\n}\n", 3, 20, 1,
                                 "a positional argument follows a keyword argument", None),
    "keyword twice": (HEAD + "    conv(6, 3x3, pad=1, pad=2)\n}\n", 3, 25, 5,
                      "argument `pad` is given twice", None),
    "division by zero": ("block a(c) { conv(c // 0, 3x3) }\n" + HEAD + "    a(3)\n}\n", 1, 19, 6,
                         "division by zero", None),
    "arithmetic on a word": (HEAD + "    conv(same + 1, 3x3)\n}\n", 3, 10, 4,
                             "arithmetic needs integers, got 'same'", None),
    "arithmetic on a float": ("block a(p) { dropout(p * 2) }\n" + HEAD + "    a(0.5)\n}\n", 1, 22, 1,
                              "arithmetic needs integers, got 0.5", None),
    "call as a value": (HEAD + "    conv(relu(1), 3x3)\n}\n", 3, 10, 7, "`relu(...)` is not a value", None),
    "huge numbers": ("block a(c) { dense(c * c * c * c * c) }\n" + HEAD + "    a(100000)\n}\n",
                     1, 20, 13, "number too large", None),
    "repeat zero times": (HEAD + "    relu * 0\n}\n", 3, 12, 1, "between 1 and 100000, got 0", None),
    "repeat too often": (HEAD + "    relu * 1000001\n}\n", 3, 12, 7, "got 1000001", None),
    "repeat a float": (HEAD + "    relu * 2.5\n}\n", 3, 12, 3, "must be an integer, got 2.5", None),
    "too many layers": ("block a() { relu * 1000 }\nblock b() { a * 1000 }\n" + HEAD + "    b * 1000\n}\n",
                        1, 13, 4, "more than 100000 layers", "repetition counts"),
    "too many empty instances": ("block e() {}\nblock a() { e * 1000 }\n" + HEAD + "    a * 1000\n}\n",
                                 2, 13, 1, "more than 100000 layers", None),
    "deep expression": ("block a(c) { dense(" + "c+" * 3000 + "1) }\n" + HEAD + "    a(1)\n}\n",
                        1, 14, None, "nested too deeply", None),
    # -- train section
    "unknown train key": (HEAD + "}\ntrain {\n    epoch = 3\n}\n", 5, 5, 5,
                          "unknown train setting `epoch`", "did you mean `epochs`?"),
    "train key twice": (HEAD + "}\ntrain {\n    seed = 1\n    seed = 2\n}\n", 6, 5, 4,
                        "`seed` is set twice", "line 5"),
    "unknown optimizer": (HEAD + "}\ntrain {\n    optimizer = sdg(lr=0.1)\n}\n", 5, 17, 11,
                          "unknown optimizer `sdg`", "did you mean `sgd`?"),
    "unknown optimizer argument": (HEAD + "}\ntrain {\n    optimizer = sgd(lr=0.1, momentun=0.9)\n}\n",
                                   5, 29, 12, "unknown argument of `sgd`: `momentun`",
                                   "did you mean `momentum`?"),
    "bad betas": (HEAD + "}\ntrain {\n    optimizer = adam(betas=0.9)\n}\n", 5, 28, 3,
                  "betas must be two numbers", None),
    "unknown loss": (HEAD + "}\ntrain {\n    loss = crossentropy\n}\n", 5, 12, 12,
                     "unknown loss `crossentropy`", "did you mean `cross_entropy`?"),
    "unknown augmentation": (HEAD + "}\ntrain {\n    augment = [flip, rotat(10)]\n}\n", 5, 22, 9,
                             "unknown augmentation `rotat`", "did you mean `rotate`?"),
    "augmentation arity": (HEAD + "}\ntrain {\n    augment = [scale(0.9)]\n}\n", 5, 16, 10,
                           "`scale` takes 2 arguments", "scale(lo, hi)"),
    "epochs not an integer": (HEAD + "}\ntrain {\n    epochs = 2.5\n}\n", 5, 14, 3,
                              "epochs must be an integer", None),
    "batch zero": (HEAD + "}\ntrain {\n    batch = 0\n}\n", 5, 13, 1, "batch must be at least 1", None),
    "val_split out of range": (HEAD + "}\ntrain {\n    val_split = 1.5\n}\n", 5, 17, 3,
                               "val_split must be at least 0 and below 1", None),
    "data as a number": (HEAD + "}\ntrain {\n    data = 3\n}\n", 5, 12, 1, "`data` is a data set name",
                         "mnist:data/mnist"),
    "unquoted path": (HEAD + "}\ntrain {\n    data = my.npz\n}\n", 5, 12, 6, "`my.npz` looks like a file name",
                      'data = "my.npz"'),
}


@pytest.mark.parametrize("case", list(CASES))
def test_located_error(case):
    text, line, col, width, message, hint = CASES[case]
    err = error_of(text)
    assert (err.file, err.line, err.col) == ("f.cnn", line, col), str(err)
    assert message in err.message, str(err)
    if hint is not None:
        assert err.hint and hint in err.hint, str(err)
    rendered = str(err).splitlines()
    assert rendered[0] == f"f.cnn:{line}:{col}: error: {err.message}"
    source_line = text.splitlines()[line - 1].replace("\x00", "\u2400")      # control characters drawn
    assert rendered[1] == "    " + source_line.expandtabs(1)
    if width is not None:
        assert err.width == width, str(err)
        assert rendered[2] == "    " + " " * (col - 1) + "^" + "~" * (width - 1)


def test_control_characters_of_the_quoted_line_are_drawn_not_sent_to_the_terminal():
    """An escape sequence in a student's file (clear the screen, colour the rest) is quoted as
    visible symbols; the caret still stands under the character the message names."""
    err = error_of(HEAD + "    relu \x1b[2J\x1b[31mgrade: 10/10\x07\n}\n")
    rendered = str(err).splitlines()
    assert rendered[0] == "f.cnn:3:10: error: unexpected character '\\x1b'"
    assert rendered[1] == "        relu \u241b[2J\u241b[31mgrade: 10/10\u2407"
    assert rendered[2] == "    " + " " * 9 + "^"
    assert not any(ord(c) < 0x20 for c in str(err).replace("\n", ""))
    err = error_of(HEAD + "    conv(1, 3x3) -> reul  # \x9b31m\r\n}\n")      # a C1 control, CRLF
    assert str(err).splitlines()[1] == "        conv(1, 3x3) -> reul  # \ufffd31m"


def test_no_network():
    err = error_of("\nblock b() { relu }\n")
    assert (err.file, err.line, err.col) == ("f.cnn", 2, 7) and "no `network`" in err.message
    assert "import" in err.hint and str(err).splitlines()[1:3] == ["    block b() { relu }", "          ^"]
    for text in ("", "# only a comment\n\n"):
        err = error_of(text)
        assert (err.line, err.col) == (1, 1) and "no `network`" in err.message and "^" in str(err)


def test_errors_in_a_block_body_point_into_the_block():
    err = error_of("block b(c) {\n    conv(c, 3x3) -> rellu\n}\n" + HEAD + "    b(2)\n}\n")
    assert (err.line, err.col) == (2, 21) and "did you mean `relu`?" in err.hint


def test_text_without_a_file_name():
    with pytest.raises(CnnSpecError) as info:
        compile_source(HEAD + "    rleu\n}\n")
    assert info.value.file is None and str(info.value).startswith("<string>:3:5: error:")


@pytest.mark.parametrize("step, shape", [("flatten -> dense(16*8)", (128,)),
                                         ("conv(4*4, 3x3)", (16, 26, 26)),
                                         ("conv(2*3, 5x5, stride=2)", (6, 12, 12))])
def test_a_product_of_numbers_is_a_number_where_no_size_is_due(step, shape):
    # dsl.md §5: arithmetic is allowed on numbers; only a size (kernel, stride, ...) written `5*5`
    # is the slip for `5x5` (the case "5*5" above)
    import cnnspec

    assert cnnspec.loads(HEAD + f"    {step}\n}}\n").output_shape == shape


def test_classic_mac_line_ends_are_lines():
    """A file whose lines end in a lone carriage return (classic Mac OS, some exports) reads as the
    same network as with new lines, and an error names the line and column an editor shows."""
    import cnnspec

    body = ["network N {", "    input image: 1x28x28   # a comment", "    conv(6, 5x5) -> relu -> flatten -> dense(10)",
            "}", ""]
    params = [cnnspec.loads(end.join(body)).summary()["totals"]["params"] for end in ("\r", "\n")]
    assert params == [6 * 26 + 6 * 24 * 24 * 10 + 10] * 2
    err = error_of("\r".join(body).replace("-> relu", "-> rleu"))
    assert (err.line, err.col, err.source_line.strip()) == (3, 21, "conv(6, 5x5) -> rleu -> flatten -> dense(10)")
