"""Installing sif_magic as a user does, on a machine without Node.js (an HPC login node).

Each test makes a fresh venv whose PATH has a few tools and no node, npm, jlpm or
yarn. The release wheel (scripts/build-wheel, which needs Node.js here) installs there
with its JupyterLab front-end and runs a %%sifmap in a kernel; a source install there
succeeds without the front-end and tells the person at the terminal once. Slow (pip
installs, from pip's cache once warm): marked ``install``; scripts/test runs them.

And the lower bounds pyproject.toml declares are the releases scripts/test installs in
.venv-oldest (tests/constraints-oldest.txt).
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What a build needs besides Python (pip runs sh and git for some requirements).
TOOLS = ("sh", "bash", "env", "git", "dirname", "uname", "cat", "ls", "rm", "mkdir", "cp")
NODE_TOOLS = ("node", "nodejs", "npm", "npx", "jlpm", "yarn", "corepack")
SKIPPED = "sif_magic: the JupyterLab front-end was SKIPPED"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def no_node_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of links to the tools a build needs, and to nothing of Node.js."""
    folder = tmp_path_factory.mktemp("no-node-bin")
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (folder / tool).symlink_to(found)
    return folder


def fresh_venv(where: Path, no_node_bin: Path) -> tuple[Path, dict[str, str]]:
    """A new venv and the environment of a shell on a machine without Node.js."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    path = f"{where / 'bin'}:{no_node_bin}"
    for tool in NODE_TOOLS:
        assert shutil.which(tool, path=path) is None, f"{tool} is still on PATH"
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "SIF_MAGIC_HOME")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
    env.update(PATH=path, VIRTUAL_ENV=str(where), SIF_MAGIC_WIDGETS="1")
    return where, env


def run(cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )
    return done


def run_on_a_terminal(cmd: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal as its controlling terminal, as a person
    typing it would, and return its exit code and everything the terminal showed."""
    import fcntl
    import termios

    controller, terminal = pty.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        cmd,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        start_new_session=True,
        preexec_fn=take_terminal,  # noqa: PLW1509 - after setsid, before exec
    )
    os.close(terminal)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: every holder of the terminal has closed it
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    code = proc.wait(timeout=timeout)
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r", "")


@pytest.fixture(scope="module")
def release_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel scripts/build-wheel makes (with Node.js, as a release is built; it
    rebuilds sif_magic/labextension/ in the checkout, the production build)."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-wheel"), str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"scripts/build-wheel failed:\n{done.stdout}{done.stderr}"
    wheels = list(out.glob("sif_magic-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


KERNEL_RUN = textwrap.dedent(
    """
    import json, sys
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext sif_magic\\n%sif_config processes=2 progress_delay=0"),
        nbformat.v4.new_code_cell(
            "%%sifmap x in range(6) -o ys\\nimport time\\ntime.sleep(0.2)\\n"
            "print('working on', x)\\nx * x"
        ),
        nbformat.v4.new_code_cell("import sif_magic; print(ys, sif_magic.__file__)"),
        nbformat.v4.new_code_cell("%sif_logs 4"),
    ]
    NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=True).execute()
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {}).values()
    modules = sorted({f'{m["model_module"]}:{m["model_name"]}' for m in models})
    outputs = [
        [o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in c.outputs]
        for c in nb.cells
    ]
    json.dump({"outputs": outputs, "modules": modules}, sys.stdout)
    """
)


@pytest.mark.install
@pytest.mark.timeout(600)  # pip installs ~100 packages: a net against a hung install only
def test_release_wheel_installs_and_runs_without_nodejs(
    release_wheel: Path, no_node_bin: Path, tmp_path: Path
) -> None:
    venv, env = fresh_venv(tmp_path / "venv", no_node_bin)
    python = str(venv / "bin" / "python")
    # jupyterlab (with ipykernel and nbclient) is what a user has to list extensions and run
    # (--no-compile: no .pyc for the ~100 packages up front; Python writes them as used)
    run(
        [python, "-m", "pip", "install", "-q", "--no-compile", str(release_wheel), "jupyterlab"],
        env,
    )

    done = run([str(venv / "bin" / "jupyter"), "labextension", "list"], env)
    listed = ANSI.sub("", done.stdout + done.stderr)  # it prints the list on stderr
    line = next((ln for ln in listed.splitlines() if "sif-magic" in ln), "")
    assert "enabled" in line and "OK" in line and "(python, sif_magic)" in line, listed
    assert str(venv) in listed.split(line)[0], listed  # found in the fresh venv's share/

    done = run([python, "-c", KERNEL_RUN], env, cwd=tmp_path, timeout=300)
    result = json.loads(done.stdout)
    printed = "".join(result["outputs"][2])
    assert "[0, 1, 4, 9, 16, 25]" in printed, result
    assert str(venv) in printed, result  # the wheel's sif_magic, not the checkout's
    assert "working on 4" in "".join(result["outputs"][3]), result
    # the live view used the front-end's own widget module
    assert "sif-magic:CallGridModel" in result["modules"], result


def _source_tree(dest: Path) -> Path:
    """The checkout as a fresh clone has it: no venvs, node_modules or built front-end."""
    skip = {".git", "node_modules", "dist", "build", "__pycache__", "test-artifacts", "lib"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        dropped = {n for n in names if n in skip or n.startswith(".venv")}
        if Path(folder).resolve() == ROOT / "sif_magic":
            dropped.add("labextension")  # the built front-end
        return dropped

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    assert not (dest / "sif_magic" / "labextension").exists()
    return dest


@pytest.mark.install
@pytest.mark.timeout(600)
def test_source_install_without_nodejs_skips_the_front_end_and_says_so(
    no_node_bin: Path, tmp_path: Path
) -> None:
    source = _source_tree(tmp_path / "sif_magic-src")
    venv, env = fresh_venv(tmp_path / "venv", no_node_bin)
    env["TERM"] = "dumb"
    python = str(venv / "bin" / "python")

    pip = [python, "-m", "pip", "install", "--no-compile", str(source)]
    code, shown = run_on_a_terminal(pip, env)
    assert code == 0, shown
    # pip hides a build's output; the person at the terminal still reads this, once
    assert shown.count(SKIPPED) == 1, shown
    said = shown[shown.index(SKIPPED) :]
    assert "Node.js (`node`) is not on PATH" in said, said
    assert "scripts/build-wheel" in said and "pip install sif_magic-" in said, said
    assert "Successfully installed" in shown and "sif_magic-" in shown, shown

    assert not (venv / "share" / "jupyter" / "labextensions" / "sif-magic").exists()
    # the package itself works: calls run on the local backend
    hello = run([str(venv / "bin" / "sif-magic"), "hello"], env, cwd=tmp_path, timeout=300)
    assert "OK: 8 results in order" in hello.stdout, hello.stdout


def test_every_lower_bound_is_the_release_the_oldest_env_pins() -> None:
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "tests" / "constraints-oldest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[canonicalize_name(name)] = Version(pinned)
    runtime = [Requirement(r) for r in project["dependencies"]]
    tools = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    plots = [Requirement(r) for r in project["optional-dependencies"]["plots"]]
    for req in runtime + plots + [r for r in tools if canonicalize_name(r.name) in pins]:
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert floors, f"{req}: pyproject.toml gives no lower bound"
        name = canonicalize_name(req.name)
        assert pins.get(name) == floors[0], (
            f"pyproject.toml says {req}, tests/constraints-oldest.txt pins {pins.get(name)}"
        )
    # + matplotlib's numpy, ipykernel, nbclient, nbformat, pytest
    assert len(pins) == len(runtime) + len(plots) + 5, pins
