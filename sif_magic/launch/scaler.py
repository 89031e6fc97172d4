"""The elastic SLURM scaler (``slurm adapt``, ``%sif_workers slurm --adapt MIN:MAX``).

Every ``poll`` seconds ``step`` observes the runtime's demand (tasks ready in its
queues, by a declare that reports the message count; busy slots from the
workers' heartbeats; how fast the queue clears) and the scaler's own jobs
(``squeue -n NAME``: each job carries the scaler's name), asks ``adapt.decide``
what to do, and does it: ``sbatch`` one-node jobs (a job array when several),
``scancel`` pending jobs no longer wanted, and ``hold`` the workers of MIN
nodes (a control message; workers leave ``protocol.HOLD_SECONDS`` after the
last one, so nothing outlives a dead scaler longer than their idle timeout).
It never cancels a running job. While it runs, a queue ``scaler_queue(scope, runtime)``
exists (consumed by it, deleted by the broker when its connection goes): a
notebook sends a job to a runtime without workers when it sees one.

Threads: one loop (``sif-adapt`` in a kernel, the main thread in the CLI) owns
every field; ``row`` (the workers table, on the kernel or display thread) reads
``lines`` and ``decided``, each replaced whole. ``ACTIVE`` maps a runtime to the
scaler of this process (written by ``open``/``stop``, on the caller's thread).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from typing import Any

from .. import protocol
from ..errors import ConfigError
from ..transport import declare_routed_queue
from . import slurm, squeue
from .adapt import RUNNING_STATES, Decision, Demand, Job, Policy, decide, lead_time

log = logging.getLogger("sif_magic.adapt")
ACTIVE: dict[str, Scaler] = {}


class Scaler:
    def __init__(
        self,
        backend: Any,
        spec: slurm.SlurmSpec,
        policy: Policy,
        *,
        amqp_url: str = "",
        poll: float = 5.0,
    ) -> None:
        policy.check()
        for tool in ("sbatch", "squeue"):  # a ConfigError now, not at the first step
            slurm._tool(tool)
        slurm.resolve_broker(spec, amqp_url)
        spec.nodes = 1  # the scaler's unit: one node, one worker, one job
        self.backend, self.spec, self.amqp_url, self.poll = backend, spec, amqp_url, poll
        self.runtime = spec.runtime
        self.name = spec.job_name or f"sif-adapt-{secrets.token_hex(3)}-{spec.runtime}"[:128]
        spec.job_name = self.name
        max_array = squeue.max_array_size()
        self.policy = dataclasses.replace(policy, max_array=min(policy.max_array, max_array))
        self.jobs: dict[str, dict[str, Any]] = {}  # job id -> submitted, running, joined, replaces
        self.waits: list[float] = []  # observed: sbatch -> running
        self.starts: list[float] = []  # observed: running -> first heartbeat
        self.last_submit = 0.0
        self.low_since = 0.0
        self._queued = (0.0, 0)  # (when, tasks ready) at the last step
        self.rate = 0.0
        self.lines: tuple[str, ...] = ("starting",)
        self.decided = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _declare_marker(self, ch: Any) -> str:
        name = protocol.scaler_queue(self.backend.scope, self.runtime)
        ch.queue_declare(name, auto_delete=True)
        return name

    # -- observing --------------------------------------------------------------------
    def demand(self, now: float) -> Demand:
        def op() -> int:
            ch = self.backend.conn.channel
            scope, rt = self.backend.scope, self.runtime
            args = protocol.task_queue_arguments(scope, self.backend.config.queue_type)
            n = 0
            for q in (protocol.task_queue(scope, rt), protocol.retry_queue(scope, rt)):
                n += declare_routed_queue(ch, scope, q, args).method.message_count
            return n

        queued = self.backend.conn.call(op, timeout=30)
        live = self.backend.live_workers()
        busy = sum(int(w.get("busy") or 0) for w in live)
        mine = {str(r.get("numeric")) for r in self.jobs.values()}
        others = sum(int(w.get("slots") or 0) for w in live if str(w.get("slurm_job")) not in mine)
        at, before = self._queued
        if at and before > queued and now > at:
            self.rate = 0.7 * self.rate + 0.3 * (before - queued) / (now - at)
        elif not queued:
            self.rate = 0.0
        self._queued = (now, queued)
        low_for = (now - self.low_since) if self.low_since else 0.0
        return Demand(queued, busy, self.rate, low_for, self._calls_queued(), others)

    def _calls_queued(self) -> int:
        """Calls of this kernel's jobs not started yet (0 in the CLI: it runs no jobs)."""
        jobs = list(getattr(self.backend, "jobs", {}).values())
        return sum(j.state_counts()["queued"] for j in jobs if not j.done())

    def observe(self, now: float) -> list[Job]:
        joined = {str(w.get("slurm_job")) for w in self.backend.live_workers()}
        seen = []
        for row in squeue.jobs_named(self.name):
            rec = self.jobs.setdefault(row.job_id, {"submitted": now, "replaces": ""})
            if row.state in RUNNING_STATES and not rec.get("running"):
                rec["running"] = now
                self.waits.append(now - rec["submitted"])
            if rec.get("running") and not rec.get("joined") and row.numeric in joined:
                rec["joined"] = now
                self.starts.append(now - rec["running"])
            rec["numeric"] = row.numeric
            seen.append(
                Job(row.job_id, row.state, row.reason, row.nodes, row.ends, rec["replaces"])
            )
        known = {j.job_id for j in seen}
        ended = [j for j in self.jobs if j not in known and now - self.jobs[j]["submitted"] > 30]
        for job_id in ended:  # squeue shows a job within seconds of sbatch
            del self.jobs[job_id]
        if ended:  # an array's copy of the broker URL goes once all its elements ended
            slurm.status(sorted({j.split("_")[0] for j in ended}))
        return seen

    # -- one step ---------------------------------------------------------------------
    def step(self) -> Decision:
        now = time.time()
        jobs = self.observe(now)
        demand = self.demand(now)
        policy = dataclasses.replace(self.policy, lead=lead_time(self.waits, self.starts))
        capacity = sum(j.nodes for j in jobs if j.state in (*RUNNING_STATES, "PENDING"))
        need = demand.queued + demand.busy
        self.low_since = (self.low_since or now) if need < capacity * policy.slots_per_node else 0.0
        d = decide(jobs, demand, policy, now, self.last_submit)
        if d.submit:
            self._submit(d, now)
        if d.withdraw:
            slurm.cancel(list(d.withdraw))
        self._hold(d.hold)
        self.lines, self.decided = d.lines, now
        return d

    def _submit(self, d: Decision, now: float) -> None:
        spec = dataclasses.replace(
            self.spec,
            array=d.submit if d.array else 0,
            dependency=f"afterany:{d.after}" if d.after else "",
            binds=list(self.spec.binds),
            setup=list(self.spec.setup),
            sbatch_options=list(self.spec.sbatch_options),
        )
        self.last_submit = now
        try:
            job = slurm.submit(spec, amqp_url=self.amqp_url)
        except ConfigError as e:
            if d.array:
                self.policy = dataclasses.replace(self.policy, max_array=0)  # no arrays here
            log.warning("could not submit a job of the scaler (%s); trying again later", e)
            self.lines = (*d.lines, f"could not submit: {e}")
            return
        ids = [f"{job.job_id}_{i}" for i in range(d.submit)] if d.array else [job.job_id]
        for i, job_id in enumerate(ids):
            replaces = d.replaces[i] if i < len(d.replaces) else ""
            self.jobs[job_id] = {"submitted": now, "replaces": replaces}
        from .slurm_rows import PENDING

        PENDING.add(job.job_id, self.runtime)  # a row of its own until its workers join
        log.info("submitted %s (%s)", ", ".join(ids), "; ".join(d.lines))

    def _hold(self, job_ids: tuple[str, ...]) -> None:
        numeric = {self.jobs[j].get("numeric") for j in job_ids if j in self.jobs}
        for w in self.backend.live_workers():
            if str(w.get("slurm_job")) in numeric:
                body = protocol.Control(op="hold", worker=str(w["worker"])).encode()
                self.backend.conn.publish(
                    protocol.control_exchange(self.backend.scope), "", body, kind="control",
                    key=self.backend.key, persistent=False, wait=False,
                )  # fmt: skip

    # -- running ----------------------------------------------------------------------
    def tick(self) -> None:
        """``step``; a failure (squeue or the broker away) is logged and shown, not raised."""
        try:
            self.step()
        except Exception as e:  # noqa: BLE001 - tried again at the next tick
            log.warning("scaler step failed (%s); trying again in %g s", e, self.poll)
            self.lines = (*self.lines[:1], f"last step failed: {e}")

    def run(self) -> None:
        """``tick`` every ``poll`` seconds until ``stop`` (or until its backend is closed:
        the executor was shut down)."""
        while not self._stop.is_set():
            if self.backend.conn.closed:
                log.info("scaler %s stops: its broker connection was closed", self.name)
                self.stop()
                return
            self.tick()
            self._stop.wait(self.poll)

    def open(self) -> Scaler:
        """Take over from this process's scaler of the runtime, if any; show the runtime's
        clients that a scaler serves it (``scaler_queue``)."""
        old = ACTIVE.get(self.runtime)
        if old is not None:
            old.stop()
        ACTIVE[self.runtime] = self
        self.backend.conn.consume(self._declare_marker, lambda *_: None, auto_ack=True)
        # chunks of a job sent before any worker joined: cut for the nodes to come
        self.backend.promised_slots = self.policy.max_nodes * self.policy.slots_per_node
        return self

    def start(self) -> Scaler:
        """``open``, then ``run`` on a thread of its own."""
        self.open()
        self._thread = threading.Thread(target=self.run, name="sif-adapt", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop deciding; the jobs stay, and their workers leave after their idle timeout."""
        self._stop.set()
        if ACTIVE.get(self.runtime) is self:
            del ACTIVE[self.runtime]
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)
        self.backend.promised_slots = 0
        try:
            self.backend.conn.pause_consuming(
                protocol.scaler_queue(self.backend.scope, self.runtime), timeout=5
            )
        except Exception:  # noqa: BLE001 - the broker deletes it with the connection anyway
            pass

    def __repr__(self) -> str:
        p = self.policy
        return (
            f"<scaler --adapt {p.min_nodes}:{p.max_nodes} of runtime {self.runtime}, jobs named "
            f"{self.name}: {'; '.join(self.lines)}>"
        )

    def row(self) -> dict[str, Any]:
        """The scaler's row of the workers table."""
        p = self.policy
        return {
            "worker": f"scaler {self.name}",
            "scaler": f"--adapt {p.min_nodes}:{p.max_nodes}",
            "runtime": self.runtime,
            "last_seen": self.decided,
            "state": "; ".join(self.lines),
        }
