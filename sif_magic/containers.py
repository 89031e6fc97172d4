"""Container runtimes: the only place that knows their command lines.

A runtime is one ``Container`` subclass and one entry of ``RUNTIMES``, keyed by
its ``--container`` name. Three places run what it builds, and build no
container argv themselves:

- ``launch/local.py`` (``workers start/stop``): ``start_argv`` once, then
  ``worker_argv`` as the worker's foreground process (stopped by its pid), then
  ``stop_argv``;
- ``launch/slurm.py`` (the sbatch script): ``script_exports`` at the top,
  ``node_lines`` in the function that each node runs;
- ``images/build.py`` and ``images/labels.py`` (``runtime build`` / ``inspect``):
  ``build_argv``, ``inspect_argvs``.

Singularity and Apptainer share one command line (``Singularity``, under either
name; ``auto`` takes whichever is on PATH); ``none`` runs ``python -m sif_magic
worker`` as a plain process. The broker URL never appears in an argv: it travels
in an env file of mode 600, or in the environment.

Names, paths and binds are checked with ``sif_magic.validate`` before they get
here or as they arrive (``check_image``, ``check_binds``, ``WorkerRun``).

Standard library only. Nothing here holds state or starts a thread: the
functions build lists and strings for whichever thread calls them (the CLI's, or
the kernel's through ``%sif_workers``).
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .validate import check_bind, check_image, check_name


def check_binds(binds: Sequence[str]) -> list[str]:
    """``SRC[:DST[:OPTS]]`` entries, each part a path of ``validate``'s rule."""
    return [check_bind(b) for b in binds]


_EXPANSION = re.compile(r'"\$[A-Za-z_][A-Za-z0-9_]*"')


def shell_words(argv: Sequence[str]) -> str:
    """``argv`` as one line of a bash script: a word that is a quoted expansion of one
    variable (``"$tool"``, ``"$image"``) stays as it is; the rest are quoted."""
    return " ".join(w if _EXPANSION.fullmatch(w) else shlex.quote(w) for w in argv)


# Lines of a node's script (bash): the secrets enter the container through the
# environment, so no path of the host has to be bound into it.
SECRETS_INTO_ENV = [
    'if [ -n "${SIF_MAGIC_AMQP_URL_FILE:-}" ]; then',
    '    SIF_MAGIC_AMQP_URL="$(cat "$SIF_MAGIC_AMQP_URL_FILE")"',
    "    export SIF_MAGIC_AMQP_URL; unset SIF_MAGIC_AMQP_URL_FILE",
    "fi",
    'if [ -n "${SIF_MAGIC_KEY_FILE:-}" ]; then',
    '    SIF_MAGIC_KEY="$(cat "$SIF_MAGIC_KEY_FILE")"; export SIF_MAGIC_KEY',
    "    unset SIF_MAGIC_KEY_FILE",
    "fi",
]


