"""Secrets in messages, in argv and on disk (issue 13, the low findings).

- ``mask_url`` hid only part of a password that holds ``@``: the rest showed.
- ``hello`` and ``logs`` took ``--amqp-url`` without a word, and any local user
  reads a command line in /proc/PID/cmdline (here: user ``nobody``, through setpriv).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import sif
from test_security_staging import as_nobody

from sif_magic.errors import ConfigError, mask_url

pytest_plugins = ("slurm_cluster",)  # the fixture `slurm`

ROOT = Path(__file__).resolve().parent.parent
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, text.encode() + b"\n")
    os.close(fd)
    return path


# -- mask_url ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["p@ss", "p@ss:w0rd", "a:b", "a/b", "a/b@c:d", "@@@", "x@y/z:w@q", "pw"],
)
def test_mask_url_hides_the_whole_password(password: str) -> None:
    for url in (
        f"amqp://alice:{password}@broker.example:5672/lab",
        f"amqps://alice:{password}@broker.example/",
        f"amqp://alice@uni.example:{password}@broker.example:5672/lab",  # user with '@'
    ):
        text = f"cannot reach {url!r} (refused); retry"
        masked = mask_url(text)
        user = url.split("://")[1].rsplit(":" + password, 1)[0]
        assert masked == text.replace(f"{user}:{password}@", f"{user}:***@"), masked
        for part in {password, *password.replace("@", " ").replace(":", " ").split()}:
            if len(part) > 1:
                assert part not in masked.replace("broker.example", ""), (part, masked)
        assert "broker.example" in masked  # the host stays: it is what the user checks


def test_mask_url_leaves_urls_without_a_password() -> None:
    for text in (
        "amqp://broker.example:5672/lab",
        "amqp://alice@broker.example:5672/lab and mail bob@example.org",
        "see https://example.org/a:b and x@y",
    ):
        assert mask_url(text) == text


def test_errors_and_settings_show_no_part_of_such_a_password() -> None:
    from sif_magic.config import SifConfig

    cfg = SifConfig()
    cfg.amqp_url = "amqp://alice:s3c@r:et@broker:5672/lab"
    assert cfg.settings()["amqp_url"] == "amqp://alice:***@broker:5672/lab"
    err = ConfigError("broker amqp://alice:s3c@r:et@broker/lab refused")
    assert str(err) == "broker amqp://alice:***@broker/lab refused"


def test_a_worker_whose_password_holds_at_and_colon_shows_none_of_it(tmp_path, key_file) -> None:
    """A real login with such a password (refused by the real broker) and its message."""
    url = secret_file(tmp_path / "url", "amqp://guest:p@ss:w0rd@127.0.0.1:5672/%2F")
    r = sif("worker", "--amqp-url-file", str(url), "--key-file", str(key_file))
    assert r.returncode == 1
    assert "refused the login of user 'guest'" in r.stderr
    assert "w0rd" not in r.stderr and "p@ss" not in r.stderr and "ss:" not in r.stderr


# -- a broker URL on the command line -----------------------------------------------


def cmdline_seen_by_nobody(pid: int) -> str:
    res = subprocess.run(
        [*as_nobody(), "cat", f"/proc/{pid}/cmdline"], capture_output=True, timeout=10
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.replace(b"\0", b" ").decode()


def test_hello_warns_that_its_url_argument_shows_the_password() -> None:
    r = sif("hello", "--backend", "local", "-n", "2", "--amqp-url", "amqp://u:s3cret@h/v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sif-magic hello: warning: the password of --amqp-url" in r.stderr
    assert "--amqp-url-file" in r.stderr and "s3cret" not in r.stderr + r.stdout
    r = sif("hello", "--backend", "local", "-n", "2", "--amqp-url", "amqp://h/v")
    assert r.returncode == 0 and "warning" not in r.stderr  # no password, no warning


def test_hello_reads_the_url_from_a_file(workers, broker_url, runtime, tmp_path) -> None:
    workers.start(runtime, processes=1)
    url = secret_file(tmp_path / "url", broker_url)
    r = sif(
        "hello",
        *("--backend", "rabbitmq", "--amqp-url-file", str(url), "--runtime", runtime, "-n", "3"),
        env={"SIF_MAGIC_AMQP_URL": "amqp://guest:wrong@127.0.0.1:5672/%2F"},  # the file wins
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: 3 results in order" in r.stdout and "warning" not in r.stderr


def test_logs_url_argument_is_read_by_another_user_and_warned_about(
    broker_url, key_file, tmp_path
) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "sif_magic", "logs", "--seconds", "20", "--follow"]
    url = secret_file(tmp_path / "url", broker_url)
    password = broker_url.split(":")[2].split("@")[0]
    for how, extra in (
        ("argv", ["--amqp-url", broker_url]),
        ("file", ["--amqp-url-file", str(url)]),
    ):
        proc = subprocess.Popen(
            [*argv, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        err = ""
        try:
            assert proc.stderr is not None
            while "following every job" not in err:  # it connected to the broker
                line = proc.stderr.readline()
                assert line, f"logs ended before it connected: {err}"
                err += line
            seen = cmdline_seen_by_nobody(proc.pid)
            assert "sif_magic logs" in seen
        finally:
            proc.terminate()
            err += proc.communicate(timeout=30)[1]
        if how == "argv":  # the attack: another user reads the password; we said so
            assert f"guest:{password}@" in seen
            assert "sif-magic logs: warning: the password of --amqp-url" in err
        else:
            assert password not in seen.replace("sif_magic", "") and "warning" not in err


def test_worker_warns_too(key_file) -> None:
    r = sif("worker", "--amqp-url", "amqp://guest:nope@127.0.0.1:5672/%2F")
    assert r.returncode == 1
    assert "sif-magic worker: warning: the password of --amqp-url" in r.stderr


# -- secret copies go when their worker or job ends ---------------------------------
#
# Two kinds of copy: the env file (600) of a container worker here, and the copy of
# the broker URL that `slurm submit` (or `%sif_workers slurm`) writes next to the
# sbatch script when it is handed the URL itself. Each path that ends a worker or a
# job must remove its copy.


def stand_in_worker(path: Path, *, stays: bool) -> Path:
    """The worker's Python on a simulated node: reads the URL from the file it was
    given (``--container none``), then exits at once, or stays until SIGTERM."""
    path.write_text(
        "#!/bin/sh\n"
        'cat "$SIF_MAGIC_AMQP_URL_FILE" > "$REC.url"\n'  # as the worker reads it
        + ("exec sleep 600\n" if stays else "exit 0\n")
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_slurm(tmp_path: Path, sif_home: Path, monkeypatch) -> Path:
    """sbatch (records the script, answers job 4242), scancel and squeue (answer with
    $SQUEUE_STATE), srun (runs its command here): the jobs are run by the test."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\nfor a in "$@"; do s="$a"; done\necho "$s" > {tmp_path}/sbatch.script\n'
        "echo 4242\n",
        "scancel": f'#!/bin/sh\necho "$@" >> {tmp_path}/scancel.log\n',
        "squeue": '#!/bin/sh\n[ -z "$SQUEUE_STATE" ] || '
        'echo "4242|$SQUEUE_STATE|None|1|node1|0:05|sif-magic-rt"\n',
        "srun": '#!/bin/bash\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("SQUEUE_STATE", raising=False)
    return tmp_path


