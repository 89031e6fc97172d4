"""ipyparallel: a local cluster (controller + 2 engines), load-balanced view.

s1: ``view.map_sync(inc, range(n), chunksize=1)``, one task per call.
s5: RSS this (client) process gains from a 10,000-call run, results held.
"""

from __future__ import annotations

import gc
import sys
import time

from . import _common
from ._common import Context, rss_mb

TOOL = "ipyparallel"


def run(ctx: Context) -> None:
    import ipyparallel as ipp

    from ._funcs import inc

    _common.ship_by_value()
    p = ctx.params
    scenario = "s5" if ctx.want("s5") else "s1"
    with ctx.attempt(scenario, TOOL):
        cluster = ipp.Cluster(
            n=2,
            engines="local",
            controller_ip="127.0.0.1",
            profile_dir=str(ctx.workdir / "ipp-profile"),
            cluster_id=_common.unique("bench"),
            log_level=40,
        )
        try:
            rc = cluster.start_and_connect_sync(activate=False)
            ctx.procs.note_descendants()
            rc.wait_for_engines(2, timeout=60)
            view = rc.load_balanced_view()

            def once(count: int) -> tuple[float, list]:
                t0 = time.perf_counter()
                values = view.map_sync(inc, range(count), chunksize=1)
                dt = time.perf_counter() - t0
                if sum(values) != sum(range(count)) + count:
                    raise RuntimeError("wrong results")
                return dt, values

            once(200)  # warm
            ctx.procs.note_descendants()
            if ctx.want("s1"):
                n = p.get("n1", 3000)
                for _ in range(p.get("inner", 2)):
                    dt, _ = once(n)
                    ctx.throughput(
                        "s1", TOOL, n, dt, setup="2 local engines, load-balanced view, chunksize 1"
                    )
            if ctx.want("s5"):
                n = p.get("n5_peers", 10000)
                gc.collect()
                before = rss_mb()
                dt, values = once(n)
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
                    note="results held (the client also keeps its own result cache)",
                )
                del values
            rc.close()
        finally:
            cluster.stop_cluster_sync()


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
