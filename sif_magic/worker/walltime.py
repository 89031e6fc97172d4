"""When this worker's allocation ends, and whether a chunk can still finish before it.

The end comes from ``SLURM_JOB_END_TIME`` (epoch seconds, SLURM 23.02+), else
``SIF_MAGIC_JOB_END`` (what the sbatch script of ``slurm submit`` read from
``squeue`` outside the container, whose image has no SLURM tools), else
``squeue -h -j $SLURM_JOB_ID -o %e`` if squeue is on PATH, else ``--lifetime``
seconds from the start (the earliest of what is known). The worker drains
``margin`` seconds before it (at most a fifth of its whole life): SLURM sends
SIGTERM at the end, and the hand-back must be stored by then.

A chunk is taken only if it can finish by then: its calls times the seconds a
call of that function took here lately; a function not seen yet only if a
timeout bounds its calls, or time is plentiful (half the worker's life or an
hour left). The worker then hands back what it will not run (``claims``), lets
what runs finish, and leaves; at the deadline it hands back what is left
(calls cut there are returned, not counted as lost) and exits.

Threads: ``job_end`` runs once in the worker's constructor; a ``Walltime`` is
read by the I/O thread (``refuse``) and the main thread (``due``); its fields
are set once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from datetime import datetime

from ..protocol import Task

log = logging.getLogger("sif_magic.worker")

PLENTY = 3600.0  # seconds left at which a call of unknown length is taken anyway
END_MARGIN = 30.0  # seconds before the end by which what is held has gone back


def _squeue_end(job_id: str) -> float | None:
    tool = shutil.which("squeue")
    if not tool or not job_id:
        return None
    try:
        out = subprocess.run(
            [tool, "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return datetime.strptime(out, "%Y-%m-%dT%H:%M:%S").timestamp()  # local time
    except (OSError, ValueError, subprocess.SubprocessError):
        return None  # "Unknown", "N/A", not found


def job_end(lifetime: float, started: float) -> tuple[float | None, str]:
    """(when this worker must be gone, from what), or (None, "") if nothing says."""
    ends: list[tuple[float, str]] = []
    for var in ("SLURM_JOB_END_TIME", "SIF_MAGIC_JOB_END"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            ends.append((float(value), f"SLURM job {os.environ.get('SLURM_JOB_ID', '?')}"))
            break
    else:
        end = _squeue_end(os.environ.get("SLURM_JOB_ID", ""))
        if end is not None:
            ends.append((end, f"SLURM job {os.environ['SLURM_JOB_ID']}"))
    if lifetime > 0:
        ends.append((started + lifetime, f"--lifetime {lifetime:g}"))
    if not ends:
        return None, ""
    return min(ends)


class Walltime:
    def __init__(self, end: float | None, source: str, started: float, margin: float) -> None:
        self.end = end
        self.source = source
        self.started = started
        life = (end - started) if end is not None else 0.0
        self.deadline = end - min(margin, life / 5) if end is not None else None

    def left(self) -> float:
        return (self.deadline - time.time()) if self.deadline is not None else float("inf")

    def due(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def clock(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.end)) if self.end else "?"

    def refuse(self, task: Task, seconds_per_call: float | None) -> str:
        """'' to take ``task``, else why not (told to its job when it goes back)."""
        if self.deadline is None:
            return ""
        left = self.left()
        n = len(task.only) if task.only is not None else len(task.calls)
        if seconds_per_call is not None:
            need, basis = n * seconds_per_call, "by the calls seen here"
        elif task.timeout:
            need, basis = n * float(task.timeout), "by its time limit"
        elif left >= min(PLENTY, (self.deadline - self.started) / 2):
            return ""
        else:
            return (
                f"returned unstarted: this worker ({self.source}) ends at {self.clock()}, "
                f"{max(left, 0):.0f} s left, and no call of this function ran here yet"
            )
        if need <= left:
            return ""
        return (
            f"returned unstarted: this worker ({self.source}) ends at {self.clock()}, "
            f"{max(left, 0):.0f} s left, too soon for ~{need:.0f} s of calls ({basis})"
        )

    def cut_note(self) -> str:
        return (
            f"returned: this worker ({self.source}) ended at {self.clock()} before the call "
            "could finish; queued again (not counted as a loss)"
        )
