"""What the calls of a job printed: one bounded log per call, and the recent lines of all.

Threads: written by the thread that folds the job's results and events (the
transport's I/O thread, or the local pool's threads), always under the owning
Job's lock; read by the kernel thread (``Job.call_logs``, ``%sif_logs``) and the
display's pusher thread (``recent``, ``seq``), also under that lock or as a
copy. Owner: the ``Job`` that made the store; nothing else writes it.
"""

from __future__ import annotations

import collections

LOG_BYTES_PER_CALL = 256 * 1024
LOG_BYTES_PER_JOB = 64 * 1024 * 1024
RECENT_LINES = 2000  # lines of all calls, interleaved, for the "all calls" log view


class CallLog:
    """Bounded output of one call: ``entries`` of (stream, text), oldest dropped first."""

    __slots__ = ("entries", "size", "dropped", "seen")

    def __init__(self) -> None:
        self.entries: list[tuple[int, str]] = []
        self.size = 0
        self.dropped = 0
        self.seen = {1: 0, 2: 0}  # characters received per stream, dropped ones included

    def add(self, stream: int, text: str) -> int:
        """Keep ``text``; returns how many characters the log grew by (after dropping)."""
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


class LogStore:
    """The logs of a job's calls: ``logs`` (call -> CallLog), ``recent`` lines of all
    calls as (call, stream, text), and counters a view polls (``seq`` moves on
    every line kept)."""

    def __init__(self) -> None:
        self.logs: dict[int, CallLog] = {}
        self.recent: collections.deque[tuple[int, int, str]] = collections.deque(
            maxlen=RECENT_LINES
        )
        self.size = 0  # characters kept over all calls
        self.dropped = 0  # characters not kept: the job's limit was reached
        self.seq = 0

    def _log(self, i: int) -> CallLog:
        log = self.logs.get(i)
        if log is None:
            log = self.logs[i] = CallLog()
        return log

    def _keep(self, log: CallLog, i: int, stream: int, text: str) -> None:
        self.size += log.add(stream, text)
        self.recent.append((i, stream, text))
        self.seq += 1

    def add(self, i: int, stream: int, text: str) -> None:
        """A live line of call ``i`` (from the monitoring stream)."""
        if self.size > LOG_BYTES_PER_JOB:
            self.dropped += len(text)
            return
        self._keep(self._log(i), i, stream, text)

    def settle(self, i: int, stdout: bytes, stderr: bytes, dropped: int) -> None:
        """The result carries the call's whole output (its tail if it was long): add
        what the live lines had not brought yet, so both views end complete."""
        log = self._log(i)
        log.dropped = max(log.dropped, dropped)
        for stream, data in ((1, stdout), (2, stderr)):
            if not data:
                continue
            text = data.decode("utf-8", "replace")
            # ``text`` starts ``dropped`` bytes into the output when the head was cut
            new = text[max(0, log.seen.get(stream, 0) - dropped) :]
            if new:
                self._keep(log, i, stream, new)

    def entries(self, i: int) -> tuple[list[tuple[int, str]], int]:
        """(entries, dropped characters) of call ``i``'s output so far (a copy)."""
        log = self.logs.get(i)
        return (list(log.entries), log.dropped) if log else ([], 0)
