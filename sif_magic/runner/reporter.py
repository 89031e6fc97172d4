"""What a pool tells about the calls it runs, and the one way both sides take it.

A ``Pool`` reports to a ``Reporter``: a call runs, retries, writes output or
reports its progress
(monitoring: it goes to the job's ``EventBuffer``, which batches it), calls
ended (``results``: the sink the side owns) and a chunk has every result
(``chunk_done``). ``EventReporter`` is that reporter for the RabbitMQ worker
(sink: publish to the job's result queue; chunk done: ack its delivery) and for
the local backend (sink: fold into the job; nothing to ack).

Threads: the pool calls these from its dispatcher thread only; they must
return quickly. The EventBuffer has its own lock; the sinks are the owners'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ..protocol import RETRYING, RUNNING, ResultSegment
from .chunk import Chunk
from .events import EventBuffer


class Reporter(Protocol):
    def started(self, chunk: Chunk, index: int, attempt: int, t: float) -> None: ...
    def retrying(self, chunk: Chunk, index: int, attempt: int, note: str) -> None: ...
    def output(self, chunk: Chunk, index: int, stream: int, data: bytes) -> None: ...
    def progress(self, chunk: Chunk, index: int, fraction: float, message: str) -> None: ...
    def results(self, chunk: Chunk, results: ResultSegment) -> None: ...
    def chunk_done(self, chunk: Chunk) -> None: ...


def _nothing(chunk: Chunk) -> None:
    pass


class EventReporter:
    """Monitoring to ``events``; outcomes to ``results``; ``chunk_done`` when a
    chunk has all its results (the worker acks its delivery then)."""

    def __init__(
        self,
        events: EventBuffer,
        results: Callable[[Chunk, ResultSegment], None],
        chunk_done: Callable[[Chunk], None] = _nothing,
    ) -> None:
        self.events = events
        self._results = results
        self._chunk_done = chunk_done

    def started(self, chunk: Chunk, index: int, attempt: int, t: float) -> None:
        self.events.state(chunk.job_id, index, RUNNING, attempt, t)

    def retrying(self, chunk: Chunk, index: int, attempt: int, note: str) -> None:
        self.events.state(chunk.job_id, index, RETRYING, attempt, time.time())
        self.events.note(chunk.job_id, index, note)

    def output(self, chunk: Chunk, index: int, stream: int, data: bytes) -> None:
        self.events.log(chunk.job_id, index, stream, data.decode("utf-8", "replace"))

    def progress(self, chunk: Chunk, index: int, fraction: float, message: str) -> None:
        self.events.progress(chunk.job_id, index, fraction, message)

    def results(self, chunk: Chunk, results: ResultSegment) -> None:
        self._results(chunk, results)

    def chunk_done(self, chunk: Chunk) -> None:
        self._chunk_done(chunk)
