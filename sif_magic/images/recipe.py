"""What goes into a worker image: ``ImageSpec``, its Singularity definition file,
the same image as a Dockerfile, and the entry script that starts the worker.

Its labels record the versions that decide whether it can run the kernel's
functions (``kernel_versions``). Standard library only; no state, no threads.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .._version import __version__
from ..errors import ConfigError
from ..protocol import VERSION as PROTOCOL_VERSION
from ..validate import check_all, check_image, check_path, check_runtime, check_spec

LABEL_PREFIX = "org.sif-magic."
VENV = "/opt/sif_magic/venv"
ENTRY = "/usr/local/bin/sif-magic-worker"
DEFAULT_MOUNTS = ("/scratch",)


def kernel_versions() -> dict[str, str]:
    """The versions on this side (the kernel's), keyed like the image labels."""
    try:
        cloudpickle = metadata.version("cloudpickle")
    except metadata.PackageNotFoundError:  # pragma: no cover - a dependency of ours
        cloudpickle = ""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "cloudpickle": cloudpickle,
        "version": __version__,
        "protocol": str(PROTOCOL_VERSION),
    }


@dataclass
class ImageSpec:
    """What goes into a worker image."""

    runtime: str = "worker.sif"
    python: str = field(default_factory=lambda: kernel_versions()["python"])
    base: str = ""  # default: docker://python:<python>-slim
    requirements: str = ""  # a requirements.txt copied into the image
    packages: list[str] = field(default_factory=list)  # pip requirement strings
    apt: list[str] = field(default_factory=list)  # Debian/Ubuntu packages
    mounts: list[str] = field(default_factory=list)  # bind targets to create
    sif_magic: str = ""  # pip spec, or a local wheel/sdist/source dir
    cloudpickle: str = field(default_factory=lambda: kernel_versions()["cloudpickle"])

    def __post_init__(self) -> None:
        if not re.fullmatch(r"3\.\d+", self.python):
            raise ConfigError(f"--python {self.python!r}: give a minor version such as 3.11")
        # every value below is written into %post, %files, labels or the runscript
        check_runtime(self.runtime)
        if self.base:
            check_image(self.base, "--base")
        check_all(
            "spec",
            self.packages,
            "--packages entry",
            "Environment markers and pip options go in a file: --requirements FILE",
        )
        check_all("spec", self.apt, "--apt entry")
        check_all("path", self.mounts, "--mount")
        if self.requirements:
            check_path(self.requirements, "--requirements")
        if self.sif_magic:
            check_spec(self.sif_magic, "--sif-magic", "Give a wheel, a source folder or a pip spec")
        if not self.base:
            self.base = f"docker://python:{self.python}-slim"
        if not self.sif_magic:
            self.sif_magic = installed_source() or f"sif_magic=={__version__}"
            check_spec(
                self.sif_magic, "sif_magic's source", "Pass --sif-magic with a wheel or spec"
            )
        if self.requirements and not Path(self.requirements).is_file():
            raise ConfigError(f"--requirements {self.requirements}: no such file")
        for m in self.mounts:
            if not m.startswith("/"):
                raise ConfigError(f"mount point {m!r} must be an absolute path in the image")

    def wheel_for_image(self, out_dir: str | Path) -> Path | None:
        """When sif_magic comes from a local source directory, build a wheel of it in
        ``out_dir`` and install that in the image (a source tree would bring its
        node_modules and need Node.js to build). Returns the wheel, or None."""
        src = self.local_sif_magic
        if src is None or not src.is_dir():
            return None
        out = Path(out_dir).resolve()
        out.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = sorted(out.glob("sif_magic-*.whl"), key=lambda p: p.stat().st_mtime)
        if res.returncode != 0 or not wheels:
            raise ConfigError(
                f"could not build a wheel of sif_magic from {src}: {res.stderr.strip()[-500:]}; "
                "pass --sif-magic with a wheel or a pip requirement instead"
            )
        self.sif_magic = str(wheels[-1])
        return wheels[-1]

    @property
    def local_sif_magic(self) -> Path | None:
        p = Path(self.sif_magic).expanduser()
        return p if p.exists() else None

    def labels(self) -> dict[str, str]:
        return {
            LABEL_PREFIX + "runtime": self.runtime,
            LABEL_PREFIX + "python": self.python,
            LABEL_PREFIX + "cloudpickle": self.cloudpickle,
            LABEL_PREFIX + "version": __version__,
            LABEL_PREFIX + "protocol": str(PROTOCOL_VERSION),
        }

    def all_mounts(self) -> list[str]:
        return list(dict.fromkeys([*DEFAULT_MOUNTS, *self.mounts]))


