"""What every backend is: the ``Backend`` interface and the ``JobTask`` it ships."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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

    def release(self, job: Job) -> None:
        """Forget a finished job (its kept results); nothing to do by default."""
        return None

    def reachable(self) -> bool:
        """False while the backend cannot reach what runs its calls (it retries meanwhile)."""
        return True

    def describe(self) -> str:
        return self.name
