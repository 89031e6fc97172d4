"""Messages and the broker's size limit (issue 13, finding 5).

A result over the broker's ``max_message_size`` made the broker close the worker's
channel; the chunk came back, and every worker that took it wedged the same way.
Now a call whose result is over the cap fails with an error naming its size and
the fix, the chunk's other calls succeed (results over the cap together go in
several messages), and the worker goes on. Real workers on a private RabbitMQ node
whose limit is 4 MiB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rabbit import RabbitNode
from workers import WorkerProcs

from sif_magic import Executor, SerializationError
from sif_magic.transport.connect import broker_max_message

LIMIT_MB = 4


def test_the_default_limit_follows_the_broker_version() -> None:
    assert broker_max_message({"version": "3.10.8"}) == 128 << 20
    assert broker_max_message({"version": b"3.13.7"}) == 128 << 20
    assert broker_max_message({"version": "4.0.5"}) == 16 << 20
    assert broker_max_message({"version": "4.1.0"}) == 16 << 20
    assert broker_max_message({}) == 16 << 20  # unknown: the smaller default


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    with RabbitNode(extra_config=f"max_message_size = {LIMIT_MB << 20}\n") as n:
        yield n


@pytest.mark.parametrize("spill", ["shared", "unwritable"])
def test_a_result_over_the_limit_spills_or_fails_its_call_alone(
    node: RabbitNode, key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill: str
) -> None:
    """Results over the broker's limit go through spill_dir; where the worker cannot
    write there, one over the cap fails its call alone (the others come in parts)."""
    monkeypatch.setenv("SIF_MAGIC_MAX_MESSAGE_MB", str(LIMIT_MB))  # the workers' setting
    spill_dir = tmp_path / "spill"
    if spill == "unwritable":  # a path under a plain file: not even root can make it
        (tmp_path / "a-file").write_text("")
        spill_dir = tmp_path / "a-file" / "spill"
    workers = WorkerProcs(node.url, key_file, tmp_path)
    ex = Executor(
        backend="rabbitmq",
        amqp_url=node.url,
        runtime="limits",
        key_file=str(key_file),
        max_message_mb=LIMIT_MB,
        errors="collect",
        spill_dir=str(spill_dir),
    )
    try:
        workers.start("limits", processes=1)

        def result(x: int) -> bytes:
            # call 3: 6 MB alone; the others 1.5 MB each: over the limit together
            return os.urandom(6_000_000 if x == 3 else 1_500_000)

        job = ex.map_job(result, range(8), chunksize=8)
        job.wait(timeout=120)
        values = job.results()
        assert all(len(values[i]) == 1_500_000 for i in range(8) if i != 3)
        if spill == "shared":
            assert job.state_counts()["done"] == 8
            assert len(values[3]) == 6_000_000
        else:
            assert job.state_counts()["done"] == 7 and job.state_counts()["failed"] == 1
            err = job.error(3)
            assert isinstance(err, SerializationError), err
            assert "the result of call 3 is 5.7 MB pickled" in str(err), err
            assert "Return less" in str(err) and "max_message_size" in str(err)
            assert "could not go through a file either" in str(err), err
        # nothing wedged: the worker runs the next job
        assert ex.map_job(lambda x: x + 1, range(20)).results(timeout=60) == list(range(1, 21))
        assert workers.procs[0].poll() is None
        assert "refused" not in workers.logs()
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        workers.stop()
