"""The wire format: round trips, and every way a body can be refused."""

from __future__ import annotations

import ast
import importlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from sif_magic import protocol
from sif_magic.protocol import CallResult, ProtocolError, ResultBatch, Task

KEY = b"k" * 32


def test_task_round_trip_keeps_every_field() -> None:
    t = Task(
        "job1",
        3,
        [6, 7, 8],
        "sif_magic.results.job1",
        b"FUNC",
        b"ARGS",
        "h",
        True,
        2.5,
        1,
        4,
        {"A": "1"},
        "3.11",
        "3.1.2",
        "c1",
        only=[1, 2],
    )
    back = Task.decode(t.encode(), lost=2)
    assert back.calls == [6, 7, 8] and back.func == b"FUNC" and back.args == b"ARGS"
    assert (back.star, back.timeout, back.retries, back.max_lost, back.env) == (
        True,
        2.5,
        1,
        4,
        {"A": "1"},
    )
    assert back.only == [1, 2] and back.lost == 2 and back.python == "3.11"


def test_result_batch_round_trip_with_output_and_errors() -> None:
    rs = [
        CallResult(0, protocol.DONE, b"v0", None, b"out\n", b"", 1.0, 2.0, 1, "w", "h", 5),
        CallResult(
            1,
            protocol.FAILED,
            b"",
            {"type": "ValueError", "message": "x", "frames": []},
            b"",
            b"err\n",
            1.5,
            2.5,
            2,
            "w",
            "h",
            6,
            dropped=10,
        ),
    ]
    back = ResultBatch.decode(ResultBatch("j", 0, rs, final=True).encode())
    assert [r.index for r in back.results] == [0, 1]
    assert back.results[0].value == b"v0" and back.results[0].stdout == b"out\n"
    assert back.results[1].error["type"] == "ValueError" and back.results[1].stderr == b"err\n"
    assert back.results[1].dropped == 10 and back.results[1].attempt == 2 and back.final


def test_ranges_compress_and_expand() -> None:
    assert protocol.compress_ranges([9, 1, 2, 3, 7, 10, 3]) == [[1, 3], [7, 7], [9, 10]]
    assert list(protocol.expand_ranges([[1, 3], [7, 7]])) == [1, 2, 3, 7]


def _signed(kind: str, body: bytes, key: bytes = KEY) -> dict:
    return protocol.headers_for(key, kind, body)


def test_verify_accepts_a_correct_signature() -> None:
    body = b"hello"
    protocol.verify(KEY, "task", body, _signed("task", body))


@pytest.mark.parametrize(
    "case,match",
    [
        ("unsigned", "unsigned"),
        ("other key", "signed with another key"),
        ("other key, no key id", "bad signature"),
        ("tampered", "bad signature .*forged or corrupted"),
        ("other kind", "bad signature"),
        ("version", "protocol version"),
        ("no type", "no type"),
    ],
)
def test_verify_refuses(case: str, match: str) -> None:
    body = b"payload"
    kind = "task"
    headers = _signed(kind, body)
    if case == "unsigned":
        headers = {protocol.HDR_VERSION: 1}
    elif case == "other key":
        headers = _signed(kind, body, b"x" * 32)
    elif case == "other key, no key id":  # a sender that does not name its key
        headers = _signed(kind, body, b"x" * 32)
        del headers[protocol.HDR_KEY_ID]
    elif case == "tampered":
        body = b"payloaD"
    elif case == "other kind":
        kind = "result"  # a signed event body replayed as a task must not pass
    elif case == "version":
        headers[protocol.HDR_VERSION] = 99
    elif case == "no type":
        kind = None  # type: ignore[assignment]
    with pytest.raises(ProtocolError, match=match):
        protocol.verify(KEY, kind, body, headers)


def test_a_message_of_another_key_names_both_key_ids() -> None:
    other = b"y" * 32
    body = b"payload"
    with pytest.raises(protocol.ForeignKeyError) as info:
        protocol.verify(KEY, "heartbeat", body, _signed("heartbeat", body, other))
    assert (info.value.theirs, info.value.ours) == (protocol.key_id(other), protocol.key_id(KEY))
    assert protocol.key_id(other) in str(info.value) and protocol.key_id(KEY) in str(info.value)
    # a forged message that claims our key id is not taken for another key's
    forged = {**_signed("heartbeat", body, other), protocol.HDR_KEY_ID: protocol.key_id(KEY)}
    with pytest.raises(ProtocolError, match="forged") as info2:
        protocol.verify(KEY, "heartbeat", body, forged)
    assert not isinstance(info2.value, protocol.ForeignKeyError)


def test_key_id_is_short_stable_and_not_the_key() -> None:
    kid = protocol.key_id(KEY)
    assert kid == protocol.key_id(bytes(KEY)) and len(kid) == 12
    assert int(kid, 16) >= 0 and kid not in KEY.hex() and kid not in KEY.decode("latin-1")
    assert protocol.key_id(KEY + b"!") != kid
    assert _signed("task", b"x")[protocol.HDR_KEY_ID] == kid


