"""The example notebooks, executed by nbclient as a user would run them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def execute(name: str, **env: str) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        NotebookClient(
            nb,
            timeout=180,
            kernel_name="python3",
            store_widget_state=True,
            resources={"metadata": {"path": str(ROOT / "notebooks")}},
        ).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def text_of(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}\n" + "\n".join(out.traceback))
    return "".join(parts)


def cell_starting(nb: nbformat.NotebookNode, prefix: str) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(prefix):
            return cell
    raise AssertionError(f"no cell starts with {prefix!r}")


def test_quickstart_runs_on_the_local_backend() -> None:
    nb = execute("quickstart.ipynb")
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in text_of(
        cell_starting(nb, "print('squares")
    )
    assert "working on 3" in text_of(cell_starting(nb, "%sif_logs 3"))
    assert "roots: [1.0, 1.414, 1.732, 2.0, 2.236]" in text_of(cell_starting(nb, "print('roots"))
    inv = text_of(cell_starting(nb, "for x, r in zip"))
    assert "0 -> RemoteError('ZeroDivisionError: division by zero')" in inv and "4 -> 0.25" in inv
    assert "pow: [1024, 27]" in text_of(cell_starting(nb, "from sif_magic import Executor"))


def test_rabbitmq_notebook_with_two_workers(broker_url: str) -> None:
    nb = execute("rabbitmq.ipynb", SIF_MAGIC_AMQP_URL=broker_url)
    shown = text_of(cell_starting(nb, "%sif_config"))
    assert "guest:***@" in shown and "guest:guest@" not in shown
    workers = text_of(cell_starting(nb, "time.sleep(2)"))
    assert workers.count("slots") == 2, workers
    summary = text_of(cell_starting(nb, "print('results:"))
    assert "results: 1000 in order: True" in summary
    assert "call 7 printed: processing 7 on" in summary
    ran_on = re.search(r"ran on workers: \[(.*)\]", summary)
    assert ran_on and len(ran_on.group(1).split(",")) == 2, summary  # both workers took chunks
    failing = cell_starting(nb, "%%sifmap x in range(5)")
    err = text_of(failing)
    assert "ValueError: cannot handle 3" in err
    assert (
        "raise ValueError(f'cannot handle {x}')" in err
    )  # the worker's traceback, with the cell's line
    assert "[0, 1, 2, RemoteError" in text_of(cell_starting(nb, "print('what succeeded"))
    assert text_of(nb.cells[-1]).count("worker exit code 0") == 2
    from queues import delete_task_queues

    delete_task_queues(re.search(r"runtime\s+(demo-\w+)", shown).group(1), broker_url)


@pytest.fixture(autouse=True)
def _key(key_file) -> None:
    """Notebook kernels inherit SIF_MAGIC_HOME, so they share the test session's key."""
