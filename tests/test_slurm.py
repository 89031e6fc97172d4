"""SLURM: the sbatch script, and workers submitted through a real one-node cluster.

What is real here: SLURM 22.05 from Debian (slurmctld, slurmd, munge, sbatch,
srun, squeue, scancel; see slurm_cluster.py), the machine's RabbitMQ, and the
worker (``python -m sif_magic worker``) run with ``--container none``.
What is not: Singularity. In the container test a fake ``singularity`` on PATH
(a recorder, not Singularity) logs how the job called it, then runs the same
worker without a container.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sif_magic._cli_cluster import register
from sif_magic.errors import ConfigError
from sif_magic.launch import slurm as sl

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

pytest_plugins = ("slurm_cluster",)  # the fixtures `slurm_cluster` and `slurm`

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("SIF_MAGIC_HOME", str(h))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs import this checkout's sif_magic
    for var in ("SIF_MAGIC_KEY", "SIF_MAGIC_AMQP_URL", "SIF_MAGIC_AMQP_URL_FILE",
                "SIF_MAGIC_RUNTIME", "SIF_MAGIC_KEY_FILE"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture
def url_file(tmp_path: Path) -> Path:
    path = tmp_path / "amqp_url"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, URL.encode() + b"\n")
    os.close(fd)
    return path


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sif-magic")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def sbatch_options(script: str) -> list[str]:
    return [ln.split(None, 1)[1] for ln in script.splitlines() if ln.startswith("#SBATCH ")]


# -- the script (no cluster needed) ----------------------------------------------


def test_script_for_a_site(home: Path) -> None:
    spec = sl.SlurmSpec(
        runtime="ml.sif", image="/shared/images/ml.sif", nodes=4, cpus_per_task=8,
        time="02:00:00", partition="gpu", account="proj42", gres="gpu:1", mem="32G",
        binds=["/scratch", "/data:/data:ro"], nv=True, setup=["module load apptainer/1.2"],
        sbatch_options=["--constraint=a100"], amqp_url_file="/home/u/.sif_magic/amqp_url",
        key_file="/home/u/.sif_magic/key",
    )  # fmt: skip
    script = sl.render_script(spec)
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_options(script) == [
        "--job-name=sif-magic-ml.sif", "--nodes=4", "--ntasks-per-node=1", "--cpus-per-task=8",
        "--time=02:00:00", "--partition=gpu", "--account=proj42", "--mem=32G", "--gres=gpu:1",
        f"--output={home}/slurm/%x-%j.out", "--constraint=a100",
    ]  # fmt: skip
    assert "module load apptainer/1.2" in script
    assert "export SIF_MAGIC_AMQP_URL_FILE=/home/u/.sif_magic/amqp_url" in script
    assert 'stage="$SLURM_TMPDIR/sif_magic"' in script  # node-local staging
    assert 'cp "$SIF_MAGIC_IMAGE" "$image"' in script
    assert '"$tool" run --bind /scratch --bind /data:/data:ro --nv "$image"' in script
    assert "--ntasks-per-node=1" in script.split("srun", 1)[1]
    res = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_script_refuses_values_that_would_break_it() -> None:
    for bad in ({"partition": "gpu; rm -rf ~"}, {"time": "1 day"}, {"account": "a'b"},
                {"sbatch_options": ["--x=$(id)"]}):  # fmt: skip
        with pytest.raises(ConfigError, match="not allowed"):
            sl.render_script(sl.SlurmSpec(runtime="r", container="none", **bad))
    with pytest.raises(ConfigError, match="--image NAME.sif is needed"):
        sl.render_script(sl.SlurmSpec(runtime="r"))


def _run_script_without_slurm(tmp_path: Path, script: str, env: dict[str, str]):
    """Run an sbatch script with bash, a fake ``srun`` (it runs its command here) and a
    fake ``singularity`` (a recorder of argv, env and the staged image's presence)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(
        '#!/bin/bash\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n'
    )
    (bin_dir / "singularity").write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$@" > "$REC.argv"\n'
        'env | grep -E "^(SIF_MAGIC_|SLURM_TMPDIR)" | sort > "$REC.env"\n'
        'for a in "$@"; do last="$a"; done; test -f "$last" && echo staged > "$REC.staged"\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "REC": str(tmp_path / "rec"),
            "SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "1"}  # fmt: skip
    return subprocess.run(["bash", str(path)], env={**base, **env}, capture_output=True, text=True)


