"""The exchanges and queues every side may rely on, declared on a channel it is given.

Every durable queue of ours is declared here (``declare_queue``), with the arguments
``protocol.names`` builds for the connection's queue type (classic or quorum). A
queue that exists with another type makes the broker close the channel
(PRECONDITION_FAILED, "inequivalent arg 'x-queue-type'"); that becomes a BrokerError
that says which setting to align, instead of a reconnect loop.

Threads: the caller's (in practice the transport's I/O thread, which owns the channel);
nothing here holds state.
"""

from __future__ import annotations

from typing import Any

import pika.exceptions as pe

from .. import protocol
from ..errors import BrokerError


def declare_queue(ch: Any, name: str, arguments: dict[str, Any]) -> Any:
    """``queue.declare`` of durable queue ``name``; its declare-ok."""
    try:
        return ch.queue_declare(name, durable=True, arguments=arguments)
    except pe.ChannelClosedByBroker as e:
        if e.reply_code != 406 or "x-queue-type" not in str(e.reply_text):
            raise
        ours = protocol.queue_type_of(arguments)
        raise BrokerError(
            f"queue {name!r} exists on the broker with another type than queue_type={ours!r} "
            f"asks for ({e.reply_text}). Set the same queue_type on every notebook and worker "
            "of this vhost (%sif_config queue_type=..., SIF_MAGIC_QUEUE_TYPE, sif-magic worker "
            "--queue-type), or, once no job uses it, delete the queue "
            f"(rabbitmqctl delete_queue -p VHOST {name}) so that it is declared again"
        ) from None


def declare_topology(ch: Any, queue_type: str = "classic") -> None:
    """The exchanges and the dead-letter queue every side may rely on."""
    ch.exchange_declare(protocol.MONITOR_EXCHANGE, "topic", durable=True)
    ch.exchange_declare(protocol.CONTROL_EXCHANGE, "fanout", durable=True)
    ch.exchange_declare(protocol.DEAD_EXCHANGE, "fanout", durable=True)
    declare_queue(ch, protocol.DEAD_QUEUE, protocol.dead_queue_arguments(queue_type))
    ch.queue_bind(protocol.DEAD_QUEUE, protocol.DEAD_EXCHANGE)


def declare_task_queue(ch: Any, runtime: str, queue_type: str = "classic") -> str:
    name = protocol.task_queue(runtime)
    declare_queue(ch, name, protocol.task_queue_arguments(queue_type))
    return name


def declare_retry_queue(ch: Any, runtime: str, queue_type: str = "classic") -> str:
    name = protocol.retry_queue(runtime)
    declare_queue(ch, name, protocol.task_queue_arguments(queue_type))
    return name


def declare_job_exchange(ch: Any, job_id: str, result_queue: str) -> None:
    """The exchange that says job ``job_id`` may still run calls (``protocol.job_exchange``),
    bound to its result queue: auto-delete, so it goes when that queue goes."""
    name = protocol.job_exchange(job_id)
    ch.exchange_declare(name, "fanout", durable=True, auto_delete=True)
    ch.queue_bind(result_queue, name)
