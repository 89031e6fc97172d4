"""The signing key: made by whichever side runs first, and a worker and a notebook
that hold different keys both say so, with the fix, and lose nothing.

Real ``sif-magic worker`` processes and the machine's RabbitMQ.
"""

from __future__ import annotations

import logging
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pika
import pytest
from queues import consumers
from workers import WorkerProcs

from sif_magic import ConfigError, Executor, protocol
from sif_magic._keys import create_key_file, read_secret_file


def _wait_for(what: Callable[[], object], timeout: float, describe: str) -> None:
    deadline = time.time() + timeout
    while not what():
        if time.time() > deadline:
            raise AssertionError(f"never happened: {describe}")
        time.sleep(0.1)


def _kid(path: Path) -> str:
    return protocol.key_id(read_secret_file(path, "key").encode())


def _log(proc: object) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def _waiting(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        args = protocol.task_queue_arguments()
        return (
            conn.channel().queue_declare(queue, durable=True, arguments=args).method.message_count
        )
    finally:
        conn.close()


def test_concurrent_creators_end_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "home" / "key"
    made: list[bool] = []
    threads = [
        threading.Thread(target=lambda: made.append(create_key_file(path))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made.count(True) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    assert [p.name for p in path.parent.iterdir()] == ["key"]  # no temporary file left


def test_a_worker_started_before_any_notebook_makes_the_key(
    sif_home: Path, broker_url: str, runtime: str, tmp_path: Path
) -> None:
    """The README's order on a fresh account: workers first (two at once, sharing the
    home), then the notebook. One worker makes the key; all three sides use it."""
    key = sif_home / "key"
    assert not key.exists()
    procs = WorkerProcs(broker_url, None, tmp_path)  # no --key-file: ~/.sif_magic/key
    ex = None
    try:
        started = procs.start(runtime, processes=1, count=2)
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        kid = _kid(key)
        logs = [_log(p) for p in started]
        assert sum("there was no signing key" in text for text in logs) == 1, logs
        assert all(f"(key id {kid})" in text for text in logs), logs
        ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime)
        job = ex.map_job(lambda x: x * 2, range(40), chunksize=1)
        assert job.results(timeout=60) == [x * 2 for x in range(40)]
        assert len({job.describe_call(i)["worker"] for i in range(40)}) == 2
    finally:
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
        procs.stop()


def test_a_notebook_and_a_worker_with_different_keys_both_say_so(
    broker_url: str, runtime: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker_key, notebook_key = tmp_path / "worker.key", tmp_path / "notebook.key"
    create_key_file(worker_key)
    create_key_file(notebook_key)
    theirs, ours = _kid(worker_key), _kid(notebook_key)
    procs = WorkerProcs(broker_url, worker_key, tmp_path)
    (worker,) = procs.start(runtime, processes=1)
    ex = Executor(
        backend="rabbitmq",
        amqp_url=broker_url,
        runtime=runtime,
        key_file=str(notebook_key),
        no_worker_timeout=600,  # the failure below is not this timeout
    )
    try:
        with caplog.at_level(logging.WARNING, "sif_magic.rabbitmq"):
            with pytest.raises(ConfigError) as info:
                ex.map_job(lambda x: x + 1, range(5))
        # the notebook: which worker, both key ids, and the fix
        msg = str(info.value)
        assert f"key id {theirs}" in msg and f"key id {ours}" in msg, msg
        assert f"copy this kernel's key file {notebook_key}" in msg and "--key-file" in msg
        assert "Nothing was sent" in msg
        assert _waiting(broker_url, protocol.task_queue(runtime)) == 0
        warned = [r.getMessage() for r in caplog.records if theirs in r.getMessage()]
        assert warned and "holds another signing key" in warned[0], caplog.text
        rows = [w for w in ex.workers() if w["state"] == f"another key ({theirs})"]
        assert len(rows) == 1 and rows[0]["worker"] in msg
        # the worker: an error naming both key ids and the fix, in its log
        _wait_for(lambda: f"key id {ours}" in _log(worker), 30, "the worker's key error")
        text = _log(worker)
        assert "ERROR" in text and f"holds key id {theirs}" in text
        assert f"to {worker_key} on the worker's side" in text and "--key-file" in text
        assert worker.poll() is None
        # the fix the messages give: the worker gets the notebook's key and restarts;
        # the same cell then runs
        procs.stop()
        worker_key.write_bytes(notebook_key.read_bytes())
        procs.start(runtime, processes=1)
        assert ex.map_job(lambda x: x + 1, range(5)).results(timeout=60) == [1, 2, 3, 4, 5]
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        procs.stop()


def test_tasks_signed_with_another_key_go_back_to_the_queue(
    broker_url: str, runtime: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that holds another key takes some of a job's tasks (it shares the
    queue with one that holds ours): it neither runs nor drops them, but hands them
    back; every result arrives, from the worker with our key."""
    ours_file, other_file = tmp_path / "ours.key", tmp_path / "other.key"
    create_key_file(ours_file)
    create_key_file(other_file)
    ours, theirs = _kid(ours_file), _kid(other_file)
    good = WorkerProcs(broker_url, ours_file, tmp_path / "good")
    other = WorkerProcs(broker_url, other_file, tmp_path / "other")
    for p in (good, other):
        p.log_dir.mkdir()
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(ours_file))
    try:
        (good_worker,) = good.start(runtime, processes=1)
        (other_worker,) = other.start(runtime, processes=1)
        queue = protocol.task_queue(runtime)
        _wait_for(lambda: consumers(queue, broker_url) == 2, 30, "both workers consume")
        with caplog.at_level(logging.WARNING, "sif_magic.rabbitmq"):
            job = ex.map_job(lambda x: x * 3, range(30), chunksize=1)
            assert job.results(timeout=120) == [x * 3 for x in range(30)]
        assert {job.describe_call(i)["worker"] for i in range(30)} == {
            r["worker"] for r in ex.workers() if r["state"] == "up"
        }
        text = _log(other_worker)
        assert f"Tasks on {protocol.task_queue(runtime)} signed with key id {ours}" in text, text
        assert f"this worker holds key id {theirs}" in text and "not dropped" in text
        assert text.count(f"signed with key id {ours}") <= 2  # once per key id, not per task
        assert "dead-letter" not in text
        assert other_worker.poll() is None and good_worker.poll() is None
        warned = [r.getMessage() for r in caplog.records if theirs in r.getMessage()]
        assert warned and "holds another signing key" in warned[0]
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        good.stop()
        other.stop()
