"""%sif_workers from a notebook: SLURM workers submitted, shown until they join, used, cancelled.

Runs the real sbatch of the one-node test cluster (tests/slurm_cluster.py) with
``--container none``: the worker runs without Singularity, which is not installable here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ("slurm_cluster",)

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell

url, runtime = sys.argv[1], sys.argv[2]
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "sif_magic")
shell.run_line_magic("sif_config", f"backend=rabbitmq runtime={runtime} widgets=0")
shell.run_line_magic("sif_config", f"amqp_url={url}")
out = {}
out["job"] = shell.run_line_magic("sif_workers", "slurm --nodes 1 --container none --processes 2 --time 5")
from io import StringIO
import contextlib

def table():
    buf = StringIO()
    with contextlib.redirect_stdout(buf):
        shell.run_line_magic("sif_workers", "")
    return buf.getvalue()

out["before"] = table()
deadline = time.time() + 60
while time.time() < deadline:
    t = table()
    if "SLURM job " + out["job"] in t and " up" in t:
        break
    time.sleep(0.5)
out["after"] = t
shell.run_cell_magic("sifmap", "x in range(8) -o ys", "import os\n(x * 2, os.environ.get('SLURM_JOB_ID'))")
out["ys"] = shell.user_ns["ys"]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slurm
def test_sif_workers_slurm_from_a_shell(
    slurm, broker_url: str, key_file: Path, tmp_path: Path, runtime: str
) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SLURM_CONF=str(slurm.conf))
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, broker_url, runtime],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, res.stdout + res.stderr
    out = json.loads(line[0][len("RESULT ") :])
    print(out["before"], out["after"], sep="\n")
    job = out["job"]
    try:
        assert job.isdigit()
        # before its worker joined, the table showed the SLURM job and its state
        assert f"slurm-{job}" in out["before"] or f"SLURM job {job}" in out["before"], out["before"]
        assert (
            "SLURM pending" in out["before"]
            or "SLURM running" in out["before"]
            or " up" in out["before"]
        )
        # then the worker itself, with its SLURM job id
        assert f"SLURM job {job}" in out["after"] and " up" in out["after"], out["after"]
        assert [y[0] for y in out["ys"]] == [x * 2 for x in range(8)]
        assert {y[1] for y in out["ys"]} == {job}  # every call ran inside that SLURM job
    finally:
        subprocess.run(["scancel", job], env=env, capture_output=True)


def test_sif_workers_start_and_stop_here(
    ip, broker_url: str, key_file: Path, capsys, runtime: str
) -> None:
    from sif_magic import config

    cfg = config.get_config()
    cfg.set_from_strings({"backend": "rabbitmq", "amqp_url": broker_url, "runtime": runtime})
    try:
        ip.run_line_magic("sif_workers", "start --container none --instances 2 --processes 1")
        started = capsys.readouterr().out
        assert started.count("started worker") == 2 and "guest:guest" not in started
        r = ip.run_cell("%%sifmap x in range(6) -o ys\nimport os\n(x, os.getpid())")
        assert r.error_in_exec is None
        assert [y[0] for y in ip.user_ns["ys"]] == list(range(6))
        ip.run_line_magic("sif_workers", "")
        table = capsys.readouterr().out
        assert table.count(f"runtime {runtime}") == 2
    finally:
        ip.run_line_magic("sif_workers", "stop")
    stopped = capsys.readouterr().out
    assert stopped.count(": terminated") == 2, stopped
