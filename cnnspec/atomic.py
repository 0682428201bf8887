"""Writing files so that a crash, a Ctrl-C or a full disk never leaves half a file behind.

:func:`write_atomic` writes through a temporary file in the same folder, flushes it to the disk
(``fsync``) and renames it over the target in one step: readers see the old file or the new one,
never a mix. A failure (no space left, no permission, a read-only disk) is a CnnSpecError naming
the file and the reason, the old file untouched and the temporary file removed.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from cnnspec.errors import CnnSpecError

REASONS = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the disk is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "a folder of that name is in the way",
    errno.EFBIG: "the file is larger than this system allows",
}


def reason(exc: OSError) -> str:
    return REASONS.get(exc.errno, exc.strerror or str(exc))


class WriteError(CnnSpecError):
    """A file could not be written (``errno`` says why); nothing was half-written."""

    def __init__(self, message: str, errno_: int | None = None, **kwargs):
        self.errno = errno_
        super().__init__(message, **kwargs)


def write_error(exc: OSError, path, what: str, hint: str | None = None) -> WriteError:
    """A CnnSpecError for a write that failed with ``exc``."""
    if hint is None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space (or choose another folder) and try again"
    return WriteError(f"cannot write the {what}: {reason(exc)}", exc.errno, file=os.fspath(path), hint=hint)


def temporary_name(path: Path) -> Path:
    """``.NAME.tmpPID.SUFFIX`` beside ``path`` (the suffix kept, for writers that go by it)."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def fsync_dir(folder) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, write, what: str = "file") -> Path:
    """Replace ``path`` by what ``write(tmp_path)`` writes to a temporary path beside it (the same
    suffix); returns ``path``. See the module docstring."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        try:
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(exc, path, what) from None
        except WriteError as exc:          # a writer that says its own failures (save_figure's,
            if exc.errno is None:          # on the temporary file): said of this file instead
                raise
            raise write_error(OSError(exc.errno, os.strerror(exc.errno)), path, what) from None
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def write_bytes(path, data: bytes, what: str = "file") -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_bytes(data), what)


def write_text(path, text: str, what: str = "file") -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), what)


def write_json(path, data, what: str = "file", default=None) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=default) + "\n", what)


def write_npz(path, arrays: dict, what: str = "file") -> Path:
    import numpy as np

    def save(tmp):
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return write_atomic(path, save, what)


def make_folder(path, what: str = "folder") -> Path:
    """Create the folder ``path`` (and its parents) if needed and check that files can be
    written in it: an existing file of that name, no permission or a read-only disk is a
    CnnSpecError now, before any work whose results would be lost."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CnnSpecError(f"the {what} is a file, not a folder", file=str(path),
                           hint="choose a folder name that is not taken by a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".cnnspec-write-test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CnnSpecError(f"cannot write in the {what}: {reason(exc)}", file=str(path)) from None
    return path
