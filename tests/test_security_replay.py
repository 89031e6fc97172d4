"""Replay and forged headers (issue 13, finding 4), performed against the real broker.

The attacker can read and publish on the vhost but does not hold the signing key:
it takes signed messages off the broker and publishes them again, as they came or
with an unsigned header changed. Before protocol version 3 the signature covered only
the type and the body: replayed tasks of a finished job ran again (3 runs became 9),
a forged ``sif-lost`` made a healthy call fail with "worker lost", a replayed
heartbeat showed a dead worker up, and replayed control messages were obeyed. Each
test below performs one of those attacks; docs/security.md ("Replay") says what they
cover. The first tests check the pieces without a broker.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from queues import scope, take_dead_letters

from sif_magic import Executor, protocol
from sif_magic.backends.rabbitmq.registry import WorkerRegistry
from sif_magic.transport import declare_routed_queue, declare_topology

KEY = b"k" * 32


# -- without a broker -------------------------------------------------------------------


def test_every_header_a_receiver_acts_on_is_signed() -> None:
    body = protocol.Task("j", 0, [0], "r", b"F", b"A").encode()
    good = protocol.headers_for(KEY, "task", body, **{protocol.HDR_LOST: 1})
    assert protocol.verify(KEY, "task", body, good).lost == 1
    forged = [
        {**good, protocol.HDR_LOST: 100},  # "worker lost 100 times"
        {k: v for k, v in good.items() if k != protocol.HDR_LOST},  # loss count dropped
        {**good, protocol.HDR_ID: uuid.uuid4().hex},  # a new id, to pass as a new message
        {**good, protocol.HDR_TIME: good[protocol.HDR_TIME] + 3_600_000},  # made younger
    ]
    for headers in forged:
        with pytest.raises(protocol.ProtocolError, match="bad signature"):
            protocol.verify(KEY, "task", body, headers)
    plain = protocol.headers_for(KEY, "task", body)  # no loss count: adding one is refused
    with pytest.raises(protocol.ProtocolError, match="bad signature"):
        protocol.verify(KEY, "task", body, {**plain, protocol.HDR_LOST: 2})
    with pytest.raises(protocol.ProtocolError, match="malformed"):
        protocol.verify(KEY, "task", body, {**good, protocol.HDR_LOST: "2"})
    with pytest.raises(protocol.ProtocolError, match="malformed sif-sig"):
        protocol.verify(KEY, "task", body, {**good, protocol.HDR_SIG: "é" * 64})
    two = protocol.headers_for(KEY, "task", body), protocol.headers_for(KEY, "task", body)
    assert two[0][protocol.HDR_ID] != two[1][protocol.HDR_ID]  # every message is new


def test_a_message_of_version_2_is_refused_with_what_to_upgrade() -> None:
    # a body and headers as version 2 signed them (tests/wire_v2.json of commit 3b1cd34
    # pinned these for the sample "control_ping", signed as kind "control_ping")
    body = b'{"op":"ping","job_id":"","calls":null,"worker":"","runtime":""}'
    old = {
        "sif-kid": protocol.key_id(KEY),
        "sif-lost": 2,
        "sif-sig": "2cc6acd11c0dfedbb49610cef7ddf9e726b52d1a68aa6a0657add61f309249c5",
        "sif-v": 2,
    }
    with pytest.raises(protocol.VersionError) as e:
        protocol.verify(KEY, "control_ping", body, old)
    text = str(e.value)
    assert "protocol version 2; this side speaks 3" in text
    assert "pip install -U sif_magic" in text and "rebuild the worker's image" in text


def test_a_control_message_is_stale_beyond_its_age_and_the_clock_skew() -> None:
    now = time.time()

    def signed(age: float) -> protocol.Signed:
        return protocol.Signed("control", "a" * 32, now - age, 0)

    protocol.fresh(signed(protocol.CONTROL_MAX_AGE), protocol.CONTROL_MAX_AGE, now)
    protocol.fresh(signed(-protocol.CLOCK_SKEW + 1), protocol.CONTROL_MAX_AGE, now)
    with pytest.raises(protocol.StaleMessage, match="signed 600 s ago.*run NTP"):
        protocol.fresh(signed(600), protocol.CONTROL_MAX_AGE, now)
    with pytest.raises(protocol.StaleMessage, match="in the future"):
        protocol.fresh(signed(-protocol.CLOCK_SKEW - 5), protocol.CONTROL_MAX_AGE, now)


def test_seen_ids_refuse_a_copy_with_a_forged_x_death_and_forget_the_oldest() -> None:
    seen = protocol.SeenIds(size=3)
    s = protocol.Signed("task", "b" * 32, 0.0, 0)
    assert seen.first(protocol.seen_key(s, {}))
    assert not seen.first(protocol.seen_key(s, {}))  # a copy
    forged = {"x-death": [{"count": 1, "queue": "claims", "reason": "expired"}]}
    assert not seen.first(protocol.seen_key(s, forged))  # x-death is not signed
    for i in range(3):
        seen.first(str(i))
    assert len(seen) == 3 and seen.first(protocol.seen_key(s, {}))  # the oldest went


def test_a_worker_takes_again_what_the_broker_redelivers_or_dead_letters_back() -> None:
    from sif_magic.worker.gate import TaskGate

    class Broker:  # answers the gate's one question: the job's exchange exists
        scope = protocol.key_id(KEY)

        def exchange_exists(self, name: str) -> bool:
            return name == protocol.job_exchange(self.scope, "j")

    gate = TaskGate(Broker())  # type: ignore[arg-type]
    task = protocol.Task("j", 0, [0], "r", b"F", b"A")
    signed = protocol.Signed("task", "c" * 32, 0.0, 0)
    assert gate.admit(task, signed, False, {}, set())
    assert not gate.admit(task, signed, False, {}, set())  # a copy published again
    assert gate.admit(task, signed, True, {}, set())  # redelivered (same worker, reconnect)
    forged = {"x-death": [{"count": 1, "queue": "claims", "reason": "expired"}]}
    assert not gate.admit(task, signed, False, forged, set())  # a copy made to look expired
    claim = signed._replace(msg_id="e" * 32)  # a claim is signed anew: its own id
    assert gate.admit(task, claim, False, forged, set())  # back after its lease expired
    assert not gate.admit(task, signed, False, {}, {"j"})  # cancelled here
    other = protocol.Task("gone", 0, [0], "r", b"F", b"A")
    assert not gate.admit(other, signed._replace(msg_id="d" * 32), True, {}, set())


def _hb(t: float, state: str = "up") -> protocol.Heartbeat:
    return protocol.Heartbeat(
        "w1", "h", 1, "rt", 1, 0, "3.11", "3.1", "0", t, interval=0.5, state=state
    )


def test_the_registry_trusts_a_heartbeat_only_until_its_own_time() -> None:
    now = time.time()
    live = WorkerRegistry()
    assert live.record(_hb(now - 2))  # a worker whose clock is 2 s behind: up
    assert [r["state"] for r in live.rows()] == ["up"]
    assert not live.record(_hb(now - 30))  # older than its last: a copy, ignored
    live.record(_hb(now, "bye"))
    assert not live.record(_hb(now - 1))  # a copy of an earlier "up" after its bye
    assert [r["state"] for r in live.rows()] == ["gone"]
    fresh = WorkerRegistry()  # a client that never heard of w1 gets a copy of old
    fresh.record(_hb(now - protocol.CLOCK_SKEW - 3 * 0.5 - 2))
    assert [r["state"] for r in fresh.rows()] == ["lost"]


# -- against the broker -----------------------------------------------------------------


def _channel(url: str) -> tuple[pika.BlockingConnection, Any]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    return conn, conn.channel()


def _scoped_channel(url: str, key_file: Path) -> tuple[pika.BlockingConnection, Any, str]:
    """A channel on which the exchanges and the dead-letter queue of ``key_file``'s
    scope exist (declared as every side declares them), and that scope."""
    conn, ch = _channel(url)
    s = scope(key_file)
    declare_topology(ch, s)
    return conn, ch, s


def _exchange_of(queue: str) -> str:
    """Where tasks and results for ``queue`` are published: its scope's direct exchange
    (routing key: the queue's name)."""
    return protocol.direct_exchange(queue.split(".")[1])


class TaskSpy:
    """The attacker on a task queue: consumes it before any worker, keeps a copy of
    each task, and can forward the originals unchanged (so the job runs as usual)."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.conn, self.ch = _channel(url)
        s = queue.split(".")[1]
        declare_topology(self.ch, s)
        declare_routed_queue(self.ch, s, queue, protocol.task_queue_arguments(s))
        self.ch.confirm_delivery()
        self.ch.basic_qos(prefetch_count=1000)
        self.held: list[tuple[Any, Any, bytes]] = []
        self.tag = self.ch.basic_consume(queue, self._on, auto_ack=False)

    def _on(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        self.held.append((method, props, body))

    def take(self, n: int, timeout: float = 60) -> list[tuple[Any, bytes]]:
        deadline = time.time() + timeout
        while len(self.held) < n:
            assert time.time() < deadline, f"the spy got {len(self.held)} of {n} tasks"
            self.conn.process_data_events(time_limit=0.1)
        self.held += self.ch.basic_cancel(self.tag) or []
        return [(props, body) for _, props, body in self.held]

    def forward(self) -> None:
        """The originals go back to the queue unchanged; the spy lets go of them."""
        for method, props, body in self.held:
            self.ch.basic_publish(_exchange_of(self.queue), self.queue, body, props, mandatory=True)
            self.ch.basic_ack(method.delivery_tag)

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


def publish_copy(url: str, queue: str, props: Any, body: bytes, *, redelivered: bool = False):
    """Publish a captured message again, as it came. ``redelivered``: then take it
    without ack and let it go back, so the broker hands it out as redelivered."""
    conn, ch = _channel(url)
    try:
        ch.confirm_delivery()
        ch.basic_publish(_exchange_of(queue), queue, body, props, mandatory=True)
        if redelivered:
            method, _, _ = ch.basic_get(queue, auto_ack=False)
            assert method is not None
            ch.basic_nack(method.delivery_tag, requeue=True)
    finally:
        conn.close()


def exchange_exists(url: str, name: str) -> bool:
    conn, ch = _channel(url)
    try:
        ch.exchange_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        conn.close()


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.time() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def make_ex(broker_url: str, runtime: str, key_file: Path) -> Iterator[Callable[[], Executor]]:
    made: list[Executor] = []

    def make() -> Executor:
        made.append(Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime,
                             key_file=str(key_file)))  # fmt: skip
        return made[-1]

    yield make
    for ex in made:
        ex.shutdown(wait=False, cancel_futures=True)


def _recorder(d: Path) -> Callable[[int], int]:
    """A call that leaves one file per run in ``d`` (runs are counted by them)."""
    where = str(d)

    def f(x: int) -> int:
        import os as _os
        import time as _time
        import uuid as _uuid

        open(_os.path.join(where, f"{x}-{_uuid.uuid4().hex}"), "w").close()
        while x == 0 and not _os.path.exists(_os.path.join(where, "release")):
            _time.sleep(0.05)  # call 0 waits for the test (keeps its job running)
        return x

    return f


def _runs(d: Path) -> dict[int, int]:
    runs: dict[int, int] = {}
    for p in d.iterdir():
        if p.name != "release":
            runs[int(p.name.split("-")[0])] = runs.get(int(p.name.split("-")[0]), 0) + 1
    return runs


def _captured_job(
    make_ex: Callable[[], Executor], url: str, queue: str, runs: Path, release: bool
) -> tuple[Executor, Any, list[tuple[Any, bytes]]]:
    """A job of three one-call chunks whose tasks the spy copied on their way (no
    worker yet: the spy is the queue's consumer); ``release``: call 0 does not wait."""
    runs.mkdir()
    if release:
        (runs / "release").touch()
    spy = TaskSpy(url, queue)
    try:
        ex = make_ex()
        job = ex.map_job(_recorder(runs), range(3), chunksize=1)  # sent: the spy consumes
        captured = spy.take(3)
        # the name the worker asks for: it exists while the job runs
        assert exchange_exists(url, protocol.job_exchange(queue.split(".")[1], job.job_id))
        spy.forward()
    finally:
        spy.close()
    return ex, job, captured


def _sentinel(ex: Executor) -> None:
    """A job through the same queue: once it is done, every message published to the
    queue before it has been handled by the worker (it takes them in order)."""
    assert ex.map_job(lambda x: -x, [7]).results(timeout=60) == [-7]


def test_tasks_published_again_after_their_job_ended_do_not_run(
    workers, make_ex, broker_url: str, runtime: str, key_file: Path, tmp_path: Path
) -> None:
    queue = protocol.task_queue(scope(key_file), runtime)
    runs = tmp_path / "runs"
    ex, job, captured = _captured_job(make_ex, broker_url, queue, runs, release=True)
    workers.start(runtime, processes=2)
    assert job.results(timeout=60) == [0, 1, 2]
    assert _runs(runs) == {0: 1, 1: 1, 2: 1}
    job_exchange = protocol.job_exchange(scope(key_file), job.job_id)
    wait_for(lambda: not exchange_exists(broker_url, job_exchange), 20,
             "the job's exchange to go once the job is done")  # fmt: skip
    for _ in range(2):  # 3 runs became 9 before version 3
        for props, body in captured:
            publish_copy(broker_url, queue, props, body)
    _sentinel(ex)
    assert _runs(runs) == {0: 1, 1: 1, 2: 1}
    assert workers.logs().count("a replay, not run") == 6  # the worker took these before

    # a worker that starts afresh remembers nothing: the broker tells it the job ended,
    # also of a copy the attacker made look redelivered (as after a worker's death)
    for proc in workers.procs:
        proc.terminate()
        proc.wait(30)
    props, body = captured[1]
    publish_copy(broker_url, queue, props, body)
    publish_copy(broker_url, queue, props, body, redelivered=True)
    workers.start(runtime, processes=1)
    _sentinel(ex)
    assert _runs(runs) == {0: 1, 1: 1, 2: 1}
    assert "has ended" in workers.logs()  # said once per job


def test_a_copy_of_a_task_of_a_running_job_is_not_run_again(
    workers, make_ex, broker_url: str, runtime: str, key_file: Path, tmp_path: Path
) -> None:
    queue = protocol.task_queue(scope(key_file), runtime)
    runs = tmp_path / "runs"
    ex, job, captured = _captured_job(make_ex, broker_url, queue, runs, release=False)
    workers.start(runtime, processes=2)
    wait_for(lambda: _runs(runs) == {0: 1, 1: 1, 2: 1}, 60, "each call to run once")
    for props, body in captured:  # the job still runs (call 0 waits): copies of each
        publish_copy(broker_url, queue, props, body)
    _sentinel(ex)  # on the other process
    (runs / "release").touch()
    assert job.results(timeout=60) == [0, 1, 2]
    assert _runs(runs) == {0: 1, 1: 1, 2: 1}
    assert workers.logs().count("a replay, not run") == 3


def test_an_old_task_of_a_running_job_still_runs(
    workers, broker_url: str, runtime: str, key_file: Path
) -> None:
    """Tasks wait in queues for hours or days: no task is refused for its age."""
    import cloudpickle

    from sif_magic._keys import load_key
    from sif_magic.transport import declare_job_exchange

    workers.start(runtime, processes=1)
    conn, ch, s = _scoped_channel(broker_url, key_file)
    try:
        ch.confirm_delivery()  # an unroutable task raises (mandatory)
        reply = ch.queue_declare(protocol.result_queue(s, "old-job"), exclusive=True).method.queue
        ch.queue_bind(reply, protocol.direct_exchange(s), reply)  # as a client's result queue
        declare_job_exchange(ch, s, "old-job", reply)
        body = protocol.Task(
            "old-job", 0, [0], reply, cloudpickle.dumps(abs), cloudpickle.dumps([-4])
        ).encode()
        three_days_ago = int((time.time() - 3 * 86400) * 1000)
        headers = protocol.headers_for(load_key(key_file=str(key_file)), "task", body,
                                       t_ms=three_days_ago)  # fmt: skip
        ch.basic_publish(protocol.direct_exchange(s), protocol.task_queue(s, runtime), body,
                         pika.BasicProperties(type="task", headers=headers),
                         mandatory=True)  # fmt: skip
        got = wait_for(lambda: ch.basic_get(reply, auto_ack=True)[2], 60, "its result")
    finally:
        conn.close()
    batch = protocol.ResultBatch.decode(got)
    assert batch.results[0].status == protocol.DONE


def test_a_forged_lost_count_is_refused(
    workers, make_ex, broker_url: str, runtime: str, key_file: Path, tmp_path: Path
) -> None:
    queue = protocol.task_queue(scope(key_file), runtime)
    take_dead_letters(broker_url, queue)
    spy = TaskSpy(broker_url, queue)
    try:
        ex = make_ex()
        job = ex.map_job(lambda x: x * 10, [4])
        ((props, body),) = spy.take(1)
        forged = pika.BasicProperties(
            type=props.type, headers={**props.headers, protocol.HDR_LOST: 100}, delivery_mode=2
        )
        # first in the queue, marked redelivered: a worker counts one more loss, and with
        # an unsigned count that made the call fail with "worker lost 101 times"
        publish_copy(broker_url, queue, forged, body, redelivered=True)
        spy.forward()
    finally:
        spy.close()
    workers.start(runtime, processes=1)
    assert job.results(timeout=60) == [40]
    assert job.error(0) is None
    dead = wait_for(
        lambda: take_dead_letters(broker_url, queue), 20, "the forged task, dead-lettered"
    )
    assert [p.headers[protocol.HDR_LOST] for p, _ in dead] == [100]
    assert "bad signature" in workers.logs()


def test_a_replayed_heartbeat_does_not_show_a_stopped_worker_up(
    workers, make_ex, broker_url: str, runtime: str, key_file: Path
) -> None:
    from sif_magic._keys import load_key

    conn, ch, s = _scoped_channel(broker_url, key_file)
    monitor = protocol.monitor_exchange(s)
    capture = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(capture, monitor, "worker.#")
    (proc,) = workers.start(runtime, processes=1, heartbeat=0.5)
    ex = make_ex()
    backend = ex.backend
    (row,) = wait_for(lambda: backend.live_workers(), 30, "the worker to be up")
    wid = row["worker"]
    proc.terminate()
    proc.wait(30)

    def state(b: Any) -> str | None:
        return next((r["state"] for r in b.workers() if r["worker"] == wid), None)

    wait_for(lambda: state(backend) == "gone", 30, "the worker to be gone")
    beats = []
    while True:
        method, props, body = ch.basic_get(capture, auto_ack=True)
        if method is None:
            break
        if method.routing_key == protocol.heartbeat_key(wid):
            beats.append((method.routing_key, props, body))
    conn.close()
    key_, props, body = beats[-1]  # its last "up"
    signed_at = json.loads(body)["t"]
    key = load_key(key_file=str(key_file))

    def replay_then_mark(b: Any) -> None:
        """Publish the captured heartbeat, then a marker heartbeat: once the client
        shows the marker, it has read the replayed one too (in order)."""
        marker = protocol.Heartbeat(f"marker-{uuid.uuid4().hex[:6]}", "h", 1, "other-rt",
                                    1, 0, "3", "3", "0", time.time())  # fmt: skip
        c, chan = _channel(broker_url)
        try:
            chan.basic_publish(monitor, key_, body, props)
            mbody = marker.encode()
            chan.basic_publish(monitor, protocol.heartbeat_key(marker.worker),
                               mbody, pika.BasicProperties(type="heartbeat", headers=protocol
                               .headers_for(key, "heartbeat", mbody)))  # fmt: skip
        finally:
            c.close()
        wait_for(lambda: any(r["worker"] == marker.worker for r in b.workers()), 30,
                 "the marker heartbeat")  # fmt: skip

    replay_then_mark(backend)  # the client that saw it go
    assert state(backend) == "gone"
    assert wid not in [r["worker"] for r in backend.live_workers()]

    # a client started later never heard of it: the copy is older than three
    # heartbeat intervals plus the clock skew allowed, so the worker shows lost
    wait_for(lambda: time.time() - signed_at > protocol.CLOCK_SKEW + 3 * 0.5 + 1.5, 60,
             "the captured heartbeat to be old")  # fmt: skip
    later = make_ex().backend
    replay_then_mark(later)
    assert state(later) == "lost"
    assert wid not in [r["worker"] for r in later.live_workers()]


def test_replayed_and_stale_control_messages_are_refused(
    workers, make_ex, broker_url: str, runtime: str, key_file: Path
) -> None:
    from sif_magic._keys import load_key

    key = load_key(key_file=str(key_file))
    conn, ch, s = _scoped_channel(broker_url, key_file)
    control = protocol.control_exchange(s)
    capture = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(capture, control)
    (proc,) = workers.start(runtime, processes=1)
    ex = make_ex()

    # a cancel of an old job, taken off the broker as it went by and published again
    old_job = f"old-{uuid.uuid4().hex[:8]}"
    body = protocol.Control("cancel", job_id=old_job).encode()
    ch.basic_publish(control, "", body,
                     pika.BasicProperties(type="control",
                                          headers=protocol.headers_for(key, "control", body)))  # fmt: skip
    copy = wait_for(lambda: _take_control(ch, capture, old_job), 20, "the cancel on the wire")
    ch.basic_publish(control, "", copy[1], copy[0])
    wait_for(lambda: "received here before" in workers.logs(), 30, "the copy to be refused")

    # a shutdown for this runtime, signed ten minutes ago (a copy kept that long)
    body = protocol.Control("shutdown", runtime=runtime).encode()
    old = int((time.time() - 600) * 1000)
    ch.basic_publish(control, "", body,
                     pika.BasicProperties(type="control", headers=protocol.headers_for(
                         key, "control", body, t_ms=old)))  # fmt: skip
    conn.close()
    wait_for(lambda: "signed 600 s ago" in workers.logs(), 30, "the stale shutdown refused")
    _sentinel(ex)  # a worker that obeyed it would have gone by now
    assert proc.poll() is None, "the worker obeyed a stale shutdown"
    assert os.path.exists(f"/proc/{proc.pid}")


def _take_control(ch: Any, queue: str, job_id: str) -> tuple[Any, bytes] | None:
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return None
        if job_id.encode() in body:
            return props, body
