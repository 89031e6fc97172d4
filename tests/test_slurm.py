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
import re
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from procs import wait_until
from queues import consumers, delete_queue, task_queue
from sif import add_squashfs_partition

from sif_magic.cli import register
from sif_magic.errors import ConfigError
from sif_magic.launch import slurm as sl

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

pytest_plugins = ("slurm_cluster",)  # the fixtures `slurm_cluster` and `slurm`

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(sif_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs import this checkout's sif_magic
    return sif_home


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
        runtime="ml.sif",
        image="/shared/images/ml.sif",
        nodes=4,
        cpus_per_task=8,
        time="02:00:00",
        partition="gpu",
        account="proj42",
        gres="gpu:1",
        mem="32G",
        binds=["/scratch", "/data:/data:ro"],
        nv=True,
        setup=["module load apptainer/1.2"],
        sbatch_options=["--constraint=a100"],
        amqp_url_file="/home/u/.sif_magic/amqp_url",
        key_file="/home/u/.sif_magic/key",
    )
    script = sl.render_script(spec)
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_options(script) == [
        "--job-name=sif-magic-ml.sif",
        "--nodes=4",
        "--ntasks-per-node=1",
        "--cpus-per-task=8",
        "--time=02:00:00",
        "--partition=gpu",
        "--account=proj42",
        "--mem=32G",
        "--gres=gpu:1",
        f"--output={home}/slurm/%x-%j.out",
        "--constraint=a100",
    ]
    assert "module load apptainer/1.2" in script
    assert "export SIF_MAGIC_AMQP_URL_FILE=/home/u/.sif_magic/amqp_url" in script
    assert 'base="${SLURM_TMPDIR:-$SIF_MAGIC_STAGE_DIR}"' in script  # node-local staging
    assert 'stage="$(mktemp -d "$base/sif_magic-$(id -un)-$SLURM_JOB_ID.XXXXXXXX")"' in script
    assert 'want="$(tee "$image" < "$SIF_MAGIC_IMAGE" | sha256sum)"' in script
    assert '"$tool" run --bind /scratch --bind /data:/data:ro --nv "$image"' in script
    assert "--ntasks-per-node=1" in script.split("srun", 1)[1]
    res = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_script_refuses_values_that_would_break_it() -> None:
    for bad in (
        {"partition": "gpu; rm -rf ~"},
        {"time": "1 day"},
        {"account": "a'b"},
        {"sbatch_options": ["--x=$(id)"]},
    ):
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
    base = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "REC": str(tmp_path / "rec"),
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NUM_NODES": "1",
    }
    return subprocess.run(["bash", str(path)], env={**base, **env}, capture_output=True, text=True)


