"""The workers a RabbitMQ client has heard of, from their heartbeats.

Workers that sign with this kernel's key are recorded by their heartbeat, as
seen when it was signed (its ``t``, within ``protocol.CLOCK_SKEW``), not when it
came: a copy of an old heartbeat published again keeps no dead worker up (the
monitoring exchange is the key's own: workers of another key publish elsewhere).
A worker is "lost" after three of its heartbeat intervals (and a second) without
one, "gone" once it said bye.

Threads: ``record`` runs on the transport's I/O thread (the monitor consumer);
``rows`` and ``live`` on the kernel thread
and the display's pusher thread; ``newly_gone`` on the backend's watcher
thread; all under ``_lock``. Owner: the ``RabbitBackend`` that made it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ...protocol import CLOCK_SKEW, Heartbeat


def overdue(hb: Heartbeat, last_seen: float, now: float) -> bool:
    """Whether a worker has not been heard from for three of its intervals."""
    return now - last_seen > 3 * max(hb.interval, 0.5) + 1


class WorkerRegistry:
    """Each worker's last heartbeat and when it came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.heartbeats: dict[str, Heartbeat] = {}
        self._seen: dict[str, float] = {}
        self._gone: set[str] = set()  # workers whose running calls were marked lost

    def record(self, hb: Heartbeat) -> bool:
        """A verified heartbeat, trusted until its own signed time ``t`` plus the clock
        skew allowed, never past (a replayed old one shows no dead worker up); one older
        than its worker's last is ignored (a copy). Whether it was taken."""
        with self._lock:
            last = self.heartbeats.get(hb.worker)
            if last is not None and hb.t < last.t:
                return False
            self.heartbeats[hb.worker] = hb
            self._seen[hb.worker] = min(time.time(), hb.t + CLOCK_SKEW)
            return True

    def rows(self) -> list[dict[str, Any]]:
        """A row per worker (the heartbeat's fields, ``last_seen`` and ``state``)."""
        now = time.time()
        out = []
        with self._lock:
            for wid, hb in self.heartbeats.items():
                d = dict(hb.__dict__)
                d["last_seen"] = self._seen.get(wid, 0.0)
                if hb.state == "bye":
                    d["state"] = "gone"
                elif overdue(hb, d["last_seen"], now):
                    d["state"] = "lost"
                out.append(d)
        return out

    def live(self, runtime: str) -> list[dict[str, Any]]:
        """The rows of workers that are up and serve ``runtime`` ("*": any)."""
        return [w for w in self.rows() if w["state"] == "up" and runtime in ("*", w["runtime"])]

    def newly_gone(self) -> list[Heartbeat]:
        """Workers that said bye or stopped answering since the last call (a worker
        heard from again can be gone again later)."""
        now = time.time()
        with self._lock:
            gone = {
                wid: hb
                for wid, hb in self.heartbeats.items()
                if hb.state == "bye" or overdue(hb, self._seen.get(wid, 0.0), now)
            }
            new = [hb for wid, hb in gone.items() if wid not in self._gone]
            self._gone = set(gone)
        return new
