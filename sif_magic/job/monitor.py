"""Folding the monitoring stream into a job: progress states, attempts, notes, live
logs, and the progress calls reported themselves (``sif_magic.report``).

Events only show what is going on; outcomes come with results (``Outcomes.fold``).
A call that has its outcome keeps its terminal state and its complete log; the
others take the state an event shows, except that an event never makes a call
done, failed or cancelled: a call a worker says ended is ``finishing`` until its
result arrives (a cancel shows as running), so ``state_counts()`` never counts a
call done whose result is not here, and a call whose result was lost with its
worker's channel shows running again when it is run again.

Threads: ``fold`` runs on the thread that receives the job's events (the
transport's I/O thread, or the local backend's event flusher) under the owning
Job's lock; ``notes`` and ``batches`` are read by the kernel and pusher threads.
Owner: the ``Job`` that made the folder.
"""

from __future__ import annotations

import time

from ..protocol import (
    CANCELLED,
    FINISHING,
    RUNNING,
    STATE_CODES,
    STATE_NAMES,
    TERMINAL,
    EventBatch,
)
from .logs import LogStore
from .outcomes import Outcomes


def _shown(event_state: int) -> int:
    if event_state == CANCELLED:
        return RUNNING
    return FINISHING if event_state in TERMINAL else event_state


# per event state: what a call's state becomes (terminal states stay)
_SHOW = [
    bytes(c if c in TERMINAL else _shown(s) for c in range(256)) for s in range(len(STATE_NAMES))
]


class EventFolder:
    """Folds ``EventBatch``es into an outcome table and a log store."""

    def __init__(self, outcomes: Outcomes, logs: LogStore) -> None:
        self.outcomes = outcomes
        self.logs = logs
        self.notes: dict[int, str] = {}  # call -> the last note (why it is retried, ...)
        # call -> (fraction, message) it reported last (sif_magic.report)
        self.progress: dict[int, tuple[float, str]] = {}
        self.batches = 0  # batches folded in (0 when not following live)
        # worker -> when it last handed back a chunk of this job whose spill file it cannot
        # read (forgotten once it starts a call of the job): ``spillwatch`` reads it
        self.spill_refused: dict[str, float] = {}

    def partial(self) -> tuple[float, dict[int, tuple[float, str]]]:
        """(the sum of the fractions calls without an outcome reported, those calls'
        reports): what the bar adds to the calls that ended, and the grid fills."""
        have, running = self.outcomes.have, {}
        for i, report in self.progress.items():
            if 0 <= i < len(have) and not have[i]:
                running[i] = report
        return sum(f for f, _ in running.values()), running

    def fold(self, batch: EventBatch) -> None:
        self.batches += 1
        outcomes, last = self.outcomes, self.outcomes.n - 1
        for name, ranges in batch.states.items():
            table = _SHOW[STATE_CODES[name]]
            for a, b in ranges:
                a, b = max(int(a), 0), min(int(b), last)
                if a <= b:
                    outcomes.show(table, a, b)
        if batch.unseen:
            self.spill_refused[batch.worker] = time.monotonic()
        elif batch.calls:
            self.spill_refused.pop(batch.worker, None)  # it does read the job's files
        if batch.calls:
            hid = outcomes.host_id(batch.worker, batch.host, 0)
            for entry in batch.calls:
                outcomes.started(int(entry[0]), int(entry[1]), float(entry[2]), hid)
        for key, note in batch.notes.items():
            self.notes[int(key)] = note
        for key, (fraction, message) in batch.progress.items():
            self.progress[int(key)] = (float(fraction), message)
        have, n = outcomes.have, outcomes.n
        for entry in batch.logs:
            i = int(entry[0])
            if 0 <= i < n and not have[i]:  # else the result (with the whole output) is here
                self.logs.add(i, int(entry[1]), str(entry[2]))
