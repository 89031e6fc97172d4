"""``sif-magic runtime ...``, ``sif-magic workers ...`` and ``sif-magic slurm ...``.

``register(subparsers)`` adds the three commands to the main CLI's argparse
subparsers; each leaf sets ``func(args) -> int``. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import runtime as rt
from .errors import SifMagicError


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Our errors print as one line that says what to do; no traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except SifMagicError as e:
            print(f"sif-magic: error: {e}", file=sys.stderr)
            return 2

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def register(subparsers: Any) -> None:
    """Add the ``runtime``, ``workers`` and ``slurm`` commands."""
    _register_runtime(subparsers)
    _register_workers(subparsers)
    _register_slurm(subparsers)


# -- runtime -------------------------------------------------------------------


def _register_runtime(subparsers: Any) -> None:
    p = subparsers.add_parser("runtime", help="worker images: definition file, build, inspect")
    sub = p.add_subparsers(dest="runtime_command", metavar="{def,build,inspect}", required=True)

    d = sub.add_parser("def", help="write a Singularity definition file (or a Dockerfile)")
    d.add_argument("name", nargs="?", default="worker", help="image name (default: worker)")
    d.add_argument("-o", "--output", help="file to write (default NAME.def; '-' for stdout)")
    d.add_argument("--python", default=rt.kernel_versions()["python"], help="Python minor")
    d.add_argument("--base", default="", help="base image (default docker://python:X.Y-slim)")
    d.add_argument("--requirements", default="", metavar="FILE", help="requirements.txt")
    d.add_argument("--packages", nargs="+", default=[], metavar="PKG", help="pip packages")
    d.add_argument("--apt", nargs="+", default=[], metavar="PKG", help="apt packages")
    d.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="DIR",
        help="bind target to create in the image (repeatable; /scratch always)",
    )
    d.add_argument("--runtime", default="", help="runtime name (default NAME.sif)")
    d.add_argument(
        "--sif-magic",
        default="",
        metavar="SPEC",
        help="how to install sif_magic: pip spec, or a local wheel/source dir",
    )
    d.add_argument("--dockerfile", action="store_true", help="write NAME.Dockerfile instead")
    d.set_defaults(func=_guard(_runtime_def))

    b = sub.add_parser("build", help="singularity/apptainer build NAME.sif from a .def")
    b.add_argument("image", help="NAME.sif to build")
    b.add_argument("definition", nargs="?", help="definition file (default NAME.def)")
    mode = b.add_mutually_exclusive_group()
    mode.add_argument("--fakeroot", dest="mode", action="store_const", const="fakeroot")
    mode.add_argument("--remote", dest="mode", action="store_const", const="remote")
    mode.add_argument("--sudo", dest="mode", action="store_const", const="sudo")
    b.add_argument("--builder", choices=["apptainer", "singularity"], default="")
    b.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    b.set_defaults(func=_guard(_runtime_build), mode=None)

    i = sub.add_parser("inspect", help="what an image holds; do its versions fit the kernel?")
    i.add_argument("image")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_guard(_runtime_inspect))


def _spec_from(args: argparse.Namespace) -> rt.ImageSpec:
    return rt.ImageSpec(
        runtime=args.runtime or f"{args.name}.sif",
        python=args.python,
        base=args.base,
        requirements=args.requirements,
        packages=args.packages,
        apt=args.apt,
        mounts=args.mount,
        sif_magic=args.sif_magic,
    )


def _runtime_def(args: argparse.Namespace) -> int:
    spec = _spec_from(args)
    if args.output != "-":
        out_dir = Path(args.output).parent if args.output else Path(".")
        wheel = spec.wheel_for_image(out_dir)
        if wheel is not None:
            print(
                f"built {wheel} from the local sif_magic source; the image installs it",
                file=sys.stderr,
            )
    text = rt.dockerfile(spec) if args.dockerfile else rt.definition_file(spec)
    out = args.output or (f"{args.name}.Dockerfile" if args.dockerfile else f"{args.name}.def")
    if out == "-":
        sys.stdout.write(text)
        return 0
    Path(out).write_text(text)
    print(f"wrote {out} (runtime {spec.runtime}, Python {spec.python}, base {spec.base})")
    if args.dockerfile:
        tag = f"REGISTRY/{args.name}"
        print(f"next: docker build -t {tag} -f {out} . && docker push {tag}")
        print(f"then on the cluster: singularity pull {spec.runtime} docker://REGISTRY/{args.name}")
    else:
        print(f"next: sif-magic runtime build {spec.runtime} {out}")
    print(f"in the notebook: %sif_config runtime={spec.runtime}")
    return 0


def _runtime_build(args: argparse.Namespace) -> int:
    image = args.image
    definition = args.definition or str(Path(image).with_suffix(".def"))
    if not Path(definition).exists():
        if args.definition:
            print(f"sif-magic: error: {definition}: no such file", file=sys.stderr)
            return 2
        name = Path(image).stem
        Path(definition).write_text(rt.definition_file(rt.ImageSpec(runtime=Path(image).name)))
        print(f"wrote {definition} (defaults; edit it or use `sif-magic runtime def {name}`)")
    mode = args.mode or rt.default_build_mode()
    tool = rt.find_builder(args.builder)
    if tool is None:
        print(rt.build_instructions(image, definition, mode))
        return 3
    argv = rt.build_argv(tool, image, definition, mode)
    print("$ " + shlex.join(argv), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(argv, check=False).returncode


def _runtime_inspect(args: argparse.Namespace) -> int:
    info = rt.inspect_image(args.image)
    versions = info.versions()
    kernel = rt.kernel_versions()
    problems = rt.check_versions(versions, kernel)
    if args.json:
        print(json.dumps({**asdict(info), "kernel": kernel, "problems": problems}, indent=1))
    else:
        size = Path(args.image).stat().st_size / 1e6
        print(f"image       {args.image} ({size:.1f} MB), read with {info.reader}")
        for key in ("runtime", "python", "cloudpickle", "version", "protocol"):
            here = kernel.get(key, "")
            name = "sif_magic" if key == "version" else key
            print(
                f"{name:<11} {versions.get(key, '?'):<10} kernel {here}"
                if here
                else f"{name:<11} {versions.get(key, '?')}"
            )
        others = {k: v for k, v in info.labels.items() if not k.startswith(rt.LABEL_PREFIX)}
        for k, v in sorted(others.items()):
            print(f"label       {k} = {v}")
        base = [ln for ln in info.definition.splitlines() if ln.lower().startswith("from:")]
        if base:
            print(f"built from  {base[0].split(':', 1)[1].strip()}")
    if not versions:
        print(
            f"{args.image} has no sif_magic labels: was it built from `sif-magic runtime def`?",
            file=sys.stderr,
        )
        return 1
    if problems:
        print("INCOMPATIBLE with this kernel: " + "; ".join(problems), file=sys.stderr)
        print(
            f"rebuild: sif-magic runtime def {Path(args.image).stem} --python {kernel['python']}"
            f" && sif-magic runtime build {args.image}",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print("compatible with this kernel")
    return 0


# -- workers (this machine) ------------------------------------------------------


def _add_broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--amqp-url-file",
        default="",
        metavar="FILE",
        help="file (mode 600) holding the broker URL (default: "
        "$SIF_MAGIC_AMQP_URL_FILE, $SIF_MAGIC_AMQP_URL, ~/.sif_magic/amqp_url)",
    )
    p.add_argument("--key-file", default="", metavar="FILE", help="HMAC key file (mode 600)")


def add_workers_start_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``workers start`` (``%sif_workers start`` reuses them)."""
    p.add_argument("--image", default="", help="NAME.sif")
    p.add_argument("--instances", type=int, default=1, help="workers to start (default 1)")
    p.add_argument("--processes", type=int, default=0, help="processes per worker (0: CPUs)")
    p.add_argument("--runtime", default="", help="runtime name (default: the image file name)")
    p.add_argument("--bind", action="append", default=[], metavar="SRC[:DST]")
    p.add_argument("--nv", action="store_true", help="NVIDIA GPUs in the container")
    p.add_argument("--fakeroot", action="store_true", help="instance start --fakeroot")
    p.add_argument(
        "--container",
        default="auto",
        choices=["auto", "apptainer", "singularity", "none"],
        help="none: run `python -m sif_magic worker` without a container",
    )
    p.add_argument("--python", default=sys.executable, help="Python for --container none")
    _add_broker_args(p)


