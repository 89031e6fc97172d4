"""What ``attach`` rests on: the jobinfo record a job's result queue starts with
survives a connection lost while the job's consumer is set up, and the job id it is
given is checked before anything is built from it (a path that ``release`` removes).
Real broker, real workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pika.exceptions as pe
import pytest

from sif_magic import Executor
from sif_magic.errors import ConfigError


def _executor(broker_url: str, runtime: str, key_file: Path, **kw) -> Executor:  # noqa: ANN003
    return Executor(
        backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file), **kw
    )


def waits_for(go: str):  # noqa: ANN201
    def call(x):  # noqa: ANN001, ANN202
        import os
        import time

        while not os.path.exists(go):
            time.sleep(0.05)
        return x + 1

    return call


@pytest.fixture
def two(broker_url: str, runtime: str, workers, key_file: Path) -> Iterator[tuple]:  # noqa: ANN001
    """A worker, the kernel that starts jobs and the one that attaches to them."""
    workers.start(runtime, processes=1)
    first = _executor(broker_url, runtime, key_file, result_ttl=900)
    second = _executor(broker_url, runtime, key_file, result_ttl=900)
    try:
        deadline = time.time() + 20
        while not first.backend.live_workers() and time.time() < deadline:
            time.sleep(0.1)
        yield first, second
    finally:
        second.shutdown(cancel_futures=True)
        first.shutdown(cancel_futures=True)


def test_the_jobinfo_record_survives_a_connection_lost_while_the_consumer_starts(
    two: tuple, tmp_path: Path
) -> None:
    """The connection drops as the record goes out (it is lost with it): after the
    reconnect the record goes again, and another kernel can attach to the job."""
    first, second = two
    conn = first.backend.conn
    publish_on, dropped = conn.publish_on, []

    def drop_once(ch, routing_key, body, *, kind, key):  # noqa: ANN001, ANN202
        if kind == "jobinfo" and not dropped:
            dropped.append(routing_key)
            raise pe.StreamLostError("connection lost (test)")  # the record with it
        publish_on(ch, routing_key, body, kind=kind, key=key)

    conn.publish_on = drop_once
    go = tmp_path / "go"
    try:
        job = first.map_job(waits_for(str(go)), range(3))
        assert dropped  # the first record did not reach the broker
        conn.close()  # the kernel goes; its job and result queue stay
        attached = second.attach(job.job_id)
        go.touch()
        out = attached.results(timeout=120)
    finally:
        go.touch()
    assert attached.n == 3 and out == [1, 2, 3]


@pytest.mark.parametrize("job_id", ["..", "../../etc", "ABCDEF012345", "abc", "0123456789abc"])
def test_attach_refuses_a_job_id_that_is_not_one(
    broker_url: str, runtime: str, key_file: Path, job_id: str
) -> None:
    """Checked before the broker is asked or a spill path is made from it (``release``
    removes that path)."""
    ex = _executor(broker_url, runtime, key_file)
    try:
        with pytest.raises(ConfigError, match="12 lowercase hex"):
            ex.attach(job_id)
    finally:
        ex.shutdown()
