"""Queue clean-up for tests (imported by name: two conftest.py files exist)."""

from __future__ import annotations

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
