"""The Timeline tab of a job's view: the ``RunCharts`` widget beside the log viewer,
binned by the pusher at a bounded rate.

The timeline and histogram are binned again (``timeline``) at most every
``EVERY`` seconds (and never more than ``SHARE`` of the pusher's time: a job
of 100,000 calls takes a tenth of a second to bin) while their tab is open
and the job changed, at once when the user zooms or opens the tab, and always
for the job's end; a closed tab costs nothing but that last picture.

Threads: made on the kernel thread with its ``JobView``; ``draw`` runs on the
pusher thread (the one writer of the widget); the tab and zoom callbacks come
from front-end messages and only set fields, then ask the view to draw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .timeline import bin_timeline, durations, histogram

EVERY = 1.0  # seconds between two pictures of a running job, at least
SHARE = 0.2  # of the pusher's time, at most, spent binning a running job's pictures
TAB = 1  # the Timeline tab's index (the log viewer is 0)


class ChartsTab:
    """The Timeline tab of one job view."""

    def __init__(self, job: Any, ask: Callable[[], None]) -> None:
        from ..widgets import RunCharts

        self.job = job
        self._ask = ask
        self.widget = RunCharts(job_id=job.job_id)
        self.widget.on_window(self._zoomed)
        self.open = False  # the tab is the one shown
        self.asked = False  # draw at the next push, whatever the rate
        self.drawn_at = 0.0
        self.drawn_version = -1
        self.cost = 0.0  # seconds the last picture took

    def tabs(self, logview: Any) -> Any:
        """A Tab widget: the log viewer, then the timeline."""
        import ipywidgets as w

        tabs = w.Tab(children=[logview, self.widget])
        tabs.titles = ("Logs", "Timeline")
        tabs.selected_index = 0
        tabs.observe(self._tab_changed, names="selected_index")
        return tabs

    # -- front-end messages (any thread): fields, then ask -------------------------------
    def _tab_changed(self, change: Any) -> None:
        self.open = change["new"] == TAB
        if self.open:
            self.asked = True
            self._ask()

    def _zoomed(self, _window: Any) -> None:
        self.asked = True
        self._ask()

    # -- the pusher thread --------------------------------------------------------------
    def draw(self, final: bool = False) -> bool:
        """Bin and send the pictures when due (see the module docstring)."""
        job, now = self.job, time.time()
        wait = max(EVERY, self.cost / SHARE)
        due = self.open and job.version != self.drawn_version and now - self.drawn_at >= wait
        if not (self.asked or final or due):
            return False
        self.asked = False
        self.drawn_version = job.version
        t = job.timings()
        binned = bin_timeline(t, window=self.widget.asked_window())
        hist = histogram(durations(t))
        self.drawn_at = time.time()
        self.cost = self.drawn_at - now
        return self.widget.show(binned, hist)
