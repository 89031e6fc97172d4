"""How jobs show themselves: widgets in a kernel, snapshots, text elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

CELL = (
    "%%sifmap x in range(60) -o ys --errors collect\n"
    "import time\nprint('line', x)\ntime.sleep(0.05)\n"
    "if x == 7:\n    raise ValueError('seven')\nx"
)


# the oldest-dependency env scripts/test builds: ipykernel 6.29, Python 3.10
IPYKERNEL6 = ROOT / ".venv-oldest" / "bin" / "python"


@pytest.fixture(params=["ipykernel7", "ipykernel6"], scope="module")
def kernel(request, tmp_path_factory) -> str:
    """The kernel to run in: the test env's (ipykernel 7.x), or the one of .venv-oldest
    (ipykernel 6.29 with the oldest ipython and ipywidgets), which scripts/test builds;
    output must land in its cell on both."""
    if request.param == "ipykernel7":
        return "python3"
    if not IPYKERNEL6.exists():
        msg = f"{IPYKERNEL6} missing: scripts/test builds it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    version = subprocess.run(
        [str(IPYKERNEL6), "-c", "import ipykernel; print(ipykernel.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.startswith("6.29"), version
    spec = tmp_path_factory.mktemp("jupyter") / "kernels" / "sif-ipykernel6"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(IPYKERNEL6), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "ipykernel 6.29 (.venv-oldest)",
                "language": "python",
            }
        )
    )
    os.environ["JUPYTER_PATH"] = str(spec.parent.parent)
    return "sif-ipykernel6"


def run_cells(
    *cells: str, env: dict[str, str] | None = None, kernel: str = "python3"
) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    saved = dict(os.environ)
    os.environ.update(env or {})
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        NotebookClient(nb, timeout=120, kernel_name=kernel, store_widget_state=True).execute()
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


def test_widgets_live_then_a_snapshot_in_the_same_output(kernel: str) -> None:
    nb = run_cells(
        "%load_ext sif_magic\n%sif_config processes=2 progress_delay=0.2",
        CELL,
        "1 + 1",
        kernel=kernel,
    )
    assert [o.output_type for o in nb.cells[2].outputs] == ["execute_result"]  # nothing strays here
    outputs = nb.cells[1].outputs
    bundles = [o for o in outputs if o.output_type == "display_data"]
    assert len(bundles) == 1  # one output, updated in place
    data = bundles[0].data
    assert "application/vnd.jupyter.widget-view+json" in data  # the grid stays clickable
    assert "59 done" in data["text/html"] and "1 failed" in data["text/html"]  # nbviewer's view
    assert "60 calls, finished" in data["text/plain"]
    models = widget_models(nb)
    bar = models["FloatProgressModel"][0]
    assert (bar["value"], bar["max"], bar["bar_style"]) == (60, 60, "danger")
    grid = models["CallGridModel"][0]
    assert grid["n"] == 60
    log = models["LogViewModel"][0]
    assert log["mode"] == "all" and any("line 7" in e[1] for e in log["entries"])


def test_no_wait_view_stays_in_its_cell(kernel: str) -> None:
    nb = run_cells(
        "%load_ext sif_magic\n%sif_config processes=2",
        "%%sifmap x in range(20) -o job --no-wait\nimport time\ntime.sleep(0.2)\nprint('p', x)\nx",
        "print('other cell')\nimport time\ntime.sleep(1)",
        "job.results(timeout=60)[-1]",
        kernel=kernel,
    )
    first = nb.cells[1].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in first)
    # the other cells got only their own output, although the job ran on meanwhile
    assert [o.get("text", "") for o in nb.cells[2].outputs] == ["other cell\n"]
    assert nb.cells[3].outputs[0]["data"]["text/plain"] == "19"
    assert widget_models(nb)["FloatProgressModel"][0]["value"] == 20  # updated after its cell ended


def test_widgets_off_leaves_text_only(kernel: str) -> None:
    nb = run_cells(
        "%load_ext sif_magic\n%sif_config processes=2 progress_delay=0.2",
        CELL,
        kernel=kernel,
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
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sif_magic",
            "logs",
            "--follow",
            "--seconds",
            "15",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # the URL in the environment, not in argv (where every local user could read it)
        env=dict(os.environ, PYTHONPATH=str(ROOT), SIF_MAGIC_AMQP_URL=broker_url),
    )
    assert "following every job" in follower.stderr.readline()  # subscribed from here on
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime)
    try:
        job = ex.map_job(lambda x: print(f"hello {x}"), range(6), chunksize=1)
        job.results(timeout=60)
        time.sleep(0.5)  # the last event batch leaves the worker within ~100 ms
    finally:
        ex.shutdown()
        follower.terminate()
    out, err = follower.communicate(timeout=30)
    lines = set(out.splitlines())
    assert {f"[{job.job_id} {i}] hello {i}" for i in range(6)} <= lines, out + err
