"""Out-of-band buffers on the wire (issue 14 part 3): a Task's and a ResultBatch's
buffers are further parts of the body (meta ``bufs``), read back as views of the
body; ``pack_parts`` gives the same body in pieces, which the signature covers in
turn and pika gets as ``transport.parts.Parts``. Bodies without buffers keep the
bytes of before (``test_wire_bytes.py`` pins those)."""

from __future__ import annotations

import json
import os
import struct
from array import array

import pytest

from sif_magic import protocol as P
from sif_magic.transport.parts import Parts, wire

KEY = b"k" * 32
L = struct.Struct(">I")


def _task(buffers: list) -> P.Task:
    return P.Task("job1", 3, [5, 6], "reply.q", b"FUNC", b"ARGS", func_hash="h", buffers=buffers)


def test_a_task_carries_its_buffers_as_parts_after_args() -> None:
    bufs = [b"\x01\x02\x03", bytearray(70_000), memoryview(b"")]
    body = _task(bufs).encode()
    head = json.dumps(json.loads(body[8 : 8 + L.unpack_from(body, 4)[0]]))
    meta = json.loads(head)
    assert meta["bufs"] == 3 and list(meta)[-1] == "bufs"  # last: bodies without keep their bytes
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    expected = b"SIF1" + L.pack(len(meta_bytes)) + meta_bytes
    for part in (b"FUNC", b"ARGS", *map(bytes, bufs)):
        expected += L.pack(len(part)) + part
    assert body == expected
    task = P.Task.decode(body)
    assert [bytes(b) for b in task.buffers] == [bytes(b) for b in bufs]
    assert all(isinstance(b, memoryview) and b.obj is body for b in task.buffers)  # not copied
    assert task.encode() == body  # decoded and encoded again: the same bytes


def test_a_task_without_buffers_has_no_bufs_field() -> None:
    body = _task([]).encode()
    assert b'"bufs"' not in body
    assert P.Task.decode(body).buffers == []
    assert b"".join(map(bytes, _task([]).encode_parts())) == body


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b + L.pack(2) + b"xx",  # one part more than "bufs" says
        lambda b: b.replace(b'"bufs":2', b'"bufs":3'),  # one part fewer
        lambda b: b.replace(b'"bufs":2', b'"bufs":-1'),
        lambda b: b.replace(b'"bufs":2', b'"bufs":"x"'),
    ],
)
def test_a_task_whose_parts_do_not_match_bufs_is_refused(damage) -> None:  # noqa: ANN001
    body = _task([b"a" * 10, b"b" * 20]).encode()
    with pytest.raises(P.ProtocolError):
        P.Task.decode(damage(body))


def _seg(index: int, buffers: list) -> P.ResultSegment:
    return P.ResultSegment(
        array("q", [index]), bytes([P.DONE]), b"\x01", array("d", [1.0, 2.0]), b"VAL",
        {}, "w", "h", 7, buffers=buffers,
    )  # fmt: skip


def test_a_result_batch_gives_each_segment_its_buffers() -> None:
    segs = [_seg(0, [b"aa", b"bbb"]), _seg(1, []), _seg(2, [bytes(100_000)])]
    body = P.ResultBatch("job1", -1, segs).encode()
    out = P.ResultBatch.decode(body)
    assert [[bytes(b) for b in s.buffers] for s in out.segments] == [
        [b"aa", b"bbb"], [], [bytes(100_000)],
    ]  # fmt: skip
    assert P.ResultBatch.decode(P.ResultBatch("job1", -1, out.segments).encode()) is not None
    assert P.ResultBatch("job1", -1, out.segments).encode() == body
    assert b'"bufs":[2,0,1]' in body
    plain = P.ResultBatch("job1", -1, [_seg(0, [])]).encode()
    assert b'"bufs"' not in plain  # as version 3 sent it before buffers
    wrong = body.replace(b'"bufs":[2,0,1]', b'"bufs":[1,1,1]')
    assert [len(s.buffers) for s in P.ResultBatch.decode(wrong).segments] == [1, 1, 1]
    for bad in (b'"bufs":[2,0]', b'"bufs":[3,-1,1]', b'"bufs":[2,0,2]'):
        with pytest.raises(P.ProtocolError):
            P.ResultBatch.decode(body.replace(b'"bufs":[2,0,1]', bad))


def test_pack_parts_is_pack_in_pieces_big_blobs_untouched() -> None:
    big, small = os.urandom(200_000), b"small"
    meta = {"a": 1}
    parts = P.pack_parts(meta, small, big, small, memoryview(big), b"")
    assert b"".join(map(bytes, parts)) == P.pack(meta, small, big, small, memoryview(big), b"")
    assert parts[1] is big and isinstance(parts[3], memoryview)  # sent as they are
    assert len(parts) == 5  # head+small, big, len+small, big, the last length


def test_the_signature_covers_the_pieces_as_it_covers_the_body() -> None:
    parts = _task([os.urandom(300_000), b"x"]).encode_parts()
    body = b"".join(map(bytes, parts))
    headers = P.headers_for(KEY, "task", parts, msg_id="0" * 32, t_ms=1)
    assert headers == P.headers_for(KEY, "task", body, msg_id="0" * 32, t_ms=1)
    assert P.verify(KEY, "task", body, headers).msg_id == "0" * 32
    with pytest.raises(P.ProtocolError, match="bad signature"):
        P.verify(KEY, "task", body[:-1] + b"y", headers)


def test_pika_gets_the_pieces_as_one_bytes_body() -> None:
    parts = [b"head", os.urandom(300_001), memoryview(os.urandom(5)), b"", os.urandom(131_072)]
    whole = b"".join(map(bytes, parts))
    body = wire(parts)
    assert isinstance(body, bytes) and isinstance(body, Parts) and len(body) == len(whole)
    assert bytes(body) == whole and body
    for frame in (131_064, 4096, 1):  # how pika slices a body into frames
        got = b"".join(bytes(body[s : s + frame]) for s in range(0, len(whole), frame))
        assert got == whole
    assert wire(whole) is whole
    assert wire([whole]) is whole  # a small message's one piece: pika slices bytes in C
    with pytest.raises(TypeError):
        body[::2]  # noqa: B018
