"""`.cnn` text -> syntax tree (``cnnspec.lang.ast``), with located syntax errors.

The grammar is ``grammar/cnn.lark`` in a source checkout and ``cnnspec/grammar/cnn.lark`` in an
installed wheel. It is parsed by a cached LALR parser; a ``Transformer`` maps each rule to a
dataclass. Every syntax error becomes a :class:`CnnSpecError` with a message for the common
mistakes (missing ``->``, unclosed ``(``, missing ``}``, ``5 x 5``, a stray token).

Well-formed text is read first by :mod:`cnnspec.lang.fastparse`, which builds the same tree
several times sooner; whatever it does not accept plainly is read here, so the messages are Lark's.
"""
from __future__ import annotations

import functools
import math
import re
import threading
from pathlib import Path

from lark import Lark, Token, Transformer_NonRecursive
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from cnnspec.errors import CnnSpecError, Pos, error_at, nearest
from cnnspec.lang import ast, fastparse
from cnnspec.layers.values import Size

MAX_NESTING = 100                # brackets deeper than this are refused (keeps every pass shallow)
MAX_INT = 10 ** 18               # integer literals (and arithmetic on them) beyond this are refused
KEYWORDS = ("network", "block", "import", "train", "input", "true", "false", "if", "and", "or", "not")
CLOSING = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}


def grammar_path() -> Path:
    """Where ``cnn.lark`` is: inside the installed package, else in the checkout's grammar/."""
    package = Path(__file__).resolve().parent.parent
    for path in (package / "grammar" / "cnn.lark", package.parent / "grammar" / "cnn.lark"):
        if path.is_file():
            return path
    raise FileNotFoundError("cnn.lark not found next to the cnnspec package")


class NestingTooDeep(Exception):
    """Raised by the post-lexer at the bracket that opens level MAX_NESTING + 1."""

    def __init__(self, token):
        super().__init__(token)
        self.token = token


class PostLex:
    """Drops the newlines inside ( ) and [ ], reserves the keywords, places `->` tokens on the
    arrow itself (the terminal also holds the line breaks around it) and keeps the stack of open
    brackets and the last tokens seen, which syntax errors use to explain themselves."""

    always_accept = ("_NL", "_ARROW")          # `->` is never read as `-` and `>`

    def __init__(self):
        self.open: list[Token] = []
        self.recent: list[Token] = []

    def process(self, stream):
        self.open, self.recent = [], []
        for tok in stream:
            if tok.type == "_NL" and self.open and self.open[-1].type != "LBRACE":
                continue
            if tok.type == "NAME" and tok.value in KEYWORDS:
                tok = Token.new_borrow_pos(tok.value.upper(), tok.value, tok)
            elif tok.type == "_ARROW":
                tok = arrow_token(tok)
            elif tok.type in ("LPAR", "LSQB", "LBRACE"):
                self.open.append(tok)
                if len(self.open) > MAX_NESTING:
                    raise NestingTooDeep(tok)
            elif tok.type in CLOSING and self.open and self.open[-1].type == CLOSING[tok.type]:
                self.open.pop()
            self.recent = [*self.recent[-1:], tok]
            yield tok


def arrow_token(tok: Token) -> Token:
    """The ``->`` inside an ``_ARROW`` token that also matched the blank lines around it."""
    before = tok.value[:tok.value.index("->")]
    newlines = before.count("\n")
    line = tok.line + newlines
    column = len(before) - before.rindex("\n") if newlines else tok.column + len(before)
    start = tok.start_pos + len(before)
    return Token("_ARROW", "->", start, line, column, line, column + 2, start + 2)


PARSING = threading.Lock()       # the post-lexer keeps per-parse state in the shared parser


@functools.cache
def lark_parser() -> Lark:
    """The LALR parser, built once per process (lark caches the tables on disk across runs)."""
    return Lark.open(str(grammar_path()), parser="lalr", propagate_positions=True,
                     postlex=PostLex(), cache=True)


def source_text(text: str) -> str:
    """The text of a `.cnn` file as it is read: without the byte-order mark some editors write,
    and a lone carriage return (classic Mac OS line ends) read as a new line, as editors show
    it, so that lines and columns are the editor's (a carriage return before a new line stays:
    the grammar reads it as part of the line end; offsets are unchanged)."""
    return _LONE_CR.sub("\n", text.removeprefix("\ufeff"))


_LONE_CR = re.compile(r"\r(?!\n)")


