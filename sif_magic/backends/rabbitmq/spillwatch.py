"""Calls whose inputs went through the spill directory, and no live worker reads it.

A chunk whose inputs are in a spill file (big arrays, or an input over the message
limit: ``runner.spill``) can only run on a worker that reads the file; a worker that
cannot hands it back to the queue for one that can (``worker.foreign.spill_unseen``)
and says so in its monitoring events (``EventBatch.unseen``; the job keeps when each
worker last did: ``Job.spill_refusals``). Once every live worker of the runtime has
handed back a chunk of the job, and none has run one since, for ``GRACE`` seconds,
those calls would wait for ever: the ones not running fail here, saying which
directory and what to set. A worker that has not handed one back (one that just
started, or an old one that never says) keeps them waiting, as does having no live
worker at all. Heartbeats (the root a worker names) are not asked: a worker with
another spill root on the same filesystem reads the files. Without monitoring
(``monitor=False``) no event comes, and such calls wait.

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
from ...protocol import FAILED, FINISHING, RUNNING, TERMINAL, CallResult, ResultSegment

GRACE = 10.0  # seconds every live worker has refused a job's spill files (a worker restarting)


class SpillWatch:
    def __init__(self) -> None:
        self._unseen: dict[str, float] = {}  # job id -> since when every live worker refused

    def check(self, jobs: list[Job], live: list[dict[str, Any]], runtime: str) -> None:
        now = time.monotonic()
        ids = {str(w.get("worker", "")) for w in live}
        for job in jobs:
            if job.done() or not job.spilled_calls or not job.spill_dir:
                self.forget(job.job_id)
                continue
            if not ids or not ids <= job.spill_refusals().keys():
                self._unseen.pop(job.job_id, None)  # one may read them: they wait
                continue
            since = self._unseen.setdefault(job.job_id, now)
            if now - since >= GRACE:
                fail_unseen(job, os.path.dirname(job.spill_dir), runtime, len(ids))

    def forget(self, job_id: str) -> None:
        self._unseen.pop(job_id, None)


def fail_unseen(job: Job, root: str, runtime: str, live: int) -> None:
    """Fail the calls of ``job`` whose inputs are in ``root``, that have no outcome and
    are not running (a worker that reads the file has them)."""
    states = job.states
    busy = (*TERMINAL, RUNNING, FINISHING)
    calls = sorted({i for i in list(job.spilled_calls) if states[i] not in busy})
    if not calls:
        return
    why = (
        f"the inputs of this call went through spill_dir {root}, and none of the {live} "
        f"live worker(s) of runtime {runtime!r} can read it (each handed back a chunk of "
        "this job: its files are not there, another filesystem). Start workers that see "
        f"it (SIF_MAGIC_SPILL_DIR={root} on a filesystem the notebook shares), or set %sif_config spill_dir= to a "
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
