"""Worker images: definition files, Dockerfiles, build and inspect command lines.

Singularity/Apptainer cannot be installed on these machines. What is checked
here: the generated files (parsed by a small parser below, and their shell code
run by ``sh`` with a recorder standing in for Python), the exact argv lists our
code hands to ``singularity``/``apptainer`` (recorded by fake executables on
PATH: recorders, not Singularity), and ``inspect`` on a SIF file assembled with
Debian's ``siftool`` + ``mksquashfs`` (a real SIF container format, but not one
built by Singularity).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sif import add_squashfs_partition

from sif_magic import containers, images
from sif_magic.cli import register
from sif_magic.errors import ConfigError

# -- helpers ---------------------------------------------------------------------

SECTIONS = {
    "setup",
    "files",
    "post",
    "environment",
    "runscript",
    "startscript",
    "test",
    "labels",
    "help",
    "arguments",
}


@pytest.fixture(autouse=True)
def _from_an_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if sif_magic came from a package index (the test venv has it editable)."""
    monkeypatch.setattr(images.recipe, "installed_source", lambda: "")


def parse_definition(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, section bodies) of a definition file.

    Header lines are ``Key: value`` before the first ``%section``; a section runs
    to the next line starting with ``%name`` for a known name. Bodies are dedented.
    """
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        word = line.strip().split(" ")[0]
        if line.startswith("%") and word[1:] in SECTIONS:
            current = word[1:]
            assert current not in sections, f"section %{current} appears twice"
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            assert sep, f"header line without 'Key:': {line!r}"
            header[key.strip()] = value.strip()
    bodies = {k: textwrap.dedent("\n".join(v)).strip("\n") + "\n" for k, v in sections.items()}
    return header, bodies


def parse_labels(body: str) -> dict[str, str]:
    out = {}
    for line in body.splitlines():
        if line.strip():
            key, _, value = line.strip().partition(" ")
            out[key] = value.strip()
    return out


def make_recorder(bin_dir: Path, name: str, log: Path, stdout: str = "", rc: int = 0) -> Path:
    """A fake ``name`` executable that appends its argv (JSON) to ``log``.

    A recorder, not Singularity: it runs nothing and prints ``stdout``.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv) + '\\n')\n"
        f"sys.stdout.write({stdout!r})\n"
        f"sys.exit({rc})\n"
    )
    script.chmod(0o755)
    return script


def recorded(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sif-magic")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def run_script(body: str, tmp_path: Path, env: dict[str, str], *args: str):
    """Run a runscript body with sh; the worker's Python is replaced by a recorder."""
    fake_py = tmp_path / "fake-python"
    fake_py.write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$@" > "$RECORD.argv"\n'
        'env | grep "^SIF_MAGIC_" | sort > "$RECORD.env"\n'
    )
    fake_py.chmod(0o755)
    script = tmp_path / "runscript"
    script.write_text("#!/bin/sh\n" + body.replace(f"{images.VENV}/bin/python", str(fake_py)))
    record = tmp_path / "rec"
    base = {"PATH": "/usr/bin:/bin", "RECORD": str(record)}
    res = subprocess.run(
        ["sh", str(script), *args], env={**base, **env}, capture_output=True, text=True
    )
    if res.returncode != 0:
        return res, None, None
    argv = Path(f"{record}.argv").read_text().splitlines()
    penv = dict(line.split("=", 1) for line in Path(f"{record}.env").read_text().splitlines())
    return res, argv, penv


@pytest.fixture
def no_container_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with only a private bin dir + the system dirs (none has singularity)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    for name in ("apptainer", "singularity"):
        assert shutil.which(name) in (None, str(bin_dir / name))
    return bin_dir


# -- the definition file ---------------------------------------------------------


def test_definition_file_sections_header_and_labels() -> None:
    spec = images.ImageSpec(runtime="ml.sif", packages=["numpy<2", "scipy"], mounts=["/data"])
    header, sections = parse_definition(images.definition_file(spec))
    kernel = images.kernel_versions()
    assert header == {"Bootstrap": "docker", "From": f"python:{kernel['python']}-slim"}
    assert {"post", "environment", "runscript", "startscript", "labels", "help"} <= set(sections)
    assert parse_labels(sections["labels"]) == {
        "org.sif-magic.runtime": "ml.sif",
        "org.sif-magic.python": kernel["python"],
        "org.sif-magic.cloudpickle": kernel["cloudpickle"],
        "org.sif-magic.version": kernel["version"],
        "org.sif-magic.protocol": kernel["protocol"],
    }
    post = sections["post"]
    assert f"cloudpickle=={kernel['cloudpickle']}" in post
    assert "'numpy<2' scipy" in post
    assert f"--no-deps sif_magic=={kernel['version']}" in post
    assert "mkdir -p /scratch /data" in post
    assert f"export PATH={images.VENV}/bin:$PATH" in sections["environment"]
    for name in ("post", "runscript", "startscript", "environment"):  # valid sh
        res = subprocess.run(["sh", "-n"], input=sections[name], capture_output=True, text=True)
        assert res.returncode == 0, (name, res.stderr)


