"""The transport package: connect's advice per cause, the topology, the one rule for
running an operation, queue_exists, and the staging of transactions.

Connect's advice is checked with the exceptions pika and the standard library raise
(the integration tests in test_rabbitmq.py meet most of them on a real broker); the
rest runs against the machine's RabbitMQ, except Staging's bookkeeping."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions as pe
import pytest

from sif_magic import BrokerError, protocol
from sif_magic.transport import (
    Connection,
    connection_parameters,
    declare_retry_queue,
    declare_task_queue,
    declare_topology,
    explain_connect_error,
)
from sif_magic.transport.tx import Staging, _Tx

URL = "amqp://alice:s3cret@broker.example:5672/science"


# -- connect ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error,advice",
    [
        (pe.ProbableAuthenticationError("x"), "refused the login of user 'alice': check the user"),
        (pe.AuthenticationError("PLAIN"), "refused the login of user 'alice'"),
        (pe.ProbableAccessDeniedError("x"), "refused access to vhost 'science'"),
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve the broker host"),
        (
            ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] verify failed"),
            "could not be verified",
        ),
        (
            pe.AMQPConnectionError("ssl handshake: CERTIFICATE_VERIFY_FAILED"),
            "set ca_file (SIF_MAGIC_CA_FILE)",
        ),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]"), "is that port a TLS (amqps) listener?"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused): is the broker"),
        (pe.AMQPConnectionError(ConnectionRefusedError(111, "Connection refused")), "refused"),
        (TimeoutError("timed out"), "did not answer in time: check the host, port"),
        (pe.AMQPConnectionError("connection timed out"), "did not answer in time"),
        (RuntimeError("something else"), "cannot connect to RabbitMQ at broker.example:5672"),
    ],
)
def test_each_cause_of_a_failed_connect_gets_its_advice(error: BaseException, advice: str) -> None:
    err = explain_connect_error(URL, error)
    assert isinstance(err, BrokerError)
    assert advice in str(err), str(err)
    assert "broker.example" in str(err) or "alice" in str(err)


def test_connect_advice_never_shows_the_password_and_names_the_tls_port() -> None:
    err = explain_connect_error(URL, RuntimeError(f"failed talking to {URL}"))
    assert "s3cret" not in str(err) and "broker.example" in str(err)
    tls = explain_connect_error("amqps://bob@h.example/", TimeoutError("timed out"))
    assert "h.example:5671" in str(tls)
    guest = explain_connect_error("amqp://h.example/", pe.ProbableAccessDeniedError("x"))
    assert "vhost '/'" in str(guest) and "user 'guest'" in str(guest)


@pytest.mark.parametrize(
    "url,match",
    [
        ("http://broker.example/", "must look like amqp://user:"),
        ("amqp://alice:s3cret@broker.example:notaport/", "cannot parse broker URL"),
        ("amqp://alice:s3cret@broker.example/?heartbeat=often", "cannot parse broker URL"),
    ],
)
def test_a_bad_broker_url_is_refused_with_the_form_it_must_have(url: str, match: str) -> None:
    with pytest.raises(BrokerError, match=match) as info:
        connection_parameters(url, 3.0)
    assert "s3cret" not in str(info.value)


def test_connection_parameters_bound_every_wait_and_verify_tls() -> None:
    plain = connection_parameters("amqp://h.example/%2F", 4.0)
    assert (plain.socket_timeout, plain.stack_timeout, plain.connection_attempts) == (4.0, 8.0, 1)
    assert plain.heartbeat == 30 and plain.ssl_options is None
    assert connection_parameters("amqp://h.example/%2F?heartbeat=10", 4.0).heartbeat == 10
    tls = connection_parameters("amqps://h.example/%2F", 4.0)
    assert tls.port == 5671 and tls.ssl_options.server_hostname == "h.example"
    assert tls.ssl_options.context.verify_mode == ssl.CERT_REQUIRED


# -- topology --------------------------------------------------------------------------------
@pytest.fixture
def channel(broker_url: str) -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    yield conn.channel()
    conn.close()


def _refused(broker_url: str, declare: Any) -> bool:
    """Whether the broker refuses ``declare(channel)`` (on a channel of its own)."""
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        declare(conn.channel())
        return False
    except pe.ChannelClosedByBroker as e:
        assert e.reply_code == 406, e  # PRECONDITION_FAILED: exists with other properties
        return True
    finally:
        conn.close()


SCOPE = protocol.key_id(b"k" * 32)  # the key these tests sign with


def test_the_topology_holds_the_exchanges_and_dead_letter_queue_of_the_docs(
    broker_url: str, channel: Any
) -> None:
    declare_topology(channel, SCOPE)
    declare_topology(channel, SCOPE)  # every side declares it on every connection
    for name, kind in (
        (protocol.direct_exchange(SCOPE), "direct"),
        (protocol.monitor_exchange(SCOPE), "topic"),
        (protocol.control_exchange(SCOPE), "fanout"),
        (protocol.dead_exchange(SCOPE), "fanout"),
    ):
        assert name.startswith(f"sif_magic.{SCOPE}.")
        channel.exchange_declare(name, kind, durable=True)  # same kind: accepted
        other = "headers" if kind == "direct" else "direct"
        assert _refused(broker_url, lambda ch, n=name, o=other: ch.exchange_declare(n, o))
    dead = protocol.dead_queue(SCOPE)
    # bounded: a length limit and a message TTL (a new name: the old unbounded
    # sif_magic.dead keeps its arguments, which a declare with others would be refused)
    args = {"x-max-length": 10000, "x-max-length-bytes": 512 * 1024**2}
    channel.queue_declare(dead, durable=True, arguments={**args, "x-message-ttl": 7 * 86400000})
    assert _refused(broker_url, lambda ch: ch.queue_declare(dead, durable=True))


def test_task_and_retry_queues_are_durable_and_dead_letter_what_is_rejected(
    broker_url: str, channel: Any
) -> None:
    runtime = f"test-topology-{uuid.uuid4().hex[:8]}"
    try:
        declare_topology(channel, SCOPE)
        task, retry = protocol.task_queue(SCOPE, runtime), protocol.retry_queue(SCOPE, runtime)
        assert task == f"sif_magic.{SCOPE}.tasks.{runtime}" and retry == task + ".retry"
        assert declare_task_queue(channel, SCOPE, runtime) == task
        assert declare_retry_queue(channel, SCOPE, runtime) == retry
        for name in (task, retry):
            args = {"x-dead-letter-exchange": f"sif_magic.{SCOPE}.dead"}
            channel.queue_declare(name, durable=True, arguments=args)  # the same: accepted
            assert _refused(broker_url, lambda ch, n=name: ch.queue_declare(n, durable=True))
            # routed by the scope's direct exchange under its own name
            channel.basic_publish(protocol.direct_exchange(SCOPE), name, b"x")
            deadline = time.monotonic() + 10
            while channel.queue_declare(name, passive=True).method.message_count < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        channel.queue_delete(protocol.task_queue(SCOPE, runtime))
        channel.queue_delete(protocol.retry_queue(SCOPE, runtime))


# -- the one rule for running an operation ---------------------------------------------------
@pytest.fixture
def conn(broker_url: str) -> Iterator[Connection]:
    c = Connection(broker_url, scope=SCOPE, name="sif_magic-test-transport").start()
    yield c
    c.close()


def test_operations_of_other_threads_run_on_the_io_thread_in_the_order_queued(
    conn: Connection,
) -> None:
    seen: list[tuple[int, str]] = []
    futures = [
        conn.call(lambda k=k: seen.append((k, threading.current_thread().name)), wait=False)
        for k in range(50)
    ]
    assert conn.call(lambda: len(seen)) == 50  # waits: runs after the 50 queued before it
    assert [k for k, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"sif_magic-test-transport-io"}
    assert all(f.done() and f.result() is None for f in futures)


def test_an_operation_from_the_io_thread_runs_at_once(conn: Connection) -> None:
    order: list[str] = []

    def outer() -> Any:
        fut = conn.call(lambda: order.append("inner, no wait") or 1, wait=False)
        value = conn.call(lambda: order.append("inner, wait") or 2)  # no deadlock
        order.append("outer")
        return fut, value

    fut, value = conn.call(outer)
    assert order == ["inner, no wait", "inner, wait", "outer"]
    assert fut.done() and fut.result() == 1 and value == 2


def test_an_operation_that_fails_hands_its_error_to_the_caller(conn: Connection) -> None:
    def boom() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        conn.call(boom)
    assert isinstance(conn.call(boom, wait=False).exception(timeout=10), ValueError)
    inline = conn.call(lambda: conn.call(boom, wait=False))  # on the I/O thread
    assert isinstance(inline.exception(timeout=0), ValueError)
    assert conn.call(lambda: "still running") == "still running"


def test_a_posted_operation_keeps_its_place_and_logs_its_error(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []
    conn.call(lambda: order.append("called"), wait=False)
    conn.post(lambda: order.append("posted"))
    conn.post(lambda: 1 / 0)
    conn.call(lambda: conn.post(lambda: order.append("posted inline")) or order.append("after"))
    assert order == ["called", "posted", "posted inline", "after"]
    assert any(
        "operation on the broker connection failed" in r.message and r.exc_info
        for r in caplog.records
    )


def test_after_close_an_operation_is_refused_with_broker_error(broker_url: str) -> None:
    c = Connection(broker_url, scope=SCOPE).start()
    c.close()
    with pytest.raises(BrokerError, match="closed"):
        c.call(lambda: None)
    assert isinstance(c.call(lambda: None, wait=False).exception(timeout=0), BrokerError)


def test_queue_exists_asks_without_harming_the_connection(conn: Connection, channel: Any) -> None:
    name = f"sif_magic.test-exists-{uuid.uuid4().hex[:8]}"
    assert conn.queue_exists(name) is False  # the broker closes the channel it asked on
    channel.queue_declare(name, auto_delete=False)
    try:
        assert conn.queue_exists(name) is True
        assert conn.call(lambda: conn.channel.is_open and conn.sub_channel.is_open)
        conn.publish("", name, b"x", kind="test", key=b"k" * 32)  # confirmed: still usable
        deadline = time.monotonic() + 5
        while channel.queue_declare(name, passive=True).method.message_count < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        channel.queue_delete(name)


def test_stopping_a_consumer_the_broker_cancelled_does_not_wait_for_a_cancel_ok(
    conn: Connection, channel: Any
) -> None:
    """A worker whose task queue was deleted under it (the broker cancels its consumer)
    waited for a cancel-ok that never comes: every such stop took the full 5 s."""
    name = f"sif_magic.test-cancelled-{uuid.uuid4().hex[:8]}"
    kept = f"sif_magic.test-kept-{uuid.uuid4().hex[:8]}"
    for q in (name, kept):
        conn.consume(lambda ch, q=q: ch.queue_declare(q).method.queue, lambda *a: None)
    try:
        channel.queue_delete(name)  # the broker sends basic.cancel to its consumer
        (c,) = [c for c in conn._consumers.consumers if c.queue == name]
        deadline = time.monotonic() + 10
        while conn.call(lambda: c.tag in c.channel._impl._consumers):  # pika heard it
            assert time.monotonic() < deadline, "the broker never cancelled the consumer"
            time.sleep(0.02)
        stopped = conn.stop_consuming({name})
        assert stopped.result(timeout=2) is None  # before: never done (the caller's 5 s)
        # a live consumer still waits for the broker's cancel-ok, and gets it
        assert conn.stop_consuming({kept}).result(timeout=10) is None
        assert channel.queue_declare(kept, passive=True).method.consumer_count == 0
    finally:
        channel.queue_delete(kept)


# -- staging ---------------------------------------------------------------------------------
class _Channel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.is_open = True
        self.frames: list[tuple] = []

    def basic_publish(self, exchange: str, key: str, body: bytes, props: Any, mandatory: bool):
        self.frames.append(("publish", body))

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", tag))

    def basic_reject(self, tag: int, requeue: bool = False) -> None:
        self.frames.append(("reject", tag))

    def tx_commit(self) -> None:
        self.frames.append(("commit",))


def _message(body: bytes) -> tuple:
    return ("", "q", body, None)


def test_staged_publishes_go_with_their_delivery_or_without_an_ack_elsewhere() -> None:
    s = Staging()
    s.publish(None, 0, _message(b"before connecting"))
    assert s.orphans and not s.dirty
    own = _Channel("own")
    s.opened(own, 1)  # the orphan goes out on the new connection's own channel
    consumer = _Channel("consumer")
    tx = _Tx(consumer, 1)
    tx.delivered(7)
    s.publish(tx, 1, _message(b"result"))
    s.settle(tx, 7, True, False)
    s.publish(_Tx(_Channel("old"), 0), 1, _message(b"of an old connection"))
    s.commit()
    assert consumer.frames == [("publish", b"result"), ("ack", 7), ("commit",)]
    assert own.frames == [
        ("publish", b"before connecting"),
        ("publish", b"of an old connection"),
        ("commit",),
    ]
    assert not s.dirty and not s.orphans


def test_a_lost_connection_keeps_its_publishes_and_drops_its_acks_and_bound_parts() -> None:
    s = Staging()
    s.opened(_Channel("own"), 1)
    consumer = _Channel("consumer")
    tx = _Tx(consumer, 1)
    tx.delivered(3)
    s.publish(tx, 1, _message(b"result"))
    s.bind(tx, 1, _message(b"part"))
    s.settle(tx, 3, True, False)
    s.lost()
    assert [m[2] for m in s.orphans] == [b"result"] and not s.dirty
    own = _Channel("own, next connection")
    s.opened(own, 2)
    s.bind(tx, 2, _message(b"part of an old delivery"))  # dropped: never without its ack
    s.commit()
    assert own.frames == [("publish", b"result"), ("commit",)] and consumer.frames == []


def test_a_cancelled_consumer_s_results_go_out_without_its_acks() -> None:
    s = Staging()
    own = _Channel("own")
    s.opened(own, 1)
    consumer = _Channel("consumer")
    tx = _Tx(consumer, 1)
    tx.delivered(5)
    s.publish(tx, 1, _message(b"result"))
    s.settle(tx, 5, True, False)
    consumer.is_open = False  # cancelled: the broker requeued its deliveries
    s.commit()
    assert consumer.frames == [] and own.frames == [("publish", b"result"), ("commit",)]


# -- what the broker refuses (issue 13, finding 5) ---------------------------------------------
def test_a_publish_the_broker_refuses_is_dropped_after_a_few_tries(broker_url: str) -> None:
    """A publish to a missing exchange used to be sent again after every reconnect, the
    backoff starting small each time: 47 reconnects in 12 s, for ever. Now the caller
    hears the broker's reason after MAX_REFUSALS tries, and the connection stays up."""
    from sif_magic.transport.refusals import MAX_REFUSALS

    c = Connection(broker_url, scope=SCOPE, name="sif_magic-test-refused").start()
    try:
        missing = f"sif_magic.{SCOPE}.missing-{uuid.uuid4().hex[:8]}"
        fut = c.publish(missing, "k", b"x", kind="test", key=b"k" * 32, wait=False)
        with pytest.raises(BrokerError, match=f"404 NOT_FOUND - no exchange '{missing}'"):
            fut.result(timeout=60)
        assert c.generation <= MAX_REFUSALS + 1, c.generation
        assert c.call(lambda: "up", timeout=30) == "up"
        settled = c.generation
        c.publish("", "", b"x", kind="test", key=b"k" * 32)  # the connection still publishes
        time.sleep(2)
        assert c.generation == settled  # no more reconnects
    finally:
        c.close()