def submit_with_url(tmp_path: Path, *, stays: bool) -> tuple[Path, Path]:
    """``submit`` handed the URL itself (as ``%sif_workers slurm`` does): (the job's
    sbatch script, its copy of the URL)."""
    from sif_magic.launch import slurm as sl

    python = stand_in_worker(tmp_path / "python", stays=stays)
    job = sl.submit(sl.SlurmSpec(runtime="rt", container="none", python=str(python)), amqp_url=URL)
    copy = Path(job.directory) / "amqp_url"
    assert copy.read_text().strip() == URL and (copy.stat().st_mode & 0o777) == 0o600
    assert Path(job.script).read_text().count(str(copy)) == 1  # the script names the copy
    return Path(job.script), copy


def run_sbatch_script(tmp_path: Path, script: Path) -> subprocess.Popen:
    env = dict(os.environ, SLURM_JOB_ID="4242", SLURM_JOB_NUM_NODES="1", REC=str(tmp_path / "rec"))
    return subprocess.Popen(["bash", str(script)], env=env, start_new_session=True)


def test_the_job_removes_its_url_copy_when_it_ends(fake_slurm: Path) -> None:
    script, copy = submit_with_url(fake_slurm, stays=False)
    assert run_sbatch_script(fake_slurm, script).wait(timeout=60) == 0
    assert (fake_slurm / "rec.url").read_text().strip() == URL  # the worker had it
    assert not copy.exists()


