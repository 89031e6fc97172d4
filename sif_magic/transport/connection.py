"""A RabbitMQ connection through pika, owned by one I/O thread.

Other threads never touch the connection: they queue operations with
``call()`` / ``publish()`` / ``ack()``, which the I/O thread runs between
``process_data_events`` rounds (woken through ``add_callback_threadsafe``).
``publish()`` uses confirms (or, for best-effort messages, a channel without
them). A consumer may be *transactional*: its channel is in tx mode, and what
the round of operations staged on it (``stage_publish()``, ``ack()``,
``reject()``) is committed at the end of the round as one AMQP transaction, so
a result and the ack of the task it finishes are stored together or not at
all, in one broker round trip however many calls the round carries. When the
connection drops, the I/O thread reconnects with backoff (forever, until
closed), declares the topology again, re-creates the consumers, and retries
the publishes that had not been confirmed or committed; deliveries of the old
connection are never acked (the broker redelivers them). pika's exceptions
stop here: callers see BrokerError.

Standard library and pika only: the worker uses this.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions as pe

from .. import protocol
from ..errors import BrokerError, mask_url
from .connect import connection_parameters, explain_connect_error
from .topology import declare_topology
from .tx import _Publish, _Tx, _unflushed

log = logging.getLogger("sif_magic.broker")
for _noisy in ("pika", "pika.adapters", "pika.connection", "pika.channel"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)

_LOST = (
    pe.AMQPConnectionError,
    pe.ConnectionClosed,
    pe.StreamLostError,
    pe.ChannelWrongStateError,
    pe.ConnectionWrongStateError,
    pe.ChannelClosed,
    OSError,
)


def _properties(
    kind: str,
    key: bytes,
    body: bytes,
    headers: dict[str, Any] | None,
    persistent: bool,
    expiration: str | None,
) -> pika.BasicProperties:
    """Signed properties of a message of ours."""
    return pika.BasicProperties(
        type=kind,
        headers=protocol.headers_for(key, kind, body, **(headers or {})),
        delivery_mode=2 if persistent else 1,
        app_id="sif_magic",
        timestamp=int(time.time()),
        expiration=expiration,
    )


@dataclass(frozen=True)
class Delivery:
    generation: int
    tag: int
    redelivered: bool
    channel: Any = None  # the consumer's own channel (acks go there)
    tx: _Tx | None = None  # that channel's transaction, if the consumer is transactional


@dataclass
class _Consumer:
    setup: Callable[[Any], str]  # declares/binds on the channel, returns the queue name
    on_message: Callable[[Any, Delivery, Any, bytes], None]
    prefetch: int
    auto_ack: bool
    exclusive: bool = False
    transactional: bool = False
    tag: str = ""
    channel: Any = None  # each consumer has its own: a broker error on one closes only that
    queue: str = ""


class Connection:
    """A RabbitMQ connection run by its own thread, reconnecting as needed."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "sif_magic",
        connect_timeout: float = 5.0,
        ca_file: str = "",
        setup: Callable[[Any], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_return: Callable[[str, str], None] | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.params = connection_parameters(url, connect_timeout, ca_file)
        self.params.client_properties = {"connection_name": name}
        self.setup = setup
        self.on_state = on_state
        self.on_return = on_return  # (kind, routing key) of a message the broker returned
        self.generation = 0
        self.connected = False
        self.closed = False
        self._conn: pika.BlockingConnection | None = None
        self._pub: Any = None
        self._fast: Any = None  # no confirms: best-effort messages never wait for the broker
        self._sub: Any = None
        self._tx: Any = None
        self._fallback: _Tx | None = None  # the ``_tx`` channel, for staged publishes without ack
        self._dirty: dict[_Tx, None] = {}  # transactions with staged work, in staging order
        self._orphans: list[_Publish] = []  # staged on a lost connection: published on the next
        self.returned = 0  # messages the broker could not route (mandatory, transactional)
        self._ops: collections.deque[tuple[Callable, Future]] = collections.deque()
        self._consumers: list[_Consumer] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._woken = False

    # -- life ------------------------------------------------------------------
    def start(self) -> Connection:
        """Connect now (raising BrokerError with the reason if that fails), then run."""
        try:
            self._connect()
        except BrokerError:
            raise
        except BaseException as e:
            raise explain_connect_error(self.url, e) from None
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-io", daemon=True)
        self._thread.start()
        return self

    def _connect(self) -> None:
        conn = pika.BlockingConnection(self.params)
        try:
            pub = conn.channel()
            pub.confirm_delivery()
            fast = conn.channel()
            sub = conn.channel()  # for admin operations of callers (delete, bind)
            tx = conn.channel()
            tx.tx_select()
            tx.add_on_return_callback(self._on_return)
            declare_topology(pub)
            if self.setup is not None:
                self.setup(pub)
        except BaseException:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            raise
        self._conn, self._pub, self._fast, self._sub, self._tx = conn, pub, fast, sub, tx
        self.generation += 1
        self._fallback = _Tx(tx, self.generation)
        if self._orphans:  # their deliveries died with the old connection: publish, never ack
            self._fallback.publishes, self._orphans = self._orphans, []
            self._dirty[self._fallback] = None
        for c in list(self._consumers):
            try:
                self._start_consumer(c)
            except pe.ChannelClosedByBroker as e:  # its queue is gone or changed: drop it alone
                log.error("stopped consuming: the broker refused it after a reconnect (%s)", e)
                self._consumers.remove(c)
        self.connected = True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        conn = self._conn
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    # -- the I/O thread ----------------------------------------------------------
    def _wake(self) -> None:
        conn = self._conn
        if conn is None or self._woken or threading.current_thread() is self._thread:
            return  # the I/O thread runs the queued ops before it waits again
        self._woken = True
        try:
            conn.add_callback_threadsafe(lambda: None)
        except Exception:  # noqa: BLE001 - closed meanwhile: the loop notices
            pass

    def _loop(self) -> None:
        backoff = 0.5
        while not self.closed:
            try:
                if self._conn is None:
                    self._connect()
                    backoff = 0.5
                    log.warning("reconnected to %s", mask_url(self.url))
                    self._notify(True)
                self._woken = False
                self._run_ops()
                if self._conn.is_closed:  # type: ignore[union-attr]
                    # closed under a round of ops that committed nothing (pika would
                    # raise ValueError, not a connection error, on the next call)
                    raise pe.StreamLostError("the connection was closed")
                self._conn.process_data_events(time_limit=0.2)  # type: ignore[union-attr]
            except _LOST as e:
                if self.closed:
                    break
                if self.connected:
                    log.warning(
                        "lost the broker connection (%s); reconnecting until it is back",
                        type(e).__name__,
                    )
                    self._notify(False)
                self._drop()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self._drop()
        while self._ops:
            _, fut = self._ops.popleft()
            if not fut.done():
                fut.set_exception(BrokerError("the broker connection was closed"))

    def _notify(self, up: bool) -> None:
        if self.on_state is not None:
            try:
                self.on_state(up)
            except Exception:  # noqa: BLE001
                pass

    def _drop(self) -> None:
        self.connected = False
        for tx in self._dirty:  # acks die with the channel; publishes go out on the next one
            self._orphans.extend(tx.publishes)
        self._dirty.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if conn.is_open:
                    conn.close()
            except Exception:  # noqa: BLE001
                pass

    def _run_ops(self) -> None:
        while self._ops:
            fn, fut = self._ops[0]
            if fut.done():  # cancelled by the caller
                self._ops.popleft()
                continue
            try:
                result = fn()
            except _LOST:
                raise  # stays queued: retried after the reconnect
            except BaseException as e:  # noqa: BLE001
                self._ops.popleft()
                fut.set_exception(e)
                continue
            self._ops.popleft()
            fut.set_result(result)
        if self._dirty:
            self._commit_staged()

    def _commit_staged(self) -> None:
        """Commit every transaction with staged work (one broker round trip each)."""
        while self._dirty:
            tx = next(iter(self._dirty))
            if not tx.channel.is_open and tx is not self._fallback:
                # its consumer was cancelled: the broker requeued its deliveries
                self._stage_on(self._fallback, tx.publishes)
                tx.publishes, tx.bound, tx.acks, tx.rejects = [], [], [], []
            else:
                tx.commit()
            del self._dirty[tx]

    def _stage_on(self, tx: _Tx | None, publishes: list[_Publish]) -> None:
        if tx is not None and publishes:
            tx.publishes.extend(publishes)
            self._dirty[tx] = None

    # -- for other threads -------------------------------------------------------
    def _soon(self, op: Callable[[], None]) -> None:
        """Run ``op`` now in the I/O thread, else queue it there."""
        if threading.current_thread() is self._thread:
            op()
        else:
            self.call(op, wait=False)

    def call(self, fn: Callable[[], Any], wait: bool = True, timeout: float | None = None) -> Any:
        """Run ``fn`` in the I/O thread (retried after a reconnect if the connection drops).

        From the I/O thread itself (a consumer callback), ``wait=False`` queues the
        operation behind the ones already queued, keeping their order."""
        if wait and threading.current_thread() is self._thread:
            return fn()
        fut: Future = Future()
        if self.closed or (self._thread is not None and not self._thread.is_alive()):
            fut.set_exception(BrokerError("the broker connection is closed"))
            return fut.result() if wait else fut
        self._ops.append((fn, fut))
        self._wake()
        if not wait:
            return fut
        return fut.result(timeout)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        kind: str,
        key: bytes,
        persistent: bool = True,
        mandatory: bool = False,
        headers: dict[str, Any] | None = None,
        wait: bool = True,
        expiration: str | None = None,
        confirm: bool = True,
    ) -> Any:
        """Sign and publish ``body``; with ``wait`` returns once the broker confirmed it.

        ``confirm=False`` (best-effort messages: events, heartbeats) publishes on a
        channel without confirms, so the I/O thread never waits for the broker's
        answer; such a message is lost if the connection drops at that moment."""
        props = _properties(kind, key, body, headers, persistent, expiration)

        def op() -> None:
            ch = self._pub if confirm else self._fast
            ch.basic_publish(exchange, routing_key, body, props, mandatory=mandatory)

        return self.call(op, wait=wait)

    def stage_publish(
        self,
        delivery: Delivery,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        kind: str,
        key: bytes,
        headers: dict[str, Any] | None = None,
        bound: bool = False,
    ) -> None:
        """In the I/O thread only: sign ``body`` and stage it (persistent, mandatory) in
        the transaction of ``delivery``'s channel, to be committed at the end of this
        round of operations together with the acks staged there. If that channel is
        gone, it goes out without ack on another one (the broker redelivers the task,
        whose result then arrives twice: the client keeps the first) unless ``bound``:
        then it is dropped, as it is if the channel dies before the commit (a split
        chunk's parts: the chunk comes back whole, and is split again)."""
        tx = delivery.tx
        props = _properties(kind, key, body, headers, True, None)
        if bound:
            self.stage_forward(delivery, exchange, routing_key, body, props)
            return
        if tx is None or tx.generation != self.generation or not tx.channel.is_open:
            tx = self._fallback
        if tx is None:  # not connected yet
            self._orphans.append((exchange, routing_key, body, props))
            return
        self._stage_on(tx, [(exchange, routing_key, body, props)])

    def stage_forward(
        self, delivery: Delivery, exchange: str, routing_key: str, body: bytes, props: Any
    ) -> None:
        """In the I/O thread only: stage ``body`` with the ``props`` it came with (its
        sender's signature) in the transaction of ``delivery``'s channel, bound to it:
        dropped if that channel dies before the commit (the broker then redelivers
        ``delivery`` itself)."""
        tx = delivery.tx
        if tx is not None and tx.generation == self.generation and tx.channel.is_open:
            tx.bound.append((exchange, routing_key, body, props))
            self._dirty[tx] = None

    def _on_return(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        self.returned += 1
        if self.on_return is not None:
            self.on_return(props.type, method.routing_key)
            return
        log.error(
            "the broker could not route a %s message to %r (queue deleted?): it is lost",
            props.type,
            method.routing_key,
        )

    def publish_batch(
        self,
        messages: list[tuple[str, str, bytes, str]],
        *,
        key: bytes,
        wait: bool = True,
        headers: dict[str, Any] | None = None,
    ) -> Any:
        """Publish ``(exchange, routing_key, body, kind)`` messages, persistent, in one
        transaction: one round trip to the broker for the lot instead of one confirm
        each (about ten times faster for small messages). All or none are stored."""
        props = [_properties(kind, key, body, headers, True, None) for _, _, body, kind in messages]

        def op() -> None:
            ch = _unflushed(self._tx)
            for (exchange, routing_key, body, _), p in zip(messages, props):
                ch.basic_publish(exchange, routing_key, body, p, mandatory=True)
            self._tx.tx_commit()  # sends the lot, then waits for the broker once

        return self.call(op, wait=wait)

    def ack(self, delivery: Delivery) -> None:
        """Ack ``delivery`` (of a transactional consumer: in the transaction of this
        round, after what was staged before it)."""
        self._soon(lambda: self._settle(delivery, True, False))

    def reject(self, delivery: Delivery, requeue: bool = False) -> None:
        self._soon(lambda: self._settle(delivery, False, requeue))

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        ch = delivery.channel
        if delivery.generation != self.generation or ch is None or not ch.is_open:
            return  # that channel is gone: the broker redelivers the message
        tx = delivery.tx
        if tx is not None:
            tx.settle(delivery.tag, ack, requeue)
            self._dirty[tx] = None
        elif ack:
            ch.basic_ack(delivery.tag)
        else:
            ch.basic_reject(delivery.tag, requeue=requeue)

    def consume(
        self,
        setup: Callable[[Any], str],
        on_message: Callable[[Any, Delivery, Any, bytes], None],
        *,
        prefetch: int = 0,
        auto_ack: bool = False,
        exclusive: bool = False,
        transactional: bool = False,
        timeout: float | None = None,
    ) -> str:
        """Declare a queue with ``setup(channel) -> name`` and consume it (again after reconnects).

        ``transactional``: the channel is in tx mode; its acks and rejects, and what
        ``stage_publish`` puts there, are committed together at the end of each round."""
        c = _Consumer(setup, on_message, prefetch, auto_ack, exclusive, transactional)

        def op() -> str:
            try:
                queue = self._start_consumer(c)
            except pe.ChannelClosedByBroker as e:  # refused (queue missing, other arguments)
                raise BrokerError(f"the broker refused to consume: {e.reply_text}") from None
            self._consumers.append(c)
            return queue

        return self.call(op, timeout=timeout)

    def set_prefetch(self, queue: str, prefetch: int) -> None:
        """Let the consumers of ``queue`` hold ``prefetch`` unacked messages from now on
        (and after reconnects)."""

        def op() -> None:
            for c in self._consumers:
                if c.queue == queue and c.prefetch != prefetch:
                    c.prefetch = prefetch
                    if c.channel is not None and c.channel.is_open:
                        c.channel.basic_qos(prefetch_count=prefetch, global_qos=True)

        self.call(op, wait=False)

    def cancel_consumer(self, tag: str) -> None:
        def op() -> None:
            for c in [c for c in self._consumers if c.tag == tag]:
                self._consumers.remove(c)
                try:
                    c.channel.close()
                except Exception:  # noqa: BLE001
                    pass

        self.call(op)

    def _start_consumer(self, c: _Consumer) -> str:
        ch = c.channel = self._conn.channel()  # type: ignore[union-attr]
        queue = c.queue = c.setup(ch)
        # one consumer per channel: a channel-wide limit (RabbitMQ's "global") is the
        # consumer's, and unlike a per-consumer one it can be changed while consuming
        ch.basic_qos(prefetch_count=c.prefetch, global_qos=True)
        generation = self.generation
        tx = None
        if c.transactional:
            ch.tx_select()
            ch.add_on_return_callback(self._on_return)
            tx = _Tx(ch, generation)

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            tag = method.delivery_tag
            if tx is not None:
                tx.delivered(tag)
            delivery = Delivery(generation, tag, method.redelivered, ch, tx)
            try:
                c.on_message(props, delivery, method, body)
            except _LOST:
                raise
            except Exception:  # a bug of ours must not stop the connection's thread
                log.exception("error handling a message from %s", queue)

        c.tag = ch.basic_consume(queue, on_message, auto_ack=c.auto_ack, exclusive=c.exclusive)
        return queue

    @property
    def channel(self) -> Any:
        """The publishing channel; use only inside ``call``."""
        return self._pub

    @property
    def sub_channel(self) -> Any:
        return self._sub
