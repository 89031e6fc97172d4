"""Workers on a SLURM cluster: an sbatch script, and submit / status / cancel.

The script starts one worker per node through ``srun``; with ``gpus_per_node``
it asks SLURM for that many GPUs per node (``--gres=gpu:N`` or
``--gpus-per-node=N``: ``gpu_request``, as the site expects), runs the container
with ``--nv`` and starts each worker with ``--gpus auto`` (the step's
``CUDA_VISIBLE_DEVICES`` / ``SLURM_STEP_GPUS``). What each node runs to
start it (with a container: stage the image to node-local storage, then run it
in the foreground) comes from ``sif_magic.containers``. The broker URL never
appears in the script: it is read at run time from a file of mode 600, or from
the environment that sbatch passes on. Called from one thread at a time (the
CLI's, or the kernel's through ``%sif_workers``); ``slurm.json`` is shared
between processes under a lock (``StateFile``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import containers
from .._keys import default_key_file, load_key, read_secret_file
from .._urls import check_urls
from .._version import __version__
from ..errors import ConfigError
from ..protocol.names import QUEUE_TYPES
from ..validate import check, check_all, check_name, check_path, check_runtime
from ._state import StateFile, home, write_secret
from .local import default_url_file

STATE = "slurm.json"
GPU_REQUESTS = ("gres", "gpus-per-node")
#: seconds without a call after which a worker of ``slurm submit`` leaves and its job
#: ends (docs/cluster.md, "Elastic workers", says why five minutes)
IDLE_TIMEOUT = 300.0


@dataclass
class SlurmSpec:
    """What to ask SLURM for, and how each node starts its worker."""

    runtime: str
    image: str = ""
    nodes: int = 1
    container: str = "auto"  # auto | apptainer | singularity | none
    processes: int = 0  # per worker; 0: SLURM_CPUS_PER_TASK
    cpus_per_task: int = 0
    time: str = ""
    partition: str = ""
    account: str = ""
    qos: str = ""
    mem: str = ""
    gres: str = ""
    gpus_per_node: str = ""  # "[type:]N", e.g. "4" or "a100:4"; "": no GPUs
    gpu_request: str = "gres"  # how the site wants GPUs asked for: gres | gpus-per-node
    binds: list[str] = field(default_factory=list)
    nv: bool = False
    stage_dir: str = "/tmp"  # node-local, used when the site sets no $SLURM_TMPDIR
    setup: list[str] = field(default_factory=list)  # e.g. "module load apptainer"
    sbatch_options: list[str] = field(default_factory=list)  # e.g. "--constraint=avx2"
    amqp_url_file: str = ""  # mode 600, on a filesystem the nodes see; "": environment
    url_file_is_copy: bool = False  # amqp_url_file is this job's own copy: removed at its end
    key_file: str = ""
    queue_type: str = ""  # of the task queues (classic, quorum); "": the worker's default
    python: str = sys.executable  # for container "none"
    job_name: str = ""
    output: str = ""  # default: ~/.sif_magic/slurm/%x-%j.out
    idle_timeout: float = IDLE_TIMEOUT  # 0: the workers never leave for want of work
    array: int = 0  # > 1: a job array of that many elements, each its own job and worker
    dependency: str = ""  # e.g. "afterany:123": start only once job 123 has ended

    def check(self) -> None:
        """ConfigError for a value the script could not hold safely (``validate``'s rules)."""
        if self.nodes < 1:
            raise ConfigError("--nodes must be at least 1")
        if not self.idle_timeout >= 0:
            raise ConfigError("--idle-timeout must be seconds >= 0 (0: never)")
        if self.dependency:
            check("sbatch", self.dependency, "dependency")
        containers.get(self.container).check_image(self.image, here=False)
        check_runtime(self.runtime)
        if self.queue_type and self.queue_type not in QUEUE_TYPES:
            raise ConfigError(f"--queue-type {self.queue_type!r}: one of {', '.join(QUEUE_TYPES)}")
        if self.job_name:
            check_name(self.job_name, "--job-name")
        for opt in ("time", "partition", "account", "qos", "mem", "gres"):
            if getattr(self, opt):
                check("sbatch", getattr(self, opt), f"--{opt}")
        if self.gpus_per_node:
            if not re.fullmatch(r"([A-Za-z0-9_.-]+:)?[1-9][0-9]*", self.gpus_per_node):
                raise ConfigError(
                    f"--gpus-per-node {self.gpus_per_node!r}: give a count (4) or type:count "
                    "(a100:4)"
                )
            if self.gpu_request not in GPU_REQUESTS:
                raise ConfigError(
                    f"--gpu-request {self.gpu_request!r}: use {' or '.join(GPU_REQUESTS)} "
                    "(as your site asks for GPUs)"
                )
            if self.gres and self.gpu_request == "gres":
                raise ConfigError(
                    "--gpus-per-node asks for --gres=gpu:N already: drop --gres, or put the "
                    "other resources in --sbatch-option"
                )
        check_all("sbatch", self.sbatch_options, "--sbatch-option")
        for opt in ("stage_dir", "output", "python", "amqp_url_file", "key_file"):
            if getattr(self, opt):
                check_path(getattr(self, opt), f"--{opt.replace('_', '-')}")
        containers.check_binds(self.binds)


def _q(value: str) -> str:
    return shlex.quote(str(value))


def render_script(spec: SlurmSpec) -> str:
    """The sbatch script for ``spec`` (what ``slurm submit --dry-run`` prints)."""
    spec.check()
    runner = containers.get(spec.container)
    name = spec.job_name or f"sif-magic-{spec.runtime}"
    output = spec.output or str(home() / "slurm" / "%x-%j.out")
    opts = [f"--job-name={name}", f"--nodes={spec.nodes}", "--ntasks-per-node=1"]
    for opt, value in (
        ("cpus-per-task", spec.cpus_per_task),
        ("time", spec.time),
        ("partition", spec.partition),
        ("account", spec.account),
        ("qos", spec.qos),
        ("mem", spec.mem),
        ("gres", spec.gres),
    ):
        if value:
            opts.append(f"--{opt}={value}")
    if spec.gpus_per_node:
        gpus = spec.gpus_per_node
        opts.append(
            f"--gres=gpu:{gpus}" if spec.gpu_request == "gres" else f"--gpus-per-node={gpus}"
        )
    if spec.array > 1:
        opts.append(f"--array=0-{spec.array - 1}")
    if spec.dependency:
        opts.append(f"--dependency={spec.dependency}")
    opts.append(f"--output={output}")
    from_env = not spec.amqp_url_file
    if from_env:
        opts.append("--export=ALL")  # the broker URL comes from the submitting environment
    opts += spec.sbatch_options
    lines = [
        "#!/bin/bash",
        f"# sif_magic workers for runtime {spec.runtime}: one worker per node, started by srun.",
        f"# Written by `sif-magic slurm submit` (sif_magic {__version__}).",
        "# The broker URL is not in this script: it is read at run time from the file",
        "# named by SIF_MAGIC_AMQP_URL_FILE (mode 600), or SIF_MAGIC_AMQP_URL in the",
        "# environment that sbatch passes on.",
        *(f"#SBATCH {o}" for o in opts),
        "",
        "set -euo pipefail",
        *spec.setup,
        "",
        f"export SIF_MAGIC_RUNTIME={_q(spec.runtime)}",
    ]
    if spec.amqp_url_file:
        lines.append(f"export SIF_MAGIC_AMQP_URL_FILE={_q(spec.amqp_url_file)}")
        lines.append("unset SIF_MAGIC_AMQP_URL AMQP_URL  # the file above is the one to use")
    if spec.queue_type:
        lines.append(f"export SIF_MAGIC_QUEUE_TYPE={_q(spec.queue_type)}")
    if spec.key_file:
        lines.append(f"export SIF_MAGIC_KEY_FILE={_q(spec.key_file)}")
        lines.append("unset SIF_MAGIC_KEY")
    if spec.processes:
        lines.append(f"export SIF_MAGIC_PROCESSES={spec.processes}")
    elif spec.gpus_per_node:
        lines.append("export SIF_MAGIC_PROCESSES=0  # each node: a call process per GPU")
    else:
        lines.append("unset SIF_MAGIC_PROCESSES  # each node: the CPUs SLURM gave the task")
    if spec.gpus_per_node:
        lines += [
            "# each call process holds GPUs of its own, from the step's CUDA_VISIBLE_DEVICES,",
            "# SLURM_STEP_GPUS or nvidia-smi; calls asking for CPUs share the task's CPUs",
            "export SIF_MAGIC_GPUS=auto",
        ]
    lines.append(
        f"export SIF_MAGIC_IDLE_TIMEOUT={spec.idle_timeout:g}"
        "  # seconds without a call: the worker leaves, the job ends (0: never)"
    )
    lines += runner.script_exports(spec.image, spec.stage_dir, spec.python)
    lines += [
        "",
        'if [ -n "${SIF_MAGIC_AMQP_URL_FILE:-}" ]; then',
        '    if [ ! -r "$SIF_MAGIC_AMQP_URL_FILE" ]; then',
        '        echo "sif-magic: cannot read $SIF_MAGIC_AMQP_URL_FILE on $(hostname)" >&2; exit 2',
        "    fi",
        '    case "$(stat -c %a "$SIF_MAGIC_AMQP_URL_FILE")" in',
        "        *00) ;;",
        '        *) echo "sif-magic: $SIF_MAGIC_AMQP_URL_FILE can be read by others:'
        ' chmod 600 it" >&2; exit 2 ;;',
        "    esac",
        'elif [ -z "${SIF_MAGIC_AMQP_URL:-}" ]; then',
        '    echo "sif-magic: no broker URL: submit with SIF_MAGIC_AMQP_URL_FILE (a file of mode'
        ' 600) or SIF_MAGIC_AMQP_URL set" >&2',
        "    exit 2",
        "fi",
        "",
    ]
    if spec.url_file_is_copy and spec.array <= 1:  # an array's elements share the copy
        lines += [
            "# This job's own copy of the broker URL goes when the job ends (each node has read",
            "# it as its worker started); on SIGTERM (scancel), once srun has ended.",
            "trap 'rm -f \"$SIF_MAGIC_AMQP_URL_FILE\"' EXIT",
            "trap 'exit 143' TERM",
            "",
        ]
    lines += [
        "sif_magic_node() {",
        "    # Runs once on each node (srun --ntasks-per-node=1).",
        "    set -euo pipefail",
        '    export SIF_MAGIC_WORKER_ID="slurm-$SLURM_JOB_ID-$(hostname -s)"',
        "    trap 'exit 143' TERM  # let the worker finish its SIGTERM first, then clean up",
        '    export SIF_MAGIC_PROCESSES="${SIF_MAGIC_PROCESSES:-${SLURM_CPUS_PER_TASK:-1}}"',
        *JOB_END_LINES,
    ]
    lines += [
        "    " + line if line else ""
        for line in runner.node_lines(spec.binds, spec.nv or bool(spec.gpus_per_node))
    ]
    lines += [
        "}",
        "export -f sif_magic_node",
        "",
        'srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 \\',
        '    --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" --kill-on-bad-exit=0 --export=ALL \\',
        "    bash -c sif_magic_node",
        "",
    ]
    return "\n".join(lines)


# The worker drains before the job's end (worker/walltime.py). SLURM 23.02+ sets
# SLURM_JOB_END_TIME; older ones are asked here, outside the container (whose image
# has no squeue); the environment carries it in.
JOB_END_LINES = [
    'end="${SLURM_JOB_END_TIME:-}"',
    'if [ -z "$end" ] && command -v squeue >/dev/null; then',
    '    e="$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null || true)"',
    '    case "$e" in [0-9]*T*) end="$(date -d "$e" +%s 2>/dev/null || true)" ;; esac',
    "fi",
    'if [ -n "$end" ]; then export SIF_MAGIC_JOB_END="$end"; fi',
]


# -- submit, status, cancel ----------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ConfigError(
            f"{name} not found: run this on a SLURM login node (or `slurm submit --dry-run` "
            "to see the script)"
        )
    return path


