"""concurrent.futures.ProcessPoolExecutor(2): s7, s8 and s9.

s7: ``list(pool.map(inc, range(n), chunksize=k))`` with ``k = auto_chunksize(n, 2)``,
the chunk size sif_magic's local backend picks for the same run; the pool is
started and warm before the timed run, as the local backend's is.
s9: ``list(pool.map(plus_one, arrays))`` over the big arrays (``_arrays.py``),
its default chunk size (1), pool warm.
s8: ``list(pool.map(sleep_for, durations, chunksize=1))`` over the skewed
durations (``_skew.py``): one call per task, each process taking the next as
it goes idle, pool warm.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor

from . import _common
from ._common import Context

TOOL = "ProcessPoolExecutor(2)"


def arrays(ctx: Context) -> None:
    from . import _arrays
    from ._funcs import plus_one

    data = _arrays.make(ctx.params)
    with ctx.attempt("s9", TOOL), ProcessPoolExecutor(2) as pool:
        _arrays.check(data[:2], list(pool.map(plus_one, data[:2])))  # processes up and warm
        for p in pool._processes.values() if pool._processes else ():
            ctx.procs.adopt(p.pid)
        ctx.procs.note_descendants()
        for _ in range(ctx.params.get("inner", 2)):
            t0 = time.perf_counter()
            out = list(pool.map(plus_one, data))
            dt = time.perf_counter() - t0
            _arrays.check(data, out)
            del out
            ctx.record(
                "s9", TOOL, "throughput", _arrays.moved_mb(data) / dt, "MB/s",
                higher_is_better=True, seconds=dt, arrays=len(data), chunksize=1,
            )  # fmt: skip


def skewed(ctx: Context) -> None:
    from . import _skew
    from ._funcs import sleep_for

    work = _skew.durations(ctx.params)
    with ctx.attempt("s8", TOOL), ProcessPoolExecutor(2) as pool:
        list(pool.map(sleep_for, [0.0] * 4))  # processes up and warm
        for p in pool._processes.values() if pool._processes else ():
            ctx.procs.adopt(p.pid)
        ctx.procs.note_descendants()
        for _ in range(ctx.params.get("inner", 2)):
            t0 = time.perf_counter()
            out = list(pool.map(sleep_for, work, chunksize=1))
            dt = time.perf_counter() - t0
            _skew.check(work, out)
            s = _skew.score(work, dt)
            ctx.record(
                "s8", TOOL, "share of the ideal makespan", s.pop("value"), "%",
                higher_is_better=True, chunksize=1, **s,
            )  # fmt: skip


def run(ctx: Context) -> None:
    if ctx.want("s9"):
        arrays(ctx)
    if ctx.want("s8"):
        skewed(ctx)
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
