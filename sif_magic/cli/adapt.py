"""``sif-magic slurm adapt``: one-node worker jobs that follow the work (see
``sif_magic.launch.scaler``); its options also serve ``%sif_workers slurm --adapt``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._common import guard

HELP = "one-node worker jobs that follow the work, MIN to MAX (until Ctrl-C)"
DESCRIPTION = (
    "Submit one-node worker jobs as calls queue up, never more than MAX nodes; workers "
    "leave after --idle-timeout without calls (MIN are kept while this runs). Stopping it "
    "cancels nothing: the workers finish, idle out, and their jobs end."
)


def register(sub: Any) -> None:
    """``adapt`` under ``sif-magic slurm``."""
    from .slurm import add_slurm_submit_arguments

    a = sub.add_parser("adapt", help=HELP, description=DESCRIPTION)
    add_slurm_submit_arguments(a)
    a.add_argument("--min", type=int, default=0, help="nodes kept while this runs (default 0)")
    a.add_argument("--max", type=int, required=True, help="nodes at most")
    add_adapt_arguments(a)
    a.set_defaults(func=guard(_adapt))


def add_adapt_arguments(p: argparse.ArgumentParser) -> None:
    """How fast a scaler may submit (``slurm adapt``, ``%sif_workers slurm --adapt``)."""
    p.add_argument("--max-pending", type=int, default=8, help="jobs pending at once (default 8)")
    p.add_argument(
        "--submit-every", type=float, default=10.0, metavar="SECONDS", help="between two sbatch"
    )
    p.add_argument("--poll", type=float, default=5.0, metavar="SECONDS", help="between two looks")


def scaler_from_args(
    args: argparse.Namespace, backend: Any, min_nodes: int, max_nodes: int, amqp_url: str = ""
) -> Any:
    """A ``launch.scaler.Scaler`` (not started) from options parsed by
    ``add_slurm_submit_arguments`` and ``add_adapt_arguments``."""
    from ..errors import ConfigError
    from ..launch.adapt import Policy
    from ..launch.scaler import Scaler
    from .slurm import slurm_spec_from_args

    if args.nodes != 1:
        raise ConfigError("--adapt submits one-node jobs: leave out --nodes, set MIN:MAX instead")
    if args.idle_timeout <= 0:
        raise ConfigError("--adapt needs workers that leave when idle: --idle-timeout above 0")
    if args.max_pending < 1 or args.submit_every < 0 or args.poll <= 0:
        raise ConfigError("--max-pending must be 1 or more, --submit-every and --poll positive")
    spec = slurm_spec_from_args(args)
    slots = spec.processes or spec.cpus_per_task or 1
    policy = Policy(
        min_nodes, max_nodes, slots, max_pending=args.max_pending, submit_every=args.submit_every
    )
    try:
        policy.check()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    spec.check()
    return Scaler(backend, spec, policy, amqp_url=amqp_url, poll=args.poll)


def _adapt(args: argparse.Namespace) -> int:
    import logging
    import time

    from ..backends.rabbitmq import RabbitBackend
    from ..config import snapshot
    from ..launch.local import default_url_file
    from .slurm import slurm_spec_from_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    url_file = args.amqp_url_file or os.environ.get("SIF_MAGIC_AMQP_URL_FILE", "")
    if not url_file and not os.environ.get("SIF_MAGIC_AMQP_URL"):
        url_file = str(default_url_file())
    spec_runtime = slurm_spec_from_args(args).runtime
    cfg = snapshot(
        backend="rabbitmq",
        runtime=spec_runtime,
        amqp_url_file=url_file or None,
        key_file=args.key_file or None,
    )
    backend = RabbitBackend(cfg)
    scaler = scaler_from_args(args, backend, args.min, args.max).open()
    print(
        f"adapting runtime {spec_runtime} between {args.min} and {args.max} node(s) "
        f"(jobs named {scaler.name}); Ctrl-C stops (the jobs end by themselves)"
    )
    last = ()
    try:
        while True:
            scaler.tick()
            if scaler.lines != last:
                last = scaler.lines
                print(time.strftime("%H:%M:%S"), "; ".join(last), flush=True)
            time.sleep(args.poll)
    except KeyboardInterrupt:
        print("stopped: the workers leave after their idle timeout; their jobs end then")
    finally:
        scaler.stop()
        backend.close()
    return 0
