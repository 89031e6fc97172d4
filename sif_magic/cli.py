"""``sif-magic``: the command line (worker, hello, logs, and the cluster commands)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _worker_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run a worker (what runs inside the container)",
        description="Consume a runtime's task queue and run its calls. Every option can also "
        "come from the environment: SIF_MAGIC_AMQP_URL(_FILE), SIF_MAGIC_RUNTIME, "
        "SIF_MAGIC_PROCESSES, SIF_MAGIC_KEY_FILE (or SIF_MAGIC_KEY), SIF_MAGIC_WORKER_ID.",
    )
    p.add_argument(
        "--amqp-url", default="", help="broker URL (prefer --amqp-url-file: argv is visible in ps)"
    )
    p.add_argument("--amqp-url-file", default="", help="file (mode 600) holding the broker URL")
    p.add_argument("--runtime", default="", help="runtime name: consumes sif_magic.tasks.RUNTIME")
    p.add_argument("--processes", type=int, default=0, help="call processes (default: usable CPUs)")
    p.add_argument("--key-file", default="", help="signing key file (default ~/.sif_magic/key)")
    p.add_argument("--worker-id", default="", help="name shown in the workers table")
    p.add_argument("--ca-file", default="", help="CA certificate to verify an amqps:// broker")
    p.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    p.add_argument("-v", "--verbose", action="store_true")

    def run(args: argparse.Namespace) -> int:
        import signal

        # stopped (scancel, workers stop) while still importing: leave quietly, exit 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        from .worker import main

        return main(args)

    p.set_defaults(func=run)


def _hello_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hello", help="run a small map and show where it ran (a smoke test)")
    p.add_argument("--backend", choices=["local", "rabbitmq"], default=None)
    p.add_argument("--amqp-url", default=None)
    p.add_argument("--runtime", default=None)
    p.add_argument("-n", type=int, default=8, help="number of calls")
    p.set_defaults(func=lambda args: __import__("sif_magic._hello", fromlist=["main"]).main(args))


def _logs_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="print call logs and states from the monitoring exchange")
    p.add_argument("job", nargs="?", default="", help="job id (default: every job)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing as events arrive")
    p.add_argument("--amqp-url", default=None)
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    p.set_defaults(func=lambda args: __import__("sif_magic._logs", fromlist=["main"]).main(args))


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="sif-magic", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sif_magic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _worker_parser(sub)
    _hello_parser(sub)
    _logs_parser(sub)
    try:
        from ._cli_cluster import register
    except ImportError:  # the cluster commands are optional in a slim worker image
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
