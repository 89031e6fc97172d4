"""The Singularity/Apptainer command lines that start, run and stop worker instances.

Only argv lists are built here; the broker URL never appears in them: it travels
in an ``--env-file`` of mode 600 (or the environment).
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Mapping, Sequence

from .errors import ConfigError

TOOLS = ("apptainer", "singularity")


def find_tool(container: str = "auto") -> str:
    """The path of ``apptainer``/``singularity`` for ``--container`` (auto: either)."""
    names = TOOLS if container == "auto" else (container,)
    if container not in ("auto", *TOOLS):
        raise ConfigError(f"--container {container!r}: use auto, apptainer, singularity or none")
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ConfigError(
        f"{' or '.join(names)} not found on PATH. Load it (e.g. `module load apptainer`), "
        "or run workers without a container: --container none"
    )


def check_binds(binds: Sequence[str]) -> list[str]:
    """``SRC[:DST[:OPTS]]`` entries, checked for the obvious mistakes."""
    for b in binds:
        if not b or b.startswith(":") or b.count(":") > 2:
            raise ConfigError(f"--bind {b!r}: use SRC, SRC:DST or SRC:DST:ro")
    return list(binds)


def instance_start_argv(
    tool: str,
    image: str,
    name: str,
    *,
    binds: Sequence[str] = (),
    nv: bool = False,
    fakeroot: bool = False,
    env_file: str = "",
) -> list[str]:
    """``singularity instance start [--fakeroot] [--nv] [--bind ..] IMAGE NAME``."""
    argv = [tool, "instance", "start"]
    if fakeroot:
        argv.append("--fakeroot")
    if nv:
        argv.append("--nv")
    for b in check_binds(binds):
        argv += ["--bind", b]
    if env_file:
        argv += ["--env-file", env_file]
    return [*argv, image, name]


def run_argv(tool: str, target: str, *, env_file: str = "", binds: Sequence[str] = ()) -> list[str]:
    """``singularity run [--env-file FILE] [--bind ..] TARGET`` (an image or instance://NAME)."""
    argv = [tool, "run"]
    for b in check_binds(binds):
        argv += ["--bind", b]
    if env_file:
        argv += ["--env-file", env_file]
    return [*argv, target]


def instance_stop_argv(tool: str, name: str) -> list[str]:
    return [tool, "instance", "stop", name]


def env_file_text(env: Mapping[str, str]) -> str:
    """An ``--env-file`` body: ``NAME='value'`` lines, quoted for a POSIX shell."""
    lines = ["# sif_magic worker settings (mode 600: may hold the broker password)"]
    for key, value in env.items():
        if not key.isidentifier():
            raise ConfigError(f"environment variable name {key!r} is not valid")
        lines.append(f"{key}={shlex.quote(str(value))}")
    return "\n".join(lines) + "\n"
