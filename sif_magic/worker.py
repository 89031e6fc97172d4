"""The worker: what runs inside the container (``sif-magic worker``).

It consumes chunks from ``sif_magic.tasks.<runtime>`` (manual ack, a prefetch
that follows how long chunks take), runs them in a pool of warm slot
processes, and publishes results to the job's result queue in AMQP
transactions on the channel the chunks came from: a chunk's ack is committed
in the same transaction as its last results, so neither is stored without the
other. A chunk that comes back
redelivered (its worker died) is split into one message per call carrying a
loss count, so one poison call cannot take its neighbours down with it, and a
call lost ``max_lost`` times fails with "worker lost N times".

A body that is not ours, unsigned, badly signed or malformed is rejected to the
dead-letter queue without being unpickled. A task signed with another key (its
``sif-kid`` header names a key this worker does not hold: a notebook with
another key file) is neither run nor destroyed: the worker logs an error that
says how to fix the keys, holds the task a few seconds and hands it back to
the queue, unread, for a worker that holds its key. Events and heartbeats go
to the monitoring exchange; cancel / ping / shutdown arrive on the control
exchange.

Standard library, pika and cloudpickle only (no IPython, no traitlets).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from . import _version, protocol
from ._events import EventBuffer
from ._keys import worker_key_fix
from .errors import IncompatibleWorkerError, WorkerLostError, wire_name
from .pool import Chunk, Pool, usable_cpus
from .protocol import (
    FAILED,
    LOST,
    RETRYING,
    RUNNING,
    CallResult,
    ForeignKeyError,
    Heartbeat,
    ProtocolError,
    ResultSegment,
    Task,
)
from .transport import Connection, declare_retry_queue, declare_task_queue

log = logging.getLogger("sif_magic.worker")
PREFETCH_SECONDS = 0.01  # unstarted work a worker holds per process, beyond a few chunks
PREFETCH_MAX = 64
FOREIGN_HOLD = 5.0  # seconds a task signed with another key is held before it goes back
FOREIGN_LOG_EVERY = 600.0  # the error about a key id is logged again after this long


def _slot_script() -> str:
    from . import _slot

    return os.path.abspath(_slot.__file__)


@functools.cache
def _versions() -> tuple[str, str]:
    """This worker's Python major.minor and cloudpickle version (asked for every task)."""
    import cloudpickle

    return f"{sys.version_info[0]}.{sys.version_info[1]}", cloudpickle.__version__


def incompatibility(task: Task) -> str:
    """Why this worker cannot run the task's pickles ('' if it can)."""
    py, cp = _versions()
    if task.python and task.python != py:
        return (
            f"the notebook runs Python {task.python} but this worker runs Python {py}: functions "
            f"pickled by one cannot run on the other. Rebuild the runtime image with Python "
            f"{task.python} (sif-magic runtime def --python {task.python})"
        )
    if task.cloudpickle and task.cloudpickle.split(".")[0] != cp.split(".")[0]:
        return (
            f"the notebook has cloudpickle {task.cloudpickle} but this worker has {cp}: rebuild "
            f"the runtime image with cloudpickle=={task.cloudpickle}"
        )
    return ""


