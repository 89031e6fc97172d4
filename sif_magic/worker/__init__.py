"""The RabbitMQ worker (``sif-magic worker``): what runs inside the container.

``core.Worker`` consumes tasks and runs them in a ``runner.Pool``;
``outbox.Outbox`` publishes results and acks chunks in transactions;
``claims.Claims`` claims or hands back what it holds longer than
``--claim-after`` (RabbitMQ's consumer_timeout); ``walltime`` and ``leaving``:
the worker's end time, and handing back what it holds when it leaves;
``redelivery`` splits a chunk whose worker died and counts the loss;
``foreign.ForeignTasks`` holds and hands back tasks signed with another key;
``main.main`` is the ``sif-magic worker`` command. Threads: see ``core``.
"""

from __future__ import annotations

from .core import Worker
from .main import main

__all__ = ["Worker", "main"]
