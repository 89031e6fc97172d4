"""Issue 4, point 4: a job survives the death of the kernel that started it.

A separate Python process (the "kernel") starts a job of slow calls on real workers,
prints its id and is killed with SIGKILL in the middle of the run. This process then
calls ``Executor(backend="rabbitmq", ...).attach(job_id)``: the results of the calls
that finished before the kill come back from the job's durable result queue (they are
not run again), the rest as the workers finish them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faultkit import ROOT, FaultWorkers, Watcher, wait_until
from queues import scope

from sif_magic import protocol

N = 30
TTL = 900.0  # result_ttl of these tests' jobs: a failed test leaves no queue for a day

KERNEL = textwrap.dedent(
    """
    import sys, time
    from sif_magic import Executor

    url, runtime, key_file, d, ttl = sys.argv[1:6]
    ex = Executor(backend="rabbitmq", amqp_url=url, runtime=runtime, key_file=key_file,
                  result_ttl=float(ttl))

    def slow(x):
        import os, time
        open(os.path.join(d, f"ran-{x}-{time.time()}"), "w").close()
        print(f"call {x} says hello", flush=True)
        time.sleep(0.4)
        return x * x + 1

    job = ex.map_job(slow, range(N_CALLS), chunksize=1)
    print("JOB", job.job_id, flush=True)
    while job.count("done") < 8:
        time.sleep(0.01)
    print("DONE", ",".join(str(i) for i in range(job.n) if job.state(i) == "done"), flush=True)
    time.sleep(600)
    """
).replace("N_CALLS", str(N))


def _start_kernel(
    url: str, runtime: str, key_file: Path, d: Path, ttl: float = TTL
) -> subprocess.Popen:
    script = d / "kernel.py"
    script.write_text(KERNEL)
    return subprocess.Popen(
        [sys.executable, str(script), url, runtime, str(key_file), str(d), str(ttl)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=str(d),
    )


def _read_line(proc: subprocess.Popen, prefix: str, timeout: float = 60) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line.startswith(prefix):
            return line.split()[1:]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the kernel did not print {prefix}: {proc.stderr.read()}")  # type: ignore[union-attr]


def _attach_within(ex: Any, job_id: str, seconds: float) -> Any:
    """``ex.attach(job_id)``, failing the test (not hanging it) if it does not return."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["job"] = ex.attach(job_id)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise AssertionError(f"Executor.attach({job_id!r}) did not return within {seconds:g} s")
    if "error" in out:
        raise out["error"]
    return out["job"]


def _runs(d: Path) -> dict[int, int]:
    out: dict[int, int] = {}
    for p in d.glob("ran-*"):
        x = int(p.name.split("-")[1])
        out[x] = out.get(x, 0) + 1
    return out


@pytest.mark.parametrize("when", ["mid-run", "after-the-run"])
def test_attach_after_the_kernel_was_killed(
    fworkers: FaultWorkers,
    make_ex,
    broker_url: str,
    runtime: str,
    key_file: Path,
    tmp_path: Path,
    when: str,
) -> None:
    fworkers.start(runtime, processes=2, count=2)
    kernel = _start_kernel(broker_url, runtime, key_file, tmp_path)
    try:
        (job_id,) = _read_line(kernel, "JOB")
        (done,) = _read_line(kernel, "DONE")
        done_before = [int(i) for i in done.split(",")]
        os.kill(kernel.pid, signal.SIGKILL)  # the kernel dies mid-run, no chance to clean up
        kernel.wait(10)
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait(10)
    assert len(done_before) >= 8
    if when == "after-the-run":  # nobody listens while the workers finish the job
        wait_until(lambda: len(_runs(tmp_path)) == N, 60, "every call run")
        time.sleep(1.0)

    ex = make_ex(amqp_url=broker_url, runtime=runtime, result_ttl=TTL)
    t0 = time.time()
    job = _attach_within(ex, job_id, 30)
    assert job.job_id == job_id and job.n == N and job.name == "slow"
    watch = Watcher(job)
    values = job.results(timeout=60)
    watch.stop()
    assert values == [x * x + 1 for x in range(N)]
    assert job.state_counts()["done"] == N
    # the calls finished before the kill came back from the queue: none ran twice
    runs = _runs(tmp_path)
    assert all(runs.get(x) == 1 for x in done_before), runs
    assert sorted(runs) == list(range(N)) and set(runs.values()) == {1}, runs
    # what every call printed came back too (with the results, and live for the rest)
    assert all(f"call {x} says hello" in job.output(x) for x in range(N))
    if when == "mid-run":  # the calls still running after the attach were shown running
        assert watch.seen("running"), "the attached job never showed a running call"
    print(
        f"\nFIGURES attach/{when}: calls={N} done-before-kill={len(done_before)} "
        f"attach-to-all-results={time.time() - t0:.1f}s duplicates-dropped={job.duplicates}"
    )
    # closing the executor deletes the finished job's result queue
    ex.shutdown()
    from faultkit import queue_depths

    queue = protocol.result_queue(scope(), job_id)
    wait_until(lambda: queue_depths(broker_url, [queue])[queue] is None, 10, "queue deleted")


def test_attach_to_an_unknown_job_is_a_clear_error(
    fworkers: FaultWorkers, make_ex, runtime: str
) -> None:
    from sif_magic.errors import SifMagicError

    fworkers.start(runtime, processes=1)
    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    with pytest.raises(SifMagicError, match="0123456789ab"):
        _attach_within(ex, "0123456789ab", 30)


def test_attach_from_a_client_with_another_result_ttl(
    fworkers: FaultWorkers,
    make_ex,
    broker_url: str,
    runtime: str,
    key_file: Path,
    tmp_path: Path,
) -> None:
    """The kernel that attaches need not have the same result_ttl setting as the one
    that started the job (another notebook, another config): it still gets the job."""
    fworkers.start(runtime, processes=2, count=2)
    kernel = _start_kernel(broker_url, runtime, key_file, tmp_path, ttl=TTL)
    try:
        (job_id,) = _read_line(kernel, "JOB")
        _read_line(kernel, "DONE")
    finally:
        kernel.kill()
        kernel.wait(10)
    ex = make_ex(amqp_url=broker_url, runtime=runtime, result_ttl=TTL + 60)
    job = _attach_within(ex, job_id, 20)
    assert job.results(timeout=60) == [x * x + 1 for x in range(N)]
    # and this client still works for a new job afterwards
    assert ex.map_job(abs, [-4]).results(timeout=30) == [4]