class _Reporter:
    def __init__(self, worker: Worker) -> None:
        self.w = worker

    def started(self, chunk: Chunk, index: int, attempt: int, t: float) -> None:
        self.w.events.state(chunk.job_id, index, RUNNING, attempt, t)

    def retrying(self, chunk: Chunk, index: int, attempt: int, note: str) -> None:
        self.w.events.state(chunk.job_id, index, RETRYING, attempt, time.time())
        self.w.events.note(chunk.job_id, index, note)

    def output(self, chunk: Chunk, index: int, stream: int, data: bytes) -> None:
        self.w.events.log(chunk.job_id, index, stream, data.decode("utf-8", "replace"))

    def results(self, chunk: Chunk, results: ResultSegment) -> None:
        self.w.publish_results(chunk, results)

    def chunk_done(self, chunk: Chunk) -> None:
        self.w.ack_after_results(chunk.tag[0], chunk)


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
    ) -> None:
        if not key:
            raise ValueError("a worker needs the signing key")
        self.url = url
        self.runtime = runtime
        self.processes = processes or usable_cpus()
        self.key = key
        self.key_id = protocol.key_id(key)
        self.key_source = key_source or "its key"
        # tasks signed with another key, until handed back: (due, delivery, queue, body, props)
        self._held: list[tuple[float, Any, str, bytes, Any]] = []
        self._held_lock = threading.Lock()
        self.foreign = 0  # messages signed with another key, so far
        # (what, key id) -> when that error was last logged
        self._key_logged: dict[tuple[str, str], float] = {}
        self._foreign_answer = 0.0  # when a heartbeat last answered another key's ping
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.heartbeat_interval = heartbeat
        self.container = container or os.environ.get("SIF_MAGIC_CONTAINER", "none")
        self.slurm_job = os.environ.get("SLURM_JOB_ID", "")
        self.started = time.time()
        self.queue = protocol.task_queue(runtime)
        self.stopping = threading.Event()
        self.cancelled: dict[str, float] = {}
        self.rejected = 0
        # results and finished deliveries wait here while the previous commit awaits
        # the broker, so under load one transaction carries many calls (_flush_results)
        self._outbox: dict[tuple[Any, str, str], tuple[Any, list[ResultSegment]]] = {}
        self._finished: list[Any] = []  # deliveries whose every result is in the outbox
        # a running chunk and one ready per process until chunks prove quick
        self._prefetch = self._prefetch_base = 2 * self.processes
        self._chunks_done = 0
        self._chunk_seconds = 1.0  # a chunk's time, averaged (until known: slow)
        self._outbox_lock = threading.Lock()
        self._flush_queued = False
        self.conn = Connection(
            url,
            name=f"sif_magic worker {self.worker_id}",
            ca_file=ca_file,
            setup=lambda ch: declare_task_queue(ch, runtime),
            on_state=self._on_broker_state,
            on_return=self._returned,
        )
        self.events = EventBuffer(self.worker_id, self.host, self._publish_events)
        self.pool = Pool(self.processes, _Reporter(self), worker=self.worker_id, host=self.host)

    # -- running ---------------------------------------------------------------
    def run(self) -> int:
        self.conn.start()
        self.pool.start()
        self.events.start()
        self.conn.consume(self._setup_control, self._on_control, auto_ack=True, exclusive=True)
        self.conn.consume(
            lambda ch: declare_task_queue(ch, self.runtime),
            self._on_task,
            prefetch=self._prefetch,  # adapts to how quick chunks are: _adapt_prefetch
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
            *_versions(),
        )
        self.send_heartbeat()
        next_beat = time.time() + self.heartbeat_interval
        while not self.stopping.wait(max(0.0, min(next_beat - time.time(), FOREIGN_HOLD))):
            if time.time() >= next_beat:
                self.send_heartbeat()
                next_beat = time.time() + self.heartbeat_interval
            self._hand_back()
        self._shutdown()
        return 0

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def _shutdown(self) -> None:
        log.info("worker %s stopping: unfinished tasks go back to the queue", self.worker_id)
        try:  # tasks of another key go back as they came (not marked redelivered)
            handed = self._hand_back(everything=True)
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
        dropped = self.pool.drop_queued(lambda c: c.tag[0].generation != generation)
        if dropped:
            log.info(
                "dropped %d queued pieces of the lost connection; the broker redelivers them",
                dropped,
            )

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
            self._log_foreign_key(e.theirs, "A control message (a notebook looking for workers)")
            now = time.time()
            if now - self._foreign_answer >= 1.0:
                self._foreign_answer = now
                self.send_heartbeat(wait=False)
            return
        except ProtocolError as e:
            log.warning("ignored a control message: %s", e)
            return
        if ctl.op == "cancel":
            now = time.time()
            for job_id, t in list(self.cancelled.items()):  # a worker may run for weeks
                if now - t > 3600:
                    del self.cancelled[job_id]
            self.cancelled[ctl.job_id] = now
            self.pool.cancel(ctl.job_id)
        elif ctl.op == "ping":
            self.send_heartbeat(wait=False)
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
            self._hold(e.theirs, delivery, queue, body, props)
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
        if task.job_id in self.cancelled:
            self.conn.ack(delivery)
            return
        positions = list(task.only) if task.only is not None else list(range(len(task.calls)))
        if delivery.redelivered:
            self._redelivered(task, delivery, positions)
            return
        why = incompatibility(task)
        if why:
            self._fail(task, positions, wire_name(IncompatibleWorkerError), why, delivery)
            return
        self.pool.submit(
            Chunk(
                job_id=task.job_id,
                chunk=task.chunk,
                calls=task.calls,
                func_hash=task.func_hash,
                func=task.func,
                args=task.args,
                star=task.star,
                timeout=task.timeout,
                retries=task.retries,
                env=task.env,
                tag=(delivery, task.reply_to),
                attempt_base=1 + task.lost,
                only=positions,
            ),
            front=retry,
        )

    def _redelivered(self, task: Task, delivery: Any, positions: list[int]) -> None:
        """A worker died holding this message: count the loss, split it, or give up."""
        lost = task.lost + 1
        if lost >= task.max_lost:
            why = (
                f"worker lost {lost} times while holding this call (a call that kills its "
                "worker, e.g. by exhausting the node's memory?); not retried again"
            )
            self._fail(task, positions, wire_name(WorkerLostError), why, delivery)
            return
        now = time.time()
        for pos in positions:  # lost: queued again, until a worker starts it
            idx = task.calls[pos]
            self.events.state(task.job_id, idx, LOST, lost + 1, now)
            self.events.note(task.job_id, idx, f"worker lost {lost} time(s); queued again")
        # re-packing the inputs unpickles them: done in a helper process, off this thread
        threading.Thread(
            target=self._split,
            args=(task, delivery, positions, lost),
            name="sif-split",
            daemon=True,
        ).start()

    def _split(self, task: Task, delivery: Any, positions: list[int], lost: int) -> None:
        """Republish a redelivered chunk as one message per call, each with its own input
        only and the loss count, then ack the original (a poison call then takes only
        itself down next time)."""
        parts: list[Task] = []
        if len(positions) > 1:
            try:
                proc = subprocess.run(
                    [sys.executable, _slot_script(), "split"],
                    input=pickle.dumps((task.args, positions), protocol=5),
                    capture_output=True,
                    timeout=600,
                    cwd=self.pool.cwd,
                )
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr.decode("utf-8", "replace")[-500:])
                blobs = pickle.loads(proc.stdout)
                parts = [
                    Task(
                        **{
                            **task.__dict__,
                            "calls": [task.calls[p]],
                            "args": blob,
                            "only": None,
                            "lost": lost,
                        }
                    )
                    for p, blob in zip(positions, blobs)
                ]
            except Exception as e:  # noqa: BLE001 - fall back to the whole inputs per call
                log.warning(
                    "could not re-pack the inputs of job %s chunk %s (%s); each call's "
                    "message carries the whole chunk's inputs",
                    task.job_id,
                    task.chunk,
                    e,
                )
        if not parts:
            parts = [Task(**{**task.__dict__, "only": [p], "lost": lost}) for p in positions]
        # a call on its last chance runs alone (the retry queue: one at a time per worker,
        # so a death is only counted against the call that was running); others go back
        # to the main queue
        queue = protocol.retry_queue(self.runtime) if lost >= task.max_lost - 1 else self.queue
        bodies = [part.encode() for part in parts]

        def op() -> None:
            # the parts and the ack of the original commit together: a connection lost
            # first drops both, and the broker hands the whole chunk out again
            for body in bodies:
                self.conn.stage_publish(
                    delivery, "", queue, body, kind="task", key=self.key,
                    headers={protocol.HDR_LOST: lost}, bound=True,
                )  # fmt: skip
            self.conn.ack(delivery)

        self.conn.call(op, wait=False)

    def _hold(self, theirs: str, delivery: Any, queue: str, body: bytes, props: Any) -> None:
        """A task signed with another key: neither run (it cannot be verified) nor
        destroyed (it is some notebook's work). Say how to fix the keys, and hand it
        back to the queue, unread, after FOREIGN_HOLD seconds (a worker holding its
        key may take it meanwhile; holding it stops it coming straight back here)."""
        self.foreign += 1
        self._log_foreign_key(theirs, f"Tasks on {queue}")
        with self._held_lock:
            self._held.append((time.time() + FOREIGN_HOLD, delivery, queue, body, props))

    def _hand_back(self, everything: bool = False) -> Any:
        """Republish held tasks of another key as they came (their sender's signature)
        and ack them, in one transaction per channel; returns the operation's future
        (None if nothing was due)."""
        now = time.time()
        with self._held_lock:
            due = [h for h in self._held if everything or h[0] <= now]
            self._held = [h for h in self._held if not (everything or h[0] <= now)]
        if not due:
            return None

        def op() -> None:
            for _, delivery, queue, body, props in due:
                self.conn.stage_forward(delivery, "", queue, body, props)
                self.conn.ack(delivery)

        return self.conn.call(op, wait=False)

    def _log_foreign_key(self, theirs: str, what: str) -> None:
        """An error, once per key id and kind of message (again after
        FOREIGN_LOG_EVERY), that names both key ids and says how to give this worker
        the notebook's key."""
        now = time.time()
        if now - self._key_logged.get((what, theirs), -FOREIGN_LOG_EVERY) < FOREIGN_LOG_EVERY:
            return
        self._key_logged[(what, theirs)] = now
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
            FOREIGN_HOLD,
        )

    def _fail(self, task: Task, positions: list[int], etype: str, why: str, delivery: Any) -> None:
        log.warning("job %s: %s", task.job_id, why)
        now = time.time()
        results = [
            CallResult(
                index=task.calls[p],
                status=FAILED,
                error={"type": etype, "message": why, "frames": []},
                t_start=now,
                t_end=now,
                attempt=task.lost + 1,
                worker=self.worker_id,
                host=self.host,
            )
            for p in positions
        ]
        chunk = Chunk(
            task.job_id, task.chunk, task.calls, "", b"", b"", tag=(delivery, task.reply_to)
        )
        for seg in ResultSegment.of(results):
            self.publish_results(chunk, seg)
        self.ack_after_results(delivery)

    # -- messages out --------------------------------------------------------------
    def publish_results(self, chunk: Chunk, results: ResultSegment) -> None:
        delivery, reply_to = chunk.tag
        key = (delivery.channel, chunk.job_id, reply_to)
        with self._outbox_lock:
            entry = self._outbox.get(key)
            if entry is None:
                self._outbox[key] = (delivery, [results])
            else:
                entry[1].append(results)
            flush = self._flush_wanted()
        if flush:
            self.conn.call(self._flush_results, wait=False)
        self.events.outcomes(chunk.job_id, results.indices, results.status)

    def ack_after_results(self, delivery: Any, chunk: Chunk | None = None) -> None:
        """Ack a chunk whose every result is in the outbox: in the transaction that
        publishes the last of them (or a later one)."""
        with self._outbox_lock:
            self._finished.append(delivery)
            flush = self._flush_wanted()
            prefetch = self._adapt_prefetch(chunk) if chunk is not None else 0
        if flush:
            self.conn.call(self._flush_results, wait=False)
        if prefetch:
            self.conn.set_prefetch(self.queue, prefetch)

    def _adapt_prefetch(self, chunk: Chunk) -> int:
        """With ``_outbox_lock`` held, ``chunk`` done: the task queue's new prefetch, or 0.

        A worker holds about PREFETCH_SECONDS of unstarted work per process beyond
        two chunks per process: quick chunks (a call each, say) need dozens in
        flight to hide the broker's round trip, while slow ones must not be hoarded
        away from other workers that are idle. A chunk's time is its calls times
        the time per call its slot measured lately."""
        seconds = len(chunk.only or ()) * self.pool.seconds_per_call(chunk.func_hash)
        self._chunk_seconds += 0.2 * (seconds - self._chunk_seconds)
        self._chunks_done += 1
        if self._chunks_done < 16:
            return 0
        self._chunks_done = 0
        ahead = self.processes * PREFETCH_SECONDS / max(self._chunk_seconds, 1e-6)
        want = min(PREFETCH_MAX, self._prefetch_base + int(ahead))
        if abs(want - self._prefetch) * 4 < self._prefetch:
            return 0  # not worth a round trip
        log.debug("chunks of %.2g s: prefetch %d -> %d", self._chunk_seconds, self._prefetch, want)
        self._prefetch = want
        return want

    def _flush_wanted(self) -> bool:
        """With ``_outbox_lock`` held: whether to queue a flush (none is queued yet; a
        queued one takes whatever arrives before it runs)."""
        wanted, self._flush_queued = not self._flush_queued, True
        return wanted

    def _flush_results(self) -> None:
        """In the I/O thread: stage everything in the outbox, one message per job and
        consumer channel, on that channel, followed by the acks of the finished
        chunks; the connection commits each channel's lot as one transaction."""
        with self._outbox_lock:
            outbox, self._outbox = self._outbox, {}
            finished, self._finished = self._finished, []
            self._flush_queued = False
        for (_, job_id, reply_to), (delivery, results) in outbox.items():
            body = protocol.ResultBatch(job_id, -1, results).encode()
            self.conn.stage_publish(delivery, "", reply_to, body, kind="result", key=self.key)
        for delivery in finished:
            self.conn.ack(delivery)

    def _returned(self, kind: str, routing_key: str) -> None:
        """The broker returned a message it could not route (a mandatory publish)."""
        if kind == "result":
            log.warning(
                "results for %s could not be delivered: that result queue expired or was "
                "deleted, so nobody waits for them; dropped",
                routing_key,
            )
        else:
            log.error(
                "the broker could not route a %s message to %r: it is lost", kind, routing_key
            )

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
        py, cp = _versions()
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


