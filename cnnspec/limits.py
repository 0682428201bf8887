"""Bounds that keep bad input from hanging the program or exhausting the machine.

* Files are read only when they are regular files (not ``/dev/zero``, a named pipe, a socket or a
  directory), and text files only up to a size limit: :func:`open_regular`, :func:`read_text`.
* Memory is compared with what the machine (and this process's address-space limit) has before
  anything large is allocated: :func:`available_memory`, :func:`require_memory`.
* The garbage collector is paused while a network is read and analysed: :func:`gc_paused`.

Nothing here imports numpy or numba.
"""
from __future__ import annotations

import contextlib
import gc
import os
import stat
import threading

from cnnspec.errors import CnnSpecError

MAX_SOURCE_BYTES = 16 * 2 ** 20     # a .cnn file (100,000 written-out layers are about 3 MB)
MAX_JSON_BYTES = 256 * 2 ** 20      # log.json, a checkpoint's state.json
MAX_CLASSES = 1_000_000             # class indexes 0..K-1 of a data set's labels


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path, what: str = "file"):
    """``path`` opened for reading in binary, when it is a regular file; else a CnnSpecError naming
    what it is. The file is opened without blocking and checked after opening, so a named pipe
    neither hangs the open nor can be swapped in between a check and the open."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise CnnSpecError(f"no such {what}", file=path) from None
    except IsADirectoryError:
        raise CnnSpecError(f"this {what} is a folder, not a file", file=path) from None
    except OSError as err:
        raise CnnSpecError(f"cannot read this {what}: {err.strerror or err}", file=path) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CnnSpecError(f"this {what} is {kind_of(mode)}, not a regular file: it cannot be read",
                               file=path, hint="give the path of a file saved on disk")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, what: str = "file", limit: int | None = None) -> bytes:
    """The content of the regular file ``path``; more than ``limit`` bytes is an error."""
    with open_regular(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        # read what the file holds (never a buffer of the limit's size), one byte more to see growth
        data = handle.read() if limit is None else handle.read(min(size, limit) + 1)
    if limit is not None and len(data) > limit:
        raise CnnSpecError(f"this {what} is larger than {limit // 2 ** 20} MiB: it cannot be "
                           f"what it should be", file=os.fspath(path))
    return data


def read_text(path, what: str = "file", limit: int = MAX_SOURCE_BYTES) -> str:
    """A UTF-8 text file (a byte-order mark is dropped), read as :func:`read_bytes` does.
    Raises UnicodeDecodeError for text that is not UTF-8 (the caller locates it)."""
    return read_bytes(path, what, limit).decode("utf-8-sig")


# -- memory ---------------------------------------------------------------------------------------

def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> int | None:
    """What RLIMIT_AS leaves this process (None when there is no such limit)."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return max(soft - used, 0)


def available_memory() -> int | None:
    """Bytes this process can still use: the machine's available memory (``MemAvailable``), or
    less when an address-space limit (``ulimit -v``) leaves less; None when it cannot be known."""
    figures = [v for v in (_meminfo_available(), _address_space_left()) if v is not None]
    return min(figures) if figures else None


def human_bytes(n: float) -> str:
    for scale, suffix in ((2 ** 60, "EiB"), (2 ** 50, "PiB"), (2 ** 40, "TiB"), (2 ** 30, "GiB"),
                          (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.3g} {suffix}" if n / scale < 1e6 else f"{n / scale:.3e} {suffix}"
    return f"{int(n)} B"


def require_memory(nbytes: int, what: str, available: int | None = None, hint: str | None = None,
                   file: str | None = None) -> None:
    """Refuse (a CnnSpecError with the figures) to allocate ``nbytes`` for ``what`` when the
    machine has less available (``available``: a figure measured earlier, else measured now)."""
    if available is None:
        available = available_memory()
    if available is None or nbytes <= available:
        return
    raise CnnSpecError(f"not enough memory for {what}: it needs {human_bytes(nbytes)}, and this machine "
                       f"has {human_bytes(available)} available", file=file, hint=hint)


_gc_lock = threading.Lock()
_gc_state = {"depth": 0, "was_enabled": True}


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a network is read and analysed.

    Those passes allocate several objects per layer and leave no reference cycles behind, but the
    collector rescans everything alive each time enough new objects accumulate: for 100,000
    written-out layers that was half the time of ``cnnspec check``. Nested and concurrent pauses
    are counted; the collector runs again (if it ran before) when the last one ends, and then
    collects whatever cycles the paused code made."""
    with _gc_lock:
        if _gc_state["depth"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
            gc.disable()
        _gc_state["depth"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["depth"] -= 1
            if _gc_state["depth"] == 0 and _gc_state["was_enabled"]:
                gc.enable()
