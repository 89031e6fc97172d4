"""Which valid tasks a worker does not run: copies of tasks (replays), and tasks of
jobs that have ended.

A copy is a task whose message id was taken here before (``protocol.SeenIds``,
keyed by ``protocol.seen_key``): not one the broker redelivers (a worker died,
a connection dropped: ``redelivered`` set) nor one it dead-lettered back (a
lease expired: a new ``x-death`` count). A job has ended (done, cancelled, closed, or its results expired) once its
exchange ``protocol.job_exchange(job)`` is gone: its client deletes it when the
job is done or cancelled, and it goes with the job's result queue (auto-delete).
A task of an ended job is a copy published again (a replay) or a chunk left
behind: the worker acks it without running it. The worker asks the broker (a
passive declare) the first time it meets a job, then at most every ``RECHECK``
seconds while the job lives; it remembers ended jobs (the newest ``size``). A
worker that starts afresh asks again: nothing rests on a worker's memory.

Threads: the transport's I/O thread only (``Worker._on_task``); it owns
everything here.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Container
from typing import Any

from .. import protocol
from ..transport import Connection

log = logging.getLogger("sif_magic.worker")
RECHECK = 5.0  # seconds a job found alive is taken as alive without asking again


class TaskGate:
    def __init__(self, conn: Connection, size: int = 4096) -> None:
        self.conn = conn
        self.size = size
        self.dropped = 0  # tasks of ended jobs, acked unrun
        self.replays = 0  # copies of tasks taken here before, acked unrun
        self.seen = protocol.SeenIds()
        self._alive: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._ended: collections.OrderedDict[str, bool] = collections.OrderedDict()

    def admit(
        self,
        task: protocol.Task,
        signed: protocol.Signed,
        redelivered: bool,
        headers: dict[str, Any],
        cancels: Container[str],
    ) -> bool:
        """Whether to run ``task`` (else the caller acks it unrun; this says why)."""
        if not redelivered and not self.seen.first(protocol.seen_key(signed, headers)):
            self.replays += 1
            log.warning(
                "dropped a copy of a task received here before (job %s chunk %d, message "
                "%s): a replay, not run (%d so far)",
                task.job_id,
                task.chunk,
                signed.msg_id,
                self.replays,
            )
            return False
        if task.job_id in cancels:
            return False
        if self.ended(task.job_id):
            self._drop(task)
            return False
        return True

    def ended(self, job_id: str) -> bool:
        """Whether ``job_id`` has ended (asks the broker now and then; inline, on the
        I/O thread: a lost connection raises, and the broker redelivers the task)."""
        if job_id in self._ended:
            return True
        now = time.monotonic()
        asked = self._alive.get(job_id)
        if asked is not None and now - asked < RECHECK:
            return False
        if self.conn.exchange_exists(protocol.job_exchange(self.conn.scope, job_id)):
            _keep(self._alive, job_id, now, self.size)
            return False
        self._alive.pop(job_id, None)
        _keep(self._ended, job_id, False, self.size)  # True once said
        return True

    def _drop(self, task: protocol.Task) -> None:
        """Count a task of an ended job, not run; say so once per job."""
        self.dropped += 1
        if self._ended.get(task.job_id):
            return
        self._ended[task.job_id] = True
        log.warning(
            "job %s has ended (done, cancelled or expired): its tasks that still arrive "
            "(chunk %d first) are dropped, not run: copies published again, or chunks "
            "left in a queue",
            task.job_id,
            task.chunk,
        )


def _keep(d: collections.OrderedDict, key: str, value: object, size: int) -> None:
    """``d[key] = value`` as the newest entry; the oldest go beyond ``size``."""
    d[key] = value
    d.move_to_end(key)
    while len(d) > size:
        d.popitem(last=False)