def installed_source() -> str:
    """The local directory sif_magic was installed from (``pip install -e .`` or
    ``pip install /path``), or '' when it came from a package index."""
    try:
        direct = metadata.distribution("sif_magic").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        direct = None
    if not direct:
        return ""
    url = str(json.loads(direct).get("url", ""))
    if not url.startswith("file://"):
        return ""
    import urllib.parse

    path = Path(urllib.parse.unquote(url[len("file://") :]))
    return str(path) if path.exists() else ""


def entry_script(runtime: str) -> str:
    """The shell script that starts the worker from environment variables."""
    q = shlex.quote(check_runtime(runtime))
    return f"""#!/bin/sh
# Start a sif_magic worker. Settings come from the environment:
#   SIF_MAGIC_AMQP_URL_FILE (a file of mode 600) or SIF_MAGIC_AMQP_URL; AMQP_URL /
#   AMQP_URL_FILE are accepted as short names. SIF_MAGIC_RUNTIME (default {q}),
#   SIF_MAGIC_PROCESSES (default: SLURM_CPUS_PER_TASK, else the CPUs),
#   SIF_MAGIC_KEY_FILE or SIF_MAGIC_KEY, SIF_MAGIC_WORKER_ID.
if [ -z "${{SIF_MAGIC_AMQP_URL:-}}${{SIF_MAGIC_AMQP_URL_FILE:-}}" ]; then
    if [ -n "${{AMQP_URL:-}}" ]; then
        export SIF_MAGIC_AMQP_URL="$AMQP_URL"
    elif [ -n "${{AMQP_URL_FILE:-}}" ]; then
        export SIF_MAGIC_AMQP_URL_FILE="$AMQP_URL_FILE"
    else
        echo "sif-magic-worker: no broker URL: set SIF_MAGIC_AMQP_URL_FILE (a file of mode 600)" \\
             "or SIF_MAGIC_AMQP_URL (or AMQP_URL)" >&2
        exit 2
    fi
fi
if [ -z "${{SIF_MAGIC_RUNTIME:-}}" ]; then SIF_MAGIC_RUNTIME={q}; fi
export SIF_MAGIC_RUNTIME
if [ -z "${{SIF_MAGIC_PROCESSES:-}}" ] && [ -n "${{SLURM_CPUS_PER_TASK:-}}" ]; then
    export SIF_MAGIC_PROCESSES="$SLURM_CPUS_PER_TASK"
fi
export SIF_MAGIC_CONTAINER="${{SIF_MAGIC_CONTAINER:-${{APPTAINER_CONTAINER:-${{SINGULARITY_CONTAINER:-container}}}}}}"
exec {VENV}/bin/python -m sif_magic worker "$@"
"""


def _install_lines(spec: ImageSpec, src_dir: str) -> list[str]:
    """Shell lines (run as root at build time) that install Python and the worker."""
    lines = ["set -eu", "export DEBIAN_FRONTEND=noninteractive"]
    if spec.apt:
        lines += [
            "apt-get update",
            "apt-get install -y --no-install-recommends " + " ".join(map(shlex.quote, spec.apt)),
            "rm -rf /var/lib/apt/lists/*",
        ]
    py = spec.python
    lines += [
        f'PY="$(command -v python{py} || command -v python3 || true)"',
        f'[ -n "$PY" ] || {{ echo "sif_magic: the base image has no python3: use --base'
        f' docker://python:{py}-slim or add --apt python3 python3-venv" >&2; exit 1; }}',
        f'"$PY" -m venv {VENV}',
        f'have="$({VENV}/bin/python -c \'import sys; print("%d.%d" % sys.version_info[:2])\')"',
        f'[ "$have" = "{py}" ] || {{ echo "sif_magic: the image has Python $have, the kernel'
        f' needs {py}: choose a base image with that Python (--base)" >&2; exit 1; }}',
        f"{VENV}/bin/pip install --no-cache-dir --upgrade pip",
    ]
    reqs = [f"cloudpickle=={spec.cloudpickle}" if spec.cloudpickle else "cloudpickle", "pika>=1.3"]
    reqs += spec.packages
    pip = f"{VENV}/bin/pip install --no-cache-dir " + " ".join(map(shlex.quote, reqs))
    if spec.requirements:
        pip += f" -r {src_dir}/requirements.txt"
    lines.append(pip)
    local = spec.local_sif_magic
    target = f"{src_dir}/{local.name}" if local else spec.sif_magic
    # --no-deps: the worker needs only pika and cloudpickle, not IPython & co.
    lines.append(f"{VENV}/bin/pip install --no-cache-dir --no-deps {shlex.quote(target)}")
    lines.append(f'{VENV}/bin/python -c "import sif_magic, pika, cloudpickle"')
    lines.append("mkdir -p " + " ".join(map(shlex.quote, spec.all_mounts())))
    return lines


