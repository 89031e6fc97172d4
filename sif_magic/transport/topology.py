"""The exchanges and queues every side may rely on, declared on a channel it is given.

Threads: the caller's (in practice the transport's I/O thread, which owns the channel);
nothing here holds state. Names and arguments come from ``protocol.names``.
"""

from __future__ import annotations

from typing import Any

from .. import protocol


def declare_topology(ch: Any) -> None:
    """The exchanges and the dead-letter queue every side may rely on."""
    ch.exchange_declare(protocol.MONITOR_EXCHANGE, "topic", durable=True)
    ch.exchange_declare(protocol.CONTROL_EXCHANGE, "fanout", durable=True)
    ch.exchange_declare(protocol.DEAD_EXCHANGE, "fanout", durable=True)
    ch.queue_declare(protocol.DEAD_QUEUE, durable=True)
    ch.queue_bind(protocol.DEAD_QUEUE, protocol.DEAD_EXCHANGE)


def declare_task_queue(ch: Any, runtime: str) -> str:
    name = protocol.task_queue(runtime)
    ch.queue_declare(name, durable=True, arguments=protocol.task_queue_arguments())
    return name


def declare_retry_queue(ch: Any, runtime: str) -> str:
    name = protocol.retry_queue(runtime)
    ch.queue_declare(name, durable=True, arguments=protocol.task_queue_arguments())
    return name


def declare_job_exchange(ch: Any, job_id: str, result_queue: str) -> None:
    """The exchange that says job ``job_id`` may still run calls (``protocol.job_exchange``),
    bound to its result queue: auto-delete, so it goes when that queue goes."""
    name = protocol.job_exchange(job_id)
    ch.exchange_declare(name, "fanout", durable=True, auto_delete=True)
    ch.queue_bind(result_queue, name)