def parse(text: str, file: str | None = None) -> ast.Module:
    """Parse the text of one `.cnn` file (named ``file`` in messages) into an ``ast.Module``."""
    text = source_text(text)
    try:                                          # well-formed text: the fast reader
        return assemble(fastparse.parse_items(text, file, MAX_INT, MAX_NESTING), file, text)
    except (fastparse.GiveUp, RecursionError):
        pass                                      # Lark reads it again and explains what is wrong
    parser = lark_parser()
    with PARSING:
        try:
            tree = parser.parse(text)
        except UnexpectedInput as err:
            raise syntax_error(err, text, file, parser.options.postlex) from None
        except NestingTooDeep as err:
            raise error_at(token_pos(err.token, file), f"brackets nested more than {MAX_NESTING} deep",
                           sources={file: text}) from None
    try:
        items = ToAst(file, text).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, CnnSpecError):
            raise err.orig_exc from None
        raise
    return assemble(items, file, text)


def assemble(items: list, file: str | None, text: str) -> ast.Module:
    """The module of the top-level items; two networks of one name, or a second train section,
    is an error."""
    module = ast.Module(file, text)
    for item in items:
        if isinstance(item, ast.Block):
            module.blocks.append(item)
        elif isinstance(item, ast.Import):
            module.imports.append(item)
        elif isinstance(item, ast.Network):
            first = next((n for n in module.networks if n.name == item.name), None)
            if first is not None:
                raise error_at(item.pos, f"network `{item.name}` is defined twice", sources={file: text},
                               hint=f"the first one is at line {first.pos.line}; networks of one file "
                                    "need different names")
            module.networks.append(item)
        else:
            if module.train is not None:
                raise error_at(item.pos, "a file holds at most one `train`", sources={file: text},
                               hint=f"the first one is at line {module.train.pos.line}")
            module.train = item
    return module


def token_pos(tok: Token, file: str | None) -> Pos:
    width = len(tok.value) if tok.end_line == tok.line and tok.value else 1
    return Pos(file, tok.line, tok.column, width)


