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
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise CnnSpecError(f"not a {what} file: it holds a single array, not named arrays (.npz)",
                               file=path)
        with data:
            return {key: data[key] for key in data.files}
    except CnnSpecError:
        raise
    except Exception as exc:       # zipfile.BadZipFile, ValueError, OSError, EOFError, ...
        raise CnnSpecError(f"cannot read this {what} file (corrupt or truncated?): {exc}", file=path) from None
