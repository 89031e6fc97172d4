"""Names and paths that enter a script, a command line or a label (issue 13).

``runtime def 'ml$(touch X).sif'`` once wrote ``shlex.quote`` inside double quotes
in the image's runscript: the command ran when the container started. Every entry
point that takes a runtime name, an image path, a worker id, a SLURM job name, an
instance name, a package spec or a bind path is tried here with ``$(...)``,
backticks, ``;``, a line break and quotes. Whatever an entry point wrote is run the
way it would be (a definition file's runscript with sh, an sbatch script with bash
on a simulated node), and then the file X must not exist; the error must say what
is allowed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_images import parse_definition, run_script

from sif_magic import containers
from sif_magic.cli import register
from sif_magic.config import SifConfig
from sif_magic.errors import ConfigError
from sif_magic.launch import slurm as sl
from sif_magic.validate import check_bind, check_name

ROOT = Path(__file__).resolve().parent.parent

PAYLOADS = {
    "dollar": "ml$(touch {x}).sif",
    "backticks": "ml`touch {x}`.sif",
    "semicolon": "ml;touch {x}",
    "newline": "ml\ntouch {x}",
    "single quotes": "ml'$(touch {x})'.sif",
    "double quotes": 'ml"$(touch {x})".sif',
    "a quoted expansion": '"$(touch {x})"',
}


@pytest.fixture(params=list(PAYLOADS))
def attack(request, tmp_path: Path, sif_home: Path, monkeypatch) -> tuple[str, Path]:
    """(a value that runs ``touch X`` if it reaches a shell unquoted, X)."""
    monkeypatch.chdir(tmp_path)
    x = tmp_path / "X"
    return PAYLOADS[request.param].format(x=x), x


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sif-magic")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def node_bin(tmp_path: Path) -> Path:
    """A node's tools: srun runs its command here; apptainer/singularity do nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(
        '#!/bin/bash\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n'
    )
    for tool in ("apptainer", "singularity"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def run_what_was_written(tmp_path: Path, out: str) -> None:
    """Run whatever an entry point wrote, the way it would run: definition files'
    runscripts with sh, an sbatch script printed by ``--dry-run`` with bash."""
    for definition in tmp_path.glob("*.def"):
        _, sections = parse_definition(definition.read_text())
        run_script(sections["runscript"], tmp_path, {"SIF_MAGIC_AMQP_URL": "amqp://h/"})
    if out.startswith("#!/bin/bash"):
        env = {
            "PATH": f"{node_bin(tmp_path)}:/usr/bin:/bin",
            "SIF_MAGIC_AMQP_URL": "amqp://h/",
            "SLURM_JOB_ID": "7",
            "SLURM_JOB_NUM_NODES": "1",
        }
        subprocess.run(["bash", "-c", out], env=env, capture_output=True, timeout=60)


def refused_in_cli(capsys, tmp_path: Path, x: Path, argv: list[str], what: str, value: str) -> None:
    rc = cli(*argv)
    out, err = capsys.readouterr()
    run_what_was_written(tmp_path, out)
    assert not x.exists(), f"{argv} ran the command in {value!r}"
    assert rc == 2, out + err
    assert f"{what} {value!r} is not allowed: use " in err, err


def image(tmp_path: Path) -> str:
    path = tmp_path / "ml.sif"
    path.write_bytes(b"image stand-in")
    return str(path)


# -- runtime def / build -------------------------------------------------------------

DEF = ["runtime", "def", "--sif-magic", "sif_magic==1.0"]


@pytest.mark.parametrize(
    "option, what, value",
    [
        ("NAME", "image name", "{}"),
        ("--runtime", "runtime name", "{}"),
        ("--packages", "--packages entry", "numpy{}"),
        ("--apt", "--apt entry", "curl{}"),
        ("--mount", "--mount", "/data/{}"),
        ("--base", "--base", "docker://python:3.11{}"),
        ("--sif-magic", "--sif-magic", "sif_magic{}"),
        ("-o", "--output", "w{}.def"),
    ],
)
def test_runtime_def_refuses(attack, tmp_path, capsys, option, what, value) -> None:
    payload, x = attack
    value = value.format(payload)
    argv = [*DEF, value] if option == "NAME" else [*DEF, "worker", option, value]
    refused_in_cli(capsys, tmp_path, x, argv, what, value)
    assert list(tmp_path.glob("*.def")) == []  # nothing was written


def test_runtime_build_refuses_an_image_name(attack, tmp_path, capsys) -> None:
    payload, x = attack
    value = f"{payload}.sif"
    refused_in_cli(capsys, tmp_path, x, ["runtime", "build", value, "--dry-run"], "image", value)
    assert list(tmp_path.glob("*.def")) == []


def test_the_runscript_never_evaluates_its_runtime_name(tmp_path: Path) -> None:
    """Even a name that passed: single quotes around it, never inside double quotes."""
    from sif_magic import images

    body = images.entry_script("ml-1.sif").split("\n", 1)[1]
    res, _, env = run_script(body, tmp_path, {"SIF_MAGIC_AMQP_URL": "amqp://h/"})
    assert env["SIF_MAGIC_RUNTIME"] == "ml-1.sif"
    assert "then SIF_MAGIC_RUNTIME=ml-1.sif; fi" in body and ":-ml-1.sif" not in body
    with pytest.raises(ConfigError, match="runtime name .* is not allowed"):
        images.entry_script("ml$(touch X).sif")


# -- workers here ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, what", [("--runtime", "runtime name"), ("--image", "--image"), ("--bind", "--bind")]
)
def test_workers_start_refuses(attack, tmp_path, capsys, monkeypatch, option, what) -> None:
    from sif_magic import launch

    payload, x = attack
    monkeypatch.setenv("PATH", f"{node_bin(tmp_path)}:/usr/bin:/bin")
    url = tmp_path / "url"
    url.write_text("amqp://guest:guest@127.0.0.1:5672/%2F\n")
    url.chmod(0o600)
    container = ["--container", "none", "--python", "/bin/true"]
    if option == "--image":
        container = ["--container", "singularity"]
    value = f"/data:{payload}" if option == "--bind" else payload
    argv = ["workers", "start", *container, "--amqp-url-file", str(url), option, value]
    rc = cli(*argv)
    err = capsys.readouterr().err
    assert rc == 2 and not x.exists()
    assert launch.list_workers() == []  # nothing started
    if option == "--bind":
        assert f"--bind {value!r}: the part" in err and "is not allowed: use " in err
    else:
        assert f"{what} {value!r} is not allowed: use " in err, err


