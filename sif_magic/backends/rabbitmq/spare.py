"""A job's result queue declared before the job: the next job's setup is one round trip.

Declaring a durable result queue, the job's exchange and their bindings is most
of a job's setup on the broker (RabbitMQ writes each into its metadata store: 5-30
ms on a busy machine, against well under 1 ms for a round trip). So when a job
ends, the backend declares the queue and exchange of the next job ahead, under a
job id it keeps (``Connection.prepare``: its own channel, nothing waited for); the
next job takes that id (``take``) and, once the broker has answered, consumes
without declaring (``ready``). The names stay the job's own and key-scoped
(``protocol.names``): nothing is shared between jobs.

A spare whose job never starts (taken by a job that failed before starting) is
deleted at the next ``take`` or ``close``; one left by a kernel that died goes by
its ``x-expires`` (``result_ttl``), as a job's queue does. A spare made with other
settings (``result_ttl``, ``queue_type``), on an older connection, or older than
half its ``result_ttl`` is not used: deleted, and the job gets a new id.

Threads: ``take``, ``started``, ``after_job`` and ``close`` on the kernel thread (or
the thread that settled a job); ``Spare.ready`` / ``failed`` are written by the I/O
thread (``Connection.prepare``'s ``done``), read by the others.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ... import protocol
from ...transport import Connection, declare_job_exchange, declare_routed_queue


@dataclass
class Spare:
    job_id: str
    arguments: dict[str, Any]
    generation: int
    since: float = field(default_factory=time.monotonic)
    ready: bool = False  # the broker has declared it all (I/O thread)
    failed: bool = False  # refused, or the connection was lost first (I/O thread)

    def done(self, ok: bool) -> None:
        if ok and not self.failed:
            self.ready = True
        else:
            self.ready, self.failed = False, True


class Spares:
    """The next job's result queue of connection ``conn`` (scope ``scope``), and those
    taken by jobs that have not started yet."""

    def __init__(self, conn: Connection, scope: str, config: Any) -> None:
        self.conn = conn
        self.scope = scope
        self.config = config  # result_ttl, queue_type: read when a spare is made and taken
        self._next: Spare | None = None  # declared (or on its way), not handed out
        # handed out, their jobs not started yet, by job id (jobs made on several
        # threads at once: each keeps its own, none deletes another's)
        self._taken: dict[str, Spare] = {}
        self._lock = threading.Lock()  # guards _next, _taken and _closed
        self._closed = False  # after ``close``: no more spares (their queues would stay)

    def _arguments(self) -> dict[str, Any]:
        return protocol.result_queue_arguments(
            self.scope, self.config.result_ttl, self.config.queue_type
        )

    def take(self) -> str:
        """The id of the next job: the spare's if it fits, else a new one. Spares taken
        by jobs that never started (a bad input, every call from the cache) and no
        longer fit are deleted here."""
        with self._lock:
            stale = [s for s in self._taken.values() if not self._fits(s)]
            for s in stale:
                del self._taken[s.job_id]
            spare, self._next = self._next, None
            job_id = uuid.uuid4().hex[:12]
            if spare is not None and self._fits(spare):
                self._taken[spare.job_id], spare, job_id = spare, None, spare.job_id
        for s in [*stale, spare]:
            self._drop(s)
        return job_id

    def _fits(self, s: Spare) -> bool:
        return (
            not s.failed
            and s.generation == self.conn.generation
            and s.arguments == self._arguments()
            and time.monotonic() - s.since < self.config.result_ttl / 2
        )

    def started(self, job_id: str) -> bool:
        """Job ``job_id`` starts: whether its queue and exchange are declared already."""
        with self._lock:
            spare = self._taken.pop(job_id, None)
        return spare is not None and spare.ready and self._fits(spare)

    def after_job(self) -> None:
        """A job ended: declare the next one's queue now, if none is ready or on its way."""
        spare = Spare(uuid.uuid4().hex[:12], self._arguments(), self.conn.generation)
        with self._lock:
            if self._next is not None or self._closed or self.conn.closed:
                return
            self._next = spare
        queue = protocol.result_queue(self.scope, spare.job_id)

        def declare(ch: Any) -> None:
            declare_routed_queue(ch, self.scope, queue, spare.arguments, wait=False)
            declare_job_exchange(ch, self.scope, spare.job_id, queue, wait=False)

        self.conn.prepare(declare, spare.done)

    def close(self) -> None:
        """Delete the spares not used (before the connection closes); none is made after."""
        with self._lock:
            spares = [self._next, *self._taken.values()]
            self._next, self._taken = None, {}
            self._closed = True
        for spare in spares:
            self._drop(spare, wait=True)

    def _drop(self, spare: Spare | None, wait: bool = False) -> None:
        """Delete ``spare``'s queue (its exchange goes with it: auto-delete), on the
        channel that declared it: after its declare, which may still be on its way."""
        if spare is None or spare.failed:
            return
        queue = protocol.result_queue(self.scope, spare.job_id)
        try:
            self.conn.undo_ahead(lambda ch: ch.queue_delete(queue), timeout=5 if wait else None)
        except Exception:  # noqa: BLE001 - a broker that is down: it goes by its x-expires
            pass
