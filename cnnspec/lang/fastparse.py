"""A fast reader of well-formed `.cnn` text: the same syntax tree as the Lark parser, 5-10x sooner.

Lark's LALR parser builds a parse tree with positions (about 25 µs a token, most of it in the
generic tree building and position propagation), which a transformer then maps to ``ast``
dataclasses. For a long file (100,000 written-out layers) that was most of ``cnnspec check``.
This module reads the same grammar directly into ``ast`` objects: one regular expression scans
the tokens (built from the grammar's own terminals, in Lark's order of preference), and a
recursive-descent parser with one function per precedence level builds the tree, computing each
node's ``Pos`` the way Lark's ``propagate_positions`` does (from the first to the last token the
rule matched).

It accepts a subset of the language Lark accepts and never reports an error itself: whenever the
text is anything but plainly well formed (a syntax error, a number out of range, an unknown
character, brackets nested deeply, a construct it does not know) it gives up, and
:func:`cnnspec.lang.parser.parse` reads the text again with Lark, whose located messages are the
ones users see. ``tests/test_lang_fastparse.py`` holds the two readers together: every spec of
the repository and thousands of mutated ones give either the same tree or a fall back to Lark.
"""
from __future__ import annotations

import functools
import math
import re

from cnnspec.errors import Pos
from cnnspec.lang import ast
from cnnspec.layers.values import Size

KEYWORDS = {k: k.upper() for k in ("network", "block", "import", "train", "input", "true", "false",
                                   "if", "and", "or", "not")}
PUNCTUATION = {"LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]", "LBRACE": "{", "RBRACE": "}",
               "COMMA": ",", "COLON": ":", "DOT": ".", "EQUAL": "=", "MINUS": "-", "PLUS": "+",
               "STAR": "*", "__ANON_0": "//"}
OPENING = frozenset("([{")
OPENING_OF = {")": "(", "]": "[", "}": "{"}
PLAIN = frozenset({"SIZE", "FLOAT", "STRING", "INT", "COMPARE", ",", ":", ".", "=", "-", "+", "*", "//"})
BRACKETS = re.compile(r"[][(){}]")
PREFIXES = frozenset({"-", "NOT"})
OPERATORS = frozenset({"OR", "AND", "COMPARE", "+", "-", "*", "//"})
SOURCE = re.compile(r'[A-Za-z_][A-Za-z_0-9]*:[^\s#"]+')   # the grammar's SOURCE, read in context


class GiveUp(Exception):
    """The text is not plainly well formed: let Lark read it (and explain what is wrong)."""


@functools.cache
def scanner() -> tuple[re.Pattern, dict]:
    """One alternation of the grammar's terminals, in the order Lark's lexer tries them, and
    {group name: token kind} (None for the blanks it skips).

    SOURCE is left out (the contextual lexer reads it only as a train setting's value, and so does
    the parser below); keywords are read as NAMEs, which the post-lexer turns into keywords."""
    from cnnspec.lang.parser import lark_parser

    parser = lark_parser()
    ignored = set(parser.lexer_conf.ignore)
    terminals = sorted((t for t in parser.terminals if t.name != "SOURCE" and t.name.lower() not in KEYWORDS),
                       key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name))
    known = {"SIZE", "FLOAT", "NAME", "STRING", "INT", "COMPARE"}
    renamed = {"_NL": "NL", "_ARROW": "ARROW", **PUNCTUATION}
    groups, kinds = [], {}
    for t in terminals:
        if t.name not in ignored and t.name not in known and t.name not in renamed:
            raise RuntimeError(f"the grammar has a terminal {t.name} that fastparse does not know")
        name = f"T{len(groups)}"
        kinds[name] = None if t.name in ignored else renamed.get(t.name, t.name)
        groups.append(f"(?P<{name}>{t.pattern.to_regexp()})")
    return re.compile("|".join(groups)), kinds


