"""The embedded default: a pool of worker processes on this machine, no broker.

Calls run in the same slot processes as on a RabbitMQ worker (``runner/``), and
what they report goes through the same EventReporter and EventBuffer into the
same Job, so states, captured output, timeouts and crashes look the same as on
a cluster. ``gpus`` (a setting: auto, 0,1,... or none) pins each call process
to its own GPUs, as ``sif-magic worker --gpus`` does; a job whose calls ask for
more GPUs or CPUs than this machine's pool has fails at once (ResourcesError).

Threads: the kernel thread calls the ``Backend`` methods; the pool's dispatcher
thread folds results into jobs (``Job.apply_segments``) and the EventBuffer's
flusher thread folds events (``Job.apply_events``), both under the Job's lock.
``jobs`` is written by the kernel thread (start) and the thread that ends a job
(its done callback pops it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from .. import _version
from ..config import SifConfig
from ..errors import ConfigError, ResourcesError
from ..job import Job
from ..protocol import EventBatch, ResultSegment
from ..runner.chunk import Chunk
from ..runner.events import EventBuffer
from ..runner.pool import Pool, usable_cpus
from ..runner.reporter import EventReporter
from ..runner.resources import can_run, detect_gpus, need_of, unsatisfiable
from ..runner.versions import versions
from .base import Backend, JobTask


class LocalBackend(Backend):
    name = "local"
    bounded = False  # pipes: inputs and results of any size, nothing spills

    def __init__(self, config: SifConfig) -> None:
        self.config = config
        try:
            self.gpus, _ = detect_gpus(config.gpus)
        except ValueError as e:
            raise ConfigError(f"gpus={config.gpus!r}: {e}") from None
        self.cpus = config.cpus or usable_cpus()
        self.processes = config.processes or len(self.gpus) or usable_cpus()
        self.jobs: dict[str, Job] = {}
        self.worker_id = f"local-{os.getpid()}"
        self.host = socket.gethostname()
        self.events = EventBuffer(self.worker_id, self.host, self._on_events)
        self._pool: Pool | None = None
        self._lock = threading.Lock()
        self.started = time.time()

    def _on_results(self, chunk: Chunk, results: ResultSegment) -> None:
        job = self.jobs.get(chunk.job_id)
        if job is not None:
            job.apply_segments([results])

    def _on_events(self, batch: EventBatch) -> None:
        job = self.jobs.get(batch.job_id)
        if job is not None:
            job.apply_events(batch)

    @property
    def pool(self) -> Pool:
        with self._lock:
            if self._pool is None:
                reporter = EventReporter(self.events, self._on_results)
                self._pool = Pool(
                    self.processes,
                    reporter,
                    worker=self.worker_id,
                    host=self.host,
                    devices=self.gpus,
                    cpus=self.cpus,
                ).start()
                self.events.start()
            return self._pool

    def slots(self) -> int:
        return self.processes

    def start_job(self, job: Job, task: JobTask) -> None:
        need = need_of(task.resources)
        if need is not None and not can_run(need, len(self.gpus), self.cpus):
            row = {"worker": self.worker_id, "gpus": self.gpus, "cpus": self.cpus}
            raise ResourcesError(
                unsatisfiable(need, "the local backend", [row])
                + " Here: %sif_config gpus=auto (or 0,1,...) cpus=N."
            )
        self.jobs[job.job_id] = job
        job.add_done_callback(lambda j: self.jobs.pop(j.job_id, None))
        self.add_chunks(job, task)

    def add_chunks(self, job: Job, task: JobTask) -> None:
        pool = self.pool
        for c in task.chunks:
            pool.submit(Chunk.from_task(task.task(job.job_id, c)))

    def cancel(self, job: Job) -> None:
        if self._pool is not None:
            self._pool.cancel(job.job_id)
        job.mark_cancelled()

    def workers(self) -> list[dict[str, Any]]:
        if self._pool is None:
            return []
        return [
            {
                "worker": self.worker_id,
                "host": self.host,
                "pid": os.getpid(),
                "runtime": "local",
                "slots": self.processes,
                "busy": self._pool.busy,
                "python": versions()[0],
                "cloudpickle": versions()[1],
                "sif_magic": _version.__version__,
                "last_seen": time.time(),
                "state": "up",
                "container": "none (local backend)",
                "done": self._pool.done_calls,
                "failed": self._pool.failed_calls,
                "gpus": self.gpus,
                "cpus": self.cpus,
                "slot_devices": self._pool.slot_devices if self.gpus else [],
            }
        ]

    def close(self) -> None:
        for job in list(self.jobs.values()):
            if not job.done():
                self.cancel(job)
        if self._pool is not None:
            self.events.stop()
            self._pool.close()
            self._pool = None

    def describe(self) -> str:
        gpus = f", GPUs {','.join(self.gpus)}" if self.gpus else ""
        return f"local ({self.processes} processes{gpus})"
