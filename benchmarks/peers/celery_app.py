"""The Celery app both the benchmark client and its ``celery worker`` import.

RabbitMQ broker, ``rpc://`` result backend (replies through the broker), one
queue of this run's own (``SIF_BENCH_CELERY_QUEUE``).
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "sif_bench",
    broker=os.environ.get("SIF_BENCH_CELERY_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.update(
    task_default_queue=os.environ.get("SIF_BENCH_CELERY_QUEUE", "sif_bench.celery"),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=600,
)


@app.task(name="sif_bench.inc")
def inc(x: int) -> int:
    return x + 1
