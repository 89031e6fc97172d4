"""The byte layout of a binary body, and the one error type of a body we refuse.

A binary body is: MAGIC, then length-prefixed parts (u32 big endian length). The first
part is always UTF-8 JSON metadata; the others are opaque bytes. JSON bodies (events,
heartbeats, control) are read with ``_json_object``; ``_require`` checks fields.

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

import json
import struct
from typing import Any


class ProtocolError(Exception):
    """A body that is not a well-formed, correctly signed sif_magic message."""


MAGIC = b"SIF1"
_LEN = struct.Struct(">I")


def pack(meta: dict[str, Any], *blobs: bytes) -> bytes:
    head = json.dumps(meta, separators=(",", ":")).encode()
    parts = [MAGIC, _LEN.pack(len(head)), head]
    for blob in blobs:
        parts.append(_LEN.pack(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def unpack(body: bytes, nblobs: int) -> tuple[dict[str, Any], list[memoryview]]:
    if not isinstance(body, bytes | bytearray | memoryview) or body[:4] != MAGIC:
        raise ProtocolError("body does not start with the sif_magic marker")
    view = memoryview(body)
    pos = 4
    parts: list[memoryview] = []
    for _ in range(nblobs + 1):
        if pos + 4 > len(view):
            raise ProtocolError("truncated body")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > len(view):
            raise ProtocolError("truncated body")
        parts.append(view[pos : pos + n])
        pos += n
    try:
        meta = json.loads(bytes(parts[0]))
    except ValueError as e:
        raise ProtocolError(f"metadata is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ProtocolError("metadata is not a JSON object")
    return meta, parts[1:]


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
