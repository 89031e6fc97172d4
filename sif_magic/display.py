"""How a job shows itself: live widgets in a notebook, text elsewhere.

Threads never write widgets directly: backends fold events into the Job
(plain state), and one pusher thread redraws each visible view at most
``RATE`` times a second, only when the job's ``version`` moved, with changes
batched in ``hold_sync``. When the run ends the last state is pushed again
(Jupyter's server drops widget messages above its rate limit without a word)
and the live view is replaced by a static HTML snapshot that a saved notebook,
nbviewer or a front-end without widgets can show.
"""

from __future__ import annotations

import html
import os
import threading
import time
import weakref
from typing import Any

from .protocol import STATE_NAMES

RATE = 10.0  # redraws per second per view, at most
COLOURS = {
    "queued": "#9e9e9e",
    "running": "#1e88e5",
    "done": "#43a047",
    "failed": "#e53935",
    "cancelled": "#616161",
    "retrying": "#fb8c00",
    "lost": "#8e24aa",
}


def widgets_enabled() -> bool:
    """True when a kernel with a front-end may render widgets and they are not turned off."""
    if os.environ.get("SIF_MAGIC_WIDGETS", "1").lower() in ("0", "false", "no", "off"):
        return False
    try:
        from IPython import get_ipython

        from .config import get_config

        ip = get_ipython()
        if ip is None or not hasattr(ip, "kernel") or not get_config().widgets:
            return False
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _rate(job: Any) -> str:
    done = job.final
    el = job.elapsed
    if done == 0 or el <= 0:
        return ""
    rate = done / el
    text = f"{rate:,.0f} calls/s" if rate >= 10 else f"{rate:.2f} calls/s"
    if not job.done() and done < job.n:
        left = (job.n - done) / rate
        text += f", ~{left:,.0f} s left" if left >= 1 else ", <1 s left"
    return text


def summary_html(job: Any) -> str:
    counts = job.state_counts()
    failed = counts["failed"] > 0
    colour = COLOURS["failed"] if failed else COLOURS["done"]
    if not job.done():
        colour = COLOURS["running"]
    pct = 100.0 * job.final / job.n if job.n else 100.0
    badges = " ".join(
        f'<span style="color:{COLOURS[name]}">&#9632; {counts[name]:,} {name}</span>'
        for name in STATE_NAMES
        if counts[name]
    )
    status = "finished" if job.done() else "running"
    return (
        '<div class="sif-magic-summary" style="font-family:var(--jp-ui-font-family,sans-serif)">'
        f"<b>{html.escape(job.name or 'job')}</b> · job <code>{job.job_id}</code> · "
        f"{job.n:,} calls {status} in {job.elapsed:.1f} s"
        f'<div style="background:#eee;height:8px;width:100%;max-width:40em;margin:3px 0">'
        f'<div style="background:{colour};height:8px;width:{pct:.1f}%"></div></div>'
        f"{badges} <span style='color:#777'>{html.escape(_rate(job))}</span></div>"
    )


def job_mimebundle(job: Any) -> dict[str, Any]:
    bundle: dict[str, Any] = {"text/plain": job.summary(), "text/html": summary_html(job)}
    if not job.done() and widgets_enabled():
        view = JobView.for_job(job)
        bundle.update(view.box._repr_mimebundle_())  # type: ignore[union-attr]
        _pusher().add(view)
    return bundle


