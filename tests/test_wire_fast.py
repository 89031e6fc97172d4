"""The hand-written JSON of the hot paths is byte for byte the codec's.

``signing._signed_json`` (the signed headers of every message) and ``taskmeta``
(a task's metadata) write and read their JSON by hand where it is plain, and fall
back to the codec elsewhere; whichever path a message takes, the bytes signed and
the fields read must be what ``compact_json`` / ``json.loads`` give, or a worker and
a client of different code would disagree on a signature."""

from __future__ import annotations

import json

import pytest

from sif_magic import protocol as P
from sif_magic.protocol import signing, taskmeta
from sif_magic.protocol.framing import compact_json


class _Long(int):  # as pika hands a 64-bit header
    def __repr__(self) -> str:
        return f"{int(self)}L"


@pytest.mark.parametrize(
    "fields",
    [
        ["task", 3, "b39e2f1e8a39", "0" * 32, 1795250000250, None],
        ["result", 3, "b39e2f1e8a39", "f" * 32, _Long(1795250000250), 2],
        ["task", 3, "b39e2f1e8a39", "a" * 32, 1, _Long(0)],
        ["t\u00e4sk", 3, 'k"id', "x\\y", 5, None],  # texts JSON escapes: the codec
        ["task", True, "kid", "id", 1.5, None],  # not integers: the codec
        ["task", 3, None, "id", 7, False],
    ],
)
def test_signed_headers_are_the_codecs_bytes(fields: list) -> None:
    assert signing._signed_json(*fields) == compact_json(fields).encode()


JOB_FIELDS = {
    "reply_to": "sif_magic.abc.results.j1",
    "func_hash": "h",
    "star": False,
    "timeout": 2.5,
    "retries": 1,
    "max_lost": 3,
    "env": {"A": "1", "B": 't\u00e4 "q"'},
    "python": "3.11",
    "cloudpickle": "3.1.2",
    "client": "c1",
}


@pytest.mark.parametrize(
    ("job", "chunk", "calls", "tail"),
    [
        ("3f2a" * 8, 0, [0], {}),
        ("3f2a" * 8, 7, [7, 8, 9, 1000000], {"only": [0, 2], "bufs": 2}),
        ("j", 3, [], {"resources": {"gpus": 2}}),
        ("j\u00e9b", 1, [1], {}),  # a job id JSON escapes: the codec
        ("j", 1, [1.5], {}),  # a call that is no integer: the codec
    ],
)
def test_task_metadata_is_the_codecs(job: str, chunk: int, calls: list, tail: dict) -> None:
    meta = {"job": job, "chunk": chunk, "calls": calls, **JOB_FIELDS, **tail}
    for _ in range(2):  # the second time from the caches
        raw = taskmeta.encode(job, chunk, calls, JOB_FIELDS, tail)
        assert raw == compact_json(meta).encode()
        assert taskmeta.decode(raw) == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"job":"j","chunk":01,"calls":[1],"reply_to":"r"}',  # JSON has no leading zeros
        b'{"job":"j","chunk":1,"calls":[1],"reply_to":"r"} x',
        b'{"job":"j","chunk":1,"calls":[1],"a":1},{"b":2}',
        b'{"job":"j","chunk":1,"calls":[1,],"reply_to":"r"}',
    ],
)
def test_task_metadata_that_is_no_json_is_refused(raw: bytes) -> None:
    with pytest.raises(P.ProtocolError):
        taskmeta.decode(raw)


def test_a_later_field_wins_as_in_json() -> None:
    raw = b'{"job":"j","chunk":1,"calls":[1],"reply_to":"r","chunk":2,"job":"k"}'
    assert taskmeta.decode(raw) == json.loads(raw)


@pytest.mark.parametrize("size", [1, 32, 63, 64, 65, 200])
def test_the_mac_is_hmac_sha256(size: int) -> None:
    import hashlib
    import hmac

    key = bytes(range(256))[:size]
    headers = signing.headers_for(key, "task", [b"SIF1", b"body"], msg_id="a" * 32, t_ms=5)
    text = b'["task",3,"' + signing.key_id(key).encode() + b'","' + b"a" * 32 + b'",5,null]'
    want = hmac.new(key, b"sif3\0" + text + b"\0SIF1body", hashlib.sha256).hexdigest()
    assert headers[P.HDR_SIG] == want
    assert signing.verify(key, "task", b"SIF1body", headers).msg_id == "a" * 32