def test_script_stages_the_image_and_passes_secrets_by_environment(tmp_path, home, url_file):
    image = tmp_path / "ml.sif"
    image.write_bytes(b"SIF stand-in")
    key = tmp_path / "key"
    key.write_text("k3y\n")
    key.chmod(0o600)
    stage = tmp_path / "stage"
    spec = sl.SlurmSpec(runtime="ml.sif", image=str(image), container="singularity",
                        stage_dir=str(stage), amqp_url_file=str(url_file),
                        key_file=str(key))  # fmt: skip
    script = sl.render_script(spec)
    res = _run_script_without_slurm(tmp_path, script, {})  # no SLURM_TMPDIR: stage_dir
    assert res.returncode == 0, res.stderr
    staged = f"{stage}/sif_magic-{_user()}-77/ml.sif"
    assert Path(f"{tmp_path}/rec.argv").read_text().split() == ["run", staged]
    assert Path(f"{tmp_path}/rec.staged").exists()
    env = dict(ln.split("=", 1) for ln in Path(f"{tmp_path}/rec.env").read_text().splitlines())
    assert env == {
        "SIF_MAGIC_AMQP_URL": URL,  # read from the 600 file, passed by the environment
        "SIF_MAGIC_KEY": "k3y",
        "SIF_MAGIC_RUNTIME": "ml.sif",
        "SIF_MAGIC_WORKER_ID": f"slurm-77-{os.uname().nodename.split('.')[0]}",
        "SIF_MAGIC_CONTAINER": f"singularity run {staged}",
        "SIF_MAGIC_IMAGE": str(image),
        "SIF_MAGIC_STAGE_DIR": str(stage),
    }
    assert not Path(staged).parent.exists()  # removed when the worker exits
    assert "guest" not in script

    res = _run_script_without_slurm(tmp_path, script, {"SLURM_TMPDIR": str(tmp_path / "jobtmp")})
    assert Path(f"{tmp_path}/rec.argv").read_text().split()[-1] == f"{tmp_path}/jobtmp/sif_magic/ml.sif"  # fmt: skip

    url_file.chmod(0o644)
    res = _run_script_without_slurm(tmp_path, script, {})
    assert res.returncode == 2 and "can be read by others: chmod 600 it" in res.stderr
    spec.amqp_url_file = ""
    res = _run_script_without_slurm(tmp_path, sl.render_script(spec), {})
    assert res.returncode == 2 and "no broker URL" in res.stderr


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def test_cli_dry_run_prints_the_script(home, capsys) -> None:
    assert cli("slurm", "submit", "--container", "none", "--nodes", "2", "--dry-run",
               "--runtime", "rt1", "--setup", "module load python") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in out and "module load python" in out
    assert '"$SIF_MAGIC_PYTHON" -m sif_magic worker' in out
    assert "#SBATCH --export=ALL" in out  # the URL will come from the environment


def test_submit_without_sbatch_says_where_to_run(home, url_file, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="SLURM login node"):
        sl.submit(sl.SlurmSpec(runtime="r", container="none", amqp_url_file=str(url_file)))


