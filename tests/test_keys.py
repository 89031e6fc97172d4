"""The signing key: made by whichever side runs first, and a worker and a notebook
that hold different keys both say so, with the fix, and lose nothing.

Real ``sif-magic worker`` processes and the machine's RabbitMQ.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pika
import pytest
from queues import delete_task_queues
from workers import WorkerProcs

from sif_magic import Executor, NoWorkersError, protocol
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
        args = protocol.task_queue_arguments(queue.split(".")[1])
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
        if key.exists():
            delete_task_queues(runtime, broker_url, (_kid(key),))


def test_a_notebook_and_a_worker_with_different_keys_both_say_so(
    broker_url: str, runtime: str, tmp_path: Path
) -> None:
    """Queues are scoped by the key id: a worker with another key serves another queue.
    The notebook fails before sending anything, naming its key id, the queue nobody
    consumes and the fix; the worker's log names its own key id."""
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
        no_worker_timeout=3,
    )
    try:
        with pytest.raises(NoWorkersError) as info:
            ex.map_job(lambda x: x + 1, range(5))
        msg = str(info.value)
        queue = protocol.task_queue(ours, runtime)
        assert f"key id {ours}" in msg and f"nobody consumes {queue}" in msg, msg
        assert f"copy this kernel's key file {notebook_key}" in msg and "--key-file" in msg
        assert "Nothing was sent" in msg
        assert _waiting(broker_url, queue) == 0
        assert _waiting(broker_url, protocol.task_queue(theirs, runtime)) == 0
        assert ex.workers() == []  # the other key's worker is not even seen
        assert f"(key id {theirs})" in _log(worker) and worker.poll() is None
        # the fix the message gives: the worker gets the notebook's key and restarts;
        # the same cell then runs
        procs.stop()
        worker_key.write_bytes(notebook_key.read_bytes())
        procs.start(runtime, processes=1)
        assert ex.map_job(lambda x: x + 1, range(5)).results(timeout=60) == [1, 2, 3, 4, 5]
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        procs.stop()
        delete_task_queues(runtime, broker_url, (theirs, ours))


def test_two_keys_one_runtime_name_one_vhost_lose_nothing(
    broker_url: str, runtime: str, tmp_path: Path
) -> None:
    """Issue 13, finding 3: two users (keys) on one vhost, the same runtime name, a
    worker each, 40 calls each. They shared sif_magic.tasks.<runtime>, and each
    worker dead-lettered the other's tasks: 2 of 40 done each. Now: all 80 done, each
    on its own key's worker, nothing dead-lettered."""
    files = [tmp_path / "a.key", tmp_path / "b.key"]
    procs, execs = [], []
    try:
        for i, f in enumerate(files):
            create_key_file(f)
            procs.append(WorkerProcs(broker_url, f, tmp_path / f"w{i}"))
            procs[-1].log_dir.mkdir()
            procs[-1].start(runtime, processes=2)
            execs.append(
                Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(f))
            )
        jobs = [ex.map_job(lambda x, k=k: (k, x * x), range(40), chunksize=1) for k, ex in
                enumerate(execs)]  # fmt: skip
        for k, (ex, job) in enumerate(zip(execs, jobs)):
            assert job.results(timeout=120) == [(k, x * x) for x in range(40)]
            mine = {w["worker"] for w in ex.workers()}
            assert len(mine) == 1 and {job.describe_call(i)["worker"] for i in range(40)} == mine
        for p in procs:
            assert "dead-letter" not in p.logs() and "signed with key id" not in p.logs()
    finally:
        for ex in execs:
            ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.stop()
        delete_task_queues(runtime, broker_url, tuple(_kid(f) for f in files))
