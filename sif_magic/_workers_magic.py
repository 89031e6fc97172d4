"""``%sif_workers``: list the workers, start and stop them here, submit them to SLURM.

The options of ``start`` and ``slurm`` are those of ``sif-magic workers start``
and ``sif-magic slurm submit`` (``sif_magic.cli``). Runs on the kernel's thread,
like every magic; it holds no state (the executors belong to ``SifMagics``).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .config import get_config
from .errors import SifMagicError

if TYPE_CHECKING:
    from .executor import Executor


def workers_magic(line: str, executor: Callable[..., Executor]) -> Any:
    """Run ``%sif_workers LINE``; ``executor(backend=None, runtime=None)`` is the magics'."""
    words = shlex.split(line)
    if words and words[0] == "slurm":
        return _slurm(words[1:], executor)
    if words and words[0] in ("start", "stop"):
        return _local(words[0], words[1:])
    if words:
        raise UsageError(
            "usage: %sif_workers [slurm [--adapt MIN:MAX] OPTIONS | start OPTIONS | stop]"
        )
    from .display.text import worker_line
    from .launch.slurm_rows import workers_table

    rows = workers_table(executor().backend, refresh=True)
    if not rows:
        print("no live workers seen (start some: %sif_workers start, %sif_workers slurm --nodes N)")
        return None
    for w in rows:
        print(worker_line(w))
    return None


def _parse(
    prog: str, add_arguments: Callable[[argparse.ArgumentParser], None], words: list[str]
) -> tuple[argparse.Namespace, str]:
    """The options of ``prog`` (those of its CLI command), completed from ``%sif_config``;
    and the broker URL to hand to the workers ('' when they read it from a file)."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    add_arguments(parser)
    try:
        args = parser.parse_args(words)
    except SystemExit:
        raise UsageError(parser.format_usage()) from None
    cfg = get_config()
    if cfg.backend != "rabbitmq":
        raise UsageError(
            "workers serve the rabbitmq backend: %sif_config backend=rabbitmq amqp_url=..."
        )
    args.runtime = args.runtime or cfg.runtime
    args.amqp_url_file = args.amqp_url_file or cfg.amqp_url_file
    args.key_file = args.key_file or cfg.key_file
    args.queue_type = args.queue_type or cfg.queue_type
    return args, "" if args.amqp_url_file else cfg.amqp_url


def _slurm_arguments(p: argparse.ArgumentParser) -> None:
    from .cli.adapt import add_adapt_arguments
    from .cli.slurm import add_slurm_submit_arguments

    add_slurm_submit_arguments(p)
    add_adapt_arguments(p)
    p.add_argument("--adapt", default="", metavar="MIN:MAX", help="elastic: MIN to MAX nodes; off")


def _adapt(args: argparse.Namespace, amqp_url: str, executor: Callable[..., Executor]) -> Any:
    """``--adapt MIN:MAX``: a scaler on its own thread (one per runtime); ``--adapt off``
    stops it."""
    from .cli.adapt import scaler_from_args
    from .cli.slurm import slurm_spec_from_args
    from .launch.scaler import ACTIVE

    runtime = slurm_spec_from_args(args).runtime
    if args.adapt == "off":
        old = ACTIVE.get(runtime)
        if old is None:
            print(f"no scaler runs for runtime {runtime}")
            return None
        old.stop()
        print(f"scaler of runtime {runtime} stopped; its workers leave after their idle timeout")
        return None
    lo, sep, hi = args.adapt.partition(":")
    if not (sep and lo.isdigit() and hi.isdigit()):
        raise UsageError(f"--adapt {args.adapt!r}: write MIN:MAX, e.g. --adapt 0:4 (or off)")
    try:
        backend = executor(runtime=runtime).backend
        scaler = scaler_from_args(args, backend, int(lo), int(hi), amqp_url=amqp_url).start()
    except SifMagicError as e:
        raise UsageError(str(e)) from None
    print(
        f"adapting runtime {runtime} between {lo} and {hi} node(s), jobs named {scaler.name}: "
        "%sif_workers and the workers table under each job show what it does "
        "(%sif_workers slurm --adapt off stops it; its jobs end by themselves)"
    )
    return scaler


def _slurm(words: list[str], executor: Callable[..., Executor]) -> Any:
    from .cli.slurm import slurm_spec_from_args
    from .launch import slurm

    args, amqp_url = _parse("%sif_workers slurm", _slurm_arguments, words)
    if args.adapt:
        return _adapt(args, amqp_url, executor)
    spec = slurm_spec_from_args(args)
    try:
        job = slurm.submit(spec, amqp_url=amqp_url)
    except SifMagicError as e:
        raise UsageError(str(e)) from None
    from .launch.slurm_rows import PENDING

    PENDING.add(job.job_id, spec.runtime)
    print(f"submitted SLURM job {job.job_id}: {args.nodes} node(s), runtime {spec.runtime}")
    print("%sif_workers shows it until its workers join; jobs show it under their cell")
    return job.job_id


def _local(action: str, words: list[str]) -> Any:
    from .launch import stop_workers

    if action == "stop":
        for wid, outcome in stop_workers(words or None):
            print(f"{wid}: {outcome}")
        return None
    from .cli.workers import add_workers_start_arguments, start_from_args

    args, amqp_url = _parse("%sif_workers start", add_workers_start_arguments, words)
    try:
        records = start_from_args(args, amqp_url=amqp_url)
    except SifMagicError as e:
        raise UsageError(str(e)) from None
    for r in records:
        print(f"started worker {r.id} (pid {r.pid}, runtime {r.runtime}, container {r.container})")
    return None
