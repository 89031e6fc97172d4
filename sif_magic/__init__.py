"""sif_magic: map notebook functions over Singularity/Apptainer workers via RabbitMQ.

``%load_ext sif_magic`` registers the magics; ``sif_magic.Executor`` is the
Python API. Importing this package stays cheap (the worker imports it inside
slim container images): the executor, job and magics load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._report import report
from ._version import __version__
from .errors import (
    BrokerError,
    CallTimeoutError,
    CancelledError,
    ConfigError,
    IncompatibleWorkerError,
    NoWorkersError,
    RemoteError,
    ResourcesError,
    SerializationError,
    SifMagicError,
    UpstreamError,
    WorkerLostError,
)

if TYPE_CHECKING:
    from .executor import Executor
    from .job import Job

__all__ = [
    "BrokerError",
    "CallTimeoutError",
    "CancelledError",
    "ConfigError",
    "Executor",
    "IncompatibleWorkerError",
    "Job",
    "NoWorkersError",
    "RemoteError",
    "ResourcesError",
    "SerializationError",
    "SifMagicError",
    "UpstreamError",
    "WorkerLostError",
    "__version__",
    "load_ipython_extension",
    "report",
    "unload_ipython_extension",
]

_LAZY = {"Executor": "executor", "Job": "job"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sif_magic' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import unload

    unload(ipython)
