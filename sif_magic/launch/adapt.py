"""What an elastic SLURM scaler does next: a pure function of what it observed.

``decide(jobs, demand, policy, now, last_submit)`` turns the scaler's SLURM jobs
(pending with their reasons, running, draining before walltime) and the
runtime's demand (tasks queued, slots busy, how fast the queue clears) into a
``Decision``: how many one-node jobs to submit (one job array when several),
which pending jobs to withdraw, which workers to hold, and the lines the
workers table shows. No clock, no subprocess, no broker: the loop around it
(``scaler.py``) observes and acts; the tests here give it numbers.

How it decides, after Parsl's ``simple`` strategy (pending jobs count as
capacity, so a job waiting in the queue is not asked for twice) and
dask-jobqueue's ``adapt`` (a target from the work queued, bounded by MIN and
MAX): one slot per queued task or busy slot, less the slots of workers it does
not own (started by hand, by ``slurm submit``), ``slots_per_node`` per node; no
new node for a backlog that clears before one could start (``lead``: observed
queue wait plus start-up); never more than MAX nodes live, ``max_pending``
jobs pending, or one submission per ``submit_every`` seconds. A running job
whose walltime ends within ``lead`` plus ``drain`` (how early its worker leaves) is draining: it no longer counts, so its
replacement is submitted ahead of time; at MAX the replacement waits for it
(``--dependency=afterany``) so MAX still holds. Scaling in is left to the
workers' idle timeout (never a busy node cancelled); only pending jobs no
longer wanted are withdrawn, after demand stayed low for ``withdraw_after``.

Threads: none of its own; pure functions on frozen records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

RUNNING_STATES = ("RUNNING", "CONFIGURING")
PENDING_STATES = ("PENDING",)


@dataclass(frozen=True)
class Job:
    """One SLURM job (or array element) of the scaler, as squeue last showed it."""

    job_id: str  # "127", or "124_3" for an array element
    state: str  # PENDING, RUNNING, ... (anything else: ended or ending)
    reason: str = ""
    nodes: int = 1
    ends: float = 0.0  # when its walltime runs out (epoch seconds; 0: unknown)
    replaces: str = ""  # the draining job it was submitted to replace


@dataclass(frozen=True)
class Demand:
    queued: int = 0  # tasks ready in the runtime's queues (each takes one slot)
    busy: int = 0  # slots running calls, from the workers' heartbeats
    rate: float = 0.0  # queued tasks cleared per second lately (0: unknown)
    low_for: float = 0.0  # seconds demand has stayed below the capacity live
    calls: int = 0  # calls queued, where known (this kernel's jobs): shown, not decided on
    other_slots: int = 0  # slots of live workers not in the scaler's jobs (started by hand)


@dataclass(frozen=True)
class Policy:
    min_nodes: int
    max_nodes: int
    slots_per_node: int = 1
    max_pending: int = 8  # jobs pending at once (array elements count one each)
    submit_every: float = 10.0  # seconds between two submissions
    max_array: int = 1001  # the site's MaxArraySize (0 or 1: no arrays)
    lead: float = 60.0  # seconds from sbatch to a working node (queue wait + start-up)
    # seconds before its walltime a job's worker is gone at most (it hands back what it
    # holds and leaves then: worker/walltime.py END_MARGIN): its job drains that early
    drain: float = 30.0
    withdraw_after: float = 60.0  # seconds of low demand before pending jobs are withdrawn

    def check(self) -> None:
        if not 0 <= self.min_nodes <= self.max_nodes or self.max_nodes < 1:
            raise ValueError(
                f"--adapt {self.min_nodes}:{self.max_nodes}: need 0 <= MIN <= MAX, MAX >= 1"
            )


@dataclass(frozen=True)
class Decision:
    wanted: int  # nodes wanted now (MIN..MAX)
    submit: int = 0  # one-node jobs to submit now
    array: bool = False  # as one job array
    after: str = ""  # submit with --dependency=afterany:AFTER (a replacement at MAX)
    replaces: tuple[str, ...] = ()  # draining jobs the submitted ones replace
    withdraw: tuple[str, ...] = ()  # pending jobs to scancel (no longer wanted)
    hold: tuple[str, ...] = ()  # running jobs whose workers are held (MIN)
    lines: tuple[str, ...] = ()  # what the workers table shows


def _hhmm(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def decide(
    jobs: Sequence[Job], demand: Demand, policy: Policy, now: float, last_submit: float = 0.0
) -> Decision:
    """The next step of the scaler (see the module docstring)."""
    running = [j for j in jobs if j.state in RUNNING_STATES]
    pending = [j for j in jobs if j.state in PENDING_STATES]
    draining = [j for j in running if j.ends and j.ends - now <= policy.lead + policy.drain]
    steady = [j for j in running if j not in draining]
    live_nodes = sum(j.nodes for j in running + pending)
    capacity = sum(j.nodes for j in steady + pending)
    pending_nodes = sum(j.nodes for j in pending)

    work = max(0, demand.queued + demand.busy - demand.other_slots)  # what others cannot take
    need = math.ceil(work / max(1, policy.slots_per_node))
    steady_nodes = sum(j.nodes for j in steady)
    if steady_nodes and demand.rate > 0 and demand.queued / demand.rate < policy.lead:
        need = min(need, steady_nodes)  # the backlog clears before a new node could start
    wanted = max(policy.min_nodes, min(policy.max_nodes, need))

    lines = [_summary(running, pending, demand)]
    replaced = {
        j.replaces for j in jobs if j.replaces and j.state in RUNNING_STATES + PENDING_STATES
    }
    for d in draining:
        lines.append(_draining_line(d, jobs, policy))
    orphans = [d.job_id for d in draining if d.job_id not in replaced]

    submit, after, replaces, withdraw = 0, "", (), ()
    deficit = wanted - capacity
    room = policy.max_nodes - live_nodes
    if deficit > 0:
        n = min(deficit, max(0, room), policy.max_pending - pending_nodes)
        if n <= 0 and room <= 0 and orphans and pending_nodes < policy.max_pending:
            n, after = 1, orphans[0]  # at MAX: queue the replacement behind the draining job
        if n > 0 and now - last_submit < policy.submit_every:
            wait = policy.submit_every - (now - last_submit)
            lines.append(f"{deficit} more node(s) wanted: next submission in {wait:.0f} s")
            n = 0
        elif n <= 0:
            why = (
                f"at MAX {policy.max_nodes}"
                if room <= 0
                else f"{pending_nodes} pending (--max-pending)"
            )
            lines.append(f"{deficit} more node(s) wanted, none submitted: {why}")
        if n > 1 and policy.max_array <= 1:
            n = 1  # no arrays here: one job per submission
        n = min(n, max(1, policy.max_array))
        if n > 0:
            submit = n
            replaces = (after,) if after else tuple(orphans[:n])
            lines.append(_submit_line(n, wanted, after, replaces))
    elif deficit < 0 and pending and demand.low_for >= policy.withdraw_after:
        surplus = min(-deficit, len(pending))
        withdraw = tuple(j.job_id for j in pending[::-1][:surplus])  # the newest first
        lines.append(f"withdrawing {surplus} pending job(s) no longer wanted")
    elif not demand.queued and not demand.busy and live_nodes > policy.min_nodes:
        lines.append(
            f"no work: workers leave after their idle timeout, down to MIN {policy.min_nodes}"
        )
    by_end = sorted(steady, key=lambda j: -(j.ends or math.inf))
    hold, kept = [], 0
    for j in by_end:
        if kept >= policy.min_nodes:
            break
        hold.append(j.job_id)
        kept += j.nodes
    return Decision(
        wanted, submit, submit > 1, after, replaces, withdraw, tuple(hold), tuple(lines)
    )


def _summary(running: list[Job], pending: list[Job], demand: Demand) -> str:
    parts = []
    if pending:
        reasons = sorted({j.reason for j in pending if j.reason not in ("", "None")})
        parts.append(
            f"{len(pending)} job(s) pending" + (f" ({', '.join(reasons)})" if reasons else "")
        )
    if running:
        parts.append(f"{len(running)} running")
    jobs = ", ".join(parts) or "no jobs"
    queued = f"{demand.calls} calls queued" if demand.calls else f"{demand.queued} tasks queued"
    return f"{jobs}: {queued}, {demand.busy} slots busy"


def _draining_line(d: Job, jobs: Sequence[Job], policy: Policy) -> str:
    repl = [j for j in jobs if j.replaces == d.job_id]
    if not repl:
        return f"job {d.job_id} drains at {_hhmm(d.ends)}"
    r = repl[0]
    state = "running" if r.state in RUNNING_STATES else "pending"
    wait = " (waits for it: at MAX)" if r.reason == "Dependency" else ""
    return f"job {d.job_id} drains at {_hhmm(d.ends)}, replacement {r.job_id} {state}{wait}"


def _submit_line(n: int, wanted: int, after: str, replaces: tuple[str, ...]) -> str:
    what = f"an array of {n} one-node jobs" if n > 1 else "1 one-node job"
    why = f"replacing {', '.join(replaces)}" if replaces else f"{wanted} node(s) wanted"
    return f"submitting {what}: {why}" + (f", to start once {after} ends" if after else "")


def lead_time(waits: Sequence[float], starts: Sequence[float], default: float = 60.0) -> float:
    """Seconds from sbatch to a worker taking calls: the longest of the last few
    observed queue waits plus the longest start-up, and a margin; ``default``
    until something was observed."""
    if not waits and not starts:
        return default
    return max(waits[-5:], default=0.0) + max(starts[-5:], default=0.0) + 5.0
