"""``sif-magic hello``: a small map that shows where each call ran."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ._common import add_url_args, warn_url_in_argv


def register(sub: Any) -> None:
    p = sub.add_parser("hello", help="run a small map and show where it ran (a smoke test)")
    p.add_argument("--backend", choices=["local", "rabbitmq"], default=None)
    add_url_args(p)
    p.add_argument("--runtime", default=None)
    p.add_argument("-n", type=int, default=8, help="number of calls")
    p.set_defaults(func=main)


def where(i: int) -> tuple[int, str, int, str]:
    import os
    import socket

    container = (
        os.environ.get("SIF_MAGIC_CONTAINER") or os.environ.get("SINGULARITY_NAME") or "none"
    )
    print(f"hello from call {i}")
    return i * i, socket.gethostname(), os.getpid(), container


def main(args: argparse.Namespace) -> int:
    from ..errors import SifMagicError
    from ..executor import Executor

    warn_url_in_argv("sif-magic hello", args.amqp_url)
    broker = {"amqp_url": args.amqp_url}
    if args.amqp_url_file:  # the file, whatever SIF_MAGIC_AMQP_URL says
        broker = {"amqp_url": args.amqp_url or "", "amqp_url_file": args.amqp_url_file}
    t0 = time.time()
    try:
        with Executor(backend=args.backend, runtime=args.runtime, **broker) as ex:
            print(f"sif_magic hello: {args.n} calls on {ex.backend.describe()}")
            job = ex.map_job(where, range(args.n))
            results = job.results()
    except SifMagicError as e:
        print(f"sif-magic hello: {e}")
        return 1
    for i, (sq, host, pid, container) in enumerate(results):
        print(
            f"  call {i}: {i}^2 = {sq:<4} host {host}  pid {pid}  container {container}  printed {job.output(i).strip()!r}"
        )
    ok = all(r[0] == i * i for i, r in enumerate(results))
    print(
        f"{'OK' if ok else 'WRONG RESULTS'}: {len(results)} results in order in {time.time() - t0:.2f} s"
    )
    return 0 if ok else 1
