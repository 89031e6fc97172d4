"""A run of calls: per-call states, results in order, logs, futures.

A Job is plain state. Backends fold what workers report into it
(``apply_segments`` / ``apply_batch`` for results, which decide a call's outcome;
``apply_events`` for the monitoring stream, which shows progress and live
logs); displays read it. Nothing here touches a widget or a connection.
"""

from __future__ import annotations

import collections
import concurrent.futures
import pickle
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import CallTimeoutError, CancelledError, Frame, RemoteError, WorkerLostError
from ..protocol import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    SKIP,
    STATE_CODES,
    STATE_NAMES,
    TERMINAL,
    EventBatch,
    ProtocolError,
    ResultBatch,
    ResultSegment,
    consecutive,
)

LOG_BYTES_PER_CALL = 256 * 1024
LOG_BYTES_PER_JOB = 64 * 1024 * 1024
RECENT_LINES = 2000  # lines of all calls, interleaved, for the "all calls" log view
_ONE = b"\x01"
# a status byte that is not an outcome is taken for "failed"; attempt 0 for 1
_STATUS_FIX = bytes(c if c in TERMINAL else FAILED for c in range(256))
_ATTEMPT_FIX = b"\x01" + bytes(range(1, 256))
_NOT_DONE = bytes(int(c != DONE) for c in range(256))
# per event state: what a call's state becomes (terminal states stay)
_SHOW = [
    bytes(c if c in TERMINAL else (RUNNING if s == CANCELLED else s) for c in range(256))
    for s in range(len(STATE_NAMES))
]
_ERROR_TYPES = {
    "sif_magic.errors.CallTimeoutError": CallTimeoutError,
    "sif_magic.errors.WorkerLostError": WorkerLostError,
}


class _Block:
    """The values of one result segment, kept pickled as they came: unpickled (the
    whole list at once) only when asked for (``results()``, a future), never
    while folding."""

    __slots__ = ("indices", "values", "status", "own", "first", "_list", "_pos")

    def __init__(self, seg: ResultSegment, contiguous: bool) -> None:
        self.indices = seg.indices
        self.values = seg.values
        self.status = seg.status
        # a call's own pickle: the exception of a failed call, a value sent alone
        self.own = {k: e[4] for k, e in seg.extra.items() if e[4]} if seg.extra else {}
        self.first = seg.indices[0] if contiguous else -1
        self._list: list[Any] | None = None
        self._pos: dict[int, int] | None = None

    def position(self, i: int) -> int:
        if self.first >= 0:
            return i - self.first
        if self._pos is None:
            self._pos = {}
            for k, j in enumerate(self.indices):
                self._pos.setdefault(j, k)  # the first of a call wins, as in the job
        return self._pos[i]

    def decoded(self) -> list[Any]:
        if self._list is None:
            values = pickle.loads(self.values) if self.values else None
            if not isinstance(values, list) or len(values) != len(self.indices):
                raise ProtocolError("a result segment's values do not match its calls")
            self._list = values
        return self._list

    def value(self, k: int) -> Any:
        own = self.own.get(k)
        return pickle.loads(own) if own else self.decoded()[k]

    def raw(self, i: int) -> bytes:
        """Call ``i``'s own pickle (a failed call's exception), b"" if none."""
        return self.own.get(self.position(i), b"")


class CallLog:
    """Bounded output of one call: ``entries`` of (stream, text), oldest dropped first."""

    __slots__ = ("entries", "size", "dropped", "seen")

    def __init__(self) -> None:
        self.entries: list[tuple[int, str]] = []
        self.size = 0
        self.dropped = 0
        self.seen = {1: 0, 2: 0}  # characters received per stream, dropped ones included

    def add(self, stream: int, text: str) -> int:
        self.entries.append((stream, text))
        self.size += len(text)
        self.seen[stream] = self.seen.get(stream, 0) + len(text)
        freed = 0
        while self.size > LOG_BYTES_PER_CALL and len(self.entries) > 1:
            _, old = self.entries.pop(0)
            self.size -= len(old)
            self.dropped += len(old)
            freed += len(old)
        return len(text) - freed


