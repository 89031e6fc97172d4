"""The Timeline tab of a job view: drawn by the pusher at the job's end, binned
anew for a zoom the front-end asks for, and never by the thread that asked."""

from __future__ import annotations

import time
import zlib

from test_display_parts import comms as _comms
from test_pictures import straggler_job

from sif_magic import display
from sif_magic.display.chartsview import TAB

comms = _comms  # the fixture, under the name the tests ask for


def _until(check, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


def test_the_end_of_a_job_draws_its_timeline_and_histogram(comms) -> None:
    job = straggler_job()
    view = display.view_of(job)
    assert job.wait(10) and view.finished.is_set()
    charts = view.charts.widget
    assert charts.rows == ["h1:101", "h1:102", "h1:103", "slow:999"] and charts.job_id == "pics"
    assert len(zlib.decompress(charts.cells_z)) == 4 * charts.buckets
    assert charts.hist["n"] == 200 and charts.hist["log"]
    tabs = [c for c in view.box.children if type(c).__name__ == "Tab"][0]
    assert tabs.children == (view.logview, charts) and tabs.titles == ("Logs", "Timeline")


def test_a_zoom_is_binned_anew_by_the_pusher(comms) -> None:
    job = straggler_job()
    view = display.view_of(job)
    assert job.wait(10) and view.finished.is_set()
    charts = view.charts.widget
    mark = len(charts.comm.threads)
    # what a drag across the timeline sends, handled on the kernel thread
    charts.comm.from_frontend({"method": "update", "state": {"window": [4.0, 6.0]}})
    assert _until(lambda: (charts.t0, charts.t1) == (4.0, 6.0)), (charts.t0, charts.t1)
    new = list(zip(charts.comm.sent[mark:], charts.comm.threads[mark:]))
    drawn = [t for (_, data, _), t in new if "t0" in (data or {}).get("state", {})]
    assert drawn and set(drawn) == {"sif-display"}, new  # the kernel thread only echoes
    charts.comm.from_frontend({"method": "update", "state": {"window": []}})  # a double click
    assert _until(lambda: charts.t0 == 0.0 and charts.t1 > 39.0)


def test_opening_the_tab_of_a_running_job_draws_it(comms) -> None:
    from sif_magic.job import Job

    job = Job("live", 4)
    view = display.view_of(job)
    tabs = [c for c in view.box.children if type(c).__name__ == "Tab"][0]
    sent = view.charts.widget.updates_sent
    tabs.selected_index = TAB  # as the front-end's click sets it
    assert view.charts.open
    assert _until(lambda: view.charts.widget.updates_sent > sent or view.charts.drawn_version >= 0)
    job.mark_cancelled()
    assert job.wait(10)
