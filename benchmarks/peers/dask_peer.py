"""Dask distributed: LocalCluster of 2 worker processes x 1 thread, scheduler in this process.

s1: one task per call, ``client.map(inc, range(n), pure=False)`` then ``client.gather``.
s5: RSS this (client) process gains from a 10,000-call run with the futures and
results held; the scheduler lives in this process too, as in a notebook's
``LocalCluster``.
"""

from __future__ import annotations

import gc
import sys
import time

from . import _common
from ._common import Context, rss_mb

TOOL = "Dask distributed"


def run(ctx: Context) -> None:
    import dask
    from distributed import Client, LocalCluster

    from ._funcs import inc

    _common.ship_by_value()
    p = ctx.params
    dask.config.set({"distributed.worker.daemon": False, "distributed.admin.tick.limit": "60s"})
    scenario = "s5" if ctx.want("s5") else "s1"
    with ctx.attempt(scenario, TOOL):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=50,
        )
        client = Client(cluster)
        ctx.procs.note_descendants()
        for w in cluster.workers.values():  # nanny processes: stopped by pid if left over
            proc = getattr(getattr(w, "process", None), "process", None)
            ctx.procs.adopt(getattr(proc, "pid", None))
        try:

            def once(count: int) -> tuple[float, list, list]:
                t0 = time.perf_counter()
                futures = client.map(inc, range(count), pure=False)
                values = client.gather(futures)
                dt = time.perf_counter() - t0
                if sum(values) != sum(range(count)) + count:
                    raise RuntimeError("wrong results")
                return dt, futures, values

            once(200)  # warm
            ctx.procs.note_descendants()
            if ctx.want("s1"):
                n = p.get("n1", 3000)
                for _ in range(p.get("inner", 2)):
                    dt, _, _ = once(n)
                    ctx.throughput("s1", TOOL, n, dt, setup="LocalCluster 2 processes x 1 thread")
            if ctx.want("s5"):
                n = p.get("n5_peers", 10000)
                gc.collect()
                time.sleep(0.5)
                before = rss_mb()
                dt, futures, values = once(n)
                gc.collect()
                after = rss_mb()
                ctx.record(
                    "s5",
                    TOOL,
                    f"RSS added by {n:,} calls",
                    after - before,
                    "MB",
                    higher_is_better=False,
                    calls=n,
                    rss_before=before,
                    rss_after=after,
                    seconds=dt,
                    note="futures and results held; scheduler in the client process",
                )
                del futures, values
        finally:
            client.close(timeout=10)
            cluster.close(timeout=10)


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