def test_script_stages_the_image_and_passes_secrets_by_environment(tmp_path, home, url_file):
    image = tmp_path / "ml.sif"
    image.write_bytes(b"SIF stand-in")
    key = tmp_path / "key"
    key.write_text("k3y\n")
    key.chmod(0o600)
    stage = tmp_path / "stage"
    spec = sl.SlurmSpec(
        runtime="ml.sif",
        image=str(image),
        container="singularity",
        stage_dir=str(stage),
        amqp_url_file=str(url_file),
        key_file=str(key),
    )
    script = sl.render_script(spec)
    # no SLURM_TMPDIR: stage_dir; a URL in the submitting environment must not win
    res = _run_script_without_slurm(tmp_path, script, {"SIF_MAGIC_AMQP_URL": "amqp://x:y@z/"})
    assert res.returncode == 0, res.stderr
    argv = Path(f"{tmp_path}/rec.argv").read_text().split()
    staged = argv[-1]  # in a fresh folder of mode 700 (tests/test_security_staging.py)
    assert re.fullmatch(rf"{stage}/sif_magic-{_user()}-77\.\w{{8}}/ml\.sif", staged)
    assert argv == ["run", staged]
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
        "SIF_MAGIC_PROCESSES": "1",  # what SLURM gave the task (no --cpus-per-task: 1)
        "SIF_MAGIC_IDLE_TIMEOUT": "300",  # no call for 5 min: the worker leaves, the job ends
    }
    assert not Path(staged).parent.exists()  # removed when the worker exits
    assert "guest" not in script

    res = _run_script_without_slurm(tmp_path, script, {"SLURM_TMPDIR": str(tmp_path / "jobtmp")})
    staged = Path(f"{tmp_path}/rec.argv").read_text().split()[-1]
    assert re.fullmatch(rf"{tmp_path}/jobtmp/sif_magic-{_user()}-77\.\w{{8}}/ml\.sif", staged)

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
    assert (
        cli(
            "slurm",
            "submit",
            "--container",
            "none",
            "--nodes",
            "2",
            "--dry-run",
            "--runtime",
            "rt1",
            "--setup",
            "module load python",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in out and "module load python" in out
    assert '"$SIF_MAGIC_PYTHON" -m sif_magic worker' in out
    assert "#SBATCH --export=ALL" in out  # the URL will come from the environment


def test_submit_options_are_reusable_by_a_magic(home) -> None:
    from sif_magic.cli.slurm import add_slurm_submit_arguments, slurm_spec_from_args

    parser = argparse.ArgumentParser(prog="%sif_workers slurm")
    add_slurm_submit_arguments(parser)
    args = parser.parse_args(
        [
            "--image",
            "/x/ml.sif",
            "--nodes",
            "3",
            "--time",
            "1:00:00",
            "--setup",
            "module load apptainer",
            "--bind",
            "/data",
        ]
    )
    spec = slurm_spec_from_args(args)
    assert (spec.runtime, spec.nodes, spec.time, spec.binds) == ("ml.sif", 3, "1:00:00", ["/data"])
    assert spec.setup == ["module load apptainer"] and spec.container == "auto"


def test_submit_without_sbatch_says_where_to_run(home, url_file, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="SLURM login node"):
        sl.submit(sl.SlurmSpec(runtime="r", container="none", amqp_url_file=str(url_file)))


def test_main_cli_has_the_cluster_commands(home) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sif_magic",
            "slurm",
            "submit",
            "--dry-run",
            "--container",
            "none",
            "--runtime",
            "abc",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "#SBATCH --job-name=sif-magic-abc" in res.stdout


# -- the real cluster --------------------------------------------------------------


def job_processes(job_ids: set[str]) -> dict[int, tuple[str, dict[str, str]]]:
    """pid -> (command line, environment) of every process that belongs to these jobs
    (of this test's SLURM: another test SLURM on the machine numbers its jobs alike)."""
    ours = os.environ.get("SLURM_CONF")
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
        if env.get("SLURM_JOB_ID") in job_ids and env.get("SLURM_CONF", ours) == ours:
            found[int(entry.name)] = (cmd, env)
    return found


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
def test_workers_join_through_sbatch_run_a_map_and_leave(
    slurm: SlurmCluster, home, url_file, capsys
) -> None:
    _need_broker()
    runtime = f"slurm-{secrets.token_hex(4)}"
    queue = task_queue(runtime)
    spec = dict(
        runtime=runtime, container="none", cpus_per_task=1, processes=1, amqp_url_file=str(url_file)
    )
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
            print(
                f"\n[slurm] sbatch -> running {t_running:.1f} s, -> 2 workers joined "
                f"{t_joined:.1f} s"
            )

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

        from sif_magic import Executor

        def where(x: int) -> tuple[int, str]:  # nested: pickled by value
            import os

            return x * x, os.environ.get("SLURM_JOB_ID", "")

        ex = Executor(backend="rabbitmq", amqp_url=URL, runtime=runtime, key_file=str(home / "key"))
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
            ["CANCELLED", "CANCELLED"],
            ["GONE", "GONE"],
            ["CANCELLED", "GONE"],
            ["GONE", "CANCELLED"],
        )
    finally:
        subprocess.run(
            ["scancel", *[j.job_id for j in locals().get("jobs", [])]],
            env=slurm.env,
            capture_output=True,
        )
        delete_queue(queue)


@pytest.mark.slurm
def test_a_worker_in_a_slurm_job_knows_when_its_job_ends(
    slurm: SlurmCluster, home, url_file, monkeypatch
) -> None:
    """Issue 12, part 3: the job script reads the job's end time from SLURM (outside
    the container, whose image has no squeue) and the worker drains before it."""
    _need_broker()
    runtime = f"slurm-{secrets.token_hex(4)}"
    queue = task_queue(runtime)
    spec = sl.SlurmSpec(
        runtime=runtime, container="none", cpus_per_task=1, processes=1,
        amqp_url_file=str(url_file), time="00:10:00",
    )  # fmt: skip
    job = None
    try:
        t0 = time.time()
        job = sl.submit(spec)
        assert sl.wait_for(job.job_id, timeout=30).state == "RUNNING"
        wait_until(lambda: consumers(queue) == 1, 60, f"the worker on {queue}")
        procs = job_processes({job.job_id})
        (env,) = [env for cmd, env in procs.values() if "-m sif_magic worker" in cmd]
        end = int(env.get("SLURM_JOB_END_TIME") or env["SIF_MAGIC_JOB_END"])
        assert t0 + 9 * 60 <= end <= time.time() + 10 * 60 + 5, (t0, end)
        # the worker's own reading, and squeue's when the script gave none (same end)
        from sif_magic.worker.walltime import job_end

        for var in ("SLURM_JOB_END_TIME", "SIF_MAGIC_JOB_END"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("SLURM_JOB_ID", job.job_id)
        assert job_end(0, t0) == (float(end), f"SLURM job {job.job_id}")
        clock = time.strftime("%H:%M:%S", time.localtime(end))
        line = f"must be gone by {clock} (SLURM job {job.job_id})"
        wait_until(
            lambda: any(line in p.read_text() for p in Path(job.directory).glob("slurm-*.out")),
            30,
            "the worker's line about its end",
        )
    finally:
        if job is not None:
            subprocess.run(["scancel", job.job_id], env=slurm.env, capture_output=True)
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
    res = subprocess.run(
        [sys.executable, "-c", SIFMAP, settings],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slurm
def test_status_shows_a_pending_job_and_its_reason(
    slurm: SlurmCluster, home, url_file, capsys
) -> None:
    _need_broker()
    runtime = f"pend-{secrets.token_hex(3)}"
    blocker = slurm.run(
        "sbatch",
        "--parsable",
        f"--cpus-per-task={slurm.cpus}",
        f"--output={home}/blocker.out",
        "--wrap",
        "sleep 300",
    ).stdout.strip()
    try:
        sl.wait_for(blocker, timeout=30)
        job = sl.submit(
            sl.SlurmSpec(
                runtime=runtime,
                container="none",
                cpus_per_task=1,
                amqp_url_file=str(url_file),
            )
        )
        st = wait_until(
            lambda: (s := sl.status([job.job_id])[0]).reason not in ("", "None") and s,
            15,
            "a pending reason",
        )
        assert st.state == "PENDING" and st.reason in ("Resources", "Priority"), st
        assert cli("slurm", "status", job.job_id) == 0
        assert f"pending ({st.reason})" in capsys.readouterr().out
        slurm.run("scancel", blocker)
        assert sl.wait_for(job.job_id, timeout=30).state == "RUNNING"
        assert cli("slurm", "cancel", job.job_id) == 0
        wait_until(lambda: not slurm.jobs(), 30, "squeue to empty")
    finally:
        slurm.run("scancel", blocker, check=False)
        delete_queue(task_queue(runtime))


@pytest.mark.slurm
def test_container_route_through_sbatch_with_a_recorder(
    slurm: SlurmCluster, home, url_file, tmp_path, monkeypatch
) -> None:
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
    queue = task_queue(runtime)
    try:
        job = sl.submit(
            sl.SlurmSpec(
                runtime=runtime,
                image=str(image),
                container="singularity",
                binds=["/tmp:/scratch"],
                cpus_per_task=1,
                amqp_url_file=str(url_file),
            )
        )
        wait_until(lambda: consumers(queue) == 1, 60, "the worker behind the recorder to join")
        argv = Path(f"{rec}.{job.job_id}.argv").read_text().split()
        staged = argv[-1]
        folder = rf"{slurm.tmp_base}/job_{job.job_id}/sif_magic-\w+-{job.job_id}\.\w{{8}}"
        assert re.fullmatch(rf"{folder}/ml\.sif", staged), staged
        assert argv == ["run", "--bind", "/tmp:/scratch", staged]
        assert Path(f"{rec}.{job.job_id}.staged").read_text().strip() == "same"
        env = dict(
            ln.split("=", 1) for ln in Path(f"{rec}.{job.job_id}.env").read_text().split("\n") if ln
        )
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
        "echo '13|RUNNING|None|1|node7|1:02|sif-magic-ml.sif|13'\n"
        "echo '15_1|RUNNING|None|1|node8|0:09|sif-adapt-ml.sif|15'\n"
        "echo '15_2|PENDING|Priority|1||0:00|sif-adapt-ml.sif|15'\n"
    )
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    rows = sl.status(["12", "13", "14", "15"])
    assert [r.describe() for r in rows] == [
        "pending (Priority)",
        "running on node7 for 1:02",
        "finished (no longer known to squeue)",
        "running on node8 for 0:09",  # an array: as its liveliest element
    ]
    assert cli("slurm", "status", "12", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["description"] == "pending (Priority)"


# -- stretch: a real SIF file, run unprivileged through sbatch ---------------------------
#
# Not Singularity. The SIF is assembled by hand the way `singularity build` would lay it
# out (a Debian bookworm root from debootstrap, the worker in /opt/sif_magic/venv, our
# %runscript/%environment/labels under /.singularity.d, squashed, wrapped by siftool).
# A shim named `singularity` runs it: user + mount namespace (unshare), the squashfs
# partition mounted by squashfuse at its offset, entered with ch-run (charliecloud).

CACHE = Path(os.environ.get("SIF_MAGIC_TEST_CACHE", "/tmp/sif_magic-test-cache"))
SIF_TOOLS = ("debootstrap", "mksquashfs", "siftool", "squashfuse", "ch-run", "unshare")

SHIM = r"""#!/bin/sh
# Stands in for `singularity run [--bind SRC[:DST]]... [--nv] IMAGE`: NOT Singularity.
set -eu
[ "$1" = run ] || { echo "shim: only 'run' is supported" >&2; exit 64; }
shift
binds=""
while [ $# -gt 1 ]; do
    case "$1" in
        --bind) binds="$binds -b $2"; shift 2 ;;
        --nv) shift ;;
        *) break ;;
    esac
done
offset="$(siftool list "$1" | awk -F'|' '/Squashfs/ { split($4, a, "-"); print a[1] + 0 }')"
export SHIM_OFFSET="$offset" SHIM_IMAGE="$1" SHIM_BINDS="$binds" USER="$(id -un)"
exec unshare -U -r -m sh -c '
    mnt="$(mktemp -d)"
    squashfuse -f -o offset="$SHIM_OFFSET" "$SHIM_IMAGE" "$mnt" &
    fuse=$!
    i=0; until [ -e "$mnt/.singularity.d" ]; do i=$((i+1)); [ $i -lt 200 ] || exit 70; sleep 0.05; done
    ch-run $SHIM_BINDS "$mnt" -- /.singularity.d/runscript && rc=0 || rc=$?
    kill "$fuse" 2>/dev/null; wait "$fuse" 2>/dev/null || true
    rmdir "$mnt"
    exit "$rc"'
"""


def _sh(*argv: str, **kw) -> None:
    res = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{argv[0]} failed: {res.stderr[-2000:]}"


@pytest.fixture(scope="session")
def debian_sif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SIF holding a Debian root with this checkout's worker (see the note above)."""
    missing = [t for t in SIF_TOOLS if not shutil_which(t)]
    if missing or os.geteuid() != 0:
        pytest.skip(
            f"needs root and {', '.join(missing) or 'nothing else'}: apt-get install -y "
            "debootstrap squashfs-tools siftool squashfuse charliecloud-runtime"
        )
    from sif_magic import images

    base = CACHE / f"bookworm-python{images.kernel_versions()['python']}"
    if not (base / "usr" / "bin" / "python3").exists():  # ~1 min once, then cached
        CACHE.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv",
                "bookworm",
                str(base),
                "http://deb.debian.org/debian",
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            subprocess.run(["rm", "-rf", str(base)])
            pytest.skip(f"debootstrap failed (no network to deb.debian.org?): {res.stderr[-500:]}")
    work = tmp_path_factory.mktemp("sif")
    root = work / "root"
    _sh("cp", "-a", str(base), str(root))
    have = subprocess.run(
        ["chroot", str(root), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if have != images.kernel_versions()["python"]:
        pytest.skip(f"bookworm has Python {have}, this kernel {images.kernel_versions()['python']}")
    _sh("chroot", str(root), "python3", "-m", "venv", images.VENV)
    site = root / images.VENV.lstrip("/") / "lib" / f"python{have}" / "site-packages"
    import cloudpickle
    import pika

    for mod in (pika, cloudpickle):  # pure Python: copied with their metadata
        src = Path(mod.__file__).parent
        _sh("cp", "-r", str(src), str(site))
        for info in src.parent.glob(f"{mod.__name__}-*.dist-info"):
            _sh("cp", "-r", str(info), str(site))
    _sh("cp", "-r", str(ROOT / "sif_magic"), str(site))
    _sh("rm", "-rf", str(site / "sif_magic" / "labextension"))
    spec = images.ImageSpec(runtime="deb.sif", python=have)
    from test_images import parse_definition

    _, sections = parse_definition(images.definition_file(spec))
    meta = root / ".singularity.d"
    (meta / "env").mkdir(parents=True)
    (meta / "runscript").write_text("#!/bin/sh\n" + sections["runscript"])
    (meta / "runscript").chmod(0o755)
    (meta / "env" / "90-environment.sh").write_text("#!/bin/sh\n" + sections["environment"])
    (meta / "labels.json").write_text(json.dumps(spec.labels()))
    _sh("mksquashfs", str(root), str(work / "fs.sqfs"), "-noappend", "-quiet", "-all-root")
    _sh("rm", "-rf", str(root))
    image = work / "deb.sif"
    _sh("siftool", "new", str(image))
    add_squashfs_partition(image, work / "fs.sqfs")
    (work / "fs.sqfs").unlink()
    return image


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


@pytest.mark.slow
@pytest.mark.slurm
def test_a_real_sif_runs_the_worker_as_nobody_through_sbatch(
    slurm: SlurmCluster, home, debian_sif: Path
) -> None:
    """sbatch as user nobody; the job stages the SIF to $SLURM_TMPDIR and `singularity run`s
    it: the shim (not Singularity) runs its squashfs unprivileged with ch-run."""
    _need_broker()
    import pwd
    import shutil
    import tempfile

    from sif_magic import images

    nobody = pwd.getpwnam("nobody")
    shared = Path(tempfile.mkdtemp(prefix="sif-nobody-"))  # pytest's tmp dirs are root-only
    try:
        shared.chmod(0o755)
        (shared / "bin").mkdir(mode=0o755)
        (shared / "bin" / "singularity").write_text(SHIM)
        (shared / "bin" / "singularity").chmod(0o755)
        image = shared / "deb.sif"
        shutil.copy(debian_sif, image)
        image.chmod(0o644)
        out = shared / "out"
        out.mkdir()
        os.chown(out, nobody.pw_uid, nobody.pw_gid)
        secrets_ = {"url": URL, "key": secrets.token_hex(32)}
        for name, text in secrets_.items():
            (shared / name).write_text(text + "\n")
            os.chown(shared / name, nobody.pw_uid, nobody.pw_gid)
            (shared / name).chmod(0o600)

        info = images.inspect_image(str(image))  # siftool + unsquashfs read the real SIF
        assert info.reader == "siftool + unsquashfs"
        assert images.check_versions(info.versions()) == []

        runtime = f"sif-{secrets.token_hex(3)}"
        queue = task_queue(runtime, shared / "key")  # the scope of the key the job holds
        job = sl.submit(
            sl.SlurmSpec(
                runtime=runtime,
                image=str(image),
                container="singularity",
                cpus_per_task=1,
                processes=1,
                time="00:10:00",
                setup=[f"export PATH={shared}/bin:$PATH"],
                sbatch_options=[f"--uid={nobody.pw_name}", f"--gid={nobody.pw_gid}"],
                output=f"{out}/slurm-%j.out",
                amqp_url_file=str(shared / "url"),
                key_file=str(shared / "key"),
            )
        )
        log = out / f"slurm-{job.job_id}.out"

        def joined() -> bool:
            state = sl.status([job.job_id])[0]
            if state.state not in ("PENDING", "RUNNING"):
                text = log.read_text() if log.exists() else "(no job output)"
                raise AssertionError(f"job {state.describe()}; {log}:\n{text}")
            return consumers(queue) == 1

        wait_until(joined, 90, "the worker in the SIF to join")

        from sif_magic import Executor

        def inside(x: int) -> tuple[int, int, str, bool, str, str]:
            import os
            import sys

            env = os.environ.get
            return (
                x + 1, os.getuid(), sys.executable, os.path.exists("/.singularity.d"),
                env("SLURM_JOB_ID", ""), env("SLURM_JOB_END_TIME") or env("SIF_MAGIC_JOB_END", ""),
            )  # fmt: skip

        ex = Executor(backend="rabbitmq", amqp_url=URL, runtime=runtime, key=secrets_["key"])
        try:
            results = ex.map_job(inside, range(6), chunksize=1).results(timeout=60)
        finally:
            ex.shutdown()
        assert [r[0] for r in results] == list(range(1, 7))
        assert {r[2] for r in results} == {f"{images.VENV}/bin/python"}
        assert all(r[3] for r in results)
        # the worker in the container knows its job and when it ends (walltime drain)
        assert {r[4] for r in results} == {job.job_id}
        assert all(r[5].isdigit() and int(r[5]) > time.time() for r in results), results
        procs = job_processes({job.job_id})
        assert any("squashfuse" in c for c, _ in procs.values()), procs
        assert {Path(f"/proc/{p}").stat().st_uid for p in procs} == {nobody.pw_uid}
        # Inside: uid 0 of the user namespace `unshare -r` made. On the host (above), every
        # process of the job belongs to nobody: no privilege was needed.
        assert {r[1] for r in results} == {0}
        sl.cancel([job.job_id])
        wait_until(lambda: not slurm.jobs(), 30, "squeue to empty")
        wait_until(lambda: not any(_alive(p) for p in procs), 15, "job processes to exit")
        assert job_processes({job.job_id}) == {}
        wait_until(lambda: consumers(queue) == 0, 15, "the worker to leave")
        delete_queue(queue)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
