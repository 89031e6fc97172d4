"""Results: CallResult (one call), ResultSegment (calls of one process, column by
column), ResultBatch (the ``result`` message: segments of one job from one worker).

The encode and decode of ResultBatch are the hot path of a run: they handle columns
(arrays, bytes), never an object per call.

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

import pickle
import sys
from array import array
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

from .framing import ProtocolError, _buffers_of, _require, pack, pack_parts, unpack
from .names import DONE, SKIP


class _ErrorFields(TypedDict):
    type: str
    message: str
    frames: list[list[Any]]


class ErrorRecord(_ErrorFields, total=False):
    """A failed call's exception as plain data (a JSON object on the wire), so the
    client can render it even when the exception's class does not exist there.

    ``type``: the class's wire name (``errors``' table) or ``module.QualName``;
    ``message``: ``str()`` of the exception; ``frames``: its traceback, user frames
    only, ``[file, line, function, source]`` each; ``codes`` (absent from errors
    raised outside a call): the key of each frame's code (docs/protocol.md)."""

    codes: list[str]


class CallExtra(NamedTuple):
    """What only some calls of a ResultSegment have (failed, wrote output, or carry
    their own pickle): ``blob``, when not empty, is that pickle (the exception of a
    failed call; a value given one by one)."""

    error: ErrorRecord | None
    stdout: bytes
    stderr: bytes
    dropped: int  # bytes of output dropped from the head (bounded buffers)
    blob: bytes


_NO_EXTRA = CallExtra(None, b"", b"", 0, b"")


@dataclass
class CallResult:
    """The outcome of one call, as a worker reports it.

    ``value`` is the pickled return value (status done) or the pickled
    exception, if it could be pickled (status failed); ``error`` holds the
    exception's type, message and traceback frames as plain data (ErrorRecord).
    """

    index: int
    status: int  # DONE, FAILED or CANCELLED
    value: bytes = b""
    error: ErrorRecord | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    t_start: float = 0.0
    t_end: float = 0.0
    attempt: int = 1
    worker: str = ""
    host: str = ""
    pid: int = 0
    dropped: int = 0  # bytes of output dropped from the head (bounded buffers)
    devices: str = ""  # the GPUs its process held ("0,1"), "" without any