def test_events_done_runs_on_the_io_thread_after_a_burst_of_deliveries(broker_url: str) -> None:
    """A worker hands the chunks of a burst of deliveries to its pool together: the
    hook runs after pika handed the consumer what arrived, not once per delivery."""
    got: list[int] = []
    bursts: list[tuple[int, str]] = []  # deliveries seen so far, thread, at each hook
    queue = f"sif_magic.{SCOPE}.test-burst-{uuid.uuid4().hex[:8]}"
    pub = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = pub.channel()
    ch.queue_declare(queue)
    for k in range(200):  # waiting before anyone consumes: they arrive in bursts
        ch.basic_publish("", queue, str(k).encode())
    c = Connection(
        broker_url,
        scope=SCOPE,
        name="sif_magic-test-burst",
        on_events_done=lambda: bursts.append((len(got), threading.current_thread().name)),
    ).start()
    try:
        c.consume(lambda _ch: queue, lambda props, d, m, body: got.append(int(body)), auto_ack=True)
        deadline = time.monotonic() + 30
        while len(got) < 200 or not bursts or bursts[-1][0] < 200:
            assert time.monotonic() < deadline, (len(got), bursts[-3:])
            time.sleep(0.02)
        assert got == list(range(200))
        assert {name for _, name in bursts} == {"sif_magic-test-burst-io"}
        seen = [n for n, _ in bursts]
        grew = [b for a, b in zip([0, *seen], seen) if b > a]
        assert len(grew) < 200  # bursts, not a hook per delivery
    finally:
        c.close()
        ch.queue_delete(queue)
        pub.close()
