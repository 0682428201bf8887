"""A training checkpoint that is one thing: its parts are written first, then one rename commits.

A run's ``checkpoint/`` folder holds::

    state.json            the commit record: the state of the run (the position to continue
                          from, ...) and, under the key ``checkpoint``, the file holding each
                          part with its size and SHA-256
    weights-<g>.npz       the parts of generation g: arrays by name (model weights, optimizer
    optimizer-<g>.npz     state, and whatever else a run keeps, e.g. its best weights)

:func:`save` writes the parts of a new generation to new files (each flushed to the disk), then
replaces ``state.json`` in one atomic rename, and only then removes the previous generation. A
process killed (or a second Ctrl-C) between any two of these writes leaves the previous
``state.json`` naming the previous parts, which are still there: resuming continues from the
previous checkpoint exactly. :func:`load` checks every part against the record and refuses a
checkpoint whose parts disagree with it (damaged, or mixed by hand) instead of resuming from it.

Everything a run needs to continue besides arrays goes in the one ``state`` dict (JSON).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from cnnspec import atomic
from cnnspec.errors import CnnSpecError
from cnnspec.limits import MAX_JSON_BYTES, open_regular, read_bytes

FORMAT = 2
RECORD = "state.json"
KEY = "checkpoint"               # the key of state.json holding the record of the parts
PART_FILE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)-(?P<generation>\d+)\.npz")
CHUNK = 2 ** 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path, "checkpoint part") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def save(folder, parts: dict, state: dict, default=None) -> None:
    """Commit a new checkpoint in ``folder``: ``parts`` ({part name: {array name: array}}) and
    ``state`` (JSON-serialisable; ``default`` converts what json cannot, as in ``json.dump``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    previous = _generation(folder)
    generation = previous + 1
    if KEY in state:
        raise ValueError(f"the key {KEY!r} of a checkpoint's state is reserved")
    record = {**state, KEY: {"format": FORMAT, "generation": generation, "parts": {}}}
    for name, arrays in parts.items():
        if not PART_FILE.fullmatch(f"{name}-0.npz"):
            raise ValueError(f"checkpoint part name {name!r} must be a word")
        path = folder / f"{name}-{generation}.npz"
        atomic.write_npz(path, arrays, what=f"checkpoint's {name}")
        record[KEY]["parts"][name] = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}
    _commit(folder, record, default)


def update_state(folder, default=None, **changes) -> None:
    """Commit the current checkpoint again with ``changes`` made to its state (its parts kept)."""
    folder = Path(folder)
    record = _read_record(folder)
    record.update(changes)
    _commit(folder, record, default)


def _commit(folder: Path, record: dict, default) -> None:
    atomic.write_json(folder / RECORD, record, what="checkpoint", default=default)
    keep = {RECORD, *(part["file"] for part in record[KEY]["parts"].values())}
    for path in folder.iterdir():                 # older generations, files of interrupted saves
        if path.name not in keep and (PART_FILE.fullmatch(path.name) or ".tmp" in path.name):
            try:
                os.remove(path)
            except OSError:
                pass


def _generation(folder: Path) -> int:
    """The highest generation of any part file here (committed or not), so that a new save never
    writes over a file the committed record names."""
    found = [int(m.group("generation")) for m in map(PART_FILE.fullmatch, os.listdir(folder)) if m]
    return max(found, default=0)


def exists(folder) -> bool:
    return (Path(folder) / RECORD).is_file()


def _read_record(folder: Path) -> dict:
    path = folder / RECORD
    if not path.exists():
        raise CnnSpecError("no checkpoint here to resume (expected checkpoint/state.json)",
                           file=str(folder.parent))
    try:
        record = json.loads(read_bytes(path, "checkpoint", MAX_JSON_BYTES))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CnnSpecError(f"cannot read this checkpoint (corrupt?): {exc}", file=str(path)) from None
    meta = record.get(KEY) if isinstance(record, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("parts"), dict) or meta.get("format") != FORMAT:
        older = (folder / "weights.npz").is_file()
        raise CnnSpecError(f"this is not a checkpoint this version of cnnspec can resume (no "
                           f"`{KEY}` record of format {FORMAT})", file=str(path),
                           hint=f"an earlier cnnspec wrote it, without checksums: start from its weights with "
                                f"--init {folder / 'weights.npz'}" if older else None)
    return record


def load(folder) -> tuple[dict, dict]:
    """``(parts, state)`` of the checkpoint in ``folder``, every part checked against the record:
    a part that is missing, of another size or checksum is an error, never a silent resume."""
    from cnnspec.npz import read_npz

    folder = Path(folder)
    record = _read_record(folder)
    parts = {}
    for name, part in record[KEY]["parts"].items():
        file = part.get("file") if isinstance(part, dict) else None
        if not isinstance(file, str) or not PART_FILE.fullmatch(file):
            raise CnnSpecError(f"the checkpoint's record of part {name!r} is damaged", file=str(folder / RECORD))
        path = folder / file
        problem = None
        if not path.is_file():
            problem = "is missing"
        elif path.stat().st_size != part.get("bytes"):
            problem = f"has {path.stat().st_size} bytes, the record says {part.get('bytes')}"
        elif sha256(path) != part.get("sha256"):
            problem = "does not have the checksum the record gives"
        if problem:
            raise CnnSpecError(
                f"the checkpoint's parts disagree: {file} {problem}; resuming from it would not "
                f"continue the run as it was", file=str(folder),
                hint="the checkpoint was damaged or its files were changed; start the run again")
        parts[name] = read_npz(path, f"checkpoint's {name}")
    return parts, {key: value for key, value in record.items() if key != KEY}
