"""What the CLI's commands share: one-line errors, the broker options, and the warning
for a broker password on the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import SifMagicError, mask_url
from ..protocol.names import QUEUE_TYPES


def guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
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


def add_broker_args(p: argparse.ArgumentParser) -> None:
    """``--amqp-url-file`` and ``--key-file``: how started workers find the broker."""
    p.add_argument(
        "--amqp-url-file",
        default="",
        metavar="FILE",
        help="file (mode 600) holding the broker URL, or the URLs of a cluster's nodes "
        "(comma-separated) (default: $SIF_MAGIC_AMQP_URL_FILE, $SIF_MAGIC_AMQP_URL, "
        "~/.sif_magic/amqp_url)",
    )
    p.add_argument("--key-file", default="", metavar="FILE", help="HMAC key file (mode 600)")
    add_queue_type_arg(p)


def add_queue_type_arg(p: argparse.ArgumentParser) -> None:
    """``--queue-type``: classic or quorum ("": ``$SIF_MAGIC_QUEUE_TYPE``, else classic)."""
    p.add_argument(
        "--queue-type",
        default="",
        choices=["", *QUEUE_TYPES],
        help="type of the task queues: classic (default) or quorum (replicated on the nodes "
        "of a RabbitMQ cluster); the same on every notebook and worker of a vhost; default "
        "$SIF_MAGIC_QUEUE_TYPE",
    )


ARGV_URL_HELP = (
    "broker URL; prefer --amqp-url-file: every user of this machine can read a command "
    "line (ps, /proc/PID/cmdline)"
)


def add_url_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--amqp-url`` (warned about: see ``warn_url_in_argv``) and ``--amqp-url-file``."""
    p.add_argument("--amqp-url", default=default, metavar="URL", help=ARGV_URL_HELP)
    p.add_argument(
        "--amqp-url-file",
        default=default,
        metavar="FILE",
        help="file (mode 600) holding the broker URL",
    )


def warn_url_in_argv(prog: str, url: str | None) -> None:
    """Say on stderr that ``url``, given as an argument, shows its password to every local
    user (nothing when it holds none)."""
    if url and mask_url(url) != url:
        print(
            f"{prog}: warning: the password of --amqp-url is in this process's command line, "
            "which every user of this machine can read (ps, /proc/PID/cmdline). Put the URL "
            "in a file only you can read and pass --amqp-url-file FILE (or set "
            "SIF_MAGIC_AMQP_URL_FILE)",
            file=sys.stderr,
        )
