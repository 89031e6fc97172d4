"""The elastic scaler for real: Debian's SLURM on one node (2 CPUs: two one-CPU jobs at
once, see slurm_cluster.py), the machine's RabbitMQ, workers with ``--container none``,
the scaler in a real IPython shell (``%sif_workers slurm --adapt``) or in its own
process (``sif-magic slurm adapt``). Nothing asserts a duration: each step waits for
a condition, with deadlines far above what it takes here."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from queues import delete_queue, task_queue
from test_slurm import URL, job_processes, wait_until

from sif_magic import Executor, protocol

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

pytest_plugins = ("slurm_cluster",)
ROOT = Path(__file__).resolve().parents[1]
IDLE = 6  # the workers' --idle-timeout here
SLACK = protocol.HOLD_SECONDS + 90  # a last hold, SLURM's end of job, a loaded machine

NOTEBOOK = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "sif_magic")
shell.run_line_magic("sif_config", sys.argv[1])
scaler = shell.run_line_magic("sif_workers", sys.argv[2])
print(json.dumps({"name": scaler.name}), flush=True)
shell.user_ns["xs"] = list(range(6))
cell = "def work(x):\\n    import os\\n    return x + 1, os.environ.get('SLURM_JOB_ID', '')\\n"
for _ in range(2):  # a map from zero workers; again once they have all left
    shell.run_cell_magic("sifmap", "xs -o ys", cell)
    print(json.dumps(shell.user_ns["ys"]), flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def home(sif_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from sif_magic._keys import load_key

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs import this checkout's sif_magic
    load_key()  # SIF_MAGIC_HOME/key: the notebook's and the workers'
    return sif_home


@pytest.fixture
def rt() -> Iterator[str]:
    """A runtime of the test's own; its task queues go at the end."""
    runtime = f"adapt-{secrets.token_hex(3)}"
    yield runtime
    delete_queue(task_queue(runtime))


def cli_args(*argv: str) -> argparse.Namespace:
    """Options as ``slurm adapt`` parses them."""
    from sif_magic.cli.adapt import add_adapt_arguments
    from sif_magic.cli.slurm import add_slurm_submit_arguments

    parser = argparse.ArgumentParser()
    add_slurm_submit_arguments(parser)
    add_adapt_arguments(parser)
    return parser.parse_args(list(argv))