# Lines of a node's script (bash, ``set -euo pipefail``) that copy $SIF_MAGIC_IMAGE to
# node-local storage and set $image to the copy. Other users of the node must not be
# able to swap it between the copy and the run: the copy goes to a fresh folder of
# mode 700 (mktemp -d, never a name known in advance), under a folder whose every
# ancestor belongs to this user or root and is writable by nobody else unless sticky
# (like /tmp); the copy's sha256 must be that of the bytes read from the image.
STAGE_IMAGE = [
    'base="${SLURM_TMPDIR:-$SIF_MAGIC_STAGE_DIR}"',
    '[ -d "$base" ] || mkdir -p -m 700 "$base"',
    'base="$(CDPATH="" cd -P -- "$base" && pwd -P)"',
    'd="$base"',
    "while :; do",
    '    read -r owner mode <<<"$(stat -c "%u %a" "$d")"',
    '    if [ "$owner" != "$(id -u)" ] && [ "$owner" != 0 ]; then',
    '        echo "sif-magic: not staging the image in $base on $(hostname): $d belongs to'
    ' $(stat -c %U "$d") (uid $owner), not to you, who could swap the image. Use'
    ' --stage-dir with a folder of yours (default /tmp)" >&2',
    "        exit 2",
    "    fi",
    "    if (( 8#$mode & 8#022 )) && ! (( 8#$mode & 8#1000 )); then",
    '        echo "sif-magic: not staging the image in $base on $(hostname): others can write to'
    " $d (mode $mode, not sticky) and could swap the image. chmod go-w (or +t) it, or use"
    ' --stage-dir with a folder of yours (default /tmp)" >&2',
    "        exit 2",
    "    fi",
    '    [ "$d" = / ] && break',
    '    d="$(dirname "$d")"',
    "done",
    'stage="$(mktemp -d "$base/sif_magic-$(id -un)-$SLURM_JOB_ID.XXXXXXXX")"',
    "trap 'rm -rf \"$stage\"' EXIT",
    'image="$stage/$(basename "$SIF_MAGIC_IMAGE")"',
    'want="$(tee "$image" < "$SIF_MAGIC_IMAGE" | sha256sum)" || {',
    '    echo "sif-magic: could not copy $SIF_MAGIC_IMAGE to $image on $(hostname)" >&2; exit 2; }',
    'if [ "$(sha256sum < "$image")" != "$want" ]; then',
    '    echo "sif-magic: the copy $image on $(hostname) differs from $SIF_MAGIC_IMAGE:'
    ' not running it" >&2',
    "    exit 2",
    "fi",
]


@dataclass(frozen=True)
class WorkerRun:
    """One worker on this machine, as its runtime's command lines need it."""

    tool: str  # the runtime's executable, as ``Container.find`` returned it
    image: str = ""
    name: str = ""  # of the instance / container; '' without one
    binds: Sequence[str] = ()  # SRC[:DST[:OPTS]]
    nv: bool = False  # NVIDIA GPUs
    fakeroot: bool = False
    env_file: str = ""  # the worker's settings (mode 600), when ``uses_env_file``
    python: str = ""  # for ``none``

    def __post_init__(self) -> None:
        if self.name:
            check_name(self.name, "instance name")


