"""Batch what a worker sees into one EventBatch per job every ~100 ms.

Monitoring traffic therefore grows with the number of workers, not of calls:
within one interval only the last state of a call is kept (and the last
progress it reported), states travel as index ranges, and log text is capped
per interval (what is cut is counted).
Standard library only: the worker uses this.

Threads: any thread records (the pool's dispatcher through the Reporter, the
worker's I/O thread for the outcomes it decides itself); a lock guards the
pending batches. The flusher thread (``sif-events``) swaps them out every
``interval`` and hands each to the sink, which runs in that thread (or in the
one calling ``flush``/``stop``).
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections.abc import Callable

from ..protocol import DONE, STATE_NAMES, TERMINAL, EventBatch, compress_ranges, consecutive

MAX_LOG_BYTES_PER_FLUSH = 512 * 1024


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    """Sorted, overlapping or adjacent inclusive ranges merged."""
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


class _Pending:
    __slots__ = (
        "states", "done", "calls", "logs", "notes", "progress", "unseen", "log_bytes", "cut",
    )  # fmt: skip

    def __init__(self) -> None:
        self.states: dict[int, int] = {}
        self.done: list[list[int]] = []  # ranges of calls done (final: no later state)
        self.calls: list[list] = []
        self.logs: list[list] = []
        self.notes: dict[str, str] = {}
        self.progress: dict[str, list] = {}  # call -> [fraction, message], the newest only
        self.unseen: list[int] = []  # calls handed back: their spill file is not readable here
        self.log_bytes = 0
        self.cut = 0


class EventBuffer:
    def __init__(
        self,
        worker: str,
        host: str,
        sink: Callable[[EventBatch], None],
        interval: float = 0.1,
    ) -> None:
        self.worker = worker
        self.host = host
        self.sink = sink
        self.interval = interval
        self._lock = threading.Lock()
        self._jobs: dict[str, _Pending] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _get(self, job_id: str) -> _Pending:
        p = self._jobs.get(job_id)
        if p is None:
            p = self._jobs[job_id] = _Pending()
        return p

    def state(self, job_id: str, index: int, state: int, attempt: int = 0, t: float = 0.0) -> None:
        with self._lock:
            p = self._get(job_id)
            p.states[index] = state
            if attempt:
                p.calls.append([index, attempt, t])

    def outcomes(self, job_id: str, indices: array, status: bytes) -> None:
        """Calls that ended (``status`` per call). Consecutive calls all done, the
        usual case, are kept as one range, not call by call."""
        if status.count(DONE) == len(indices) and consecutive(indices):
            with self._lock:
                self._get(job_id).done.append([indices[0], indices[-1]])
            return
        with self._lock:
            states = self._get(job_id).states
            for i, st in zip(indices, status):
                if st in TERMINAL:  # not SKIP: that call runs again
                    states[i] = st

    def note(self, job_id: str, index: int, text: str) -> None:
        with self._lock:
            self._get(job_id).notes[str(index)] = text

    def unseen(self, job_id: str, indices: list[int], text: str) -> None:
        """Calls handed back because their inputs are in a spill file this worker cannot
        read: a note each (``text``), and the batch's ``unseen`` list."""
        with self._lock:
            p = self._get(job_id)
            p.unseen.extend(indices)
            p.notes.update(dict.fromkeys(map(str, indices), text))

    def progress(self, job_id: str, index: int, fraction: float, message: str) -> None:
        """What a call reported (``sif_magic.report``): only the newest per interval goes."""
        with self._lock:
            self._get(job_id).progress[str(index)] = [round(fraction, 4), message]

    def log(self, job_id: str, index: int, stream: int, text: str) -> None:
        with self._lock:
            p = self._get(job_id)
            if p.log_bytes + len(text) > MAX_LOG_BYTES_PER_FLUSH:
                p.cut += len(text)
                return
            p.log_bytes += len(text)
            p.logs.append([index, stream, text])

    def flush(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, {}
        now = time.time()
        for job_id, p in jobs.items():
            done = _merge(p.done)
            starts = [r[0] for r in done]
            by_state: dict[int, list[int]] = {}
            for i, s in p.states.items():
                k = bisect.bisect_right(starts, i) - 1
                if k >= 0 and i <= done[k][1]:
                    s = DONE  # only the last state of a call: it ended done meanwhile
                by_state.setdefault(s, []).append(i)
            ranges = {STATE_NAMES[s]: compress_ranges(ix) for s, ix in by_state.items()}
            if done:
                ranges["done"] = _merge(ranges.get("done", []) + done)
            if p.cut:
                p.notes["-1"] = f"{p.cut} bytes of log lines cut in this interval (rate limit)"
            batch = EventBatch(
                job_id=job_id,
                worker=self.worker,
                host=self.host,
                t=now,
                states=ranges,
                calls=p.calls,
                logs=p.logs,
                notes=p.notes,
                progress=p.progress,
                unseen=p.unseen,
            )
            try:
                self.sink(batch)
            except Exception:  # noqa: BLE001 - monitoring must never stop the work
                pass

    def start(self) -> EventBuffer:
        self._thread = threading.Thread(target=self._run, name="sif-events", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.flush()
