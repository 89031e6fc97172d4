"""Worker images: Singularity definition files, Dockerfiles, ``build`` and ``inspect``.

An image holds only the environment (Python, sif_magic's worker, the user's
packages): code travels with each call, data through bind paths. Its labels
record the versions that decide whether it can run the kernel's functions
(Python minor, cloudpickle major). The container tools' command lines come from
``sif_magic.containers``. Standard library only; no state, no threads (the CLI's
thread calls it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from . import containers
from ._version import __version__
from .errors import ConfigError
from .protocol import VERSION as PROTOCOL_VERSION

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


def runtime_name(image: str | os.PathLike[str]) -> str:
    """The runtime (task queue) name of an image: its file name, e.g. ``ml.sif``."""
    return Path(image).name


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
        if not self.base:
            self.base = f"docker://python:{self.python}-slim"
        if not self.sif_magic:
            self.sif_magic = installed_source() or f"sif_magic=={__version__}"
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
    q = shlex.quote(runtime)
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
export SIF_MAGIC_RUNTIME="${{SIF_MAGIC_RUNTIME:-{q}}}"
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


# -- build ---------------------------------------------------------------------


def build_command(
    image: str, definition: str, mode: str = "", builder: str = ""
) -> list[str] | None:
    """The argv that builds ``image`` from ``definition`` with ``builder`` (default:
    apptainer, else singularity), or None when it is not on PATH."""
    runner = containers.get(builder or "auto")
    tool = runner.which()
    return runner.build_argv(tool, image, definition, mode) if tool else None


def build_instructions(image: str, definition: str, mode: str = "") -> str:
    """What to run on a machine that has Singularity/Apptainer (or Docker)."""
    name = Path(image).stem
    flag = f"--{mode} " if mode in ("fakeroot", "remote") else "--fakeroot "
    return "\n".join(
        [
            "Neither apptainer nor singularity is on PATH here, so nothing was built.",
            f"Copy {definition} to a machine that has one (a cluster login node, a laptop",
            "with Apptainer) and run there:",
            f"    apptainer build {flag}{image} {definition}",
            f"    # or: singularity build {flag}{image} {definition}",
            f"    # or, with Sylabs' remote builder: singularity build --remote {image} {definition}",
            "Or build with Docker and pull the image on the cluster:",
            f"    sif-magic runtime def {name} --dockerfile",
            f"    docker build -t REGISTRY/{name}:latest -f {name}.Dockerfile .",
            f"    docker push REGISTRY/{name}:latest",
            f"    singularity pull {image} docker://REGISTRY/{name}:latest",
        ]
    )


def default_build_mode() -> str:
    mode = os.environ.get("SIF_MAGIC_BUILD_MODE", "")
    if mode:
        return mode
    return "" if os.geteuid() == 0 else "fakeroot"


# -- inspect -------------------------------------------------------------------


@dataclass
class ImageInfo:
    path: str
    reader: str  # the tool that read the labels
    labels: dict[str, str]
    definition: str = ""

    def versions(self) -> dict[str, str]:
        n = len(LABEL_PREFIX)
        return {k[n:]: v for k, v in self.labels.items() if k.startswith(LABEL_PREFIX)}


def check_versions(image: dict[str, str], kernel: dict[str, str] | None = None) -> list[str]:
    """Why an image's worker cannot run this kernel's functions ([] when it can)."""
    kernel = kernel or kernel_versions()
    problems = []
    if image.get("python") and image["python"] != kernel["python"]:
        problems.append(f"Python {image['python']} in the image, {kernel['python']} in the kernel")
    ic, kc = image.get("cloudpickle", ""), kernel.get("cloudpickle", "")
    if ic and kc and ic.split(".")[0] != kc.split(".")[0]:
        problems.append(f"cloudpickle {ic} in the image, {kc} in the kernel (major differs)")
    if image.get("protocol") and image["protocol"] != kernel["protocol"]:
        problems.append(f"protocol {image['protocol']} in the image, {kernel['protocol']} here")
    return problems


def _find_labels(obj: object) -> dict[str, str] | None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key.lower() == "labels" and isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
        for value in obj.values():
            found = _find_labels(value)
            if found is not None:
                return found
    return None


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def _inspect_with_siftool(image: str, siftool: str) -> ImageInfo:
    listing = _run([siftool, "list", image])
    if listing.returncode != 0:
        raise ConfigError(f"siftool cannot read {image}: {listing.stderr.strip()}")
    labels: dict[str, str] | None = None
    definition = ""
    fs_offset = None
    for line in listing.stdout.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 5 or not cols[0].isdigit():
            continue
        oid, kind = cols[0], cols[4]
        if kind.startswith("JSON.Generic") and labels is None:
            dump = _run([siftool, "dump", oid, image])
            try:
                labels = _find_labels(json.loads(dump.stdout))
            except ValueError:
                pass
        elif kind.startswith("Def.FILE"):
            definition = _run([siftool, "dump", oid, image]).stdout
        elif kind.startswith("FS (Squashfs") and fs_offset is None:
            fs_offset = int(cols[3].split("-")[0])
    reader = "siftool"
    if labels is None and fs_offset is not None:
        unsquashfs = shutil.which("unsquashfs")
        if unsquashfs is None:
            raise ConfigError(
                f"{image} keeps its labels in its squashfs partition: install squashfs-tools "
                "(apt-get install squashfs-tools) to read them, or run `singularity inspect`"
            )
        cat = _run([unsquashfs, "-o", str(fs_offset), "-cat", image, ".singularity.d/labels.json"])
        if cat.returncode == 0 and cat.stdout.strip():
            labels = {str(k): str(v) for k, v in json.loads(cat.stdout).items()}
            reader = "siftool + unsquashfs"
    return ImageInfo(image, reader, labels or {}, definition)


def inspect_image(image: str) -> ImageInfo:
    """Read an image's labels with singularity/apptainer, else Debian's siftool."""
    if not Path(image).is_file():
        raise ConfigError(f"{image}: no such image file")
    runner = containers.get("auto")
    tool = runner.which()
    if tool:
        labels_argv, definition_argv = runner.inspect_argvs(tool, image)
        res = _run(labels_argv)
        if res.returncode != 0:
            raise ConfigError(f"{Path(tool).name} inspect {image} failed: {res.stderr.strip()}")
        definition = _run(definition_argv).stdout
        labels = _find_labels(json.loads(res.stdout or "{}")) or {}
        return ImageInfo(image, f"{Path(tool).name} inspect", labels, definition)
    siftool = shutil.which("siftool")
    if siftool:
        return _inspect_with_siftool(image, siftool)
    raise ConfigError(
        f"cannot read {image}: neither apptainer, singularity nor siftool is installed here. "
        "Install one (Debian: apt-get install siftool squashfs-tools), or run "
        f"`singularity inspect --labels {image}` where Singularity is"
    )