class Container:
    """How one container runtime is called. A ``tool`` argument is the path of its
    executable, as ``find`` returned it (or a shell expansion in a script)."""

    #: settings reach the worker in an env file of mode 600 (else: its environment)
    uses_env_file = True
    #: in a failed ``stop_argv``'s stderr (lower case): the container was gone already
    gone_text = ""
    #: can ``runtime build`` use it
    builds = False

    def __init__(self, name: str, executables: Sequence[str] = ()) -> None:
        self.name = name
        self.executables = tuple(executables)

    def which(self) -> str:
        """The path of the first of ``executables`` on PATH ('' when none is)."""
        for exe in self.executables:
            path = shutil.which(exe)
            if path:
                return path
        return ""

    def find(self) -> str:
        """``which()``, or a ConfigError that says how to get the tool."""
        path = self.which()
        if not path:
            raise ConfigError(
                f"{' or '.join(self.executables)} not found on PATH. Load it (e.g. `module load "
                f"{self.executables[0]}`), or run workers without a container: --container none"
            )
        return path

    def check_image(self, image: str, *, here: bool) -> None:
        """ConfigError when ``image`` cannot be run (``here``: it must be on this machine)."""
        if not image:
            raise ConfigError("--image NAME.sif is needed, or --container none to run without one")
        check_image(image)
        if here and not Path(image).is_file():
            raise ConfigError(f"--image {image}: no such file (build it: sif-magic runtime build)")

    def describe(self, run: WorkerRun) -> str:
        """What the worker reports as its container (``SIF_MAGIC_CONTAINER``)."""
        raise NotImplementedError

    def env_file_text(self, env: Mapping[str, str]) -> str:
        """An env file's body: ``NAME='value'`` lines, quoted for a POSIX shell."""
        lines = ["# sif_magic worker settings (mode 600: may hold the broker password)"]
        for key, value in env.items():
            if not key.isidentifier():
                raise ConfigError(f"environment variable name {key!r} is not valid")
            lines.append(f"{key}={shlex.quote(str(value))}")
        return "\n".join(lines) + "\n"

    # -- a worker on this machine (launch/local.py) --------------------------------

    def start_argv(self, run: WorkerRun) -> list[str] | None:
        """What to run (and wait for) before the worker; None: nothing. The binds,
        GPUs and env file go here or on ``worker_argv``, where the runtime takes them."""
        return None

    def worker_argv(self, run: WorkerRun) -> list[str]:
        """The worker's process: it runs in the foreground until SIGTERM."""
        raise NotImplementedError

    def stop_argv(self, run: WorkerRun) -> list[str] | None:
        """What to run once the worker's process has ended; None: nothing."""
        return None

    # -- a worker on a SLURM node (launch/slurm.py) --------------------------------

    def script_exports(self, image: str, stage_dir: str, python: str) -> list[str]:
        """``export`` lines at the top of the sbatch script."""
        raise NotImplementedError

    def node_lines(self, binds: Sequence[str], nv: bool) -> list[str]:
        """The end of the function each node runs (bash): start the worker in the foreground."""
        raise NotImplementedError

    # -- images (images/build.py, images/labels.py) -----------------------------------

    def build_argv(self, tool: str, image: str, definition: str, mode: str = "") -> list[str]:
        raise ConfigError(f"--container {self.name} builds no images")

    def inspect_argvs(self, tool: str, image: str) -> tuple[list[str], list[str]]:
        """Two argv: one prints the image's labels as JSON, one its definition file."""
        raise ConfigError(f"--container {self.name} cannot inspect images")


class Singularity(Container):
    """Singularity and Apptainer. Here: an instance per worker (``instance start``),
    whose worker runs as ``run --env-file FILE instance://NAME``. On a SLURM node:
    the image is copied to a private folder of node-local storage (``STAGE_IMAGE``),
    checked, and run in the foreground with
    ``run`` (no instance: its daemon would escape the job step, and ``scancel``
    could leave it behind on sites that track processes by parent)."""

    gone_text = "no instance found"
    builds = True

    def describe(self, run: WorkerRun) -> str:
        return f"{Path(run.tool).name} instance://{run.name}"

    def start_argv(self, run: WorkerRun) -> list[str]:
        """``singularity instance start [--fakeroot] [--nv] [--bind ..] IMAGE NAME``
        (the env file goes to ``run``)."""
        argv = [run.tool, "instance", "start"]
        if run.fakeroot:
            argv.append("--fakeroot")
        if run.nv:
            argv.append("--nv")
        for b in check_binds(run.binds):
            argv += ["--bind", b]
        return [*argv, run.image, run.name]

    def run_argv(
        self,
        tool: str,
        target: str,
        *,
        binds: Sequence[str] = (),
        nv: bool = False,
        env_file: str = "",
    ) -> list[str]:
        """``singularity run [--bind ..] [--nv] [--env-file FILE] TARGET`` (an image or
        ``instance://NAME``)."""
        argv = [tool, "run"]
        for b in check_binds(binds):
            argv += ["--bind", b]
        if nv:
            argv.append("--nv")
        if env_file:
            argv += ["--env-file", env_file]
        return [*argv, target]

    def worker_argv(self, run: WorkerRun) -> list[str]:
        """``run --env-file FILE instance://NAME`` (binds and GPUs: the instance has them)."""
        return self.run_argv(run.tool, f"instance://{run.name}", env_file=run.env_file)

    def stop_argv(self, run: WorkerRun) -> list[str]:
        return [run.tool, "instance", "stop", run.name]

    def script_exports(self, image: str, stage_dir: str, python: str) -> list[str]:
        return [
            f"export SIF_MAGIC_IMAGE={shlex.quote(str(Path(image).expanduser().resolve()))}",
            f"export SIF_MAGIC_STAGE_DIR={shlex.quote(stage_dir)}  # without $SLURM_TMPDIR",
        ]

    def node_lines(self, binds: Sequence[str], nv: bool) -> list[str]:
        find = " || ".join(f"command -v {n}" for n in self.executables)
        run = self.run_argv('"$tool"', '"$image"', binds=binds, nv=nv)
        return [
            f'tool="$({find} || true)"',
            f'[ -n "$tool" ] || {{ echo "sif-magic: no {" or ".join(self.executables)} on '
            "$(hostname): add --setup 'module load apptainer'\" >&2; exit 2; }",
            *STAGE_IMAGE,
            'export SIF_MAGIC_CONTAINER="$(basename "$tool") run $image"',
            "# Secrets enter the container through the environment: no path to bind.",
            *SECRETS_INTO_ENV,
            'echo "sif-magic: worker $SIF_MAGIC_WORKER_ID starts on $(hostname) from $image"',
            shell_words(run),
        ]

    def build_argv(self, tool: str, image: str, definition: str, mode: str = "") -> list[str]:
        """``[tool, 'build', (--fakeroot|--remote), image, definition]``, under sudo for mode sudo."""
        if mode not in ("", "fakeroot", "remote", "sudo"):
            raise ConfigError(f"build mode {mode!r}: use fakeroot, remote or sudo")
        argv = [tool, "build"]
        if mode in ("fakeroot", "remote"):
            argv.append("--" + mode)
        argv += [image, definition]
        return ["sudo", *argv] if mode == "sudo" else argv

    def inspect_argvs(self, tool: str, image: str) -> tuple[list[str], list[str]]:
        return [tool, "inspect", "--json", "--labels", image], [tool, "inspect", "--deffile", image]


