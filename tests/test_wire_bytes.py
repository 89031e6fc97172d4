"""The bytes on the wire do not move when the code does.

``wire_v3.json`` holds the body and the signed headers of every message kind for the
fixed inputs below (a fixed message id and time), as protocol version 3 encodes them.
The bodies are those of version 2 (``wire_v2.json``, written before the protocol
module became a package, commit 37ac96b): version 3 changed only the headers and what
the signature covers. A change that alters any of them is a change of the wire
format: it bumps ``VERSION``, updates docs/protocol.md and writes a new file of
expected bytes. Decoding each body and encoding it again gives the same bytes, so
the decoders keep every field too."""

from __future__ import annotations

import base64
import json
from array import array
from pathlib import Path

import pytest

from sif_magic import protocol as P

EXPECTED = {
    name: base64.b64decode(text)
    for name, text in json.loads((Path(__file__).parent / "wire_v3.json").read_text()).items()
}
KEY = b"k" * 32
ERROR = {
    "type": "ValueError",
    "message": "bad x",
    "frames": [["/home/u/nb.py", 3, "f", "raise ValueError('bad x')"]],
    "codes": ["abc123"],
}


def _segments() -> list[P.ResultSegment]:
    seg1 = P.ResultSegment(
        array("q", [10, 11, 12]),
        bytes([P.DONE, P.FAILED, P.SKIP]),
        bytes([1, 2, 1]),
        array("d", [1.0, 1.5, 1.25, 2.75, 0.0, 0.0]),
        b"\x80\x05VALUES",
        {1: (ERROR, b"out\n", b"err\n", 7, b"EXC"), 0: (None, b"hello\n", b"", 0, b"")},
        "w1",
        "host-a",
        4242,
    )
    seg2 = P.ResultSegment(
        array("q", [40]),
        bytes([P.CANCELLED]),
        bytes([1]),
        array("d", [3.0, 3.5]),
        b"",
        {},
        "w1",
        "host-a",
        4243,
    )
    return [seg1, seg2]


def _call_results() -> list[P.CallResult]:
    return [
        P.CallResult(0, P.DONE, b"v0", None, b"out\n", b"", 1.0, 2.0, 1, "w", "h", 5),
        P.CallResult(1, P.FAILED, b"", ERROR, b"", b"err\n", 1.5, 2.5, 2, "w", "h", 6, dropped=10),
        P.CallResult(2, P.DONE, b"", None, b"", b"", 1.5, 2.5, 1, "w", "h", 7),
    ]


def samples() -> dict[str, bytes]:
    """Each message kind (and the framing) encoded from fixed inputs."""
    seg1, seg2 = _segments()
    out = {
        "task_full": P.Task(
            "job1",
            3,
            [6, 7, 8],
            "sif_magic.results.job1",
            b"FUNC\x00\xff",
            b"ARGS",
            "h",
            True,
            2.5,
            1,
            4,
            {"A": "1", "B": "two"},
            "3.11",
            "3.1.2",
            "c1",
            only=[1, 2],
        ).encode(),  # fmt: skip
        "task_plain": P.Task("job2", 0, [0], "sif_magic.results.job2", b"F", b"A").encode(),
        "result_segments": P.ResultBatch("job1", 3, [seg1, seg2], final=True).encode(),
        "result_one_segment": P.ResultBatch("job1", 4, [seg2]).encode(),
        "result_callresults": P.ResultBatch("job1", 5, _call_results()).encode(),
        "events": P.EventBatch(
            "job1",
            "w1",
            "host-a",
            12.5,
            states={"running": [[1, 3]], "done": [[0, 0], [5, 6]], "lost": [[9, 9]]},
            calls=[[1, 1, 12.0, 0.0], [0, 2, 11.0, 12.25]],
            logs=[[1, 1, "hello\n"], [0, 2, "warn é\n"]],
            notes={"9": "worker lost"},
        ).encode(),  # fmt: skip
        "events_empty": P.EventBatch("job1", "w1", "h", 1.0).encode(),
        "heartbeat": P.Heartbeat(
            "w1",
            "host-a",
            4242,
            "default",
            2,
            1,
            "3.11",
            "3.1.2",
            "0.1.0",
            100.5,
            started=99.0,
            done=3,
            failed=1,
            container="none",
            slurm_job="77",
            interval=2.0,
        ).encode(),  # fmt: skip
        "heartbeat_bye": P.Heartbeat(
            "w2", "h", 1, "rt", 1, 0, "3.12", "3.1.3", "0.1.0", 5.0, state="bye"
        ).encode(),
        "control_cancel": P.Control("cancel", job_id="job1", calls=[1, 2]).encode(),
        "control_ping": P.Control("ping").encode(),
        "control_shutdown": P.Control("shutdown", worker="w1", runtime="rt").encode(),
        "pack": P.pack({"a": [1, "x"]}, b"", b"blob"),
    }
    for n, name in enumerate(list(out)):
        pinned = {"msg_id": f"{n:032x}", "t_ms": 1795250000250 + n}
        extra = {P.HDR_LOST: 2} if name.startswith("task") else {}
        headers = P.headers_for(KEY, name, out[name], **pinned, **extra)
        out["sig_" + name] = repr(sorted(headers.items())).encode()
    # a task republished with a loss count of 0 signs it (a forger cannot drop it)
    lost0 = P.headers_for(
        KEY, "task", out["task_plain"], msg_id="f" * 32, t_ms=1, **{P.HDR_LOST: 0}
    )
    out["sig_task_plain_lost0"] = repr(sorted(lost0.items())).encode()
    # as backends/rabbitmq.py built it by hand before JobInfo (json.dumps, default separators)
    out["jobinfo"] = P.JobInfo("job1", 100, "f", "raise", "default", 1795250000.25, 7).encode()
    return out


