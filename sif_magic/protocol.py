"""The sif_magic wire format: every name, field and byte layout in one place.

This module imports nothing else of sif_magic and nothing outside the standard
library, so a worker in a slim container image can use it; cloudpickle appears
only as opaque bytes here. ``docs/protocol.md`` describes the same format for
someone writing a compatible worker.

Messages (AMQP ``type`` property):

- ``task``: a chunk of calls of one job, published to the runtime's task queue.
- ``result``: results of some calls of a chunk, published to the job's result queue.
- ``events``: a batch of call-state changes and log lines of one job, from one
  worker, published to the monitoring exchange at most every ~100 ms.
- ``heartbeat`` / ``bye``: a worker's presence and description.
- ``control``: cancel / ping / shutdown, fanned out to every worker.

Every body is signed: HMAC-SHA256 over ``b"sif1\\0" + type + b"\\0" + body``
with the shared key; the hex digest travels in the ``sif-sig`` header. A body
whose signature is missing or wrong is never decoded further. The unsigned
``sif-kid`` header names the key (``key_id``: a hash that reveals nothing of
it), so a receiver tells a message signed with another key (a worker and a
notebook holding different key files: ``ForeignKeyError``) from a forged or
corrupted one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import pickle
import struct
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any

VERSION = 2

# -- names -------------------------------------------------------------------

MONITOR_EXCHANGE = "sif_magic.monitor"  # topic
CONTROL_EXCHANGE = "sif_magic.control"  # fanout
DEAD_EXCHANGE = "sif_magic.dead"  # fanout -> DEAD_QUEUE
DEAD_QUEUE = "sif_magic.dead"

HDR_SIG = "sif-sig"
HDR_VERSION = "sif-v"
HDR_KEY_ID = "sif-kid"  # key_id() of the key that signed the message (not covered by the MAC)
HDR_LOST = "sif-lost"  # how many times the calls of this message lost their worker

# States of a call; the byte values are what job state arrays hold. ``retrying``: the
# call failed and runs again (--retries); ``lost``: its worker died (or stopped
# answering) under it, and it waits to be redelivered to a worker.
QUEUED, RUNNING, DONE, FAILED, CANCELLED, RETRYING, LOST = range(7)
STATE_NAMES = ("queued", "running", "done", "failed", "cancelled", "retrying", "lost")
STATE_CODES = {name: code for code, name in enumerate(STATE_NAMES)}
TERMINAL = frozenset((DONE, FAILED, CANCELLED))
SKIP = 255  # in a result segment's status column: no outcome here (the call runs again)


def task_queue(runtime: str) -> str:
    """The durable queue that workers of ``runtime`` consume."""
    return f"sif_magic.tasks.{runtime}"


def retry_queue(runtime: str) -> str:
    """Calls split off a redelivered chunk: consumed one at a time per worker, so a
    worker that dies only ever counts a loss against the call it was running."""
    return f"sif_magic.tasks.{runtime}.retry"


def result_queue(job_id: str) -> str:
    """The durable per-job queue results are published to (kept for re-attach)."""
    return f"sif_magic.results.{job_id}"


def task_queue_arguments() -> dict[str, Any]:
    return {"x-dead-letter-exchange": DEAD_EXCHANGE}


def result_queue_arguments(ttl_seconds: float) -> dict[str, Any]:
    # The queue (and the results in it) disappears after ``ttl_seconds`` unused.
    return {"x-expires": int(ttl_seconds * 1000), "x-dead-letter-exchange": DEAD_EXCHANGE}


def events_key(job_id: str) -> str:
    return f"job.{job_id}.events"


def heartbeat_key(worker_id: str, kind: str = "heartbeat") -> str:
    return f"worker.{worker_id}.{kind}"


# -- errors ------------------------------------------------------------------


class ProtocolError(Exception):
    """A body that is not a well-formed, correctly signed sif_magic message."""


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


# -- signing -----------------------------------------------------------------


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
    if not hmac.compare_digest(sig, sign(key, kind, body)):
        theirs, ours = header_str(headers, HDR_KEY_ID), key_id(key)
        if theirs and theirs != ours:
            raise ForeignKeyError(kind, theirs, ours)
        raise ProtocolError(f"bad signature on {kind!r} message (forged or corrupted)")


def headers_for(key: bytes, kind: str, body: bytes, **extra: Any) -> dict[str, Any]:
    headers = {HDR_VERSION: VERSION, HDR_SIG: sign(key, kind, body), HDR_KEY_ID: key_id(key)}
    headers.update(extra)
    return headers


# -- framing -----------------------------------------------------------------
# A binary body is: MAGIC, then length-prefixed parts (u32 big endian length).
# The first part is always UTF-8 JSON metadata; the others are opaque bytes.

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
    missing = [n for n in names if n not in meta]
    if missing:
        raise ProtocolError(f"message lacks fields {missing}")


# -- task --------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A chunk of calls of one job.

    ``func`` is the cloudpickled function (identical for every chunk of a job,
    so workers cache it by ``func_hash``); ``args`` is the cloudpickled list of
    this chunk's items, in the order of ``calls`` (the calls' indices in the job).
    """

    job_id: str
    chunk: int
    calls: list[int]
    reply_to: str
    func: bytes
    args: bytes
    func_hash: str = ""
    star: bool = False  # call f(*item) instead of f(item)
    timeout: float | None = None
    retries: int = 0
    max_lost: int = 3
    env: dict[str, str] = field(default_factory=dict)
    python: str = ""  # "3.11" of the client
    cloudpickle: str = ""  # cloudpickle version of the client
    client: str = ""  # session id of the client, for logs
    only: list[int] | None = None  # positions of ``calls`` to run (after a split); None: all
    lost: int = 0  # from the HDR_LOST header, not the body

    def encode(self) -> bytes:
        meta = {
            "job": self.job_id,
            "chunk": self.chunk,
            "calls": self.calls,
            "reply_to": self.reply_to,
            "func_hash": self.func_hash,
            "star": self.star,
            "timeout": self.timeout,
            "retries": self.retries,
            "max_lost": self.max_lost,
            "env": self.env,
            "python": self.python,
            "cloudpickle": self.cloudpickle,
            "client": self.client,
        }
        if self.only is not None:
            meta["only"] = self.only
        return pack(meta, self.func, self.args)

    @classmethod
    def decode(cls, body: bytes, lost: int = 0) -> Task:
        meta, (func, args) = unpack(body, 2)
        _require(meta, "job", "chunk", "calls", "reply_to")
        calls = meta["calls"]
        if not isinstance(calls, list) or not all(isinstance(c, int) for c in calls):
            raise ProtocolError("task 'calls' must be a list of integers")
        return cls(
            job_id=str(meta["job"]),
            chunk=int(meta["chunk"]),
            calls=calls,
            reply_to=str(meta["reply_to"]),
            func=bytes(func),
            args=bytes(args),
            func_hash=str(meta.get("func_hash", "")),
            star=bool(meta.get("star", False)),
            timeout=meta.get("timeout"),
            retries=int(meta.get("retries", 0)),
            max_lost=int(meta.get("max_lost", 3)),
            env=dict(meta.get("env") or {}),
            python=str(meta.get("python", "")),
            cloudpickle=str(meta.get("cloudpickle", "")),
            client=str(meta.get("client", "")),
            only=meta.get("only"),
            lost=lost,
        )