def start_from_args(args: argparse.Namespace, amqp_url: str = "") -> list:
    """Start the workers ``args`` (parsed by ``add_workers_start_arguments``) describe."""
    from .launch import start_workers

    return start_workers(
        runtime=args.runtime,
        image=args.image,
        instances=args.instances,
        processes=args.processes,
        container=args.container,
        binds=args.bind,
        nv=args.nv,
        fakeroot=args.fakeroot,
        amqp_url=amqp_url,
        amqp_url_file=args.amqp_url_file,
        key_file=args.key_file,
        python=args.python,
    )


def _register_workers(subparsers: Any) -> None:
    p = subparsers.add_parser("workers", help="start, list and stop workers on this machine")
    sub = p.add_subparsers(dest="workers_command", metavar="{start,list,stop}", required=True)

    s = sub.add_parser("start", help="start workers (Singularity instances or plain processes)")
    add_workers_start_arguments(s)
    s.set_defaults(func=_guard(_workers_start))

    ls = sub.add_parser("list", help="the workers started here")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_guard(_workers_list))

    st = sub.add_parser("stop", help="stop workers by id (SIGTERM to their pid)")
    st.add_argument("ids", nargs="*", metavar="ID")
    st.add_argument("--all", action="store_true", help="every worker started on this host")
    st.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL")
    st.set_defaults(func=_guard(_workers_stop))