def test_definition_file_requirements_and_local_sif_magic(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("pandas\n")
    wheel = tmp_path / "sif_magic-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    spec = images.ImageSpec(
        runtime="x.sif",
        requirements=str(req),
        sif_magic=str(wheel),
        python="3.10",
        base="docker://ubuntu:22.04",
        apt=["python3-venv"],
    )
    header, sections = parse_definition(images.definition_file(spec))
    assert header == {"Bootstrap": "docker", "From": "ubuntu:22.04"}
    assert sections["files"].split("\n")[:2] == [
        f"{req} /opt/sif_magic/src/requirements.txt",
        f"{wheel} /opt/sif_magic/src/{wheel.name}",
    ]
    assert "-r /opt/sif_magic/src/requirements.txt" in sections["post"]
    assert f"--no-deps /opt/sif_magic/src/{wheel.name}" in sections["post"]
    assert "apt-get install -y --no-install-recommends python3-venv" in sections["post"]
    assert '[ "$have" = "3.10" ]' in sections["post"]  # the build fails on another Python


def test_runscript_starts_the_worker_from_environment_variables(tmp_path: Path) -> None:
    _, sections = parse_definition(images.definition_file(images.ImageSpec(runtime="ml.sif")))
    body = sections["runscript"]
    res, argv, env = run_script(body, tmp_path, {"AMQP_URL": "amqp://u:pw@h/v"}, "--log", "x")
    assert res.returncode == 0, res.stderr
    assert argv == ["-m", "sif_magic", "worker", "--log", "x"]
    assert env["SIF_MAGIC_AMQP_URL"] == "amqp://u:pw@h/v"
    assert env["SIF_MAGIC_RUNTIME"] == "ml.sif"
    assert "SIF_MAGIC_PROCESSES" not in env

    res, argv, env = run_script(
        body,
        tmp_path,
        {
            "SIF_MAGIC_AMQP_URL_FILE": "/home/u/.sif_magic/amqp_url",
            "AMQP_URL": "ignored",
            "SIF_MAGIC_RUNTIME": "other",
            "SLURM_CPUS_PER_TASK": "8",
            "APPTAINER_CONTAINER": "/tmp/ml.sif",
        },
    )
    assert env == {
        "SIF_MAGIC_AMQP_URL_FILE": "/home/u/.sif_magic/amqp_url",
        "SIF_MAGIC_RUNTIME": "other",
        "SIF_MAGIC_PROCESSES": "8",
        "SIF_MAGIC_CONTAINER": "/tmp/ml.sif",
    }

    res, argv, env = run_script(body, tmp_path, {})
    assert res.returncode == 2 and argv is None
    assert "no broker URL" in res.stderr and "SIF_MAGIC_AMQP_URL_FILE" in res.stderr


def test_startscript_starts_a_worker_only_when_asked() -> None:
    _, sections = parse_definition(images.definition_file(images.ImageSpec()))
    body = sections["startscript"]
    assert 'if [ "${SIF_MAGIC_AUTOSTART:-0}" = 1 ]; then' in body
    assert "exec /.singularity.d/runscript" in body


def test_bad_image_specs_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="minor version such as 3.11"):
        images.ImageSpec(python="3")
    with pytest.raises(ConfigError, match="no such file"):
        images.ImageSpec(requirements=str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match="absolute path"):
        images.ImageSpec(mounts=["data"])
    with pytest.raises(ConfigError, match="docker:// base"):
        images.dockerfile(images.ImageSpec(base="library://alpine"))


# -- the Dockerfile --------------------------------------------------------------


def test_dockerfile_holds_the_same_worker(tmp_path: Path) -> None:
    spec = images.ImageSpec(runtime="ml.sif", packages=["numpy"])
    lines = images.dockerfile(spec).splitlines()
    assert lines[1] == f"FROM python:{spec.python}-slim"
    assert f'LABEL org.sif-magic.python="{spec.python}"' in lines
    assert f'ENTRYPOINT ["{images.ENTRY}"]' in lines
    # The printf line writes exactly the entry script: run it with sh to see.
    printf = next(ln for ln in lines if ln.startswith("RUN printf "))
    cmd = printf[len("RUN ") :].split(f" > {images.ENTRY}")[0]
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
    assert out == images.entry_script("ml.sif")
    run = next(ln for ln in lines if ln.startswith("RUN export"))
    assert "numpy" in images.dockerfile(spec)
    assert run.endswith("&& \\")


