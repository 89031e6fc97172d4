"""The worker: what runs inside the container (``sif-magic worker``).

It consumes chunks from ``sif_magic.tasks.<runtime>`` (manual ack, a prefetch
that follows how long chunks take) and from its retry queue, runs them in a
pool of warm slot processes (``runner``), and hands what they report to the
``Outbox``, which publishes results and acks chunks in AMQP transactions on
the channel each chunk came from. A redelivered chunk goes to
``redelivery``; a task signed with another key to ``ForeignTasks``. A body
that is not ours, unsigned, badly signed or malformed is rejected to the
dead-letter queue without being unpickled. Events and heartbeats go to the
monitoring exchange; cancel / ping / shutdown arrive on the control exchange.

Threads: the main thread runs ``run`` (heartbeats, handing back foreign
tasks, shutdown); the transport's I/O thread runs every consumer callback
(``_on_task``, ``_on_control``, ``_on_broker_state``); the pool's dispatcher
thread reports through the ``EventReporter`` into the outbox and the events
buffer; the events flusher thread publishes event batches. The worker's own
fields are written in ``__init__``, except ``rejected`` and ``_foreign_answer``,
which only the I/O thread writes; each part guards its own state.

Standard library, pika and cloudpickle only (no IPython, no traitlets).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from .. import _version, protocol
from ..errors import IncompatibleWorkerError, wire_name
from ..protocol import ForeignKeyError, Heartbeat, ProtocolError, Task
from ..runner.chunk import Chunk
from ..runner.events import EventBuffer
from ..runner.pool import Pool, usable_cpus
from ..runner.reporter import EventReporter
from ..runner.versions import incompatibility, versions
from ..transport import Connection, declare_retry_queue, declare_task_queue
from . import foreign, idle
from .foreign import ForeignTasks
from .idle import IdleClock
from .outbox import Outbox
from .redelivery import redelivered

log = logging.getLogger("sif_magic.worker")


class Worker:
    def __init__(
        self,
        url: str,
        *,
        runtime: str = "default",
        processes: int = 0,
        key: bytes,
        worker_id: str = "",
        heartbeat: float = 2.0,
        ca_file: str = "",
        container: str = "",
        key_source: str = "",
        idle_timeout: float = 0.0,
    ) -> None:
        if not key:
            raise ValueError("a worker needs the signing key")
        self.url = url
        self.runtime = runtime
        self.processes = processes or usable_cpus()
        self.key = key
        self.key_id = protocol.key_id(key)
        self.key_source = key_source or "its key"
        self._foreign_answer = 0.0  # when a heartbeat last answered another key's ping
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.heartbeat_interval = heartbeat
        self.container = container or os.environ.get("SIF_MAGIC_CONTAINER", "none")
        self.slurm_job = os.environ.get("SLURM_JOB_ID", "")
        self.started = time.time()
        self.queue = protocol.task_queue(runtime)
        self.stopping = threading.Event()
        self.idle = IdleClock(idle_timeout)  # 0: never leaves for want of work
        self.rejected = 0
        self.conn = Connection(
            url,
            name=f"sif_magic worker {self.worker_id}",
            ca_file=ca_file,
            setup=lambda ch: declare_task_queue(ch, runtime),
            on_state=self._on_broker_state,
            on_return=Outbox.returned,
        )
        self.events = EventBuffer(self.worker_id, self.host, self._publish_events)
        self.outbox = Outbox(
            self.conn, key, self.events, self.queue, self.processes, self.worker_id, self.host
        )
        self.foreign = ForeignTasks(self.conn, self.key_id, self.key_source)
        reporter = EventReporter(
            self.events,
            self.outbox.publish_results,
            lambda c: self.outbox.ack_after_results(c.tag[0], c),
        )
        self.pool = Pool(self.processes, reporter, worker=self.worker_id, host=self.host)
        self.outbox.pool = self.pool

    # -- running ---------------------------------------------------------------
    def run(self) -> int:
        self.conn.start()
        self.pool.start()
        self.events.start()
        self.conn.consume(self._setup_control, self._on_control, auto_ack=True, exclusive=True)
        self.conn.consume(
            lambda ch: declare_task_queue(ch, self.runtime),
            self._on_task,
            prefetch=self.outbox.prefetch.current,  # follows how quick chunks are (outbox)
            transactional=True,
        )
        # one suspect call at a time, run before anything else (see protocol.retry_queue)
        self.conn.consume(
            lambda ch: declare_retry_queue(ch, self.runtime),
            lambda props, delivery, method, body: self._on_task(
                props, delivery, method, body, retry=True
            ),
            prefetch=1,
            transactional=True,
        )
        log.info(
            "worker %s consuming %s with %d processes (python %s, cloudpickle %s)",
            self.worker_id,
            self.queue,
            self.processes,
            *versions(),
        )
        self.send_heartbeat()
        next_beat = time.time() + self.heartbeat_interval
        while not self.stopping.wait(max(0.0, min(next_beat - time.time(), foreign.HOLD))):
            if time.time() >= next_beat:
                self.send_heartbeat()
                next_beat = time.time() + self.heartbeat_interval
            self.foreign.hand_back()
            if self.idle.timeout and idle.check(self):
                break
        self._shutdown()
        return 0

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def _shutdown(self) -> None:
        log.info("worker %s stopping: unfinished tasks go back to the queue", self.worker_id)
        try:  # tasks of another key go back as they came (not marked redelivered)
            handed = self.foreign.hand_back(everything=True)
            if handed is not None:
                handed.result(timeout=5)
        except Exception:  # noqa: BLE001 - the broker redelivers them
            pass
        self.pool.close()  # running calls die; their chunks are never acked -> redelivered
        self.events.stop()
        try:  # a goodbye, if the broker is there to take it (never wait for one that is down)
            self.send_heartbeat(state="bye", wait=False).result(timeout=2)
        except Exception:  # noqa: BLE001
            pass
        self.conn.close()

    def _on_broker_state(self, up: bool) -> None:
        if not up:
            return
        # chunks delivered on the lost connection come again from the broker: do not
        # run the ones not started yet twice (running ones finish; their results go out)
        generation = self.conn.generation

        def dropped(n: int) -> None:  # in the pool's dispatcher thread
            if n:
                log.info(
                    "dropped %d queued pieces of the lost connection; the broker redelivers them",
                    n,
                )

        self.pool.drop_queued(lambda c: c.tag[0].generation != generation, dropped)

    # -- messages in -------------------------------------------------------------
    def _setup_control(self, ch: Any) -> str:
        q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
        ch.queue_bind(q, protocol.CONTROL_EXCHANGE)
        return q

    def _on_control(self, props: Any, delivery: Any, method: Any, body: bytes) -> None:
        try:
            protocol.verify(self.key, props.type, body, props.headers)
            ctl = protocol.Control.decode(body)
        except ForeignKeyError as e:
            # a notebook with another key looks for workers: say so here, and let it know
            # at once (its ping is not answered otherwise) that this worker holds another key
            self.foreign.log(e.theirs, "A control message (a notebook looking for workers)")
            now = time.time()
            if now - self._foreign_answer >= 1.0:
                self._foreign_answer = now
                self.send_heartbeat(wait=False)
            return
        except ProtocolError as e:
            log.warning("ignored a control message: %s", e)
            return
        if ctl.op == "cancel":
            self.pool.cancel(ctl.job_id)  # remembered in pool.cancels
        elif ctl.op == "ping":
            self.send_heartbeat(wait=False)
        elif ctl.op == "hold":  # a scaler keeps this worker (see worker/idle.py)
            if ctl.worker == self.worker_id:
                self.idle.hold()
        elif ctl.op == "shutdown":
            if (not ctl.worker or ctl.worker == self.worker_id) and (
                not ctl.runtime or ctl.runtime == self.runtime
            ):
                self.stop()

    def _on_task(
        self, props: Any, delivery: Any, method: Any, body: bytes, retry: bool = False
    ) -> None:
        headers = props.headers or {}
        try:
            protocol.verify(self.key, props.type, body, headers)
            if props.type != "task":
                raise ProtocolError(f"a {props.type!r} message in the task queue")
            lost = int(headers.get(protocol.HDR_LOST, 0) or 0)
            task = Task.decode(body, lost=lost)
        except ForeignKeyError as e:
            queue = protocol.retry_queue(self.runtime) if retry else self.queue
            self.foreign.hold(e.theirs, delivery, queue, body, props)
            return
        except (ProtocolError, ValueError, TypeError) as e:
            self.rejected += 1
            log.warning(
                "rejected a message on %s to the dead-letter queue %s, unread: %s",
                self.queue,
                protocol.DEAD_QUEUE,
                e,
            )
            self.conn.reject(delivery, requeue=False)
            return
        self.idle.touch()
        if task.job_id in self.pool.cancels:
            self.conn.ack(delivery)
            return
        positions = list(task.only) if task.only is not None else list(range(len(task.calls)))
        if delivery.redelivered:
            redelivered(self, task, delivery, positions)
            return
        why = incompatibility((task.python, task.cloudpickle), versions())
        if why:
            self.outbox.fail(task, positions, wire_name(IncompatibleWorkerError), why, delivery)
            return
        self.pool.submit(Chunk.from_task(task, tag=(delivery, task.reply_to)), front=retry)

    def _publish_monitor(self, routing_key: str, body: bytes, kind: str, wait: bool) -> Any:
        """Events and heartbeats: best effort (not persistent, no confirms)."""
        return self.conn.publish(
            protocol.MONITOR_EXCHANGE,
            routing_key,
            body,
            kind=kind,
            key=self.key,
            persistent=False,
            wait=wait,
            confirm=False,
        )

    def _publish_events(self, batch: protocol.EventBatch) -> None:
        self._publish_monitor(protocol.events_key(batch.job_id), batch.encode(), "events", False)

    def heartbeat(self, state: str = "up") -> Heartbeat:
        py, cp = versions()
        return Heartbeat(
            worker=self.worker_id,
            host=self.host,
            pid=os.getpid(),
            runtime=self.runtime,
            slots=self.processes,
            busy=self.pool.busy,
            python=py,
            cloudpickle=cp,
            sif_magic=_version.__version__,
            t=time.time(),
            started=self.started,
            done=self.pool.done_calls,
            failed=self.pool.failed_calls,
            container=self.container,
            slurm_job=self.slurm_job,
            interval=self.heartbeat_interval,
            state=state,
        )

    def send_heartbeat(self, state: str = "up", wait: bool = False) -> Any:
        hb = self.heartbeat(state)
        kind = "heartbeat" if state == "up" else "bye"
        return self._publish_monitor(
            protocol.heartbeat_key(self.worker_id, kind), hb.encode(), "heartbeat", wait
        )
