"""Workers on this machine: ``workers start / list / stop``.

Singularity/Apptainer cannot be installed here: the container tests put a fake
``singularity`` on PATH, a recorder (not Singularity) that logs its argv and,
for ``run``, stays up until SIGTERM like a worker would. ``--container none``
runs real processes: a stand-in script that records what it was given, and,
once the lead's worker exists, the real ``python -m sif_magic worker`` against
the machine's RabbitMQ.
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
from collections.abc import Iterator
from pathlib import Path

import pytest
from queues import consumers, delete_queue, task_queue

from sif_magic import containers, launch
from sif_magic.cli import register
from sif_magic.errors import ConfigError
from sif_magic.launch._state import alive

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(sif_home: Path) -> Iterator[Path]:
    yield sif_home
    for rec, state in launch.list_workers():  # never leave a process behind
        if state == "running":
            launch.stop_workers([rec.id], timeout=2)


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sif-magic")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def fake_singularity(bin_dir: Path, log: Path, name: str = "singularity") -> Path:
    """A recorder standing in for ``singularity`` (or ``name``): logs argv; ``run`` waits
    for SIGTERM."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / name
    exe.write_text(
        f"#!{sys.executable}\n"
        "import json, os, signal, sys, time\n"
        f"LOG = {str(log)!r}\n"
        "with open(LOG, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv) + '\\n')\n"
        "if sys.argv[1] == 'run':\n"
        "    def bye(*_):\n"
        "        with open(LOG + '.term', 'a') as f:\n"
        "            f.write(str(os.getpid()) + '\\n')\n"
        "        sys.exit(0)\n"
        "    signal.signal(signal.SIGTERM, bye)\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
    )
    exe.chmod(0o755)
    return exe


def stand_in_python(path: Path, exit_code: int | None = None) -> Path:
    """Stands in for the worker's Python: records argv and SIF_MAGIC_* env, waits for SIGTERM."""
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, signal, sys, time\n"
        "rec = {'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items()"
        " if k.startswith('SIF_MAGIC_')}}\n"
        "out = os.environ['SIF_MAGIC_HOME'] + '/standin-' + os.environ['SIF_MAGIC_WORKER_ID']\n"
        "open(out, 'w').write(json.dumps(rec))\n"
        + (
            f"print('stand-in failing on purpose', flush=True)\nsys.exit({exit_code})\n"
            if exit_code is not None
            else ""
        )
        + "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    path.chmod(0o755)
    return path


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# -- command lines ---------------------------------------------------------------


def test_singularity_argv_lists() -> None:
    sing, app = containers.get("singularity"), containers.get("apptainer")
    run = containers.WorkerRun
    assert sing.start_argv(
        run(
            "singularity",
            "ml.sif",
            "sifw-1",
            binds=["/data", "/s:/scratch:ro"],
            nv=True,
            fakeroot=True,
        )
    ) == [
        "singularity",
        "instance",
        "start",
        "--fakeroot",
        "--nv",
        "--bind",
        "/data",
        "--bind",
        "/s:/scratch:ro",
        "ml.sif",
        "sifw-1",
    ]
    assert app.start_argv(run("apptainer", "a.sif", "n")) == [
        "apptainer",
        "instance",
        "start",
        "a.sif",
        "n",
    ]
    assert sing.run_argv("singularity", "instance://sifw-1", env_file="/h/w.env") == [
        "singularity",
        "run",
        "--env-file",
        "/h/w.env",
        "instance://sifw-1",
    ]
    assert sing.stop_argv(run("singularity", name="sifw-1")) == [
        "singularity",
        "instance",
        "stop",
        "sifw-1",
    ]
    with pytest.raises(ConfigError, match="SRC:DST"):
        containers.check_binds(["a:b:c:d"])


