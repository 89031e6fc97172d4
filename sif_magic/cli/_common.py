"""What the CLI's commands share: one-line errors, and the broker options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import SifMagicError


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
        help="file (mode 600) holding the broker URL (default: "
        "$SIF_MAGIC_AMQP_URL_FILE, $SIF_MAGIC_AMQP_URL, ~/.sif_magic/amqp_url)",
    )
    p.add_argument("--key-file", default="", metavar="FILE", help="HMAC key file (mode 600)")
