"""Transactional consumers (transport): a result and the ack of its task commit together.

The bookkeeping of ``_Tx`` (which acks may use ``multiple``) needs no broker; the
rest runs against the machine's RabbitMQ."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pika
import pytest

from sif_magic import protocol
from sif_magic.transport import Connection, Delivery
from sif_magic.transport.tx import _Tx


class _FakeChannel:
    is_open = True

    def __init__(self) -> None:
        self.frames: list[tuple] = []

    def basic_publish(self, exchange: str, key: str, body: bytes, props: Any, mandatory: bool):
        self.frames.append(("publish", body))

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", tag, multiple))

    def basic_reject(self, tag: int, requeue: bool = False) -> None:
        self.frames.append(("reject", tag))

    def tx_commit(self) -> None:
        self.frames.append(("commit",))


def _tx(tags: range) -> tuple[_Tx, _FakeChannel]:
    ch = _FakeChannel()
    tx = _Tx(ch, 1)
    for t in tags:
        tx.delivered(t)
    return tx, ch


def test_a_run_of_oldest_finished_deliveries_is_one_multiple_ack() -> None:
    tx, ch = _tx(range(1, 7))
    for t in (2, 1, 3, 5):  # 4 still runs: 5 must not be covered by a multiple ack
        tx.settle(t)
    tx.commit()
    assert ch.frames == [("ack", 3, True), ("ack", 5, False), ("commit",)]
    ch.frames.clear()
    tx.settle(4)  # now 1..5 are settled: 4 goes with multiple (5 was acked alone already)
    tx.settle(6)
    tx.commit()
    assert ch.frames == [("ack", 6, True), ("commit",)]
    assert not tx.unacked and not tx.pending


def test_a_tag_told_late_is_never_covered_by_a_multiple_ack() -> None:
    """A basic.get answered (tag 3) while delivery 2 waited to be handed on: 3 is
    registered first; acking 1 and 3 must not settle 2 with ``multiple``."""
    tx, ch = _tx(range(1, 2))
    tx.delivered(3, got=True)  # the claim message of a chunk (worker/claims.py)
    tx.delivered(2)  # the consumer's delivery, dispatched after
    tx.settle(1)
    tx.settle(3)
    tx.commit()
    assert ch.frames == [("ack", 1, True), ("ack", 3, False), ("commit",)]
    assert tx.pending == {2}


def test_a_get_answer_is_never_the_tag_of_a_multiple_ack() -> None:
    """A basic.get answered (tag 3) while delivery 2 is still inside pika, not handed
    on (so unknown here): acking 1 and 3 in that round must not settle 2 (it was a
    whole chunk lost, then its own ack closed the channel: 'unknown delivery tag')."""
    tx, ch = _tx(range(1, 2))
    tx.delivered(3, got=True)
    tx.settle(1)
    tx.settle(3)
    tx.commit()
    assert ch.frames == [("ack", 1, True), ("ack", 3, False), ("commit",)]
    ch.frames.clear()
    tx.delivered(2)  # handed on now
    tx.settle(2)
    tx.commit()
    assert ch.frames == [("ack", 2, True), ("commit",)]  # a consumer tag: all below known
    assert not tx.pending and not tx.gets


def test_rejects_go_before_a_multiple_ack_and_nothing_is_settled_twice() -> None:
    tx, ch = _tx(range(1, 4))
    tx.settle(2, ack=False)
    tx.settle(1)
    tx.settle(3)
    tx.settle(3)  # twice: the broker would close the channel over a second ack
    tx.commit()
    assert ch.frames == [("reject", 2), ("ack", 3, True), ("commit",)]


def test_settled_tags_behind_a_stuck_delivery_do_not_pile_up() -> None:
    tx, ch = _tx(range(1, 1001))
    for t in range(2, 1001):  # 1 never finishes
        tx.settle(t)
        if t % 10 == 0:
            tx.commit()
    assert len(tx.unacked) < 200
    assert ("ack", 1, True) not in ch.frames and all(
        f[-1] is False for f in ch.frames[:-1] if f[0] == "ack"
    )


# -- against RabbitMQ -------------------------------------------------------------------------
SCOPE = protocol.key_id(b"k" * 32)


@pytest.fixture
def queues(broker_url: str):
    names = [f"sif_magic.test-tx-{uuid.uuid4().hex[:8]}-{k}" for k in ("tasks", "results")]
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    for q in names:
        ch.queue_declare(q, durable=True)
    yield ch, names
    for q in names:
        ch.queue_delete(q)
    conn.close()


def _depth(ch: Any, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def _until(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)


def _consume_one(broker_url: str, ch: Any, queue: str) -> tuple[Connection, Delivery, list]:
    """A transactional consumer of ``queue`` and the delivery of one task published there."""
    ch.basic_publish("", queue, b"task", pika.BasicProperties(delivery_mode=2))
    returned: list = []
    conn = Connection(
        broker_url, scope=SCOPE, on_return=lambda kind, rk: returned.append((kind, rk))
    ).start()
    got: list[Delivery] = []
    conn.consume(lambda ch: queue, lambda p, d, m, b: got.append(d), transactional=True)
    _until(lambda: got, 10)
    assert got, "no delivery"
    return conn, got[0], returned


def _stage_and_ack(
    conn: Connection,
    delivery: Delivery,
    queue: str,
    then: Any = None,
    parts: tuple[bytes, ...] = (),
) -> None:
    """In the I/O thread: stage a result to ``queue`` (or, with ``parts``, the parts of a
    split chunk, bound to its channel) and the ack of ``delivery``."""

    def op() -> None:
        for body in parts or (b"result",):
            kind = "task" if parts else "result"
            conn.stage_publish(
                delivery, "", queue, body, kind=kind, key=b"k" * 32, bound=bool(parts)
            )
        conn.ack(delivery)
        if then is not None:
            then()

    conn.call(op, wait=False)


def test_result_and_ack_commit_together(broker_url: str, queues) -> None:
    ch, (tasks, results) = queues
    conn, delivery, returned = _consume_one(broker_url, ch, tasks)
    try:
        _stage_and_ack(conn, delivery, results)
        _until(lambda: _depth(ch, results) >= 1, 5)
        assert _depth(ch, results) == 1
        time.sleep(0.2)
    finally:
        conn.close()
    assert _depth(ch, tasks) == 0, "the task was not acked (it went back to its queue)"
    assert returned == []


def test_a_result_nobody_waits_for_is_returned_and_its_task_still_acked(
    broker_url: str, queues
) -> None:
    ch, (tasks, _) = queues
    conn, delivery, returned = _consume_one(broker_url, ch, tasks)
    gone = f"sif_magic.results.gone-{uuid.uuid4().hex[:8]}"
    try:
        _stage_and_ack(conn, delivery, gone)
        _until(lambda: returned, 5)
        assert returned == [("result", gone)]
    finally:
        conn.close()
    assert _depth(ch, tasks) == 0


def test_what_a_lost_connection_had_staged_is_not_acked_and_its_results_go_out_again(
    broker_url: str, queues
) -> None:
    ch, (tasks, results) = queues
    conn, delivery, _ = _consume_one(broker_url, ch, tasks)
    try:
        # the connection dies before the commit at the end of this round
        _stage_and_ack(conn, delivery, results, then=lambda: conn._conn.close())
        _until(lambda: _depth(ch, results) >= 1, 15)
        assert _depth(ch, results) == 1, "the staged result was not published after reconnecting"
        assert conn.generation == 2
    finally:
        conn.close()
    time.sleep(0.2)
    assert _depth(ch, tasks) == 1, "a delivery of the dead connection was acked"


def test_a_split_chunk_and_its_ack_commit_together(broker_url: str, queues) -> None:
    ch, (tasks, retry) = queues
    conn, delivery, _ = _consume_one(broker_url, ch, tasks)
    try:
        _stage_and_ack(conn, delivery, retry, parts=(b"part-1", b"part-2"))
        _until(lambda: _depth(ch, retry) >= 2, 5)
        assert _depth(ch, retry) == 2
        time.sleep(0.2)
    finally:
        conn.close()
    assert _depth(ch, tasks) == 0


def test_a_split_lost_with_its_connection_is_not_sent_again(broker_url: str, queues) -> None:
    # unlike results: the chunk comes back whole (not acked) and is split again, so
    # parts sent after the reconnect would run every call twice
    ch, (tasks, retry) = queues
    conn, delivery, _ = _consume_one(broker_url, ch, tasks)
    try:
        _stage_and_ack(conn, delivery, retry, then=lambda: conn._conn.close(), parts=(b"p1", b"p2"))
        _until(lambda: conn.generation == 2, 15)
        assert conn.generation == 2
        time.sleep(0.5)
        assert _depth(ch, retry) == 0, "the parts of a split that was not committed went out"
    finally:
        conn.close()
    time.sleep(0.2)
    assert _depth(ch, tasks) == 1, "the chunk did not come back"


def test_a_worker_holds_many_quick_chunks_and_few_slow_ones() -> None:
    """Prefetch follows how long chunks take: dozens of one-call chunks in flight hide
    the broker's round trip; slow chunks stay on the broker for idle workers."""
    from sif_magic.runner.chunk import Chunk
    from sif_magic.runner.scheduler import PREFETCH_MAX
    from sif_magic.worker import Worker

    w = Worker("amqp://guest:guest@127.0.0.1:5672/%2F", key=b"k" * 32, processes=2)
    try:
        chunk = Chunk("j", 0, [0], "h", b"", b"")
        seconds = {"h": 2e-5}
        w.pool.seconds_per_call = lambda h: seconds[h]  # type: ignore[method-assign]
        assert w.outbox.prefetch.current == 4  # two per process to begin with
        changes = [p for p in (w.outbox.adapt_prefetch(chunk) for _ in range(64)) if p]
        assert changes and changes[-1] == PREFETCH_MAX
        seconds["h"] = 0.5  # the next job's calls are slow
        changes = [p for p in (w.outbox.adapt_prefetch(chunk) for _ in range(200)) if p]
        assert changes and changes[-1] == 4
    finally:
        w.pool.close()