class ToAst(Transformer_NonRecursive):
    """The parse tree -> ``ast`` dataclasses (non-recursive, so long expressions are safe).

    Every rule method takes ``(meta, children)``. They are called directly rather than through
    lark's ``v_args(meta=True)``, whose wrapper is rebuilt on every call: that was a third of the
    time of reading a long file (100,000 written-out layers)."""

    __visit_tokens__ = False

    def __init__(self, file: str | None, text: str):
        super().__init__()
        self.file = file
        self.text = text
        self.lines = text.split("\n")                # lines as lark counts them

    def _call_userfunc(self, tree, new_children=None):
        return getattr(self, tree.data)(tree.meta, tree.children if new_children is None else new_children)

    def pos(self, meta) -> Pos:
        """Where a rule matched; on several lines, the rest of its first line is underlined."""
        if meta.empty:
            return Pos(self.file, 1, 1)
        if meta.end_line == meta.line:
            width = meta.end_column - meta.column
        else:
            line = self.lines[meta.line - 1] if meta.line <= len(self.lines) else ""
            width = len(line.rstrip()) - meta.column + 1
        return Pos(self.file, meta.line, meta.column, width)

    def tpos(self, tok: Token) -> Pos:
        return token_pos(tok, self.file)

    def integer(self, tok: Token) -> int:
        """An integer literal, at most MAX_INT (larger ones overflow floats and every size)."""
        digits = tok.lstrip("0") or "0"
        if len(digits) > len(str(MAX_INT)) or int(digits) > MAX_INT:
            raise error_at(self.tpos(tok), f"number too large (more than 10^{len(str(MAX_INT)) - 1})",
                           sources={self.file: self.text})
        return int(digits)

    def real(self, tok: Token) -> float:
        """A float literal; one that rounds to infinity (``1e999``) is refused."""
        value = float(tok)
        if not math.isfinite(value):
            raise error_at(self.tpos(tok), "number too large for a float (at most about 1.8e308)",
                           sources={self.file: self.text})
        return value

    # -- top level
    def start(self, meta, items):
        return items

    def network(self, meta, children):
        name, body = children
        return ast.Network(str(name), body, self.tpos(name))

    def block(self, meta, children):
        name, params, body = children
        return ast.Block(str(name), params or [], body, self.tpos(name))

    def params(self, meta, children):
        return [p for p in children if p is not None]

    def param(self, meta, children):
        name, default = children
        return ast.Param(str(name), default, self.tpos(name))

    def import_(self, meta, children):
        (path,) = children
        return ast.Import(path[1:-1], self.tpos(path))

    def train(self, meta, settings):
        return ast.Train([s for s in settings if s is not None], self.pos(meta))

    def setting(self, meta, children):
        key, value = children
        return ast.Setting(str(key), value, self.pos(meta), self.tpos(key))

    def source(self, meta, children):
        (tok,) = children
        return ast.Literal(str(tok), self.tpos(tok))

    # -- statements
    def body(self, meta, statements):
        return [s for s in statements if s is not None]

    def input(self, meta, children):
        name, shape = children
        if shape.type == "SIZE":
            dims = tuple(self.integer(Token.new_borrow_pos("INT", d, shape)) for d in shape.split("x"))
        else:
            dims = (self.integer(shape),)
        return ast.Input(str(name), dims, self.pos(meta), self.tpos(name))

    def statement(self, meta, children):
        target, chain = children
        return ast.Statement(target and str(target), chain, self.pos(meta),
                             target and self.tpos(target))

    def chain(self, meta, steps):
        return ast.Chain(steps, self.pos(meta))

    def if_(self, meta, children):
        condition, body = children
        return ast.If(condition, body, Pos(self.file, meta.line, meta.column, 2))

    def group(self, meta, children):
        (chain,) = children
        if len(chain.steps) == 1:                # `(x)` is x: a parenthesised value or step
            return chain.steps[0]
        return ast.Group(chain, self.pos(meta))

    def call(self, meta, children):
        name, args = children
        return ast.Call(str(name), args or [], self.pos(meta), self.tpos(name))

    def args(self, meta, items):
        return [a if isinstance(a, ast.Arg) else ast.Arg(None, a, a.pos)
                for a in items if a is not None]

    def kwarg(self, meta, children):
        key, value = children
        return ast.Arg(str(key), value, self.pos(meta))

    # -- values
    def name(self, meta, children):
        (tok,) = children
        return ast.Name(str(tok), self.tpos(tok))

    def int(self, meta, children):
        return ast.Literal(self.integer(children[0]), self.tpos(children[0]))

    def float(self, meta, children):
        return ast.Literal(self.real(children[0]), self.tpos(children[0]))

    def size(self, meta, children):
        (tok,) = children
        dims = Size(self.integer(Token.new_borrow_pos("INT", d, tok)) for d in tok.split("x"))
        return ast.Literal(dims, self.tpos(tok))

    def string(self, meta, children):
        return ast.Literal(children[0][1:-1], self.tpos(children[0]))

    def true(self, meta, children):
        return ast.Literal(True, self.pos(meta))

    def false(self, meta, children):
        return ast.Literal(False, self.pos(meta))

    def neg(self, meta, children):
        (operand,) = children
        value = getattr(operand, "value", None)
        if isinstance(operand, ast.Literal) and type(value) in (int, float):
            return ast.Literal(-value, self.pos(meta))        # a negative number
        return ast.Neg(operand, self.pos(meta))

    def plus(self, meta, children):
        return ast.BinOp("+", *children, self.pos(meta))

    def minus(self, meta, children):
        return ast.BinOp("-", *children, self.pos(meta))

    def times(self, meta, children):
        return ast.BinOp("*", *children, self.pos(meta))

    def floordiv(self, meta, children):
        return ast.BinOp("//", *children, self.pos(meta))

    def compare(self, meta, children):
        left, op, right = children
        return ast.Compare(str(op), left, right, self.pos(meta))

    def and_(self, meta, children):
        return ast.BoolOp("and", *children, self.pos(meta))

    def or_(self, meta, children):
        return ast.BoolOp("or", *children, self.pos(meta))

    def not_(self, meta, children):
        (operand,) = children
        return ast.Not(operand, self.pos(meta))

    def attribute(self, meta, children):
        name, attr = children
        return ast.Attribute(str(name), str(attr), self.pos(meta), self.tpos(name), self.tpos(attr))

    def tuple(self, meta, items):
        return ast.TupleOf([i for i in items if i is not None], self.pos(meta))

    def list(self, meta, items):
        return ast.ListOf([i for i in items if i is not None], self.pos(meta))


# ---- syntax errors ------------------------------------------------------------------------------

TERMINAL_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "SIZE": "a size such as 5x5",
    "STRING": "a quoted string", "SOURCE": "a data source such as mnist:DIR", "_NL": "a new line",
    "_ARROW": "`->`", "$END": "the end of the file", "COMPARE": "a comparison (== != < <= > >=)",
}


def describe_expected(name: str, parser: Lark) -> str:
    if name in TERMINAL_NAMES:
        return TERMINAL_NAMES[name]
    term = parser.get_terminal(name)
    return f"`{term.pattern.value}`" if term.pattern.type == "str" else name