# -- SLURM -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, what",
    [
        ("--runtime", "runtime name"),
        ("--job-name", "--job-name"),
        ("--image", "--image"),
        ("--bind", "--bind"),
        ("--bind=SRC", "--bind"),
        ("--stage-dir", "--stage-dir"),
        ("--python", "--python"),
        ("--partition", "--partition"),
        ("--sbatch-option", "--sbatch-option"),
    ],
)
def test_slurm_submit_refuses(attack, tmp_path, capsys, option, what) -> None:
    payload, x = attack
    value = {
        "--bind": f"/data:{payload}",
        "--stage-dir": f"/tmp/{payload}",
        "--sbatch-option": f"--comment={payload}",
    }.get(option, payload)
    argv = ["slurm", "submit", "--dry-run", "--container", "singularity", "--runtime", "ml"]
    argv += ["--image", image(tmp_path), "--stage-dir", str(tmp_path / "stage")]
    option = option.split("=")[0]  # --bind=SRC: the payload as the whole bind
    rc = cli(*argv, option, value)
    out, err = capsys.readouterr()
    run_what_was_written(tmp_path, out)
    assert not x.exists(), f"{option} {value!r} ran"
    assert rc == 2 and not out, out
    what = f"--bind {value!r}: the part" if option == "--bind" else f"{what} {value!r}"
    assert what in err and "is not allowed" in err, err


