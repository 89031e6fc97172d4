"""The workers a RabbitMQ client has heard of, from their heartbeats.

Threads: ``record`` runs on the transport's I/O thread (the monitor consumer);
``rows`` and ``live`` on the kernel thread and the display's pusher thread; all
under ``_lock``. Owner: the ``RabbitBackend`` that made it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ...protocol import Heartbeat


class WorkerRegistry:
    """Each worker's last heartbeat and when it came; a worker is "lost" after three
    of its heartbeat intervals (and a second) without one, "gone" once it said bye."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.heartbeats: dict[str, Heartbeat] = {}
        self._seen: dict[str, float] = {}

    def record(self, hb: Heartbeat) -> None:
        with self._lock:
            self.heartbeats[hb.worker] = hb
            self._seen[hb.worker] = time.time()

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
                elif now - d["last_seen"] > 3 * max(hb.interval, 0.5) + 1:
                    d["state"] = "lost"
                out.append(d)
        return out

    def live(self, runtime: str) -> list[dict[str, Any]]:
        """The rows of workers that are up and serve ``runtime`` ("*": any)."""
        return [w for w in self.rows() if w["state"] == "up" and runtime in ("*", w["runtime"])]
