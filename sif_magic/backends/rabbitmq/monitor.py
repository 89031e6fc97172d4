"""The client's monitoring queue: worker heartbeats into the registry, job events
into the jobs they belong to.

The queue (``sif_magic.<key id>.monitor.<random>``) is exclusive and bound to the
key scope's monitoring exchange with ``worker.#`` (heartbeats) and, while a job is
followed, ``job.<id>.#`` (its events); after a reconnect it is declared again
under a new name and bound again. Only sides holding this key publish there; a
message that is not signed with it (another key's, forged, malformed) is counted
and ignored.

Threads: ``setup`` and ``on_message`` run on the transport's I/O thread; events
are folded into a Job under its lock, heartbeats recorded under the registry's
lock; nothing blocks. ``queue`` is read by the kernel thread to bind a new job
(inside ``Connection.call``, so on the I/O thread too). Owner: the
``RabbitBackend`` that made it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ... import protocol
from ...job import Job
from ...protocol import CLOCK_SKEW, Heartbeat, ProtocolError, VersionError
from ...transport import bind, declare_private_queue
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
        scope: str,
    ) -> None:
        self.key = key
        self.jobs = jobs
        self.registry = registry
        self.follow = follow
        self.scope = scope
        self.exchange = protocol.monitor_exchange(scope)
        self.queue = ""
        self.rejected = 0  # messages not signed with this key (or malformed), so far
        self._late: set[str] = set()  # workers whose heartbeat came signed long ago
        self._told: set[str] = set()  # workers told to upgrade ("-": any other sender)

    def setup(self, ch: Any) -> str:
        q = declare_private_queue(ch, self.scope, "monitor")
        self.queue = q  # a new name after every reconnect
        ch.queue_bind(q, self.exchange, "worker.#")
        if self.follow:
            for job_id in list(self.jobs):
                ch.queue_bind(q, self.exchange, f"job.{job_id}.#")
        return q

    def bind(self, ch: Any, job_id: str, wait: bool = True) -> None:
        """Follow the events of ``job_id`` from now on (on the I/O thread); ``wait=False``:
        ``topology.bind`` without waiting."""
        bind(ch, self.queue, self.exchange, f"job.{job_id}.#", wait)

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
        except VersionError as e:
            self.rejected += 1
            self._old_version(props.type, body, e)
        except ProtocolError as e:
            self.rejected += 1
            if self.rejected in (1, 10, 100, 1000) or self.rejected % 10000 == 0:
                log.warning(
                    "ignored %d monitoring message(s) so far that were unsigned, forged, "
                    "malformed or signed with another key, the last: %s",
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
        """A message of another protocol version: once per worker (or once for the
        rest), what it is and what to upgrade."""
        try:
            hb = Heartbeat.decode(body) if kind == "heartbeat" else None
        except ProtocolError:
            hb = None
        who = f"worker {hb.worker} on {hb.host}" if hb else ""
        if (who or "-") in self._told:
            return
        self._told.add(who or "-")
        log.warning("%s", f"{who} speaks another protocol: {e}" if who else f"ignored: {e}")
