"""CPU per call of one s1 run (``--calls`` calls of ``x + 1``, ``chunksize=1``), per process.

Starts one ``sif-magic worker`` of 2 processes on a unique runtime (stopped by pid at
the end; its queues and exchanges are deleted after), then maps ``--runs`` times and
prints calls/s and CPU microseconds per call: the client, the worker process, its
call processes together. The function goes by value, as run.py's s1 sends it (553
bytes in every task); ``--ship-modules`` sends it as a notebook next to its own
modules does: the benchmarks package bundled with it (32 KB in every task).

    PYTHONPATH=$PWD benchmarks/.venv/bin/python benchmarks/s1_cpu.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def main() -> None:
    from benchmarks.s9_cpu import URL, cpu, start_worker, stop_worker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument(
        "--ship-modules",
        action="store_true",
        help="ship the benchmarks package with the function (a 32 KB bundle in every task), "
        "instead of the function by value as run.py's s1 sends it (553 bytes)",
    )
    ap.add_argument(
        "--spy", default="", help="py-spy raw stacks of the worker and its call processes"
    )
    args = ap.parse_args()
    import psutil

    from sif_magic import Executor

    key_file, runtime, worker = start_worker("s1cpu")
    try:
        ex = Executor(
            backend="rabbitmq", amqp_url=URL, runtime=runtime, key_file=key_file,
            no_worker_timeout=30,
        )  # fmt: skip
        from benchmarks.peers._common import ship_by_value
        from benchmarks.peers._funcs import inc

        if not args.ship_modules:
            ship_by_value()  # as run.py's s1 does

        warm = ex.map_job(inc, range(200), chunksize=1)
        warm.results(timeout=60)
        warm.close()
        me, wp = psutil.Process(), psutil.Process(worker.pid)

        def worker_cpu() -> tuple[float, float]:
            return cpu(wp), sum(cpu(c) for c in wp.children(recursive=True))

        spy = None
        if args.spy:
            spy = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-r", "500",
                 "--format", "raw", "-o", args.spy, "--pid", str(worker.pid), "--threads", "--subprocesses"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.5)
        n = args.calls
        for _ in range(args.runs):
            c0, (w0, s0) = cpu(me), worker_cpu()
            t0 = time.perf_counter()
            job = ex.map_job(inc, range(n), chunksize=1)
            out = job.results(timeout=600)
            dt = time.perf_counter() - t0
            if sum(out) != sum(range(n)) + n:
                raise RuntimeError("wrong result")
            w1, s1 = worker_cpu()
            print(
                f"s1: {n / dt:,.0f} calls/s; CPU us per call: client {(cpu(me) - c0) / n * 1e6:.0f},"
                f" worker {(w1 - w0) / n * 1e6:.0f}, call processes {(s1 - s0) / n * 1e6:.0f};"
                f" load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            job.close()
        ex.shutdown()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
    finally:
        stop_worker(worker, runtime, key_file)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
