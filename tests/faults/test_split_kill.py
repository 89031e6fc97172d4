"""Issue 16 item 2: a worker killed while one chunk runs split over its two slots (a
slow call in one, the calls behind it given to the other: runner/pool.py) loses
nothing. Real ``sif-magic worker`` processes on the machine's RabbitMQ; the slow
call waits for a file the test writes after the kill, so nothing here is timed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from faultkit import FaultWorkers, descendants, wait_gone, wait_until
from procs import waits_at

N, SLOW = 40, 3


def test_a_worker_killed_in_a_split_chunk_loses_no_call(
    fworkers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    (victim,) = fworkers.start(runtime, processes=2, count=1)
    slots = descendants(victim.pid)
    go = tmp_path / "go"

    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    job = ex.map_job(waits_at(SLOW, go, wait=120), range(N), chunksize=N)  # one chunk, one delivery
    others = [i for i in range(N) if i != SLOW]
    wait_until(lambda: all(job.describe_call(i)["state"] == "done" for i in others), 120,
               "the calls behind the slow one, on the other slot")  # fmt: skip
    pids = {job.describe_call(i)["pid"] for i in range(SLOW + 1, N)}
    # they ran on the victim's slot that was not in the slow call ...
    assert len(pids) == 1 and pids <= set(slots), pids
    assert job.describe_call(SLOW)["state"] != "done"  # ... while the slow call still ran
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(5)
    assert not wait_gone(slots, 5)
    # the chunk was not acked (its slow call had no result): the broker hands it out
    # again, to a new worker; its calls that had results keep their first one
    fworkers.start(runtime, processes=2, count=1)
    go.touch()
    values = job.results(timeout=120)
    assert [v for v, _ in values] == list(range(N))
    assert job.state_counts()["done"] == N
    assert values[SLOW][1] not in slots  # the slow call's result came from the new worker
