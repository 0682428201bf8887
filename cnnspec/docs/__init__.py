"""The language reference and the layer API, shipped inside the package (``cnnspec help language``,
``cnnspec help layer-api``) so that an installed cnnspec carries its manual.

These are copies of the project's contracts (``tests/contracts/``, in turn copies of the course's
``shared/docs/``); ``tests/test_readme.py`` keeps them equal.
"""
from __future__ import annotations

from pathlib import Path

# topic -> (file, what it is)
TOPICS = {
    "language": ("dsl.md", "the .cnn language: networks, blocks, layers, train sections"),
    "layer-api": ("layer-api.md", "the layer functions students implement and the grader checks"),
}


def path(topic: str) -> Path:
    """The file of a help topic (a key of ``TOPICS``)."""
    return Path(__file__).resolve().parent / TOPICS[topic][0]


def read(topic: str) -> str:
    return path(topic).read_text(encoding="utf-8")
