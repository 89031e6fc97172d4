"""CPU seconds of one s9 run (40 NumPy arrays of 8 MB in and out, ``a + 1``), per process.

Starts one ``sif-magic worker`` of 2 processes on a unique runtime (stopped by pid at
the end; its queues and exchanges are deleted after), then maps over the arrays ``--runs`` times on the rabbitmq backend and
prints, per run: MB/s, the client's CPU seconds, the worker's with its call
processes, and RabbitMQ's (``beam.smp``: every user's, so an upper bound).
``--path spill`` is the default (the worker sees the client's spill directory:
the arrays go through files there), ``--path broker`` sets ``spill_arrays_mb=0``.
``--spy FILE`` records the worker and its call processes with py-spy (raw stacks).

    PYTHONPATH=$PWD benchmarks/.venv/bin/python benchmarks/s9_cpu.py --path broker
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def cpu(p: Any) -> float:
    t = p.cpu_times()
    return t.user + t.system


def start_worker(prefix: str) -> tuple[str, str, subprocess.Popen]:
    """A fresh SIF_MAGIC_HOME with a key, and one ``sif-magic worker`` of 2 processes
    on a unique runtime: (key file, runtime, its process)."""
    from sif_magic._keys import load_key

    home = tempfile.mkdtemp(prefix=prefix + "-")
    os.environ["SIF_MAGIC_HOME"] = home
    os.environ["SIF_MAGIC_WIDGETS"] = "0"
    logging.getLogger("sif_magic").setLevel(logging.ERROR)
    key_file = os.path.join(home, "key")
    load_key(key_file=key_file)
    url_file = os.path.join(home, "url")
    with open(url_file, "w") as f:
        f.write(URL)
    os.chmod(url_file, 0o600)
    runtime = prefix + uuid.uuid4().hex[:6]
    worker = subprocess.Popen(
        [sys.executable, "-m", "sif_magic", "worker", "--amqp-url-file", url_file,
         "--runtime", runtime, "--processes", "2", "--key-file", key_file],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return key_file, runtime, worker


def stop_worker(worker: subprocess.Popen, runtime: str, key_file: str) -> None:
    """Stop the worker (by its pid) and delete its runtime's queues and exchanges."""
    worker.terminate()
    worker.wait(30)
    from benchmarks.peers._common import delete_queues
    from benchmarks.peers.sifmagic import run_queues

    queues, exchanges = run_queues(runtime, Path(key_file))  # this run's, on the broker
    delete_queues(*queues, exchanges=tuple(exchanges))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", choices=("spill", "broker"), default="spill")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--spy", default="")
    args = ap.parse_args()
    key_file, runtime, worker = start_worker("s9cpu")
    spy = None
    import numpy as np
    import psutil

    from sif_magic import Executor

    try:
        ex = Executor(
            backend="rabbitmq", amqp_url=URL, runtime=runtime, key_file=key_file,
            no_worker_timeout=30,
        )  # fmt: skip
        if args.path == "broker":
            ex.config.spill_arrays_mb = 0
        from benchmarks.peers._funcs import plus_one

        data = [np.full(1 << 20, float(i)) for i in range(40)]
        warm = ex.map_job(plus_one, data[:2])
        warm.results(timeout=60)
        warm.close()
        time.sleep(2.5)  # a heartbeat with the worker's spill root has come
        me, wp = psutil.Process(), psutil.Process(worker.pid)
        beam = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"]

        def worker_cpu() -> float:
            return cpu(wp) + sum(cpu(c) for c in wp.children(recursive=True))

        def broker_cpu() -> float:
            total = 0.0
            for p in beam:
                try:
                    total += cpu(p)
                except psutil.Error:
                    pass
            return total

        if args.spy:
            spy = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-r", "200",
                 "--subprocesses", "--format", "raw", "-o", args.spy, "--pid", str(worker.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.5)
        for _ in range(args.runs):
            c0, w0, b0 = cpu(me), worker_cpu(), broker_cpu()
            t0 = time.perf_counter()
            job = ex.map_job(plus_one, data)
            out = job.results(timeout=600)
            dt = time.perf_counter() - t0
            if out[7][0] != 8:
                raise RuntimeError("wrong result")
            print(
                f"{args.path}: {640 / dt:.0f} MB/s, {dt:.2f} s; CPU s: client {cpu(me) - c0:.2f},"
                f" worker + call processes {worker_cpu() - w0:.2f}, RabbitMQ (all users)"
                f" {broker_cpu() - b0:.2f}; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            job.close()
            del out
        ex.shutdown()
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        stop_worker(worker, runtime, key_file)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