def test_a_staged_result_the_broker_refuses_is_dropped_after_a_few_tries(
    broker_url: str, queues, caplog: pytest.LogCaptureFixture
) -> None:
    """A staged message is sent again on every new connection; one the broker refuses
    (here: its exchange is missing) went round for ever. Now it is dropped and logged."""
    from sif_magic.transport.refusals import MAX_REFUSALS

    ch, (tasks, _) = queues
    conn, delivery, _ = _consume_one(broker_url, ch, tasks)
    missing = f"sif_magic.{SCOPE}.missing-{uuid.uuid4().hex[:8]}"
    try:

        def op() -> None:
            conn.stage_publish(delivery, missing, "r", b"result", kind="result", key=b"k" * 32)
            conn.ack(delivery)

        conn.call(op, wait=False)
        _until(lambda: "dropped" in caplog.text, 60)
        assert f"result message to 'r' {MAX_REFUSALS} times (404 NOT_FOUND" in caplog.text
        # the refusal that dropped it also closed the connection: once the I/O thread
        # runs an op again it has reconnected, and nothing more should bring it down
        assert conn.call(lambda: "up", timeout=30) == "up"
        settled = conn.generation
        assert settled <= MAX_REFUSALS + 1
        time.sleep(2)
        assert conn.generation == settled and conn.call(lambda: "up") == "up"
    finally:
        conn.close()
    # its ack died with the refused transaction: the task is there for another worker
    _until(lambda: _depth(ch, tasks) == 1, 10)
    assert _depth(ch, tasks) == 1
