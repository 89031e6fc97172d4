"""How a job shows itself: live widgets in a notebook, text elsewhere.

- ``view.JobView``: the widgets of one job;
- ``pusher.Pusher``: the one thread that writes them once shown;
- ``html``: the snapshot, counts line, workers table and colours;
- ``text``: progress lines and descriptions for terminals and hover boxes;
- ``timeline``: the pictures of a run as data (a timeline binned per slot, the
  duration histogram); ``chartsview``: the view's Timeline tab; ``svg``: both as
  the snapshot's image; ``plots``: ``job.plot()`` (matplotlib);
- ``panel``: the JupyterLab side panel's requests, on the kernel's control channel.

A run shows a live view under its cell after ``progress_delay`` (fast runs do not
flash a bar); when it ends, the pusher draws the end and sends it again, and the
output gets a static HTML snapshot next to the widgets, which a saved notebook,
nbviewer or a front-end without widgets can show.

Threads: the functions here run on the kernel thread. Backends never call into
the display; the pusher reads jobs and writes widgets; ``Job.wait()`` returns
once a view of the job has drawn its end (``Job.hold_waiters``).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from .html import COLOURS, snapshot, summary_html, workers_html
from .pusher import RATE, pusher
from .text import text_progress
from .view import JobView

__all__ = [
    "COLOURS",
    "RATE",
    "JobView",
    "finish_job",
    "in_kernel",
    "job_mimebundle",
    "show_job",
    "summary_html",
    "text_progress",
    "view_of",
    "widgets_enabled",
    "workers_html",
]

FINISH_WAIT = 2.0  # seconds the kernel waits for the pusher to draw a job's end

_views: weakref.WeakValueDictionary[str, JobView] = weakref.WeakValueDictionary()


def widgets_enabled() -> bool:
    """True when a kernel with a front-end may render widgets and they are not turned off."""
    if os.environ.get("SIF_MAGIC_WIDGETS", "1").lower() in ("0", "false", "no", "off"):
        return False
    try:
        from IPython import get_ipython

        from ..config import get_config

        ip = get_ipython()
        if ip is None or not hasattr(ip, "kernel") or not get_config().widgets:
            return False
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def in_kernel() -> bool:
    """True inside a Jupyter kernel (a front-end shows rich output), False in a shell."""
    try:
        from IPython import get_ipython

        return hasattr(get_ipython(), "kernel")
    except ImportError:
        return False


def view_of(job: Any) -> JobView:
    """The job's view: made (and drawn) here on first use, then the pusher's."""
    view = _views.get(job.job_id)
    if view is None:
        p = pusher()
        view = JobView(job, p.wake)
        _views[job.job_id] = view
        p.add(view)
    return view


def job_mimebundle(job: Any) -> dict[str, Any]:
    bundle: dict[str, Any] = snapshot(job)
    if not job.done() and widgets_enabled():
        bundle.update(view_of(job).box._repr_mimebundle_())
    return bundle


def show_job(job: Any, delay: float = 0.5) -> Any:
    """Display a live view of ``job`` under the current cell after ``delay`` seconds
    (fast runs don't flash a bar). Returns a handle the caller passes to ``finish_job``."""
    if not widgets_enabled():
        return None
    if job.wait(delay):
        return None
    from IPython.display import display

    view = view_of(job)
    handle = display(view.box, display_id=True)
    return (view, handle)


def finish_job(job: Any, shown: Any) -> None:
    """After a blocking run: the end drawn (by the pusher), then a static HTML
    snapshot next to the widgets."""
    from IPython.display import display

    still = snapshot(job)
    if shown is None:
        if widgets_enabled() or in_kernel():
            display(still, raw=True)
        return
    view, handle = shown
    view.ask_finish()
    view.finished.wait(FINISH_WAIT)
    # the live widgets stay (click the grid after the run); nbviewer, nbconvert and
    # front-ends without widgets render the static snapshot of the same output
    bundle = view.box._repr_mimebundle_()
    bundle.update(still)
    handle.update(bundle, raw=True)
