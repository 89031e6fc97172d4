"""Calls whose inputs went through the spill directory, and no live worker sees it.

A chunk whose inputs are in a spill file (big arrays, or an input over the message
limit: ``runner.spill``) can only run on a worker that reads the client's spill
root; a worker that cannot hands it back to the queue for one that can
(``worker.foreign.spill_unseen``). Once no live worker of the runtime has named the
job's root (``[path, id]``) in its heartbeats for ``GRACE`` seconds, those calls
would wait for ever: they fail here, saying which directory and what to set. With
no live worker at all they wait, as every call does, for one to start.

Threads: ``check`` runs on the backend's ``sif-watch`` thread (its state is that
thread's); ``Job.spilled_calls`` is appended to by the job's publishing thread.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from ...errors import ConfigError, wire_name
from ...job import Job
from ...protocol import FAILED, TERMINAL, CallResult, ResultSegment
from ...runner import spill

GRACE = 10.0  # seconds without a live worker that sees a job's spill root (a worker restarting)


class SpillWatch:
    def __init__(self) -> None:
        self._roots: dict[str, list[str]] = {}  # job id -> [root, its id]
        self._unseen: dict[str, float] = {}  # job id -> since when no live worker sees it

    def check(self, jobs: list[Job], live: list[dict[str, Any]], runtime: str) -> None:
        now = time.monotonic()
        for job in jobs:
            if job.done() or not job.spilled_calls or not job.spill_dir:
                self.forget(job.job_id)
                continue
            root = self._roots.get(job.job_id)
            if root is None:
                path = os.path.dirname(job.spill_dir)
                root = self._roots[job.job_id] = [path, spill.root_id(path)]
            if not live or any(w.get("spill") == root for w in live):
                self._unseen.pop(job.job_id, None)
                continue
            since = self._unseen.setdefault(job.job_id, now)
            if now - since >= GRACE:
                fail_unseen(job, root[0], runtime, len(live))

    def forget(self, job_id: str) -> None:
        self._roots.pop(job_id, None)
        self._unseen.pop(job_id, None)


def fail_unseen(job: Job, root: str, runtime: str, live: int) -> None:
    """Fail the calls of ``job`` whose inputs are in ``root`` and have no outcome."""
    states = job.states
    calls = sorted({i for i in list(job.spilled_calls) if states[i] not in TERMINAL})
    if not calls:
        return
    why = (
        f"the inputs of this call went through spill_dir {root}, and none of the {live} "
        f"live worker(s) of runtime {runtime!r} can read it (their heartbeats name another "
        "spill directory, or none). Start workers that see it (SIF_MAGIC_SPILL_DIR="
        f"{root} on a filesystem the notebook shares), or set %sif_config spill_dir= to a "
        "directory both see, or send arrays through the broker with %sif_config "
        "spill_arrays_mb=0; then run these calls again"
    )
    now = time.time()
    error = {"type": wire_name(ConfigError), "message": why, "frames": []}
    host = socket.gethostname()
    results = [
        CallResult(index=i, status=FAILED, error=error, t_start=now, t_end=now, host=host)
        for i in calls
    ]
    job.apply_segments(ResultSegment.of(results))