def _workers_start(args: argparse.Namespace) -> int:
    records = start_from_args(args)
    for r in records:
        where = f"instance://{r.instance}" if r.instance else "no container"
        print(f"started {r.id}  pid {r.pid}  runtime {r.runtime}  {where}  log {r.log}")
    return 0


def _workers_list(args: argparse.Namespace) -> int:
    from .launch import list_workers

    rows = list_workers()
    if args.json:
        print(json.dumps([{**asdict(r), "state": s} for r, s in rows], indent=1))
        return 0
    if not rows:
        print("no workers started here (sif-magic workers start ...)")
        return 0
    print(f"{'ID':<16} {'STATE':<9} {'PID':>7}  {'RUNTIME':<16} {'CONTAINER':<24} STARTED")
    for r, state in rows:
        where = f"{r.container} {r.instance}".strip() if r.instance else r.container
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
        print(f"{r.id:<16} {state:<9} {r.pid:>7}  {r.runtime:<16} {where:<24} {started}")
    return 0


def _workers_stop(args: argparse.Namespace) -> int:
    from .launch import stop_workers

    if not args.ids and not args.all:
        print(
            "sif-magic: error: name the workers to stop (see `sif-magic workers list`) or "
            "pass --all",
            file=sys.stderr,
        )
        return 2
    results = stop_workers(None if args.all else args.ids, timeout=args.timeout)
    for wid, outcome in results:
        print(f"{wid}: {outcome}")
    if not results:
        print("no workers to stop")
    return 1 if any(o.startswith("not stopped") for _, o in results) else 0


# -- slurm ---------------------------------------------------------------------


