"""Jobs cancelled lately: what a pool (and the worker in front of it) refuses to run.

A cancel reaches a worker once, but chunks of the job may still arrive after
it (redelivered, or published before the cancel): they are settled as
cancelled without running. An entry is forgotten an hour after it was added
(a worker may run for weeks).

Threads: any thread adds (a lock serializes the writers) or asks (a dict
lookup, atomic: no lock, it is asked for every chunk); the pool's callers add
(``Pool.cancel``), its dispatcher and the worker's I/O thread ask.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

KEEP = 3600.0  # seconds a cancel is remembered


class CancelSet:
    def __init__(self, keep: float = KEEP, clock: Callable[[], float] = time.monotonic) -> None:
        self.keep = keep
        self.clock = clock
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}  # job id -> when it was cancelled

    def add(self, job_id: str) -> None:
        now = self.clock()
        with self._lock:
            for old, t in list(self._since.items()):
                if now - t > self.keep:
                    del self._since[old]
            self._since[job_id] = now

    def __contains__(self, job_id: object) -> bool:
        t = self._since.get(job_id)  # type: ignore[arg-type]
        return t is not None and self.clock() - t <= self.keep