@dataclass
class Submitted:
    job_id: str
    script: str  # path of the sbatch script
    directory: str


def resolve_broker(spec: SlurmSpec, amqp_url: str = "") -> None:
    """Where the workers of ``spec`` will read the broker URL (``submit``'s rules);
    ``spec.amqp_url_file`` is set to the file found. ConfigError if there is none."""
    if amqp_url:
        amqp_url = check_urls(amqp_url, "the broker URL")  # one, or a cluster's nodes
    elif spec.amqp_url_file or os.environ.get("SIF_MAGIC_AMQP_URL_FILE"):
        path = spec.amqp_url_file or os.environ["SIF_MAGIC_AMQP_URL_FILE"]
        spec.amqp_url_file = str(Path(path).expanduser().resolve())
        # exists, mode 600, not empty; one URL or a cluster's
        check_urls(read_secret_file(spec.amqp_url_file, "broker URL"), spec.amqp_url_file)
    elif not os.environ.get("SIF_MAGIC_AMQP_URL"):
        if not default_url_file().exists():
            raise ConfigError(
                f"no broker URL for the workers: write it to {default_url_file()} (mode 600), "
                "pass --amqp-url-file FILE (mode 600, on a filesystem the nodes see), or set "
                "SIF_MAGIC_AMQP_URL_FILE"
            )
        spec.amqp_url_file = str(default_url_file())
        read_secret_file(spec.amqp_url_file, "broker URL")


