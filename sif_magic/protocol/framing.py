"""The byte layout of a binary body, and the one error type of a body we refuse.

A binary body is: MAGIC, then length-prefixed parts (u32 big endian length), to its
end. The first part is always UTF-8 JSON metadata; the others are opaque bytes: a
record's fixed parts, then the out-of-band buffers of its pickles (arrays' raw
memory), as many as its metadata's ``bufs`` says (absent: none). A receiver gets
the parts as views of the body, never copied. JSON bodies (events,
heartbeats, control) are read with ``_json_object``; ``_require`` checks fields.

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any


class ProtocolError(Exception):
    """A body that is not a well-formed, correctly signed sif_magic message."""


MAGIC = b"SIF1"
# ``json.dumps(x, separators=(",", ":"))`` without making an encoder per call
compact_json = json.JSONEncoder(separators=(",", ":")).encode
_LEN = struct.Struct(">I")


def pack(meta: dict[str, Any] | bytes, *blobs: Any) -> bytes:
    """The body of ``meta`` (a dict, or its JSON already encoded) and ``blobs``
    (bytes-like: bytes, bytearray, memoryview)."""
    head = meta if type(meta) is bytes else compact_json(meta).encode()
    parts = [MAGIC, _LEN.pack(len(head)), head]
    for blob in blobs:
        parts.append(_LEN.pack(memoryview(blob).nbytes))
        parts.append(blob)
    return b"".join(parts)


def pack_parts(meta: dict[str, Any] | bytes, *blobs: Any) -> list[Any]:
    """The body ``pack`` makes, as the pieces it is made of: the big blobs as they
    are, everything between them joined. For a sender that sends the pieces one
    after the other (a big buffer is then never copied into one body)."""
    head = meta if type(meta) is bytes else compact_json(meta).encode()
    parts: list[Any] = []
    piece = bytearray(MAGIC + _LEN.pack(len(head)) + head)
    for blob in blobs:
        n = memoryview(blob).nbytes
        piece += _LEN.pack(n)
        if n < _INLINE:
            piece += blob
        else:
            parts += (bytes(piece), blob)
            piece = bytearray()
    if piece:
        parts.append(bytes(piece))
    return parts


_INLINE = 1 << 16  # blobs shorter than this are copied into the piece before them


def unpack(
    body: bytes, nblobs: int, meta_of: Callable[[bytes], dict[str, Any]] | None = None
) -> tuple[dict[str, Any], list[memoryview]]:
    """(meta, parts): every part after the metadata, at least ``nblobs`` of them
    (``meta_of``: reads the metadata's bytes instead of ``json.loads``)."""
    if not isinstance(body, bytes | bytearray | memoryview) or body[:4] != MAGIC:
        raise ProtocolError("body does not start with the sif_magic marker")
    view = memoryview(body)
    pos = 4
    parts: list[memoryview] = []
    while pos < len(view) or len(parts) < nblobs + 1:
        if pos + 4 > len(view):
            raise ProtocolError("truncated body")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > len(view):
            raise ProtocolError("truncated body")
        parts.append(view[pos : pos + n])
        pos += n
    if meta_of is not None:
        return meta_of(bytes(parts[0])), parts[1:]
    try:
        meta = json.loads(bytes(parts[0]))
    except ValueError as e:
        raise ProtocolError(f"metadata is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ProtocolError("metadata is not a JSON object")
    return meta, parts[1:]


def _buffers_of(meta: dict[str, Any], parts: list[memoryview], fixed: int) -> list[memoryview]:
    """The out-of-band buffers after a record's ``fixed`` parts, as many as ``meta``'s
    ``bufs`` (a count, or a list of counts) says; ProtocolError if not so many."""
    bufs = meta.get("bufs", 0)
    try:
        count = sum(int(n) for n in bufs) if isinstance(bufs, list) else int(bufs)
    except (TypeError, ValueError):
        raise ProtocolError("'bufs' must be a count or a list of counts") from None
    if count < 0 or len(parts) != fixed + count:
        raise ProtocolError(f"body has {len(parts)} parts, its metadata says {fixed + count}")
    return parts[fixed:]


def _require(meta: dict, *names: str) -> None:
    """Raise ProtocolError unless ``meta`` has every field of ``names``."""
    missing = [n for n in names if n not in meta]
    if missing:
        raise ProtocolError(f"message lacks fields {missing}")


def _json_object(body: bytes) -> dict:
    """A JSON body as a dict, or ProtocolError."""
    try:
        d = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"body is not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ProtocolError("body is not a JSON object")
    return d
