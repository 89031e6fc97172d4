"""The exchanges and queues of one key scope, declared on a channel it is given.

Every name is ``sif_magic.<scope>.<what>`` (``protocol.names``; ``scope`` is the
signing key's id), so users with different keys never share a queue. Task and
result queues are bound to the scope's direct exchange under their own names:
every publish goes to an exchange of the scope, none to the default exchange.

Every durable queue of ours is declared here (``declare_queue``), with the arguments
``protocol.names`` builds for the connection's queue type (classic or quorum). A
queue that exists with another type makes the broker close the channel
(PRECONDITION_FAILED, "inequivalent arg 'x-queue-type'"); that becomes a BrokerError
that says which setting to align, instead of a reconnect loop.

Threads: the caller's (in practice the transport's I/O thread, which owns the channel);
nothing here holds state. Names and arguments come from ``protocol.names``.
"""

from __future__ import annotations

from typing import Any

import pika.exceptions as pe

from .. import protocol
from ..errors import BrokerError


def declare_queue(ch: Any, name: str, arguments: dict[str, Any], wait: bool = True) -> Any:
    """``queue.declare`` of durable queue ``name``; its declare-ok. ``wait=False``: not
    waited for (AMQP's nowait, see ``bind``): the next method waited for on this channel
    raises what the broker refused (``refused_queue`` explains it)."""
    if not wait:
        ch._impl.queue_declare(name, durable=True, arguments=arguments, callback=None)
        return None
    try:
        return ch.queue_declare(name, durable=True, arguments=arguments)
    except pe.ChannelClosedByBroker as e:
        raise refused_queue(name, e, protocol.queue_type_of(arguments)) from None


def refused_queue(name: str, e: pe.ChannelClosedByBroker, ours: str = "") -> Exception:
    """The error for the broker's refusal ``e`` of a declare of queue ``name``: a
    BrokerError saying which setting to align if the queue exists with another type,
    else ``e`` itself."""
    if e.reply_code != 406 or "x-queue-type" not in str(e.reply_text):
        return e
    asked = f"than queue_type={ours!r} asks for" if ours else "than this side asks for"
    return BrokerError(
        f"queue {name!r} exists on the broker with another type {asked} ({e.reply_text}). "
        "Set the same queue_type on every notebook and worker of this vhost (%sif_config "
        "queue_type=..., SIF_MAGIC_QUEUE_TYPE, sif-magic worker --queue-type), or, once no "
        f"job uses it, delete the queue (rabbitmqctl delete_queue -p VHOST {name}) so that "
        "it is declared again"
    )


def declare_topology(ch: Any, scope: str, queue_type: str = "classic") -> None:
    """The exchanges and the dead-letter queue every side of ``scope`` may rely on."""
    ch.exchange_declare(protocol.direct_exchange(scope), "direct", durable=True)
    ch.exchange_declare(protocol.monitor_exchange(scope), "topic", durable=True)
    ch.exchange_declare(protocol.control_exchange(scope), "fanout", durable=True)
    ch.exchange_declare(protocol.dead_exchange(scope), "fanout", durable=True)
    dead = protocol.dead_queue(scope)
    declare_queue(ch, dead, protocol.dead_queue_arguments(queue_type))
    ch.queue_bind(dead, protocol.dead_exchange(scope))


def bind(
    ch: Any, queue: str, exchange: str, routing_key: str | None = None, wait: bool = True
) -> None:
    """Bind ``queue`` to ``exchange``; ``wait=False``: without waiting for the broker's
    answer (AMQP's nowait). The broker runs a channel's methods in order and closes the
    channel on the first it refuses: the next method waited for (a consume) raises it."""
    if wait:
        ch.queue_bind(queue, exchange, routing_key=routing_key)
    else:
        ch._impl.queue_bind(queue, exchange, routing_key=routing_key, callback=None)


def declare_routed_queue(
    ch: Any, scope: str, name: str, arguments: dict[str, Any], wait: bool = True
) -> Any:
    """A durable queue of ``scope``, bound to its direct exchange under its own name;
    the broker's answer to the declare (``.method.consumer_count``, ...). ``wait=False``:
    neither is waited for (``bind``), and None is returned."""
    ok = declare_queue(ch, name, arguments, wait)
    bind(ch, name, protocol.direct_exchange(scope), name, wait)
    return ok


def declare_task_queue(ch: Any, scope: str, runtime: str, queue_type: str = "classic") -> str:
    name = protocol.task_queue(scope, runtime)
    declare_routed_queue(ch, scope, name, protocol.task_queue_arguments(scope, queue_type))
    return name


def declare_retry_queue(ch: Any, scope: str, runtime: str, queue_type: str = "classic") -> str:
    name = protocol.retry_queue(scope, runtime)
    declare_routed_queue(ch, scope, name, protocol.task_queue_arguments(scope, queue_type))
    return name


def declare_private_queue(ch: Any, scope: str, what: str) -> str:
    """An exclusive, auto-deleted queue of one consumer (named: see ``private_queue``)."""
    name = protocol.private_queue(scope, what)
    ch.queue_declare(name, exclusive=True, auto_delete=True)
    return name


def declare_job_exchange(
    ch: Any, scope: str, job_id: str, result_queue: str, wait: bool = True
) -> None:
    """The exchange that says job ``job_id`` may still run calls (``protocol.job_exchange``),
    bound to its result queue: auto-delete, so it goes when that queue goes.
    ``wait=False``: neither is waited for (``bind``)."""
    name = protocol.job_exchange(scope, job_id)
    if wait:
        ch.exchange_declare(name, "fanout", durable=True, auto_delete=True)
    else:
        ch._impl.exchange_declare(name, "fanout", durable=True, auto_delete=True, callback=None)
    bind(ch, result_queue, name, None, wait)
