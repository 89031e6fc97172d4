"""The outcome table of a job: per call its state, attempt, times, where it ran and
where its value is, folded from result segments (and shown progress from events).

Threads: written by the thread that folds the job's results and events (the
transport's I/O thread, or the local pool's threads), and by the kernel thread
when it cancels, always under the owning Job's lock; read under that lock by
the kernel thread (results, futures) and the display's pusher thread (states
for the grid). Owner: the ``Job`` that made the table; nothing else writes it.
One exception: a Block whose values are in a spill file is read by the
read-ahead thread (``ReadAhead``) or by whoever decodes it first, under the
Block's own lock (``Block.load``).
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from ..protocol import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHING,
    LOST,
    QUEUED,
    RETRYING,
    RUNNING,
    SKIP,
    STATE_NAMES,
    TERMINAL,
    ProtocolError,
    ResultSegment,
)
from ..runner import oob, spill

_ONE = b"\x01"
# a status byte that is not an outcome is taken for "failed"; attempt 0 for 1
_STATUS_FIX = bytes(c if c in TERMINAL else FAILED for c in range(256))
_ATTEMPT_FIX = b"\x01" + bytes(range(1, 256))
_NOT_DONE = bytes(int(c != DONE) for c in range(256))

# what a call printed, to hand to the log store: (call, stdout, stderr, bytes dropped)
Printed = tuple[int, bytes, bytes, int]


class Block:
    """The values of one result segment, kept pickled as they came: unpickled (the
    whole list at once) only when asked for (``results()``, a future), never
    while folding. Their arrays are built on the segment's ``buffers`` (the
    memory they came in: ``runner/oob.py``), not copied."""

    __slots__ = (
        "indices",
        "values",
        "buffers",
        "status",
        "own",
        "first",
        "_list",
        "_pos",
        "_loaded",
        "_reading",
        "_home",
    )

    def __init__(self, seg: ResultSegment, contiguous: bool, home: str = "") -> None:
        self.indices = seg.indices
        self.values = seg.values
        self.buffers = seg.buffers  # the arrays' memory, as it came (runner/oob.py)
        self.status = seg.status
        # a call's own pickle: the exception of a failed call, a value sent alone
        self.own = {k: e[4] for k, e in seg.extra.items() if e[4]} if seg.extra else {}
        self.first = seg.indices[0] if contiguous else -1
        self._list: list[Any] | None = None
        self._pos: dict[int, int] | None = None
        # values in a spill file (runner/spill.py): read and checked once, by the read-
        # ahead thread as they arrive or by whoever decodes them first
        self._loaded: tuple[Any, Any] | None = None
        spilled = bool(self.values) and spill.is_reference(self.values)
        self._reading = threading.Lock() if spilled else None
        self._home = home  # the job's spill directory: a file of it goes once decoded

    def position(self, i: int) -> int:
        if self.first >= 0:
            return i - self.first
        if self._pos is None:
            self._pos = {}
            for k, j in enumerate(self.indices):
                self._pos.setdefault(j, k)  # the first of a call wins, as in the job
        return self._pos[i]

    @property
    def spilled(self) -> bool:
        return self._reading is not None

    def load(self) -> tuple[Any, Any]:
        """(pickle of the values, its buffers): from the message, or read from the spill
        file and checked (once: a second thread waits for the first)."""
        if self._reading is None:
            return self.values, self.buffers
        with self._reading:
            if self._loaded is None:
                self._loaded = spill.load_parts(self.values, self.buffers)
            return self._loaded

    def read_ahead(self) -> None:
        """Read the spill file now, unless read or decoded already (the read-ahead
        thread); a file that fails its check fails again, saying so, when decoded."""
        if self._reading is None:
            return
        with self._reading:
            if self._list is None and self._loaded is None:
                try:
                    self._loaded = spill.load_parts(self.values, self.buffers)
                except Exception:  # noqa: BLE001 - raised to whoever decodes it
                    pass

    def decoded(self) -> list[Any]:
        if self._list is None:
            values = oob.loads(*self.load()) if self.values else None
            if not isinstance(values, list) or len(values) != len(self.indices):
                raise ProtocolError("a result segment's values do not match its calls")
            self._list = values
            if self._loaded is not None:  # consumed: its file goes (the job's own only)
                self._loaded = None
                spill.discard(self.values, self._home)
        return self._list

    def value(self, k: int) -> Any:
        own = self.own.get(k)
        return pickle.loads(own) if own else self.decoded()[k]

    def raw(self, i: int) -> bytes:
        """Call ``i``'s own pickle (a failed call's exception), b"" if none."""
        return self.own.get(self.position(i), b"")


class Outcomes:
    """One row per call of a job; the first outcome of a call wins."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.states = bytearray(n)
        self.attempts = bytearray(b"\x01" * n)
        self.t_start = array("d", bytes(8 * n))
        self.t_end = array("d", bytes(8 * n))
        self.where = array("H", bytes(2 * n))  # index into self.hosts
        self.hosts: list[tuple[str, str, int]] = [("", "", 0)]
        self._host_ids: dict[tuple[str, str, int], int] = {}
        self.devices: dict[int, str] = {}  # host id -> the GPUs that process held ("0,1")
        self.have = bytearray(n)  # 1 once a call has its outcome (the first one wins)
        self._values: list[Block | None] = [None] * n  # where each call's value is
        self._blocks: list[Block] = []
        self.errors: dict[int, dict[str, Any]] = {}  # error records of failed calls
        self.counts = [0] * len(STATE_NAMES)
        self.counts[QUEUED] = n
        self.final = 0  # calls with an outcome (done, failed or cancelled)
        self.duplicates = 0  # results that arrived twice (after a redelivery) and were dropped
        self.cancel_requested = False  # results of calls cancelled here are dropped
        self.decoded: list[Any] | None = None  # every call's value or exception, once asked
        self.to_read: list[Block] = []  # blocks whose values are in spill files, new
        self.spill_dir = ""  # the job's: a result file of it goes once its values are decoded

    def _set_state(self, i: int, state: int) -> None:
        old = self.states[i]
        if old != state:
            self.counts[old] -= 1
            self.counts[state] += 1
            self.states[i] = state

    def host_id(self, worker: str, host: str, pid: int) -> int:
        key = (worker, host, pid)
        hid = self._host_ids.get(key)
        if hid is None:
            hid = len(self.hosts)
            if hid > 65535:
                return 0
            self.hosts.append(key)
            self._host_ids[key] = hid
        return hid

    def fold(self, seg: ResultSegment, applied: list[int] | None, printed: list[Printed]) -> None:
        """Record the outcomes of a segment (``applied`` gets the calls that took one,
        ``printed`` what they printed).

        The hot path of every run: a segment of consecutive calls none of which has
        an outcome yet (nearly all of them) is folded with slice operations on the
        state arrays, nothing per call; other segments call by call."""
        idx, n = seg.indices, len(seg)
        a = idx[0]
        b = a + n
        contiguous = (
            SKIP not in seg.status
            and 0 <= a
            and b <= self.n
            and seg.in_order()
            and self.have.find(1, a, b) < 0
            and not (self.cancel_requested and self.states.find(CANCELLED, a, b) >= 0)
        )
        hid = self.host_id(seg.worker, seg.host, seg.pid)
        if seg.devices:
            self.devices[hid] = seg.devices
        status = seg.status.translate(_STATUS_FIX)
        attempts = seg.attempts.translate(_ATTEMPT_FIX)
        block = Block(seg, contiguous, self.spill_dir)
        if contiguous:
            self._blocks.append(block)
            if block.spilled:
                self.to_read.append(block)
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
            self.where[a:b] = array("H", [hid]) * n
            self._values[a:b] = [block] * n
            self.have[a:b] = _ONE * n
            self.final += n
            if applied is not None:
                applied.extend(range(a, b))
            for k, (error, out, err, dropped, _) in seg.extra.items():
                if 0 <= k < n:
                    self._extra(a + k, error, out, err, dropped, printed)
            return
        # call by call: duplicates after a redelivery, a split chunk, cancelled calls
        times, extra = seg.times, seg.extra
        have, states, n_calls = self.have, self.states, self.n
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
            self.where[i] = hid
            self._values[i] = block
            if not kept:
                self._blocks.append(block)
                kept = True
                if block.spilled:  # (a segment of duplicates only is not read at all;
                    self.to_read.append(block)  # its file may be a kept one's: left)
            self.final += 1
            if applied is not None:
                applied.append(i)
            if k in extra:
                self._extra(i, *extra[k][:4], printed)

    def _extra(
        self,
        i: int,
        error: dict[str, Any] | None,
        out: bytes,
        err: bytes,
        dropped: int,
        printed: list[Printed],
    ) -> None:
        if error is not None:
            self.errors[i] = error
        if out or err:
            printed.append((i, out, err, dropped))

    # -- what the monitoring stream shows (calls without an outcome only) ----------
    def show(self, table: bytes, a: int, b: int) -> None:
        """Calls ``a``..``b`` (inclusive) take the state ``table`` maps theirs to."""
        states, counts = self.states, self.counts
        old = states[a : b + 1]
        new = old.translate(table)
        if new != old:
            for code in range(len(counts)):
                counts[code] += new.count(code) - old.count(code)
            states[a : b + 1] = new

    def started(self, i: int, attempt: int, t0: float, hid: int) -> None:
        if 0 <= i < self.n and not self.have[i]:
            self.attempts[i] = min(255, max(1, attempt))
            self.t_start[i] = t0
            self.where[i] = hid

    def mark_lost(self, worker: str) -> list[int]:
        """Calls ``worker`` was running (or retrying, or finishing: ended there, result
        not here), without an outcome, become 'lost' (their worker died; they wait to
        be redelivered); returns them."""
        lost = []
        states, hosts, where, have = self.states, self.hosts, self.where, self.have
        for state in (RUNNING, RETRYING, FINISHING):
            i = states.find(state)
            while i >= 0:
                if not have[i] and hosts[where[i]][0] == worker:
                    self._set_state(i, LOST)
                    lost.append(i)
                i = states.find(state, i + 1)
        return lost

    def cancel_rest(self) -> list[int]:
        """Every call without an outcome gets 'cancelled'; returns those calls."""
        now = time.time()
        self.cancel_requested = True
        out = []
        for i in range(self.n):
            if not self.have[i]:
                self.have[i] = 1
                self._set_state(i, CANCELLED)
                self.t_end[i] = now
                self.final += 1
                out.append(i)
        return out

    # -- asking --------------------------------------------------------------------
    def of_state(self, code: int) -> list[int]:
        """The calls in state ``code``, in order (found at C speed)."""
        states, out, i = self.states, [], self.states.find(code)
        while i >= 0:
            out.append(i)
            i = states.find(code, i + 1)
        return out

    def describe(self, i: int) -> dict[str, Any]:
        hid = self.where[i]
        worker, host, pid = self.hosts[hid]
        t0, t1 = self.t_start[i], self.t_end[i]
        return {
            "devices": self.devices.get(hid, ""),
            "index": i,
            "state": STATE_NAMES[self.states[i]],
            "attempt": self.attempts[i],
            "worker": worker,
            "host": host,
            "pid": pid,
            "t_start": t0,
            "t_end": t1,
            "duration": (t1 - t0) if t0 and t1 else (time.time() - t0 if t0 else None),
        }

    def raw(self, i: int) -> bytes:
        """Call ``i``'s own pickle (a failed call's exception), b"" if it has none."""
        block = self._values[i]
        return block.raw(i) if block is not None else b""

    def unread(self, i: int) -> Block | None:
        """The block of call ``i``'s value if its spill file is not read yet."""
        block = self._values[i]
        if block is not None and block.spilled and block._loaded is None and block._list is None:
            return block
        return None

    def value(self, i: int) -> Any:
        block = self._values[i]
        return block.value(block.position(i)) if block is not None else None

    def values(self) -> list[Any]:
        """Every done call's value in input order (None for the others)."""
        states, where, n = self.states, self._values, self.n
        out: list[Any] = [None] * n
        for block in self._blocks:
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
        return out

    def blocks_since(self, k: int) -> list[Block]:
        """The blocks of values kept after the first ``k`` (until ``decode``)."""
        return self._blocks[k:]

    def decode(self, error_of: Callable[[int], BaseException | None]) -> list[Any]:
        """Every call's value, or its exception from ``error_of(i)``, in input order;
        the first time, the pickled values are decoded and then forgotten."""
        if self.decoded is None:
            out = self.values()
            for i in not_done(self.states):
                out[i] = error_of(i)
            self._values = [None] * self.n  # the pickled bytes are not needed any more
            self._blocks = []
            self.decoded = out
        return self.decoded


class ReadAhead:
    """One daemon thread that reads result spill files as their segments arrive
    (``Block.read_ahead``), so ``results()`` finds them read and checked: the
    reading overlaps the calls still running instead of following them."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Block, Callable[[], None] | None]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, block: Block, then: Callable[[], None] | None = None) -> None:
        """Read ``block``'s file, then call ``then`` (on the read-ahead thread)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sif-read-ahead", daemon=True
                )
                self._thread.start()
        self._queue.put((block, then))

    def _run(self) -> None:
        while True:
            block, then = self._queue.get()
            block.read_ahead()
            if then is not None:
                try:
                    then()
                except Exception:  # noqa: BLE001 - one job's trouble stops no other's reads
                    logging.getLogger("sif_magic.job").exception("resolving read-ahead results")


READ_AHEAD = ReadAhead()


def not_done(states: bytearray) -> Iterator[int]:
    """Indices whose state is not done, in order (found at C speed: a job of a
    million calls that all succeeded is scanned in a millisecond)."""
    marks = states.translate(_NOT_DONE)
    i = marks.find(1)
    while i >= 0:
        yield i
        i = marks.find(1, i + 1)
