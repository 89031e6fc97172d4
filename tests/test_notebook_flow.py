"""Notebooks run by nbclient: resume after the kernel died mid-run, and ``await job``
in a kernel while another cell's task runs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebooks import ROOT, text_of

SETUP = """
%load_ext sif_magic
%sif_config backend=local processes=2 cache_dir={cache}
RUNS, GO = {runs!r}, {go!r}
"""

KILLER = """
import os, signal, threading, time
from sif_magic.cache import CacheStore

def _die_once_ten_are_kept():  # the kernel dies mid-run, by its own hand
    store = CacheStore({cache!r}, 1 << 30)
    while store.info().calls < 10:
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGKILL)

threading.Thread(target=_die_once_ten_are_kept, daemon=True).start()
"""

RUN = """
%%sifmap range(20) -o ys --resume --chunksize 1
def work(x):
    import os, time, uuid
    while x >= 10 and not os.path.exists(GO):  # the second half waits for GO
        time.sleep(0.01)
    open(os.path.join(RUNS, f"{{x}}-{{uuid.uuid4().hex}}"), "w").close()  # one file per run
    return x * x
"""

REPORT = """
print("ys:", ys)
print("reused:", _sif_job.reused)
"""


def run(cells: list[str], **fmt: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).format(**fmt).strip()) for c in cells]
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return nb


def runs_of(folder: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for f in folder.iterdir():
        x = int(f.name.split("-")[0])
        counts[x] = counts.get(x, 0) + 1
    return counts


def test_resume_after_the_kernel_died_runs_only_the_missing_calls(tmp_path: Path) -> None:
    runs, go, cache = tmp_path / "runs", tmp_path / "go", tmp_path / "cache"
    runs.mkdir()
    fmt = {"runs": str(runs), "go": str(go), "cache": str(cache)}
    with pytest.raises(Exception, match="(?i)dead|died|kernel"):
        run([SETUP, KILLER, RUN], **fmt)  # dies with calls 0..9 done and kept
    first = runs_of(runs)
    assert first == dict.fromkeys(range(10), 1), first
    go.touch()
    nb = run([SETUP, RUN, REPORT], **fmt)  # a new kernel, the same cells
    out = text_of(nb.cells[2])
    assert f"ys: {[x * x for x in range(20)]}" in out and "reused: 10" in out, out
    assert runs_of(runs) == dict.fromkeys(range(20), 1)  # calls 0..9 did not run again


AWAIT_SETUP = """
import asyncio, os, time
from sif_magic import Executor
ex = Executor(backend="local", processes=2)
FLAG = {flag!r}

def wait_for_flag(x):
    import os, time
    while not os.path.exists(FLAG):
        time.sleep(0.01)
    return x + 1

async def write_flag_once_the_job_runs():  # another cell's task on the kernel's loop
    while "job" not in globals():
        await asyncio.sleep(0.01)
    open(FLAG, "w").close()

writer = asyncio.get_running_loop().create_task(write_flag_once_the_job_runs())
"""

AWAIT = """
job = ex.map_job(wait_for_flag, range(4))
values = await job  # the calls finish only if the writer runs meanwhile
got = sorted([pair async for pair in job.as_completed()])
print("values:", values, "pairs:", got, "writer done:", writer.done())
"""


def test_await_job_in_a_kernel_lets_other_tasks_run(tmp_path: Path) -> None:
    nb = run([AWAIT_SETUP, AWAIT], flag=str(tmp_path / "flag"))
    out = text_of(nb.cells[1])
    assert "values: [1, 2, 3, 4] pairs: [(0, 1), (1, 2), (2, 3), (3, 4)] writer done: True" in out
