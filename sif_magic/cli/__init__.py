"""``sif-magic``: the command line (worker, hello, logs, runtime, workers, slurm).

One module per command; each has ``register(subparsers)``, and each leaf sets
``func(args) -> int``. Standard library only: the worker's command must start
in a slim image, so a command imports what it runs only when it runs. A command
runs on the process's main thread and owns what it opens (``logs``: its own
blocking broker connection); ``worker`` hands the process to ``sif_magic.worker``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import hello, images, logs, slurm, worker, workers

COMMANDS = (worker, hello, logs, images, workers, slurm)


def register(subparsers: Any) -> None:
    """Add every command to ``subparsers`` (argparse's ``add_subparsers()``)."""
    for command in COMMANDS:
        command.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="sif-magic", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"sif_magic {__version__}")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
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
