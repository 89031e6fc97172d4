"""Queue clean-up and dead letters for tests (imported by name: two conftest.py files exist)."""

from __future__ import annotations

from typing import Any

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def delete_task_queues(runtime: str, url: str = BROKER_URL) -> None:
    """Delete a runtime's task and retry queues (tests leave no queue behind)."""
    import pika

    from sif_magic import protocol

    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except Exception:  # noqa: BLE001 - no broker, nothing to clean
        return
    try:
        for queue in (protocol.task_queue(runtime), protocol.retry_queue(runtime)):
            ch = conn.channel()
            try:
                ch.queue_delete(queue)
            except Exception:  # noqa: BLE001 - never declared
                pass
            if ch.is_open:
                ch.close()
    finally:
        conn.close()


def delete_queue(queue: str, url: str = BROKER_URL) -> None:
    """A runtime's task queue (by its name) and its retry queue."""
    delete_task_queues(queue.removeprefix("sif_magic.tasks."), url)


def consumers(
    queue: str, url: str = BROKER_URL, *, declare: bool = False, queue_type: str = "classic"
) -> int | None:
    """Consumers of ``queue``: None while it does not exist, unless ``declare`` (then it
    is declared as a task queue of ``queue_type`` first, so it counts 0 before any
    worker joined)."""
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
                args = protocol.task_queue_arguments(queue_type)
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
        while True:
            method, props, body = ch.basic_get(protocol.DEAD_QUEUE, auto_ack=False)
            if method is None:
                break
            deaths = (props.headers or {}).get("x-death") or [{}]
            if deaths[0].get("queue") == from_queue:
                ch.basic_ack(method.delivery_tag)
                out.append((props, body))
    finally:
        conn.close()  # the others go back to the dead-letter queue, unacked
    return out
