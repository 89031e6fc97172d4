"""The one consumer of a job's result queue, for a job started here and for one
``attach`` follows.

The first message of every result queue is a ``jobinfo`` record (calls, name,
...): a job followed by ``attach`` is made from it (results that come before it
wait in ``early``; the done calls of a result whose spill file is gone, read by
the kernel that ran the job or in a directory not seen here, fail saying so:
``collected``). A job started here has an exchange while it may run calls
(``declare``; the client deletes it when the job ends). Results are not acked
while the job object lives: if this kernel dies, they return to the queue, and
the next ``attach`` gets them again.

Threads: ``on_message`` runs on the transport's I/O thread: it folds results into
the Job (under the Job's lock) and never blocks. The kernel thread waits on
``ready`` (``attach``). Owner: the ``RabbitBackend`` that consumes the queue.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

from ... import protocol
from ...errors import SerializationError, wire_name
from ...job import Job
from ...protocol import DONE, FAILED, CallExtra, JobInfo, ProtocolError, ResultBatch, ResultSegment
from ...runner import spill
from ...transport import declare_job_exchange, declare_routed_queue


class ResultStream:
    """Results of job ``job_id`` from its queue into ``job`` (or, until the jobinfo
    record comes, into a list; ``make_job(info)`` then makes the job)."""

    def __init__(
        self,
        job_id: str,
        key: bytes,
        refuse: Callable[[Any, str, Exception], None],
        job: Job | None = None,
        make_job: Callable[[dict[str, Any]], Job] | None = None,
    ) -> None:
        self.job_id = job_id
        self.scope = protocol.key_id(key)
        self.queue = protocol.result_queue(self.scope, job_id)
        self.key = key
        self.refuse = refuse  # (delivery, queue, why): dead-letter a message
        self.job = job
        self.make_job = make_job
        self.early: list[ResultBatch] = []
        self.ready = threading.Event()
        if job is not None:
            self.ready.set()

    def declare(self, ch: Any, result_ttl: float, queue_type: str = "classic") -> None:
        """On the I/O thread: the job's result queue and, while the job may still run
        calls, its exchange (``protocol.job_exchange``); again after every reconnect,
        when a job that ended meanwhile loses its exchange (its end may not have
        reached the broker)."""
        args = protocol.result_queue_arguments(self.scope, result_ttl, queue_type)
        # the bindings and the exchange are not waited for (a job's first result comes
        # sooner): the consume that follows on this channel raises what the broker refused
        declare_routed_queue(ch, self.scope, self.queue, args, wait=False)
        if self.job is not None and self.job.done():
            ch.exchange_delete(protocol.job_exchange(self.scope, self.job_id))
        else:
            declare_job_exchange(ch, self.scope, self.job_id, self.queue, wait=False)

    def on_message(self, props: Any, delivery: Any, method: Any, body: bytes) -> None:
        try:
            protocol.verify(self.key, props.type, body, props.headers)
            if props.type == "jobinfo":
                info = json.loads(body)
                if not isinstance(info, dict) or info.get("job") != self.job_id:
                    raise ProtocolError(f"another job's jobinfo record in {self.queue}")
                if self.job is None and self.make_job is not None:
                    self._adopt(self.make_job(info))
                return
            batch = ResultBatch.decode(body)
            if batch.job_id != self.job_id:
                raise ProtocolError(f"results of job {batch.job_id} in the queue of {self.job_id}")
        except (ProtocolError, ValueError, KeyError, TypeError) as e:
            self.refuse(delivery, self.queue, e)
            return
        if self.make_job is not None:  # attached: results another kernel may have read
            batch.segments = [collected(seg) for seg in batch.segments]
        if self.job is None:
            self.early.append(batch)
        else:
            self.job.apply_batch(batch)

    def _adopt(self, job: Job) -> None:
        self.job = job
        for batch in self.early:
            job.apply_batch(batch)
        self.early.clear()
        self.ready.set()


# Results stay unacked for ``attach``: a job that outlives the broker's consumer_timeout
# has its result channel closed; the consumer starts again and reads them again.
RESULTS_HELD = (
    "The results it held unacknowledged (kept for attach) come again; each call keeps "
    "its first result"
)


def jobinfo(job: Job, runtime: str, chunks: int) -> bytes:
    """The record a job's result queue starts with (what ``attach`` makes the job from)."""
    return JobInfo(job.job_id, job.n, job.name, job.errors, runtime, job.created, chunks).encode()


def collected(seg: ResultSegment) -> ResultSegment:
    """``seg`` as an attached job takes it: if its values were in a spill file that is
    gone (a kernel read them: a result's file goes once its values are unpickled; or
    swept, ``result_ttl`` after no kernel followed the job), its done calls fail,
    saying so, instead of every ``results()`` failing on the missing file; if the
    spill root it is in is not here at all (another machine, another spill_dir), they
    fail saying that instead."""
    path = spill.path_of(seg.values)
    if not path or os.path.exists(path):
        return seg
    job_dir = os.path.dirname(path)
    if os.path.isdir(os.path.dirname(job_dir)):
        why = (
            f"the result of this call was already collected: it came through the spill file "
            f"{path}, which is gone (the kernel that ran the job read it: a result's file is "
            "removed once its values are unpickled; or it was swept, result_ttl after no "
            "kernel followed the job). Only results not read before attach come back: run "
            "this call again"
        )
    else:
        why = (
            f"the result of this call came through a file of the job's spill directory "
            f"{job_dir}, which is not visible from this kernel (it ran on another machine, "
            "or with another spill_dir). Attach from a kernel that sees it (the same "
            "spill_dir, on a filesystem both share), or run this call again"
        )
    error = {"type": wire_name(SerializationError), "message": why, "frames": []}
    extra = dict(seg.extra)
    status = bytearray(seg.status)
    for k, st in enumerate(seg.status):
        if st == DONE:
            status[k] = FAILED
            old = extra.get(k, CallExtra(None, b"", b"", 0, b""))
            extra[k] = CallExtra(error, old[1], old[2], old[3], b"")
    return ResultSegment(
        seg.indices, bytes(status), seg.attempts, seg.times, pickle.dumps([None] * len(seg)),
        extra, seg.worker, seg.host, seg.pid, seg.devices,
    )  # fmt: skip