SAMPLES = samples()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_message_kind_encodes_to_the_bytes_of_version_3(name: str) -> None:
    assert P.VERSION == 3
    assert SAMPLES[name] == EXPECTED[name]


DECODERS = {
    "task_full": P.Task.decode,
    "task_plain": P.Task.decode,
    "result_segments": P.ResultBatch.decode,
    "result_one_segment": P.ResultBatch.decode,
    "result_callresults": P.ResultBatch.decode,
    "events": P.EventBatch.decode,
    "events_empty": P.EventBatch.decode,
    "heartbeat": P.Heartbeat.decode,
    "heartbeat_bye": P.Heartbeat.decode,
    "control_cancel": P.Control.decode,
    "control_ping": P.Control.decode,
    "control_shutdown": P.Control.decode,
    "jobinfo": P.JobInfo.decode,
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoding_the_bytes_of_version_3_and_encoding_again_gives_them_back(name: str) -> None:
    assert DECODERS[name](EXPECTED[name]).encode() == EXPECTED[name]


def test_a_decoded_result_batch_holds_what_was_sent() -> None:
    back = P.ResultBatch.decode(EXPECTED["result_segments"])
    assert back.job_id == "job1" and back.chunk == 3 and back.final
    first, second = back.segments
    assert list(first.indices) == [10, 11, 12] and list(second.indices) == [40]
    assert first.extra[1] == P.CallExtra(ERROR, b"out\n", b"err\n", 7, b"EXC")
    assert first.extra[1].error == ERROR and first.extra[1].dropped == 7
    assert first.extra[0] == P.CallExtra(None, b"hello\n", b"", 0, b"")
    assert (first.worker, first.host, first.pid, second.pid) == ("w1", "host-a", 4242, 4243)
    failed = P.ResultBatch.decode(EXPECTED["result_callresults"]).results[1]
    assert failed.error == ERROR and failed.stderr == b"err\n" and failed.dropped == 10


def test_the_signature_is_the_one_docs_protocol_md_describes() -> None:
    """HMAC-SHA256 of b"sif3\\0", the JSON array of the type and signed headers, b"\\0",
    the body: computed here from the description, not by the code under test."""
    import hashlib
    import hmac

    body = EXPECTED["task_plain"]
    for lost in ({}, {P.HDR_LOST: 4}):
        headers = P.headers_for(KEY, "task", body, **lost)
        signed = ["task", 3, headers["sif-kid"], headers["sif-id"], headers["sif-t"]]
        signed.append(lost.get(P.HDR_LOST))
        text = b"sif3\0" + json.dumps(signed, separators=(",", ":")).encode() + b"\0" + body
        assert headers["sif-sig"] == hmac.new(KEY, text, hashlib.sha256).hexdigest()
        assert P.verify(KEY, "task", body, headers).lost == lost.get(P.HDR_LOST, 0)