class JobView:
    """The widgets of one job: progress bar, counts line, status."""

    _views: weakref.WeakValueDictionary[str, JobView] = weakref.WeakValueDictionary()

    @classmethod
    def for_job(cls, job: Any) -> JobView:
        view = cls._views.get(job.job_id)
        if view is None:
            view = cls(job)
            cls._views[job.job_id] = view
        return view

    def __init__(self, job: Any) -> None:
        import ipywidgets as w

        self.job = job
        self.version = -1
        self.bar = w.IntProgress(value=0, min=0, max=max(1, job.n), bar_style="info")
        self.bar.layout.width = "100%"
        self.bar.layout.max_width = "40em"
        self.counts = w.HTML()
        self.title = w.HTML(
            f"<b>{html.escape(job.name or 'job')}</b> · job <code>{job.job_id}</code> · {job.n:,} calls"
        )
        self.box = w.VBox([self.title, self.bar, self.counts])
        self.box.add_class("sif-magic-job")
        self.finished = False

    def refresh(self, final: bool = False) -> None:
        job = self.job
        if job.version == self.version and not final:
            return
        self.version = job.version
        counts = job.state_counts()
        badges = " ".join(
            f'<span style="color:{COLOURS[name]}">&#9632; {counts[name]:,} {name}</span>'
            for name in STATE_NAMES
            if counts[name]
        )
        note = ""
        if getattr(job, "broker_down", False):
            note = " <b style='color:#e53935'>broker unreachable: reconnecting…</b>"
        workers = ""
        backend = getattr(job, "backend", None)
        if backend is not None:
            try:
                live = [x for x in backend.workers() if x.get("state") == "up"]
                workers = f" · {len(live)} worker{'s' if len(live) != 1 else ''}"
            except Exception:  # noqa: BLE001
                workers = ""
        with self.box.hold_sync():
            self.bar.value = job.final
            if job.done():
                self.bar.bar_style = (
                    "danger" if counts["failed"] or counts["cancelled"] else "success"
                )
            self.counts.value = (
                f"{badges} · {job.elapsed:.1f} s · {html.escape(_rate(job))}{workers}{note}"
            )

    def finish(self) -> None:
        """Push the final state, then leave a static snapshot behind the live widgets."""
        if self.finished:
            return
        self.finished = True
        self.refresh(final=True)


class _Pusher:
    def __init__(self) -> None:
        self.views: set[JobView] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="sif-display", daemon=True)
        self.thread.start()

    def add(self, view: JobView) -> None:
        with self.lock:
            self.views.add(view)

    def _run(self) -> None:
        while True:
            time.sleep(1.0 / RATE)
            with self.lock:
                views = list(self.views)
            for view in views:
                try:
                    if view.job.done():
                        view.finish()
                        with self.lock:
                            self.views.discard(view)
                    else:
                        view.refresh()
                except Exception:  # noqa: BLE001 - a broken front-end must not stop the others
                    with self.lock:
                        self.views.discard(view)


_PUSHER: _Pusher | None = None


def _pusher() -> _Pusher:
    global _PUSHER
    if _PUSHER is None:
        _PUSHER = _Pusher()
    return _PUSHER


def show_job(job: Any, delay: float = 0.5) -> Any:
    """Display a live view of ``job`` under the current cell after ``delay`` seconds
    (fast runs don't flash a bar). Returns a handle the caller passes to ``finish_job``."""
    if not widgets_enabled():
        return None
    if job.wait(delay):
        return None
    from IPython.display import display

    view = JobView.for_job(job)
    view.refresh(final=True)
    handle = display(view.box, display_id=True)
    _pusher().add(view)
    return (view, handle)


def finish_job(job: Any, shown: Any) -> None:
    """After a blocking run: final state, then a static HTML snapshot in place of the widgets."""
    from IPython.display import display

    snapshot = {"text/plain": job.summary(), "text/html": summary_html(job)}
    if shown is None:
        if widgets_enabled() or _in_kernel():
            display(snapshot, raw=True)
        return
    view, handle = shown
    view.finish()
    handle.update(snapshot, raw=True)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython

        return hasattr(get_ipython(), "kernel")
    except ImportError:
        return False


def text_progress(job: Any, stream: Any, interval: float = 1.0) -> None:
    """Print a progress line now and then until the job ends (terminals, scripts)."""
    last = ""
    while not job.wait(interval):
        c = job.state_counts()
        line = f"[sif_magic] {job.final:,}/{job.n:,} done · {c['running']} running · {c['failed']} failed · {job.elapsed:.0f} s"
        if line != last:
            stream.write(line + "\n")
            stream.flush()
            last = line
