"""The display's pieces without a kernel: its HTML and text, and who writes the
widgets of a live view (the pusher thread, and only it, once a view is shown)."""

from __future__ import annotations

import io
import threading
import time

import comm
import pytest
from comms import RecordingComm
from segments import segment

from sif_magic import display
from sif_magic.display import html, text
from sif_magic.display.view import JobView
from sif_magic.errors import Frame, RemoteError
from sif_magic.job import Job
from sif_magic.protocol import DONE, FAILED, EventBatch


def finished_job(name: str = "f") -> Job:
    job = Job("abc123", 3, name=name, errors="collect")
    job.apply_segments([segment([0, 1, 2], [1, ValueError("x"), 3], [DONE, FAILED, DONE])])
    return job


# -- html ---------------------------------------------------------------------------------


def test_summary_html_of_a_finished_job_with_a_failure() -> None:
    out = html.summary_html(finished_job("<mine>"))
    assert "&lt;mine&gt;" in out and "<mine>" not in out  # the name is escaped
    assert "job <code>abc123</code>" in out and "3 calls finished" in out
    assert f"background:{html.COLOURS['failed']};height:8px;width:100.0%" in out
    assert f'color:{html.COLOURS["done"]}">&#9632; 2 done' in out
    assert f'color:{html.COLOURS["failed"]}">&#9632; 1 failed' in out
    assert "queued" not in out  # states without calls get no badge


def test_summary_html_of_a_running_job_is_blue_with_its_share_done() -> None:
    job = Job("r", 4)
    job.apply_segments([segment([0], [0])])
    out = html.summary_html(job)
    assert f"background:{html.COLOURS['running']};height:8px;width:25.0%" in out
    assert "running in" in out and "3 queued" in out


def test_snapshot_has_text_and_html() -> None:
    job = finished_job()
    snap = html.snapshot(job)
    assert snap["text/plain"] == job.summary() and "sif-magic-summary" in snap["text/html"]
    assert "3 calls, finished" in snap["text/plain"] and "2 done, 1 failed" in snap["text/plain"]


def test_rate_text_says_the_time_left_while_running() -> None:
    job = Job("r", 100)
    job.created -= 10.0  # ten seconds ago
    job.apply_segments([segment(list(range(50)), list(range(50)))])
    assert html.rate_text(job).startswith("5.00 calls/s, ~10 s left")
    assert html.rate_text(Job("z", 5)) == ""  # nothing done yet: no rate


def test_counts_html_counts_live_workers_and_warns_when_the_broker_is_down() -> None:
    job = finished_job()
    rows = [{"state": "up"}, {"state": "lost"}, {"state": "up"}]
    out = html.counts_html(job, job.state_counts(), rows, broker_down=True)
    assert " · 2 workers" in out and "broker unreachable: reconnecting" in out
    assert "workers" not in html.counts_html(job, job.state_counts(), None, broker_down=False)


def test_workers_html_escapes_colours_states_and_names_slurm_jobs() -> None:
    assert html.workers_html([]) == "<i>no workers seen yet</i>"
    rows = [
        {"host": "<n1>", "pid": 5, "state": "up", "last_seen": 95.0, "container": "x.sif"},
        {"host": "n2", "state": "lost", "last_seen": 40.0},
        {"host": "(not joined yet)", "state": "SLURM pending", "slurm_job": "77"},
    ]
    out = html.workers_html(rows, now=100.0)
    assert out.count("<tr>") == 4 and "&lt;n1&gt;" in out and "5 s ago" in out and "60 s ago" in out
    assert f"color:{html.COLOURS['done']}'>up" in out
    assert f"color:{html.COLOURS['lost']}'>lost" in out
    assert f"color:{html.COLOURS['cancelled']}'>SLURM pending" in out
    assert " (SLURM 77)" in out and "x.sif" in out
    assert html.workers_details(rows).startswith("<details><summary>Workers</summary><table")


# -- text ---------------------------------------------------------------------------------


def test_progress_line() -> None:
    job = Job("p", 1000)
    job.apply_segments([segment(list(range(12)), list(range(12)))])
    job.apply_events(
        EventBatch(job_id="p", worker="w", host="h", t=0.0, states={"running": [[12, 14]]})
    )
    assert text.progress_line(job).startswith("[sif_magic] 12/1,000 done · 3 running · 0 failed · ")


def test_text_progress_writes_changed_lines_until_the_job_ends() -> None:
    job = Job("t", 2)
    stream = io.StringIO()
    later = threading.Timer(0.3, lambda: job.apply_segments([segment([0, 1], [0, 1])]))
    later.start()
    text.text_progress(job, stream, interval=0.05)
    lines = stream.getvalue().splitlines()
    assert lines and lines[0].startswith("[sif_magic] 0/2 done") and len(set(lines)) == len(lines)


