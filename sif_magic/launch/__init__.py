"""Starting workers: on this machine (``local``) and through SLURM (``slurm``).

Standard library only. The broker password never appears on a command line or
in a generated script: it travels in files of mode 600 or the environment.
"""

from __future__ import annotations

from .local import WorkerRecord, broker_env, list_workers, start_workers, stop_workers
from .slurm import JobStatus, SlurmSpec, Submitted, cancel, render_script, status, submit, wait_for

__all__ = [
    "JobStatus",
    "SlurmSpec",
    "Submitted",
    "WorkerRecord",
    "broker_env",
    "cancel",
    "list_workers",
    "render_script",
    "start_workers",
    "status",
    "stop_workers",
    "submit",
    "wait_for",
]
