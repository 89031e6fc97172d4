"""Results on their way out of a worker, and the acks of the chunks they finish.

Results wait here while the previous commit awaits the broker, so under load
one AMQP transaction carries many calls: each flush stages everything in the
outbox, one message per job and consumer channel (several, each under the broker's
size limit and at most MESSAGE_BYTES, when big values add up: ``batches``), on that
channel, followed by the acks of the chunks whose every result is staged (of a
claimed chunk: the get + ack of its claim message there, ``claims``); the connection
commits each channel's lot as one transaction (``transport``), so a chunk's
ack is never stored without its results. The task queue's prefetch follows
how long chunks take (``runner.scheduler.Prefetch``).

Threads: ``publish_results`` / ``ack_after_results`` / ``fail`` from the pool's
dispatcher thread (through the reporter) and from the I/O thread (a task the
worker refuses); ``_flush`` runs in the I/O thread. The outbox and the list of
finished deliveries are guarded by ``_lock``; the prefetch policy is written
only under it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .. import protocol
from ..protocol import FAILED, CallResult, ResultSegment, Task
from ..runner.chunk import Chunk
from ..runner.events import EventBuffer
from ..runner.scheduler import Prefetch
from ..transport import Connection

log = logging.getLogger("sif_magic.worker")
MESSAGE_BYTES = 16 << 20  # a result message holds segments up to this size (one bigger alone)


class Outbox:
    def __init__(
        self,
        conn: Connection,
        key: bytes,
        events: EventBuffer,
        queue: str,
        processes: int,
        worker: str,
        host: str,
    ) -> None:
        self.conn = conn
        self.key = key
        self.events = events
        self.queue = queue  # the task queue whose prefetch follows chunk durations
        self.worker = worker
        self.host = host
        self.pool: Any = None  # set by the worker once its pool exists (seconds per call)
        self.claims: Any = None  # set by the worker: acks, the prefetch window (claims.py)
        # a running chunk and one ready per process until chunks prove quick
        self.prefetch = Prefetch(processes)
        self._lock = threading.Lock()
        self._outbox: dict[tuple[Any, str, str], tuple[Any, list[ResultSegment]]] = {}
        self._finished: list[Any] = []  # deliveries whose every result is in the outbox
        self._flush_queued = False

    def publish_results(self, chunk: Chunk, results: ResultSegment) -> None:
        delivery, reply_to = chunk.tag
        key = (delivery.channel, chunk.job_id, reply_to)
        with self._lock:
            entry = self._outbox.get(key)
            if entry is None:
                self._outbox[key] = (delivery, [results])
            else:
                entry[1].append(results)
            flush = self._flush_wanted()
        if flush:
            self.conn.post(self._flush)  # an error is logged
        self.claims.finished(delivery, results.indices, results.status)
        self.events.outcomes(chunk.job_id, results.indices, results.status)

    def ack_after_results(self, delivery: Any, chunk: Chunk | None = None) -> None:
        """Ack a chunk whose every result is in the outbox: in the transaction that
        publishes the last of them (or a later one)."""
        with self._lock:
            self._finished.append(delivery)
            flush = self._flush_wanted()
            prefetch = self.adapt_prefetch(chunk) if chunk is not None else 0
        if flush:
            self.conn.post(self._flush)  # an error is logged
        if prefetch:
            self.claims.window()  # the new prefetch, less what claimed chunks take

    def fail(self, task: Task, positions: list[int], etype: str, why: str, delivery: Any) -> None:
        """Fail these calls of ``task`` without running them (``etype`` names the
        error class), then ack the task with their results."""
        log.warning("job %s: %s", task.job_id, why)
        now = time.time()
        results = [
            CallResult(
                index=task.calls[p],
                status=FAILED,
                error={"type": etype, "message": why, "frames": []},
                t_start=now,
                t_end=now,
                attempt=task.lost + 1,
                worker=self.worker,
                host=self.host,
            )
            for p in positions
        ]
        chunk = Chunk.from_task(task, tag=(delivery, task.reply_to))
        for seg in ResultSegment.of(results):
            self.publish_results(chunk, seg)
        self.ack_after_results(delivery)

    def adapt_prefetch(self, chunk: Chunk) -> int:
        """With ``_lock`` held, ``chunk`` done: the task queue's new prefetch, or 0
        (see ``scheduler.Prefetch``). A chunk's time is its calls times the time per
        call its slot measured lately."""
        seconds = len(chunk.only or ()) * self.pool.seconds_per_call(chunk.func_hash)
        want = self.prefetch.chunk_done(seconds)
        if want:
            log.debug("chunks of %.2g s: prefetch now %d", self.prefetch.chunk_seconds, want)
        return want

    def _flush_wanted(self) -> bool:
        """With ``_lock`` held: whether to queue a flush (none is queued yet; a
        queued one takes whatever arrives before it runs)."""
        wanted, self._flush_queued = not self._flush_queued, True
        return wanted

    def _flush(self) -> None:
        """In the I/O thread: stage the outbox on each delivery's channel, then the acks."""
        with self._lock:
            outbox, self._outbox = self._outbox, {}
            finished, self._finished = self._finished, []
            self._flush_queued = False
        limit = self.conn.max_message - 256 * 1024
        for (_, job_id, reply_to), (delivery, results) in outbox.items():
            for part in batches(results, min(limit, MESSAGE_BYTES)):
                body = protocol.ResultBatch(job_id, -1, part).encode_parts()
                self.conn.stage_publish(
                    delivery, self.conn.exchange, reply_to, body, kind="result", key=self.key
                )
        for delivery in finished:
            self.claims.settle(delivery)  # its ack, or the end of its claim

    @staticmethod
    def returned(kind: str, routing_key: str) -> None:
        """The broker returned a message it could not route (a mandatory publish)."""
        if kind == "result":
            log.warning(
                "results for %s could not be delivered: that result queue expired or was "
                "deleted, so nobody waits for them; dropped",
                routing_key,
            )
        else:
            log.error(
                "the broker could not route a %s message to %r: it is lost", kind, routing_key
            )


def batches(segments: list[ResultSegment], limit: int = 0) -> list[list[ResultSegment]]:
    """``segments`` in runs of at most ``limit`` bytes (default MESSAGE_BYTES; a bigger
    segment alone): one message each. Under load the outbox holds many segments of one
    job (big arrays add up fast), and the broker refuses a message over its limit."""
    limit = limit or MESSAGE_BYTES
    out: list[list[ResultSegment]] = []
    size = limit
    for seg in segments:
        # extras: (error, stdout, stderr, dropped, blob) tuples (or CallExtra)
        extras = sum(len(e[1]) + len(e[2]) + len(e[4]) + 512 for e in seg.extra.values())
        n = seg.nbytes + 64 * len(seg) + extras
        if size + n > limit:
            out.append([])
            size = 0
        out[-1].append(seg)
        size += n
    return out