def test_describe_text_of_a_call() -> None:
    d = {"index": 4, "state": "failed", "attempt": 2, "host": "n1", "duration": 1.5, "note": ""}
    assert text.describe_text(d) == "call 4 · failed · attempt 2 · n1 · 1.50 s"
    d.update(attempt=1, host="", duration=None, note="worker lost 1 time")
    assert text.describe_text(d) == "call 4 · failed\nworker lost 1 time"


def test_error_text_prefers_the_remote_traceback() -> None:
    remote = RemoteError("ValueError", "bad", [Frame("<cell 3>", 2, "f", "raise ValueError")])
    assert "raise ValueError" in text.error_text(remote) and "ValueError: bad" in text.error_text(
        remote
    )
    assert text.error_text(KeyError("k")) == "KeyError: 'k'"
    assert text.error_text(KeyError("k"), named=False) == "'k'"


def test_worker_line() -> None:
    w = {"host": "n1", "pid": 9, "runtime": "ml", "busy": 1, "slots": 4, "python": "3.11.4",
         "cloudpickle": "3.1.1", "state": "up", "slurm_job": "77"}  # fmt: skip
    line = text.worker_line(w)
    assert line.startswith("n1 ") and "pid 9 " in line and "runtime ml " in line
    assert "slots 1/4" in line and line.endswith("up  SLURM job 77")


# -- who writes the widgets -----------------------------------------------------------------


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> list[RecordingComm]:
    made: list[RecordingComm] = []

    def create(**kw):
        c = RecordingComm(**kw)
        made.append(c)
        return c

    monkeypatch.setattr(comm, "create_comm", create)
    return made


def sent_since(comms: list[RecordingComm], marks: dict[int, int]) -> list[str]:
    """The threads that sent each message after ``marks`` (comm id -> messages then)."""
    return [t for c in comms for t in c.threads[marks.get(id(c), 0) :]]


def test_the_end_of_a_job_is_drawn_by_the_pusher_not_the_folding_thread(comms) -> None:
    job = Job("d5", 4)
    view = display.view_of(job)  # made and first drawn here (the kernel thread)
    assert view.bar.value == 0 and set(sent_since(comms, {})) == {threading.current_thread().name}
    marks = {id(c): len(c.threads) for c in comms}
    # the last results come on another thread, as from the broker's I/O thread
    io_thread = threading.Thread(
        target=job.apply_segments, args=([segment([0, 1, 2, 3], list("abcd"))],), name="io"
    )
    io_thread.start()
    io_thread.join()
    assert job.wait(30)
    # wait() returned after the view drew the end: code that waited never sees it running
    assert view.finished.is_set() and view.bar.value == 4 and view.bar.bar_style == "success"
    assert view.cancel_button.layout.display == "none"
    threads = sent_since(comms, marks)
    assert threads and set(threads) == {"sif-display"}


def test_a_click_in_the_grid_is_drawn_by_the_pusher(comms) -> None:
    job = Job("click", 3, errors="collect")
    view = display.view_of(job)
    job.apply_segments(
        [segment([0, 1], [0, ValueError("boom")], [DONE, FAILED])]
    )  # call 2 still runs: the view stays live
    job.apply_events(
        EventBatch(job_id="click", worker="w", host="h", t=0.0, logs=[[2, 1, "still going\n"]])
    )
    lv_comm = view.logview.comm
    mark = len(lv_comm.threads)
    view._select(1)  # what a click does, on the kernel thread
    deadline = time.time() + 10
    while time.time() < deadline and not view.logview.title.startswith("call 1"):
        time.sleep(0.02)
    assert view.logview.mode == "call" and view.logview.title.startswith("call 1 · failed")
    assert "ValueError: boom" in view.logview.traceback
    assert set(lv_comm.threads[mark:]) == {"sif-display"}
    job.mark_cancelled()
    assert job.wait(10) and view.finished.is_set()


def _on_control_thread(content: dict) -> dict:
    """``panel.answer(content)`` on a thread named as ipykernel's control thread."""
    from sif_magic.display import panel

    replies: list[dict] = []
    t = threading.Thread(target=lambda: replies.append(panel.answer(content)), name="control")
    t.start()
    t.join(10)
    return replies[0]


def _wait(check, what: str) -> None:
    deadline = time.time() + 10
    while time.time() < deadline and not check():
        time.sleep(0.02)
    assert check(), what


