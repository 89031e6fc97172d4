"""Queue names, clean-up and dead letters for tests (imported by name: two conftest.py
files exist).

Every queue is scoped by a key id (``sif_magic.<key id>.tasks.<runtime>``): ``scope()``
is the key id of a key file (default: the one sif_magic would use now)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def scope(key_file: str | Path | None = None) -> str:
    """The key id (queue scope) of ``key_file``, else of the default key (made if missing)."""
    from sif_magic import protocol
    from sif_magic._keys import load_key

    return protocol.key_id(load_key("", str(key_file) if key_file else ""))


def task_queue(runtime: str, key_file: str | Path | None = None) -> str:
    from sif_magic import protocol

    return protocol.task_queue(scope(key_file), runtime)


def _known_scopes() -> set[str]:
    """Key ids of the keys tests use without naming them: the session's and the current
    SIF_MAGIC_HOME's (only those that exist)."""
    from sif_magic import protocol

    found = set()
    homes = {
        os.environ.get("SIF_TEST_SESSION_HOME", ""),
        os.environ.get("SIF_MAGIC_HOME", ""),
    }
    for home in homes - {""}:
        path = Path(home) / "key"
        try:
            found.add(protocol.key_id(path.read_text().strip().encode()))
        except OSError:
            pass
    return found


def delete_task_queues(runtime: str, url: str = BROKER_URL, scopes: tuple[str, ...] = ()) -> None:
    """Delete a runtime's task and retry queues of the known keys and ``scopes``; of
    ``scopes`` (throwaway keys of one test) also the dead-letter queue and the
    exchanges (tests leave no queue behind)."""
    import pika

    from sif_magic import protocol

    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except Exception:  # noqa: BLE001 - no broker, nothing to clean
        return
    try:
        for s in _known_scopes() | set(scopes):
            names = [protocol.task_queue(s, runtime), protocol.retry_queue(s, runtime)]
            if s in scopes:
                names.append(protocol.dead_queue(s))
            for queue in names:
                ch = conn.channel()
                try:
                    ch.queue_delete(queue)
                except Exception:  # noqa: BLE001 - never declared
                    pass
                if ch.is_open:
                    ch.close()
        ch = conn.channel()
        for s in scopes:
            for make in (protocol.direct_exchange, protocol.monitor_exchange,
                         protocol.control_exchange, protocol.dead_exchange):  # fmt: skip
                ch.exchange_delete(make(s))  # no error for a missing one
    finally:
        conn.close()


def delete_queue(queue: str, url: str = BROKER_URL) -> None:
    """A runtime's task queue (by its name, ``sif_magic.<scope>.tasks.<runtime>``) and
    its retry queue."""
    _, kid, _, runtime = queue.split(".", 3)
    delete_task_queues(runtime, url, (kid,))


def consumers(
    queue: str, url: str = BROKER_URL, *, declare: bool = False, queue_type: str = "classic"
) -> int | None:
    """Consumers of ``queue``: None while it does not exist, unless ``declare`` (then it
    is declared as a task queue of its scope and ``queue_type`` first, so it counts 0
    before any worker joined)."""
    import logging

    import pika
    import pika.exceptions

    from sif_magic import protocol

    logging.getLogger("pika").setLevel(logging.CRITICAL)  # a missing queue is expected here
    params = pika.URLParameters(url)
    params.socket_timeout = 5
    params.connection_attempts = 1
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        try:
            if declare:
                args = protocol.task_queue_arguments(queue.split(".")[1], queue_type)
                return ch.queue_declare(queue, durable=True, arguments=args).method.consumer_count
            return ch.queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return None
    finally:
        conn.close()


def take_dead_letters(url: str, from_queue: str) -> list[tuple[Any, bytes]]:
    """Take (ack) the dead letters that came from ``from_queue``; leave the others."""
    import pika

    from sif_magic import protocol

    conn = pika.BlockingConnection(pika.URLParameters(url))
    out = []
    try:
        ch = conn.channel()
        dead = protocol.dead_queue(from_queue.split(".")[1])
        while True:
            method, props, body = ch.basic_get(dead, auto_ack=False)
            if method is None:
                break
            deaths = (props.headers or {}).get("x-death") or [{}]
            if deaths[0].get("queue") == from_queue:
                ch.basic_ack(method.delivery_tag)
                out.append((props, body))
    finally:
        conn.close()  # the others go back to the dead-letter queue, unacked
    return out
