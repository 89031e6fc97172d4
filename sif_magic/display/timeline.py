"""The pictures of a run as data: a timeline binned per worker slot and time
bucket, and a histogram of call durations with its median and p95.

The timeline never has an element per call: a table of ``rows x buckets``
bytes (0: idle, else the state code + 1 of the call shown there, with
``RETRIED`` set when that call needed more than one attempt), so 100,000 calls
cost the same as 100. Where several calls share a bucket, the one whose state
ranks highest in ``RANK`` wins (a failure is never hidden by a neighbour that
succeeded). More slots than ``max_rows`` share rows.

Pure functions of a ``Timings`` copy (``Job.timings()``): any thread; the
display's pusher bins for the live view, the kernel thread for snapshots and
``job.plot()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..job.timings import Timings
from ..protocol import CANCELLED, DONE, FAILED, LOST, RETRYING, RUNNING

RETRIED = 0x80  # flag on a cell: its call needed more than one attempt
# drawn in this order: later states cover earlier ones in a shared bucket
RANK = (DONE, RUNNING, CANCELLED, RETRYING, LOST, FAILED)
BUCKETS = 400
MAX_ROWS = 120
HIST_BINS = 30
LOG_RATIO = 30.0  # durations whose max/min reaches this get a log axis


@dataclass
class Binned:
    """A timeline table: ``cells[r * buckets + b]`` for row ``r``, bucket ``b``;
    times in seconds since the job was made."""

    t0: float
    t1: float
    buckets: int
    rows: list[str] = field(default_factory=list)  # a label per row
    cells: bytes = b""
    calls: list[int] = field(default_factory=list)  # calls drawn per row

    def cell(self, row: int, bucket: int) -> int:
        return self.cells[row * self.buckets + bucket]

    def last_busy(self, row: int) -> int:
        """The last bucket of ``row`` that is not idle (-1: none)."""
        line = self.cells[row * self.buckets : (row + 1) * self.buckets]
        return max((b for b, c in enumerate(line) if c), default=-1)


def slot_label(worker: str, host: str, pid: int) -> str:
    return f"{host or worker or '?'}:{pid}" if pid else (host or worker or "?")


def bin_timeline(
    t: Timings,
    window: tuple[float, float] | None = None,
    buckets: int = BUCKETS,
    max_rows: int = MAX_ROWS,
) -> Binned:
    """Bin the calls that started: a row per slot (sorted by host, then pid),
    ``buckets`` columns over ``window`` (seconds since the job was made; the whole
    job when None). Running calls reach ``t.now``."""
    created, now = t.created, t.now
    ts, te, where, states, attempts = t.t_start, t.t_end, t.where, t.states, t.attempts
    started = [i for i in range(len(ts)) if ts[i] > 0.0]
    used = sorted({where[i] for i in started}, key=lambda h: (t.hosts[h][1], t.hosts[h][2], h))
    if window is not None and window[1] > window[0]:
        lo, hi = window
    else:
        lo = 0.0
        hi = max([1e-3] + [(te[i] or now) - created for i in started])
    group = max(1, math.ceil(len(used) / max(1, max_rows)))
    row_of = {h: k // group for k, h in enumerate(used)}
    n_rows = math.ceil(len(used) / group) if used else 0
    labels = []
    for r in range(n_rows):
        members = used[r * group : (r + 1) * group]
        label = slot_label(*t.hosts[members[0]])
        labels.append(label if len(members) == 1 else f"{label} (+{len(members) - 1})")
    cells = bytearray(n_rows * buckets)
    per_row = [0] * n_rows
    scale = buckets / (hi - lo)
    last = buckets - 1
    groups: dict[int, list[int]] = {}  # cell code -> its calls (one pass; painted by rank)
    for i in started:  # a call that started is running until its state says more
        code = (states[i] or RUNNING) + 1
        groups.setdefault(code | RETRIED if attempts[i] > 1 else code, []).append(i)
    offset = {h: row_of[h] * buckets for h in used}
    for code in [c for st in RANK for c in (st + 1, (st + 1) | RETRIED)]:
        for i in groups.get(code, ()):
            s = ts[i] - created
            e = (te[i] or now) - created
            if e < lo or s > hi:
                continue
            b0 = int((s - lo) * scale) if s > lo else 0
            b0 = last if b0 > last else b0  # a call starting at the window's end
            b1 = int((e - lo) * scale)
            off = offset[where[i]]
            if b1 <= b0:  # the common case of many short calls: one cell
                cells[off + b0] = code
            else:
                b1 = last if b1 > last else b1
                cells[off + b0 : off + b1 + 1] = bytes((code,)) * (b1 - b0 + 1)
            per_row[off // buckets] += 1
    return Binned(lo, hi, buckets, labels, bytes(cells), per_row)


def durations(t: Timings) -> list[float]:
    """Seconds each call with an outcome ran (done, failed), in call order."""
    ts, te, states = t.t_start, t.t_end, t.states
    return [
        te[i] - ts[i]
        for i in range(len(ts))
        if ts[i] > 0.0 and te[i] >= ts[i] and states[i] in (DONE, FAILED)
    ]


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (linear between neighbours)."""
    if not ordered:
        return 0.0
    pos = q * (len(ordered) - 1)
    k = int(pos)
    if k + 1 >= len(ordered):
        return ordered[-1]
    return ordered[k] + (ordered[k + 1] - ordered[k]) * (pos - k)


def histogram(values: list[float], bins: int = HIST_BINS) -> dict[str, Any]:
    """Bin edges and counts of ``values`` (log-spaced when they span decades:
    max/min >= ``LOG_RATIO``), with the median and the p95."""
    ordered = sorted(v for v in values if v >= 0.0)
    if not ordered:
        return {"n": 0, "edges": [], "counts": [], "log": False, "median": 0.0, "p95": 0.0}
    lo, hi = ordered[0], ordered[-1]
    log = lo > 0.0 and hi / lo >= LOG_RATIO
    if hi <= lo:
        hi = lo + max(1e-6, abs(lo) * 0.01)
    if log:
        a, b = math.log10(lo), math.log10(hi)
        edges = [10 ** (a + (b - a) * k / bins) for k in range(bins + 1)]
        where = [min(bins - 1, int((math.log10(v) - a) / (b - a) * bins)) for v in ordered]
    else:
        edges = [lo + (hi - lo) * k / bins for k in range(bins + 1)]
        where = [min(bins - 1, int((v - lo) / (hi - lo) * bins)) for v in ordered]
    counts = [0] * bins
    for k in where:
        counts[k] += 1
    return {
        "n": len(ordered),
        "edges": edges,
        "counts": counts,
        "log": log,
        "median": quantile(ordered, 0.5),
        "p95": quantile(ordered, 0.95),
    }
