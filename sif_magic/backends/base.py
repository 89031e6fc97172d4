"""What every backend is: the ``Backend`` interface and the ``JobTask`` it ships."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..protocol import Task

if TYPE_CHECKING:
    from .._serialize import PreparedChunk
    from ..job import Job


@dataclass
class JobTask:
    """What a job ships: the pickled function and its pickled chunks of inputs."""

    func: bytes
    func_hash: str
    chunks: list[PreparedChunk]
    star: bool = False
    timeout: float | None = None
    retries: int = 0
    max_lost: int = 3
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, int] | None = None  # what each call asks for (runner/resources.py)

    def task(self, job_id: str, chunk: PreparedChunk, reply_to: str = "", **meta: Any) -> Task:
        """The task message of one of the chunks (``meta``: python, cloudpickle, client);
        a chunk whose arrays go through the spill directory is written there now."""
        args, buffers = chunk.sendable()
        return Task(
            job_id=job_id,
            chunk=chunk.number,
            calls=chunk.calls,
            reply_to=reply_to,
            func=self.func,
            args=args,
            buffers=buffers,
            func_hash=self.func_hash,
            star=self.star,
            timeout=self.timeout,
            retries=self.retries,
            max_lost=self.max_lost,
            env=self.env,
            resources=self.resources,
            **meta,
        )


class Backend(ABC):
    """Where the calls of a job run: everything an Executor, a Job, the magics and
    the display ask of a backend. A backend with nothing to do for a method keeps
    its default.

    Threads: the kernel thread calls every method; ``workers``, ``reachable`` and
    ``describe`` are also called by the display's pusher thread, so they must not
    block for long (no broker round trip) and read shared state under a lock.
    ``cancel`` may also run on a helper thread (the view's Cancel button). A
    backend folds what its workers report into its jobs (``Job.apply_*``) on its
    own threads, and never writes anything else of a Job.
    """

    name = ""
    runtime = ""  # the worker image / task queue its calls go to ("" if none)
    # messages are bounded (max_message_mb): bigger inputs and results spill to spill_dir
    bounded = True

    @abstractmethod
    def slots(self) -> int:
        """How many calls can run at once (for automatic chunking); 0 if unknown."""

    def new_job_id(self) -> str:
        """The id of the next job (a backend may have its queues ready for it)."""
        return uuid.uuid4().hex[:12]

    @abstractmethod
    def start_job(self, job: Job, task: JobTask) -> None:
        """Send the job's chunks on their way (returns without waiting)."""

    def add_chunks(self, job: Job, task: JobTask) -> None:
        """Send more chunks (``task.chunks``, new ones only) of a job already started:
        a pipeline's calls as their inputs arrive."""
        raise ConfigError(f"the {self.name} backend cannot add calls to a running job")

    @abstractmethod
    def cancel(self, job: Job) -> None:
        """Drop the job's queued calls, kill its running ones, and give every call
        without an outcome the outcome 'cancelled' (``job.mark_cancelled()``)."""

    @abstractmethod
    def workers(self) -> list[dict[str, Any]]:
        """Workers as dicts (worker, host, pid, runtime, slots, busy, python,
        cloudpickle, container, last_seen, state ...), from what is known now."""

    @abstractmethod
    def close(self) -> None:
        """Stop: cancel or release the jobs, close connections, stop processes."""

    def refresh(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """``workers()`` after asking them to announce themselves (up to ``timeout`` s)."""
        return self.workers()

    def attach(self, job_id: str) -> Job:
        """Follow a job started elsewhere (another kernel, before a restart)."""
        raise ConfigError(f"the {self.name} backend cannot re-attach jobs")

    def release(self, job: Job) -> None:
        """Forget a finished job (its kept results); nothing to do by default."""
        return None

    def max_message_bytes(self) -> int:
        """The largest message this backend's transport takes (0: no limit); a job's
        chunks stay below it whatever ``max_message_mb`` says."""
        return 0

    def sees_spill(self, root: list[str]) -> bool:
        """Whether every worker that may take this backend's calls now said it reads
        and writes the spill root ``[path, id]`` (``runner/spill.py``): big arrays may
        then go through it instead of the messages. False by default."""
        return False

    def reachable(self) -> bool:
        """False while the backend cannot reach what runs its calls (it retries meanwhile)."""
        return True

    def describe(self) -> str:
        """Where calls run, in a few words (secrets masked)."""
        return self.name
