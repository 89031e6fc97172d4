"""A task's JSON metadata, written and read without the JSON codec for its own part.

Every chunk of a job has the same metadata but for ``job``, ``chunk`` and ``calls``
(its first three fields) and the optional ``only`` / ``resources`` / ``bufs`` (its
last). With one call per message, encoding and decoding that JSON was a tenth of
what a client and a worker spend per call. The bytes are exactly the codec's
(``compact_json``, ``tests/test_wire_bytes.py``): ``encode`` writes the first three
fields by hand and takes the rest from a cache of the job's encoded fields;
``decode`` matches the first three with a pattern and parses the rest once per
job (a cache keyed by its bytes). Anything the fast paths do not cover (a job id
that JSON would escape, a non-integer call index, text that is not the plain
layout) goes through the codec as before, so the result is always what
``json.loads`` gives.

Threads: any. The two caches are dicts that a thread replaces whole when full;
their values are never changed once stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from .framing import ProtocolError, compact_json

_CACHE = 64  # jobs' encoded / parsed fields kept (a worker serves few jobs at a time)
_encoded: dict[tuple, str] = {}
_parsed: dict[bytes, dict[str, Any]] = {}
_PLAIN = re.compile(r"[0-9A-Za-z_.-]*")
_INT = rb"-?(?:0|[1-9][0-9]*)"
_HEAD = re.compile(
    rb'\{"job":"([0-9A-Za-z_.-]*)","chunk":(' + _INT + rb'),"calls":\[((?:'
    + _INT + rb"(?:," + _INT + rb")*)?)\],(.*)\}",
    re.S,
)  # fmt: skip


def encode(
    job_id: str,
    chunk: int,
    calls: Sequence[int],
    job_fields: dict[str, Any],
    tail: dict[str, Any],
) -> bytes:
    """``compact_json({"job", "chunk", "calls", **job_fields, **tail}).encode()``
    (``calls`` a list or a range: a list on the wire)."""
    if type(calls) is not list:
        calls = list(calls)
    if (
        type(job_id) is not str
        or type(chunk) is not int
        or not _PLAIN.fullmatch(job_id)
        or not job_fields
    ):
        meta = {"job": job_id, "chunk": chunk, "calls": calls, **job_fields, **tail}
        return compact_json(meta).encode()
    env = job_fields.get("env") or {}
    key = (job_id, *(v for k, v in job_fields.items() if k != "env"), tuple(env.items()))
    try:
        middle = _encoded.get(key)
    except TypeError:  # an unhashable value (a list in env): not cached
        middle = None
        key = None
    if middle is None:
        middle = compact_json(job_fields)[1:-1]
        if key is not None:
            if len(_encoded) >= _CACHE:
                _encoded.clear()
            _encoded[key] = middle
    if len(calls) == 1 and type(calls[0]) is int:
        calls_text = f"[{calls[0]}]"
    else:
        calls_text = compact_json(calls)
    end = "," + compact_json(tail)[1:] if tail else "}"
    return f'{{"job":"{job_id}","chunk":{chunk},"calls":{calls_text},{middle}{end}'.encode()


def decode(raw: bytes) -> dict[str, Any]:
    """The metadata dict of ``raw`` (a fresh dict; its values may be shared with other
    tasks of the job: never change them)."""
    m = _HEAD.fullmatch(raw)
    if m is None:
        return _loads(raw)
    rest = m.group(4)
    fields = _parsed.get(rest)
    if fields is None:
        fields = _loads(b"{" + rest + b"}")
        if len(_parsed) >= _CACHE:
            _parsed.clear()
        _parsed[rest] = fields
    calls = m.group(3)
    meta = {
        "job": m.group(1).decode(),
        "chunk": int(m.group(2)),
        "calls": [int(c) for c in calls.split(b",")] if calls else [],
    }
    meta.update(fields)
    return meta


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ProtocolError(f"metadata is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ProtocolError("metadata is not a JSON object")
    return meta
