"""Issue 4, point 2: the broker stops (or crashes) in the middle of a run; every result arrives.

A private RabbitMQ node (tests/rabbit.py) on its own ports, two real workers and an
Executor against it. The node is restarted (``rabbitmqctl stop`` + start) or killed
with SIGKILL and started again while calls run. Client and workers reconnect, durable
queues and persistent messages survive, and the job ends with every result, in order.
While the broker is down ``job.broker_down`` is True (the widget shows it).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from faultkit import FaultWorkers, Watcher, runtime_queues, wait_until
from rabbit import RabbitNode

pytestmark = pytest.mark.slow


def _tasks_left(node: RabbitNode, runtime: str) -> int:
    depths = node.queues()
    return sum(depths.get(q, 0) for q in runtime_queues(runtime))


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    with RabbitNode() as n:
        yield n


@pytest.mark.parametrize("fault", ["restart", "kill"])
def test_broker_goes_down_mid_run_and_every_result_arrives(
    node: RabbitNode, node_workers: FaultWorkers, make_ex, runtime: str, fault: str
) -> None:
    if not node.is_running():
        node.start()
    node_workers.start(runtime, processes=2, count=2)
    ex = make_ex(amqp_url=node.url, runtime=runtime, connect_timeout=3)

    def slow(x: int) -> int:
        import time

        time.sleep(0.2)
        return x * 3

    n = 100
    job = ex.map_job(slow, range(n), chunksize=2)
    watch = Watcher(job, every=0.01)
    wait_until(lambda: job.count("done") >= 25, 60, "a quarter of the calls done")
    done_before = job.count("done")
    t0 = time.time()
    if fault == "restart":
        node.stop()
    else:
        node.kill()  # a crash: no clean shutdown, unflushed state is whatever is on disk
    wait_until(lambda: watch.broker_down_seen, 30, "job.broker_down while the broker is down")
    down_for = time.time() - t0
    node.start()
    t_up = time.time()
    values = job.results(timeout=180)
    watch.stop()
    assert values == [x * 3 for x in range(n)]  # every result, in order, each once
    assert job.state_counts()["done"] == n
    assert watch.broker_down_seen
    wait_until(lambda: not job.broker_down, 10, "job.broker_down back to False")
    assert all(w.poll() is None for w in node_workers.procs), node_workers.logs()
    # nothing left behind in the task queue
    depth = wait_until(
        lambda: _tasks_left(node, runtime) == 0 or None,
        20,
        "an empty task queue",
    )
    assert depth
    print(
        f"\nFIGURES broker-{fault}: calls={n} done-before={done_before} "
        f"down-for={down_for:.1f}s (+start) finish-after-up={time.time() - t_up:.1f}s "
        f"duplicates-dropped={job.duplicates} duplicates-surfaced=0 lost-calls=0 "
        f"retried-calls={sum(1 for i in range(n) if job.describe_call(i)['attempt'] > 1)}"
    )


def test_broker_crash_while_the_client_publishes_the_chunks(
    node: RabbitNode, node_workers: FaultWorkers, make_ex, runtime: str
) -> None:
    """The node is killed while the client is still publishing the job's chunks: what
    the broker had not committed is published again after the restart; every result
    arrives once."""
    if not node.is_running():
        node.start()
    node_workers.start(runtime, processes=2, count=2)
    ex = make_ex(amqp_url=node.url, runtime=runtime, connect_timeout=3)
    n = 30_000
    job = ex.map_job(lambda x: x - 5, range(n), chunksize=5)  # 6,000 messages
    publishing = [t for t in threading.enumerate() if t.name == "sif-publish" and t.is_alive()]
    node.kill()
    assert publishing and any(t.is_alive() for t in publishing), (
        "the chunks were all published before the kill: the test needs a bigger job"
    )
    time.sleep(1.0)
    node.start()
    values = job.results(timeout=180)
    assert values == [x - 5 for x in range(n)]
    assert job.state_counts()["done"] == n
    wait_until(lambda: not job.broker_down, 10, "job.broker_down back to False")
    wait_until(
        lambda: _tasks_left(node, runtime) == 0 or None,
        20,
        "an empty task queue",
    )
    print(f"\nFIGURES broker-kill-while-publishing: calls={n} duplicates-dropped={job.duplicates}")


def test_a_worker_stops_on_sigterm_while_the_broker_is_down(
    node: RabbitNode, node_workers: FaultWorkers, runtime: str
) -> None:
    """SIGTERM (SLURM's walltime signal, `sif-magic workers stop`) while the broker is
    unreachable: the worker must still exit, not wait forever to say goodbye."""
    if not node.is_running():
        node.start()
    (worker,) = node_workers.start(runtime, processes=1)
    node.stop()
    time.sleep(1.0)  # the worker noticed: it is reconnecting
    try:
        t0 = time.time()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            pass
        code = worker.poll()
        assert code is not None, (
            "the worker still runs 10 s after SIGTERM with the broker down: "
            + node_workers.logs()[-600:]
        )
        print(f"\nFIGURES sigterm-broker-down: exited {code} after {time.time() - t0:.1f}s")
    finally:
        node.start()


def test_arrays_through_spill_dir_survive_a_broker_crash(
    node: RabbitNode, node_workers: FaultWorkers, make_ex, runtime: str
) -> None:
    """Big arrays that skip the broker (the workers see the spill directory, issue 16
    item 3): the node is killed mid-run; their files are still there, every result
    arrives, right, and the job's files go once the results are read."""
    import os

    import numpy as np

    if not node.is_running():
        node.start()
    node_workers.start(runtime, processes=2, count=1)
    ex = make_ex(amqp_url=node.url, runtime=runtime, connect_timeout=3)
    wait_until(lambda: ex.backend.live_workers() or None, 30, "the worker's heartbeat")
    assert ex.backend.live_workers()[0].get("spill"), "the worker sees no spill directory"

    def slow_plus(a):  # noqa: ANN001, ANN202
        import time

        time.sleep(0.1)
        return a + 1

    arrays = [np.full(1 << 18, float(i)) for i in range(40)]  # 2 MB each
    job = ex.map_job(slow_plus, arrays, chunksize=2)
    wait_until(lambda: job.count("done") >= 8, 60, "some calls done")
    node.kill()
    time.sleep(1.0)
    node.start()
    values = job.results(timeout=180)
    assert all(v[0] == v[-1] == i + 1 for i, v in enumerate(values))
    assert job.state_counts()["done"] == len(arrays)
    assert not os.path.exists(job.spill_dir)
    print(f"\nFIGURES broker-kill-arrays-by-file: duplicates-dropped={job.duplicates}")
