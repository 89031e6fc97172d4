"""The RabbitMQ backend: chunks to ``sif_magic.tasks.<runtime>``, results back
through a durable per-job queue, progress from the monitoring exchange.

Results are consumed without acking while the job object lives: if this
kernel dies, they return to the job's queue (which outlives its last consumer
by ``result_ttl``), so ``Executor.attach(job_id)`` finds every finished call
again. ``Job.close()`` / ``Executor.shutdown()`` delete the queue. The first
message of every result queue is a ``jobinfo`` record (calls, name, ...)
so a re-attaching client knows the job's size.

Workers announce themselves with heartbeats. One that holds another signing
key (its heartbeat's ``sif-kid`` header names another key) is reported at
once with the fix, and a job whose runtime has only such workers fails before
anything is sent. When a worker stops answering (no heartbeat for three of its
intervals) or says goodbye, the calls it was running are shown ``lost`` until
the broker hands them to another worker (a watcher thread, once a second).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from .. import protocol
from .._keys import key_source, notebook_key_fix
from .._serialize import cloudpickle_version, python_version
from ..config import SifConfig
from ..errors import ConfigError, IncompatibleWorkerError, NoWorkersError
from ..job import Job
from ..protocol import ForeignKeyError, Heartbeat, ProtocolError, ResultBatch, Task
from ..transport import Connection, declare_task_queue
from . import Backend, JobTask

log = logging.getLogger("sif_magic.rabbitmq")
ANNOUNCE_WAIT = 1.0  # seconds a consumer of the task queue has to answer a ping
FOREIGN_WAIT = 2.0  # seconds a worker with our key has to answer, when one with another did


def _overdue(hb: Heartbeat, last_seen: float, now: float) -> bool:
    """Whether a worker has not been heard from for three of its intervals."""
    return now - last_seen > 3 * max(hb.interval, 0.5) + 1


class RabbitBackend(Backend):
    name = "rabbitmq"

    def __init__(self, config: SifConfig) -> None:
        self.config = config
        self.url = config.get_amqp_url()
        self.key = config.get_key()
        self.key_id = protocol.key_id(self.key)
        self.key_source = key_source(config.key, config.key_file)
        self.runtime = config.runtime
        self.session = uuid.uuid4().hex[:8]
        self.jobs: dict[str, Job] = {}
        self._workers: dict[str, Heartbeat] = {}
        self._seen: dict[str, float] = {}
        # workers of this runtime that sign with another key: worker -> (heartbeat, key id)
        self._foreign: dict[str, tuple[Heartbeat, str]] = {}
        self._gone: set[str] = set()  # workers whose running calls were marked lost
        self._lock = threading.Lock()
        self.rejected = 0
        self.foreign = 0  # monitoring messages signed with another key, so far
        self._pinged = 0.0
        self.slurm_jobs: list[str] = []  # submitted from here; shown until their workers join
        self._squeue_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self.conn = Connection(
            self.url,
            name=f"sif_magic client {self.session}",
            connect_timeout=config.connect_timeout,
            ca_file=config.ca_file,
            setup=lambda ch: declare_task_queue(ch, self.runtime),
            on_state=self._on_broker_state,
        ).start()
        self._monitor_queue = self.conn.consume(
            self._setup_monitor, self._on_monitor, auto_ack=True, exclusive=True
        )
        self.ping()
        threading.Thread(target=self._watch, name="sif-watch", daemon=True).start()

    # -- monitoring --------------------------------------------------------------
    def _setup_monitor(self, ch: Any) -> str:
        q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self._monitor_queue = q  # a new name after every reconnect
        ch.queue_bind(q, protocol.MONITOR_EXCHANGE, "worker.#")
        if self.config.monitor:
            for job_id in list(self.jobs):
                ch.queue_bind(q, protocol.MONITOR_EXCHANGE, f"job.{job_id}.#")
        return q

    def _on_monitor(self, props: Any, delivery: Any, method: Any, body: bytes) -> None:
        try:
            protocol.verify(self.key, props.type, body, props.headers)
            if props.type == "events":
                batch = protocol.EventBatch.decode(body)
                job = self.jobs.get(batch.job_id)
                if job is not None:
                    job.apply_events(batch)
            elif props.type == "heartbeat":
                hb = Heartbeat.decode(body)
                with self._lock:
                    self._workers[hb.worker] = hb
                    self._seen[hb.worker] = time.time()
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
        if hb.runtime != self.runtime:
            return
        with self._lock:
            if hb.state == "bye":
                self._foreign.pop(hb.worker, None)
                return
            new = hb.worker not in self._foreign
            self._foreign[hb.worker] = (hb, theirs)
            self._seen[hb.worker] = time.time()
        if new:
            log.warning("%s", self._key_mismatch(hb, theirs))

    def _key_mismatch(self, hb: Heartbeat, theirs: str) -> str:
        return (
            f"worker {hb.worker} on host {hb.host} (runtime {hb.runtime!r}) holds another "
            f"signing key (key id {theirs}) than this kernel (key id {self.key_id}, from "
            f"{self.key_source}): it cannot run this kernel's calls, and this kernel cannot "
            f"read its messages. Fix: {notebook_key_fix(self.key_source)}."
        )

    def _foreign_workers(self) -> list[tuple[Heartbeat, str]]:
        """Workers of this runtime that hold another key and were heard from lately."""
        now = time.time()
        with self._lock:
            return [
                (hb, kid)
                for wid, (hb, kid) in self._foreign.items()
                if not _overdue(hb, self._seen.get(wid, 0.0), now)
            ]

    def _watch(self) -> None:
        """Once a second: the running calls of a worker that stopped answering are lost."""
        while not self.conn.closed:
            time.sleep(1.0)
            try:
                self._mark_lost()
            except Exception:  # noqa: BLE001 - a display hint must never stop the watch
                log.debug("marking lost calls failed", exc_info=True)

    def _mark_lost(self) -> None:
        now = time.time()
        with self._lock:
            gone = {
                wid: hb
                for wid, hb in self._workers.items()
                if hb.state == "bye" or _overdue(hb, self._seen.get(wid, 0.0), now)
            }
        new = [wid for wid in gone if wid not in self._gone]
        self._gone = set(gone)  # a worker heard from again can lose calls again later
        for wid in new:
            hb = gone[wid]
            if hb.state == "bye":
                note = f"worker {wid} on {hb.host} stopped; waiting to be redelivered"
            else:
                note = f"worker {wid} on {hb.host} stopped answering; waiting to be redelivered"
            for job in list(self.jobs.values()):
                if not job.done():
                    job.mark_lost(wid, note)

    def _on_broker_state(self, up: bool) -> None:
        for job in list(self.jobs.values()):
            job.broker_down = not up
            job.version += 1

    def ping(self) -> None:
        self._pinged = time.time()
        body = protocol.Control(op="ping").encode()
        self.conn.publish(
            protocol.CONTROL_EXCHANGE, "", body, kind="control", key=self.key, persistent=False
        )

    def workers(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        with self._lock:
            for wid, hb in self._workers.items():
                d = dict(hb.__dict__)
                d["last_seen"] = self._seen.get(wid, 0.0)
                if hb.state == "bye":
                    d["state"] = "gone"
                elif _overdue(hb, d["last_seen"], now):
                    d["state"] = "lost"
                out.append(d)
            for wid, (hb, kid) in self._foreign.items():
                d = dict(hb.__dict__)
                d["last_seen"] = self._seen.get(wid, 0.0)
                d["state"] = f"another key ({kid})"
                if _overdue(hb, d["last_seen"], now):
                    d["state"] = f"lost, another key ({kid})"
                out.append(d)
        return out + self._slurm_rows({d["slurm_job"] for d in out if d.get("slurm_job")})

    def _slurm_rows(self, joined: set[str]) -> list[dict[str, Any]]:
        """A row per SLURM job submitted from here whose workers have not joined yet."""
        waiting = [j for j in self.slurm_jobs if j not in joined]
        if not waiting:
            return []
        at, known = self._squeue_cache
        if time.time() - at > 2.0:  # squeue at most every 2 s
            try:
                from ..launch import slurm

                known = {st.job_id: st for st in slurm.status(waiting)}
            except Exception as e:  # noqa: BLE001 - no squeue here: say so in the row
                known = {j: e for j in waiting}
            self._squeue_cache = (time.time(), known)
        rows = []
        for j in waiting:
            st = known.get(j)
            if st is None:
                continue
            state = st.describe() if hasattr(st, "describe") else f"unknown ({st})"
            if getattr(st, "state", "") == "GONE":
                self.slurm_jobs.remove(j)
                continue
            rows.append(
                {
                    "worker": f"slurm-{j}",
                    "host": "(not joined yet)",
                    "pid": "",
                    "runtime": self.runtime,
                    "slots": "",
                    "busy": "",
                    "python": "",
                    "cloudpickle": "",
                    "container": "",
                    "slurm_job": j,
                    "last_seen": time.time(),
                    "state": f"SLURM {state}",
                }
            )
        return rows

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
        rt = runtime or self.runtime
        return [w for w in self.workers() if w["state"] == "up" and rt in ("*", w["runtime"])]

    def slots(self) -> int:
        return sum(int(w.get("slots", 0)) for w in self.live_workers()) or 0

    # -- jobs ------------------------------------------------------------------------
    def _consumers(self) -> int:
        queue = protocol.task_queue(self.runtime)

        def op() -> int:
            ok = self.conn.channel.queue_declare(
                queue, durable=True, arguments=protocol.task_queue_arguments()
            )
            return ok.method.consumer_count

        return self.conn.call(op)

    def _wait_for_workers(self) -> None:
        """Until a worker that holds this kernel's key announces itself. Fails within
        FOREIGN_WAIT (nothing sent) if the runtime's only workers hold another key,
        and after ``no_worker_timeout`` if nobody consumes its queue; consumers that
        do not announce themselves within ANNOUNCE_WAIT of a ping are sent the job."""
        deadline = time.time() + self.config.no_worker_timeout
        self.ping()
        asked, foreign_since = time.time(), 0.0
        while not self.live_workers():
            now = time.time()
            foreign = self._foreign_workers()
            if foreign:
                if not foreign_since:  # give a worker with our key time to answer a ping
                    foreign_since = now
                    if now - self._pinged > 0.5:
                        self.ping()
                elif now - foreign_since >= FOREIGN_WAIT:
                    raise ConfigError(
                        f"no worker of runtime {self.runtime!r} holds this kernel's signing "
                        "key: "
                        + " ".join(self._key_mismatch(hb, kid) for hb, kid in foreign[:3])
                        + " Nothing was sent: run the cell again once the keys match."
                    )
            elif self._consumers() > 0:
                if now - asked >= ANNOUNCE_WAIT:
                    break
            elif now >= deadline:
                raise NoWorkersError(
                    f"no worker consumes {protocol.task_queue(self.runtime)} (waited "
                    f"{self.config.no_worker_timeout:g} s). Start one with: sif-magic worker "
                    f"--amqp-url-file FILE --runtime {self.runtime}  (or sif-magic workers start / "
                    f"sif-magic slurm submit), then run the cell again."
                )
            time.sleep(0.1)
        self._check_versions()

    def _check_versions(self) -> None:
        if not self.live_workers():
            self.ping()
            time.sleep(0.2)
        py, cp = python_version(), cloudpickle_version()
        bad = [
            w
            for w in self.live_workers()
            if w.get("python") != py
            or str(w.get("cloudpickle", "")).split(".")[0] != cp.split(".")[0]
        ]
        if bad and len(bad) == len(self.live_workers()):
            w = bad[0]
            raise IncompatibleWorkerError(
                f"every worker of runtime {self.runtime!r} is incompatible with this kernel: "
                f"worker {w['worker']} runs Python {w.get('python')} with cloudpickle "
                f"{w.get('cloudpickle')}, this kernel Python {py} with cloudpickle {cp}. "
                f"Rebuild the runtime: sif-magic runtime def --python {py} (it pins cloudpickle=={cp})"
            )

    def start_job(self, job: Job, task: JobTask) -> None:
        if self.live_workers():
            self._check_versions()  # workers of this runtime announced themselves lately
        else:
            self._wait_for_workers()  # asks the broker, waits, or says how to start one
        reply_to = protocol.result_queue(job.job_id)
        self.jobs[job.job_id] = job
        self._consume_results(job)  # declares the queue (and the monitor binding) first
        info = json.dumps(
            {
                "job": job.job_id,
                "n": job.n,
                "name": job.name,
                "errors": job.errors,
                "runtime": self.runtime,
                "created": job.created,
                "chunks": len(task.chunks),
            }
        ).encode()
        # queued ahead of the tasks; not awaited (a job's first result arrives sooner)
        self.conn.publish(
            "", reply_to, info, kind="jobinfo", key=self.key, mandatory=True, wait=False
        )
        threading.Thread(
            target=self._publish_chunks, args=(job, task, reply_to), name="sif-publish", daemon=True
        ).start()

    def _consume_results(self, job: Job) -> None:
        reply_to = protocol.result_queue(job.job_id)

        def setup(ch: Any) -> str:
            # one trip to the I/O thread: the queue, the monitor binding, the consumer
            ch.queue_declare(
                reply_to,
                durable=True,
                arguments=protocol.result_queue_arguments(self.config.result_ttl),
            )
            if self.config.monitor:
                ch.queue_bind(self._monitor_queue, protocol.MONITOR_EXCHANGE, f"job.{job.job_id}.#")
            return reply_to

        def on_result(props: Any, delivery: Any, method: Any, body: bytes) -> None:
            try:
                protocol.verify(self.key, props.type, body, props.headers)
                if props.type == "jobinfo":
                    return
                batch = ResultBatch.decode(body)
                if batch.job_id != job.job_id:
                    raise ProtocolError(
                        f"results of job {batch.job_id} in the queue of {job.job_id}"
                    )
            except (ProtocolError, ValueError, KeyError, TypeError) as e:
                self.rejected += 1
                log.warning("dead-lettered a message in %s: %s", reply_to, e)
                self.conn.reject(delivery, requeue=False)
                return
            job.apply_batch(batch)

        job._consumer_tag = self.conn.consume(setup, on_result, prefetch=0)  # type: ignore[attr-defined]

    def _publish_chunks(self, job: Job, task: JobTask, reply_to: str) -> None:
        """Publish the job's chunks in transactions of up to BATCH messages / ~4 MB,
        with a few transactions in flight (the I/O thread commits them in order)."""
        queue = protocol.task_queue(self.runtime)
        pending: list = []
        batch: list[tuple[str, str, bytes, str]] = []
        size = 0
        for c in task.chunks:
            if job.cancel_requested:
                break
            body = Task(
                job_id=job.job_id,
                chunk=c.number,
                calls=c.calls,
                reply_to=reply_to,
                func=task.func,
                args=c.args,
                func_hash=task.func_hash,
                star=task.star,
                timeout=task.timeout,
                retries=task.retries,
                max_lost=task.max_lost,
                env=task.env,
                python=python_version(),
                cloudpickle=cloudpickle_version(),
                client=self.session,
            ).encode()
            batch.append(("", queue, body, "task"))
            size += len(body)
            if len(batch) >= self.BATCH or size >= 4 * 1024 * 1024:
                pending.append(self.conn.publish_batch(batch, key=self.key, wait=False))
                batch, size = [], 0
                if len(pending) > 4:
                    self._settle(job, pending.pop(0))
        if batch:
            pending.append(self.conn.publish_batch(batch, key=self.key, wait=False))
        for fut in pending:
            self._settle(job, fut)

    BATCH = 200

    @staticmethod
    def _settle(job: Job, fut: Any) -> None:
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001
            log.error("job %s: chunks could not be published: %s", job.job_id, e)

    def cancel(self, job: Job) -> None:
        job.cancel_requested = True
        body = protocol.Control(op="cancel", job_id=job.job_id).encode()
        # never block on a broker that is down: the cancel goes out when it is back
        self.conn.publish(
            protocol.CONTROL_EXCHANGE,
            "",
            body,
            kind="control",
            key=self.key,
            persistent=False,
            wait=False,
        )
        # running calls report 'cancelled' as the workers kill them: wait for those
        # (at most 2 s); calls still queued on the broker are cancelled here and now
        deadline = time.time() + 2.0
        while time.time() < deadline and not job.done():
            if not (job.count("running") or job.count("retrying")):
                break
            time.sleep(0.02)
        job.mark_cancelled()

    def release(self, job: Job) -> None:
        """Forget a finished job: delete its result queue on the broker."""
        self.jobs.pop(job.job_id, None)
        tag = getattr(job, "_consumer_tag", None)

        def op() -> None:
            self.conn.sub_channel.queue_delete(protocol.result_queue(job.job_id))

        try:
            if tag:
                self.conn.call(op, timeout=5)
        except Exception as e:  # noqa: BLE001 - a broker that is down keeps it till result_ttl
            log.debug("could not delete the result queue of %s: %s", job.job_id, e)

    def attach(self, job_id: str, timeout: float = 10.0) -> Job:
        """Follow a job started by another client (or by this kernel before a restart).

        Results of finished calls come back from the job's durable result queue,
        the state and logs of the rest from the monitoring exchange."""
        reply_to = protocol.result_queue(job_id)

        if not self.conn.queue_exists(reply_to):
            raise ConfigError(
                f"job {job_id} is unknown here: its result queue {reply_to} does not exist "
                f"(it expired {self.config.result_ttl:g} s after its last client left, or the job "
                "was closed)"
            )
        holder: dict[str, Any] = {"job": None, "early": []}
        ready = threading.Event()

        def on_message(props: Any, delivery: Any, method: Any, body: bytes) -> None:
            try:
                protocol.verify(self.key, props.type, body, props.headers)
                if props.type == "jobinfo":
                    info = json.loads(body)
                    if holder["job"] is None:
                        job = Job(
                            job_id,
                            int(info["n"]),
                            name=str(info.get("name", "")),
                            errors=str(info.get("errors", "raise")),
                            runtime=str(info.get("runtime", self.runtime)),
                            backend=self,
                        )
                        job.created = float(info.get("created", job.created))
                        self.jobs[job_id] = job
                        holder["job"] = job
                        for batch in holder["early"]:
                            job.apply_batch(batch)
                        holder["early"].clear()
                        ready.set()
                    return
                batch = ResultBatch.decode(body)
            except (ProtocolError, ValueError, KeyError, TypeError) as e:
                self.rejected += 1
                log.warning("dead-lettered a message in %s: %s", reply_to, e)
                self.conn.reject(delivery, requeue=False)
                return
            if holder["job"] is None:
                holder["early"].append(batch)
            elif batch.job_id == job_id:
                holder["job"].apply_batch(batch)

        def bind(ch: Any) -> str:
            # passive: the queue exists with the arguments its job gave it (another client's
            # result_ttl, say); declaring it with ours would be refused
            ch.queue_declare(reply_to, passive=True)
            return reply_to

        self.conn.call(
            lambda: self.conn.sub_channel.queue_bind(
                self._monitor_queue, protocol.MONITOR_EXCHANGE, f"job.{job_id}.#"
            )
        )
        self.conn.consume(bind, on_message, prefetch=0, timeout=timeout)
        if not ready.wait(timeout):
            raise ConfigError(
                f"job {job_id}: its results are held by another live client (a kernel still "
                "running it?); attach once that client has stopped, or wait for it to finish"
            )
        job = holder["job"]
        job._consumer_tag = reply_to  # type: ignore[attr-defined]
        return job

    def close(self) -> None:
        for job in list(self.jobs.values()):
            if job.done():
                self.release(job)
        self.conn.close()

    def describe(self) -> str:
        from ..errors import mask_url

        return f"rabbitmq {mask_url(self.url)} runtime {self.runtime}"
