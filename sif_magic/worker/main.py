"""``sif-magic worker``: options from flags, else SIF_MAGIC_* environment variables.

Runs in the worker process's main thread; ``Worker.run`` keeps it until the
worker stops (SIGTERM, SIGINT or a shutdown message).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .. import protocol
from .._keys import create_key_file, default_key_file, key_source, load_key, read_secret_file
from .._urls import check_urls
from ..errors import SifMagicError
from ..runner.resources import detect_gpus
from .claims import CLAIM_AFTER, LEASE
from .core import Worker
from .walltime import END_MARGIN

log = logging.getLogger("sif_magic.worker")


def _seconds(flag: float, env_value: str | None, default: float) -> float:
    """A duration from its flag, else the environment, else ``default``."""
    if flag:
        return flag
    try:
        return float(env_value) if env_value else default
    except ValueError:
        raise SifMagicError(f"{env_value!r} is not a number of seconds") from None


def main(args: Any) -> int:
    """Start a worker from ``args`` (see ``cli.worker``); its exit status."""

    logging.basicConfig(
        level=logging.INFO if not args.verbose else logging.DEBUG,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    env = os.environ.get
    try:
        url = args.amqp_url or env("SIF_MAGIC_AMQP_URL") or env("AMQP_URL", "")
        url_file = args.amqp_url_file or env("SIF_MAGIC_AMQP_URL_FILE", "")
        if not url and url_file:
            url = read_secret_file(url_file, "broker URL")
        url = check_urls(url, "broker URL")  # one, or the nodes of a cluster
        if not url:
            print(
                "sif-magic worker: no broker URL: pass --amqp-url-file FILE (mode 600) or set "
                "SIF_MAGIC_AMQP_URL",
                file=sys.stderr,
            )
            return 2
        key_file = args.key_file or env("SIF_MAGIC_KEY_FILE", "")
        source = key_source("", key_file)
        path = Path(key_file).expanduser() if key_file else default_key_file()
        # whichever side runs first (this worker or a notebook) makes the key file
        created = source != "SIF_MAGIC_KEY" and create_key_file(path)
        key = load_key("", key_file)
        if created:
            log.warning(
                "there was no signing key at %s: made one (key id %s). A notebook whose home "
                "is this one uses it; elsewhere copy this file to ~/.sif_magic/key there "
                "(mode 600).",
                path,
                protocol.key_id(key),
            )
        log.info("signing key: %s (key id %s)", source, protocol.key_id(key))
        spec = args.gpus or env("SIF_MAGIC_GPUS", "")
        try:
            gpus, found_in = detect_gpus(spec)
        except ValueError as e:
            print(f"sif-magic worker: {e}", file=sys.stderr)
            return 2
        if spec:
            log.info("GPUs %s (from %s)", ",".join(gpus) or "none", found_in)
            if not gpus and spec == "auto":
                log.warning(
                    "--gpus auto found no GPU (no CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS, "
                    "SLURM_JOB_GPUS or nvidia-smi): calls asking for GPUs go to other workers"
                )
        worker = Worker(
            url,
            runtime=args.runtime or env("SIF_MAGIC_RUNTIME", "default"),
            processes=int(args.processes or env("SIF_MAGIC_PROCESSES", "0") or 0),
            key=key,
            worker_id=args.worker_id or env("SIF_MAGIC_WORKER_ID", ""),
            heartbeat=args.heartbeat,
            ca_file=args.ca_file or env("SIF_MAGIC_CA_FILE", ""),
            max_message_mb=float(args.max_message_mb or env("SIF_MAGIC_MAX_MESSAGE_MB", "0") or 0),
            key_source=source,
            gpus=gpus,
            cpus=int(args.cpus or env("SIF_MAGIC_CPUS", "0") or 0),
            queue_type=getattr(args, "queue_type", "") or env("SIF_MAGIC_QUEUE_TYPE", "classic"),
            claim_after=_seconds(args.claim_after, env("SIF_MAGIC_CLAIM_AFTER"), CLAIM_AFTER),
            lease=_seconds(args.lease, env("SIF_MAGIC_LEASE"), LEASE),
            lifetime=_seconds(args.lifetime, env("SIF_MAGIC_LIFETIME"), 0.0),
            end_margin=args.end_margin if args.end_margin >= 0 else END_MARGIN,
            idle_timeout=getattr(args, "idle_timeout", None) or 0.0,
        )
        signal.signal(signal.SIGTERM, worker.stop)
        signal.signal(signal.SIGINT, worker.stop)
        return worker.run()
    except SifMagicError as e:
        print(f"sif-magic worker: {e}", file=sys.stderr)
        return 1