def add_slurm_submit_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``slurm submit`` (a magic such as ``%sif_workers slurm`` can reuse them;
    ``slurm_spec_from_args`` turns the parsed namespace into a ``SlurmSpec``)."""
    p.add_argument("--image", default="", help="NAME.sif (copied to node-local storage)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--runtime", default="", help="runtime name (default: the image file name)")
    p.add_argument(
        "--container", default="auto", choices=["auto", "apptainer", "singularity", "none"]
    )
    p.add_argument("--processes", type=int, default=0, help="per worker (default: cpus-per-task)")
    p.add_argument("--cpus-per-task", type=int, default=0)
    for opt in ("time", "partition", "account", "qos", "mem", "gres", "job-name"):
        p.add_argument(f"--{opt}", default="")
    p.add_argument("--bind", action="append", default=[], metavar="SRC[:DST]")
    p.add_argument("--nv", action="store_true")
    p.add_argument(
        "--stage-dir",
        default=os.environ.get("SIF_MAGIC_STAGE_DIR", "/tmp"),
        help="node-local dir for the image when the site sets no $SLURM_TMPDIR",
    )
    p.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run first, e.g. 'module load apptainer' (repeatable)",
    )
    p.add_argument(
        "--sbatch-option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra #SBATCH option, e.g. --constraint=avx2 (repeatable)",
    )
    p.add_argument("--python", default=sys.executable, help="Python for --container none")
    _add_broker_args(p)


def _register_slurm(subparsers: Any) -> None:
    p = subparsers.add_parser("slurm", help="workers on SLURM nodes: submit, status, cancel")
    sub = p.add_subparsers(dest="slurm_command", metavar="{submit,status,cancel}", required=True)

    s = sub.add_parser("submit", help="sbatch one worker per node")
    add_slurm_submit_arguments(s)
    s.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    s.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="then wait until the job runs, showing its state",
    )
    s.set_defaults(func=_guard(_slurm_submit))

    st = sub.add_parser("status", help="state of the submitted jobs (squeue)")
    st.add_argument("job_ids", nargs="*", metavar="JOBID")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_guard(_slurm_status))

    c = sub.add_parser("cancel", help="scancel jobs (workers requeue their tasks)")
    c.add_argument("job_ids", nargs="*", metavar="JOBID")
    c.add_argument("--all", action="store_true", help="every job submitted from here")
    c.set_defaults(func=_guard(_slurm_cancel))


def slurm_spec_from_args(args: argparse.Namespace) -> Any:
    """A ``launch.slurm.SlurmSpec`` from options parsed by ``add_slurm_submit_arguments``."""
    from .launch import slurm

    runtime = (
        args.runtime
        or os.environ.get("SIF_MAGIC_RUNTIME")
        or (Path(args.image).name if args.image else "default")
    )
    return slurm.SlurmSpec(
        runtime=runtime,
        image=args.image,
        nodes=args.nodes,
        container=args.container,
        processes=args.processes,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        mem=args.mem,
        gres=args.gres,
        binds=args.bind,
        nv=args.nv,
        stage_dir=args.stage_dir,
        setup=args.setup,
        sbatch_options=args.sbatch_option,
        amqp_url_file=args.amqp_url_file,
        key_file=args.key_file,
        python=args.python,
        job_name=args.job_name,
    )


def _slurm_submit(args: argparse.Namespace) -> int:
    from .launch import slurm

    spec = slurm_spec_from_args(args)
    runtime = spec.runtime
    if args.dry_run:
        sys.stdout.write(slurm.render_script(spec))
        return 0
    job = slurm.submit(spec)
    print(
        f"submitted job {job.job_id} ({args.nodes} node(s), runtime {runtime}); script {job.script}"
    )
    if args.wait:
        st = slurm.wait_for(job.job_id, timeout=args.wait)
        print(f"job {job.job_id}: {st.describe()}")
    return 0


def _slurm_status(args: argparse.Namespace) -> int:
    from .launch import slurm

    rows = slurm.status(args.job_ids or None)
    if args.json:
        print(json.dumps([{**asdict(r), "description": r.describe()} for r in rows], indent=1))
        return 0
    if not rows:
        print("no sif_magic jobs recorded here (sif-magic slurm submit ...)")
        return 0
    for r in rows:
        print(f"{r.job_id:<10} {r.name or '':<24} {r.describe()}")
    return 0


def _slurm_cancel(args: argparse.Namespace) -> int:
    from .launch import slurm

    ids = args.job_ids
    if args.all:
        ids = [r["job_id"] for r in slurm.recorded_jobs()]
    if not ids:
        print("sif-magic: error: name the jobs to cancel, or --all", file=sys.stderr)
        return 2
    for i in slurm.cancel(ids):
        print(f"cancelled {i}")
    return 0
