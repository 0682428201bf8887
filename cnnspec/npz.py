"""Reading ``.npz`` and ``.npy`` files (weights, optimizer states, data sets, inputs): one place that
turns every way a file can be missing, truncated, not an archive, or a decompression bomb into a
CnnSpecError naming the file.

Memory is bounded before anything is read: every array's header (shape and dtype) is read
first, the bytes it announces must agree with what the file (or the zip member) holds, and their
total must fit in the memory available. Only regular files are read (not ``/dev/zero``, pipes).
"""
from __future__ import annotations

import math
import os
import zipfile

import numpy as np

from cnnspec.errors import CnnSpecError
from cnnspec.limits import available_memory, human_bytes, open_regular


def _header(handle, name: str):
    """(shape, fortran_order, dtype) from the header of the .npy data in ``handle``."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle, max_header_size=10000)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle, max_header_size=10000)
    raise ValueError(f"array {name!r}: .npy format version {version} is not supported")


def _announced(shape, dtype, name: str) -> int:
    if dtype.hasobject:
        raise ValueError(f"array {name!r} holds Python objects, which are not loaded "
                         f"(a pickle can run any code)")
    return math.prod(shape) * dtype.itemsize


def _too_big(total: int, what: str, path: str, available: int | None) -> None:
    if available is not None and total > available:
        raise CnnSpecError(f"this {what} file would take {human_bytes(total)} in memory (its arrays' "
                           f"headers say so), more than the {human_bytes(available)} available",
                           file=path, hint="a decompression bomb, or a file too large for this machine")


def read_npz(path, what: str = ".npz") -> dict:
    """All arrays of the ``.npz`` file ``path`` by name. ``what`` names the file in messages
    ("weights", "optimizer state", ...)."""
    path = os.fspath(path)
    with open_regular(path, f"{what} file") as handle:
        try:
            magic = handle.read(6)
            if magic == b"\x93NUMPY":
                raise CnnSpecError(f"not a {what} file: it holds a single array (.npy), not named arrays (.npz)",
                                   file=path)
            if not magic.startswith(b"PK"):
                raise CnnSpecError(f"not a {what} file: an .npz file is a zip archive of arrays, this one is not",
                                   file=path, hint="save it with numpy.savez(path, name=array, ...)")
            handle.seek(0)
            with zipfile.ZipFile(handle) as archive:
                members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
                total = 0
                for info in members:
                    name = info.filename[:-4]
                    with archive.open(info) as member:
                        shape, _, dtype = _header(member, name)
                        header_bytes = member.tell()
                    data = _announced(shape, dtype, name)
                    if header_bytes + data != info.file_size:
                        raise ValueError(f"array {name!r}: its header announces {data} bytes "
                                         f"(shape {shape}), the archive holds {info.file_size - header_bytes}")
                    total += data
                _too_big(total, what, path, available_memory())
                arrays = {}
                for info in members:
                    with archive.open(info) as member:
                        arrays[info.filename[:-4]] = np.lib.format.read_array(member, allow_pickle=False)
                return arrays
        except CnnSpecError:
            raise
        except MemoryError:
            raise CnnSpecError(f"this {what} file does not fit in the memory available", file=path) from None
        except Exception as exc:       # zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, ...
            raise CnnSpecError(f"cannot read this {what} file (corrupt or truncated?): {exc}", file=path) from None


def read_npy(path, what: str = ".npy") -> np.ndarray:
    """The array of the ``.npy`` file ``path``, its announced size checked against the file's."""
    path = os.fspath(path)
    with open_regular(path, f"{what} file") as handle:
        try:
            shape, _, dtype = _header(handle, "the array")
            data = _announced(shape, dtype, "the array")
            held = os.fstat(handle.fileno()).st_size - handle.tell()
            if data != held:
                raise ValueError(f"its header announces {data} bytes (shape {shape}), the file holds {held}")
            _too_big(data, what, path, available_memory())
            handle.seek(0)
            return np.lib.format.read_array(handle, allow_pickle=False)
        except CnnSpecError:
            raise
        except MemoryError:
            raise CnnSpecError(f"this {what} file does not fit in the memory available", file=path) from None
        except Exception as exc:
            raise CnnSpecError(f"cannot read this {what} file (corrupt or truncated?): {exc}", file=path) from None
