"""Celery: RabbitMQ broker, rpc:// results, one worker with a prefork pool of 2 (-c 2).

One task message per call: ``group(inc.s(i) for i in range(n))`` and ``.get()``.
"""

from __future__ import annotations

import os
import sys
import time

from . import _common
from ._common import PY, Context

TOOL = "Celery"


def run(ctx: Context) -> None:
    if not ctx.want("s1"):
        return
    n = ctx.params.get("n1", 3000)
    queue = _common.unique("sif_bench.celery")
    env = _common.child_env(SIF_BENCH_CELERY_QUEUE=queue)
    os.environ["SIF_BENCH_CELERY_QUEUE"] = queue
    with ctx.attempt("s1", TOOL):
        proc = ctx.procs.start(
            [
                PY,
                "-m",
                "celery",
                "-A",
                "benchmarks.peers.celery_app",
                "worker",
                "-c",
                "2",
                "-P",
                "prefork",
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "WARNING",
            ],
            name="celery-worker",
            env=env,
        )
        try:
            _common.wait_until(
                lambda: proc.poll() is None and _common.consumers_now(queue) >= 1,
                60,
                "the Celery worker to consume its queue",
                step=0.25,
            )
        except TimeoutError:
            raise RuntimeError(f"celery worker did not start: {ctx.procs.log_tail(proc)}") from None
        ctx.procs.note_descendants()
        from celery import group

        from .celery_app import inc

        def once(count: int) -> float:
            t0 = time.perf_counter()
            values = group(inc.s(i) for i in range(count)).apply_async().get(timeout=300)
            dt = time.perf_counter() - t0
            if sum(values) != sum(range(count)) + count:
                raise RuntimeError("wrong results")
            return dt

        once(200)  # warm
        for _ in range(ctx.params.get("inner", 2)):
            dt = once(n)
            ctx.throughput("s1", TOOL, n, dt, setup="1 worker, prefork -c 2, rpc:// backend")
    ctx.procs.stop_all()
    _common.delete_queues(queue, exchanges=(queue,))  # Celery names its exchange as the queue


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