class ResultSegment:
    """Outcomes of some calls of one worker process, column by column.

    The unit results travel in, from the slot that ran the calls to the job
    that holds them: nothing in between builds an object per call, and the
    worker never unpickles anything of it. ``indices`` are the calls' job
    indices; ``status`` and ``attempts`` one byte per call (status SKIP: no
    outcome here, the call is being run again); ``times`` ``t_start, t_end``
    per call; ``values`` one pickle of the list of the calls' return values
    (None where a call has none). ``extra`` holds what only some calls have, by
    position in the segment: a CallExtra for each call that failed, wrote output
    or carries its own pickle. ``devices``: the GPUs the process held ("0,1"; "" none).
    ``buffers``: the out-of-band buffers of ``values`` (pickle protocol 5: the
    arrays among the values, as raw memory), in order; never copied on the way.
    ``in_order``: its maker knows the indices are ``a, a+1, ...`` (a hint that
    does not travel: ``in_order()`` checks them otherwise).
    """

    __slots__ = (
        "indices", "status", "attempts", "times", "values", "extra", "worker", "host", "pid",
        "devices", "buffers", "known_in_order",
    )  # fmt: skip

    def __init__(
        self,
        indices: array,
        status: bytes,
        attempts: bytes,
        times: array,
        values: bytes,
        extra: dict[int, CallExtra] | None = None,
        worker: str = "",
        host: str = "",
        pid: int = 0,
        devices: str = "",
        buffers: list[Any] | tuple = (),
        in_order: bool = False,
    ) -> None:
        self.indices = indices  # array('q')
        self.known_in_order = in_order
        self.status = status
        self.attempts = attempts
        self.times = times  # array('d'), 2 per call
        self.values = values
        self.extra = extra or {}
        self.worker = worker
        self.host = host
        self.pid = pid
        self.devices = devices
        self.buffers = buffers

    def __len__(self) -> int:
        return len(self.indices)

    def in_order(self) -> bool:
        """Whether the indices are ``a, a+1, ..., a+n-1`` (the usual segment)."""
        return self.known_in_order or consecutive(self.indices)

    @property
    def nbytes(self) -> int:
        """About the bytes it takes in a message: values, their buffers, output."""
        extra = sum(len(e[1]) + len(e[2]) + len(e[4]) for e in self.extra.values())
        return len(self.values) + sum(memoryview(b).nbytes for b in self.buffers) + extra

    @property
    def outcomes(self) -> int:
        """Calls with an outcome in this segment (not SKIP)."""
        return len(self.indices) - self.status.count(SKIP)

    @classmethod
    def of(cls, results: list[CallResult]) -> list[ResultSegment]:
        """Segments (one per worker process) of per-call results: for the rare paths
        (failures decided by the pool, cancels, tests) that build results one by one.
        Each call's ``value`` (its own pickle) travels as its ``blob``."""
        groups: dict[tuple[str, str, int, str], list[CallResult]] = {}
        for r in results:
            groups.setdefault((r.worker, r.host, r.pid, r.devices), []).append(r)
        out = []
        for (worker, host, pid, devices), rs in groups.items():
            times = array("d")
            for r in rs:
                times.append(r.t_start)
                times.append(r.t_end)
            extra = {
                k: CallExtra(r.error, r.stdout, r.stderr, r.dropped, r.value)
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
                    devices,
                )
            )
        return out

    def results(self) -> list[CallResult]:
        """One CallResult per call (``value``: its own pickle). Unpickles ``values``:
        for tests and clients, never on a worker."""
        decoded = (
            pickle.loads(self.values, buffers=self.buffers) if self.values else [None] * len(self)
        )
        out = []
        for k, i in enumerate(self.indices):
            extra = CallExtra._make(self.extra.get(k, _NO_EXTRA))  # a plain 5-tuple too
            blob = extra.blob
            if not blob and self.status[k] == DONE:
                blob = pickle.dumps(decoded[k], protocol=5)
            out.append(
                CallResult(
                    index=i,
                    status=self.status[k],
                    value=blob,
                    error=extra.error,
                    stdout=extra.stdout,
                    stderr=extra.stderr,
                    t_start=self.times[2 * k],
                    t_end=self.times[2 * k + 1],
                    attempt=self.attempts[k],
                    worker=self.worker,
                    host=self.host,
                    pid=self.pid,
                    dropped=extra.dropped,
                    devices=self.devices,
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
    values_len(, devices)], ...], "extra": {"<position>": [error | null, stdout_len,
    stderr_len, dropped, blob_len]}(, "bufs": [count per segment])}``, then the parts
    ``index`` (int64), ``status`` (u8), ``attempt`` (u8), ``times`` (float64
    pairs), all little endian, one entry per call of all segments in order;
    ``values`` (each segment's pickled list, in order); ``output`` (stdout, stderr
    and blob of each call listed in ``extra``, in position order); then each
    segment's out-of-band buffers, in order (``bufs`` absent when none: the bytes
    of a batch without arrays are those of before).
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
        return pack(*self._fields())

    def encode_parts(self) -> list[Any]:
        """The body ``encode`` gives, as its pieces (``framing.pack_parts``): the
        arrays' buffers are not copied into one body."""
        return pack_parts(*self._fields())

    def _fields(self) -> tuple[Any, ...]:
        segs = self.segments
        extra: dict[str, list] = {}
        output: list[bytes] = []
        base = 0
        for seg in segs:
            for k in sorted(seg.extra):
                error, out, err, dropped, blob = seg.extra[k]  # a CallExtra, or a 5-tuple
                extra[str(base + k)] = [error, len(out), len(err), dropped, len(blob)]
                output += (out, err, blob)
            base += len(seg)
        meta = {
            "job": self.job_id,
            "chunk": self.chunk,
            "final": self.final,
            # a segment's devices only when it has some: the bytes of a run without GPUs
            "segs": [
                [
                    len(s),
                    s.worker,
                    s.host,
                    s.pid,
                    len(s.values),
                    *([s.devices] if s.devices else []),
                ]
                for s in segs
            ],
            "extra": extra,
        }
        buffers = [b for s in segs for b in s.buffers]
        if buffers:
            meta["bufs"] = [len(s.buffers) for s in segs]
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
        return (meta, *cols, b"".join(output), *buffers)

    @classmethod
    def decode(cls, body: bytes) -> ResultBatch:
        meta, parts = unpack(body, 6)
        buffers = _buffers_of(meta, parts, 6)
        index, status, attempt, times, values, output = parts[:6]
        _require(meta, "job", "chunk", "segs")
        try:
            segs = meta["segs"]
            counts = meta.get("bufs") or [0] * len(segs)
            if not isinstance(counts, list) or len(counts) != len(segs):
                raise ProtocolError("result batch: 'bufs' must count each segment's buffers")
            n = sum(int(s[0]) for s in segs)
            indices = _from_le("q", index, n, "index")
            t = _from_le("d", times, 2 * n, "times")
            if len(status) != n or len(attempt) != n:
                raise ProtocolError("result batch: status/attempt columns do not match")
            if sum(int(s[4]) for s in segs) != len(values):
                raise ProtocolError("result batch lengths do not match its data")
            extras: dict[int, CallExtra] = {}
            pos, end = 0, len(output)
            extra_meta = meta.get("extra") or {}
            for key in sorted(extra_meta, key=int):
                error, nout, nerr, dropped, nblob = extra_meta[key]
                a = pos + int(nout)  # stdout is output[pos:a], stderr [a:b], blob [b:c]
                b = a + int(nerr)
                c = b + int(nblob)
                if not pos <= a <= b <= c <= end:
                    raise ProtocolError("result batch output lengths do not match its data")
                if error is not None and not isinstance(error, dict):
                    raise ProtocolError("result batch: an error is not an object")
                # tuple.__new__: a CallExtra at half the cost of CallExtra(...) (hot path)
                extras[int(key)] = tuple.__new__(
                    CallExtra,
                    (
                        error,
                        bytes(output[pos:a]),
                        bytes(output[a:b]),
                        int(dropped),
                        bytes(output[b:c]),
                    ),
                )
                pos = c
            if pos != end:
                raise ProtocolError("result batch output lengths do not match its data")
            segments = []
            k0 = vpos = b0 = 0
            for (seg_n, worker, host, pid, nvalues, *devices), nbufs in zip(segs, counts):
                seg_n, nvalues, nbufs = int(seg_n), int(nvalues), int(nbufs)
                if seg_n < 0 or nvalues < 0 or nbufs < 0:
                    raise ProtocolError("result batch: a negative segment")
                k1, b1 = k0 + seg_n, b0 + nbufs
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
                        str(devices[0]) if devices else "",
                        buffers[b0:b1],
                    )
                )
                k0, vpos, b0 = k1, vpos + nvalues, b1
        except (IndexError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed result batch: {e}") from None
        return cls(str(meta["job"]), int(meta["chunk"]), segments, bool(meta.get("final")))
