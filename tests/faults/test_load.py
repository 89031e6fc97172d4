"""Issue 4, point 8: load. 100,000 calls on 4 worker processes (2 workers x 2) while a
second notebook (another Executor, another connection) runs 100,000 calls of its own on
the same workers. Both finish with every result right; the task queue ends empty and the
result queues are deleted when the executors shut down. Queue depths, the client's RSS
and the broker's memory are sampled during the run and printed (FIGURES lines); times
are reported, not asserted.

A second test kills one of the two workers during a 100,000-call run (worker death
under load): every result right, the time the recovery took is reported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from faultkit import FaultWorkers, queue_depths, rss_kib, runtime_queues, tasks_left, wait_until
from queues import scope

from sif_magic import protocol

pytestmark = pytest.mark.slow

N = 100_000


def _rabbitmqctl(*args: str) -> str | None:
    """rabbitmqctl against the machine's broker, or None where we may not run it."""
    try:
        r = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _list_queues(prefixes: tuple[str, ...]) -> dict[str, tuple[int, int]] | None:
    out = _rabbitmqctl(
        "list_queues", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"
    )
    if out is None:
        return None
    found = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith(prefixes):
            found[parts[0]] = (int(parts[1]), int(parts[2]))
    return found


def _broker_memory_mb() -> float | None:
    out = _rabbitmqctl("status", "--formatter", "json")
    try:
        return json.loads(out)["memory"]["total"]["rss"] / 1e6 if out else None
    except (ValueError, KeyError, TypeError):
        return None


class Sampler:
    """Samples the task queue depth, this process's RSS and the broker's memory."""

    def __init__(self, url: str, queue: str, every: float = 0.5) -> None:
        self.url, self.queue, self.every = url, queue, every
        self.depth: list[int] = []
        self.rss: list[int] = []
        self.broker: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.depth.append(queue_depths(self.url, [self.queue])[self.queue] or 0)
            except Exception:  # noqa: BLE001 - a sample missed is not a failure
                pass
            self.rss.append(rss_kib())
            mem = _broker_memory_mb()
            if mem is not None:
                self.broker.append(mem)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)


def test_100k_calls_with_a_second_notebook_at_the_same_time(
    fworkers: FaultWorkers, make_ex, broker_url: str, runtime: str
) -> None:
    fworkers.start(runtime, processes=2, count=2)
    ex1 = make_ex(amqp_url=broker_url, runtime=runtime)
    ex2 = make_ex(amqp_url=broker_url, runtime=runtime)
    queue = protocol.task_queue(scope(), runtime)
    mem0 = _broker_memory_mb()
    rss0 = rss_kib()
    sampler = Sampler(broker_url, queue)
    t0 = time.time()
    job1 = ex1.map_job(lambda x: x * 2, range(N))
    job2 = ex2.map_job(lambda x: (x, -x), range(N))
    v1 = job1.results(timeout=240)
    t1 = time.time() - t0
    v2 = job2.results(timeout=240)
    t2 = time.time() - t0
    sampler.stop()
    assert v1 == [x * 2 for x in range(N)]
    assert v2 == [(x, -x) for x in range(N)]
    assert job1.state_counts()["done"] == N and job2.state_counts()["done"] == N
    rss1 = rss_kib()
    # the task queue ends empty: nothing ready, nothing unacked
    wait_until(lambda: tasks_left(broker_url, runtime) == 0, 20, "an empty task queue")
    jobs = (job1.job_id, job2.job_id)
    ex1.shutdown()
    ex2.shutdown()
    results = [protocol.result_queue(scope(), j) for j in jobs]
    wait_until(
        lambda: all(v is None for v in queue_depths(broker_url, results).values()),
        10,
        "result queues deleted at shutdown",
    )
    listed = _list_queues((queue,) + tuple(results))
    if listed is not None:  # rabbitmqctl's view, where this user may run it
        assert all(listed.get(q, (0, 0)) == (0, 0) for q in runtime_queues(runtime)), listed
        assert not any(r in listed for r in results), listed
    mem1 = _broker_memory_mb()
    print(
        f"\nFIGURES load: 2 x {N} calls on 4 processes; job1 {t1:.1f}s, job2 {t2:.1f}s; "
        f"duplicates {job1.duplicates}+{job2.duplicates}; task queue peak "
        f"{max(sampler.depth, default=0)} msgs, end {listed.get(queue) if listed else 0}; "
        f"client RSS {rss0 / 1024:.0f} -> peak {max(sampler.rss, default=rss1) / 1024:.0f} -> "
        f"{rss1 / 1024:.0f} MiB (delta {(rss1 - rss0) / 1024:+.0f} MiB); broker memory "
        f"{mem0 or 0:.0f} -> peak {max(sampler.broker, default=0):.0f} -> {mem1 or 0:.0f} MB"
    )


def test_a_worker_killed_during_a_100k_run(
    fworkers: FaultWorkers, make_ex, broker_url: str, runtime: str
) -> None:
    victim, survivor = fworkers.start(runtime, processes=2, count=2)
    ex = make_ex(amqp_url=broker_url, runtime=runtime)
    t0 = time.time()
    job = ex.map_job(lambda x: x + 7, range(N))
    wait_until(lambda: job.count("done") >= N // 5, 120, "a fifth of the calls done", 0.005)
    os.kill(victim.pid, signal.SIGKILL)
    t_kill = time.time()
    done_at_kill = job.count("done")
    values = job.results(timeout=240)
    t_end = time.time()
    assert values == [x + 7 for x in range(N)]
    assert job.state_counts()["done"] == N
    assert survivor.poll() is None
    rerun = sum(1 for i in range(N) if job.describe_call(i)["attempt"] > 1)
    wait_until(lambda: tasks_left(broker_url, runtime) == 0, 20, "an empty task queue")
    print(
        f"\nFIGURES load+kill: {N} calls, worker killed at {t_kill - t0:.1f}s with "
        f"{done_at_kill} done; finished {t_end - t_kill:.1f}s after the kill "
        f"({t_end - t0:.1f}s in all); calls re-run {rerun}; duplicates dropped {job.duplicates}"
    )