def test_container_names_and_which_tool_auto_takes(tmp_path: Path, monkeypatch) -> None:
    assert tuple(containers.RUNTIMES) == ("auto", "apptainer", "singularity", "none")
    with pytest.raises(ConfigError, match="use auto, apptainer, singularity or none"):
        containers.get("docker")
    with pytest.raises(ConfigError, match="use auto, apptainer, singularity or none"):
        launch.render_script(launch.SlurmSpec(runtime="r", container="docker"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ConfigError, match="apptainer or singularity not found on PATH"):
        containers.get("auto").find()
    assert containers.get("none").find() == ""
    for name in ("singularity", "apptainer"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    assert containers.get("auto").find() == str(bin_dir / "apptainer")  # Apptainer first
    assert containers.get("singularity").find() == str(bin_dir / "singularity")
    (bin_dir / "apptainer").unlink()
    assert containers.get("auto").find() == str(bin_dir / "singularity")


def test_env_file_round_trips_through_sh(tmp_path: Path) -> None:
    nasty = "amqp://u:p'a\"s$s`w d@h:5672/%2F"
    f = tmp_path / "w.env"
    sing = containers.get("singularity")
    f.write_text(sing.env_file_text({"SIF_MAGIC_AMQP_URL": nasty, "SIF_MAGIC_RUNTIME": "ml.sif"}))
    out = subprocess.run(
        ["sh", "-c", f'. "{f}"; printf %s "$SIF_MAGIC_AMQP_URL"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == nasty
    with pytest.raises(ConfigError):
        sing.env_file_text({"BAD NAME": "x"})


# -- containers (recorder) -------------------------------------------------------


def singularity_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url_file: Path, **options
) -> tuple[Path, Path, list[launch.WorkerRecord]]:
    """``start_workers`` of ml.sif behind the fake singularity (its log:
    tmp_path/singularity.log): (the fake's path, the image, the records)."""
    exe = fake_singularity(tmp_path / "bin", tmp_path / "singularity.log")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    image = tmp_path / "ml.sif"
    image.write_bytes(b"SIF stand-in")
    recs = launch.start_workers(
        image=str(image),
        container="singularity",
        amqp_url_file=str(url_file),
        startup_check=0.3,
        **options,
    )
    return exe, image, recs


def test_start_list_stop_singularity_instances(tmp_path, monkeypatch, home, url_file) -> None:
    log = tmp_path / "singularity.log"
    exe, image, recs = singularity_workers(
        tmp_path,
        monkeypatch,
        url_file,
        instances=2,
        processes=3,
        binds=["/data:/mnt"],
        nv=True,
        fakeroot=True,
    )
    assert len(recs) == 2 and all(alive(r.pid) for r in recs)
    deadline = time.monotonic() + 10
    while len(log.read_text().splitlines()) < 4:  # `run` records itself once it has started
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # `instance start` returns before its `run` is launched; runs may log in any order.
    starts = [c for c in calls if c[1] == "instance"]
    assert calls.index(starts[1]) > calls.index(starts[0])
    for r in recs:
        start = [c for c in calls if c[-1] == r.instance][0]
        run = [c for c in calls if c[-1] == f"instance://{r.instance}"][0]
        assert calls.index(start) < calls.index(run)
    assert sorted(calls) == sorted(
        [
            [
                str(exe),
                "instance",
                "start",
                "--fakeroot",
                "--nv",
                "--bind",
                "/data:/mnt",
                str(image),
                recs[0].instance,
            ],
            [str(exe), "run", "--env-file", recs[0].env_file, f"instance://{recs[0].instance}"],
            [
                str(exe),
                "instance",
                "start",
                "--fakeroot",
                "--nv",
                "--bind",
                "/data:/mnt",
                str(image),
                recs[1].instance,
            ],
            [str(exe), "run", "--env-file", recs[1].env_file, f"instance://{recs[1].instance}"],
        ]
    )
    for r in recs:
        assert "guest:guest" not in cmdline(r.pid)  # never on a command line
        assert stat.S_IMODE(os.stat(r.env_file).st_mode) == 0o600
        env = subprocess.run(
            ["sh", "-c", f'set -a; . "{r.env_file}"; env'],
            capture_output=True,
            text=True,
            env={},
            check=True,
        ).stdout.splitlines()
        env = dict(line.split("=", 1) for line in env if line.startswith("SIF_MAGIC_"))
        assert env == {
            "SIF_MAGIC_RUNTIME": "ml.sif",
            "SIF_MAGIC_WORKER_ID": r.id,
            "SIF_MAGIC_PROCESSES": "3",
            "SIF_MAGIC_CONTAINER": f"singularity instance://{r.instance}",
            "SIF_MAGIC_AMQP_URL": URL,
            "SIF_MAGIC_KEY": (home / "key").read_text().strip(),
        }
    listed = {rec.id: state for rec, state in launch.list_workers()}
    assert listed == {recs[0].id: "running", recs[1].id: "running"}

    assert launch.stop_workers([recs[0].id], timeout=5) == [(recs[0].id, "terminated")]
    assert not alive(recs[0].pid) and alive(recs[1].pid)
    assert json.loads(log.read_text().splitlines()[-1]) == [
        str(exe),
        "instance",
        "stop",
        recs[0].instance,
    ]
    assert (tmp_path / "singularity.log.term").read_text().split() == [str(recs[0].pid)]
    assert not Path(recs[0].env_file).exists()
    assert cli("workers", "stop", "--all") == 0
    assert not alive(recs[1].pid)
    assert launch.list_workers() == []


class ForegroundRun(containers.Container):
    """A runtime without instances, called the way podman-hpc would be: binds, GPUs
    and the env file on its ``run``, removed by name after. It is defined here, in a
    test: a new runtime is one class and one entry of ``containers.RUNTIMES``."""

    gone_text = "no such container"

    def describe(self, run: containers.WorkerRun) -> str:
        return f"{Path(run.tool).name} {run.name}"

    def worker_argv(self, run: containers.WorkerRun) -> list[str]:
        argv = [run.tool, "run", "--rm", "--name", run.name, "--env-file", run.env_file]
        for b in containers.check_binds(run.binds):
            argv += ["-v", b]
        return [*argv, *(["--gpu"] if run.nv else []), run.image]

    def stop_argv(self, run: containers.WorkerRun) -> list[str]:
        return [run.tool, "rm", "-f", run.name]

    def script_exports(self, image: str, stage_dir: str, python: str) -> list[str]:
        return [f"export SIF_MAGIC_IMAGE={image}"]

    def node_lines(self, binds, nv) -> list[str]:
        run = ["fg-tool", "run", "--rm", "-e", "SIF_MAGIC_AMQP_URL", '"$SIF_MAGIC_IMAGE"']
        return [*containers.SECRETS_INTO_ENV, containers.shell_words(run)]


def test_a_new_container_runtime_is_one_class_and_one_entry(
    tmp_path, monkeypatch, home, url_file, capsys
) -> None:
    log = tmp_path / "fg.log"
    exe = fake_singularity(tmp_path / "bin", log, name="fg-tool")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setitem(containers.RUNTIMES, "fg-tool", ForegroundRun("fg-tool", ("fg-tool",)))
    image = tmp_path / "ml.sif"
    image.write_bytes(b"image stand-in")
    start = ["workers", "start", "--container", "fg-tool", "--image", str(image), "--nv"]
    assert cli(*start, "--bind", "/data", "--amqp-url-file", str(url_file)) == 0
    ((rec, state),) = launch.list_workers()
    assert (state, rec.container, rec.tool) == ("running", "fg-tool", str(exe))
    deadline = time.monotonic() + 10
    while not log.exists():  # `run` records itself once it has started
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run = [str(exe), "run", "--rm", "--name", rec.instance, "--env-file", rec.env_file]
    assert json.loads(log.read_text()) == [*run, "-v", "/data", "--gpu", str(image)]
    settings = Path(rec.env_file).read_text()
    assert f"SIF_MAGIC_CONTAINER='fg-tool {rec.instance}'" in settings
    assert stat.S_IMODE(os.stat(rec.env_file).st_mode) == 0o600
    assert cli("workers", "stop", "--all") == 0
    assert json.loads(log.read_text().splitlines()[-1]) == [str(exe), "rm", "-f", rec.instance]
    assert not alive(rec.pid) and not Path(rec.env_file).exists()

    capsys.readouterr()
    submit = ["slurm", "submit", "--dry-run", "--container", "fg-tool", "--image", "ml:1"]
    assert cli(*submit, "--runtime", "ml") == 0
    script = capsys.readouterr().out
    assert "export SIF_MAGIC_IMAGE=ml:1" in script
    assert '    fg-tool run --rm -e SIF_MAGIC_AMQP_URL "$SIF_MAGIC_IMAGE"' in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_start_refuses_missing_image_and_tool(tmp_path, monkeypatch, home, url_file) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(ConfigError, match="--image NAME.sif is needed"):
        launch.start_workers(amqp_url_file=str(url_file))
    with pytest.raises(ConfigError, match="no such file"):
        launch.start_workers(image=str(tmp_path / "no.sif"), amqp_url_file=str(url_file))
    (tmp_path / "a.sif").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--container none"):
        launch.start_workers(image=str(tmp_path / "a.sif"), amqp_url_file=str(url_file))


# -- no container: real processes -------------------------------------------------


def test_start_without_container_passes_settings_by_env(tmp_path, home, url_file, monkeypatch):
    monkeypatch.setenv("SIF_MAGIC_AMQP_URL", "amqp://u:not-this-one@h/")  # the file wins
    py = stand_in_python(tmp_path / "python")
    recs = launch.start_workers(
        runtime="rt-x",
        instances=2,
        processes=2,
        container="none",
        amqp_url_file=str(url_file),
        python=str(py),
        startup_check=0.5,
        idle_timeout=90,
    )
    for r in recs:
        seen = json.loads((home / f"standin-{r.id}").read_text())
        assert seen["argv"] == ["-m", "sif_magic", "worker"]
        assert {k: v for k, v in seen["env"].items() if k != "SIF_MAGIC_WIDGETS"} == {
            "SIF_MAGIC_HOME": str(home),
            "SIF_MAGIC_RUNTIME": "rt-x",
            "SIF_MAGIC_WORKER_ID": r.id,
            "SIF_MAGIC_PROCESSES": "2",
            "SIF_MAGIC_CONTAINER": "none",
            "SIF_MAGIC_AMQP_URL_FILE": str(url_file),
            "SIF_MAGIC_KEY_FILE": str(home / "key"),
            "SIF_MAGIC_IDLE_TIMEOUT": "90",
        }
        assert r.container == "none" and r.instance == ""
    pids = [r.pid for r in recs]
    assert cli("workers", "list") == 0
    results = dict(launch.stop_workers(timeout=5))
    assert results == {recs[0].id: "terminated", recs[1].id: "terminated"}
    assert not any(alive(p) for p in pids)


def test_a_worker_that_dies_at_once_is_reported_with_its_log(tmp_path, home, url_file) -> None:
    py = stand_in_python(tmp_path / "python", exit_code=3)
    with pytest.raises(ConfigError, match="stand-in failing on purpose"):
        launch.start_workers(
            container="none", amqp_url_file=str(url_file), python=str(py), startup_check=0.5
        )
    assert launch.list_workers() == []


def test_broker_url_rules(tmp_path, home, monkeypatch) -> None:
    loose = tmp_path / "loose"
    loose.write_text(URL)
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        launch.broker_env(amqp_url_file=str(loose))
    with pytest.raises(ConfigError, match="no broker URL"):
        launch.broker_env()
    with pytest.raises(ConfigError, match="amqp://"):
        launch.broker_env(amqp_url="http://x")
    monkeypatch.setenv("SIF_MAGIC_AMQP_URL", URL)
    assert launch.broker_env() == {"SIF_MAGIC_AMQP_URL": URL}
    monkeypatch.delenv("SIF_MAGIC_AMQP_URL")
    default = home / "amqp_url"
    default.write_text(URL)
    default.chmod(0o600)
    assert launch.broker_env() == {"SIF_MAGIC_AMQP_URL_FILE": str(default)}


def test_stop_unknown_ids_stops_nothing(home) -> None:
    with pytest.raises(ConfigError, match="no recorded worker nope"):
        launch.stop_workers(["nope"])
    assert cli("workers", "stop") == 2  # neither ids nor --all


def test_a_reused_pid_is_not_signalled(tmp_path, home, url_file) -> None:
    py = stand_in_python(tmp_path / "python")
    (rec,) = launch.start_workers(
        container="none", amqp_url_file=str(url_file), python=str(py), startup_check=0.2
    )
    from sif_magic.launch._state import StateFile

    with StateFile("workers.json").update() as records:  # as if the pid had been reused
        records[0]["pid_start"] = "1"
    assert launch.list_workers()[0][1] == "exited"
    assert launch.stop_workers([rec.id], timeout=1) == [(rec.id, "gone")]
    assert alive(rec.pid)  # not ours any more, so untouched
    os.kill(rec.pid, 15)


# -- the real worker --------------------------------------------------------------


def test_real_worker_without_container_joins_and_leaves(tmp_path, home, url_file, monkeypatch):
    from rabbit import shared_broker_url

    shared_broker_url()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    runtime = f"launch-{secrets.token_hex(4)}"
    queue = task_queue(runtime)
    try:
        recs = launch.start_workers(
            runtime=runtime,
            instances=2,
            processes=1,
            container="none",
            amqp_url_file=str(url_file),
            startup_check=0.5,
        )
        deadline = time.monotonic() + 30
        while (consumers(queue) or 0) < 2:
            assert time.monotonic() < deadline, [Path(r.log).read_text() for r in recs]
            time.sleep(0.2)
        for r in recs:
            assert "guest" not in cmdline(r.pid)
        assert dict(launch.stop_workers(timeout=15)) == {r.id: "terminated" for r in recs}
        assert not any(alive(r.pid) for r in recs)
        assert consumers(queue) == 0
    finally:
        delete_queue(queue)
