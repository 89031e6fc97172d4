"""Result segments as a slot sends them, for tests that fold them into a Job."""

from __future__ import annotations

import pickle
from array import array

from sif_magic.protocol import DONE, FAILED, ResultSegment


def segment(indices: list[int], values: list, status: list[int] | None = None, pid: int = 7):
    """A segment as a slot sends it: done values in one pickled list, a failed call's
    exception as its own pickle."""
    status = status or [DONE] * len(indices)
    done = [v if st == DONE else None for v, st in zip(values, status)]
    extra = {
        k: (
            {"type": type(v).__name__, "message": str(v), "frames": []},
            b"",
            b"",
            0,
            pickle.dumps(v),
        )
        for k, (v, st) in enumerate(zip(values, status))
        if st == FAILED
    }
    times = array("d", [t for i in indices for t in (float(i), i + 0.5)])
    return ResultSegment(
        array("q", indices),
        bytes(status),
        bytes([1] * len(indices)),
        times,
        pickle.dumps(done),
        extra,
        "w1",
        "h1",
        pid,
    )
