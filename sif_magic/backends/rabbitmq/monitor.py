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
import time
from collections.abc import Callable
from typing import Any

from ... import protocol
from ...job import Job
from ...protocol import CLOCK_SKEW, ForeignKeyError, Heartbeat, ProtocolError, VersionError
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
        self._late: set[str] = set()  # workers whose heartbeat came signed long ago
        self._told: set[str] = set()  # workers told to upgrade ("-": any other sender)

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
                self._heartbeat(Heartbeat.decode(body))
        except ForeignKeyError as e:
            self.foreign += 1
            if props.type == "heartbeat":
                self._foreign_heartbeat(body, e.theirs)
        except VersionError as e:
            self.rejected += 1
            self._old_version(props.type, body, e)
        except ProtocolError as e:
            self.rejected += 1
            if self.rejected in (1, 10, 100, 1000) or self.rejected % 10000 == 0:
                log.warning(
                    "ignored %d monitoring message(s) so far that were unsigned, forged or "
                    "malformed, the last: %s",
                    self.rejected,
                    e,
                )

    def _heartbeat(self, hb: Heartbeat) -> None:
        """Record ``hb``; say once per worker when one arrives signed long ago."""
        age = time.time() - hb.t
        if self.registry.record(hb) and age > CLOCK_SKEW and hb.worker not in self._late:
            self._late.add(hb.worker)
            log.warning(
                "a heartbeat of worker %s on %s was signed %.0f s ago: a replayed copy, or "
                "the clocks of this machine and %s differ by more than %g s (%s), or this "
                "kernel reads messages late; that worker is shown up only within %g s of "
                "the time its heartbeats carry",
                hb.worker,
                hb.host,
                age,
                hb.host,
                CLOCK_SKEW,
                protocol.CLOCK_FIX,
                CLOCK_SKEW,
            )

    def _old_version(self, kind: str, body: bytes, e: VersionError) -> None:
        """A message of another protocol version: once per worker of this runtime (or
        once for the rest), what it is and what to upgrade."""
        try:
            hb = Heartbeat.decode(body) if kind == "heartbeat" else None
        except ProtocolError:
            hb = None
        who = f"worker {hb.worker} on {hb.host}" if hb and hb.runtime == self.runtime else ""
        if (who or "-") in self._told:
            return
        self._told.add(who or "-")
        log.warning("%s", f"{who} speaks another protocol: {e}" if who else f"ignored: {e}")

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