def submit(spec: SlurmSpec, *, amqp_url: str = "") -> Submitted:
    """Write the script under ``~/.sif_magic/slurm/<tag>/`` and ``sbatch`` it.

    The broker URL: ``amqp_url`` if given (written to a new file of mode 600 next
    to the script: the nodes must see ``~/.sif_magic``), else ``spec.amqp_url_file``,
    else ``SIF_MAGIC_AMQP_URL_FILE`` / ``SIF_MAGIC_AMQP_URL`` from the environment
    (sbatch passes it on), else ``~/.sif_magic/amqp_url``.
    """
    spec.check()
    sbatch = _tool("sbatch")
    resolve_broker(spec, amqp_url)
    if not spec.key_file and not os.environ.get("SIF_MAGIC_KEY"):
        load_key()  # create the default key now: notebook and workers must share it
        spec.key_file = str(default_key_file())
    tag = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    directory = home() / "slurm" / tag
    directory.mkdir(parents=True, mode=0o700)
    secret = ""
    if amqp_url:
        secret = str(write_secret(directory / "amqp_url", amqp_url))
        spec.amqp_url_file, spec.url_file_is_copy = secret, True
    if not spec.output:
        spec.output = str(directory / "slurm-%j.out")
    path = directory / "job.sbatch"
    path.write_text(render_script(spec))
    res = subprocess.run(
        [sbatch, "--parsable", str(path)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise ConfigError(f"sbatch refused the job: {res.stderr.strip() or res.stdout.strip()}")
    job_id = res.stdout.strip().split(";")[0]
    with StateFile(STATE).update() as records:
        records.append(
            {
                "job_id": job_id,
                "runtime": spec.runtime,
                "nodes": spec.nodes,
                "script": str(path),
                "dir": str(directory),
                "secret": secret,
                "submitted": time.time(),
                "array": spec.array,
            }
        )
    return Submitted(job_id, str(path), str(directory))


@dataclass
class JobStatus:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, ... or GONE (unknown to squeue)
    reason: str = ""
    nodes: str = ""
    nodelist: str = ""
    elapsed: str = ""
    name: str = ""

    def describe(self) -> str:
        if self.state == "PENDING":
            # SLURM says "None" while the job simply waits for the next scheduling pass
            return f"pending ({self.reason})" if self.reason not in ("", "None") else "pending"
        if self.state == "RUNNING":
            return f"running on {self.nodelist} for {self.elapsed}"
        if self.state == "GONE":
            return "finished (no longer known to squeue)"
        return self.state.lower()


_FORMAT = "%i|%T|%r|%D|%N|%M|%j|%F"
#: states of a job that has ended (GONE: squeue no longer knows it)
ENDED = ("GONE", "FAILED", "CANCELLED", "COMPLETED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _squeue(ids: Sequence[str]) -> dict[str, JobStatus]:
    squeue = _tool("squeue")
    res = subprocess.run(
        [squeue, "-h", "--states=all", "-j", ",".join(ids), "-o", _FORMAT],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        if len(ids) > 1 and "invalid job id" in res.stderr.lower():
            out: dict[str, JobStatus] = {}
            for i in ids:  # squeue fails as a whole when one id is unknown
                out.update(_squeue([i]))
            return out
        if "invalid job id" in res.stderr.lower():
            return {}
        raise ConfigError(f"squeue failed: {res.stderr.strip()}")
    out = {}
    rank = {"RUNNING": 0, "PENDING": 1}  # an array shows as its liveliest element
    for line in res.stdout.splitlines():
        parts = line.split("|")
        if len(parts) in (7, 8):
            st = JobStatus(*parts[:7])
            out[st.job_id] = st
            array = parts[-1] if len(parts) == 8 else st.job_id  # an element's id: ARRAY_INDEX
            if array != st.job_id and array in ids:
                known = out.get(array)
                if known is None or rank.get(st.state, 2) < rank.get(known.state, 2):
                    out[array] = JobStatus(array, *parts[1:7])
    return out


def status(job_ids: Sequence[str] | None = None) -> list[JobStatus]:
    """The state of ``job_ids`` (default: the jobs ``submit`` recorded). A recorded job
    that has ended loses its copy of the broker URL; one squeue forgot, its record."""
    records = StateFile(STATE).read()
    recorded = [r["job_id"] for r in records]
    ids = list(job_ids) if job_ids else recorded
    if not ids:
        return []
    known = _squeue(ids)
    result = [known.get(i, JobStatus(i, "GONE")) for i in ids]
    gone = {s.job_id for s in result if s.state == "GONE"}
    ended = {s.job_id for s in result if s.state in ENDED}
    if gone & set(recorded) or any(r.get("secret") and r["job_id"] in ended for r in records):
        with StateFile(STATE).update() as records:
            _remove_secrets(records, ended)
            records[:] = [r for r in records if r["job_id"] not in gone]
    return result


def _remove_secrets(records: list[dict], job_ids: Collection[str]) -> None:
    """Remove the broker URL copies of the recorded ``job_ids`` (the records are updated)."""
    for r in records:
        if r["job_id"] in job_ids and r.get("secret"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(r["secret"])
            r["secret"] = ""


def wait_for(
    job_id: str, states: Sequence[str] = ("RUNNING",), timeout: float = 60.0, poll: float = 0.5
) -> JobStatus:
    """Poll squeue until ``job_id`` reaches one of ``states`` (or ends); ConfigError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        st = status([job_id])[0]
        if st.state in states or st.state in ENDED:
            return st
        if time.monotonic() > deadline:
            raise ConfigError(f"job {job_id} still {st.describe()} after {timeout:g} s")
        time.sleep(poll)


def cancel(job_ids: Sequence[str]) -> list[str]:
    """``scancel`` the jobs (workers get SIGTERM and requeue their tasks); returns the ids."""
    if not job_ids:
        return []
    res = subprocess.run([_tool("scancel"), *job_ids], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise ConfigError(f"scancel failed: {res.stderr.strip()}")
    with StateFile(STATE).update() as records:
        _remove_secrets(records, job_ids)
    return list(job_ids)


def recorded_jobs() -> list[dict]:
    return StateFile(STATE).read()
