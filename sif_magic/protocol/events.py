"""Monitoring: EventBatch (what one worker saw of one job in one flush interval) and
the compressed index ranges it carries.

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .framing import ProtocolError, _json_object, _require, compact_json
from .names import STATE_CODES


@dataclass(frozen=True)
class EventBatch:
    """What one worker saw of one job during one flush interval.

    ``states`` maps a state name to compressed call-index ranges ``[[a, b], ...]``
    (inclusive) that entered that state. Only the last state of a call within
    the interval is sent. ``calls`` carries ``[index, attempt, t_start]`` of the
    calls that started in the interval (outcomes travel in results).
    ``logs`` is ``[[index, stream, text], ...]`` with stream 1 (stdout) or 2
    (stderr), in the order written. ``notes`` holds free text per call, such as
    why a call is retrying (``{"17": "worker lost"}``). ``progress`` holds what
    running calls reported last (``sif_magic.report``): ``{"17": [0.4, "step 4/10"]}``;
    it travels only when not empty (older readers ignore it). ``unseen`` lists calls
    this worker handed back because their inputs are in a spill file it cannot read
    (``worker.foreign.spill_unseen``; only when not empty): the client fails such calls
    once every live worker has done so (``backends.rabbitmq.spillwatch``).
    """

    job_id: str
    worker: str
    host: str
    t: float
    states: dict[str, list[list[int]]] = field(default_factory=dict)
    calls: list[list[Any]] = field(default_factory=list)
    logs: list[list[Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    progress: dict[str, list[Any]] = field(default_factory=dict)
    unseen: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        d: dict[str, Any] = {
            "job": self.job_id,
            "worker": self.worker,
            "host": self.host,
            "t": self.t,
            "states": self.states,
            "calls": self.calls,
            "logs": self.logs,
            "notes": self.notes,
        }
        if self.progress:
            d["progress"] = self.progress
        if self.unseen:
            d["unseen"] = self.unseen
        return compact_json(d).encode()

    @classmethod
    def decode(cls, body: bytes) -> EventBatch:
        d = _json_object(body)
        _require(d, "job", "worker", "t")
        states = d.get("states") or {}
        if not isinstance(states, dict) or any(k not in STATE_CODES for k in states):
            raise ProtocolError("events carry an unknown state")
        return cls(
            job_id=str(d["job"]),
            worker=str(d["worker"]),
            host=str(d.get("host", "")),
            t=float(d["t"]),
            states=states,
            calls=list(d.get("calls") or []),
            logs=list(d.get("logs") or []),
            notes=dict(d.get("notes") or {}),
            progress=_progress(d.get("progress")),
            unseen=[int(i) for i in d.get("unseen") or []],
        )


def _progress(value: Any) -> dict[str, list[Any]]:
    """The ``progress`` field checked: call -> [fraction in 0..1, message]."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("events carry a progress field that is not an object")
    out: dict[str, list[Any]] = {}
    for key, entry in value.items():
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int | float)):
            raise ProtocolError(f"events carry a bad progress entry for call {key}")
        out[str(key)] = [min(1.0, max(0.0, float(entry[0]))), str(entry[1])]
    return out


def compress_ranges(indices: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7, 9, 10] -> [[1, 3], [7, 7], [9, 10]]."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        elif not out or i > out[-1][1]:
            out.append([i, i])
    return out


def expand_ranges(ranges: list[list[int]]) -> range | list[int]:
    if len(ranges) == 1:
        a, b = ranges[0]
        return range(int(a), int(b) + 1)
    return [i for a, b in ranges for i in range(int(a), int(b) + 1)]
