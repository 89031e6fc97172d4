"""A job's chunks onto its runtime's task queue, as signed ``Task`` messages.

Threads: ``publish_chunks`` runs on the job's own ``sif-publish`` thread; the
transport's I/O thread commits the transactions it hands over, in order. It
stops early once the job is cancelled (``Job.cancel_requested``).
"""

from __future__ import annotations

import logging
from typing import Any

from ... import protocol
from ...job import Job
from ...runner import spill
from ...runner.versions import versions
from ...transport import Connection
from ..base import JobTask

log = logging.getLogger("sif_magic.rabbitmq")

BATCH = 200  # messages per transaction at most


def publish_chunks(
    conn: Connection,
    key: bytes,
    runtime: str,
    session: str,
    job: Job,
    task: JobTask,
    reply_to: str,
    after: Any = None,
) -> None:
    """Publish the job's chunks in transactions of up to BATCH messages / ~4 MB (of
    inputs: a chunk whose arrays go by file is written here, and sent before the next
    is written), with a few transactions in flight (the I/O thread commits them in
    order). ``after``: the Future of the job's result consumer: nothing is published
    if that failed (the job's caller hears why)."""
    queue = protocol.task_queue(conn.scope, runtime)
    pending: list = []
    batch: list[tuple[str, str, Any, str]] = []
    size = 0
    for c in task.chunks:
        if job.cancel_requested or (after is not None and after.done() and after.exception()):
            break
        payload = c.payload()  # a chunk written to the spill directory counts its file
        body = task.task(
            job.job_id,
            c,
            reply_to,
            python=versions()[0],
            cloudpickle=versions()[1],
            client=session,
        ).encode_parts()
        if c.args[: len(spill.MAGIC)] == spill.MAGIC:  # by file: only for workers that see it
            job.spilled_calls.extend(c.calls)  # (``spillwatch``)
        batch.append((conn.exchange, queue, body, "task"))
        size += max(payload, sum(memoryview(p).nbytes for p in body))
        if len(batch) >= BATCH or size >= 4 * 1024 * 1024:
            pending.append(conn.publish_batch(batch, key=key, wait=False, after=after))
            batch, size = [], 0
            if len(pending) > 4:
                _settle(job, pending.pop(0), after)
    if batch:
        pending.append(conn.publish_batch(batch, key=key, wait=False, after=after))
    for fut in pending:
        _settle(job, fut, after)


def _settle(job: Job, fut: Any, after: Any = None) -> None:
    try:
        fut.result()
    except Exception as e:  # noqa: BLE001
        if after is not None and after.done() and after.exception() is e:
            return  # the job never started: its caller got this error
        log.error("job %s: chunks could not be published: %s", job.job_id, e)