def tokens(text: str, nesting: int) -> list:
    """(kind, value, line, col, start, end) of every token, after the post-lexer's rules: keywords
    are their own kinds, newlines inside ( ) and [ ] are dropped, `->` is placed on the arrow.
    Characters no terminal matches are ERR tokens, which only a train setting's SOURCE may cover."""
    pattern, kinds = scanner()
    out = []
    append = out.append
    opened = []
    pos, line, line_start = 0, 1, 0
    plain = PLAIN
    for m in pattern.finditer(text):
        start = m.start()
        if start != pos:            # characters no terminal matches (only a SOURCE may hold them)
            append(("ERR", text[pos:start], line, pos - line_start + 1, pos, start))
        kind = kinds[m.lastgroup]
        pos = m.end()
        if kind in plain:
            append((kind, m.group(), line, start - line_start + 1, start, pos))
        elif kind == "NAME":
            value = m.group()
            append((KEYWORDS.get(value, "NAME"), value, line, start - line_start + 1, start, pos))
        elif kind is None:                              # blanks
            continue
        elif kind == "NL" or kind == "ARROW":
            value = m.group()
            if kind == "ARROW":
                at = value.find("->")
                before = value.count("\n", 0, at)
                start_of_line = start + value.rindex("\n", 0, at) + 1 if before else line_start
                append(("ARROW", "->", line + before, start + at - start_of_line + 1, start + at, start + at + 2))
            elif not opened or opened[-1] == "{":
                append(("NL", value, line, start - line_start + 1, start, pos))
            newlines = value.count("\n")
            if newlines:
                line += newlines
                line_start = start + value.rindex("\n") + 1
        else:                                           # brackets
            if kind in OPENING:
                opened.append(kind)
                if len(opened) > nesting:
                    raise GiveUp
            elif opened and opened[-1] == OPENING_OF[kind]:
                opened.pop()
            append((kind, kind, line, start - line_start + 1, start, pos))
    if pos != len(text):
        append(("ERR", text[pos:], line, pos - line_start + 1, pos, len(text)))
        pos = len(text)
    append(("END", "", line, pos - line_start + 1, pos, pos))
    return out


def parse_items(text: str, file: str | None, max_int: int, nesting: int) -> list:
    """The top-level items (``ast.Network``, ``ast.Block``, ``ast.Import``, ``ast.Train``) of
    ``text``, exactly as the Lark parser and its transformer make them; raises :class:`GiveUp`
    when the text is not plainly well formed."""
    return Reader(text, file, max_int, nesting).start()


