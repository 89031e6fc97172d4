"""The RabbitMQ backend: chunks to ``sif_magic.<key id>.tasks.<runtime>``, results
back through a durable per-job queue, progress from the monitoring exchange.

Every name is scoped by the signing key's id (``protocol.names``): a notebook
only ever sees the queues, workers and messages of its own key.

Results are consumed without acking while the job object lives: if this
kernel dies, they return to the job's queue (which outlives its last consumer
by ``result_ttl``), so ``Executor.attach(job_id)`` finds every finished call
again (``results.ResultStream``, the one consumer of result queues).
``Job.close()`` / ``Executor.shutdown()`` delete the queue. While a job may
still run calls its exchange ``sif_magic.<key id>.job.<id>`` exists (bound to
the result queue); it is deleted when the job is done or cancelled, and workers
run no task of a job without it (a replayed copy). Workers are known
from their heartbeats (``registry.WorkerRegistry``); a job whose runtime has
no worker of this key fails before anything is sent (``readiness``), saying
which key id and how to give a worker this key. When a worker stops answering (no
heartbeat for three of its intervals) or says goodbye, the calls it was
running are shown ``lost`` until the broker hands them to another worker.

Threads: the kernel thread calls the ``Backend`` methods; the transport's I/O
thread (``Connection``) runs the consumers: ``monitor.Monitor`` (events into
jobs, heartbeats into the registry) and each job's ``ResultStream``, which fold into
jobs under their locks and never block; ``_on_broker_state`` too. One
``sif-publish`` thread per job publishes its chunks; the ``sif-watch`` thread
marks the calls of workers that went away as lost, once a second, and fails
the calls whose inputs are in a spill directory no live worker sees (``spillwatch``). ``jobs`` and ``_streams``
are written by the kernel thread (dict operations, read by the I/O thread).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from typing import Any

from ... import protocol
from ..._keys import key_source
from ...config import SifConfig
from ...errors import ConfigError
from ...job import Job
from ...runner import spill
from ...runner.resources import need_of
from ...transport import Connection, QueueRefused, declare_task_queue
from ..base import Backend, JobTask
from .monitor import Monitor
from .readiness import check_resources, check_versions, wait_for_workers
from .registry import WorkerRegistry
from .results import RESULTS_HELD, ResultStream, jobinfo
from .spare import Spares
from .spillwatch import SpillWatch
from .tasks import publish_chunks

log = logging.getLogger("sif_magic.rabbitmq")
JOB_ID = re.compile(r"[0-9a-f]{12}")  # what new_job_id makes: uuid4().hex[:12]


class RabbitBackend(Backend):
    name = "rabbitmq"

    def __init__(self, config: SifConfig) -> None:
        self.config = config
        self.url = config.get_amqp_url()
        self.key = config.get_key()
        self.key_id = protocol.key_id(self.key)
        self.scope = self.key_id  # every name this client uses: sif_magic.<key id>.*
        self.key_source = key_source(config.key, config.key_file)
        self._pinged = 0.0
        self.runtime = config.runtime
        self.session = uuid.uuid4().hex[:8]
        self.jobs: dict[str, Job] = {}
        self.registry = WorkerRegistry()
        self.promised_slots = 0  # slots a scaler of this process may start (launch/scaler.py)
        self.rejected = 0
        self._up = True  # written by the I/O thread (on_state), read by views
        self._streams: dict[str, ResultStream] = {}  # job id -> our consumer of its results
        self.conn = Connection(
            self.url,
            scope=self.scope,
            name=f"sif_magic client {self.session}",
            connect_timeout=config.connect_timeout,
            ca_file=config.ca_file,
            queue_type=config.queue_type,
            setup=lambda ch: declare_task_queue(ch, self.scope, self.runtime, config.queue_type),
            on_state=self._on_broker_state,
            max_message=int(config.max_message_mb * (1 << 20)),
            require_tls=config.require_tls,
        ).start()
        self.monitor = Monitor(
            self.key,
            self.jobs,
            self.registry,
            follow=config.monitor,
            scope=self.scope,
        )
        self.conn.consume(
            self.monitor.setup, self.monitor.on_message, auto_ack=True, exclusive=True
        )
        self.ping()
        self.spares = Spares(self.conn, self.scope, config)  # the next job's queue, ahead
        self.spares.after_job()
        self.spill_watch = SpillWatch()  # (the sif-watch thread's)
        threading.Thread(target=self._watch, name="sif-watch", daemon=True).start()

    def _watch(self) -> None:
        """Once a second: the running calls of a worker that went away are lost; now and
        then the spill directories of the jobs followed here are marked in use."""
        next_keep = 0.0
        while not self.conn.closed:
            time.sleep(1.0)
            if time.time() >= next_keep:  # however long a job waits, no sweep takes them
                next_keep = time.time() + spill.keep_every(self.config.result_ttl)
                for job in list(self.jobs.values()):
                    spill.keep(job.spill_dir)
            try:
                self.spill_watch.check(list(self.jobs.values()), self.live_workers(), self.runtime)
            except Exception:  # noqa: BLE001 - a check must never stop the watch
                log.warning("checking who sees the spill directory failed", exc_info=True)
            try:
                for hb in self.registry.newly_gone():
                    how = "stopped" if hb.state == "bye" else "stopped answering"
                    note = f"worker {hb.worker} on {hb.host} {how}; waiting to be redelivered"
                    for job in list(self.jobs.values()):
                        if not job.done():
                            job.mark_lost(hb.worker, note)
            except Exception:  # noqa: BLE001 - a display hint must never stop the watch
                log.debug("marking lost calls failed", exc_info=True)

    def _on_broker_state(self, up: bool) -> None:
        self._up = up

    def reachable(self) -> bool:
        return self._up

    def max_message_bytes(self) -> int:
        return self.conn.max_message

    def ping(self) -> None:
        self._pinged = time.time()
        self._control(protocol.Control(op="ping"), wait=True)

    def _control(self, ctl: protocol.Control, wait: bool) -> None:
        """To every worker of this key (the scope's fanout exchange)."""
        exchange = protocol.control_exchange(self.scope)
        body = ctl.encode()
        self.conn.publish(
            exchange, "", body, kind="control", key=self.key, persistent=False, wait=wait
        )

    def workers(self) -> list[dict[str, Any]]:
        return self.registry.rows()

    def refresh(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Ask every worker to announce itself now; wait up to ``timeout`` for answers."""
        known = len(self.live_workers(runtime="*"))
        self.ping()
        deadline = time.time() + timeout
        while time.time() < deadline:
            time.sleep(0.05)
            if len(self.live_workers(runtime="*")) > known:
                time.sleep(0.1)  # the others answer within the same moment
                break
        return self.workers()

    def live_workers(self, runtime: str | None = None) -> list[dict[str, Any]]:
        return self.registry.live(runtime or self.runtime)

    def sees_spill(self, root: list[str]) -> bool:
        """Every live worker of the runtime sent ``root`` in its last heartbeat (a
        worker that joins later and does not see it hands such a job's chunks back for
        one that does; once every live worker has, ``spillwatch`` fails them, saying
        what to set)."""
        live = self.live_workers()
        return bool(root) and bool(live) and all(w.get("spill") == root for w in live)

    def slots(self) -> int:
        live = sum(int(w.get("slots", 0)) for w in self.live_workers())
        return max(live, self.promised_slots)

    # -- jobs ------------------------------------------------------------------------
    def start_job(self, job: Job, task: JobTask) -> None:
        if self.live_workers():
            check_versions(self)  # workers of this runtime announced themselves lately
        else:
            wait_for_workers(self)  # asks the broker, waits, or says how to start one
        need = need_of(task.resources)
        if need is not None:
            check_resources(self, need)  # no live worker has what the calls ask for: fail now
        reply_to = protocol.result_queue(self.scope, job.job_id)
        self.jobs[job.job_id] = job
        # the queue, its jobinfo record and the consumer, in one round trip; the chunks
        # are published while it is on its way (the I/O thread sends them once the
        # broker has answered it, and not at all if it refused)
        declared = self.spares.started(job.job_id)
        info = jobinfo(job, self.runtime, len(task.chunks))
        consumed = self._consume_results(job, info, declared)
        threading.Thread(
            target=publish_chunks,
            args=(self.conn, self.key, self.runtime, self.session, job, task, reply_to),
            kwargs={"after": consumed},
            name="sif-publish",
            daemon=True,
        ).start()
        try:
            consumed.result()
        except BaseException as e:
            self.jobs.pop(job.job_id, None)
            self._streams.pop(job.job_id, None)
            if not isinstance(e, QueueRefused):  # what its setup declared: not left behind
                self._delete_results(reply_to)
            self.spares.after_job()  # the next job's queue, ahead, as after a job that ran
            raise

    def add_chunks(self, job: Job, task: JobTask) -> None:
        """On the caller's thread (a pipeline's feeder): published before it returns."""
        reply_to = protocol.result_queue(self.scope, job.job_id)
        publish_chunks(self.conn, self.key, self.runtime, self.session, job, task, reply_to)

    def new_job_id(self) -> str:
        return self.spares.take()  # the id of a result queue declared ahead, if one fits

    def _consume_results(self, job: Job, info: bytes, declared: bool) -> Any:
        """Consume the job's results on the connection's shared result channel; a
        Future of the consume (the broker's refusal: a BrokerError). ``declared``: its
        queue and exchange are (``spare``): not declared again the first time."""
        stream = ResultStream(job.job_id, self.key, self._refuse, job=job)
        # the jobinfo record goes ahead of any result, again on every run of ``setup``
        # until the consume is answered (unconfirmed, it may be lost with a connection
        # that drops meanwhile; a second one is ignored: ``ResultStream.on_message``)
        first = [info]
        again = [not declared]

        def setup(ch: Any) -> str:
            # nothing waited for but the consume: the queue, the job's exchange, the
            # monitor binding and the jobinfo record go ahead of it on its channel
            if again[0]:
                stream.declare(ch, self.config.result_ttl, self.config.queue_type)
            again[0] = True  # after a reconnect, or a channel the broker closed
            if self.config.monitor:
                self.monitor.bind(ch, job.job_id, wait=False)
            if first:
                self.conn.publish_on(ch, stream.queue, first[0], kind="jobinfo", key=self.key)
            return stream.queue

        self._streams[job.job_id] = stream
        consumed = self.conn.consume(
            setup, stream.on_message, prefetch=0, closed_note=RESULTS_HELD, writable=True,
            shared=True, wait=False,
        )  # fmt: skip
        consumed.add_done_callback(lambda f: f.exception() is None and first.clear())
        job.add_done_callback(self._ended)
        return consumed

    def _ended(self, job: Job) -> None:
        """A job is done or cancelled: delete its exchange, so that no worker runs a
        task of it again (a copy published again, a chunk left in a queue). On the
        thread that settled the job; a failure is retried by the next reconnect."""

        def op() -> None:
            self.conn.sub_channel.exchange_delete(protocol.job_exchange(self.scope, job.job_id))

        self.conn.post(op)
        self.spares.after_job()

    def _refuse(self, delivery: Any, queue: str, e: Exception) -> None:
        """A message of a result queue that is not a result of its job: dead-letter it."""
        self.rejected += 1
        log.warning("dead-lettered a message in %s: %s", queue, e)
        self.conn.reject(delivery, requeue=False)

    def cancel(self, job: Job) -> None:
        # never block on a broker that is down: the cancel goes out when it is back
        self._control(protocol.Control(op="cancel", job_id=job.job_id), wait=False)
        # running calls report 'cancelled' as the workers kill them: wait for those
        # (at most 2 s); calls still queued on the broker are cancelled here and now
        deadline = time.time() + 2.0
        while time.time() < deadline and not job.done():
            if not (job.count("running") or job.count("retrying")):
                break
            time.sleep(0.02)
        job.mark_cancelled()

    def _delete_results(self, queue: str) -> None:
        """Delete result queue ``queue`` (its job's exchange goes with it), not waited for."""

        def op() -> None:
            self.conn.forget_consumer(queue)  # deleting the queue cancels it
            self.conn.sub_channel.queue_delete(queue)

        self.conn.post(op)

    def release(self, job: Job) -> None:
        """Forget a finished job: delete its result queue on the broker."""
        self.jobs.pop(job.job_id, None)
        stream = self._streams.pop(job.job_id, None)

        def op() -> None:
            queue = protocol.result_queue(self.scope, job.job_id)
            self.conn.forget_consumer(queue)  # deleting the queue cancels it
            self.conn.sub_channel.queue_delete(queue)

        try:
            if stream is not None:
                self.conn.call(op, timeout=5)
        except Exception as e:  # noqa: BLE001 - a broker that is down keeps it till result_ttl
            log.debug("could not delete the result queue of %s: %s", job.job_id, e)
            return
        spill.remove(job.spill_dir)  # no attach can ask for its results any more

    def attach(self, job_id: str, timeout: float = 10.0) -> Job:
        """Follow a job started by another client (or by this kernel before a restart).

        Results of finished calls come back from the job's durable result queue,
        the state and logs of the rest from the monitoring exchange."""
        if not JOB_ID.fullmatch(job_id):  # a path under spill_dir is made from it, and removed
            raise ConfigError(
                f"{job_id!r} is not a job id: a job id is 12 lowercase hex digits (job.job_id, "
                "as the job's view shows it)"
            )
        reply_to = protocol.result_queue(self.scope, job_id)
        if not self.conn.queue_exists(reply_to):
            raise ConfigError(
                f"job {job_id} is unknown here: its result queue {reply_to} does not exist "
                f"(it expired {self.config.result_ttl:g} s after its last client left, or the job "
                "was closed)"
            )

        # its files, if it spilled to our root: read (and removed) here from now on
        root = os.path.abspath(os.path.expanduser(self.config.spill_dir or spill.default_dir()))
        spill_dir = os.path.join(root, job_id)

        def make_job(info: dict[str, Any]) -> Job:
            job = Job(
                job_id,
                int(info["n"]),
                name=str(info.get("name", "")),
                errors=str(info.get("errors", "raise")),
                runtime=str(info.get("runtime", self.runtime)),
                backend=self,
                created=float(info["created"]) if "created" in info else None,
                spill_dir=spill_dir if os.path.isdir(spill_dir) else "",
            )
            self.jobs[job_id] = job
            return job

        stream = ResultStream(job_id, self.key, self._refuse, make_job=make_job)

        def bind(ch: Any) -> str:
            # passive: the queue exists with the arguments its job gave it (another client's
            # result_ttl, say); declaring it with ours would be refused
            ch.queue_declare(reply_to, passive=True)
            return reply_to

        self.conn.call(lambda: self.monitor.bind(self.conn.sub_channel, job_id))
        self.conn.consume(
            bind, stream.on_message, prefetch=0, timeout=timeout, closed_note=RESULTS_HELD,
            writable=True,
        )  # fmt: skip
        if not stream.ready.wait(timeout):
            raise ConfigError(
                f"job {job_id}: its results are held by another live client (a kernel still "
                "running it?); attach once that client has stopped, or wait for it to finish"
            )
        self._streams[job_id] = stream
        stream.job.add_done_callback(self._ended)  # type: ignore[union-attr]
        return stream.job  # type: ignore[return-value]

    def close(self) -> None:
        for job in list(self.jobs.values()):
            if job.done():
                self.release(job)
        self.spares.close()
        self.conn.close()

    def describe(self) -> str:
        from ...errors import mask_url

        return f"rabbitmq {mask_url(self.url)} runtime {self.runtime}"
