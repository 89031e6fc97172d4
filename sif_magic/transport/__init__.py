"""RabbitMQ through pika: the connection every side uses, split by concern.

- ``connection``: ``Connection``, what sif_magic does with RabbitMQ: publish,
  transactional staging, consumers, queues;
- ``iothread``: ``IOThread``, the thread that owns the pika connection, runs every
  operation on it by one rule, and reconnects;
- ``consumers``: each consumer on its own channel, ``Delivery``;
- ``tx``: what a transactional channel commits next (``_Tx``, ``Staging``);
- ``connect``: broker URL (or URLs: the nodes of a cluster) to connection parameters,
  TLS, ``explain_connect_error``;
- ``topology``: the key scope's exchanges and queues (``declare_topology``,
  ``declare_task_queue``, ``declare_retry_queue``, ``declare_routed_queue``,
  ``declare_private_queue``, ``declare_queue``: every durable queue, with the
  arguments of its queue type, ``declare_job_exchange``).

pika's exceptions stop here: callers see ``BrokerError``. Standard library and pika
only (plus ``protocol`` and ``errors``): the worker uses this.

Threads: a ``Connection``'s I/O thread owns the pika connection and everything on it
(channels, consumers, transactions); other threads only hand it operations (the one
rule is in ``iothread``). ``connect`` and ``topology`` hold no state.
"""

from __future__ import annotations

from .connect import connection_parameters, dial, explain_connect_error, parameters_list
from .connection import Connection
from .consumers import Delivery, QueueRefused
from .topology import (
    bind,
    declare_job_exchange,
    declare_private_queue,
    declare_queue,
    declare_retry_queue,
    declare_routed_queue,
    declare_task_queue,
    declare_topology,
)

__all__ = [
    "Connection",
    "bind",
    "Delivery",
    "connection_parameters",
    "declare_job_exchange",
    "declare_private_queue",
    "declare_queue",
    "declare_routed_queue",
    "dial",
    "declare_retry_queue",
    "declare_task_queue",
    "declare_topology",
    "explain_connect_error",
    "parameters_list",
    "QueueRefused",
]