class Reader:
    def __init__(self, text: str, file: str | None, max_int: int, nesting: int):
        self.text = text
        self.file = file
        self.max_int = max_int
        self.max_digits = len(str(max_int))
        self.toks = tokens(text, nesting)
        self.i = 0
        self._lines = None

    # -- tokens and positions
    def kind(self) -> str:
        return self.toks[self.i][0]

    def take(self, kind: str):
        tok = self.toks[self.i]
        if tok[0] != kind:
            raise GiveUp
        self.i += 1
        return tok

    def tpos(self, tok) -> Pos:
        return Pos(self.file, tok[2], tok[3], len(tok[1]) or 1)

    def span(self, first: int) -> Pos:
        """The Pos of the tokens from index ``first`` to the last one taken, as Lark's meta gives
        it: on one line the whole span is underlined, else the rest of its first line."""
        start, last = self.toks[first], self.toks[self.i - 1]
        if last[2] == start[2]:
            return Pos(self.file, start[2], start[3], last[3] + len(last[1]) - start[3])
        if self._lines is None:
            self._lines = self.text.split("\n")
        line = self._lines[start[2] - 1] if start[2] <= len(self._lines) else ""
        return Pos(self.file, start[2], start[3], len(line.rstrip()) - start[3] + 1)

    def integer(self, digits: str) -> int:
        digits = digits.lstrip("0") or "0"
        if len(digits) > self.max_digits or int(digits) > self.max_int:
            raise GiveUp
        return int(digits)

    # -- top level
    def start(self) -> list:
        items = []
        toks = self.toks
        while True:
            kind = toks[self.i][0]
            if kind == "NL":
                self.i += 1
            elif kind == "NETWORK":
                self.i += 1
                name = self.take("NAME")
                items.append(ast.Network(name[1], self.body(), self.tpos(name)))
            elif kind == "BLOCK":
                items.append(self.block())
            elif kind == "IMPORT":
                self.i += 1
                path = self.take("STRING")
                items.append(ast.Import(path[1][1:-1], self.tpos(path)))
            elif kind == "TRAIN":
                items.append(self.train())
            elif kind == "END":
                return items
            else:
                raise GiveUp

    def block(self) -> ast.Block:
        self.i += 1
        name = self.take("NAME")
        params = []
        if self.kind() == "(":
            self.i += 1
            while self.kind() != ")":
                pname = self.take("NAME")
                default = None
                if self.kind() == "=":
                    self.i += 1
                    default = self.expr()
                params.append(ast.Param(pname[1], default, self.tpos(pname)))
                if self.kind() != ",":
                    break
                self.i += 1
            self.take(")")
        return ast.Block(name[1], params, self.body(), self.tpos(name))

    def train(self) -> ast.Train:
        first = self.i
        self.i += 1
        self.take("{")
        settings = []
        if self.kind() == "NL":
            self.i += 1
        while self.kind() != "}":
            settings.append(self.setting())
            if self.kind() == "}":
                break
            self.take("NL")
        self.i += 1
        return ast.Train(settings, self.span(first))

    def setting(self) -> ast.Setting:
        first = self.i
        key = self.take("NAME")
        self.take("=")
        tok = self.toks[self.i]
        m = SOURCE.match(self.text, tok[4]) if tok[1][:1].isalpha() or tok[1][:1] == "_" else None
        if m is not None:                       # `mnist:DIR`: skip the tokens it covers
            end = m.end()
            j = self.i
            while self.toks[j][4] < end:
                j += 1
            if self.toks[j - 1][5] != end or self.toks[j - 1][2] != tok[2] or BRACKETS.search(m.group()):
                raise GiveUp                     # tokens (or brackets) run past it: let Lark read it
            self.i = j
            value = ast.Literal(m.group(), Pos(self.file, tok[2], tok[3], end - tok[4]))
        else:
            value = self.expr()
        return ast.Setting(key[1], value, self.span(first), self.tpos(key))

    # -- bodies
    def body(self) -> list:
        self.take("{")
        statements = []
        toks = self.toks
        if toks[self.i][0] == "NL":
            self.i += 1
        while toks[self.i][0] != "}":
            kind = toks[self.i][0]
            if kind == "INPUT":
                statements.append(self.input())
            elif kind == "IF":
                first = self.toks[self.i]
                self.i += 1
                condition = self.expr()
                statements.append(ast.If(condition, self.body(), Pos(self.file, first[2], first[3], 2)))
            else:
                statements.append(self.statement())
            if toks[self.i][0] == "}":
                break
            self.take("NL")
        self.i += 1
        return statements

    def input(self) -> ast.Input:
        first = self.i
        self.i += 1
        name = self.take("NAME")
        self.take(":")
        shape = self.toks[self.i]
        if shape[0] == "SIZE":
            dims = tuple(self.integer(d) for d in shape[1].split("x"))
        elif shape[0] == "INT":
            dims = (self.integer(shape[1]),)
        else:
            raise GiveUp
        self.i += 1
        return ast.Input(name[1], dims, self.span(first), self.tpos(name))

    def statement(self) -> ast.Statement:
        first = self.i
        target = None
        if self.toks[first][0] == "NAME" and self.toks[first + 1][0] == "=":
            target = self.toks[first]
            self.i += 2
        chain = self.chain()
        return ast.Statement(target and target[1], chain, self.span(first), target and self.tpos(target))

    def chain(self) -> ast.Chain:
        first = self.i
        steps = [self.expr()]
        toks = self.toks
        while toks[self.i][0] == "ARROW":
            self.i += 1
            steps.append(self.expr())
        return ast.Chain(steps, self.span(first))

    # -- values: or < and < not < comparison < + - < * // < unary - < atom
    # Most values are a bare atom (`8`, `3x3`, `conv(...)`): ``expr`` reads it and returns it when
    # no operator follows; else the atom read is handed down the levels as their leftmost operand.
    def expr(self):
        first = self.i
        if self.toks[first][0] in PREFIXES:
            return self.disjunction(None, first)
        left = self.atom()
        if self.toks[self.i][0] not in OPERATORS:
            return left
        return self.disjunction(left, first)

    def disjunction(self, left, first):
        left = self.conjunction(left, first)
        while self.toks[self.i][0] == "OR":
            self.i += 1
            left = ast.BoolOp("or", left, self.conjunction(None, self.i), self.span(first))
        return left

    def conjunction(self, left, first):
        left = self.negation(left, first)
        while self.toks[self.i][0] == "AND":
            self.i += 1
            left = ast.BoolOp("and", left, self.negation(None, self.i), self.span(first))
        return left

    def negation(self, left, first):
        if left is not None:
            return self.comparison(left, first)
        nots = []
        while self.toks[self.i][0] == "NOT":
            nots.append(self.i)
            self.i += 1
        value = self.comparison(None, self.i)
        for start in reversed(nots):
            value = ast.Not(value, self.span(start))
        return value

    def comparison(self, left, first):
        left = self.sum(left, first)
        if self.toks[self.i][0] == "COMPARE":
            op = self.toks[self.i][1]
            self.i += 1
            left = ast.Compare(op, left, self.sum(None, self.i), self.span(first))
        return left

    def sum(self, left, first):
        left = self.product(left, first)
        toks = self.toks
        while toks[self.i][0] in ("+", "-"):
            op = toks[self.i][0]
            self.i += 1
            left = ast.BinOp(op, left, self.product(None, self.i), self.span(first))
        return left

    def product(self, left, first):
        left = self.unary() if left is None else left
        toks = self.toks
        while toks[self.i][0] in ("*", "//"):
            op = toks[self.i][0]
            self.i += 1
            left = ast.BinOp(op, left, self.unary(), self.span(first))
        return left

    def unary(self):
        minus = []
        while self.toks[self.i][0] == "-":
            minus.append(self.i)
            self.i += 1
        value = self.atom()
        for start in reversed(minus):
            inner = getattr(value, "value", None)
            if isinstance(value, ast.Literal) and type(inner) in (int, float):
                value = ast.Literal(-inner, self.span(start))      # a negative number
            else:
                value = ast.Neg(value, self.span(start))
        return value

    def atom(self):
        first = self.i
        tok = self.toks[first]
        kind = tok[0]
        self.i += 1
        if kind == "NAME":
            after = self.toks[self.i][0]
            if after == "(":
                self.i += 1
                args = self.args() if self.toks[self.i][0] != ")" else []
                self.take(")")
                return ast.Call(tok[1], args, self.span(first), self.tpos(tok))
            if after == ".":
                self.i += 1
                attr = self.take("NAME")
                return ast.Attribute(tok[1], attr[1], self.span(first), self.tpos(tok), self.tpos(attr))
            return ast.Name(tok[1], self.tpos(tok))
        if kind == "INT":
            return ast.Literal(self.integer(tok[1]), self.tpos(tok))
        if kind == "SIZE":
            return ast.Literal(Size(self.integer(d) for d in tok[1].split("x")), self.tpos(tok))
        if kind == "FLOAT":
            value = float(tok[1])
            if not math.isfinite(value):
                raise GiveUp
            return ast.Literal(value, self.tpos(tok))
        if kind == "STRING":
            return ast.Literal(tok[1][1:-1], self.tpos(tok))
        if kind == "TRUE" or kind == "FALSE":
            return ast.Literal(kind == "TRUE", self.span(first))
        if kind == "(":
            chain = self.chain()
            if self.toks[self.i][0] == "," and len(chain.steps) == 1:
                self.i += 1
                items = [chain.steps[0]]
                if self.toks[self.i][0] != ")":
                    items += self.values(")")
                self.take(")")
                return ast.TupleOf(items, self.span(first))
            self.take(")")
            if len(chain.steps) == 1:
                return chain.steps[0]
            return ast.Group(chain, self.span(first))
        if kind == "[":
            items = self.values("]") if self.toks[self.i][0] != "]" else []
            self.take("]")
            return ast.ListOf(items, self.span(first))
        raise GiveUp

    def values(self, close: str) -> list:
        """``expr ("," expr)* [","]`` up to ``close`` (not taken)."""
        items = [self.expr()]
        while self.toks[self.i][0] == ",":
            self.i += 1
            if self.toks[self.i][0] == close:
                break
            items.append(self.expr())
        return items

    def args(self) -> list:
        """``arg ("," arg)* [","]``; an arg is ``expr`` or ``NAME = expr``."""
        args = []
        toks = self.toks
        while True:
            first = self.i
            if toks[first][0] == "NAME" and toks[first + 1][0] == "=":
                self.i += 2
                value = self.expr()
                args.append(ast.Arg(toks[first][1], value, self.span(first)))
            else:
                value = self.expr()
                args.append(ast.Arg(None, value, value.pos))
            if toks[self.i][0] != ",":
                return args
            self.i += 1
            if toks[self.i][0] == ")":
                return args
