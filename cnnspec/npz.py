"""Reading ``.npz`` files (weights, optimizer states, data sets): one place that turns every way a
file can be missing, truncated or not an archive into a CnnSpecError naming the file."""
from __future__ import annotations

import os

import numpy as np

from cnnspec.errors import CnnSpecError


def read_npz(path, what: str = ".npz") -> dict:
    """All arrays of the ``.npz`` file ``path`` by name. ``what`` names the file in messages
    ("weights", "optimizer state", ...)."""
    path = str(path)
    if not os.path.isfile(path):
        raise CnnSpecError(f"no such {what} file", file=path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
        if magic == b"\x93NUMPY":
            raise CnnSpecError(f"not a {what} file: it holds a single array (.npy), not named arrays (.npz)",
                               file=path)
        if not magic.startswith(b"PK"):
            raise CnnSpecError(f"not a {what} file: an .npz file is a zip archive of arrays, this one is not",
                               file=path, hint="save it with numpy.savez(path, name=array, ...)")
        data = np.load(path, allow_pickle=False)
        with data:
            return {key: data[key] for key in data.files}
    except CnnSpecError:
        raise
    except Exception as exc:       # zipfile.BadZipFile, ValueError, OSError, EOFError, ...
        raise CnnSpecError(f"cannot read this {what} file (corrupt or truncated?): {exc}", file=path) from None
