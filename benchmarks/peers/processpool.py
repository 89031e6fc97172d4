"""concurrent.futures.ProcessPoolExecutor(2) with sif_magic's automatic chunk size (s7).

``list(pool.map(inc, range(n), chunksize=k))`` with ``k = auto_chunksize(n, 2)``,
the chunk size sif_magic's local backend picks for the same run; the pool is
started and warm before the timed run, as the local backend's is.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor

from . import _common
from ._common import Context

TOOL = "ProcessPoolExecutor(2)"


def run(ctx: Context) -> None:
    if not ctx.want("s7"):
        return
    from sif_magic.runner.scheduler import auto_chunksize

    from ._funcs import inc

    n = ctx.params.get("n2", 100000)
    k = auto_chunksize(n, 2)
    with ctx.attempt("s7", TOOL), ProcessPoolExecutor(2) as pool:
        for p in pool._processes.values() if pool._processes else ():
            ctx.procs.adopt(p.pid)
        list(pool.map(inc, range(20000), chunksize=k))  # processes up and warm
        ctx.procs.note_descendants()
        t0 = time.perf_counter()
        values = list(pool.map(inc, range(n), chunksize=k))
        dt = time.perf_counter() - t0
        if sum(values) != sum(range(n)) + n:
            raise RuntimeError("wrong results")
        ctx.throughput("s7", TOOL, n, dt, chunksize=k)


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