# -- results -----------------------------------------------------------------


@dataclass
class CallResult:
    """The outcome of one call, as a worker reports it.

    ``value`` is the pickled return value (status done) or the pickled
    exception, if it could be pickled (status failed); ``error`` holds the
    exception's type, message and traceback frames as plain data, so the client
    can render it even when the exception class does not exist in the kernel
    (``{"type", "message", "frames": [[file, line, function, source], ...],
    "codes": [key of each frame's code, ...]}``, see docs/protocol.md).
    """

    index: int
    status: int  # DONE, FAILED or CANCELLED
    value: bytes = b""
    error: dict[str, Any] | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    t_start: float = 0.0
    t_end: float = 0.0
    attempt: int = 1
    worker: str = ""
    host: str = ""
    pid: int = 0
    dropped: int = 0  # bytes of output dropped from the head (bounded buffers)


class ResultSegment:
    """Outcomes of some calls of one worker process, column by column.

    The unit results travel in, from the slot that ran the calls to the job
    that holds them: nothing in between builds an object per call, and the
    worker never unpickles anything of it. ``indices`` are the calls' job
    indices; ``status`` and ``attempts`` one byte per call (status SKIP: no
    outcome here, the call is being run again); ``times`` ``t_start, t_end``
    per call; ``values`` one pickle of the list of the calls' return values
    (None where a call has none). ``extra`` holds what only some calls have,
    by position in the segment: ``(error, stdout, stderr, dropped, blob)`` of
    calls that failed or wrote output; ``blob``, when not empty, is the call's
    own pickle (the exception of a failed call; a value given one by one).
    """

    __slots__ = (
        "indices", "status", "attempts", "times", "values", "extra", "worker", "host", "pid",
    )  # fmt: skip

    def __init__(
        self,
        indices: array,
        status: bytes,
        attempts: bytes,
        times: array,
        values: bytes,
        extra: dict[int, tuple[dict[str, Any] | None, bytes, bytes, int, bytes]] | None = None,
        worker: str = "",
        host: str = "",
        pid: int = 0,
    ) -> None:
        self.indices = indices  # array('q')
        self.status = status
        self.attempts = attempts
        self.times = times  # array('d'), 2 per call
        self.values = values
        self.extra = extra or {}
        self.worker = worker
        self.host = host
        self.pid = pid

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def outcomes(self) -> int:
        """Calls with an outcome in this segment (not SKIP)."""
        return len(self.indices) - self.status.count(SKIP)

    @classmethod
    def of(cls, results: list[CallResult]) -> list[ResultSegment]:
        """Segments (one per worker process) of per-call results: for the rare paths
        (failures decided by the pool, cancels, tests) that build results one by one.
        Each call's ``value`` (its own pickle) travels as its ``blob``."""
        groups: dict[tuple[str, str, int], list[CallResult]] = {}
        for r in results:
            groups.setdefault((r.worker, r.host, r.pid), []).append(r)
        out = []
        for (worker, host, pid), rs in groups.items():
            times = array("d")
            for r in rs:
                times.append(r.t_start)
                times.append(r.t_end)
            extra = {
                k: (r.error, r.stdout, r.stderr, r.dropped, r.value)
                for k, r in enumerate(rs)
                if r.error is not None or r.stdout or r.stderr or r.dropped or r.value
            }
            out.append(
                cls(
                    array("q", [r.index for r in rs]),
                    bytes(r.status for r in rs),
                    bytes(min(255, max(1, r.attempt)) for r in rs),
                    times,
                    pickle.dumps([None] * len(rs), protocol=5),
                    extra,
                    worker,
                    host,
                    pid,
                )
            )
        return out

    def results(self) -> list[CallResult]:
        """One CallResult per call (``value``: its own pickle). Unpickles ``values``:
        for tests and clients, never on a worker."""
        decoded = pickle.loads(self.values) if self.values else [None] * len(self)
        out = []
        for k, i in enumerate(self.indices):
            error, stdout, stderr, dropped, blob = self.extra.get(k, (None, b"", b"", 0, b""))
            if not blob and self.status[k] == DONE:
                blob = pickle.dumps(decoded[k], protocol=5)
            out.append(
                CallResult(
                    index=i,
                    status=self.status[k],
                    value=blob,
                    error=error,
                    stdout=stdout,
                    stderr=stderr,
                    t_start=self.times[2 * k],
                    t_end=self.times[2 * k + 1],
                    attempt=self.attempts[k],
                    worker=self.worker,
                    host=self.host,
                    pid=self.pid,
                    dropped=dropped,
                )
            )
        return out


