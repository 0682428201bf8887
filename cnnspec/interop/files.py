"""Writing the files of export and import: atomically (a temporary file renamed over the target,
so an interrupted write leaves the old file or none), errors as CnnSpecError naming the file."""
from __future__ import annotations

import os

from cnnspec.errors import CnnSpecError


def write_atomic(path, write) -> None:
    """``write(f)`` into a binary file that becomes ``path`` once complete."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as exc:
        raise CnnSpecError(f"cannot write the file: {exc.strerror or exc}", file=path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
