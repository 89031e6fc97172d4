"""Signing: every body carries an HMAC-SHA256 of its type and bytes, and the key's id.

The MAC covers ``b"sif1\\0" + type + b"\\0" + body`` with the shared key; the hex digest
travels in the ``sif-sig`` header. A body whose signature is missing or wrong is never
decoded further. The unsigned ``sif-kid`` header names the key (``key_id``: a hash that
reveals nothing of it), so a receiver tells a message signed with another key (a worker
and a notebook holding different key files: ``ForeignKeyError``) from a forged or
corrupted one.

Threads: any (``key_id``'s cache is thread-safe); nothing else here holds state.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Any

from .framing import ProtocolError
from .names import HDR_KEY_ID, HDR_SIG, HDR_VERSION, VERSION


class ForeignKeyError(ProtocolError):
    """A message signed with another key than ours (its ``sif-kid`` header says
    which): sent by a side that holds another key file, not forged."""

    def __init__(self, kind: str, theirs: str, ours: str) -> None:
        super().__init__(
            f"{kind!r} message signed with another key (key id {theirs}; this side holds "
            f"key id {ours})"
        )
        self.kind = kind
        self.theirs = theirs
        self.ours = ours


@functools.lru_cache(maxsize=16)
def key_id(key: bytes) -> str:
    """A short public name of ``key`` (12 hex digits of a domain-separated SHA-256):
    equal ids mean the same key file; the id tells nothing about the key itself."""
    return hashlib.sha256(b"sif_magic key id\0" + key).hexdigest()[:12]


def header_str(headers: dict | None, name: str) -> str:
    """A text header as ``str`` ('' if missing; pika hands some as bytes)."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value if isinstance(value, str) else ""


def sign(key: bytes, kind: str, body: bytes) -> str:
    mac = hmac.new(key, b"sif1\0" + kind.encode() + b"\0", hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def verify(key: bytes, kind: str | None, body: bytes, headers: dict | None) -> None:
    """Raise ProtocolError unless ``body`` carries a valid signature for ``kind``."""
    if not key:
        raise ProtocolError("no signing key configured: refusing to read any message")
    if not kind:
        raise ProtocolError("message has no type property: not a sif_magic message")
    headers = headers or {}
    sig = header_str(headers, HDR_SIG)
    if not sig:
        raise ProtocolError(f"unsigned {kind!r} message (no {HDR_SIG} header)")
    version = headers.get(HDR_VERSION)
    if version != VERSION:
        raise ProtocolError(
            f"{kind!r} message of protocol version {version!r}; this side speaks {VERSION}"
        )
    if len(sig) != 64 or not all(c in "0123456789abcdef" for c in sig):
        # compare_digest raises TypeError on a str with non-ASCII characters
        raise ProtocolError(f"malformed {HDR_SIG} header on {kind!r} message (forged)")
    if not hmac.compare_digest(sig, sign(key, kind, body)):
        theirs, ours = header_str(headers, HDR_KEY_ID), key_id(key)
        if theirs and theirs != ours:
            raise ForeignKeyError(kind, theirs, ours)
        raise ProtocolError(f"bad signature on {kind!r} message (forged or corrupted)")


def headers_for(key: bytes, kind: str, body: bytes, **extra: Any) -> dict[str, Any]:
    headers = {HDR_VERSION: VERSION, HDR_SIG: sign(key, kind, body), HDR_KEY_ID: key_id(key)}
    headers.update(extra)
    return headers
