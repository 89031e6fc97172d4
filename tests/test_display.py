"""How jobs show themselves: widgets in a kernel, snapshots, text elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

CELL = (
    "%%sifmap x in range(60) -o ys --errors collect\n"
    "import time\nprint('line', x)\ntime.sleep(0.05)\n"
    "if x == 7:\n    raise ValueError('seven')\nx"
)


def run_cells(*cells: str, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    saved = dict(os.environ)
    os.environ.update(env or {})
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def widget_models(nb: nbformat.NotebookNode) -> dict[str, list[dict]]:
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models: dict[str, list[dict]] = {}
    for model in state.get("state", {}).values():
        models.setdefault(model["model_name"], []).append(model["state"])
    return models


def test_widgets_live_then_a_snapshot_in_the_same_output() -> None:
    nb = run_cells("%load_ext sif_magic\n%sif_config processes=2 progress_delay=0.2", CELL)
    outputs = nb.cells[1].outputs
    bundles = [o for o in outputs if o.output_type == "display_data"]
    assert len(bundles) == 1  # one output, updated in place
    data = bundles[0].data
    assert "application/vnd.jupyter.widget-view+json" in data  # the grid stays clickable
    assert "59 done" in data["text/html"] and "1 failed" in data["text/html"]  # nbviewer's view
    assert "60 calls, finished" in data["text/plain"]
    models = widget_models(nb)
    bar = models["IntProgressModel"][0]
    assert (bar["value"], bar["max"], bar["bar_style"]) == (60, 60, "danger")
    grid = models["CallGridModel"][0]
    assert grid["n"] == 60
    log = models["LogViewModel"][0]
    assert log["mode"] == "all" and any("line 7" in e[1] for e in log["entries"])


def test_widgets_off_leaves_text_only() -> None:
    nb = run_cells(
        "%load_ext sif_magic\n%sif_config processes=2 progress_delay=0.2",
        CELL,
        env={"SIF_MAGIC_WIDGETS": "0"},
    )
    outputs = nb.cells[1].outputs
    assert all("application/vnd.jupyter.widget-view+json" not in o.get("data", {}) for o in outputs)
    assert widget_models(nb) == {}
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "59 done, 1 failed" in text


def test_plain_ipython_gets_a_text_progress_line(ip, capsys) -> None:
    ip.run_cell("%%sifmap x in range(4) -o zs --chunksize 1\nimport time\ntime.sleep(0.8)\nx")
    err = capsys.readouterr().err
    assert "[sif_magic]" in err and "/4 done" in err
    assert ip.user_ns["zs"] == [0, 1, 2, 3]


def test_sif_magic_logs_follows_a_job_from_a_shell(workers, broker_url: str, runtime: str) -> None:
    from sif_magic import Executor

    workers.start(runtime, processes=2)
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime)
    try:
        job = ex.map_job(
            lambda x: (print(f"hello {x}"), __import__("time").sleep(0.3))[0],
            range(6),
            chunksize=1,
            name="shell",
        )
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sif_magic",
                "logs",
                job.job_id,
                "--follow",
                "--seconds",
                "8",
                "--amqp-url",
                broker_url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        time.sleep(0.5)
        job.results(timeout=60)
        out, err = follower.communicate(timeout=30)
    finally:
        ex.shutdown()
    assert follower.returncode == 0, err
    assert "following job" in err
    lines = set(out.splitlines())
    # lines of calls that ran after the follower subscribed, with their call index
    assert {f"[{i}] hello {i}" for i in range(3, 6)} <= lines, out