class Job:
    """A run of ``n`` calls of one function.

    ``results()`` returns the values in input order; ``wait()``, ``done()``,
    ``cancel()`` and ``futures`` behave like concurrent.futures. ``states``
    holds one state code per call (see ``protocol.STATE_NAMES``).
    """

    def __init__(
        self,
        job_id: str,
        n: int,
        *,
        name: str = "",
        errors: str = "raise",
        runtime: str = "",
        backend: Any = None,
        origins: dict[str, str] | None = None,
    ) -> None:
        self.job_id = job_id
        self.n = n
        self.name = name
        self.errors = errors
        self.runtime = runtime
        self.backend = backend
        # code_key -> real file of the code shipped with the function (see _origins)
        self.origins = origins or {}
        self.states = bytearray(n)
        self.attempts = bytearray(b"\x01" * n)
        self.t_start = array("d", bytes(8 * n))
        self.t_end = array("d", bytes(8 * n))
        self._where = array("H", bytes(2 * n))  # index into self._hosts
        self._hosts: list[tuple[str, str, int]] = [("", "", 0)]
        self._host_ids: dict[tuple[str, str, int], int] = {}
        self._have = bytearray(n)  # 1 once a call has its outcome (the first one wins)
        self._values: list[_Block | None] = [None] * n  # where each call's value is
        self._blocks: list[_Block] = []
        self._errors: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, str] = {}
        self.logs: dict[int, CallLog] = {}
        self.recent: collections.deque[tuple[int, int, str]] = collections.deque(
            maxlen=RECENT_LINES
        )
        self.log_bytes = 0
        self.log_dropped = 0
        self.log_seq = 0  # bumped whenever a line is added (views redraw only then)
        self.counts = [0] * len(STATE_NAMES)
        self.counts[QUEUED] = n
        self.final = 0  # calls with an outcome (done, failed or cancelled)
        self.duplicates = 0  # results that arrived twice (after a redelivery) and were dropped
        self.event_batches = 0  # monitoring batches folded in (0 when not following live)
        self.created = time.time()
        self.finished_at: float | None = None
        self.version = 0  # bumped on every change: displays redraw when it moves
        self.broker_down = False
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._futures: list[concurrent.futures.Future] | None = None
        self._decoded: list[Any] | None = None
        self._callbacks: list[Callable[[Job], None]] = []
        self.cancel_requested = False
        if n == 0:
            self._finish()

    # -- folding -------------------------------------------------------------
    def _set_state(self, i: int, state: int) -> None:
        old = self.states[i]
        if old != state:
            self.counts[old] -= 1
            self.counts[state] += 1
            self.states[i] = state

    def _host_id(self, worker: str, host: str, pid: int) -> int:
        key = (worker, host, pid)
        hid = self._host_ids.get(key)
        if hid is None:
            hid = len(self._hosts)
            if hid > 65535:
                return 0
            self._hosts.append(key)
            self._host_ids[key] = hid
        return hid

    def apply_batch(self, batch: ResultBatch) -> None:
        self.apply_segments(batch.segments)

    def apply_segments(self, segments: list[ResultSegment]) -> None:
        """Record outcomes; the first outcome of a call wins, later ones are dropped.

        The hot path of every run: a segment of consecutive calls none of which has
        an outcome yet (nearly all of them) is folded with slice operations on the
        state arrays, nothing per call; other segments call by call."""
        with self._lock:
            applied: list[int] = []
            for seg in segments:
                if len(seg):
                    self._apply(seg, applied)
            if self._futures is not None:
                for i in applied:
                    self._resolve_future(i)
            self.version += 1
            if self.final >= self.n and self.finished_at is None:
                self._finish()

    def _apply(self, seg: ResultSegment, applied: list[int]) -> None:
        idx, n = seg.indices, len(seg)
        a = idx[0]
        b = a + n
        contiguous = (
            SKIP not in seg.status
            and 0 <= a
            and b <= self.n
            and consecutive(idx)
            and self._have.find(1, a, b) < 0
            and not (self.cancel_requested and self.states.find(CANCELLED, a, b) >= 0)
        )
        hid = self._host_id(seg.worker, seg.host, seg.pid)
        status = seg.status.translate(_STATUS_FIX)
        attempts = seg.attempts.translate(_ATTEMPT_FIX)
        block = _Block(seg, contiguous)
        if contiguous:
            self._blocks.append(block)
            states, counts = self.states, self.counts
            old = states[a:b]
            for code in range(len(counts)):
                c = old.count(code)
                if c:
                    counts[code] -= c
            states[a:b] = status
            for code in TERMINAL:
                counts[code] += status.count(code)
            self.attempts[a:b] = attempts
            self.t_start[a:b] = seg.times[0::2]
            self.t_end[a:b] = seg.times[1::2]
            self._where[a:b] = array("H", [hid]) * n
            self._values[a:b] = [block] * n
            self._have[a:b] = _ONE * n
            self.final += n
            if self._futures is not None:
                applied.extend(range(a, b))
            for k, (error, out, err, dropped, _) in seg.extra.items():
                if 0 <= k < n:
                    self._settle_extra(a + k, error, out, err, dropped)
            return
        # call by call: duplicates after a redelivery, a split chunk, cancelled calls
        times, extra = seg.times, seg.extra
        have, states, n_calls = self._have, self.states, self.n
        guard, raw_status = self.cancel_requested, seg.status
        kept = False  # the block is kept only if a call of it was applied
        for k, i in enumerate(idx):
            if not 0 <= i < n_calls or raw_status[k] == SKIP:
                continue
            if have[i] or (guard and states[i] == CANCELLED):
                self.duplicates += 1
                continue
            have[i] = 1
            self._set_state(i, status[k])
            self.attempts[i] = attempts[k]
            self.t_start[i] = times[2 * k]
            self.t_end[i] = times[2 * k + 1]
            self._where[i] = hid
            self._values[i] = block
            if not kept:
                self._blocks.append(block)
                kept = True
            self.final += 1
            applied.append(i)
            if k in extra:
                self._settle_extra(i, *extra[k][:4])

    def _settle_extra(
        self, i: int, error: dict[str, Any] | None, out: bytes, err: bytes, dropped: int
    ) -> None:
        if error is not None:
            self._errors[i] = error
        if out or err:
            self._settle_log(i, out, err, dropped)

    def _settle_log(self, i: int, stdout: bytes, stderr: bytes, dropped: int) -> None:
        """The result carries the call's whole output (its tail if it was long): add
        what the live lines had not brought yet, so both views end complete."""
        log = self.logs.get(i)
        if log is None:
            log = self.logs[i] = CallLog()
        log.dropped = max(log.dropped, dropped)
        for stream, data in ((1, stdout), (2, stderr)):
            if not data:
                continue
            text = data.decode("utf-8", "replace")
            # ``text`` starts ``dropped`` bytes into the output when the head was cut
            new = text[max(0, log.seen.get(stream, 0) - dropped) :]
            if new:
                self.log_bytes += log.add(stream, new)
                self.recent.append((i, stream, new))
                self.log_seq += 1

    def apply_events(self, batch: EventBatch) -> None:
        """Fold a monitoring batch: progress states, attempts, notes and live logs."""
        with self._lock:
            self.event_batches += 1
            states, counts, last = self.states, self.counts, self.n - 1
            for name, ranges in batch.states.items():
                # a call with an outcome has a terminal state and keeps it; the others
                # take the event's state (outcomes come with results: an event only
                # shows one is near, and a cancel shows as running until it is one)
                show = _SHOW[STATE_CODES[name]]
                for a, b in ranges:
                    a, b = max(int(a), 0), min(int(b), last)
                    if a > b:
                        continue
                    old = states[a : b + 1]
                    new = old.translate(show)
                    if new != old:
                        for code in range(len(counts)):
                            counts[code] += new.count(code) - old.count(code)
                        states[a : b + 1] = new
            for entry in batch.calls:
                i, attempt, t0 = int(entry[0]), int(entry[1]), float(entry[2])
                if 0 <= i < self.n and not self._have[i]:
                    self.attempts[i] = min(255, max(1, attempt))
                    self.t_start[i] = t0
                    self._where[i] = self._host_id(batch.worker, batch.host, 0)
            for key, note in batch.notes.items():
                self.notes[int(key)] = note
            for entry in batch.logs:
                self._add_log(int(entry[0]), int(entry[1]), str(entry[2]))
            self.version += 1

    def _add_log(self, i: int, stream: int, text: str) -> None:
        if not 0 <= i < self.n or self._have[i]:
            return  # the result (with the whole output) is already here
        if self.log_bytes > LOG_BYTES_PER_JOB:
            self.log_dropped += len(text)
            return
        log = self.logs.get(i)
        if log is None:
            log = self.logs[i] = CallLog()
        self.log_bytes += log.add(stream, text)
        self.recent.append((i, stream, text))
        self.log_seq += 1

    def _finish(self) -> None:
        self.finished_at = time.time()
        # callbacks first (a display pushes its final state), then wake the waiters: code
        # that waited for the job never sees a view that still shows it running
        for cb in list(self._callbacks):
            try:
                cb(self)
            except Exception:  # noqa: BLE001 - a display must not break the job
                pass
        self._done.set()

    def mark_cancelled(self) -> None:
        """Give every call without an outcome the outcome 'cancelled' (client side)."""
        now = time.time()
        with self._lock:
            self.cancel_requested = True
            for i in range(self.n):
                if not self._have[i]:
                    self._have[i] = 1
                    self._set_state(i, CANCELLED)
                    self.t_end[i] = now
                    self.final += 1
                    if self._futures is not None:
                        self._resolve_future(i)
            self.version += 1
            if self.finished_at is None:
                self._finish()

    # -- asking ----------------------------------------------------------------
    def done(self) -> bool:
        return self.finished_at is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every call has an outcome; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    def cancel(self) -> bool:
        """Drop queued calls and kill running ones on the workers."""
        if self.done():
            return False
        if self.backend is not None:
            self.backend.cancel(self)
        return True

    def close(self) -> None:
        """Forget this job on the broker (its kept results go); cancels it if still running."""
        if not self.done():
            self.cancel()
        release = getattr(self.backend, "release", None)
        if release is not None:
            release(self)

    def add_done_callback(self, fn: Callable[[Job], None]) -> None:
        with self._lock:
            if self.finished_at is None:
                self._callbacks.append(fn)
                return
        fn(self)

    @property
    def elapsed(self) -> float:
        return (self.finished_at or time.time()) - self.created

    def count(self, state: str) -> int:
        return self.counts[STATE_CODES[state]]

    def state_counts(self) -> dict[str, int]:
        with self._lock:
            return {name: self.counts[code] for code, name in enumerate(STATE_NAMES)}

    def state(self, i: int) -> str:
        return STATE_NAMES[self.states[i]]

    @property
    def failed(self) -> list[int]:
        with self._lock:
            states, out, i = self.states, [], self.states.find(FAILED)
            while i >= 0:
                out.append(i)
                i = states.find(FAILED, i + 1)
            return out

    def describe_call(self, i: int) -> dict[str, Any]:
        with self._lock:
            worker, host, pid = self._hosts[self._where[i]]
            t0, t1 = self.t_start[i], self.t_end[i]
            return {
                "index": i,
                "state": STATE_NAMES[self.states[i]],
                "attempt": self.attempts[i],
                "worker": worker,
                "host": host,
                "pid": pid,
                "t_start": t0,
                "t_end": t1,
                "duration": (t1 - t0) if t0 and t1 else (time.time() - t0 if t0 else None),
                "note": self.notes.get(i, ""),
            }

    def call_logs(self, i: int) -> tuple[list[tuple[int, str]], int]:
        """(entries, dropped bytes) of call ``i``'s output so far."""
        with self._lock:
            log = self.logs.get(i)
            return (list(log.entries), log.dropped) if log else ([], 0)

    def output(self, i: int) -> str:
        """Everything call ``i`` printed (stdout and stderr) as one string."""
        return "".join(text for _, text in self.call_logs(i)[0])

    def error(self, i: int) -> BaseException | None:
        """The exception of call ``i`` if it failed (a RemoteError, a timeout, ...)."""
        decoded = self._decoded
        if decoded is not None:
            value = decoded[i]
            return value if isinstance(value, BaseException) and self.states[i] != DONE else None
        with self._lock:
            state = self.states[i]
            info = self._errors.get(i)
            raw = self._raw(i)
            worker, host, _ = self._hosts[self._where[i]]
        if state == CANCELLED:
            return CancelledError(f"call {i} was cancelled")
        if state != FAILED:
            return None
        info = info or {"type": "Error", "message": "failed", "frames": []}
        etype = info.get("type", "Error")
        special = _ERROR_TYPES.get(etype)
        if special is not None:
            return special(f"{info.get('message', '')} (host {host or '?'})")
        original = None
        if raw:
            try:
                original = pickle.loads(raw)
            except Exception:  # noqa: BLE001 - the class may not exist here
                original = None
        return RemoteError(
            etype,
            info.get("message", ""),
            _locate(info.get("frames") or [], info.get("codes") or [], self.origins),
            index=i,
            host=host,
            worker=worker,
            exception=original if isinstance(original, BaseException) else None,
        )

    def results(self, timeout: float | None = None) -> list[Any]:
        """The values in input order; raises the first failure unless errors='collect'."""
        if not self.wait(timeout):
            raise TimeoutError(f"job {self.job_id} not done after {timeout} s")
        values = self._decode()
        if self.errors == "raise":
            for i in _not_done(self.states):
                raise values[i]
        return values

    def _raw(self, i: int) -> bytes:
        """Call ``i``'s pickled value (or pickled exception), b"" if it has none."""
        block = self._values[i]
        return block.raw(i) if block is not None else b""

    def _value(self, i: int) -> Any:
        block = self._values[i]
        return block.value(block.position(i)) if block is not None else None

    def _decode(self) -> list[Any]:
        with self._lock:
            if self._decoded is not None:
                return self._decoded
            states, where, blocks = self.states, self._values, self._blocks
        out: list[Any] = [None] * self.n
        n = self.n
        for block in blocks:
            values = block.decoded()
            first, m = block.first, len(block.indices)
            if (
                first >= 0
                and not block.own
                and block.status.count(DONE) == m
                and where[first] is block
                and where[first + m - 1] is block
            ):
                out[first : first + m] = values  # consecutive calls, all done, none twice
                continue
            for k, i in enumerate(block.indices):
                if (
                    0 <= i < n
                    and where[i] is block
                    and states[i] == DONE
                    and block.position(i) == k
                ):
                    out[i] = block.value(k)
        for i in _not_done(states):
            out[i] = self.error(i)
        with self._lock:
            self._decoded = out
            # the pickled bytes are not needed any more
            self._values = [None] * self.n
            self._blocks = []
        return out

    # -- futures ---------------------------------------------------------------
    @property
    def futures(self) -> list[concurrent.futures.Future]:
        """One concurrent.futures.Future per call (made on first use)."""
        with self._lock:
            if self._futures is None:
                self._futures = [concurrent.futures.Future() for _ in range(self.n)]
                for f in self._futures:
                    f.set_running_or_notify_cancel()
                for i in range(self.n):
                    if self.states[i] in TERMINAL and self._have[i]:
                        self._resolve_future(i)
            return self._futures

    def _resolve_future(self, i: int) -> None:
        fut = self._futures[i]  # type: ignore[index]
        if fut.done():
            return
        state = self.states[i]
        if state == DONE:
            try:
                value = self._decoded[i] if self._decoded is not None else self._value(i)
                fut.set_result(value)
            except Exception as e:  # noqa: BLE001
                fut.set_exception(e)
        else:
            fut.set_exception(self.error(i))  # type: ignore[arg-type]

    # -- display ---------------------------------------------------------------
    def summary(self) -> str:
        c = self.state_counts()
        parts = [f"{c['done']} done"]
        for name in ("failed", "cancelled", "running", "retrying", "queued", "lost"):
            if c[name]:
                parts.append(f"{c[name]} {name}")
        status = "finished" if self.done() else "running"
        return (
            f"sif_magic job {self.job_id} ({self.n} calls, {status} in {self.elapsed:.1f} s): "
            + ", ".join(parts)
        )

    def __repr__(self) -> str:
        return f"<{self.summary()}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..display import job_mimebundle

        return job_mimebundle(self)


def _not_done(states: bytearray) -> Iterator[int]:
    """Indices whose state is not done, in order (found at C speed: a job of a
    million calls that all succeeded is scanned in a millisecond)."""
    marks = states.translate(_NOT_DONE)
    i = marks.find(1)
    while i >= 0:
        yield i
        i = marks.find(1, i + 1)


def _locate(frames: list, codes: list, origins: dict[str, str]) -> list[Frame]:
    """The worker's frames, each shipped one (its code's key is in ``origins``) in
    the file it came from, with its source line from this kernel (cell code lives
    only here); any other frame keeps the worker's file and line (the client fills
    in a line the worker could not read)."""
    import linecache

    out = []
    for k, (filename, lineno, name, line) in enumerate(frames):
        key = codes[k] if k < len(codes) else None
        origin = origins.get(key) if isinstance(key, str) else None
        if origin is not None:
            filename = origin
            line = linecache.getline(origin, lineno).strip() or line
        elif not line:
            line = linecache.getline(filename, lineno).strip()
        out.append(Frame(filename, lineno, name, line))
    return out
