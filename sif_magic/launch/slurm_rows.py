"""SLURM jobs submitted from this kernel, shown in the workers table until their
workers join, and ``workers_table``: the one place that puts a backend's workers
and those rows together.

A row's state comes from ``squeue`` (run at most every 2 s): a subprocess, so
rows are made only by the kernel thread (``%sif_workers``, ``Executor.workers``)
and the display's pusher thread, never by the transport's I/O thread.

Threads: kernel thread (``add``, rows) and pusher thread (rows); the jobs and
the squeue cache are under ``_lock``, squeue runs outside it. Owner: ``PENDING``,
one per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..backends.base import Backend

SQUEUE_EVERY = 2.0  # seconds between squeue runs, at most


def _status(ids: Sequence[str]) -> list[Any]:
    from . import slurm

    return slurm.status(ids)


class PendingSlurmJobs:
    """SLURM job ids submitted from here, with the runtime their workers serve."""

    def __init__(self, status: Callable[[Sequence[str]], list[Any]] = _status) -> None:
        self._status = status  # ids -> [JobStatus]: squeue by default
        self._lock = threading.Lock()
        self._jobs: dict[str, str] = {}  # SLURM job id -> runtime
        self._cache: tuple[float, dict[str, Any]] = (0.0, {})

    def add(self, job_id: str, runtime: str) -> None:
        with self._lock:
            self._jobs[job_id] = runtime

    def rows(self, runtime: str, joined: set[str]) -> list[dict[str, Any]]:
        """A row per job for ``runtime`` whose workers have not joined yet; a job
        squeue no longer knows is forgotten."""
        with self._lock:
            waiting = [j for j, rt in self._jobs.items() if rt == runtime and j not in joined]
            at, known = self._cache
        if not waiting:
            return []
        if time.time() - at > SQUEUE_EVERY or not set(waiting) <= set(known):
            try:
                known = {st.job_id: st for st in self._status(waiting)}
            except Exception as e:  # noqa: BLE001 - no squeue here: say so in the row
                known = {j: e for j in waiting}
            with self._lock:
                self._cache = (time.time(), known)
        rows = []
        for j in waiting:
            st = known.get(j)
            if st is None:
                continue
            if getattr(st, "state", "") == "GONE":
                with self._lock:
                    self._jobs.pop(j, None)
                continue
            state = st.describe() if hasattr(st, "describe") else f"unknown ({st})"
            rows.append(
                {
                    "worker": f"slurm-{j}",
                    "host": "(not joined yet)",
                    "pid": "",
                    "runtime": runtime,
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


PENDING = PendingSlurmJobs()


def workers_table(backend: Backend, refresh: bool = False) -> list[dict[str, Any]]:
    """The scaler of the runtime, if one runs here (``launch.scaler``: what it decided
    last), the backend's workers (``refresh``: after asking them to announce themselves),
    then a row per SLURM job submitted from here for its runtime not joined yet."""
    rows = backend.refresh() if refresh else backend.workers()
    if not backend.runtime:
        return rows  # its calls go to no queue: no SLURM worker serves it
    joined = {str(r["slurm_job"]) for r in rows if r.get("slurm_job")}
    from .scaler import ACTIVE

    scaler = ACTIVE.get(backend.runtime)
    return (
        ([scaler.row()] if scaler is not None else [])
        + rows
        + PENDING.rows(backend.runtime, joined)
    )
