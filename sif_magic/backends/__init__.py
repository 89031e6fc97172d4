"""Backends: where the calls of a job run, by name.

``local`` runs a pool of worker processes on this machine (no broker);
``rabbitmq`` publishes chunks to RabbitMQ for ``sif-magic worker`` processes.
Both fold the same results and event batches into the same Job. A backend is a
``Backend`` (``base.py``, the whole interface) made by the factory registered
under its name; the configuration, the magics' ``--backend`` and
``make_backend`` all take their names from here.

Threads: ``register`` at import time; the rest from the kernel thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Backend, JobTask

if TYPE_CHECKING:
    from ..config import SifConfig

__all__ = ["Backend", "JobTask", "make_backend", "names", "register"]

_FACTORIES: dict[str, Callable[[SifConfig], Backend]] = {}


def register(name: str, factory: Callable[[SifConfig], Backend]) -> None:
    """Make ``factory(config)`` the backend called ``name``."""
    _FACTORIES[name] = factory


def names() -> tuple[str, ...]:
    """The names of the known backends, in the order they were registered."""
    return tuple(_FACTORIES)


def make_backend(config: SifConfig) -> Backend:
    """The backend ``config.backend`` names; ConfigError naming the known ones if none."""
    factory = _FACTORIES.get(config.backend)
    if factory is None:
        raise ConfigError(
            f"unknown backend {config.backend!r}: use one of {', '.join(names())} "
            "(%sif_config backend=NAME, or Executor(backend=NAME))"
        )
    return factory(config)


def _local(config: SifConfig) -> Backend:
    from .local import LocalBackend  # imported on first use: it starts processes

    return LocalBackend(config)


def _rabbitmq(config: SifConfig) -> Backend:
    from .rabbitmq import RabbitBackend  # imported on first use: it imports pika

    return RabbitBackend(config)


register("local", _local)
register("rabbitmq", _rabbitmq)
