"""Signing: every message carries an HMAC-SHA256 of its type, the headers a receiver
acts on, a fresh message id, the time it was signed, and its body.

The MAC (hex, in the ``sif-sig`` header) covers ``b"sif3\\0"``, the compact JSON
array ``[type, sif-v, sif-kid, sif-id, sif-t, sif-lost]`` (``sif-lost`` null when
absent), ``b"\\0"`` and the body. ``headers_for`` mints the id and the time, so every
message signed, a re-publish included, is a new message; ``verify`` hands them back
(``Signed``) for the receiver's replay checks (``replay``). A message whose signature
is missing or wrong is never decoded further. ``sif-kid`` names the key (``key_id``:
a hash that reveals nothing of it), so a receiver tells a message signed with
another key (a worker and a notebook holding different key files:
``ForeignKeyError``) from a forged or corrupted one; a message of another protocol
version is refused with what to upgrade (``VersionError``).

Threads: any (``key_id``'s cache is thread-safe); nothing else here holds state.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import random
import re
import secrets
import time
from typing import Any, NamedTuple

from .framing import ProtocolError, compact_json
from .names import (
    HDR_ID,
    HDR_KEY_ID,
    HDR_LOST,
    HDR_SIG,
    HDR_TIME,
    HDR_VERSION,
    SIGNED_HEADERS,
    VERSION,
)

Body = Any  # bytes, or a list of bytes-like pieces (framing.pack_parts)
_HEX = re.compile(r"[0-9a-f]+")
_UPGRADE = (
    "upgrade sif_magic on the older side so both speak the same version: in the notebook's "
    "environment (pip install -U sif_magic, then restart the kernel), or rebuild the "
    "worker's image with the notebook's sif_magic (sif-magic runtime def / build)"
)


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


class VersionError(ProtocolError):
    """A message of another protocol version (``theirs``): sent by an older or newer
    sif_magic, which must be upgraded (the message says how)."""

    def __init__(self, kind: str, theirs: Any) -> None:
        super().__init__(
            f"{kind!r} message of protocol version {theirs!r}; this side speaks {VERSION}: "
            + _UPGRADE
        )
        self.kind = kind
        self.theirs = theirs


class Signed(NamedTuple):
    """What ``verify`` vouches for besides the body: the message's id, when it was
    signed (epoch seconds, the sender's clock) and its ``sif-lost`` count."""

    kind: str
    msg_id: str
    t: float
    lost: int


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


def sign(key: bytes, kind: str, body: Body, headers: dict[str, Any]) -> str:
    """The hex MAC of ``kind``, the signed ``headers`` and ``body`` (module docstring);
    ``body`` may be given as the list of its pieces (``framing.pack_parts``)."""
    return _mac(key, kind, *(headers.get(h) for h in SIGNED_HEADERS), body)


def _mac(
    key: bytes, kind: Any, v: Any, kid: Any, msg_id: Any, t: Any, lost: Any, body: Body
) -> str:
    inner, outer = _keyed(key)
    mac = inner.copy()
    mac.update(_signed_json(kind, v, kid, msg_id, t, lost))
    mac.update(b"\0")
    for part in body if type(body) is list else (body,):
        mac.update(part)
    out = outer.copy()
    out.update(mac.digest())
    return out.hexdigest()


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 of ``key`` as its two keyed hashes (RFC 2104, as ``hmac`` computes
    it), the inner one fed the domain prefix: copied per message, never made anew (the
    key schedule is the costly part of a small message's MAC), and driven directly
    (``hmac.HMAC``'s Python methods cost as much again as the hashing of a small body)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD))
    inner.update(b"sif3\0")
    return inner, hashlib.sha256(key.translate(_OPAD))


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _signed_json(kind: Any, v: Any, kid: Any, msg_id: Any, t: Any, lost: Any) -> bytes:
    """``compact_json([kind, v, kid, msg_id, t, lost])``, encoded: written directly when
    the texts are plain (letters, digits, ``_.-``: JSON writes them as they are) and the
    numbers integers (pika hands a 64-bit one, ``sif-t``, as an int subclass, which JSON
    writes as the int), as every message of ours has them (a fifth of the encoder's
    cost on each message signed or verified); else by the encoder."""
    if (
        type(v) is int
        and _integer(t)
        and (lost is None or _integer(lost))
        and type(kind) is str
        and type(kid) is str
        and type(msg_id) is str
        and _PLAIN.fullmatch(kind + kid + msg_id)
    ):
        lost_text = "null" if lost is None else int(lost)
        return f'["{kind}",{v},"{kid}","{msg_id}",{int(t)},{lost_text}]'.encode()
    return compact_json([kind, v, kid, msg_id, t, lost]).encode()


_PLAIN = re.compile(r"[0-9A-Za-z_.-]*")


def _new_id() -> str:
    """32 hex digits, different for every message: 128 bits of a generator seeded from
    the OS's randomness in each process (seeded again in a forked child, which would
    otherwise repeat its parent's ids). An id needs to be unique, not secret (the MAC
    covers it: nobody without the key makes a message with a chosen id), and the
    generator spares a system call per message (``secrets`` asks the OS each time)."""
    return f"{_ids.getrandbits(128):032x}"


_ids = random.Random(secrets.token_bytes(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.token_bytes(32)))


def headers_for(
    key: bytes,
    kind: str,
    body: Body,
    *,
    msg_id: str | None = None,
    t_ms: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Signed headers of a new message: a fresh id and the time now (``msg_id`` and
    ``t_ms`` pin them, for tests), ``extra`` headers (``sif-lost``) covered too."""
    headers: dict[str, Any] = {
        HDR_VERSION: VERSION,
        HDR_KEY_ID: key_id(key),
        HDR_ID: msg_id or _new_id(),
        HDR_TIME: int(time.time() * 1000) if t_ms is None else t_ms,
    }
    headers.update(extra)
    headers[HDR_SIG] = sign(key, kind, body, headers)
    return headers


def verify(key: bytes, kind: str | None, body: bytes, headers: dict | None) -> Signed:
    """Raise ProtocolError unless ``body`` carries a valid signature for ``kind`` and
    well-formed signed headers; return what they vouch for."""
    if not key:
        raise ProtocolError("no signing key configured: refusing to read any message")
    if not kind:
        raise ProtocolError("message has no type property: not a sif_magic message")
    headers = headers or {}
    sig = header_str(headers, HDR_SIG)
    if not sig:
        raise ProtocolError(f"unsigned {kind!r} message (no {HDR_SIG} header)")
    version = headers.get(HDR_VERSION)
    if version != VERSION or isinstance(version, bool):
        raise VersionError(kind, version)
    if len(sig) != 64 or not _HEX.fullmatch(sig):
        raise ProtocolError(f"malformed {HDR_SIG} header on {kind!r} message (forged or corrupted)")
    msg_id = header_str(headers, HDR_ID)
    kid = header_str(headers, HDR_KEY_ID)
    t, lost = headers.get(HDR_TIME), headers.get(HDR_LOST)
    if not _integer(t) or not (lost is None or _integer(lost)):
        raise ProtocolError(f"malformed {HDR_TIME} or {HDR_LOST} header on {kind!r} message")
    if not hmac.compare_digest(sig, _mac(key, kind, VERSION, kid, msg_id, t, lost, body)):
        ours = key_id(key)
        if kid and kid != ours:
            raise ForeignKeyError(kind, kid, ours)
        raise ProtocolError(f"bad signature on {kind!r} message (forged or corrupted)")
    if len(msg_id) != 32 or not _HEX.fullmatch(msg_id) or (lost or 0) < 0:
        raise ProtocolError(f"malformed {HDR_ID} or {HDR_LOST} header on {kind!r} message")
    return Signed(kind, msg_id, t / 1000.0, lost or 0)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
