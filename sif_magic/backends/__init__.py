"""Backends: where the calls of a job run.

``local`` runs a pool of worker processes on this machine (no broker);
``rabbitmq`` publishes chunks to RabbitMQ for ``sif-magic worker`` processes.
Both fold the same results and event batches into the same Job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol import Task

if TYPE_CHECKING:
    from .._serialize import PreparedChunk
    from ..config import SifConfig
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

    def task(self, job_id: str, chunk: PreparedChunk, reply_to: str = "", **meta: Any) -> Task:
        """The task message of one of the chunks (``meta``: python, cloudpickle, client)."""
        return Task(
            job_id=job_id,
            chunk=chunk.number,
            calls=chunk.calls,
            reply_to=reply_to,
            func=self.func,
            args=chunk.args,
            func_hash=self.func_hash,
            star=self.star,
            timeout=self.timeout,
            retries=self.retries,
            max_lost=self.max_lost,
            env=self.env,
            **meta,
        )


class Backend(ABC):
    name = ""

    @abstractmethod
    def slots(self) -> int:
        """How many calls can run at once (for automatic chunking); 0 if unknown."""

    @abstractmethod
    def start_job(self, job: Job, task: JobTask) -> None:
        """Send the job's chunks on their way (returns without waiting)."""

    @abstractmethod
    def cancel(self, job: Job) -> None: ...

    @abstractmethod
    def workers(self) -> list[dict[str, Any]]:
        """Live workers as dicts (host, pid, runtime, slots, busy, versions, last_seen ...)."""

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return self.name


def make_backend(config: SifConfig) -> Backend:
    if config.backend == "local":
        from .local import LocalBackend

        return LocalBackend(config)
    from .rabbitmq import RabbitBackend

    return RabbitBackend(config)
