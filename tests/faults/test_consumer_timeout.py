"""Issue 12, part 1: calls longer than RabbitMQ's consumer_timeout.

A private RabbitMQ node whose consumer_timeout is 3 s, checked every 0.5 s
(``channel_tick_interval``: the default checks once a minute), and real workers
on it. A call runs several times longer than the timeout; a worker claims what it
holds longer than ``--claim-after`` (worker/claims.py), so no delivery outlives the
timeout. Each call records its run in a file of its own (``runs``): "exactly once"
is counted by side effect, not by results (duplicates would be dropped there).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import FaultWorkers, runs_of, slow_call, wait_until
from queues import consumers, task_queue
from rabbit import RabbitNode

from sif_magic import protocol

ADVANCED = "[{rabbit, [{consumer_timeout, 3000}, {channel_tick_interval, 500}]}].\n"
TIMED_OUT = "timed out waiting for delivery acknowledgement"


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    with RabbitNode(advanced_config=ADVANCED) as n:
        yield n


def broker_log(node: RabbitNode) -> str:
    return node.log_file.read_text(errors="replace") if node.log_file.exists() else ""


def test_calls_longer_than_the_consumer_timeout_complete_exactly_once(
    node: RabbitNode, node_workers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    node_workers.start(runtime, processes=2, options=("--claim-after", "1", "--lease", "6"))
    ex = make_ex(amqp_url=node.url, runtime=runtime, connect_timeout=3)
    n = 5  # more calls than slots: chunks wait, are handed back, come again
    job = ex.map_job(slow_call(str(runs), 8.0), range(n), chunksize=1)
    assert job.results(timeout=240) == [x * 10 for x in range(n)]
    assert runs_of(runs) == Counter(range(n)), f"runs per call: {runs_of(runs)}"
    assert all(job.describe_call(i)["attempt"] == 1 for i in range(n))
    logs = node_workers.logs()
    assert "claimed in" in logs, logs[-2000:]
    # no channel of a worker timed out (the notebook's result channel may: it keeps
    # results unacked for attach, and reads them again on a new channel)
    assert "closed the channel" not in logs, logs[-2000:]
    # claims end with their calls: no claim queue is left
    wait_until(
        lambda: not [q for q in node.queues() if protocol.is_claim_queue(q)],
        30,
        "the claim queues deleted",
    )


def test_a_worker_killed_in_a_claimed_call_loses_nothing(
    node: RabbitNode, node_workers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    opts = ("--claim-after", "1", "--lease", "3")
    (victim,) = node_workers.start(runtime, processes=1, options=opts)
    ex = make_ex(amqp_url=node.url, runtime=runtime, connect_timeout=3)
    job = ex.map_job(slow_call(str(runs), 6.0), [7], chunksize=1)
    wait_until(
        lambda: [q for q, m in node.queues().items() if protocol.is_claim_queue(q) and m],
        60,
        "the call claimed",
    )
    os.killpg(victim.pid, signal.SIGKILL)  # the worker and its call process
    victim.wait(10)
    node_workers.start(runtime, processes=1, options=opts)  # the claim expires, comes back here
    assert job.results(timeout=120) == [70]
    assert runs_of(runs) == Counter([7]), "the killed run finished, or the call ran twice"
    assert job.describe_call(0)["attempt"] == 2  # the loss counted once
    assert "worker lost 1 time" in job.describe_call(0)["note"]
    assert "closed the channel" not in node_workers.logs()


def test_a_channel_the_broker_closes_is_logged_and_consumed_again(
    node: RabbitNode,
    node_workers: FaultWorkers,
    make_ex,
    runtime: str,
    key_file: Path,
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    # claims so late that the broker's consumer_timeout strikes first
    node_workers.start(runtime, processes=1, options=("--claim-after", "600"))
    ex = make_ex(amqp_url=node.url, runtime=runtime, connect_timeout=3)
    job = ex.map_job(slow_call(str(runs), 6.0), [1], chunksize=1)
    wait_until(lambda: "closed the channel" in node_workers.logs(), 60, "the closed channel logged")
    logs = node_workers.logs()
    line = next(x for x in logs.splitlines() if "closed the channel" in x)
    queue = task_queue(runtime, key_file)
    assert queue in line and "PRECONDITION_FAILED" in line, line
    assert "consumer_timeout" in line and "consuming" in line and "again" in line, line
    # the broker writes its own line about it soon after it closes the channel
    wait_until(lambda: TIMED_OUT in broker_log(node), 30, "the broker's log line")
    # the consumer is back on a new channel (the queue has its consumer again)
    wait_until(lambda: consumers(queue, node.url) == 1, 30, "consuming again")
    job.cancel()
