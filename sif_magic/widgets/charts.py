"""RunCharts: the timeline and the duration histogram of a job, drawn on canvases
in the browser (front-end: ``labextension/src/charts.ts``).

Transport: the timeline as ``display.timeline.bin_timeline`` makes it (a row
per slot, ``buckets`` cells a row, one byte a cell) in one zlib-compressed
binary trait, ``cells_z``, with its row labels and time span; the histogram as
a small dict. So 100,000 calls cost the same few kilobytes as 100, and since
they are ordinary synced traits a reloaded page gets the newest picture.

Zoom: dragging across the timeline sets ``window`` (``[lo, hi]`` seconds since
the job was made; ``[]``: the whole job) from the front-end, which stretches
what it has at once; the kernel answers with the span binned anew
(:meth:`on_window`). A double click asks for the whole job again. Widget
messages wait while a blocking cell runs, so the front-end also asks for the
span on the kernel's control channel (``display.panel``, by ``job_id``).

Threads: ``show`` and ``resend`` run on the display's pusher thread (the one
writer); the window callback runs where the front-end's message is handled
(the kernel thread, or a subshell's) and only sets fields.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from traitlets import Bytes, Dict, Float, Int, List, Unicode

from ._base import SifWidget

__all__ = ["RunCharts"]


class RunCharts(SifWidget):
    """A job's timeline (a row per worker slot) and histogram of call durations."""

    _model_name = Unicode("RunChartsModel").tag(sync=True)
    _view_name = Unicode("RunChartsView").tag(sync=True)

    rows = List(Unicode(), help="A label per timeline row (a worker slot).").tag(sync=True)
    calls = List(Int(), help="Calls drawn per row.").tag(sync=True)
    buckets = Int(0, help="Cells per row.").tag(sync=True)
    t0 = Float(0.0, help="Start of the binned span, seconds since the job was made.").tag(sync=True)
    t1 = Float(0.0, help="End of the binned span.").tag(sync=True)
    cells_z = Bytes(
        b"", help="zlib of rows x buckets bytes: 0 idle, else state+1 (+128: retried)."
    ).tag(sync=True)
    hist = Dict(help="Histogram: n, edges, counts, log, median, p95.").tag(sync=True)
    window = List(Float(), help="[lo, hi] asked by a drag; [] for the whole job.").tag(sync=True)
    job_id = Unicode("", help="The job's id: the front-end asks for zoomed spans by it.").tag(
        sync=True
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sent: tuple[Any, ...] = ()
        #: How many pictures were sent (for tests).
        self.updates_sent = 0

    def asked_window(self) -> tuple[float, float] | None:
        """The span the user dragged, or None for the whole job."""
        w = list(self.window)
        return (float(w[0]), float(w[1])) if len(w) == 2 and w[1] > w[0] else None

    def show(self, binned: Any, hist: dict[str, Any]) -> bool:
        """Send a binned timeline (``timeline.Binned``) and a histogram; False when
        they did not change."""
        key = (binned.t0, binned.t1, binned.buckets, tuple(binned.rows), binned.cells, hist["n"],
               hist.get("median"), hist.get("p95"))  # fmt: skip
        if key == self._sent:
            return False
        self._sent = key
        with self.hold_sync():
            self.rows = list(binned.rows)
            self.calls = list(binned.calls)
            self.buckets = binned.buckets
            self.t0, self.t1 = float(binned.t0), float(binned.t1)
            self.cells_z = zlib.compress(binned.cells, 1)
            self.hist = hist
        self.updates_sent += 1
        return True

    def resend(self) -> None:
        """Send the picture again (after updates the server may have dropped)."""
        self.send_state(["rows", "calls", "buckets", "t0", "t1", "cells_z", "hist"])

    def on_window(self, callback: Callable[[tuple[float, float] | None], Any]) -> None:
        """Call ``callback(span or None)`` when the user zooms (a drag, a double click)."""
        self.observe(lambda _change: callback(self.asked_window()), names="window")

    def __repr__(self) -> str:
        return f"RunCharts(rows={len(self.rows)}, buckets={self.buckets}, calls={self.hist.get('n', 0)})"
