"""Issue 4, point 5: ``job.cancel()`` reaches the workers within two seconds.

Running calls of the cancelled job are killed (their processes are gone), its queued
calls never start, and another job running on the same workers at the same time (from
another client) is untouched: every result right, nothing of it cancelled or re-run.
"""

from __future__ import annotations

import time
from pathlib import Path

from faultkit import FaultWorkers, tasks_left, wait_gone, wait_until


def test_cancel_kills_running_drops_queued_and_spares_the_other_job(
    fworkers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    procs = fworkers.start(runtime, processes=2, count=2)
    d = str(tmp_path)

    def hang(x: int) -> int:
        import os
        import subprocess
        import time

        child = subprocess.Popen(["sleep", "120"])  # a process of the call's own
        open(os.path.join(d, f"a-{x}-{os.getpid()}-{child.pid}"), "w").close()
        time.sleep(120)
        return x

    def quick(x: int) -> int:
        import os
        import time

        open(os.path.join(d, f"b-{x}-{time.time()}"), "w").close()
        time.sleep(0.5)
        return -x

    ex_a = make_ex(amqp_url=fworkers.url, runtime=runtime)
    ex_b = make_ex(amqp_url=fworkers.url, runtime=runtime)  # another notebook
    # 2 chunks: one slot each, and the slots its worker has idle take calls of it
    # (runner/pool.py splits a running piece): 2 to 4 calls run
    job_a = ex_a.map_job(hang, range(12), chunksize=6)
    wait_until(lambda: len(list(tmp_path.glob("a-*"))) >= 2, 30, "2 calls of job A running")
    job_b = ex_b.map_job(quick, range(16), chunksize=1)  # waits for slots, or runs
    running = [tuple(map(int, p.name.split("-")[2:])) for p in tmp_path.glob("a-*")]
    pids = [pid for pair in running for pid in pair]
    fworkers.track(pids)
    assert not job_b.done()

    t0 = time.time()
    assert job_a.cancel()
    returned = time.time() - t0
    left = wait_gone(pids, max(0.0, 2.0 - (time.time() - t0)))
    gone_after = time.time() - t0
    assert not left, f"call processes of the cancelled job still run 2 s after cancel: {left}"
    assert job_a.done() and returned <= 2.5
    assert job_a.state_counts()["cancelled"] == 12
    started = len(list(tmp_path.glob("a-*")))  # before the cancel took effect

    # the other job is untouched: every result right, none cancelled, none re-run
    assert job_b.results(timeout=60) == [-x for x in range(16)]
    assert job_b.state_counts()["done"] == 16
    assert all(job_b.describe_call(i)["attempt"] == 1 for i in range(16))
    assert len(list(tmp_path.glob("b-*"))) == 16
    # the cancelled job's queued calls never started
    time.sleep(1.0)
    assert len(list(tmp_path.glob("a-*"))) == started
    assert all(p.poll() is None for p in procs)
    print(
        f"\nFIGURES cancel: cancel()-returned={returned:.2f}s processes-gone={gone_after:.2f}s "
        f"cancelled={job_a.count('cancelled')} other-job-done={job_b.count('done')}/16"
    )


def test_cancel_drops_chunks_still_on_the_broker(
    fworkers: FaultWorkers, make_ex, broker_url: str, runtime: str, tmp_path: Path
) -> None:
    (worker,) = fworkers.start(runtime, processes=1)
    d = str(tmp_path)

    def slow(x: int) -> int:
        import os
        import time

        open(os.path.join(d, f"started-{x}"), "w").close()
        time.sleep(5)
        return x

    ex = make_ex(amqp_url=broker_url, runtime=runtime)
    job = ex.map_job(slow, range(40), chunksize=1)  # 1 running, 1 prefetched, 38 on the broker
    wait_until(lambda: list(tmp_path.glob("started-*")), 30, "the first call running")
    t0 = time.time()
    job.cancel()
    assert time.time() - t0 <= 2.5
    assert job.state_counts()["cancelled"] == 40
    # the worker drops the job's chunks as they come, without running them
    wait_until(lambda: tasks_left(broker_url, runtime) == 0, 20, "an empty task queue")
    assert ex.map_job(abs, [-7]).results(timeout=20) == [7]
    assert len(list(tmp_path.glob("started-*"))) == 1
    assert worker.poll() is None
