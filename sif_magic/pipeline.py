"""Pipelines: ``ex.map_job(g, job1)`` maps ``g`` over ``job1``'s results as they come.

The downstream job has one call per upstream call, at the same index. It starts
with no chunks; a feeder thread sends the inputs that arrived as chunks of it
(``Backend.add_chunks``), without waiting for the whole upstream job. An
upstream call that failed gives its downstream call the outcome failed, with
an ``UpstreamError`` that names the upstream job and call; one that was
cancelled, cancelled. Cancelling the downstream job cancels the upstream one
too (``Job.link``); the feeder then stops sending.

Threads: the upstream job's calls settle on its folding thread, where the
futures' callbacks only append an index and notify. The feeder thread
(``sif-pipe``, one per pipeline) owns the chunk numbers; it reads upstream
values, pickles chunks, calls the backend and folds the failures into the
downstream job (``Job.apply_segments``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import pickle
import threading
import time
from array import array
from typing import TYPE_CHECKING

from . import _serialize
from .errors import SifMagicError, UpstreamError, wire_name
from .protocol import CANCELLED, FAILED, CallExtra, ResultSegment

if TYPE_CHECKING:
    from .backends import Backend, JobTask
    from .job import Job

log = logging.getLogger("sif_magic.pipeline")


class Feeder:
    def __init__(
        self,
        backend: Backend,
        job: Job,
        upstream: Job,
        task: JobTask,
        size: int,
        max_bytes: int,
        spill_dir: str = "",
        arrays_over: int = 0,
    ) -> None:
        self.backend, self.job, self.upstream, self.task = backend, job, upstream, task
        self.size, self.max_bytes, self.spill_dir = size, max_bytes, spill_dir
        self.arrays_over = arrays_over  # chunks whose arrays take this much go by file
        self._ready: collections.deque[int] = collections.deque()
        self._cond = threading.Condition()
        self._number = 0  # chunks sent so far (their numbers)
        job.link(upstream)

    def start(self) -> None:
        for i, fut in enumerate(self.upstream.futures):
            fut.add_done_callback(lambda _f, i=i: self._settled(i))
        threading.Thread(target=self._run, name="sif-pipe", daemon=True).start()

    def _settled(self, i: int) -> None:  # the upstream job's folding thread
        with self._cond:
            self._ready.append(i)
            self._cond.notify()

    def _run(self) -> None:
        left = self.upstream.n
        while left and not self.job.done():
            with self._cond:
                self._cond.wait_for(lambda: bool(self._ready), timeout=1.0)
                batch = list(self._ready)
                self._ready.clear()
            left -= len(batch)
            if batch and not self.job.cancel_requested:
                try:
                    self._feed(batch)
                except Exception as e:  # noqa: BLE001 - the calls fail, the kernel goes on
                    log.exception("pipeline %s: could not send calls", self.job.job_id)
                    self._settle(batch, FAILED, f"could not be sent: {e}")

    def _feed(self, batch: list[int]) -> None:
        futures, ok, values = self.upstream.futures, [], []
        for i in sorted(batch):
            error = futures[i].exception()
            if error is None:
                ok.append(i)
                values.append(futures[i].result())
            elif self.upstream.state(i) == "cancelled":
                self._settle([i], CANCELLED, "")
            else:
                self._settle([i], FAILED, _short(error))
        if not ok:
            return
        try:
            chunks = _serialize.make_chunks(
                values,
                self.size,
                self.max_bytes,
                len(self.task.func),
                None,
                self.spill_dir,
                self.arrays_over,
            )
        except SifMagicError as e:  # an upstream value that cannot travel: its call fails
            self._settle(ok, FAILED, f"its value cannot be sent on: {e}")
            return
        for c in chunks:
            c.number, c.calls = self._number, [ok[k] for k in c.calls]
            self._number += 1
        self.backend.add_chunks(self.job, dataclasses.replace(self.task, chunks=chunks))

    def _settle(self, calls: list[int], status: int, why: str) -> None:
        """Give ``calls`` their outcome here: failed (an UpstreamError saying ``why``)
        or cancelled."""
        up, m, now = self.upstream, len(calls), time.time()
        extra = {}
        if status == FAILED:
            for k, i in enumerate(calls):
                message = (
                    f"the input of call {i} is the result of call {i} of job {up.job_id} "
                    f"({up.name!r}), which {why if why.startswith('could') else 'failed: ' + why}"
                )
                record = {"type": wire_name(UpstreamError), "message": message, "frames": []}
                extra[k] = CallExtra(record, b"", b"", 0, b"")  # type: ignore[arg-type]
        seg = ResultSegment(
            array("q", calls), bytes([status]) * m, b"\x01" * m, array("d", [now]) * (2 * m),
            pickle.dumps([None] * m), extra, "pipeline", f"upstream job {up.job_id}",
        )  # fmt: skip
        self.job.apply_segments([seg])


def _short(error: BaseException) -> str:
    """An upstream call's exception in one line."""
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    name = type(error).__name__
    return (first if first.startswith(name) or ":" in first[:40] else f"{name}: {first}")[:300]