@pytest.mark.parametrize(
    "body", [b"", b"garbage" * 100, b"SIF1\x00\x00\x00\x10{}", b"SIF1\x00\x00\x00\x02[]"]
)
def test_malformed_bodies_raise_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        Task.decode(body)
    with pytest.raises(ProtocolError):
        ResultBatch.decode(body)


def test_control_refuses_unknown_ops() -> None:
    with pytest.raises(ProtocolError, match="unknown control op"):
        protocol.Control.decode(b'{"op": "rm -rf"}')


def test_the_protocol_package_imports_only_the_standard_library() -> None:
    """A worker in a slim image, or someone writing a compatible worker, needs nothing
    else: the package's modules import the standard library and each other only."""
    package = Path(protocol.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{path.name} imports {node.module} from outside"
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top == "__future__" or top in sys.stdlib_module_names, (path.name, name)


def test_every_public_name_is_reexported_by_the_package() -> None:
    modules = ("names", "framing", "signing", "replay", "tasks", "results", "events")
    for mod in modules:
        m = importlib.import_module(f"sif_magic.protocol.{mod}")
        public = {
            n
            for n, v in vars(m).items()
            if not n.startswith("_")
            and not isinstance(v, types.ModuleType)
            and getattr(v, "__module__", m.__name__) == m.__name__
        }
        public -= {"annotations"}
        assert public <= set(protocol.__all__), (mod, public - set(protocol.__all__))
    assert all(getattr(protocol, n) is not None for n in protocol.__all__)


def test_jobinfo_round_trip_and_defaults_of_a_sparse_one() -> None:
    info = protocol.JobInfo("j", 12, "fit", "collect", "ml", 5.5, 3)
    assert protocol.JobInfo.decode(info.encode()) == info
    sparse = protocol.JobInfo.decode(b'{"job": "j", "n": 4}')
    assert (sparse.n, sparse.name, sparse.errors, sparse.runtime, sparse.created) == (
        4,
        "",
        "raise",
        "",
        0.0,
    )


@pytest.mark.parametrize(
    "body,match",
    [
        (b'{"n": 4}', "lacks fields"),
        (b'{"job": "j", "n": "many"}', "malformed jobinfo"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff", "not JSON"),
    ],
)
def test_a_malformed_jobinfo_raises_protocol_error(body: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        protocol.JobInfo.decode(body)


def test_what_only_some_calls_have_travels_as_named_fields() -> None:
    error: protocol.ErrorRecord = {"type": "KeyError", "message": "'k'", "frames": [], "codes": []}
    rs = [
        CallResult(0, protocol.DONE, b"", None, b"", b"", 1.0, 2.0),
        CallResult(1, protocol.FAILED, b"EXC", error, b"o", b"e", 1.0, 2.0, dropped=3),
    ]
    (seg,) = protocol.ResultSegment.of(rs)
    assert list(seg.extra) == [1]  # the quiet call carries nothing
    assert seg.extra[1] == protocol.CallExtra(error, b"o", b"e", 3, b"EXC")
    (back,) = ResultBatch.decode(ResultBatch("j", 0, [seg]).encode()).segments
    extra = back.extra[1]
    assert (extra.error, extra.stdout, extra.stderr, extra.dropped, extra.blob) == (
        error,
        b"o",
        b"e",
        3,
        b"EXC",
    )
    assert [r.value for r in back.results()][1] == b"EXC"


def _tampered_result(edit: Any) -> bytes:
    """A result batch of two calls (one with output) whose meta ``edit`` changes."""
    rs = [
        CallResult(0, protocol.DONE, b"", None, b"out", b"err", 1.0, 2.0),
        CallResult(1, protocol.DONE, b"", None, b"", b"", 1.0, 2.0),
    ]
    meta, parts = protocol.unpack(ResultBatch("j", 0, rs).encode(), 6)
    edit(meta)
    return protocol.pack(meta, *(bytes(p) for p in parts))


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m["extra"]["0"].__setitem__(1, 4), "output lengths do not match"),
        (lambda m: m["extra"]["0"].__setitem__(1, 2), "output lengths do not match"),
        (lambda m: m["extra"]["0"].__setitem__(2, -1), "output lengths do not match"),
        (lambda m: m["extra"]["0"].__setitem__(0, "boom"), "an error is not an object"),
        (lambda m: m["extra"]["0"].__setitem__(1, "x"), "malformed result batch"),
        (lambda m: m["segs"][0].__setitem__(4, 1), "lengths do not match its data"),
        (lambda m: m["segs"][0].__setitem__(0, 3), "has 16 bytes for 3 calls"),
    ],
)
def test_a_result_batch_whose_meta_lies_about_its_parts_is_refused(edit: Any, match: str) -> None:
    assert len(ResultBatch.decode(_tampered_result(lambda m: None)).results) == 2
    with pytest.raises(ProtocolError, match=match):
        ResultBatch.decode(_tampered_result(edit))
