"""Tasks signed with another key: neither run nor destroyed.

A task whose ``sif-kid`` header names a key this worker does not hold comes
from a notebook with another key file. It cannot be verified, so it is never
unpickled; it is some notebook's work, so it is not dead-lettered either. The
worker logs an error that names both key ids and says how to give it the
notebook's key, holds the task ``HOLD`` seconds (a worker holding its key may
take the next ones meanwhile; holding it stops it coming straight back here)
and hands it back to its queue, unread, with its sender's signature, acking
the original in the same transaction (a requeue would mark it redelivered,
which the next worker would count as a worker death). A task that asks for
more GPUs or CPUs than this worker has goes the same way (``hold_for_others``).

Threads: ``hold`` and ``log`` run in the I/O thread (consumer callbacks);
``hand_back`` in the worker's main thread (and at shutdown); the held list is
guarded by ``_lock``; the operation it queues runs in the I/O thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .._keys import worker_key_fix
from ..transport import Connection

log = logging.getLogger("sif_magic.worker")
HOLD = 5.0  # seconds a task signed with another key is held before it goes back
LOG_EVERY = 600.0  # the error about a key id is logged again after this long


class ForeignTasks:
    def __init__(self, conn: Connection, key_id: str, key_source: str) -> None:
        self.conn = conn
        self.key_id = key_id
        self.key_source = key_source
        self.count = 0  # messages signed with another key, so far
        # tasks signed with another key, until handed back: (due, delivery, queue, body, props)
        self._held: list[tuple[float, Any, str, bytes, Any]] = []
        self._lock = threading.Lock()
        self._logged: dict[tuple[str, str], float] = {}  # (what, key id) -> last logged

    def hold(self, theirs: str, delivery: Any, queue: str, body: bytes, props: Any) -> None:
        """Keep a task of key id ``theirs`` until it is handed back to ``queue``."""
        self.count += 1
        self.log(theirs, f"Tasks on {queue}")
        with self._lock:
            self._held.append((time.time() + HOLD, delivery, queue, body, props))

    def hold_for_others(self, why: str, delivery: Any, queue: str, body: bytes, props: Any) -> None:
        """Keep a task this worker cannot run (``why``) until it goes back to ``queue``."""
        now = time.time()
        if now - self._logged.get(("resources", why), -LOG_EVERY) >= LOG_EVERY:
            self._logged[("resources", why)] = now
            log.warning(
                "a task on %s: %s; it goes back to the queue after %g s here, for a worker "
                "that has them",
                queue,
                why,
                HOLD,
            )
        with self._lock:
            self._held.append((now + HOLD, delivery, queue, body, props))

    def hand_back(self, everything: bool = False) -> Any:
        """Republish held tasks of another key as they came (their sender's signature)
        and ack them, in one transaction per channel; returns the operation's future
        (None if nothing was due)."""
        now = time.time()
        with self._lock:
            due = [h for h in self._held if everything or h[0] <= now]
            self._held = [h for h in self._held if not (everything or h[0] <= now)]
        if not due:
            return None

        def op() -> None:
            for _, delivery, queue, body, props in due:
                self.conn.stage_forward(delivery, "", queue, body, props)
                self.conn.ack(delivery)

        return self.conn.call(op, wait=False)

    def log(self, theirs: str, what: str) -> None:
        """An error, once per key id and kind of message (again after LOG_EVERY),
        that names both key ids and says how to give this worker the notebook's key."""
        now = time.time()
        if now - self._logged.get((what, theirs), -LOG_EVERY) < LOG_EVERY:
            return
        self._logged[(what, theirs)] = now
        log.error(
            "%s signed with key id %s, but this worker holds key id %s (%s): the notebook "
            "that sent it holds another signing key, and this worker cannot run its work. "
            "Fix: %s. Its tasks are not dropped: each goes back to the queue, unread, after "
            "%g s here, for a worker that holds its key.",
            what,
            theirs,
            self.key_id,
            self.key_source,
            worker_key_fix(self.key_source),
            HOLD,
        )
