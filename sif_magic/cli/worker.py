"""``sif-magic worker``: the options of the worker (what runs inside the container)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import add_url_args, warn_url_in_argv


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run a worker (what runs inside the container)",
        description="Consume a runtime's task queue and run its calls. Every option can also "
        "come from the environment: SIF_MAGIC_AMQP_URL(_FILE), SIF_MAGIC_RUNTIME, "
        "SIF_MAGIC_PROCESSES, SIF_MAGIC_KEY_FILE (or SIF_MAGIC_KEY), SIF_MAGIC_WORKER_ID, "
        "SIF_MAGIC_MAX_MESSAGE_MB.",
    )
    add_url_args(p, default="")
    p.add_argument(
        "--runtime", default="", help="runtime name: consumes sif_magic.<key id>.tasks.RUNTIME"
    )
    p.add_argument("--processes", type=int, default=0, help="call processes (default: usable CPUs)")
    p.add_argument("--key-file", default="", help="signing key file (default ~/.sif_magic/key)")
    p.add_argument("--worker-id", default="", help="name shown in the workers table")
    p.add_argument("--ca-file", default="", help="CA certificate to verify an amqps:// broker")
    p.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    p.add_argument(
        "--max-message-mb",
        type=float,
        default=0,
        help="the broker's max_message_size in MB, if the site lowered it (default: RabbitMQ's "
        "default for the broker's version: 128 MiB on 3.x, 16 MiB on 4.x); results stay below",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import signal

    from ..errors import ConfigError
    from ..validate import check_name

    # stopped (scancel, workers stop) while still importing: leave quietly, exit 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    warn_url_in_argv("sif-magic worker", args.amqp_url)
    try:  # both name queues, routing keys and rows of the workers table
        for what, value in (
            ("runtime name", args.runtime or os.environ.get("SIF_MAGIC_RUNTIME", "")),
            ("worker id", args.worker_id or os.environ.get("SIF_MAGIC_WORKER_ID", "")),
        ):
            if value:
                check_name(value, what)
    except ConfigError as e:
        print(f"sif-magic worker: error: {e}", file=sys.stderr)
        return 2
    from ..worker import main

    return main(args)
