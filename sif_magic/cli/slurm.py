"""``sif-magic slurm submit | status | cancel``: workers on SLURM nodes (see ``sif_magic.launch.slurm``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import containers
from . import adapt
from ._common import add_broker_args, guard


def add_slurm_submit_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``slurm submit`` (a magic such as ``%sif_workers slurm`` can reuse them;
    ``slurm_spec_from_args`` turns the parsed namespace into a ``SlurmSpec``)."""
    p.add_argument("--image", default="", help="NAME.sif (copied to node-local storage)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--runtime", default="", help="runtime name (default: the image file name)")
    p.add_argument("--container", default="auto", choices=list(containers.RUNTIMES))
    p.add_argument("--processes", type=int, default=0, help="per worker (default: cpus-per-task)")
    p.add_argument("--cpus-per-task", type=int, default=0)
    for opt in ("time", "partition", "account", "qos", "mem", "gres", "job-name"):
        p.add_argument(f"--{opt}", default="")
    p.add_argument("--bind", action="append", default=[], metavar="SRC[:DST]")
    p.add_argument("--nv", action="store_true", help="NVIDIA GPUs in the container")
    p.add_argument(
        "--gpus-per-node",
        default="",
        metavar="[TYPE:]N",
        help="GPUs per node; implies --nv, and each worker pins a call process per GPU",
    )
    p.add_argument(
        "--gpu-request",
        default=os.environ.get("SIF_MAGIC_SLURM_GPU_REQUEST", "gres"),
        choices=["gres", "gpus-per-node"],
        help="how the site asks for GPUs: --gres=gpu:N (default) or --gpus-per-node=N "
        "(env SIF_MAGIC_SLURM_GPU_REQUEST)",
    )
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
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a worker with no call this long leaves and its job ends (default 300; 0: never)",
    )
    add_broker_args(p)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("slurm", help="workers on SLURM nodes: submit, status, cancel")
    sub = p.add_subparsers(
        dest="slurm_command", metavar="{submit,adapt,status,cancel}", required=True
    )

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
    s.set_defaults(func=guard(_slurm_submit))

    adapt.register(sub)

    st = sub.add_parser("status", help="state of the submitted jobs (squeue)")
    st.add_argument("job_ids", nargs="*", metavar="JOBID")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=guard(_slurm_status))

    c = sub.add_parser("cancel", help="scancel jobs (workers requeue their tasks)")
    c.add_argument("job_ids", nargs="*", metavar="JOBID")
    c.add_argument("--all", action="store_true", help="every job submitted from here")
    c.set_defaults(func=guard(_slurm_cancel))


def slurm_spec_from_args(args: argparse.Namespace) -> Any:
    """A ``launch.slurm.SlurmSpec`` from options parsed by ``add_slurm_submit_arguments``."""
    from ..launch import slurm

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
        gpus_per_node=args.gpus_per_node,
        gpu_request=args.gpu_request,
        stage_dir=args.stage_dir,
        setup=args.setup,
        sbatch_options=args.sbatch_option,
        amqp_url_file=args.amqp_url_file,
        key_file=args.key_file,
        queue_type=args.queue_type or os.environ.get("SIF_MAGIC_QUEUE_TYPE", ""),
        python=args.python,
        job_name=args.job_name,
        idle_timeout=args.idle_timeout,
    )


def _slurm_submit(args: argparse.Namespace) -> int:
    from ..launch import slurm

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
    from ..launch import slurm

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
    from ..launch import slurm

    ids = args.job_ids
    if args.all:
        ids = [r["job_id"] for r in slurm.recorded_jobs()]
    if not ids:
        print("sif-magic: error: name the jobs to cancel, or --all", file=sys.stderr)
        return 2
    for i in slurm.cancel(ids):
        print(f"cancelled {i}")
    return 0
