"""The syntax tree of a `.cnn` file: small dataclasses, each carrying the ``Pos`` it was written at.

Values (argument values, block-parameter defaults, train settings, conditions) are expressions:
``Literal``, ``Name``, ``Attribute`` (``x.channels``), ``Neg``, ``BinOp``, ``Compare``, ``BoolOp``,
``Not``, ``TupleOf``, ``ListOf`` and ``Call`` (``min(a, b)``). Chain steps are expressions too, told
apart by the builder: ``Name`` (a layer or block without arguments, or, first in a chain, a tensor
name), ``Call``, ``Group``, and ``BinOp("*", step, count)``, a repetition. A statement whose right
side is an integer expression binds a constant.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cnnspec.errors import Pos


# ---- values -----------------------------------------------------------------------------------

@dataclass
class Literal:
    """An int, float, bool, str (a quoted string or a train data source) or Size."""
    value: object
    pos: Pos


@dataclass
class Name:
    """An identifier: a block parameter, a bare word such as ``same``, a layer, block or tensor."""
    name: str
    pos: Pos


@dataclass
class Neg:
    """``-operand`` where the operand is not a number literal (those are folded into Literal)."""
    operand: object
    pos: Pos


@dataclass
class BinOp:
    """Integer arithmetic ``left op right``, op one of ``+ - * //``."""
    op: str
    left: object
    right: object
    pos: Pos


@dataclass
class Attribute:
    """``name.attr``: a size of a tensor (``in.channels``, ``x.height``, ``x.width``, ``x.length``)."""
    name: str
    attr: str
    pos: Pos                      # the whole ``name.attr``
    name_pos: Pos
    attr_pos: Pos


@dataclass
class Compare:
    """``left op right``, op one of ``== != < <= > >=``."""
    op: str
    left: object
    right: object
    pos: Pos


@dataclass
class BoolOp:
    """``left and right`` or ``left or right``."""
    op: str
    left: object
    right: object
    pos: Pos


@dataclass
class Not:
    """``not operand``."""
    operand: object
    pos: Pos


@dataclass
class TupleOf:
    """``(1, 2, 1, 2)``."""
    items: list
    pos: Pos


@dataclass
class ListOf:
    """``[[1, 0, -1], ...]`` or ``[flip, rotate(10)]``."""
    items: list
    pos: Pos


@dataclass
class Arg:
    """One argument of a call: ``key`` is None for a positional one. ``pos`` spans ``key=value``."""
    key: str | None
    value: object
    pos: Pos


@dataclass
class Call:
    """``name(args)``: a layer, block or merge in a chain, or ``sgd(lr=0.1)`` as a train value."""
    name: str
    args: list[Arg]
    pos: Pos                      # the whole call (first line of it)
    name_pos: Pos                 # just the name


# ---- chains and statements -----------------------------------------------------------------------

@dataclass
class Group:
    """``( chain )`` of two steps or more, treated as one, usually to repeat it (a parenthesised
    single step or value is that step or value itself)."""
    chain: Chain
    pos: Pos


@dataclass
class Repeat:
    """``step * count``: the step applied ``count`` times in sequence (made by the builder from the
    ``BinOp("*", step, ...)`` the parser reads)."""
    step: object
    count: object
    pos: Pos


@dataclass
class Chain:
    """Steps joined by ``->``."""
    steps: list
    pos: Pos


@dataclass
class Statement:
    """``[target =] chain``."""
    target: str | None
    chain: Chain
    pos: Pos
    target_pos: Pos | None = None


@dataclass
class If:
    """``if condition { body }``: the body's statements belong to the enclosing scope."""
    condition: object
    body: list
    pos: Pos                      # the ``if`` keyword


@dataclass
class Input:
    """``input NAME: SHAPE``; ``shape`` is (C, H, W), (C, L) or (D,)."""
    name: str
    shape: tuple
    pos: Pos
    name_pos: Pos


# ---- top level -----------------------------------------------------------------------------------

@dataclass
class Param:
    """A block parameter, with its default expression or None."""
    name: str
    default: object
    pos: Pos


@dataclass
class Block:
    """``block NAME(params) { body }``."""
    name: str
    params: list[Param]
    body: list
    pos: Pos                      # the block's name


@dataclass
class Network:
    """``network NAME { body }``; the body starts with an ``Input`` (and may declare more)."""
    name: str
    body: list
    pos: Pos


@dataclass
class Import:
    """``import "path.cnn"``, the path as written (relative to the importing file)."""
    path: str
    pos: Pos


@dataclass
class Setting:
    """``key = value`` in the train section."""
    key: str
    value: object
    pos: Pos
    key_pos: Pos


@dataclass
class Train:
    """``train { settings }``."""
    settings: list[Setting]
    pos: Pos


@dataclass
class Module:
    """One parsed file: networks (in order; names unique), at most one train section, any blocks
    and imports."""
    file: str | None
    text: str = ""
    networks: list[Network] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    train: Train | None = None

    @property
    def network(self) -> Network | None:
        """The first network (the one commands act on by default)."""
        return self.networks[0] if self.networks else None
