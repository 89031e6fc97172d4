"""RabbitMQ through pika: the only package that imports pika at run time.

- ``connection``: ``Connection``, one pika connection owned by its own I/O thread
  (publish, transactional staging, consumers, reconnect);
- ``tx``: what a transactional channel commits next (``_Tx``);
- ``connect``: broker URL to connection parameters, TLS, ``explain_connect_error``;
- ``topology``: ``declare_topology`` / ``declare_task_queue`` / ``declare_retry_queue``.

pika's exceptions stop here: callers see ``BrokerError``. Standard library and pika
only (plus ``protocol`` and ``errors``): the worker uses this.
"""

from __future__ import annotations

from .connect import connection_parameters, explain_connect_error
from .connection import Connection, Delivery
from .topology import declare_retry_queue, declare_task_queue, declare_topology

__all__ = [
    "Connection",
    "Delivery",
    "connection_parameters",
    "declare_retry_queue",
    "declare_task_queue",
    "declare_topology",
    "explain_connect_error",
]
