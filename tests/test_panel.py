"""The side panel's kernel half (display/panel.py): what it answers, and that a
real kernel answers it on the control channel while a blocking cell runs."""

from __future__ import annotations

import base64
import os
import queue
import time
import zlib
from pathlib import Path

import pytest
from test_pictures import straggler_job

from sif_magic.display import panel
from sif_magic.job import Job

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_jobs_listed():
    with panel._LOCK:
        saved = dict(panel._JOBS)
        panel._JOBS.clear()
    yield
    with panel._LOCK:
        panel._JOBS.clear()
        panel._JOBS.update(saved)


def test_the_jobs_reply_lists_the_remembered_jobs_oldest_first() -> None:
    first, second = straggler_job(), Job("running1", 5, name="g")
    panel.remember(first)
    panel.remember(second)
    reply = panel.answer({"op": "jobs"})
    assert [j["job_id"] for j in reply["jobs"]] == ["pics", "running1"]
    assert reply["jobs"][0]["done"] and not reply["jobs"][1]["done"]
    assert reply["jobs"][0]["counts"]["done"] == 199 and reply["jobs"][0]["counts"]["failed"] == 1
    assert reply["workers"] == []  # jobs without a backend have no workers table


def test_only_the_newest_finished_jobs_stay_listed_running_ones_always() -> None:
    running = Job("live", 3)
    panel.remember(running)
    for k in range(panel.KEEP + 5):
        done = Job(f"done{k}", 0)  # no calls: finished at once
        panel.remember(done)
    ids = [j.job_id for j in panel.jobs()]
    assert "live" in ids and len(ids) == panel.KEEP + 1 and "done0" not in ids


def test_the_job_reply_has_states_timeline_histogram_and_logs() -> None:
    job = straggler_job()
    panel.remember(job)
    reply = panel.answer({"op": "job", "job_id": "pics"})
    assert zlib.decompress(base64.b64decode(reply["states_z"])) == bytes(job.states)
    tl = reply["timeline"]
    assert tl["rows"][-1] == "slow:999" and tl["calls"] == [64, 63, 63, 10]
    cells = zlib.decompress(base64.b64decode(tl["cells_z"]))
    assert len(cells) == len(tl["rows"]) * tl["buckets"]
    assert reply["hist"]["n"] == 200 and reply["hist"]["log"]
    assert reply["log"]["title"].startswith("all calls")
    one = panel.answer({"op": "job", "job_id": "pics", "call": 0})
    assert one["log"]["title"].startswith("call 0 · failed") and one["call"] == 0


def test_the_timeline_reply_bins_the_span_asked() -> None:
    panel.remember(straggler_job())
    tl = panel.answer({"op": "timeline", "job_id": "pics", "window": [4.0, 6.0]})["timeline"]
    assert (tl["t0"], tl["t1"]) == (4.0, 6.0) and len(tl["rows"]) == 4
    whole = panel.answer({"op": "timeline", "job_id": "pics", "window": []})["timeline"]
    assert whole["t0"] == 0.0 and whole["t1"] == pytest.approx(40.0)


def test_the_workers_table_has_the_slurm_jobs_not_joined_yet(monkeypatch) -> None:
    from types import SimpleNamespace

    from sif_magic.launch import slurm_rows

    class Backend:
        runtime = "ml"

        def workers(self):
            return [{"host": "n1", "pid": 9, "slots": 4, "busy": 1, "state": "up"}]

    status = SimpleNamespace(job_id="123", state="PENDING", describe=lambda: "PENDING (Priority)")
    pending = slurm_rows.PendingSlurmJobs(status=lambda ids: [status])
    pending.add("123", "ml")
    monkeypatch.setattr(slurm_rows, "PENDING", pending)
    job = Job("onslurm", 2, backend=Backend())
    panel.remember(job)
    rows = panel.answer({"op": "jobs"})["workers"]
    assert [r["host"] for r in rows] == ["n1", "(not joined yet)"]
    assert rows[1]["slurm_job"] == "123" and rows[1]["state"] == "SLURM PENDING (Priority)"


def test_bad_requests_get_an_error_that_says_what_to_ask() -> None:
    assert "unknown request 'nope'" in panel.answer({"op": "nope"})["error"]
    assert "no job 'x'" in panel.answer({"op": "job", "job_id": "x"})["error"]
    assert not panel.install(object())  # not a kernel: nothing installed


def test_a_kernel_answers_the_panel_while_a_blocking_sifmap_runs(tmp_path: Path) -> None:
    """The calls wait for a file the test writes only after the control channel
    answered: the run cannot end before the panel's reply unless the reply came
    while the cell still held the shell channel."""
    from jupyter_client.manager import start_new_kernel

    release = tmp_path / "release"
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIF_MAGIC_WIDGETS="0")
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        setup = kc.execute_interactive(
            "%load_ext sif_magic\n%sif_config backend=local processes=2 progress_delay=0.1",
            timeout=60,
        )
        assert setup["content"]["status"] == "ok", setup
        cell = (
            "%%sifmap x in range(6) -o ys\n"
            "import os, time\n"
            f"while not os.path.exists({str(release)!r}):\n"
            "    time.sleep(0.05)\n"
            "x * 2"
        )
        msg_id = kc.execute(cell)
        deadline = time.monotonic() + 60
        listed = None
        while time.monotonic() < deadline:
            req = kc.session.msg(panel.MSG, {"op": "jobs"})
            kc.control_channel.send(req)
            reply = kc.control_channel.get_msg(timeout=10)
            assert reply["msg_type"] == panel.REPLY, reply
            assert reply["parent_header"]["msg_id"] == req["header"]["msg_id"]
            jobs = reply["content"]["jobs"]
            if jobs and jobs[-1]["counts"]["running"] > 0:
                listed = reply["content"]
                break
            time.sleep(0.2)
        assert listed is not None, "the panel never saw the job running"
        assert not listed["jobs"][-1]["done"] and listed["jobs"][-1]["n"] == 6
        assert [w for w in listed["workers"] if w.get("state") == "up"], listed["workers"]
        release.write_text("go")
        while True:  # the cell ends once the calls were released
            msg = kc.get_shell_msg(timeout=60)
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        assert msg["content"]["status"] == "ok", msg["content"]
        after = kc.session.msg(panel.MSG, {"op": "jobs"})
        kc.control_channel.send(after)
        done = kc.control_channel.get_msg(timeout=10)["content"]["jobs"][-1]
        assert done["done"] and done["counts"]["done"] == 6
    except queue.Empty as e:
        raise AssertionError("the kernel did not answer on its control channel") from e
    finally:
        release.touch()
        kc.stop_channels()
        km.shutdown_kernel(now=True)