def definition_file(spec: ImageSpec) -> str:
    """A Singularity/Apptainer definition file (``Bootstrap: docker``) for ``spec``."""
    base = spec.base
    if base.startswith("docker://"):
        header = f"Bootstrap: docker\nFrom: {base[len('docker://') :]}"
    elif base.startswith("library://"):
        header = f"Bootstrap: library\nFrom: {base[len('library://') :]}"
    elif base.endswith(".sif") or base.startswith("localimage://"):
        header = f"Bootstrap: localimage\nFrom: {base.removeprefix('localimage://')}"
    else:
        header = f"Bootstrap: docker\nFrom: {base}"
    src = "/opt/sif_magic/src"
    files = []
    if spec.requirements:
        files.append(f"{Path(spec.requirements).resolve()} {src}/requirements.txt")
    if spec.local_sif_magic:
        files.append(f"{spec.local_sif_magic.resolve()} {src}/{spec.local_sif_magic.name}")
    post = _install_lines(spec, src)
    runscript = entry_script(spec.runtime).splitlines()[1:]  # Singularity adds #!/bin/sh
    ind = "    "
    out = [
        f"# Worker image for sif_magic runtime {spec.runtime!r}, written by "
        f"`sif-magic runtime def` {__version__}.",
        f"# Build: sif-magic runtime build {spec.runtime} {Path(spec.runtime).stem}.def",
        header,
        "",
    ]
    if files:
        out += ["%files", *(ind + f for f in files), ""]
    out += ["%post", *(ind + line if line else "" for line in post), ""]
    out += [
        "%environment",
        f"{ind}export PATH={VENV}/bin:$PATH",
        f"{ind}export PYTHONUNBUFFERED=1",
        f"{ind}export LC_ALL=C.UTF-8",
        "",
        "%runscript",
        *(ind + line if line else "" for line in runscript),
        "",
        "%startscript",
        f"{ind}# `instance start` starts a worker only when asked (SIF_MAGIC_AUTOSTART=1); sif-magic's",
        f"{ind}# launcher runs it with `singularity run instance://NAME` instead, to stop it by pid.",
        f'{ind}if [ "${{SIF_MAGIC_AUTOSTART:-0}}" = 1 ]; then',
        f"{ind}    exec /.singularity.d/runscript",
        f"{ind}fi",
        "",
        "%labels",
        *(f"{ind}{k} {v}" for k, v in spec.labels().items()),
        "",
        "%help",
        f"{ind}sif_magic worker for runtime {spec.runtime}. Start it with the broker URL in a",
        f"{ind}file of mode 600 (never on the command line):",
        f"{ind}    SIF_MAGIC_AMQP_URL_FILE=~/.sif_magic/amqp_url singularity run IMAGE",
        "",
    ]
    return "\n".join(out)


def dockerfile(spec: ImageSpec) -> str:
    """The same image as a Dockerfile, for ``docker build``, push, ``singularity pull``."""
    base = spec.base.removeprefix("docker://")
    if "://" in base:
        raise ConfigError(f"a Dockerfile needs a docker:// base image, not {spec.base!r}")
    src = "/opt/sif_magic/src"
    out = [
        f"# Worker image for sif_magic runtime {spec.runtime!r}, written by "
        f"`sif-magic runtime def --dockerfile` {__version__}.",
        f"FROM {base}",
        *(f'LABEL {k}="{v}"' for k, v in spec.labels().items()),
    ]
    if spec.requirements:
        out.append(f"COPY {Path(spec.requirements).name} {src}/requirements.txt")
    if spec.local_sif_magic:
        out.append(f"COPY {spec.local_sif_magic.name} {src}/{spec.local_sif_magic.name}")
    run = _install_lines(spec, src)
    out.append("RUN " + " && \\\n    ".join(x for x in run if not x.startswith("set ")))
    # One printf line (format escapes for newlines): no BuildKit heredocs needed.
    script = entry_script(spec.runtime).replace("\\", "\\\\").replace("%", "%%")
    script = script.replace("\n", "\\n")
    out.append(f"RUN printf {shlex.quote(script)} > {ENTRY} && chmod 755 {ENTRY}")
    out += [
        f"ENV PATH={VENV}/bin:$PATH PYTHONUNBUFFERED=1 LC_ALL=C.UTF-8",
        f'ENTRYPOINT ["{ENTRY}"]',
        "",
    ]
    return "\n".join(out)
