"""Value types of the ``.cnn`` language that the layer catalogue interprets."""
from __future__ import annotations


class Size(tuple):
    """A size literal such as ``5x5`` or ``3x1`` (one int per spatial axis).

    A bare integer in the source stays an ``int``; tuples such as ``(1, 2, 1, 2)`` stay ``tuple``.
    """

    def __repr__(self) -> str:
        return "x".join(str(v) for v in self)

    __str__ = __repr__