def test_the_job_removes_its_url_copy_when_scancel_stops_it(fake_slurm: Path) -> None:

    script, copy = submit_with_url(fake_slurm, stays=True)
    job = run_sbatch_script(fake_slurm, script)
    deadline = time.monotonic() + 30
    while not (fake_slurm / "rec.url").exists():  # the worker has started
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGTERM)  # what scancel does: SIGTERM to every process
    assert job.wait(timeout=30) == 143
    assert not copy.exists()


def test_slurm_cancel_removes_the_url_copy(fake_slurm: Path) -> None:
    from test_slurm import cli

    _, copy = submit_with_url(fake_slurm, stays=True)
    assert cli("slurm", "cancel", "4242") == 0
    assert (fake_slurm / "scancel.log").read_text().split() == ["4242"]
    assert not copy.exists()


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED", "TIMEOUT", ""])
def test_a_finished_job_loses_its_url_copy_at_the_next_status(
    fake_slurm: Path, monkeypatch, state: str
) -> None:
    """A job killed before its script could remove the copy (SIGKILL, a lost node)."""
    from sif_magic.launch import slurm as sl

    _, copy = submit_with_url(fake_slurm, stays=True)
    monkeypatch.setenv("SQUEUE_STATE", "RUNNING")
    assert [s.state for s in sl.status()] == ["RUNNING"] and copy.exists()
    monkeypatch.setenv("SQUEUE_STATE", state)  # "": squeue forgot it
    assert [s.state for s in sl.status(["4242"])] == [state or "GONE"]
    assert not copy.exists()


def test_a_worker_env_file_goes_when_it_stops_or_dies(tmp_path, sif_home, monkeypatch, url_file):

    from test_launch import singularity_workers

    from sif_magic import launch

    _, _, recs = singularity_workers(tmp_path, monkeypatch, url_file, instances=2)
    try:
        for r in recs:
            assert URL in Path(r.env_file).read_text()
        stopped, dies = recs
        assert launch.stop_workers([stopped.id], timeout=5) == [(stopped.id, "terminated")]
        assert not Path(stopped.env_file).exists()  # `workers stop`
        os.kill(dies.pid, signal.SIGKILL)  # a worker that ends by itself
        deadline = time.monotonic() + 10
        while dies.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert Path(dies.env_file).exists()
        assert launch.list_workers()[0][1] == "exited"  # `workers list` (and the table)
        assert not Path(dies.env_file).exists()
    finally:
        launch.stop_workers(timeout=2)
    assert list((sif_home / "run").iterdir()) == []


@pytest.mark.slurm
def test_on_a_real_slurm_each_end_of_a_job_removes_its_url_copy(slurm, sif_home, monkeypatch):
    """Real sbatch/scancel/squeue, real workers (--container none) on the real broker."""
    from queues import consumers, delete_task_queues, task_queue
    from test_slurm import _need_broker, job_processes, wait_until

    from sif_magic.launch import slurm as sl

    _need_broker()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs import this checkout
    runtime = f"secrets-{os.urandom(3).hex()}"
    queue = task_queue(runtime)

    def job_with_a_copy() -> tuple[str, Path]:
        spec = sl.SlurmSpec(runtime=runtime, container="none", cpus_per_task=1, processes=1)
        job = sl.submit(spec, amqp_url=URL)
        copy = Path(job.directory) / "amqp_url"
        assert copy.exists()
        wait_until(lambda: consumers(queue) == 1, 60, "the worker to join (it read the URL)")
        return job.job_id, copy

    try:
        job, copy = job_with_a_copy()  # SLURM's own scancel: the script's trap removes it
        slurm.run("scancel", job)
        wait_until(lambda: not copy.exists(), 30, "the job's trap to remove the copy")
        wait_until(lambda: not slurm.jobs(), 30, "squeue to empty")

        job, copy = job_with_a_copy()  # `sif-magic slurm cancel`
        sl.cancel([job])
        assert not copy.exists()
        wait_until(lambda: not slurm.jobs(), 30, "squeue to empty")

        job, copy = job_with_a_copy()  # the batch shell SIGKILLed: no trap runs
        (shell,) = [p for p, (cmd, _) in job_processes({job}).items() if "slurm_script" in cmd]
        os.kill(shell, signal.SIGKILL)
        wait_until(lambda: not slurm.jobs(), 30, "the killed job to end")
        assert copy.exists()
        assert sl.status([job])[0].state in sl.ENDED  # the next status removes it
        assert not copy.exists()
    finally:
        slurm.run("scancel", "--user", str(os.getuid()), check=False)
        delete_task_queues(runtime)
