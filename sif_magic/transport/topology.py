"""The exchanges and queues of one key scope, declared on a channel it is given.

Every name is ``sif_magic.<scope>.<what>`` (``protocol.names``; ``scope`` is the
signing key's id), so users with different keys never share a queue. Task and
result queues are bound to the scope's direct exchange under their own names:
every publish goes to an exchange of the scope, none to the default exchange.

Threads: the caller's (in practice the transport's I/O thread, which owns the channel);
nothing here holds state. Names and arguments come from ``protocol.names``.
"""

from __future__ import annotations

from typing import Any

from .. import protocol


def declare_topology(ch: Any, scope: str) -> None:
    """The exchanges and the dead-letter queue every side of ``scope`` may rely on."""
    ch.exchange_declare(protocol.direct_exchange(scope), "direct", durable=True)
    ch.exchange_declare(protocol.monitor_exchange(scope), "topic", durable=True)
    ch.exchange_declare(protocol.control_exchange(scope), "fanout", durable=True)
    ch.exchange_declare(protocol.dead_exchange(scope), "fanout", durable=True)
    dead = protocol.dead_queue(scope)
    ch.queue_declare(dead, durable=True, arguments=protocol.dead_queue_arguments())
    ch.queue_bind(dead, protocol.dead_exchange(scope))


def declare_routed_queue(ch: Any, scope: str, name: str, arguments: dict[str, Any]) -> Any:
    """A durable queue of ``scope``, bound to its direct exchange under its own name;
    the broker's answer to the declare (``.method.consumer_count``, ...)."""
    ok = ch.queue_declare(name, durable=True, arguments=arguments)
    ch.queue_bind(name, protocol.direct_exchange(scope), routing_key=name)
    return ok


def declare_task_queue(ch: Any, scope: str, runtime: str) -> str:
    name = protocol.task_queue(scope, runtime)
    declare_routed_queue(ch, scope, name, protocol.task_queue_arguments(scope))
    return name


def declare_retry_queue(ch: Any, scope: str, runtime: str) -> str:
    name = protocol.retry_queue(scope, runtime)
    declare_routed_queue(ch, scope, name, protocol.task_queue_arguments(scope))
    return name


def declare_private_queue(ch: Any, scope: str, what: str) -> str:
    """An exclusive, auto-deleted queue of one consumer (named: see ``private_queue``)."""
    name = protocol.private_queue(scope, what)
    ch.queue_declare(name, exclusive=True, auto_delete=True)
    return name