def next_json(proc: subprocess.Popen) -> object:
    """The next line of ``proc``'s output that is JSON (the magics print lines of their own)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the notebook ended: {proc.stderr.read()}")
        if line.startswith(("{", "[")):
            return json.loads(line)


def ours(slurm: SlurmCluster, name: str) -> list[str]:
    res = slurm.run("squeue", "-h", "-r", "-n", name, "-o", "%i|%A", check=False)
    return res.stdout.split()


def worker_pids(numeric_ids: set[str]) -> list[int]:
    return [p for p, (cmd, _) in job_processes(numeric_ids).items() if "sif_magic worker" in cmd]


@pytest.mark.slurm
def test_a_map_from_zero_workers_scales_up_idles_out_and_scales_up_again(
    slurm: SlurmCluster, home: Path, url_file: Path, rt: str
) -> None:
    settings = f"backend=rabbitmq amqp_url_file={url_file} runtime={rt} widgets=0"
    adapt = (
        "slurm --adapt 0:2 --container none --cpus-per-task 1 --processes 1 "
        f"--idle-timeout {IDLE} --poll 1 --submit-every 1"
    )
    nb = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK, settings, adapt],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    name = ""
    try:
        name = next_json(nb)["name"]
        seen: set[str] = set()
        for _ in range(2):
            ys = next_json(nb)
            assert [y[0] for y in ys] == list(range(1, 7))
            numeric = {y[1] for y in ys}
            assert "" not in numeric  # every call ran in a job the scaler submitted
            seen |= numeric
            # no call for IDLE seconds: every worker leaves, every job ends, MIN is 0
            wait_until(lambda: not ours(slurm, name), IDLE + SLACK, "the jobs to end")
            wait_until(lambda s=seen: not worker_pids(s), 30, "the workers to exit")
            nb.stdin.write("\n")
            nb.stdin.flush()
        assert nb.wait(60) == 0, nb.stderr.read()
    finally:
        if nb.poll() is None:
            nb.kill()
            nb.wait(10)
        if name:
            slurm.run("scancel", "-n", name, check=False)


@pytest.mark.slurm
def test_every_job_ends_by_itself_when_the_scaler_is_killed(
    slurm: SlurmCluster, home: Path, url_file: Path, rt: str
) -> None:
    name = f"sif-adapt-test-{rt}"
    scaler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sif_magic",
            "slurm",
            "adapt",
            "--min",
            "1",
            "--max",
            "2",
            "--container",
            "none",
            "--cpus-per-task",
            "1",
            "--processes",
            "1",
            "--idle-timeout",
            str(IDLE),
            "--poll",
            "1",
            "--submit-every",
            "1",
            "--runtime",
            rt,
            "--job-name",
            name,
            "--amqp-url-file",
            str(url_file),
        ],  # fmt: skip
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    ex = Executor(backend="rabbitmq", amqp_url=URL, runtime=rt)
    try:
        wait_until(lambda: ours(slurm, name), 60, "the scaler to submit MIN")

        def slow(x: int) -> int:
            import time

            time.sleep(2)
            return -x

        job = ex.map_job(slow, range(8), chunksize=1)  # the scaler's queue is there: sent
        assert job.results(timeout=300) == [-x for x in range(8)]
        numeric = {row.split("|")[1] for row in ours(slurm, name)}
        assert numeric
        time.sleep(2 * IDLE)  # no call for twice the idle timeout: MIN is held all the same
        assert ours(slurm, name), scaler.stdout
        scaler.send_signal(signal.SIGKILL)  # while it holds MIN
        scaler.wait(10)
        wait_until(lambda: not ours(slurm, name), IDLE + SLACK, "every job to end by itself")
        wait_until(lambda: not worker_pids(numeric), 30, "the workers to exit")
    finally:
        ex.shutdown()
        if scaler.poll() is None:
            scaler.kill()
        out = scaler.stdout.read() if scaler.stdout else ""
        slurm.run("scancel", "-n", name, check=False)
    assert "adapting runtime" in out, out


@pytest.mark.slurm
def test_an_array_is_one_recorded_job_with_its_elements_own_ids(
    slurm: SlurmCluster, home: Path, url_file: Path, rt: str
) -> None:
    from sif_magic.launch import slurm as sl
    from sif_magic.launch import squeue

    assert squeue.max_array_size() > 1  # SLURM's default MaxArraySize is 1001
    spec = sl.SlurmSpec(
        runtime=rt,
        container="none",
        cpus_per_task=1,
        amqp_url_file=str(url_file),
        array=2,
        time="00:10:00",
    )
    assert "#SBATCH --array=0-1" in sl.render_script(spec)
    job = sl.submit(spec)
    try:
        (st,) = sl.status([job.job_id])
        assert st.job_id == job.job_id and st.state in ("PENDING", "RUNNING"), st
        rows = wait_until(
            lambda: (
                [r for r in squeue.jobs_named(f"sif-magic-{rt}") if r.state == "RUNNING"]
                if len(squeue.jobs_named(f"sif-magic-{rt}")) == 2
                else []
            ),
            60,
            "both elements to be listed, one running",
        )
        assert {r.job_id for r in rows} <= {f"{job.job_id}_0", f"{job.job_id}_1"}
        assert all(r.numeric.isdigit() and r.ends > 0 for r in rows)  # from --time
    finally:
        sl.cancel([job.job_id])
        wait_until(lambda: not ours(slurm, f"sif-magic-{rt}"), 60, "the array to end")


@pytest.mark.slurm
def test_a_replacement_is_queued_ahead_of_walltime_and_max_holds(
    slurm: SlurmCluster, home: Path, url_file: Path, rt: str
) -> None:
    """``--adapt 1:1 --time 00:01:00``: the running job is within the lead time of its
    walltime at once, so a replacement is queued behind it (``afterany``): never two
    running, and the table says which replaces which."""
    from sif_magic.cli.adapt import scaler_from_args
    from sif_magic.launch import squeue

    ex = Executor(backend="rabbitmq", amqp_url=URL, runtime=rt)
    args = cli_args(
        "--runtime", rt, "--container", "none", "--cpus-per-task", "1", "--time", "00:01:00",
        "--idle-timeout", "300", "--amqp-url-file", str(url_file), "--poll", "1",
        "--submit-every", "1",
    )  # fmt: skip
    scaler = scaler_from_args(args, ex.backend, 1, 1).start()
    try:

        def replaced() -> list:
            rows = squeue.jobs_named(scaler.name)
            assert sum(r.state == "RUNNING" for r in rows) <= 1, rows  # never beyond MAX
            running = [r for r in rows if r.state == "RUNNING"]
            waiting = [r for r in rows if r.state == "PENDING" and r.reason == "Dependency"]
            return running and waiting and (running[0], waiting[0])

        try:
            old, new = wait_until(replaced, 120, "a replacement queued behind the running job")
        except AssertionError as e:
            rows = squeue.jobs_named(scaler.name)
            raise AssertionError(f"{e}; the scaler said {scaler.lines}; squeue: {rows}") from None
        line = wait_until(
            lambda: [ln for ln in scaler.lines if f"replacement {new.job_id}" in ln],
            30,
            "the table to say so",
        )
        assert line[0].startswith(f"job {old.job_id} drains at "), line
        assert line[0].endswith(f"replacement {new.job_id} pending (waits for it: at MAX)"), line
        assert scaler.row()["state"].count("drains at") == 1
    finally:
        scaler.stop()
        ex.shutdown()
        slurm.run("scancel", "-n", scaler.name, check=False)


@pytest.mark.slurm
def test_clients_see_the_scaler_while_it_runs_and_it_stops_with_its_executor(
    slurm: SlurmCluster, home: Path, url_file: Path, rt: str
) -> None:
    from queues import consumers

    from sif_magic.cli.adapt import scaler_from_args
    from sif_magic.launch.scaler import ACTIVE

    ex = Executor(backend="rabbitmq", amqp_url=URL, runtime=rt)
    args = cli_args(
        "--runtime", rt, "--container", "none", "--poll", "0.2", "--amqp-url-file", str(url_file)
    )  # fmt: skip
    scaler = scaler_from_args(args, ex.backend, 0, 3).start()
    marker = protocol.scaler_queue(ex.backend.scope, rt)
    try:
        assert ACTIVE[rt] is scaler and ex.backend.slots() == 3  # chunks cut for 3 nodes
        assert consumers(marker) == 1
        assert "adapt 0:3" in repr(scaler) and rt in repr(scaler)
        wait_until(lambda: scaler.lines[0].startswith("no jobs: 0 tasks queued"), 30, "a step")
    finally:
        ex.shutdown()
    wait_until(lambda: rt not in ACTIVE, 30, "the scaler to stop with its executor")
    wait_until(lambda: consumers(marker) is None, 30, "the broker to delete its queue")
    assert not ours(slurm, scaler.name)  # no work, MIN 0: it submitted nothing


@pytest.mark.slurm
def test_pending_jobs_no_longer_wanted_are_withdrawn(
    slurm: SlurmCluster, home: Path, url_file: Path, rt: str
) -> None:
    import dataclasses

    import pika

    from sif_magic.cli.adapt import scaler_from_args
    from sif_magic.launch import squeue

    blocker = slurm.run(
        "sbatch", "--parsable", f"--cpus-per-task={slurm.cpus}", f"--output={home}/blocker.out",
        "--wrap", "sleep 300",
    ).stdout.strip()  # fmt: skip
    ex = Executor(backend="rabbitmq", amqp_url=URL, runtime=rt)
    args = cli_args(
        "--runtime", rt, "--container", "none", "--poll", "0.5", "--submit-every", "1",
        "--amqp-url-file", str(url_file),
    )  # fmt: skip
    scaler = scaler_from_args(args, ex.backend, 0, 2)
    scaler.policy = dataclasses.replace(scaler.policy, withdraw_after=2.0)
    scaler.start()
    try:
        ex.map_job(abs, range(4), chunksize=1)  # sent: a scaler serves the runtime
        wait_until(
            lambda: len([r for r in squeue.jobs_named(scaler.name) if r.state == "PENDING"]) == 2,
            60,
            "two jobs pending behind the blocker",
        )
        conn = pika.BlockingConnection(pika.URLParameters(URL))
        conn.channel().queue_purge(task_queue(rt))  # the work is gone
        conn.close()
        wait_until(lambda: not ours(slurm, scaler.name), 60, "the pending jobs to be withdrawn")
        assert blocker in slurm.jobs()  # not ours: untouched
    finally:
        scaler.stop()
        ex.shutdown(wait=False, cancel_futures=True)
        slurm.run("scancel", blocker, check=False)
        slurm.run("scancel", "-n", scaler.name, check=False)


def _ten_seconds(x: tuple[int, str]) -> tuple[int, str]:
    """A call of 10 s that leaves a file per run (the run counter) in the folder its
    input names; its SLURM job id shows where it ran."""
    import os
    import time
    import uuid

    i, folder = x
    time.sleep(10)
    open(os.path.join(folder, f"{i}.{uuid.uuid4().hex}"), "w").close()
    return i, os.environ.get("SLURM_JOB_ID", "")


@pytest.mark.slurm
@pytest.mark.timeout(900)  # 120 s of calls in jobs of 60 s, and their starts: a net only
def test_walltime_drains_and_replaces_without_losing_or_rerunning_a_call(
    slurm: SlurmCluster, home: Path, url_file: Path, rt: str, tmp_path: Path
) -> None:
    """``--adapt 1:1 --time 00:01:00`` and 24 calls of 10 s on 2 processes (120 s of
    work, jobs of 60 s): each job's worker takes only calls that finish before its
    walltime and leaves in time, its replacement takes the rest: all done, none
    failed, none run twice (counted by a file per run)."""
    import cloudpickle

    from sif_magic.cli.adapt import scaler_from_args

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # jobs lack this file
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o777)
    ex = Executor(backend="rabbitmq", amqp_url=URL, runtime=rt, errors="collect")
    args = cli_args(
        "--runtime", rt, "--container", "none", "--cpus-per-task", "2", "--processes", "2",
        "--time", "00:01:00", "--idle-timeout", "20", "--amqp-url-file", str(url_file),
        "--poll", "1", "--submit-every", "1",
    )  # fmt: skip
    scaler = scaler_from_args(args, ex.backend, 1, 1).start()
    try:
        job = ex.map_job(_ten_seconds, [(i, str(runs)) for i in range(24)], chunksize=1)
        assert job.wait(timeout=900), job.state_counts()
        counts = job.state_counts()
        assert counts["done"] == 24 and counts["failed"] == 0, counts
        ran = sorted(int(p.name.split(".")[0]) for p in runs.iterdir())
        twice = sorted({i for i in ran if ran.count(i) > 1})
        logs = "\n".join(p.read_text() for p in sorted(home.rglob("*.out")))
        assert ran == list(range(24)), (  # each exactly once
            f"runs per call: {ran}; {[job.describe_call(i) for i in twice]}\n{logs[-6000:]}"
        )
        where = {job_id for _, job_id in job.results()}
        assert len(where) >= 2 and "" not in where, where  # a replacement took over
    finally:
        scaler.stop()
        ex.shutdown(wait=False, cancel_futures=True)
        slurm.run("scancel", "-n", scaler.name, check=False)