def test_cli_def_writes_files_and_stdout(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("runtime", "def", "ml", "--packages", "numpy", "--mount", "/data") == 0
    header, sections = parse_definition((tmp_path / "ml.def").read_text())
    assert header["Bootstrap"] == "docker"
    assert parse_labels(sections["labels"])["org.sif-magic.runtime"] == "ml.sif"
    assert "%sif_config runtime=ml.sif" in capsys.readouterr().out
    assert cli("runtime", "def", "ml", "--dockerfile") == 0
    assert (tmp_path / "ml.Dockerfile").read_text().startswith("# Worker image")
    assert cli("runtime", "def", "ml", "-o", "-", "--python", "3.12") == 0
    header, _ = parse_definition(capsys.readouterr().out)
    assert header["From"] == "python:3.12-slim"


# -- build -----------------------------------------------------------------------


def test_build_runs_apptainer_with_the_exact_argv(tmp_path, monkeypatch, no_container_tools):
    log = tmp_path / "argv.log"
    make_recorder(no_container_tools, "apptainer", log)
    make_recorder(no_container_tools, "singularity", log)
    monkeypatch.chdir(tmp_path)
    assert cli("runtime", "def", "ml") == 0
    assert cli("runtime", "build", "ml.sif", "--fakeroot") == 0
    assert cli("runtime", "build", "ml.sif", "ml.def", "--remote", "--builder", "singularity") == 0
    monkeypatch.setenv("SIF_MAGIC_BUILD_MODE", "fakeroot")
    assert cli("runtime", "build", "ml.sif") == 0
    assert cli("runtime", "build", "ml.sif", "--dry-run") == 0  # prints, runs nothing
    app, sing = str(no_container_tools / "apptainer"), str(no_container_tools / "singularity")
    assert recorded(log) == [
        [app, "build", "--fakeroot", "ml.sif", "ml.def"],
        [sing, "build", "--remote", "ml.sif", "ml.def"],
        [app, "build", "--fakeroot", "ml.sif", "ml.def"],
    ]


def test_build_without_singularity_prints_what_to_run(
    tmp_path, monkeypatch, capsys, no_container_tools
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("runtime", "build", "demo.sif") == 3
    out = capsys.readouterr().out
    assert (tmp_path / "demo.def").exists()  # written with defaults, to carry elsewhere
    assert "Neither apptainer nor singularity is on PATH here" in out
    assert "apptainer build --fakeroot demo.sif demo.def" in out
    assert "singularity pull demo.sif docker://REGISTRY/demo:latest" in out


def test_build_argv_modes() -> None:
    sing, app = containers.get("singularity"), containers.get("apptainer")
    assert sing.build_argv("singularity", "a.sif", "a.def") == [
        "singularity",
        "build",
        "a.sif",
        "a.def",
    ]
    assert app.build_argv("apptainer", "a.sif", "a.def", "sudo") == [
        "sudo",
        "apptainer",
        "build",
        "a.sif",
        "a.def",
    ]
    with pytest.raises(ConfigError):
        app.build_argv("apptainer", "a.sif", "a.def", "root")


# -- inspect ---------------------------------------------------------------------


def _labels(**over: str) -> dict[str, str]:
    labels = {images.LABEL_PREFIX + k: v for k, v in images.kernel_versions().items()}
    labels[images.LABEL_PREFIX + "runtime"] = "ml.sif"
    labels.update({images.LABEL_PREFIX + k: v for k, v in over.items()})
    return labels


def test_inspect_with_singularity_compares_versions(
    tmp_path, monkeypatch, capsys, no_container_tools
) -> None:
    image = tmp_path / "ml.sif"
    image.write_bytes(b"not really a SIF: the recorder answers for it")
    log = tmp_path / "argv.log"
    answer = json.dumps({"data": {"attributes": {"labels": _labels()}}, "type": "container"})
    make_recorder(no_container_tools, "singularity", log, stdout=answer)
    assert cli("runtime", "inspect", str(image)) == 0
    out = capsys.readouterr().out
    assert "read with singularity inspect" in out and "compatible with this kernel" in out
    sing = str(no_container_tools / "singularity")
    assert recorded(log)[0] == [sing, "inspect", "--json", "--labels", str(image)]

    answer = json.dumps(
        {"data": {"attributes": {"labels": _labels(python="3.6", cloudpickle="1.6.0")}}}
    )
    make_recorder(no_container_tools, "singularity", log, stdout=answer)
    assert cli("runtime", "inspect", str(image)) == 1
    err = capsys.readouterr().err
    assert f"Python 3.6 in the image, {images.kernel_versions()['python']} in the kernel" in err
    assert "cloudpickle 1.6.0 in the image" in err and "rebuild: sif-magic runtime def ml" in err


def test_check_versions_rules() -> None:
    kernel = {"python": "3.11", "cloudpickle": "3.1.2", "version": "0.1.0", "protocol": "1"}
    assert images.check_versions({"python": "3.11", "cloudpickle": "3.0.0"}, kernel) == []
    assert len(images.check_versions({"python": "3.12", "cloudpickle": "2.2.1"}, kernel)) == 2


def test_inspect_without_any_tool_says_what_is_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    image = tmp_path / "x.sif"
    image.write_bytes(b"x")
    with pytest.raises(ConfigError, match="apt-get install siftool squashfs-tools"):
        images.inspect_image(str(image))
    with pytest.raises(ConfigError, match="no such image"):
        images.inspect_image(str(tmp_path / "missing.sif"))


def _assemble_sif(tmp_path: Path, labels: dict[str, str], definition: str) -> Path:
    """A SIF made with siftool: squashfs root holding /.singularity.d/labels.json."""
    root = tmp_path / "root"
    (root / ".singularity.d").mkdir(parents=True)
    (root / ".singularity.d" / "labels.json").write_text(json.dumps(labels))
    subprocess.run(
        ["mksquashfs", str(root), str(tmp_path / "fs.sqfs"), "-noappend", "-quiet"],
        check=True,
        capture_output=True,
    )
    (tmp_path / "x.def").write_text(definition)
    image = tmp_path / "real.sif"
    subprocess.run(["siftool", "new", str(image)], check=True, capture_output=True)
    subprocess.run(
        ["siftool", "add", str(image), str(tmp_path / "x.def"), "--datatype", "1"],
        check=True,
        capture_output=True,
    )
    add_squashfs_partition(image, tmp_path / "fs.sqfs")
    return image


@pytest.mark.skipif(
    not (shutil.which("siftool") and shutil.which("mksquashfs")),
    reason="needs Debian's siftool and squashfs-tools",
)
def test_inspect_reads_a_sif_with_siftool(tmp_path, monkeypatch, capsys) -> None:
    """A real SIF file (assembled with siftool, not built by Singularity) read without it."""
    image = _assemble_sif(tmp_path, _labels(), "Bootstrap: docker\nFrom: python:3.11-slim\n")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # siftool, unsquashfs; no singularity
    info = images.inspect_image(str(image))
    assert info.reader == "siftool + unsquashfs"
    assert info.versions()["runtime"] == "ml.sif"
    assert "From: python:3.11-slim" in info.definition
    assert cli("runtime", "inspect", str(image)) == 0
    assert "built from  python:3.11-slim" in capsys.readouterr().out


def test_image_launch_and_cli_modules_import_only_the_standard_library() -> None:
    code = (
        "import sys, sif_magic.images, sif_magic.containers, sif_magic.launch, sif_magic.cli\n"
        "bad = [m for m in ('IPython', 'ipywidgets', 'traitlets', 'pika', 'cloudpickle')"
        " if m in sys.modules]\n"
        "print(bad)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        check=True,
    )
    assert res.stdout.strip() == "[]"


def test_secret_files_are_created_600(tmp_path: Path) -> None:
    from sif_magic.launch._state import write_secret

    path = write_secret(tmp_path / "d" / "url", "amqp://u:pw@h/v")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "amqp://u:pw@h/v\n"
    assert os.stat(tmp_path / "d").st_mode & 0o077 == 0


def test_local_source_becomes_a_wheel_in_the_image(tmp_path: Path, monkeypatch, capsys) -> None:
    # sif_magic installed from this checkout (not on an index yet): the image gets a wheel
    # of it, not the source tree (which holds node_modules and needs Node.js to build)
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(images.recipe, "installed_source", lambda: str(root))
    monkeypatch.chdir(tmp_path)
    assert cli("runtime", "def", "ml") == 0
    wheels = list(tmp_path.glob("sif_magic-*.whl"))
    assert len(wheels) == 1
    _, sections = parse_definition((tmp_path / "ml.def").read_text())
    src = f"/opt/sif_magic/src/{wheels[0].name}"
    assert sections["files"].split() == [str(wheels[0]), src]
    assert f"--no-deps {src}" in sections["post"]
    assert "the image installs it" in capsys.readouterr().err