def test_clicks_told_on_the_control_channel_are_drawn_by_the_pusher(comms, monkeypatch) -> None:
    """A blocking cell holds the shell channel: the front-end tells clicks on the
    control channel, whose thread only sets fields; the pusher sets ``selected``
    and ``mode`` and shows the lines, so what the browser then sends agrees."""
    from sif_magic.display import panel

    monkeypatch.setattr(panel, "installed", lambda: True)  # as in a kernel with sif_magic
    job = Job("ctl", 3, errors="collect")
    view = display.view_of(job)
    assert view.grid.via_control and view.logview.via_control
    job.apply_segments([segment([0, 1], [0, ValueError("boom")], [DONE, FAILED])])
    job.apply_events(
        EventBatch(job_id="ctl", worker="w", host="h", t=0.0, logs=[[2, 1, "still going\n"]])
    )
    marks = {id(c): len(c.threads) for c in comms}
    reply = _on_control_thread({"op": "select", "widget": view.grid.model_id, "index": 2})
    assert reply == {"index": 2, "selected": True}
    _wait(lambda: view.logview.title.startswith("call 2"), "the click was not drawn")
    assert view.grid.selected == 2 and view.logview.mode == "call"
    assert view.logview.entries == [[1, "still going\n"]]
    reply = _on_control_thread({"op": "mode", "widget": view.logview.model_id, "mode": "failures"})
    assert reply == {"mode": "failures"}
    _wait(lambda: view.logview.title == "failed calls (1)", "the mode was not drawn")
    assert view.logview.mode == "failures" and "ValueError: boom" in view.logview.traceback
    assert set(sent_since(comms, marks)) == {"sif-display"}  # not the control thread
    hover = _on_control_thread({"op": "describe", "widget": view.grid.model_id, "index": 1})
    assert hover["text"].startswith("call 1 · failed")
    job.mark_cancelled()
    assert job.wait(10) and view.finished.is_set()
    assert view.grid.selected == 2 and view.logview.mode == "failures"  # the end keeps them


def test_asks_are_drawn_in_the_order_made_and_the_pushers_writes_ask_nothing(comms) -> None:
    """A click then another mode, both told before the pusher's next round: the
    mode asked last wins, the grid marks the call, and setting the traits to what
    was asked does not ask again (no second round of the same lines)."""
    job = Job("order", 3)
    view = JobView(job, lambda: None)  # no pusher: this test runs its rounds
    view.grid.on_select(lambda i: None)  # (a second follower, as a user might add)
    view._select(2)  # as the control thread does for a click...
    view._mode_changed("all")  # ...then for another mode
    view.refresh()
    assert view.grid.selected == 2 and view.logview.mode == "all"
    assert view.logview.title.startswith("all calls")
    assert not view.wants_draw()  # the pusher's own writes asked for nothing
    view._select(1)
    view.refresh()
    assert view.logview.mode == "call" and view.logview.title.startswith("call 1 · queued")
    assert not view.wants_draw()


def test_a_click_after_the_run_is_drawn_by_the_pusher_too(comms) -> None:
    job = finished_job()
    view = display.view_of(job)
    assert not view.grid.via_control  # no kernel answers on a control channel here
    assert job.wait(10) and view.finished.is_set()  # the pusher drew the end
    lv_comm = view.logview.comm
    mark = len(lv_comm.threads)
    view._select(1)  # the user clicks the failed call once the run is over
    deadline = time.time() + 10
    while time.time() < deadline and not view.logview.title.startswith("call 1"):
        time.sleep(0.02)
    assert view.logview.title.startswith("call 1 · failed") and view.logview.mode == "call"
    assert set(lv_comm.threads[mark:]) == {"sif-display"}


def test_an_interrupted_run_is_finished_on_request(comms) -> None:
    job = Job("stop", 2)
    view = display.view_of(job)
    view.ask_finish()  # finish_job after a KeyboardInterrupt: the job may still run
    assert view.finished.wait(10) and not job.done()
    assert isinstance(view, JobView) and view.bar.value == 0


# -- without the JupyterLab extension ------------------------------------------------------


def test_the_front_end_is_missing_only_where_this_environment_shows_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import jupyter_core.paths

    from sif_magic.widgets import _frontend

    monkeypatch.delenv("SIF_MAGIC_FRONTEND", raising=False)
    monkeypatch.setattr(jupyter_core.paths, "jupyter_path", lambda *p: [str(tmp_path)])
    assert _frontend.frontend_missing()  # jupyterlab here, no labextensions/sif-magic
    (tmp_path / "sif-magic").mkdir()
    (tmp_path / "sif-magic" / "package.json").write_text("{}")
    assert not _frontend.frontend_missing()
    monkeypatch.setenv("SIF_MAGIC_FRONTEND", "0")
    assert _frontend.frontend_missing()
    monkeypatch.setenv("SIF_MAGIC_FRONTEND", "1")
    (tmp_path / "sif-magic" / "package.json").unlink()
    assert not _frontend.frontend_missing()


def test_a_view_without_the_front_end_has_no_custom_widgets_and_says_how_to_get_them(
    comms, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIF_MAGIC_FRONTEND", "0")
    job = finished_job()
    view = JobView(job, lambda: None)
    assert view.grid is None and view.logview is None
    names = {type(c).__name__ for c in view.box.children}
    assert "CallGrid" not in names and "LogView" not in names
    texts = [c.value for c in view.box.children if isinstance(getattr(c, "value", None), str)]
    hint = [t for t in texts if "JupyterLab extension" in t]
    assert hint and "scripts/build-wheel" in hint[0] and "%sif_logs" in hint[0]
    monkeypatch.setenv("SIF_MAGIC_FRONTEND", "1")
    assert JobView(finished_job("g"), lambda: None).grid is not None
