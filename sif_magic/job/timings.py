"""Timings: a copy of what the pictures of a run need from a job's outcome table
(per call its start, end, slot, state and attempt), taken under the Job's lock.

Threads: ``timings_of`` runs under the owning Job's lock (``Job.timings``); the
copy it returns belongs to the caller (the display's pusher, the kernel thread
of ``job.plot()``, the panel's responder) and is never shared while it changes.
"""

from __future__ import annotations

import time
from array import array
from typing import NamedTuple

from .outcomes import Outcomes


class Timings(NamedTuple):
    """Columns, one entry per call; ``where[i]`` indexes ``hosts`` (0: not started
    anywhere known); a time of 0.0 is "not yet"."""

    created: float  # when the job was made (the origin of the time axis)
    now: float  # the end of running bars: the job's end, else the time of the copy
    t_start: array
    t_end: array
    where: array
    states: bytes
    attempts: bytes
    hosts: list[tuple[str, str, int]]  # (worker, host, pid) of each slot


def timings_of(o: Outcomes, created: float, finished_at: float | None) -> Timings:
    """A copy of ``o``'s columns (call under the owning Job's lock)."""
    return Timings(
        created=created,
        now=finished_at or time.time(),
        t_start=array("d", o.t_start),
        t_end=array("d", o.t_end),
        where=array("H", o.where),
        states=bytes(o.states),
        attempts=bytes(o.attempts),
        hosts=list(o.hosts),
    )
