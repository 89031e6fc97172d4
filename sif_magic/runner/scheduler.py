"""Scheduling policy: pure decisions, no threads and no I/O (unit-tested alone).

- ``auto_chunksize``: how many calls a chunk holds when the user did not say
  (the client, when it splits a job).
- ``send_ahead``: whether a busy slot gets its next piece before it finishes
  the one it runs (the pool).
- ``split_share``: whether a slot gives away calls of the piece it runs to
  an idle slot, and how many (the pool).
- ``should_retry``: whether a failed attempt of a call runs again (the pool).
- ``CallTimes``: how long a call of each function took lately, overhead
  included (the pool notes; ``send_ahead`` and ``Prefetch`` use it).
- ``Prefetch``: how many unacknowledged chunks a worker holds (the worker).

Threads: none of its own. A ``CallTimes`` is written by the pool's dispatcher
thread only (others may look a value up); a ``Prefetch`` by its owner (the
worker, under its outbox lock).
"""

from __future__ import annotations

import math

# a busy slot gets its next piece ahead (so it never waits for us between
# pieces) when that piece should take less than this many seconds
PREFETCH_BELOW = 0.02
# unstarted work (seconds) a worker holds per process, beyond two chunks per process
PREFETCH_SECONDS = 0.01
PREFETCH_MAX = 64


def auto_chunksize(n: int, slots: int) -> int:
    """About four chunks per worker slot, at most 2,000 calls a chunk.

    Four per slot lets fast slots take more when calls are uneven, without the
    per-message cost of one call per message.
    """
    if n <= 0:
        return 1
    return max(1, min(2000, math.ceil(n / (max(1, slots) * 4))))


def send_ahead(calls: int, seconds_per_call: float, size: int, room: int) -> bool:
    """Whether a piece of ``calls`` calls (``size`` bytes of function and inputs) of
    the job a slot runs goes to that slot before it is idle: only a quick piece
    (a slow one would wait there while another slot could run it) that fits in
    the ``room`` of the slot's request pipe (so sending never blocks)."""
    return calls * seconds_per_call < PREFETCH_BELOW and size < room


# a piece's calls not started yet go (half of them) to an idle slot when they should
# take longer than this, plus the time to send the chunk's inputs once more
SPLIT_ABOVE = 0.002
SPLIT_BYTES_PER_SECOND = 200e6


def split_share(
    unstarted: int, seconds_per_call: float, size: int, idle: int, running_for: float = 0.0
) -> int:
    """Per mille of the ``unstarted`` calls of a running piece (``size`` bytes of
    function and inputs) that go to ``idle`` idle slots: 0 when they are too few
    to pay for the trip (the idle slot is sent the whole chunk's inputs again),
    else an equal share for each slot, the busy one included. The calls are
    worth it when they should take SPLIT_ABOVE (at ``seconds_per_call``, the
    function's recent average), or when the call in front of them has run that
    long already (``running_for``: they wait for it, however quick they are).
    Pieces of a job split in halves like this: a slow call holds only its own
    slot, the calls queued behind it in its piece run on the others (work
    stealing, as Cilk, TBB and Go's scheduler do it)."""
    if unstarted < 1 or idle < 1:
        return 0
    cost = SPLIT_ABOVE + size / SPLIT_BYTES_PER_SECOND
    if max(unstarted * seconds_per_call, running_for) < cost:
        return 0
    return 1000 * idle // (idle + 1)


def should_retry(attempt: int, attempt_base: int, retries: int) -> bool:
    """Whether attempt ``attempt`` of a call, which failed, is followed by another:
    a chunk allows ``retries`` more attempts after its first (``attempt_base``)."""
    return attempt - attempt_base < retries


class CallTimes:
    """Seconds per call of each function (by hash), as last measured over a batch."""

    UNKNOWN = 1.0  # a function not seen yet counts as slow
    KEEP = 256  # functions remembered; past that the table starts again

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def note(self, func_hash: str, seconds: float) -> None:
        if len(self._seconds) > self.KEEP and func_hash not in self._seconds:
            self._seconds.clear()
        self._seconds[func_hash] = seconds

    def get(self, func_hash: str) -> float:
        return self._seconds.get(func_hash, self.UNKNOWN)

    def seen(self, func_hash: str) -> float | None:
        """Seconds per call of that function, None if none ran yet."""
        return self._seconds.get(func_hash)


class Prefetch:
    """A worker's prefetch (unacknowledged chunks it holds), following chunk times.

    It starts at two chunks per process (one running, one ready) and holds about
    PREFETCH_SECONDS of unstarted work per process beyond that: quick chunks (a
    call each, say) need dozens in flight to hide the broker's round trip, while
    slow ones must not be hoarded away from other workers that are idle."""

    EVERY = 16  # chunks between two decisions

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.base = self.current = 2 * processes
        self.chunk_seconds = 1.0  # a chunk's time, averaged (until known: slow)
        self._chunks = 0

    def chunk_done(self, seconds: float) -> int:
        """A chunk took ``seconds``: the new prefetch, or 0 to keep the current one."""
        self.chunk_seconds += 0.2 * (seconds - self.chunk_seconds)
        self._chunks += 1
        if self._chunks < self.EVERY:
            return 0
        self._chunks = 0
        ahead = self.processes * PREFETCH_SECONDS / max(self.chunk_seconds, 1e-6)
        want = min(PREFETCH_MAX, self.base + int(ahead))
        if abs(want - self.current) * 4 < self.current:
            return 0  # not worth a round trip
        self.current = want
        return want
