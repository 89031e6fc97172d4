"""``sif-magic worker``: the options of the worker (what runs inside the container)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..protocol.names import QUEUE_TYPES
from ._common import add_queue_type_arg, add_url_args, warn_url_in_argv


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run a worker (what runs inside the container)",
        description="Consume a runtime's task queue and run its calls. Every option can also "
        "come from the environment: SIF_MAGIC_AMQP_URL(_FILE), SIF_MAGIC_RUNTIME, "
        "SIF_MAGIC_PROCESSES, SIF_MAGIC_GPUS, SIF_MAGIC_CPUS, SIF_MAGIC_KEY_FILE (or "
        "SIF_MAGIC_KEY), SIF_MAGIC_WORKER_ID, SIF_MAGIC_QUEUE_TYPE, SIF_MAGIC_CLAIM_AFTER, "
        "SIF_MAGIC_LEASE, SIF_MAGIC_LIFETIME, SIF_MAGIC_MAX_MESSAGE_MB, SIF_MAGIC_IDLE_TIMEOUT. "
        "The broker URL may list several brokers (the nodes of a cluster), separated by "
        "commas: the worker moves to the next when its node is lost.",
    )
    add_url_args(p, default="")
    p.add_argument(
        "--runtime", default="", help="runtime name: consumes sif_magic.<key id>.tasks.RUNTIME"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        help="call processes (default: the number of GPUs with --gpus, else usable CPUs)",
    )
    p.add_argument(
        "--gpus",
        default="",
        metavar="auto|0,1,2,3|none",
        help="GPUs to pin call processes to, one each unless calls ask for more (auto: "
        "CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS/SLURM_JOB_GPUS, or nvidia-smi -L)",
    )
    p.add_argument(
        "--cpus",
        type=int,
        default=0,
        help="CPUs handed to calls that ask for some (default: usable CPUs)",
    )
    p.add_argument("--key-file", default="", help="signing key file (default ~/.sif_magic/key)")
    p.add_argument("--worker-id", default="", help="name shown in the workers table")
    p.add_argument("--ca-file", default="", help="CA certificate to verify an amqps:// broker")
    p.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    add_queue_type_arg(p)
    p.add_argument(
        "--claim-after",
        type=float,
        default=0.0,
        help="seconds a chunk is held before it is claimed (running) or handed back (waiting), "
        "so no delivery outlives the broker's consumer_timeout: keep it well below that "
        "(default 3; env SIF_MAGIC_CLAIM_AFTER)",
    )
    p.add_argument(
        "--lease",
        type=float,
        default=0.0,
        help="seconds a claim lives unless renewed: how soon the chunk of a worker that died "
        "runs elsewhere (default 60; env SIF_MAGIC_LEASE)",
    )
    p.add_argument(
        "--lifetime",
        type=float,
        default=0.0,
        help="leave after this many seconds, handing back what cannot finish by then (in a "
        "SLURM job the job's end time counts too; env SIF_MAGIC_LIFETIME)",
    )
    p.add_argument(
        "--end-margin",
        type=float,
        default=-1.0,
        help="seconds before the end (walltime, --lifetime) by which everything is handed "
        "back (default 30, at most a fifth of the worker's life)",
    )
    p.add_argument(
        "--max-message-mb",
        type=float,
        default=0,
        help="the broker's max_message_size in MB, if the site lowered it (default: RabbitMQ's "
        "default for the broker's version: 128 MiB on 3.x, 16 MiB on 4.x); results stay below",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="leave after this long without a call (never in the middle of one); "
        "default 0: never (workers of `slurm submit` get 300)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import signal

    from ..errors import ConfigError
    from ..validate import check_name, check_runtime

    # stopped (scancel, workers stop) while still importing: leave quietly, exit 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    warn_url_in_argv("sif-magic worker", args.amqp_url)
    try:  # both name queues, routing keys and rows of the workers table
        runtime = args.runtime or os.environ.get("SIF_MAGIC_RUNTIME", "")
        if runtime:
            check_runtime(runtime)
        worker_id = args.worker_id or os.environ.get("SIF_MAGIC_WORKER_ID", "")
        if worker_id:
            check_name(worker_id, "worker id")
        queue_type = args.queue_type or os.environ.get("SIF_MAGIC_QUEUE_TYPE", "") or "classic"
        if queue_type not in QUEUE_TYPES:
            raise ConfigError(
                f"SIF_MAGIC_QUEUE_TYPE={queue_type!r}: use one of {', '.join(QUEUE_TYPES)}"
            )
        args.queue_type = queue_type
        args.idle_timeout = idle_timeout(args.idle_timeout)
    except ConfigError as e:
        print(f"sif-magic worker: error: {e}", file=sys.stderr)
        return 2
    from ..worker import main

    return main(args)


def idle_timeout(value: float | None) -> float:
    """``--idle-timeout``, else ``SIF_MAGIC_IDLE_TIMEOUT``, else 0 (never); ConfigError
    for anything but seconds >= 0."""
    import os

    from ..errors import ConfigError

    raw = value if value is not None else os.environ.get("SIF_MAGIC_IDLE_TIMEOUT", "") or 0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise ConfigError(
            f"--idle-timeout (or SIF_MAGIC_IDLE_TIMEOUT) must be seconds >= 0 (0: never), not {raw!r}"
        )
    return seconds
