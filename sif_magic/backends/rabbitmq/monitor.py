"""The client's monitoring queue: worker heartbeats into the registry, job events
into the jobs they belong to.

The queue is exclusive and bound to ``worker.#`` (heartbeats) and, while a job is
followed, ``job.<id>.#`` (its events); after a reconnect it is declared again
under a new name and bound again.

Threads: ``setup`` and ``on_message`` run on the transport's I/O thread; events
are folded into a Job under its lock, heartbeats recorded under the registry's
lock; nothing blocks. ``queue`` is read by the kernel thread to bind a new job
(inside ``Connection.call``, so on the I/O thread too). Owner: the
``RabbitBackend`` that made it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ... import protocol
from ...job import Job
from ...protocol import ForeignKeyError, Heartbeat, ProtocolError
from .registry import WorkerRegistry

log = logging.getLogger("sif_magic.rabbitmq")


class Monitor:
    """Consumer of the monitoring exchange for one client (``follow``: bind jobs)."""

    def __init__(
        self,
        key: bytes,
        jobs: dict[str, Job],
        registry: WorkerRegistry,
        follow: bool,
        runtime: str,
        on_foreign: Callable[[Heartbeat, str], None],
    ) -> None:
        self.key = key
        self.jobs = jobs
        self.registry = registry
        self.follow = follow
        self.runtime = runtime
        self.on_foreign = on_foreign  # (heartbeat, key id) of a new worker with another key
        self.queue = ""
        self.rejected = 0
        self.foreign = 0  # monitoring messages signed with another key, so far

    def setup(self, ch: Any) -> str:
        q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self.queue = q  # a new name after every reconnect
        ch.queue_bind(q, protocol.MONITOR_EXCHANGE, "worker.#")
        if self.follow:
            for job_id in list(self.jobs):
                ch.queue_bind(q, protocol.MONITOR_EXCHANGE, f"job.{job_id}.#")
        return q

    def bind(self, ch: Any, job_id: str) -> None:
        """Follow the events of ``job_id`` from now on (on the I/O thread)."""
        ch.queue_bind(self.queue, protocol.MONITOR_EXCHANGE, f"job.{job_id}.#")

    def on_message(self, props: Any, delivery: Any, method: Any, body: bytes) -> None:
        try:
            protocol.verify(self.key, props.type, body, props.headers)
            if props.type == "events":
                batch = protocol.EventBatch.decode(body)
                job = self.jobs.get(batch.job_id)
                if job is not None:
                    job.apply_events(batch)
            elif props.type == "heartbeat":
                self.registry.record(Heartbeat.decode(body))
        except ForeignKeyError as e:
            self.foreign += 1
            if props.type == "heartbeat":
                self._foreign_heartbeat(body, e.theirs)
        except ProtocolError as e:
            self.rejected += 1
            if self.rejected in (1, 10, 100, 1000) or self.rejected % 10000 == 0:
                log.warning(
                    "ignored %d monitoring message(s) so far that were unsigned, forged or "
                    "malformed, the last: %s",
                    self.rejected,
                    e,
                )

    def _foreign_heartbeat(self, body: bytes, theirs: str) -> None:
        """A heartbeat signed with another key. Its body is read (JSON, never run) only
        to name the worker: one of this runtime is reported once with the fix (other
        runtimes' workers on a shared vhost are other people's, and none of ours)."""
        try:
            hb = Heartbeat.decode(body)
        except ProtocolError:
            return
        if hb.runtime == self.runtime and self.registry.record_foreign(hb, theirs):
            self.on_foreign(hb, theirs)