def describe_found(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    return f"`{tok.value}`"


# What follows a top-level keyword that starts a new item (so a `}` must be missing before it).
ITEM_STARTS = {"NETWORK": r"\s*\w+\s*\{", "BLOCK": r"\s*\w+\s*[({]", "TRAIN": r"\s*\{",
               "IMPORT": r'\s*"'}


def syntax_error(err: UnexpectedInput, text: str, file: str | None, postlex: PostLex) -> CnnSpecError:
    """A located, named error for what the parser could not accept."""
    def fail(pos, message, hint=None):
        return error_at(pos, message, sources={file: text}, hint=hint)

    def where(tok):
        return f"line {tok.line}, column {tok.column}"

    if not isinstance(err, UnexpectedToken):          # the lexer found no token at all
        char = text[err.pos_in_stream] if isinstance(err, UnexpectedCharacters) else ""
        pos = Pos(file, err.line, err.column)
        if char == '"':
            return fail(pos, "unterminated string", 'a string ends with `"` on the same line')
        if char == "/":
            return fail(pos, "unexpected `/`", "integer division is written `//`")
        shown = f"`{char}`" if char.isprintable() and char else repr(char)
        return fail(pos, f"unexpected character {shown}", LOOKALIKES.get(char))

    tok = arrow_token(err.token) if err.token.type == "_ARROW" else err.token
    if tok.type == "$END":                           # just after the last character written
        lines = text.rstrip().split("\n")
        pos = Pos(file, len(lines), len(lines[-1]) + 1)
    else:
        pos = token_pos(tok, file) if tok.type != "_NL" else Pos(file, tok.line, tok.column)
    # The error token went through the post-lexer unless the lexer itself refused it.
    seen = postlex.recent[:-1] if postlex.recent and postlex.recent[-1] is tok else postlex.recent
    previous = seen[-1] if seen else None
    innermost = postlex.open[-1] if postlex.open else None
    in_brackets = innermost is not None and innermost.type != "LBRACE"
    close = {"LPAR": ")", "LSQB": "]", "LBRACE": "}"}.get(innermost and innermost.type)
    new_item = tok.type in ITEM_STARTS and \
        re.match(ITEM_STARTS[tok.type], text[tok.end_pos:tok.end_pos + 200]) is not None

    if in_brackets and (tok.type in ("RBRACE", "$END") or new_item):
        return fail(token_pos(innermost, file), f"unclosed `{innermost.value}`", f"close it with `{close}`")
    if innermost is not None and not in_brackets and (tok.type == "$END" or new_item):
        never_closed = f"the `{{` at {where(innermost)} is never closed"
        if tok.type == "$END":
            return fail(token_pos(innermost, file), "missing `}` before the end of the file",
                        never_closed)
        return fail(pos, f"missing `}}` before `{tok.value}`", never_closed)
    if tok.type in CLOSING and (innermost is None or innermost.type != CLOSING[tok.type]):
        return fail(pos, f"unmatched `{tok.value}`",
                    f"the innermost open bracket is the `{innermost.value}` at {where(innermost)}"
                    if innermost is not None else "nothing is open here")
    if tok.type == "_ARROW" and in_brackets:
        return fail(pos, f"missing `{close}` before `->`",
                    f"the `{innermost.value}` at {where(innermost)} is not closed")
    if tok.type == "NAME" and previous is not None and previous.type == "INT" and \
            tok.value.startswith("X") and tok.start_pos == previous.end_pos:
        size = previous.value + tok.value.replace("X", "x")
        return fail(token_pos(previous, file), "a size is written with a lowercase `x`",
                    f"write `{size}`" if re.fullmatch(r"[0-9]+(x[0-9]+)+", size) else
                    "e.g. `5x5` or `1x28x28`")
    if tok.type == "NAME" and previous is not None and previous.type == "INT" and \
            tok.value[:1] in ("x", "X") and tok.line == previous.line:
        return fail(token_pos(previous, file), "a size is written without spaces",
                    "write it as one word, e.g. `5x5` or `3x1`")
    if tok.value == "//" and (previous is None or previous.type in ("_NL", "LBRACE", "RBRACE")):
        return fail(pos, "unexpected `//`", "comments start with `#`; `//` is integer division")
    # `relu  // two words`: a C comment (a `//` outside brackets, with words after it)?
    slashes = [t for t in seen if t.value == "//" and t.line == tok.line and
               all(text[t.start_pos - t.column + 1:t.start_pos].count(a) ==
                   text[t.start_pos - t.column + 1:t.start_pos].count(b) for a, b in ("()", "[]"))]
    if slashes and tok.type not in ("_NL", "$END"):
        return fail(token_pos(slashes[-1], file), "`//` is integer division, not a comment",
                    "comments start with `#`")
    in_train = innermost is not None and innermost.type == "LBRACE" and \
        re.search(r"\btrain\s*$", text[:innermost.start_pos]) is not None
    if tok.value == ":" and previous is not None and previous.type == "NAME" and not in_brackets and \
            (len(seen) < 2 or seen[-2].type in ("_NL", "LBRACE")):      # `image: 1x28x28` at a line's start
        return fail(pos, "unexpected `:`", f"a setting of the train section is `{previous.value} = ...`"
                    if in_train else f"an input is declared with `input`: `input {previous.value}: 1x28x28`")
    if in_train and tok.type == "NAME" and "_NL" in err.expected:
        return fail(pos, f"missing end of line before {describe_found(tok)}",
                    "each setting of the train section is `key = value` on a line of its own")
    if innermost is None and tok.type == "NAME":      # where an item starts: a misspelt keyword?
        guess = nearest(tok.value, ["network", "block", "train", "import"])
        return fail(pos, f"unknown item `{tok.value}`",
                    f"did you mean `{guess}`?" if guess else
                    "a file holds `network NAME { ... }`, `block NAME(...) { ... }`, `train { ... }` "
                    "and `import \"FILE\"` items")
    if tok.type == "NAME" and tok.value == "else" and previous is not None and previous.type == "RBRACE":
        return fail(pos, "`if` has no `else`",
                    "write a second `if` with the complementary condition, e.g. `if not (...) { ... }` "
                    "(a name may be bound in both bodies: only one runs)")
    if tok.type in ("NAME", "LPAR") and "_ARROW" in err.expected:
        return fail(pos, f"missing `->` before {describe_found(tok)}",
                    "steps of a chain are joined by `->`; a new statement starts on a new line")
    if previous is not None and previous.value in KEYWORDS and previous.type == previous.value.upper() \
            and tok.value == "=":
        return fail(token_pos(previous, file), f"`{previous.value}` is a reserved word",
                    "choose another name")
    if tok.value in KEYWORDS:
        hint = ("`input NAME: SHAPE` is the first statement of a network; refer to the input by its name"
                if tok.value == "input" else f"`{tok.value}` is a reserved word")
        return fail(pos, f"unexpected `{tok.value}`", hint)
    return fail(pos, f"unexpected {describe_found(tok)}",
                expected_hint(err.expected, innermost if in_brackets else None))


# Characters that word processors, PDFs and slides put in place of the ones the language uses.
LOOKALIKES = {
    "\u00d7": "sizes are written with the letter x: `5x5`, `1x28x28`",
    "\u2192": "steps are joined by `->` (a minus and a greater-than sign)",
    "\u2212": "write the minus sign as `-`",
    "\u2013": "write the minus sign as `-`",
    "\u2014": "write the minus sign as `-`",
    "\u201c": 'quote with plain double quotes `"`',
    "\u201d": 'quote with plain double quotes `"`',
    "\u2018": 'quote with plain double quotes `"`',
    "\u2019": 'quote with plain double quotes `"`',
    "\u00a0": "a no-break space: replace it with an ordinary space",
    "\u200b": "a zero-width space, invisible in most editors: delete it",
    "\uff08": "a full-width parenthesis: write `(`",
    "\uff09": "a full-width parenthesis: write `)`",
    "\uff0c": "a full-width comma: write `,`",
    ";": "statements end at the end of the line; no `;` is needed",
}


VALUE_STARTS = {"INT", "FLOAT", "SIZE", "NAME", "LPAR", "LSQB", "MINUS"}


def expected_hint(expected, open_bracket) -> str | None:
    """``expected a, b or c`` (when few things would do), and the bracket still open, if any."""
    expected = set(expected)
    value = VALUE_STARTS <= expected
    if value:                                   # where any expression may start
        expected -= VALUE_STARTS | {"STRING", "TRUE", "FALSE", "NOT"}
    wanted = sorted({describe_expected(name, lark_parser()) for name in expected},
                    key=lambda w: (w.startswith("`"), w))
    if value:
        wanted.insert(0, "a layer, a name or a value")
    hint = None
    if len(wanted) == 1:
        hint = f"expected {wanted[0]}"
    elif 1 < len(wanted) <= 8:
        hint = f"expected {', '.join(wanted[:-1])} or {wanted[-1]}"
    if open_bracket is not None:
        still_open = (f"the `{open_bracket.value}` at line {open_bracket.line}, "
                      f"column {open_bracket.column} is still open")
        hint = f"{hint}; {still_open}" if hint else still_open
    return hint
