"""Per-call overhead of the local backend's call path (``runner/pool.py`` + ``runner/slot.py``).

    .venv/bin/python benchmarks/slot_overhead.py [--n 100000] [--repeats 5]

Prints, for ``f(x) = x + 1`` over N calls with the automatic chunk size:

- the local backend end to end (``map_job`` to every result in this process),
  median and min-max of the repeats;
- ``ProcessPoolExecutor(2).map(f, range(N), chunksize=k)``, same chunk size, warm;
- the ratio of the two (target: the local backend within 2x);
- CPU time per call (user + system from ``/proc``): in the slot processes
  (summed) and in this process (the pool's reader threads, the job), medians.

A micro-benchmark for the call path, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

TICK = os.sysconf("SC_CLK_TCK")


def inc(x: int) -> int:
    return x + 1


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def bench_local(n: int, repeats: int, processes: int) -> dict:
    os.environ["SIF_MAGIC_WIDGETS"] = "0"
    from sif_magic import Executor

    ex = Executor(backend="local", processes=processes)
    try:
        ex.map_job(inc, range(20000)).results(timeout=120)  # slots up and warm
        rates, slot_us, self_us = [], [], []
        for _ in range(repeats):
            pids = list(ex.backend.pool.pids)
            s0 = sum(cpu_seconds(p) for p in pids)
            c0 = cpu_seconds(os.getpid())
            t0 = time.perf_counter()
            job = ex.map_job(inc, range(n))
            values = job.results(timeout=300)
            dt = time.perf_counter() - t0
            c1 = cpu_seconds(os.getpid())
            s1 = sum(cpu_seconds(p) for p in pids)
            counts = job.state_counts()
            if counts["done"] != n or sum(values) != sum(range(n)) + n:
                raise RuntimeError(f"wrong results or states: {counts}")
            job.close()
            rates.append(n / dt)
            slot_us.append((s1 - s0) / n * 1e6)
            self_us.append((c1 - c0) / n * 1e6)
        return {"rates": rates, "slot_us": slot_us, "self_us": self_us}
    finally:
        ex.shutdown()


def bench_ppe(n: int, repeats: int, processes: int) -> dict:
    from sif_magic.runner.scheduler import auto_chunksize

    k = auto_chunksize(n, processes)
    rates = []
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(inc, range(20000), chunksize=k))
        for _ in range(repeats):
            t0 = time.perf_counter()
            values = list(pool.map(inc, range(n), chunksize=k))
            dt = time.perf_counter() - t0
            if sum(values) != sum(range(n)) + n:
                raise RuntimeError("wrong results")
            rates.append(n / dt)
    return {"rates": rates, "chunksize": k}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--skip-ppe", action="store_true")
    a = ap.parse_args(argv)
    local = bench_local(a.n, a.repeats, a.processes)
    lr = local["rates"]
    print(
        f"local backend     {statistics.median(lr):>12,.0f} calls/s "
        f"(min-max {min(lr):,.0f}-{max(lr):,.0f})"
    )
    print(
        f"  CPU per call: slots {statistics.median(local['slot_us']):.2f} µs, "
        f"this process {statistics.median(local['self_us']):.2f} µs"
    )
    if not a.skip_ppe:
        ppe = bench_ppe(a.n, a.repeats, a.processes)
        pr = ppe["rates"]
        print(
            f"ProcessPoolExecutor({a.processes}) {statistics.median(pr):>8,.0f} calls/s "
            f"(min-max {min(pr):,.0f}-{max(pr):,.0f}, chunksize {ppe['chunksize']})"
        )
        print(
            f"ratio local / PPE {statistics.median(lr) / statistics.median(pr):.3f}x "
            f"(target >= 0.5x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
