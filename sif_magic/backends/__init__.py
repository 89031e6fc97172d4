"""Backends: where the calls of a job run.

``local`` runs a pool of worker processes on this machine (no broker);
``rabbitmq`` publishes chunks to RabbitMQ for ``sif-magic worker`` processes.
Both fold the same results and event batches into the same Job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backend, JobTask

if TYPE_CHECKING:
    from ..config import SifConfig

__all__ = ["Backend", "JobTask", "make_backend"]


def make_backend(config: SifConfig) -> Backend:
    if config.backend == "local":
        from .local import LocalBackend

        return LocalBackend(config)
    from .rabbitmq import RabbitBackend

    return RabbitBackend(config)