def test_main_cli_has_the_cluster_commands(home) -> None:
    if not (ROOT / "sif_magic" / "cli.py").exists():
        pytest.skip("the lead's sif_magic/cli.py is not there yet")
    res = subprocess.run([sys.executable, "-m", "sif_magic", "slurm", "submit", "--dry-run",
                          "--container", "none", "--runtime", "abc"], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "#SBATCH --job-name=sif-magic-abc" in res.stdout


# -- the real cluster --------------------------------------------------------------


def consumers(queue: str) -> int | None:
    import pika
    import pika.exceptions

    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        try:
            return conn.channel().queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return None
    finally:
        conn.close()


def delete_queue(queue: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        conn.channel().queue_delete(queue)
    finally:
        conn.close()


def job_processes(job_ids: set[str]) -> dict[int, tuple[str, dict[str, str]]]:
    """pid -> (command line, environment) of every process that belongs to these jobs."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "environ").read_bytes()
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        env = dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)
        if env.get("SLURM_JOB_ID") in job_ids:
            found[int(entry.name)] = (cmd, env)
    return found


def wait_until(cond, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _need_broker() -> None:
    from rabbit import shared_broker_url

    shared_broker_url()


@pytest.mark.slurm
def test_workers_join_through_sbatch_run_a_map_and_leave(slurm: SlurmCluster, home, url_file,
                                                         capsys) -> None:  # fmt: skip
    _need_broker()
    runtime = f"slurm-{secrets.token_hex(4)}"
    queue = f"sif_magic.tasks.{runtime}"
    spec = dict(runtime=runtime, container="none", cpus_per_task=1, processes=1,
                amqp_url_file=str(url_file))  # fmt: skip
    try:
        t0 = time.monotonic()
        jobs = [sl.submit(sl.SlurmSpec(**spec)) for _ in range(2)]  # one node: 2 jobs, 2 CPUs
        ids = {j.job_id for j in jobs}
        for j in jobs:
            assert "guest" not in Path(j.script).read_text()
            assert sl.wait_for(j.job_id, timeout=30).state == "RUNNING"
        t_running = time.monotonic() - t0
        wait_until(lambda: consumers(queue) == 2, 60, f"2 consumers on {queue}")
        t_joined = time.monotonic() - t0
        with capsys.disabled():
            print(f"\n[slurm] sbatch -> running {t_running:.1f} s, -> 2 workers joined "
                  f"{t_joined:.1f} s")  # fmt: skip

        procs = job_processes(ids)
        workers = {p: env for p, (cmd, env) in procs.items() if "-m sif_magic worker" in cmd}
        assert len(workers) == 2, procs
        for env in workers.values():
            assert env["SLURM_TMPDIR"] == f"{slurm.tmp_base}/job_{env['SLURM_JOB_ID']}"
            assert env["SIF_MAGIC_CONTAINER"] == "none"
            assert env["SIF_MAGIC_WORKER_ID"].startswith(f"slurm-{env['SLURM_JOB_ID']}-")
        assert not [c for c, _ in procs.values() if "guest" in c]  # no password in any argv

        assert cli("slurm", "status") == 0
        out = capsys.readouterr().out
        assert sum("running on" in ln for ln in out.splitlines()) == 2

        if (ROOT / "sif_magic" / "backends" / "rabbitmq.py").exists():
            from sif_magic import Executor

            def where(x: int) -> tuple[int, str]:  # nested: pickled by value
                import os

                return x * x, os.environ.get("SLURM_JOB_ID", "")

            ex = Executor(backend="rabbitmq", amqp_url=URL, runtime=runtime,
                          key_file=str(home / "key"))  # fmt: skip
            try:
                job = ex.map_job(where, range(20), chunksize=1)
                results = job.results(timeout=60)
            finally:
                ex.shutdown()
            assert [r[0] for r in results] == [x * x for x in range(20)]
            assert {r[1] for r in results} <= ids  # every call ran inside a SLURM job
            ys = _sifmap_in_ipython(runtime, home / "key")
            assert [y[0] for y in ys] == list(range(1, 11)) and {y[1] for y in ys} <= ids

        all_pids = list(job_processes(ids))
        assert sl.cancel(sorted(ids)) == sorted(ids)
        wait_until(lambda: not slurm.jobs(), 30, "squeue to empty after scancel")
        wait_until(lambda: not any(_alive(p) for p in all_pids), 15, "job processes to exit")
        assert job_processes(ids) == {}
        wait_until(lambda: consumers(queue) == 0, 15, "the workers to leave the queue")
        assert [s.state for s in sl.status(sorted(ids))] in (
            ["CANCELLED", "CANCELLED"], ["GONE", "GONE"], ["CANCELLED", "GONE"],
            ["GONE", "CANCELLED"])  # fmt: skip
    finally:
        subprocess.run(["scancel", *[j.job_id for j in locals().get("jobs", [])]],
                       env=slurm.env, capture_output=True)  # fmt: skip
        delete_queue(queue)


SIFMAP = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "sif_magic")
shell.run_line_magic("sif_config", sys.argv[1])
shell.user_ns["xs"] = list(range(10))
cell = "def work(x):\\n    import os\\n    return x + 1, os.environ.get('SLURM_JOB_ID', '')\\n"
shell.run_cell_magic("sifmap", "xs -o ys", cell)
print(json.dumps(shell.user_ns["ys"]))
"""


def _sifmap_in_ipython(runtime: str, key: Path) -> list:
    """A %%sifmap cell in a real IPython shell (its own process: the config is global)."""
    settings = f"backend=rabbitmq amqp_url={URL} runtime={runtime} key_file={key} widgets=0"
    res = subprocess.run([sys.executable, "-c", SIFMAP, settings], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slurm
def test_status_shows_a_pending_job_and_its_reason(slurm: SlurmCluster, home, url_file,
                                                   capsys) -> None:  # fmt: skip
    blocker = slurm.run("sbatch", "--parsable", f"--cpus-per-task={slurm.cpus}",
                        f"--output={home}/blocker.out", "--wrap", "sleep 300").stdout.strip()  # fmt: skip
    try:
        sl.wait_for(blocker, timeout=30)
        job = sl.submit(sl.SlurmSpec(runtime=f"pend-{secrets.token_hex(3)}", container="none",
                                     cpus_per_task=1, amqp_url_file=str(url_file)))  # fmt: skip
        st = wait_until(lambda: (s := sl.status([job.job_id])[0]).reason not in ("", "None")
                        and s, 15, "a pending reason")  # fmt: skip
        assert st.state == "PENDING" and st.reason in ("Resources", "Priority"), st
        assert cli("slurm", "status", job.job_id) == 0
        assert f"pending ({st.reason})" in capsys.readouterr().out
        slurm.run("scancel", blocker)
        assert sl.wait_for(job.job_id, timeout=30).state == "RUNNING"
        assert cli("slurm", "cancel", job.job_id) == 0
        wait_until(lambda: not slurm.jobs(), 30, "squeue to empty")
    finally:
        slurm.run("scancel", blocker, check=False)


@pytest.mark.slurm
def test_container_route_through_sbatch_with_a_recorder(slurm: SlurmCluster, home, url_file,
                                                        tmp_path, monkeypatch) -> None:  # fmt: skip
    """The image is staged to $SLURM_TMPDIR and handed to `singularity run`: here a
    recorder, not Singularity, which logs that call and then runs the worker itself."""
    _need_broker()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rec = tmp_path / "singularity-calls"
    fake = bin_dir / "singularity"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{rec}.$SLURM_JOB_ID.argv"\n'
        f'env | grep -E "^(SIF_MAGIC_|SLURM_TMPDIR=)" | sort > "{rec}.$SLURM_JOB_ID.env"\n'
        'for a in "$@"; do last="$a"; done\n'
        f'cmp -s "$last" "$SIF_MAGIC_IMAGE" && echo same > "{rec}.$SLURM_JOB_ID.staged"\n'
        f'exec "{sys.executable}" -m sif_magic worker\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    image = tmp_path / "ml.sif"
    image.write_bytes(os.urandom(4096))
    runtime = f"sifrec-{secrets.token_hex(3)}"
    queue = f"sif_magic.tasks.{runtime}"
    try:
        job = sl.submit(sl.SlurmSpec(runtime=runtime, image=str(image), container="singularity",
                                     binds=["/tmp:/scratch"], cpus_per_task=1,
                                     amqp_url_file=str(url_file)))  # fmt: skip
        wait_until(lambda: consumers(queue) == 1, 60, "the worker behind the recorder to join")
        staged = f"{slurm.tmp_base}/job_{job.job_id}/sif_magic/ml.sif"
        argv = Path(f"{rec}.{job.job_id}.argv").read_text().split()
        assert argv == ["run", "--bind", "/tmp:/scratch", staged]
        assert Path(f"{rec}.{job.job_id}.staged").read_text().strip() == "same"
        env = dict(ln.split("=", 1) for ln in Path(f"{rec}.{job.job_id}.env").read_text().split("\n") if ln)  # fmt: skip
        assert env["SIF_MAGIC_AMQP_URL"] == URL and "SIF_MAGIC_AMQP_URL_FILE" not in env
        assert env["SIF_MAGIC_CONTAINER"] == f"singularity run {staged}"
        assert stat.S_IMODE(os.stat(url_file).st_mode) == 0o600
        pids = list(job_processes({job.job_id}))
        sl.cancel([job.job_id])
        wait_until(lambda: not slurm.jobs(), 30, "squeue to empty")
        wait_until(lambda: not any(_alive(p) for p in pids), 15, "job processes to exit")
        assert not Path(staged).exists()
        wait_until(lambda: consumers(queue) == 0, 15, "the worker to leave")
    finally:
        delete_queue(queue)


def test_status_json_round_trip(home, monkeypatch, tmp_path, capsys) -> None:
    """``slurm status`` parses squeue's output (a recorder stands in for squeue here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(
        "#!/bin/sh\necho '12|PENDING|Priority|2||0:00|sif-magic-ml.sif'\n"
        "echo '13|RUNNING|None|1|node7|1:02|sif-magic-ml.sif'\n"
    )
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    rows = sl.status(["12", "13", "14"])
    assert [r.describe() for r in rows] == [
        "pending (Priority)", "running on node7 for 1:02", "finished (no longer known to squeue)"]  # fmt: skip
    assert cli("slurm", "status", "12", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["description"] == "pending (Priority)"
