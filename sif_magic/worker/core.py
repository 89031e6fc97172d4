"""The worker: what runs inside the container (``sif-magic worker``).

It consumes chunks from ``sif_magic.<key id>.tasks.<runtime>`` (manual ack, a prefetch
that follows how long chunks take) and from its retry queue, runs them in a
pool of warm slot processes (``runner``), and hands what they report to the
``Outbox``, which publishes results and acks chunks in AMQP transactions on
the channel each chunk came from. ``Claims`` keeps every delivery it holds
short of the broker's consumer_timeout (claimed or handed back after
``--claim-after`` seconds); ``walltime`` says what can finish before the
worker's end, ``leaving`` hands back what it holds when it stops. A
redelivered chunk (or one whose claim expired) goes to ``redelivery``; a
task signed with another key to ``ForeignTasks``, and so does a task asking
for more GPUs or CPUs than this worker has, or whose inputs are in a spill file
it cannot read (it is held a while and handed back to the queue for a worker
that can run it). A body
that is not ours, unsigned, badly signed or malformed is rejected to the
dead-letter queue without being unpickled. Replays are dropped unrun: copies
of tasks taken here before and tasks of jobs that have ended (``gate``),
control messages that are stale or seen before (``protocol.replay``). Events and heartbeats go to the
monitoring exchange; cancel / ping / shutdown arrive on the control exchange.

Threads: the main thread runs ``run`` (heartbeats, shutdown); the transport's I/O thread runs every consumer callback
(``_on_task``, ``_on_control``, ``_on_broker_state``); the pool's dispatcher
thread reports through the ``EventReporter`` into the outbox and the events
buffer; the events flusher thread publishes event batches. The worker's own
fields are written in ``__init__``, except ``rejected`` and ``_taken``, which only the I/O
thread writes (it alone uses ``seen_controls`` and ``gate``), and ``stop_note``
(why what it holds goes back), which the main thread writes before it stops;
each part guards its own state.

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
from ..runner import spill
from ..runner.chunk import Chunk
from ..runner.events import EventBuffer
from ..runner.pool import Pool, usable_cpus
from ..runner.records import RESULT_CAP_ENV, result_cap
from ..runner.reporter import EventReporter
from ..runner.resources import need_of
from ..runner.versions import incompatibility, versions
from ..transport import (
    Connection,
    declare_private_queue,
    declare_retry_queue,
    declare_task_queue,
)
from . import idle, leaving
from .claims import CHUNKS_HELD, CLAIM_AFTER, LEASE, Claims, expired_claim
from .foreign import ForeignTasks, spill_unseen
from .gate import TaskGate
from .idle import IdleClock
from .outbox import Outbox
from .redelivery import redelivered
from .walltime import END_MARGIN, Walltime, job_end

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
        gpus: list[str] | None = None,
        cpus: int = 0,
        queue_type: str = "classic",
        claim_after: float = CLAIM_AFTER,
        lease: float = LEASE,
        lifetime: float = 0.0,
        end_margin: float = END_MARGIN,
        max_message_mb: float = 0,
        idle_timeout: float = 0.0,
    ) -> None:
        """``gpus``: the device ids its call processes hold (one each, unless calls ask
        for more); ``processes`` then defaults to their number. ``cpus``: the CPUs it
        hands to calls that ask for some (default: usable CPUs)."""
        if not key:
            raise ValueError("a worker needs the signing key")
        self.url = url
        self.runtime = runtime
        self.gpus = list(gpus or [])
        self.cpus = cpus or usable_cpus()
        self.processes = processes or len(self.gpus) or usable_cpus()
        self.queue_type = queue_type  # of its task queues: classic, or quorum (a cluster)
        self.key = key
        self.key_id = protocol.key_id(key)
        self.key_source = key_source or "its key"
        self.scope = self.key_id  # every name it uses: sif_magic.<key id>.*
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.heartbeat_interval = heartbeat
        self.container = container or os.environ.get("SIF_MAGIC_CONTAINER", "none")
        self.slurm_job = os.environ.get("SLURM_JOB_ID", "")
        self.spill_root = spill.seen_root()  # [path, id], or [] if it cannot use one
        self.started = time.time()
        self.queue = protocol.task_queue(self.scope, runtime)
        self.stopping = threading.Event()
        self.idle = IdleClock(idle_timeout)  # 0: never leaves for want of work
        self.rejected = 0
        self._taken: list[tuple[Chunk, bool]] = []  # chunks for the pool, handed on together
        self.seen_controls = protocol.SeenIds()
        self.conn = Connection(
            url,
            scope=self.scope,
            name=f"sif_magic worker {self.worker_id}",
            ca_file=ca_file,
            queue_type=queue_type,
            setup=lambda ch: declare_task_queue(ch, self.scope, runtime, queue_type),
            on_state=self._on_broker_state,
            on_return=Outbox.returned,
            on_channel_closed=self._on_channel_closed,
            on_events_done=self._submit_taken,
            max_message=int(max_message_mb * (1 << 20)),
        )
        self.events = EventBuffer(self.worker_id, self.host, self._publish_events)
        self.outbox = Outbox(
            self.conn, key, self.events, self.queue, self.processes, self.worker_id, self.host
        )
        self.foreign = ForeignTasks(self.conn, key, self.key_source)
        self.gate = TaskGate(self.conn)
        reporter = EventReporter(
            self.events,
            self.outbox.publish_results,
            lambda c: self.outbox.ack_after_results(c.tag[0], c),
        )
        self.pool = Pool(
            self.processes,
            reporter,
            worker=self.worker_id,
            host=self.host,
            devices=self.gpus,
            cpus=self.cpus,
        )
        self.outbox.pool = self.pool
        self.claims = self.outbox.claims = Claims(self, claim_after, lease)
        self.walltime = Walltime(*job_end(lifetime, self.started), self.started, end_margin)
        self.stop_note = "returned: its worker was stopped; queued again (not a loss)"

    # -- running ---------------------------------------------------------------
    def run(self) -> int:
        self.conn.start()
        # the slots fail a call whose result alone would not fit in a message (records.py)
        os.environ[RESULT_CAP_ENV] = str(result_cap(self.conn.max_message))
        self.pool.start()
        self.events.start()
        self.conn.consume(self._setup_control, self._on_control, auto_ack=True, exclusive=True)
        self.conn.consume(
            lambda ch: declare_task_queue(ch, self.scope, self.runtime, self.queue_type),
            self._on_task,
            prefetch=self.outbox.prefetch.current,  # follows how quick chunks are (outbox)
            transactional=True,
            closed_note=CHUNKS_HELD,
        )
        # one suspect call at a time, run before anything else (see protocol.retry_queue)
        self.conn.consume(
            lambda ch: declare_retry_queue(ch, self.scope, self.runtime, self.queue_type),
            lambda props, delivery, method, body: self._on_task(
                props, delivery, method, body, retry=True
            ),
            prefetch=1,
            transactional=True,
            closed_note=CHUNKS_HELD,
        )
        log.info(
            "worker %s consuming %s with %d processes, %s, %d CPUs for calls "
            "(python %s, cloudpickle %s)",
            self.worker_id,
            self.queue,
            self.processes,
            f"{len(self.gpus)} GPU(s) ({','.join(self.gpus)})" if self.gpus else "no GPU",
            self.cpus,
            *versions(),
        )
        leaving.announce(self)
        self.send_heartbeat()
        next_beat = time.time() + self.heartbeat_interval
        tick = min(1.0, self.claims.claim_after / 4)
        while not self.stopping.wait(max(0.0, min(next_beat - time.time(), tick))):
            if time.time() >= next_beat:
                self.send_heartbeat()
                next_beat = time.time() + self.heartbeat_interval
            self.foreign.hand_back()
            self.claims.tick()
            leaving.check_end(self)
            if self.idle.timeout and idle.check(self):
                break
        self._shutdown()
        return 0

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def _shutdown(self) -> None:
        log.info("worker %s stopping: unfinished tasks go back to the queue", self.worker_id)
        if self.conn.connected:
            try:  # first: nothing more arrives (a hand-back's ack would let more in)
                leaving.take_nothing_more(self).result(timeout=5)
            except Exception:  # noqa: BLE001 - what arrives later comes back redelivered
                pass
        try:  # tasks held for other workers go back, re-signed (not marked redelivered)
            handed = self.foreign.hand_back(everything=True)
            if handed is not None:
                handed.result(timeout=5)
        except Exception:  # noqa: BLE001 - the broker redelivers them
            pass
        leaving.give_back(self)  # what it holds goes back, not counted as lost
        self.events.stop()
        try:  # a goodbye, if the broker is there to take it (never wait for one that is down)
            self.send_heartbeat(state="bye", wait=False).result(timeout=2)
        except Exception:  # noqa: BLE001
            pass
        self.conn.close()

    def _on_broker_state(self, up: bool) -> None:
        self._submit_taken()  # before any drop_queued below: it must see them
        if not up:
            return
        # chunks delivered on the lost connection come again from the broker: do not
        # run the ones not started yet twice (running ones finish; their results go out)
        generation = self.conn.generation

        def dropped(chunks: list) -> None:  # in the pool's dispatcher thread
            if chunks:
                log.info(
                    "dropped %d queued chunks of the lost connection; the broker redelivers them",
                    len(chunks),
                )

        # (not the pieces of a claimed chunk: acked, the broker never sends it again)
        self.pool.drop_queued(
            lambda c: c.tag[0].generation != generation and not self.claims.claimed(c.tag[0]),
            dropped,
        )
        self.claims.lost(lambda d: d.generation == generation)

    def _on_channel_closed(self, queue: str, channel: Any) -> None:
        """The broker closed the channel of our consumer of ``queue`` (logged by the
        transport): its deliveries come again, marked redelivered; forget the ones
        not started (running ones finish, their results go out)."""
        self._submit_taken()
        self.pool.drop_queued(
            lambda c: (
                c.tag[0].channel is channel and not c.started and not self.claims.claimed(c.tag[0])
            )
        )
        self.claims.lost(lambda d: d.channel is not channel)

    # -- messages in -------------------------------------------------------------
    def _setup_control(self, ch: Any) -> str:
        q = declare_private_queue(ch, self.scope, "control")
        ch.queue_bind(q, protocol.control_exchange(self.scope))
        return q

    def _on_control(self, props: Any, delivery: Any, method: Any, body: bytes) -> None:
        try:
            signed = protocol.verify(self.key, props.type, body, props.headers)
            ctl = protocol.Control.decode(body)
            protocol.fresh(signed, protocol.CONTROL_MAX_AGE)  # stale: an old copy
            self.seen_controls.check(signed, signed.msg_id)  # seen: a copy
        except ProtocolError as e:  # signed with another key too: not this scope's notebooks
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
        source = protocol.retry_queue(self.scope, self.runtime) if retry else self.queue
        try:
            signed = protocol.verify(self.key, props.type, body, headers)
            if props.type != "task":
                raise ProtocolError(f"a {props.type!r} message in the task queue")
            task = Task.decode(body, lost=signed.lost)
        except ForeignKeyError as e:
            self.foreign.refuse(e.theirs, delivery, source)
            return
        except (ProtocolError, ValueError, TypeError) as e:
            self.rejected += 1
            log.warning(
                "rejected a message on %s to the dead-letter queue %s, unread: %s",
                self.queue,
                protocol.dead_queue(self.scope),
                e,
            )
            self.conn.reject(delivery, requeue=False)
            return
        if not self.gate.admit(task, signed, delivery.redelivered, headers, self.pool.cancels):
            self.conn.ack(delivery)  # a copy, or a task of a cancelled or ended job
            return
        positions = list(task.only) if task.only is not None else list(range(len(task.calls)))
        if delivery.redelivered or expired_claim(headers):  # its worker died holding it
            redelivered(self, task, delivery, positions)  # (its parts: new messages)
            return
        # its inputs in a file of a directory this worker does not see
        unseen = spill.unreadable(task.args, self.spill_root, task.env.get(spill.ENV_ROOT_ID, ""))
        if unseen:
            spill_unseen(self, task, delivery, source, body, unseen)
            return
        need = need_of(task.resources)
        if not self.pool.can_run(need):  # another worker may have them: hand it back
            self.foreign.hold_for_others(
                f"each call asks for {need.text()}, and this worker has "  # type: ignore[union-attr]
                f"{len(self.gpus)} GPU(s) and {self.cpus} CPUs",
                delivery,
                source,
                task,
                body,
            )
            return
        self.idle.touch()  # work this worker can do (not what it holds for others)
        why = incompatibility((task.python, task.cloudpickle), versions())
        if why:
            self.outbox.fail(task, positions, wire_name(IncompatibleWorkerError), why, delivery)
            return
        late = self.walltime.refuse(task, self.pool.call_times.seen(task.func_hash))
        if late or self.claims.draining:
            if not self.claims.draining:
                log.info("job %s chunk %s: %s; taking nothing more", task.job_id, task.chunk, late)
                leaving.take_nothing_more(self)
            self.claims.hold(delivery, task, body, source, None, late or self.stop_note)
            return
        if retry and self.claims.retry_busy():  # one suspect call at a time: not now
            self.claims.hold(delivery, task, body, source, None)
            return
        chunk = Chunk.from_task(task, tag=(delivery, task.reply_to))
        self.claims.hold(delivery, task, body, source, chunk)
        self._taken.append((chunk, retry))  # to the pool once pika's burst is handed out

    def _submit_taken(self) -> None:
        """On the I/O thread: the chunks taken since the last call go to the pool in
        one hand-over (one wake-up of its dispatcher, not one per delivery)."""
        if self._taken:
            taken, self._taken = self._taken, []
            self.pool.submit_many(taken)

    def _publish_monitor(self, routing_key: str, body: bytes, kind: str, wait: bool) -> Any:
        """Events and heartbeats: best effort (not persistent, no confirms)."""
        return self.conn.publish(
            protocol.monitor_exchange(self.scope),
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
            gpus=self.gpus,
            cpus=self.cpus,
            slot_devices=self.pool.slot_devices if self.gpus else [],
            spill=self.spill_root,
        )

    def send_heartbeat(self, state: str = "up", wait: bool = False) -> Any:
        hb = self.heartbeat(state)
        kind = "heartbeat" if state == "up" else "bye"
        return self._publish_monitor(
            protocol.heartbeat_key(self.worker_id, kind), hb.encode(), "heartbeat", wait
        )
