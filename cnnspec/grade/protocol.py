"""The wire format between the grader and its sandboxed child: length-prefixed binary messages.

    message := u64 body length (big-endian) | body
    body    := u32 header length | header (UTF-8 JSON) | raw array buffers, one after another

The header is ``{"h": value, "a": [[dtype, shape], ...]}``: ``value`` is JSON in which an array
appears as ``{"$a": i}`` (the i-th buffer) and a tuple as a list. Buffers are C-order and
little-endian, of a plain numeric dtype only. Nothing is ever unpickled: decoding checks every
size and dtype against what it is told and refuses anything else (``ProtocolError``).

This module is imported by the child *by file path*, before any student code runs: it must use
only the standard library and NumPy.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

# dtypes an array on the wire may have; anything else (objects, structured, big-endian) is refused
DTYPES = frozenset({"<f2", "<f4", "<f8", "|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4",
                    "<i8", "<u8"})
MAX_HEADER = 1 << 20          # bytes of JSON in one message
MAX_ARRAYS = 4096             # arrays in one message
MAX_NDIM = 8


class ProtocolError(Exception):
    """A message that does not follow the format (a bug, or a submission writing to the pipe)."""


def encode(value) -> bytes:
    """One message carrying ``value`` (JSON-able data, tuples and plain ndarrays)."""
    arrays = []

    def walk(v):
        if isinstance(v, np.ndarray):
            a = v if v.flags.c_contiguous else v.copy(order="C")   # (ascontiguousarray makes 0-d 1-d)
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            arrays.append(a)
            return {"$a": len(arrays) - 1}
        if isinstance(v, (list, tuple)):
            return [walk(item) for item in v]
        if isinstance(v, dict):
            return {str(k): walk(item) for k, item in v.items()}
        if isinstance(v, np.generic):
            return v.item()                  # a NumPy int or float: the Python number
        return v

    header = json.dumps({"h": walk(value), "a": [[a.dtype.str, list(a.shape)] for a in arrays]})
    head = header.encode("utf-8")
    parts = [struct.pack(">I", len(head)), head] + [a.tobytes() for a in arrays]
    body_len = sum(len(p) for p in parts)
    return struct.pack(">Q", body_len) + b"".join(parts)


def decode(body: bytes):
    """The value of one message body, arrays rebuilt as fresh plain float/int/bool ndarrays."""
    if len(body) < 4:
        raise ProtocolError("message too short")
    (head_len,) = struct.unpack(">I", body[:4])
    if head_len > MAX_HEADER or 4 + head_len > len(body):
        raise ProtocolError("header length out of range")
    try:
        header = json.loads(body[4:4 + head_len].decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"h", "a"} or not isinstance(header["a"], list):
        raise ProtocolError("header has the wrong structure")
    if len(header["a"]) > MAX_ARRAYS:
        raise ProtocolError("too many arrays")
    arrays, offset = [], 4 + head_len
    for spec in header["a"]:
        if (not isinstance(spec, list) or len(spec) != 2 or spec[0] not in DTYPES
                or not isinstance(spec[1], list) or len(spec[1]) > MAX_NDIM
                or not all(type(d) is int and 0 <= d < 1 << 40 for d in spec[1])):
            raise ProtocolError(f"bad array description {str(spec)[:80]}")
        dtype = np.dtype(spec[0])
        count = 1
        for d in spec[1]:
            count *= d
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(body):
            raise ProtocolError("array data shorter than announced")
        # np.frombuffer of plain numeric dtypes cannot run code; .copy() owns and may be written
        arrays.append(np.frombuffer(body, dtype, count, offset).reshape(tuple(spec[1])).copy())
        offset += nbytes
    if offset != len(body):
        raise ProtocolError("trailing bytes after the arrays")

    def build(v, depth=0):
        if depth > 32:
            raise ProtocolError("value nested too deeply")
        if isinstance(v, dict):
            if set(v) == {"$a"}:
                i = v["$a"]
                if type(i) is not int or not 0 <= i < len(arrays):
                    raise ProtocolError("bad array reference")
                return arrays[i]
            return {k: build(item, depth + 1) for k, item in v.items()}
        if isinstance(v, list):
            return [build(item, depth + 1) for item in v]
        return v

    return build(header["h"])


def write_message(fd: int, value) -> None:
    """Send one message on a file descriptor (blocking, all of it)."""
    data = memoryview(encode(value))
    while data:
        sent = os.write(fd, data)
        data = data[sent:]