def main(args: Any) -> int:
    """``sif-magic worker``: options from flags, else SIF_MAGIC_* environment variables."""
    from ._keys import create_key_file, default_key_file, key_source, load_key, read_secret_file
    from .errors import SifMagicError

    logging.basicConfig(
        level=logging.INFO if not args.verbose else logging.DEBUG,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    env = os.environ.get
    try:
        url = args.amqp_url or env("SIF_MAGIC_AMQP_URL") or env("AMQP_URL", "")
        url_file = args.amqp_url_file or env("SIF_MAGIC_AMQP_URL_FILE", "")
        if not url and url_file:
            url = read_secret_file(url_file, "broker URL")
        if not url:
            print(
                "sif-magic worker: no broker URL: pass --amqp-url-file FILE (mode 600) or set "
                "SIF_MAGIC_AMQP_URL",
                file=sys.stderr,
            )
            return 2
        key_file = args.key_file or env("SIF_MAGIC_KEY_FILE", "")
        source = key_source("", key_file)
        path = Path(key_file).expanduser() if key_file else default_key_file()
        # whichever side runs first (this worker or a notebook) makes the key file
        created = source != "SIF_MAGIC_KEY" and create_key_file(path)
        key = load_key("", key_file)
        if created:
            log.warning(
                "there was no signing key at %s: made one (key id %s). A notebook whose home "
                "is this one uses it; elsewhere copy this file to ~/.sif_magic/key there "
                "(mode 600).",
                path,
                protocol.key_id(key),
            )
        log.info("signing key: %s (key id %s)", source, protocol.key_id(key))
        worker = Worker(
            url,
            runtime=args.runtime or env("SIF_MAGIC_RUNTIME", "default"),
            processes=int(args.processes or env("SIF_MAGIC_PROCESSES", "0") or 0),
            key=key,
            worker_id=args.worker_id or env("SIF_MAGIC_WORKER_ID", ""),
            heartbeat=args.heartbeat,
            ca_file=args.ca_file or env("SIF_MAGIC_CA_FILE", ""),
            key_source=source,
        )
        signal.signal(signal.SIGTERM, worker.stop)
        signal.signal(signal.SIGINT, worker.stop)
        return worker.run()
    except SifMagicError as e:
        print(f"sif-magic worker: {e}", file=sys.stderr)
        return 1
