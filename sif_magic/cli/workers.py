"""``sif-magic workers start | list | stop``: workers on this machine (see ``sif_magic.launch``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from .. import containers
from ._common import add_broker_args, guard


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
        choices=list(containers.RUNTIMES),
        help="none: run `python -m sif_magic worker` without a container",
    )
    p.add_argument("--python", default=sys.executable, help="Python for --container none")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a worker with no call this long leaves (default 0: never)",
    )
    add_broker_args(p)


def start_from_args(args: argparse.Namespace, amqp_url: str = "") -> list:
    """Start the workers ``args`` (parsed by ``add_workers_start_arguments``) describe."""
    from ..launch import start_workers

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
        queue_type=args.queue_type,
        idle_timeout=args.idle_timeout,
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("workers", help="start, list and stop workers on this machine")
    sub = p.add_subparsers(dest="workers_command", metavar="{start,list,stop}", required=True)

    s = sub.add_parser("start", help="start workers (Singularity instances or plain processes)")
    add_workers_start_arguments(s)
    s.set_defaults(func=guard(_workers_start))

    ls = sub.add_parser("list", help="the workers started here")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=guard(_workers_list))

    st = sub.add_parser("stop", help="stop workers by id (SIGTERM to their pid)")
    st.add_argument("ids", nargs="*", metavar="ID")
    st.add_argument("--all", action="store_true", help="every worker started on this host")
    st.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL")
    st.set_defaults(func=guard(_workers_stop))


def _workers_start(args: argparse.Namespace) -> int:
    records = start_from_args(args)
    for r in records:
        where = f"instance://{r.instance}" if r.instance else "no container"
        print(f"started {r.id}  pid {r.pid}  runtime {r.runtime}  {where}  log {r.log}")
    return 0


def _workers_list(args: argparse.Namespace) -> int:
    from ..launch import list_workers

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
    from ..launch import stop_workers

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