def test_a_valid_script_runs_on_the_node_and_quotes_what_it_holds(tmp_path, sif_home) -> None:
    """The same entry point with fair values: the script is written and runs."""
    spec = sl.SlurmSpec(
        runtime="ml-1.sif",
        image=image(tmp_path),
        container="singularity",
        binds=["/data:/scratch:ro"],
        stage_dir=str(tmp_path / "stage"),
        job_name="my_job-2",
    )
    script = sl.render_script(spec)
    env = {
        "PATH": f"{node_bin(tmp_path)}:/usr/bin:/bin",
        "SIF_MAGIC_AMQP_URL": "amqp://h/",
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NUM_NODES": "1",
    }
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "starts on" in res.stdout


# -- the worker, the configuration, containers ----------------------------------------


@pytest.mark.parametrize(
    "how, what",
    [("--runtime", "runtime name"), ("--worker-id", "worker id"), ("env", "worker id")],
)
def test_worker_refuses(attack, how, what) -> None:
    payload, x = attack
    args, env = [how, payload], {}
    if how == "env":
        args, env = [], {"SIF_MAGIC_WORKER_ID": payload}
    res = subprocess.run(
        [sys.executable, "-m", "sif_magic", "worker", "--amqp-url-file", "/nonexistent", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
        timeout=60,
    )
    assert res.returncode == 2 and not x.exists()
    assert f"sif-magic worker: error: {what} {payload!r} is not allowed: use " in res.stderr


@pytest.mark.parametrize(
    "setter",
    [
        lambda v: SifConfig(runtime=v),
        lambda v: SifConfig().set_from_strings({"runtime": v}),
        lambda v: __import__("sif_magic").Executor(backend="local", runtime=v),
        lambda v: containers.WorkerRun("singularity", "ml.sif", v),
        lambda v: check_bind(f"/data:{v}"),
        lambda v: sl.render_script(sl.SlurmSpec(runtime="r", container="none", output=f"/o/{v}")),
    ],
    ids=["SifConfig", "%sif_config", "Executor", "instance name", "bind", "SLURM output"],
)
def test_the_python_entry_points_refuse(attack, setter: Callable[[str], object]) -> None:
    payload, x = attack
    with pytest.raises(ConfigError, match="is not allowed: use letters, digits"):
        setter(payload)
    assert not x.exists()


def test_the_rule_says_what_is_allowed() -> None:
    for good in ("ml.sif", "default", "ml_2-gpu.v1", "A" * 128):
        assert check_name(good, "runtime name") == good
    for bad in ("", "-ml", ".sif", "ml sif", "mlé", "A" * 129):
        with pytest.raises(ConfigError) as info:
            check_name(bad, "runtime name")
        assert str(info.value) == (
            f"runtime name {bad!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (at most 128 characters); spaces, quotes, '$', "
            "'`', ';', '\\' and line breaks are not allowed"
        )


def test_shell_words_quotes_anything_but_one_variable() -> None:
    line = containers.shell_words(['"$tool"', "run", '"$(touch X)"', '"$a$(b)"', "a b"])
    assert line == """"$tool" run '"$(touch X)"' '"$a$(b)"' 'a b'"""


@pytest.mark.parametrize("name", ["gpu.retry", "gpu.claim.w1.x"])
def test_a_runtime_cannot_take_another_runtimes_retry_or_claim_queue(name: str) -> None:
    """Runtime ``gpu.retry`` would consume runtime gpu's retry queue (its task queue is
    ``tasks.gpu.retry``): refused everywhere a runtime name enters, saying why."""
    from sif_magic import protocol

    assert protocol.task_queue("0" * 12, name) == protocol.retry_queue("0" * 12, "gpu") or (
        protocol.is_claim_queue(protocol.task_queue("0" * 12, name))
    )
    for setter in (
        lambda v: SifConfig(runtime=v),
        lambda v: __import__("sif_magic").Executor(backend="local", runtime=v),
        lambda v: sl.SlurmSpec(runtime=v, container="none").check(),
    ):
        with pytest.raises(ConfigError, match="may not end in '.retry' or hold '.claim.'"):
            setter(name)
    res = subprocess.run(
        [sys.executable, "-m", "sif_magic", "worker", "--amqp-url-file", "/nonexistent"]
        + ["--runtime", name],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=60,
    )
    assert res.returncode == 2 and "may not end in '.retry'" in res.stderr, res.stderr
    SifConfig(runtime="py3.11")  # dots stay allowed