class NoContainer(Container):
    """``--container none``: the worker is ``PYTHON -m sif_magic worker``, a plain
    process; its settings come in its environment."""

    uses_env_file = False

    def find(self) -> str:
        return ""

    def check_image(self, image: str, *, here: bool) -> None:
        return None

    def describe(self, run: WorkerRun) -> str:
        return "none"

    def worker_argv(self, run: WorkerRun) -> list[str]:
        return [run.python, "-m", "sif_magic", "worker"]

    def script_exports(self, image: str, stage_dir: str, python: str) -> list[str]:
        return [f"export SIF_MAGIC_PYTHON={shlex.quote(python)}"]

    def node_lines(self, binds: Sequence[str], nv: bool) -> list[str]:
        return [
            "export SIF_MAGIC_CONTAINER=none",
            'echo "sif-magic: worker $SIF_MAGIC_WORKER_ID starts on $(hostname)"',
            shell_words(self.worker_argv(WorkerRun("", python='"$SIF_MAGIC_PYTHON"'))),
        ]


#: The runtimes by ``--container`` name, in the order the help lists them (the
#: commands take their choices from here). ``auto``: Apptainer, else Singularity,
#: whichever is on PATH (on a SLURM node: on that node's PATH).
RUNTIMES: dict[str, Container] = {
    "auto": Singularity("auto", ("apptainer", "singularity")),
    "apptainer": Singularity("apptainer", ("apptainer",)),
    "singularity": Singularity("singularity", ("singularity",)),
    "none": NoContainer("none"),
}


def get(name: str) -> Container:
    """The runtime called ``name`` (a ``--container`` value); ConfigError if none is."""
    try:
        return RUNTIMES[name]
    except KeyError:
        names = list(RUNTIMES)
        raise ConfigError(
            f"--container {name!r}: use {', '.join(names[:-1])} or {names[-1]}"
        ) from None


def builders() -> list[str]:
    """``runtime build --builder`` choices: the runtimes that build, each one tool."""
    return [n for n, c in RUNTIMES.items() if c.builds and len(c.executables) == 1]
