"""JobView: the widgets of one job: counts, bar, Cancel, call grid, log viewer, workers.

The grid and the log viewer are the custom widgets of ``sif_magic.widgets``
(front-end in the JupyterLab extension); where that extension is known to be
missing (``widgets._frontend.frontend_missing``) the view has the stock bar,
counts and workers, and a line that says how to get the rest.

Threads: a view is made, and draws its first state, on the kernel thread
(``display.show_job`` / ``job_mimebundle``), which then hands it to the pusher;
from then on only the pusher thread writes its widgets (``refresh``,
``finish``). Everything else only sets plain fields and wakes the pusher: the
job's done callback (on the thread that folded the last result), a click in the
grid, another log mode (asked on the kernel's control channel, so on its control
thread, or as widget messages on the kernel thread), the Cancel button (kernel
thread), ``ask_finish`` (kernel thread). A click told on the control channel
has not set the grid's ``selected`` nor the log view's ``mode``: the pusher
sets them to what was asked (``selected``, ``mode``). The grid's hover answers
are replies to the front-end's question; they read the job and write no widget
state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .html import counts_html, notes_html, workers_details
from .text import describe_text, error_text


class JobView:
    """The widgets of one job, redrawn by ``refresh`` when the job changed."""

    def __init__(self, job: Any, wake: Callable[[], None]) -> None:
        import ipywidgets as w

        self.job = job
        self._wake = wake
        self.drawn: tuple[int, bool] = (-1, False)  # (job.version, broker down) last drawn
        self.ticks = 0
        self.selected = -1
        self.mode = "all"  # the log view's mode last asked (every call's live lines at first)
        self._writer: int | None = None  # the pusher's thread while it sets selected / mode
        self._shown_seq = -1
        # asked from other threads (plain fields; the pusher acts on them)
        self.asked = False  # draw at the next wake, changed or not
        self._select_asked = False
        self._logs_asked = False
        self.cancelling = False
        self.finish_asked = False
        self.finished = threading.Event()  # set once the end is drawn and sent again
        # a float bar: calls that ended count 1, running ones the fraction they reported
        self.bar = w.FloatProgress(value=0, min=0, max=max(1, job.n), bar_style="info")
        self.bar.layout.width = "100%"
        self.bar.layout.max_width = "40em"
        # counts in one widget, workers as <details>: every widget is a few models the
        # front-end must open, and those opens come in one burst
        self.counts = w.HTML()
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop")
        self.cancel_button.layout.width = "8em"
        self.cancel_button.on_click(self._cancel)
        self.workers = w.HTML()
        self.notes = w.HTML()  # what was shipped; advice about the failures
        parts: list[Any] = [w.HBox([self.counts, self.cancel_button]), self.bar, self.notes]
        self.grid = self.logview = None
        self.charts: Any = None
        from ..widgets._frontend import MISSING_HINT, frontend_missing

        if frontend_missing():  # the front-end could only show the custom widgets as errors
            parts.append(w.HTML(f"<small>{MISSING_HINT}</small>"))
        else:
            try:
                from ..widgets import CallGrid, LogView
                from . import panel

                # clicks asked on the control channel where the kernel answers there
                ctl = panel.installed()
                self.grid = CallGrid(job.n, describe=self._describe, via_control=ctl)
                self.grid.on_select(self._select)
                self.logview = LogView(mode=self.mode, via_control=ctl)  # all calls' lines at first
                self.logview.on_mode_change(self._mode_changed)
                from .chartsview import ChartsTab

                self.charts = ChartsTab(job, self._ask)  # a Timeline tab beside the logs
                parts += [self.grid, self.charts.tabs(self.logview)]
            except Exception:  # noqa: BLE001 - no custom widgets: bar and counts still work
                pass
        parts.append(self.workers)
        self.box = w.VBox(parts)
        self.box.add_class("sif-magic-job")
        # a view is drawn with the state of its creation; its first live update waits a
        # second, so it does not land on top of the burst of widget models being opened
        self.quiet_until = time.time() + 1.0
        self.refresh(final=True)  # the first state, by the thread that made the view
        job.add_done_callback(lambda _job: wake())
        job.hold_waiters(self.finished)

    # -- from other threads: plain fields, then wake the pusher ------------------------
    def _ask(self) -> None:
        self.asked = True
        self._wake()

    def _describe(self, i: int) -> str:
        return describe_text(self.job.describe_call(i))

    def _select(self, i: int) -> None:
        if self._writer == threading.get_ident():
            return  # the pusher setting `selected` to what was asked: not a click
        self.selected = i
        if i >= 0:
            self.mode = "call"  # a click shows that call's lines
        self._select_asked = True
        self._ask()

    def _mode_changed(self, mode: str) -> None:
        if self._writer == threading.get_ident():
            return  # the pusher setting `mode` to what was asked
        self.mode = mode
        self._logs_asked = True
        self._ask()

    def _cancel(self, _button: Any) -> None:
        self.cancelling = True
        self._ask()
        threading.Thread(target=self.job.cancel, daemon=True).start()

    def wants_draw(self) -> bool:
        """Something was asked since the last draw (a click, a mode, Cancel)."""
        charts = self.charts is not None and self.charts.asked
        return self.asked or self._select_asked or self._logs_asked or charts

    def ask_finish(self) -> None:
        """Draw the end now, even if the job has not ended (an interrupted run)."""
        self.finish_asked = True
        self._wake()

    # -- the pusher thread -------------------------------------------------------------
    def refresh(self, final: bool = False) -> None:
        job = self.job
        self.ticks += 1
        asked = self.wants_draw()  # the specific asks stay set until drawn
        self.asked = False
        drawn = (job.version, job.broker_down)
        if drawn == self.drawn and not (final or asked):
            return
        self.drawn = drawn
        counts = job.state_counts()
        worth, reports = job.progress()
        rows = self._worker_rows() if (final or self.ticks % 10 == 1) else None
        with self.box.hold_sync():
            self.bar.value = worth
            if job.done():
                self.bar.bar_style = (
                    "danger" if counts["failed"] or counts["cancelled"] else "success"
                )
                self.cancel_button.disabled = True
                self.cancel_button.layout.display = "none"
            elif self.cancelling:
                self.cancel_button.disabled = True
                self.cancel_button.description = "Cancelling"
            self.counts.value = counts_html(job, counts, rows, drawn[1])
            notes = notes_html(job)
            if notes != self.notes.value:
                self.notes.value = notes
            if rows is not None:
                self.workers.value = workers_details(rows)
            # the grid (the biggest message) at most 5 times a second, always at the end
            if self.grid is not None and (final or self.ticks % 2 == 0 or job.n < 1000):
                self.grid.set_states(job.states)
                self.grid.set_progress(reports)
            if self.charts is not None:
                self.charts.draw(final)
            self._logs()

    def _logs(self) -> None:
        lv = self.logview
        force, self._logs_asked = self._logs_asked, False
        selected, self._select_asked = self._select_asked, False
        if lv is None:
            return
        mode, index = self.mode, self.selected
        # a click or a mode told on the control channel has not set the traits: set
        # them to what was asked (the observers these writes call ignore them)
        self._writer = threading.get_ident()
        try:
            if self.grid is not None and index >= 0 and self.grid.selected != index:
                self.grid.selected = index
            if lv.mode != mode:
                lv.mode = mode
        finally:
            self._writer = None
        if index >= 0 or mode != "call":
            self._show_logs(force or selected, mode, index)

    def _show_logs(self, force: bool, mode: str, index: int) -> None:
        lv, job = self.logview, self.job
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
            lv.show(title, lines)  # type: ignore[union-attr]
        elif mode == "failures":
            entries: list[tuple[int, str]] = []
            tb = []
            failed = job.failed
            for i in failed[:50]:
                entries += [
                    (s, f"[{i}] {ln}") for s, t in job.call_logs(i)[0] for ln in t.splitlines(True)
                ]
                err = job.error(i)
                if err is not None:
                    tb.append(f"call {i}: {error_text(err, named=False)}")
            lv.show(f"failed calls ({len(failed)})", entries, "\n\n".join(tb))  # type: ignore[union-attr]
        elif index >= 0:
            i = index
            entries, dropped = job.call_logs(i)
            err = job.error(i) if job.state(i) in ("failed", "cancelled") else None
            tb = error_text(err) if err is not None else ""
            lv.show(self._describe(i).replace("\n", " · "), entries, tb, dropped)  # type: ignore[union-attr]

    def _worker_rows(self) -> list[dict[str, Any]]:
        from ..launch.slurm_rows import workers_table

        backend = getattr(self.job, "backend", None)
        try:
            return workers_table(backend) if backend is not None else []
        except Exception:  # noqa: BLE001
            return []

    def finish(self) -> None:
        """Draw the final state, then send it all again (the server may have dropped some)."""
        if self.finished.is_set():
            return
        try:
            self.refresh(final=True)
            if self.grid is not None:
                self.grid.resend()
            if self.logview is not None:
                self.logview.resend()
            if self.charts is not None:
                self.charts.widget.resend()
            self.box.send_state()
            for child in (self.bar, self.counts):
                child.send_state()
        finally:
            self.finished.set()
