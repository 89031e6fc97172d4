"""Batch what a worker sees into one EventBatch per job every ~100 ms.

Monitoring traffic therefore grows with the number of workers, not of calls:
within one interval only the last state of a call is kept, states travel as
index ranges, and log text is capped per interval (what is cut is counted).
Standard library only: the worker uses this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .protocol import STATE_NAMES, EventBatch, compress_ranges

MAX_LOG_BYTES_PER_FLUSH = 512 * 1024


class _Pending:
    __slots__ = ("states", "calls", "logs", "notes", "log_bytes", "cut")

    def __init__(self) -> None:
        self.states: dict[int, int] = {}
        self.calls: list[list] = []
        self.logs: list[list] = []
        self.notes: dict[str, str] = {}
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

    def states(self, job_id: str, indices: list[int], state: int) -> None:
        with self._lock:
            p = self._get(job_id)
            for i in indices:
                p.states[i] = state

    def note(self, job_id: str, index: int, text: str) -> None:
        with self._lock:
            self._get(job_id).notes[str(index)] = text

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
            by_state: dict[int, list[int]] = {}
            for i, s in p.states.items():
                by_state.setdefault(s, []).append(i)
            if p.cut:
                p.notes["-1"] = f"{p.cut} bytes of log lines cut in this interval (rate limit)"
            batch = EventBatch(
                job_id=job_id,
                worker=self.worker,
                host=self.host,
                t=now,
                states={STATE_NAMES[s]: compress_ranges(ix) for s, ix in by_state.items()},
                calls=p.calls,
                logs=p.logs,
                notes=p.notes,
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
