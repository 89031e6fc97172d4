"""Issue 4, point 3: time limits enforced on a RabbitMQ worker, and retries with attempts."""

from __future__ import annotations

import time
from pathlib import Path

from faultkit import FaultWorkers, Watcher, wait_gone

from sif_magic import CallTimeoutError, RemoteError


def test_timeout_kills_the_call_names_the_limit_and_the_worker_goes_on(
    fworkers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    (worker,) = fworkers.start(runtime, processes=1)
    d = str(tmp_path)

    def maybe_hang(x: int) -> int:
        import os
        import subprocess
        import time

        if x == 1:
            child = subprocess.Popen(["sleep", "60"])  # dies with the call's process group
            open(os.path.join(d, "hung"), "w").write(f"{os.getpid()} {child.pid}")
            time.sleep(60)
        return x

    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    t0 = time.time()
    job = ex.map_job(maybe_hang, range(3), chunksize=3, timeout=1.5, errors="collect")
    values = job.results(timeout=60)
    took = time.time() - t0
    assert values[0] == 0 and values[2] == 2  # the calls around it ran
    err = values[1]
    assert isinstance(err, CallTimeoutError), repr(err)
    assert "1.5 s time limit" in str(err)
    assert job.state(1) == "failed"
    d1 = job.describe_call(1)
    assert 1.4 < d1["duration"] < 5, d1
    assert took < 20
    slot_pid, child_pid = map(int, (tmp_path / "hung").read_text().split())
    fworkers.track([child_pid], cmd_prefix=b"sleep\0")
    assert not wait_gone([slot_pid, child_pid], 5), "the timed-out call's processes remain"
    # the worker survives and runs the next job
    assert worker.poll() is None
    assert ex.map_job(abs, [-1, -2]).results(timeout=30) == [1, 2]


def test_retries_rerun_a_failing_call_and_show_the_attempts(
    fworkers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    fworkers.start(runtime, processes=2)
    d = str(tmp_path)

    def flaky(x: int) -> int:
        import os
        import time

        path = os.path.join(d, f"tries-{x}")
        n = len(open(path).read()) if os.path.exists(path) else 0
        open(path, "a").write("x")
        time.sleep(0.3)  # long enough to be seen in each state
        if x == 0 and n < 2:
            raise RuntimeError(f"attempt {n + 1} of call {x} fails")
        if x == 1:
            raise ValueError("always")
        return x

    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    job = ex.map_job(flaky, range(3), chunksize=1, retries=2, errors="collect")
    watch = Watcher(job)
    values = job.results(timeout=60)
    watch.stop()
    assert values[0] == 0 and values[2] == 2
    assert job.describe_call(0)["attempt"] == 3  # failed twice, then succeeded
    assert job.describe_call(2)["attempt"] == 1
    assert (tmp_path / "tries-0").read_text() == "xxx"
    # a call that always fails: retried twice, then its last error, attempt 3
    assert isinstance(values[1], RemoteError) and values[1].ename == "ValueError"
    assert job.describe_call(1)["attempt"] == 3
    assert (tmp_path / "tries-1").read_text() == "xxx"
    # the attempts were visible while they ran (what the widget shows)
    assert {2, 3} <= watch.attempts.get(0, set()), watch.attempts
    assert {2, 3} <= watch.attempts.get(1, set()), watch.attempts
    assert "attempt 2 failed" in job.describe_call(1)["note"]


def test_timeout_with_retries_kills_each_attempt(
    fworkers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    (worker,) = fworkers.start(runtime, processes=1)
    d = str(tmp_path)

    def hang(x: int) -> int:
        import os
        import time

        open(os.path.join(d, f"pid-{os.getpid()}"), "w").close()
        time.sleep(60)
        return x

    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    t0 = time.time()
    job = ex.map_job(hang, [0], timeout=1, retries=1, errors="collect")
    (value,) = job.results(timeout=60)
    assert isinstance(value, CallTimeoutError) and "1 s time limit" in str(value)
    assert job.describe_call(0)["attempt"] == 2
    assert time.time() - t0 < 15
    pids = [int(p.name[4:]) for p in tmp_path.glob("pid-*")]
    assert len(pids) == 2  # two attempts, each in a fresh process
    assert not wait_gone(pids, 5), "a timed-out attempt's process remains"
    assert worker.poll() is None
