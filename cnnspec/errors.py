"""Errors that point at the source: ``file:line:col: error: message``, the line, a caret, a hint."""
from __future__ import annotations


class CnnSpecError(Exception):
    """A mistake in a ``.cnn`` file (or in what was asked of a network), located in the source.

    ``file``, ``line`` and ``col`` (1-based) say where; ``source_line`` is the text of that line;
    ``hint`` is an optional suggestion ("did you mean `maxpool`?"). ``str(err)`` is the rendered
    message, as the CLI prints it.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 col: int | None = None, source_line: str | None = None, hint: str | None = None,
                 width: int = 1):
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.source_line = source_line
        self.hint = hint
        self.width = max(1, width)
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or ("<string>" if self.line is not None else "")
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        out = [f"{where}: error: {self.message}" if where else f"error: {self.message}"]
        if self.source_line is not None and self.line is not None:
            text = shown_line(self.source_line)
            out.append(f"    {text}")
            if self.col is not None:
                out.append("    " + " " * (self.col - 1) + "^" + "~" * (self.width - 1))
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


def shown_line(line: str) -> str:
    """A source line as an error quotes it: tabs one column wide, and control characters (an
    escape sequence in a file would drive the terminal) drawn as their symbols, one column each,
    so that the caret below still points at the right one."""
    line = line.rstrip("\r\n").expandtabs(1)
    return "".join(chr(0x2400 + ord(c)) if ord(c) < 0x20 else "\u2421" if c == "\x7f"
                   else "\ufffd" if 0x80 <= ord(c) < 0xa0 else c for c in line)


class CnnSpecWarning(UserWarning):
    """Something suspicious that does not stop the work (weights that are not finite, ...); the
    command line prints it as ``warning: ...``."""


def nearest(word: str, candidates) -> str | None:
    """The candidate closest to ``word`` in spelling, or None when nothing is close."""
    import difflib

    found = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return found[0] if found else None


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``plural(1, "epoch")`` -> "1 epoch", ``plural(5, "epoch")`` -> "5 epochs"; ``many`` for
    irregular nouns. Counts are written with thousands separators."""
    return f"{count:,} {noun if count == 1 else many or noun + 's'}"


def not_utf8(err: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8: "not UTF-8 text: byte 0xe9 at line 2, column 19"."""
    data, at = err.object, err.start
    line = data.count(b"\n", 0, at) + 1
    col = at - (data.rfind(b"\n", 0, at) + 1) + 1
    return f"not UTF-8 text: byte 0x{data[at]:02x} at line {line}, column {col} (save the file as UTF-8)"


def not_utf8_error(err: UnicodeDecodeError, file: str) -> "CnnSpecError":
    """:func:`not_utf8` as an error located at the byte, showing its line (bad bytes as U+FFFD)."""
    data, at = err.object, err.start
    start = data.rfind(b"\n", 0, at) + 1
    end = data.find(b"\n", at)
    line_text = data[start:end if end >= 0 else len(data)].decode("utf-8", errors="replace")
    col = len(data[start:at].decode("utf-8", errors="replace")) + 1
    return CnnSpecError(not_utf8(err), file=file, line=data.count(b"\n", 0, at) + 1, col=col,
                        source_line=line_text)


def match_names(names, patterns, what: str) -> list:
    """The layer ``names`` (dotted: ``basic1.conv2``) that any of the ``patterns`` picks, in the order
    of ``names``. A pattern picks:

    * the layer of that full name (``conv1``, ``basic1.conv2``), when there is one;
    * else, with a dot, the full names it matches as an fnmatch glob (``basic1.*``, ``*.conv1``),
      and every layer inside the block instance it names (``stage1.basic2``);
    * else (no dot) every layer one part of whose name it matches: the layer's own name or a
      block instance holding it (``conv*``: conv1, basic1.conv1, ...; ``basic1``: its layers).

    A pattern that picks nothing is an error that starts with ``what`` and suggests a name."""
    import fnmatch

    names = list(names)
    chosen = set()
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        if pattern in names:
            hits = [pattern]
        elif "." in pattern:
            hits = [name for name in names if fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")]
        else:
            hits = [name for name in names if any(fnmatch.fnmatchcase(part, pattern) for part in name.split("."))]
        if not hits:
            guess = nearest(pattern, names)
            raise CnnSpecError(f"{what} {pattern!r} matches no layer",
                               hint=f"did you mean `{guess}`?" if guess else f"the layers are: {', '.join(names)}")
        chosen.update(hits)
    return [name for name in names if name in chosen]


class Pos(tuple):
    """Where something is in the source: ``Pos(file, line, col, width)`` (1-based line and col)."""

    __slots__ = ()

    def __new__(cls, file: str | None, line: int, col: int, width: int = 1):
        return tuple.__new__(cls, (file, line, col, width))

    file = property(lambda self: self[0])
    line = property(lambda self: self[1])
    col = property(lambda self: self[2])
    width = property(lambda self: self[3])


def error_at(pos: Pos | None, message: str, *, sources: dict | None = None, hint: str | None = None,
             file: str | None = None) -> CnnSpecError:
    """A :class:`CnnSpecError` located at ``pos``, its source line taken from ``sources[file]``."""
    if pos is None:
        return CnnSpecError(message, file=file, hint=hint)
    source_line = None
    text = (sources or {}).get(pos.file)
    if text is not None:
        lines = text.split("\n")
        if 1 <= pos.line <= len(lines):
            source_line = lines[pos.line - 1]
    return CnnSpecError(message, file=pos.file or file, line=pos.line, col=pos.col,
                        source_line=source_line, hint=hint, width=pos.width)
