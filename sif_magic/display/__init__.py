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

from ..protocol import STATE_NAMES

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

        from ..config import get_config

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
    """The widgets of one job: title, bar, counts, per-call grid, log viewer, workers.

    The grid and the log viewer are the custom widgets of ``sif_magic.widgets``
    (front-end in the JupyterLab extension); without them the view still has
    the stock bar and counts.
    """

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
        self.version: tuple[int, bool] = (-1, False)
        self.ticks = 0
        self.selected = -1
        self._shown_seq = -1
        self.bar = w.IntProgress(value=0, min=0, max=max(1, job.n), bar_style="info")
        self.bar.layout.width = "100%"
        self.bar.layout.max_width = "40em"
        # title and counts in one widget, workers as <details>: every widget is a few
        # models the front-end must open, and those opens come in one burst
        self.counts = w.HTML()
        self.title = f"<b>{html.escape(job.name or 'job')}</b> · job <code>{job.job_id}</code> · {job.n:,} calls"
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop")
        self.cancel_button.layout.width = "8em"
        self.cancel_button.on_click(self._cancel)
        self.workers = w.HTML()
        parts: list[Any] = [w.HBox([self.counts, self.cancel_button]), self.bar]
        self.grid = self.logview = None
        try:
            from ..widgets import CallGrid, LogView

            self.grid = CallGrid(job.n, describe=self._describe)
            self.grid.on_select(self._select)
            self.logview = LogView(mode="all")  # live lines of every call until one is clicked
            self.logview.on_mode_change(lambda _mode: self._show_logs(force=True))
            parts += [self.grid, self.logview]
        except Exception:  # noqa: BLE001 - no custom widgets: bar and counts still work
            pass
        parts.append(self.workers)
        self.box = w.VBox(parts)
        self.box.add_class("sif-magic-job")
        self.finished = False
        # a view is drawn with the state of its creation; its first live update waits a
        # second, so it does not land on top of the burst of widget models being opened
        self.quiet_until = time.time() + 1.0
        self._lock = threading.RLock()  # the pusher thread and the job's done callback
        job.add_done_callback(lambda _job: self.finish())

    # -- what the widgets ask ---------------------------------------------------------
    def _describe(self, i: int) -> str:
        d = self.job.describe_call(i)
        text = f"call {i} · {d['state']}"
        if d["attempt"] > 1:
            text += f" · attempt {d['attempt']}"
        if d["host"]:
            text += f" · {d['host']}"
        if d["duration"] is not None:
            text += f" · {d['duration']:.2f} s"
        if d["note"]:
            text += f"\n{d['note']}"
        return text

    def _select(self, i: int) -> None:
        self.selected = i
        if self.logview is not None and i >= 0 and self.logview.mode != "call":
            self.logview.mode = "call"  # its observer redraws
        else:
            self._show_logs()

    def _cancel(self, _button: Any) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling"
        threading.Thread(target=self.job.cancel, daemon=True).start()

    def _show_logs(self, force: bool = False) -> None:
        lv, job = self.logview, self.job
        if lv is None:
            return
        mode = lv.mode
        if mode == "all":
            if job.log_seq == self._shown_seq and not force:
                return  # nothing new: do not send the same lines again
            self._shown_seq = job.log_seq
            lines = [
                (s, f"[{i}] {ln}") for i, s, t in list(job.recent) for ln in t.splitlines(True)
            ]
            title = f"all calls · last {len(lines)} lines"
            if job.log_dropped:
                title += f" · {job.log_dropped:,} bytes not kept (the job's log limit)"
            lv.show(title, lines)
        elif mode == "failures":
            entries: list[tuple[int, str]] = []
            tb = []
            for i in job.failed[:50]:
                entries += [
                    (s, f"[{i}] {ln}") for s, t in job.call_logs(i)[0] for ln in t.splitlines(True)
                ]
                err = job.error(i)
                if err is not None:
                    text = err.remote_traceback() if hasattr(err, "remote_traceback") else str(err)
                    tb.append(f"call {i}: {text}")
            lv.show(f"failed calls ({len(job.failed)})", entries, "\n\n".join(tb))
        elif self.selected >= 0:
            i = self.selected
            entries, dropped = job.call_logs(i)
            err = job.error(i) if job.state(i) in ("failed", "cancelled") else None
            tb = ""
            if err is not None:
                tb = (
                    err.remote_traceback()
                    if hasattr(err, "remote_traceback")
                    else f"{type(err).__name__}: {err}"
                )
            lv.show(self._describe(i).replace("\n", " · "), entries, tb, dropped)

    # -- pushing ----------------------------------------------------------------------
    def refresh(self, final: bool = False) -> None:
        with self._lock:
            self._refresh(final)

    def _refresh(self, final: bool) -> None:
        job = self.job
        self.ticks += 1
        drawn = (job.version, job.broker_down)
        if drawn == self.version and not final:
            return
        self.version = drawn
        counts = job.state_counts()
        badges = " ".join(
            f'<span style="color:{COLOURS[name]}">&#9632; {counts[name]:,} {name}</span>'
            for name in STATE_NAMES
            if counts[name]
        )
        note = ""
        if job.broker_down:
            note = " <b style='color:#e53935'>broker unreachable: reconnecting…</b>"
        rows = self._worker_rows() if (final or self.ticks % 10 == 1) else None
        live = (
            "" if rows is None else f" · {sum(1 for r in rows if r.get('state') == 'up')} workers"
        )
        with self.box.hold_sync():
            self.bar.value = job.final
            if job.done():
                self.bar.bar_style = (
                    "danger" if counts["failed"] or counts["cancelled"] else "success"
                )
                self.cancel_button.disabled = True
                self.cancel_button.layout.display = "none"
            self.counts.value = (
                f"{badges} · {job.elapsed:.1f} s · {html.escape(_rate(job))}{live}{note}"
            )
            if rows is not None:
                self.workers.value = (
                    f"<details><summary>Workers</summary>{workers_html(rows)}</details>"
                )
            # the grid (the biggest message) at most 5 times a second, always at the end
            if self.grid is not None and (final or self.ticks % 2 == 0 or job.n < 1000):
                self.grid.set_states(job.states)
            if self.selected >= 0 or (self.logview is not None and self.logview.mode != "call"):
                self._show_logs()

    def _worker_rows(self) -> list[dict[str, Any]]:
        from ..launch.slurm_rows import workers_table

        backend = getattr(self.job, "backend", None)
        try:
            return workers_table(backend) if backend is not None else []
        except Exception:  # noqa: BLE001
            return []

    def finish(self) -> None:
        """Push the final state, then send it all again (the server may have dropped some)."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            self._refresh(final=True)
        if self.grid is not None:
            self.grid.resend()
        if self.logview is not None:
            self.logview.resend()
        self.box.send_state()
        for child in (self.bar, self.counts):
            child.send_state()


def workers_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<i>no workers seen yet</i>"
    now = time.time()
    head = "".join(
        f"<th style='text-align:left;padding:0 8px'>{h}</th>"
        for h in (
            "host",
            "pid",
            "runtime",
            "slots",
            "busy",
            "python",
            "cloudpickle",
            "container",
            "last heartbeat",
            "state",
        )
    )
    body = []
    for r in rows:
        state = r.get("state", "")
        colour = {"up": COLOURS["done"], "lost": COLOURS["lost"]}.get(state, COLOURS["cancelled"])
        ago = now - float(r.get("last_seen") or now)
        cells = (
            r.get("host", ""),
            r.get("pid", ""),
            r.get("runtime", ""),
            r.get("slots", ""),
            r.get("busy", ""),
            r.get("python", ""),
            r.get("cloudpickle", ""),
            r.get("container", "") + (f" (SLURM {r['slurm_job']})" if r.get("slurm_job") else ""),
            f"{ago:.0f} s ago",
        )
        tds = "".join(f"<td style='padding:0 8px'>{html.escape(str(c))}</td>" for c in cells)
        body.append(
            f"<tr>{tds}<td style='padding:0 8px;color:{colour}'>{html.escape(state)}</td></tr>"
        )
    return f"<table class='sif-magic-workers'><tr>{head}</tr>{''.join(body)}</table>"


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
                    elif time.time() >= view.quiet_until:
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
    # the live widgets stay (click the grid after the run); nbviewer, nbconvert and
    # front-ends without widgets render the static snapshot of the same output
    bundle = view.box._repr_mimebundle_()
    bundle.update(snapshot)
    handle.update(bundle, raw=True)


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