def consecutive(indices: array) -> bool:
    """Whether ``indices`` are ``a, a+1, ..., a+n-1`` (the usual segment), at C speed."""
    n = len(indices)
    if not n or indices[-1] != indices[0] + n - 1:
        return False
    return n <= 2 or indices == array("q", range(indices[0], indices[0] + n))


def _le(a: array) -> bytes:
    """An array's bytes, little endian whatever this machine is."""
    if _BIG_ENDIAN:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _from_le(typecode: str, data: memoryview | bytes, n: int, what: str) -> array:
    a = array(typecode)
    if len(data) != n * a.itemsize:
        raise ProtocolError(f"result batch: {what} has {len(data)} bytes for {n} calls")
    a.frombytes(data)
    if _BIG_ENDIAN:
        a.byteswap()
    return a


_BIG_ENDIAN = sys.byteorder == "big"


class ResultBatch:
    """Results of one job from one worker: segments, columns concatenated.

    Body: meta ``{"job", "chunk", "final", "segs": [[n, worker, host, pid,
    values_len], ...], "extra": {"<position>": [error | null, stdout_len,
    stderr_len, dropped, blob_len]}}``, then the parts ``index`` (int64),
    ``status`` (u8), ``attempt`` (u8), ``times`` (float64 pairs), all little
    endian, one entry per call of all segments in order; ``values`` (each
    segment's pickled list, in order); and ``output`` (stdout, stderr and blob
    of each call listed in ``extra``, in position order).
    """

    __slots__ = ("job_id", "chunk", "segments", "final")

    def __init__(
        self,
        job_id: str,
        chunk: int,
        segments: list[ResultSegment] | list[CallResult],
        final: bool = False,
    ) -> None:
        if segments and isinstance(segments[0], CallResult):
            segments = ResultSegment.of(segments)  # type: ignore[arg-type]
        self.job_id = job_id
        self.chunk = chunk
        self.segments: list[ResultSegment] = segments  # type: ignore[assignment]
        self.final = final

    @property
    def results(self) -> list[CallResult]:
        return [r for seg in self.segments for r in seg.results()]

    def __len__(self) -> int:
        return sum(len(s) for s in self.segments)

    def encode(self) -> bytes:
        segs = self.segments
        extra: dict[str, list] = {}
        output: list[bytes] = []
        base = 0
        for seg in segs:
            for k in sorted(seg.extra):
                error, out, err, dropped, blob = seg.extra[k]
                extra[str(base + k)] = [error, len(out), len(err), dropped, len(blob)]
                output += (out, err, blob)
            base += len(seg)
        meta = {
            "job": self.job_id,
            "chunk": self.chunk,
            "final": self.final,
            "segs": [[len(s), s.worker, s.host, s.pid, len(s.values)] for s in segs],
            "extra": extra,
        }
        if len(segs) == 1:
            s = segs[0]
            cols = [_le(s.indices), s.status, s.attempts, _le(s.times), s.values]
        else:
            cols = [
                b"".join(_le(s.indices) for s in segs),
                b"".join(s.status for s in segs),
                b"".join(s.attempts for s in segs),
                b"".join(_le(s.times) for s in segs),
                b"".join(s.values for s in segs),
            ]
        return pack(meta, *cols, b"".join(output))

    @classmethod
    def decode(cls, body: bytes) -> ResultBatch:
        meta, (index, status, attempt, times, values, output) = unpack(body, 6)
        _require(meta, "job", "chunk", "segs")
        try:
            segs = meta["segs"]
            n = sum(int(s[0]) for s in segs)
            indices = _from_le("q", index, n, "index")
            t = _from_le("d", times, 2 * n, "times")
            if len(status) != n or len(attempt) != n:
                raise ProtocolError("result batch: status/attempt columns do not match")
            if sum(int(s[4]) for s in segs) != len(values):
                raise ProtocolError("result batch lengths do not match its data")
            extras: dict[int, tuple] = {}
            pos = 0
            extra_meta = meta.get("extra") or {}
            for key in sorted(extra_meta, key=int):
                error, nout, nerr, dropped, nblob = extra_meta[key]
                parts = []
                for size in (int(nout), int(nerr), int(nblob)):
                    if size < 0 or pos + size > len(output):
                        raise ProtocolError("result batch output lengths do not match its data")
                    parts.append(bytes(output[pos : pos + size]))
                    pos += size
                if error is not None and not isinstance(error, dict):
                    raise ProtocolError("result batch: an error is not an object")
                extras[int(key)] = (error, parts[0], parts[1], int(dropped), parts[2])
            if pos != len(output):
                raise ProtocolError("result batch output lengths do not match its data")
            segments = []
            k0 = vpos = 0
            for seg_n, worker, host, pid, nvalues in segs:
                seg_n, nvalues = int(seg_n), int(nvalues)
                if seg_n < 0 or nvalues < 0:
                    raise ProtocolError("result batch: a negative segment")
                k1 = k0 + seg_n
                segments.append(
                    ResultSegment(
                        indices[k0:k1],
                        bytes(status[k0:k1]),
                        bytes(attempt[k0:k1]),
                        t[2 * k0 : 2 * k1],
                        bytes(values[vpos : vpos + nvalues]),
                        {k - k0: v for k, v in extras.items() if k0 <= k < k1},
                        str(worker),
                        str(host),
                        int(pid),
                    )
                )
                k0, vpos = k1, vpos + nvalues
        except (IndexError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed result batch: {e}") from None
        return cls(str(meta["job"]), int(meta["chunk"]), segments, bool(meta.get("final")))


# -- events ------------------------------------------------------------------


@dataclass(frozen=True)
class EventBatch:
    """What one worker saw of one job during one flush interval.

    ``states`` maps a state name to compressed call-index ranges ``[[a, b], ...]``
    (inclusive) that entered that state. Only the last state of a call within
    the interval is sent. ``calls`` carries per-call details for calls that
    started or ended in the interval: ``[index, attempt, t_start, t_end]``.
    ``logs`` is ``[[index, stream, text], ...]`` with stream 1 (stdout) or 2
    (stderr), in the order written. ``notes`` holds free text per call, such as
    why a call is retrying (``{"17": "worker lost"}``).
    """

    job_id: str
    worker: str
    host: str
    t: float
    states: dict[str, list[list[int]]] = field(default_factory=dict)
    calls: list[list[Any]] = field(default_factory=list)
    logs: list[list[Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "job": self.job_id,
                "worker": self.worker,
                "host": self.host,
                "t": self.t,
                "states": self.states,
                "calls": self.calls,
                "logs": self.logs,
                "notes": self.notes,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> EventBatch:
        d = _json_object(body)
        _require(d, "job", "worker", "t")
        states = d.get("states") or {}
        if not isinstance(states, dict) or any(k not in STATE_CODES for k in states):
            raise ProtocolError("events carry an unknown state")
        return cls(
            job_id=str(d["job"]),
            worker=str(d["worker"]),
            host=str(d.get("host", "")),
            t=float(d["t"]),
            states=states,
            calls=list(d.get("calls") or []),
            logs=list(d.get("logs") or []),
            notes=dict(d.get("notes") or {}),
        )


def compress_ranges(indices: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7, 9, 10] -> [[1, 3], [7, 7], [9, 10]]."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        elif not out or i > out[-1][1]:
            out.append([i, i])
    return out


def expand_ranges(ranges: list[list[int]]) -> range | list[int]:
    if len(ranges) == 1:
        a, b = ranges[0]
        return range(int(a), int(b) + 1)
    return [i for a, b in ranges for i in range(int(a), int(b) + 1)]


# -- worker presence -----------------------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    worker: str
    host: str
    pid: int
    runtime: str
    slots: int
    busy: int
    python: str
    cloudpickle: str
    sif_magic: str
    t: float
    started: float = 0.0
    done: int = 0
    failed: int = 0
    container: str = ""  # e.g. "singularity instance://w1", "none"
    slurm_job: str = ""
    interval: float = 2.0
    state: str = "up"  # up | bye

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> Heartbeat:
        d = _json_object(body)
        _require(d, "worker", "host", "pid", "runtime", "slots", "t")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:
            raise ProtocolError(f"malformed heartbeat: {e}") from None


# -- control -----------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """``op`` is ``cancel`` (job_id, optional calls), ``ping`` (answer with a
    heartbeat now) or ``shutdown`` (worker id or runtime, or everyone)."""

    op: str
    job_id: str = ""
    calls: list[int] | None = None
    worker: str = ""
    runtime: str = ""

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> Control:
        d = _json_object(body)
        _require(d, "op")
        if d["op"] not in ("cancel", "ping", "shutdown"):
            raise ProtocolError(f"unknown control op {d['op']!r}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _json_object(body: bytes) -> dict:
    try:
        d = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"body is not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ProtocolError("body is not a JSON object")
    return d
