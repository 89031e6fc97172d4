"""The rabbitmq backend against the machine's RabbitMQ, with real worker processes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pika
import pytest
from procs import cancel_while_running, process_gone

from sif_magic import (
    BrokerError,
    Executor,
    IncompatibleWorkerError,
    Job,
    NoWorkersError,
    RemoteError,
    WorkerLostError,
    protocol,
)


@pytest.fixture
def ex(broker_url: str, runtime: str, key_file) -> Iterator[Executor]:
    e = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file))
    yield e
    e.shutdown(wait=False, cancel_futures=True)


def test_thousand_inputs_over_two_workers_in_order(workers, ex: Executor, runtime: str) -> None:
    workers.start(runtime, processes=2, count=2)
    job = ex.map_job(lambda x: x * x, range(1000), chunksize=10)
    assert job.results(timeout=60) == [x * x for x in range(1000)]
    hosts = {job.describe_call(i)["worker"] for i in range(1000)}
    assert len(hosts) == 2  # both workers took chunks
    assert job.duplicates == 0


def test_output_errors_and_crashes_come_back(workers, ex: Executor, runtime: str) -> None:
    workers.start(runtime, processes=2)

    def work(x: int) -> int:
        import os
        import signal
        import subprocess

        if x == 3:
            raise ValueError(f"bad input {x}")
        if x == 4:
            os.kill(os.getpid(), signal.SIGSEGV)
        print(f"print {x}")
        os.write(1, f"fd write {x}\n".encode())
        subprocess.run(["echo", f"child {x}"], check=True)
        return x

    job = ex.map_job(work, range(8), chunksize=3, errors="collect")
    values = job.results(timeout=60)
    assert [values[i] for i in (0, 1, 2, 5, 6, 7)] == [0, 1, 2, 5, 6, 7]
    assert isinstance(values[3], RemoteError) and values[3].ename == "ValueError"
    assert [f[2] for f in values[3].frames] == ["work"]
    assert isinstance(values[4], WorkerLostError) and "SIGSEGV" in str(values[4])
    for i in (0, 5, 7):
        out = job.output(i)
        assert f"print {i}\n" in out and f"fd write {i}\n" in out and f"child {i}\n" in out


def test_events_flow_on_the_monitoring_exchange(workers, ex: Executor, runtime: str) -> None:
    workers.start(runtime, processes=2)

    def slow(x: int) -> int:
        import time

        print(f"started {x}", flush=True)
        time.sleep(1.0)
        return x

    job = ex.map_job(slow, range(2), chunksize=1)
    seen_running = seen_live_log = False
    deadline = time.time() + 30
    while not job.done() and time.time() < deadline:
        seen_running |= job.count("running") > 0
        # a line printed by a running call is here before the call ends
        seen_live_log |= any(job.states[i] == protocol.RUNNING and job.output(i) for i in range(2))
        time.sleep(0.02)
    assert job.results() == [0, 1]
    assert seen_running and seen_live_log and job.event_batches > 0
    w = ex.workers()
    assert any(x["runtime"] == runtime and x["slots"] == 2 and x["state"] == "up" for x in w)


def test_cancel_reaches_the_workers(workers, ex: Executor, runtime: str, tmp_path) -> None:
    workers.start(runtime, processes=2)
    job, took, pids = cancel_while_running(ex, tmp_path)
    assert job.done() and took < 3
    assert job.state_counts()["cancelled"] == 6
    for pid in pids:
        assert process_gone(pid)
    # the same workers go on with the next job
    assert ex.map_job(abs, [-3]).results(timeout=30) == [3]


def test_no_worker_is_a_clear_error(broker_url: str, runtime: str, key_file) -> None:
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, no_worker_timeout=1)
    try:
        t0 = time.time()
        with pytest.raises(NoWorkersError, match=f"sif-magic worker .*--runtime {runtime}"):
            ex.map_job(abs, [1])
        assert time.time() - t0 < 10
    finally:
        ex.shutdown()


@pytest.mark.parametrize(
    "url,match",
    [
        ("amqp://guest:wrong@127.0.0.1:5672/%2F", "refused the login of user 'guest'"),
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost", "vhost 'no-such-vhost'"),
        ("amqp://guest:guest@127.0.0.1:1/%2F", "connection refused"),
        ("amqp://guest:guest@no-such-host.invalid:5672/%2F", "cannot resolve"),
        ("amqps://guest:guest@127.0.0.1:5672/%2F", "TLS"),
    ],
)
def test_bad_broker_urls_fail_fast_with_advice(url: str, match: str, key_file) -> None:
    t0 = time.time()
    with pytest.raises(BrokerError, match=match) as info:
        Executor(backend="rabbitmq", amqp_url=url, runtime="x").backend  # noqa: B018
    assert time.time() - t0 < 10
    assert "wrong@" not in str(info.value)  # the password never shows


def _publish_raw(
    url: str, queue: str, body: bytes, headers: dict | None, kind: str | None = "task"
) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    scope = queue.split(".")[1]
    ch.queue_declare(queue, durable=True, arguments=protocol.task_queue_arguments(scope))
    ch.basic_publish(
        "", queue, body, pika.BasicProperties(type=kind, headers=headers, delivery_mode=2)
    )
    conn.close()


def _dead_letters(url: str, scope: str) -> list[tuple[object, bytes]]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    out = []
    while True:
        method, props, body = ch.basic_get(protocol.dead_queue(scope), auto_ack=True)
        if method is None:
            break
        out.append((props, body))
    conn.close()
    return out


def test_foreign_and_forged_tasks_are_dead_lettered_unread(
    workers, ex, broker_url: str, runtime: str, tmp_path, key_file
) -> None:
    import cloudpickle

    from sif_magic._keys import load_key

    workers.start(runtime, processes=1)
    key = load_key(key_file=str(key_file))
    scope = protocol.key_id(key)
    _dead_letters(broker_url, scope)  # start from an empty dead-letter queue
    queue = protocol.task_queue(scope, runtime)
    marker = tmp_path / "pwned"

    def evil(_: object) -> None:
        open(marker, "w").write("unpickled!")

    legit = protocol.Task(
        "j", 0, [0], "nowhere", cloudpickle.dumps(evil), cloudpickle.dumps([1])
    ).encode()
    other = protocol.headers_for(b"another key", "task", legit)
    bad = [
        (b"hello, not ours", None),  # not ours, no headers
        (legit, None),  # unsigned
        (legit, {**other, protocol.HDR_KEY_ID: protocol.key_id(key)}),  # forged: claims our key
        (legit[:40], protocol.headers_for(key, "task", legit[:40])),  # truncated
        (legit, {**protocol.headers_for(b"k", "task", legit), protocol.HDR_VERSION: 99}),  # version
        (os.urandom(50 * 1024 * 1024), None),  # 50 MB of garbage
    ]
    for body, headers in bad:
        _publish_raw(broker_url, queue, body, headers)
    # signed with another key, in our key's queue: neither run nor dropped (kept unread
    # in the dead-letter queue: no worker of this scope can ever verify it)
    _publish_raw(broker_url, queue, legit, other)
    bad.append((legit, other))
    # a real run next to the garbage is unharmed
    assert ex.map_job(lambda x: x + 1, range(20)).results(timeout=60) == list(range(1, 21))
    deadline = time.time() + 20
    dead: list = []
    while len(dead) < len(bad) and time.time() < deadline:
        dead += _dead_letters(broker_url, scope)
        time.sleep(0.2)
    assert len(dead) == len(bad)
    assert not marker.exists()  # nothing unsigned was unpickled
    assert workers.procs[0].poll() is None  # the worker is alive
    log = workers.logs()
    assert "unsigned" in log and "forged or corrupted" in log and "protocol version" in log
    assert "truncated body" in log
    kid = other[protocol.HDR_KEY_ID]
    kept = [(p, b) for p, b in dead if (p.headers or {}).get(protocol.HDR_KEY_ID) == kid]
    assert (
        len(kept) == 1 and kept[0][1] == legit and kept[0][0].headers["sif-sig"] == other["sif-sig"]
    )
    assert f"signed with key id {kid}" in log and "not run and not dropped" in log


def test_incompatible_worker_versions(broker_url: str, runtime: str, key_file, workers) -> None:
    # a worker refuses a task pickled by another Python, naming both versions
    import cloudpickle

    from sif_magic._keys import load_key
    from sif_magic.transport import declare_job_exchange

    workers.start(runtime, processes=1)
    key = load_key(key_file=str(key_file))
    scope = protocol.key_id(key)
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    reply = ch.queue_declare(protocol.result_queue(scope, "jx"), exclusive=True).method.queue
    ch.queue_bind(reply, protocol.direct_exchange(scope), reply)
    declare_job_exchange(ch, scope, "jx", reply)  # as a client does: job jx may run calls
    body = protocol.Task(
        "jx",
        0,
        [0],
        reply,
        cloudpickle.dumps(abs),
        cloudpickle.dumps([1]),
        python="3.1",
        cloudpickle="3.1.2",
    ).encode()
    ch.basic_publish(
        protocol.direct_exchange(scope),
        protocol.task_queue(scope, runtime),
        body,
        pika.BasicProperties(
            type="task", headers=protocol.headers_for(key, "task", body), delivery_mode=2
        ),
    )
    deadline = time.time() + 20
    got = None
    while got is None and time.time() < deadline:
        method, props, data = ch.basic_get(reply, auto_ack=True)
        if method is not None:
            got = protocol.ResultBatch.decode(data)
        time.sleep(0.05)
    conn.close()
    assert got is not None
    err = got.results[0].error
    assert got.results[0].status == protocol.FAILED
    assert "Python 3.1" in err["message"] and "sif-magic runtime def --python 3.1" in err["message"]
    # and the notebook sees it as itself, not as a RemoteError
    job = Job("jx", 1)
    job.apply_batch(got)
    assert isinstance(job.error(0), IncompatibleWorkerError)
    assert "sif-magic runtime def --python 3.1" in str(job.error(0))

    # and the client refuses to dispatch when every live worker is incompatible
    from sif_magic.backends.rabbitmq import RabbitBackend
    from sif_magic.backends.rabbitmq.readiness import check_versions

    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime)
    try:
        backend = ex.backend
        assert isinstance(backend, RabbitBackend)
        deadline = time.time() + 10
        while not backend.live_workers() and time.time() < deadline:
            time.sleep(0.1)
        for w in list(backend.registry.heartbeats.values()):
            backend.registry.record(protocol.Heartbeat(**{**w.__dict__, "python": "2.7"}))
        with pytest.raises(IncompatibleWorkerError, match="Python 2.7"):
            check_versions(backend)
    finally:
        ex.shutdown()


def test_monitoring_off_still_brings_results_and_output(
    workers, broker_url: str, runtime: str
) -> None:
    workers.start(runtime, processes=2)
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, monitor=False)
    try:
        job = ex.map_job(lambda x: print(f"out {x}") or x, range(10), chunksize=2)
        assert job.results(timeout=60) == list(range(10))
        assert job.output(7) == "out 7\n"  # the output travels with the result
        time.sleep(0.3)
        assert job.recent and all(i in range(10) for i, _, _ in job.recent)
        assert job.event_batches == 0  # nothing came from the monitoring exchange
    finally:
        ex.shutdown()


def test_calls_of_a_worker_that_stops_answering_show_lost(workers, ex, runtime: str) -> None:
    """A worker frozen (SIGSTOP: no heartbeat, no results) while it runs calls: the
    notebook shows those calls lost, with why, and they finish once it thaws."""
    import signal

    (worker,) = workers.start(runtime, processes=2)

    def slow(x: int) -> int:
        import time

        time.sleep(3)
        return x

    job = ex.map_job(slow, range(2), chunksize=1)
    deadline = time.time() + 30
    while job.count("running") < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert job.count("running") == 2
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        deadline = time.time() + 60
        while job.count("lost") < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert job.count("lost") == 2, job.state_counts()
        assert all("stopped answering" in job.describe_call(i)["note"] for i in range(2))
        assert [w["state"] for w in ex.workers()] == ["lost"]
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert job.results(timeout=60) == [0, 1]
    assert job.state_counts()["done"] == 2
