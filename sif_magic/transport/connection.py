"""``Connection``: what sif_magic does with RabbitMQ, on a connection owned by one I/O thread.

Every method here is an operation run on the I/O thread by the one rule of
``iothread`` (inline when called there, else queued in order and woken).
``publish()`` uses confirms (or, for best-effort messages, a channel without
them); ``publish_batch()`` one transaction for many messages. A consumer may be
*transactional* (``tx``): what a round of operations staged on its channel
(``stage_publish()``, ``stage_forward()``, ``ack()``, ``reject()``) is committed at
the end of the round as one AMQP transaction. When the connection drops, the I/O
thread reconnects, declares the topology again, re-creates the consumers, and
sends again the staged publishes that had not been committed; deliveries of the old
connection are never acked (the broker redelivers them). pika's exceptions stop
here: callers see BrokerError. Every message published here is signed when it is
made (``_properties``), with a fresh message id and time, re-publishes of a
worker included; only ``stage_forward`` sends a message on as it came. A body
may be given as the list of its pieces (``protocol.pack_parts``): it is signed
and sent piece by piece, never joined (``parts``).

Threads and ownership: any thread calls the public methods (``stage_publish`` and
``stage_forward`` only on the I/O thread: from a consumer callback or an
operation). The I/O thread alone touches the channels (``_pub``, ``_fast``,
``_sub``, ``_tx``), the ``Staging`` and the ``Consumers``; ``returned`` is written
there. Standard library and pika only: the worker uses this.

``queue_type`` (classic or quorum, ``protocol.names``) is the type of the durable
queues this side declares; with quorum queues, consumers' prefetch is per consumer
(RabbitMQ has no channel-wide one for them: see ``consumers``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pika
import pika.exceptions as pe

from .. import protocol
from .connect import MIB, broker_max_message, parameters_list
from .consumers import Consumers, Delivery, _Consumer
from .iothread import IOThread
from .parts import wire
from .topology import declare_routed_queue, declare_topology
from .tx import Staging, _unflushed

log = logging.getLogger("sif_magic.broker")


def _properties(
    kind: str,
    key: bytes,
    body: bytes | list[Any],
    headers: dict[str, Any] | None,
    persistent: bool,
    expiration: str | None,
) -> pika.BasicProperties:
    """Signed properties of a new message of ours: every call mints a fresh message id
    and the time now, both covered by the signature (``protocol.headers_for``)."""
    signed = protocol.headers_for(key, kind, body, **(headers or {}))
    return pika.BasicProperties(
        type=kind,
        headers=signed,
        delivery_mode=2 if persistent else 1,
        app_id="sif_magic",
        timestamp=signed[protocol.HDR_TIME] // 1000,
        expiration=expiration,
    )


class Connection(IOThread):
    """A RabbitMQ connection run by its own thread, reconnecting as needed.

    ``scope`` is the key id whose exchanges and queues this side uses (declared on
    every new connection: ``topology``); ``setup(channel)`` declares what else this side
    needs then; ``on_state(up)`` hears of losing and regaining the broker;
    ``on_return(kind, routing_key)`` of a staged message the broker could not route;
    ``on_channel_closed(queue, channel)`` of a consumer's channel the broker closed
    (logged here; the consumer starts again on a new channel); ``on_events_done()``
    runs on the I/O thread once the consumers' callbacks have had what arrived (a
    burst of deliveries), so a consumer can hand them on together."""

    def __init__(
        self,
        url: str,
        *,
        scope: str,
        name: str = "sif_magic",
        connect_timeout: float = 5.0,
        ca_file: str = "",
        queue_type: str = "classic",
        setup: Callable[[Any], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_return: Callable[[str, str], None] | None = None,
        on_channel_closed: Callable[[str, Any], None] | None = None,
        on_events_done: Callable[[], None] | None = None,
        max_message: int = 0,
        require_tls: bool = False,
    ) -> None:
        if queue_type not in protocol.QUEUE_TYPES:
            raise ValueError(f"queue_type {queue_type!r}: one of {protocol.QUEUE_TYPES}")
        params = parameters_list(url, connect_timeout, ca_file, require_tls)
        for p in params:
            p.client_properties = {"connection_name": name}
        super().__init__(url, params, name, on_state)
        self.queue_type = queue_type
        self.scope = scope  # the key id whose exchanges and queues this side uses
        self.exchange = protocol.direct_exchange(scope)  # tasks and results go through it
        self.setup = setup
        self.on_return = on_return
        self.on_events_done = on_events_done
        self.returned = 0  # messages the broker could not route (mandatory, transactional)
        self._site_limit = max_message  # the site's max_message_size, if set (bytes)
        self._max_message = max_message or 16 * MIB
        self._pub: Any = None  # confirms on
        self._fast: Any = None  # no confirms: best-effort messages never wait for the broker
        self._sub: Any = None  # for admin operations of callers (delete, bind)
        self._tx: Any = None  # tx mode: publish_batch, and staged publishes without an ack
        self._probe: Any = None  # passive declares (``_exists``); closed by a "no"
        self._ahead: Any = None  # declarations made ahead (``prepare``)
        self._ahead_waiting: list[Callable[[bool], None]] = []  # their ``done``s
        self._staging = Staging(self.refusals)
        # quorum queues refuse a channel-wide prefetch (and close the connection)
        self._consumers = Consumers(
            self._on_return,
            self.later,
            on_channel_closed,
            channel_qos=queue_type == "classic",
        )

    # -- the I/O thread's hooks ----------------------------------------------------------
    def _open(self, conn: pika.BlockingConnection, generation: int) -> None:
        pub = conn.channel()
        pub.confirm_delivery()
        fast = conn.channel()
        sub = conn.channel()
        tx = conn.channel()
        tx.tx_select()
        tx.add_on_return_callback(self._on_return)
        limits = (broker_max_message(conn._impl.server_properties), self._site_limit)
        self._max_message = min(n for n in limits if n)
        declare_topology(pub, self.scope, self.queue_type)
        if self.setup is not None:
            self.setup(pub)
        self._pub, self._fast, self._sub, self._tx = pub, fast, sub, tx
        self._staging.opened(tx, generation)
        self._consumers.restart(conn, generation)

    def _lost(self) -> None:
        self._probe = None
        self._ahead_failed()
        self._staging.lost()

    def _end_round(self) -> None:
        if self._staging.dirty:
            self._staging.commit()

    def _events_done(self) -> None:
        if self.on_events_done is not None:
            self.on_events_done()

    # -- publishing ----------------------------------------------------------------------
    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes | list[Any],
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
        answer; such a message is lost if the connection drops at that moment. It is
        signed when it first goes out (a control message queued while the broker is
        down is not stale when it arrives), and keeps its id if sent again."""
        signed: list[pika.BasicProperties] = []

        def op() -> None:
            if not signed:
                signed.append(_properties(kind, key, body, headers, persistent, expiration))
            ch = self._pub if confirm else self._fast
            ch.basic_publish(exchange, routing_key, wire(body), signed[0], mandatory=mandatory)

        return self.call(op, wait=wait)

    def publish_batch(
        self,
        messages: list[tuple[str, str, Any, str]],
        *,
        key: bytes,
        wait: bool = True,
        headers: dict[str, Any] | None = None,
        after: Future | None = None,
    ) -> Any:
        """Publish ``(exchange, routing_key, body, kind)`` messages, persistent, in one
        transaction: one round trip to the broker for the lot instead of one confirm
        each (about ten times faster for small messages). All or none are stored.
        ``after``: the Future of an operation queued before this one (a consume with
        ``wait=False``); if it failed, nothing is published and this raises its error."""
        props = [_properties(kind, key, body, headers, True, None) for _, _, body, kind in messages]

        def op() -> None:
            if after is not None and after.done() and after.exception() is not None:
                raise after.exception()  # type: ignore[misc]
            ch = _unflushed(self._tx)
            for (exchange, routing_key, body, _), p in zip(messages, props):
                ch.basic_publish(exchange, routing_key, wire(body), p, mandatory=True)
            self._tx.tx_commit()  # sends the lot, then waits for the broker once

        return self.call(op, wait=wait)

    def publish_on(self, ch: Any, routing_key: str, body: bytes, *, kind: str, key: bytes) -> None:
        """On the I/O thread only: sign ``body`` and publish it (persistent) through the
        scope's direct exchange on channel ``ch``, after what went there before it (a
        queue declared without waiting: the message lands in it, ahead of anything a
        later operation sends there)."""
        props = _properties(kind, key, body, None, True, None)
        _unflushed(ch).basic_publish(self.exchange, routing_key, body, props)

    def stage_publish(
        self,
        delivery: Delivery,
        exchange: str,
        routing_key: str,
        body: bytes | list[Any],
        *,
        kind: str,
        key: bytes,
        headers: dict[str, Any] | None = None,
        bound: bool = False,
    ) -> None:
        """On the I/O thread only: sign ``body`` and stage it (persistent, mandatory) in
        the transaction of ``delivery``'s channel, to be committed at the end of this
        round of operations together with the acks staged there. If that channel is
        gone, it goes out without ack on another one (the broker redelivers the task,
        whose result then arrives twice: the client keeps the first) unless ``bound``:
        then it is dropped, as it is if the channel dies before the commit (a split
        chunk's parts: the chunk comes back whole, and is split again)."""
        props = _properties(kind, key, body, headers, True, None)
        message = (exchange, routing_key, wire(body), props)
        if bound:
            self._staging.bind(delivery.tx, self.generation, message)
        else:
            self._staging.publish(delivery.tx, self.generation, message)

    def stage_forward(
        self, delivery: Delivery, exchange: str, routing_key: str, body: bytes, props: Any
    ) -> None:
        """On the I/O thread only: stage ``body`` with the ``props`` it came with (its
        sender's signature) in the transaction of ``delivery``'s channel, bound to it:
        dropped if that channel dies before the commit (the broker then redelivers
        ``delivery`` itself)."""
        self._staging.bind(delivery.tx, self.generation, (exchange, routing_key, body, props))

    def stage_get(self, delivery: Delivery | None, queue: str) -> Delivery | None:
        """On the I/O thread only: take the next message of ``queue`` (``basic.get``) on
        the channel where ``stage_publish(delivery, ...)`` stages (``None``: the
        connection's own tx channel), unacked; its ``ack()`` then goes in that
        transaction. None if the queue is empty (or missing, or not connected)."""
        tx = self._staging.target(delivery.tx if delivery is not None else None, self.generation)
        if tx is None:
            return None
        try:
            method, _props, _body = tx.channel.basic_get(queue, auto_ack=False)
        except pe.ChannelClosedByBroker as e:  # no such queue: that channel is gone now
            log.warning("could not take the message of %s: %s", queue, e.reply_text)
            return None
        if method is None:
            return None
        tx.delivered(method.delivery_tag, got=True)
        return Delivery(tx.generation, method.delivery_tag, False, tx.channel, tx)

    def commit_now(self) -> None:
        """On the I/O thread only: commit what is staged now, not at the end of the round."""
        self._staging.commit()

    def prepare(self, declare: Callable[[Any], None], done: Callable[[bool], None]) -> None:
        """Declare ahead, never waiting: ``declare(channel)`` runs on the I/O thread (in
        the next round) on a channel of its own, with methods not waited for
        (``topology``'s ``wait=False``); ``done(True)`` runs there once the broker has
        answered them all, ``done(False)`` if it refused one (that channel alone closes)
        or the connection was lost first."""

        def op() -> None:
            ch = self._ahead_channel()
            declare(ch)
            self._ahead_waiting.append(done)
            ch._impl.basic_qos(prefetch_count=0, callback=lambda _frame: self._ahead_done(done))

        self.later(op)

    def undo_ahead(self, undo: Callable[[Any], None], timeout: float | None = None) -> None:
        """Undo what ``prepare`` declared: ``undo(channel)`` on its channel, after what
        was sent there before (the broker runs one channel's methods in order, not
        two channels'). ``timeout``: waited for that long, else not waited for."""

        def op() -> None:
            undo(self._ahead_channel())

        if timeout is None:
            self.post(op)
        else:
            self.call(op, timeout=timeout)

    def _ahead_channel(self) -> Any:
        ch = self._ahead
        if ch is None or not ch.is_open:
            ch = self._ahead = self._conn.channel()  # type: ignore[union-attr]
            ch._impl.add_on_close_callback(lambda _ch, _why: self._ahead_failed())
        return ch

    def _ahead_done(self, done: Callable[[bool], None]) -> None:
        if done in self._ahead_waiting:
            self._ahead_waiting.remove(done)
            done(True)

    def _ahead_failed(self) -> None:
        waiting, self._ahead_waiting = self._ahead_waiting, []
        self._ahead = None
        for done in waiting:
            done(False)

    def declare_queue(self, name: str, arguments: dict[str, Any]) -> None:
        """On the I/O thread only: a durable queue ``name`` with ``arguments``, bound to
        the scope's direct exchange under its own name (``topology``)."""
        declare_routed_queue(self._pub, self.scope, name, arguments)

    def delete_if_empty(self, name: str) -> None:
        """Delete queue ``name`` if it is empty, on a channel opened for it (the broker
        closes the channel of a delete it refuses: not empty, or gone). Not for quorum
        queues: RabbitMQ refuses ``if_empty`` there with a connection error (540
        NOT_IMPLEMENTED); a claim queue of that type goes by its ``x-expires``."""
        if self.queue_type != "classic":
            return

        def op() -> None:
            ch = self._conn.channel()  # type: ignore[union-attr]
            try:
                ch.queue_delete(name, if_empty=True)
            except pe.ChannelClosedByBroker:
                pass
            finally:
                if ch.is_open:
                    ch.close()

        self.later(op)

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

    # -- settling deliveries -------------------------------------------------------------
    def ack(self, delivery: Delivery) -> None:
        """Ack ``delivery`` (of a transactional consumer: in the transaction of this
        round, after what was staged before it)."""
        self.post(lambda: self._settle(delivery, True, False))

    def reject(self, delivery: Delivery, requeue: bool = False) -> None:
        self.post(lambda: self._settle(delivery, False, requeue))

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        ch = delivery.channel
        if delivery.generation != self.generation or ch is None or not ch.is_open:
            return  # that channel is gone: the broker redelivers the message
        if delivery.tx is not None:
            self._staging.settle(delivery.tx, delivery.tag, ack, requeue)
        elif ack:
            ch.basic_ack(delivery.tag)
        else:
            ch.basic_reject(delivery.tag, requeue=requeue)

    # -- consuming and queues ------------------------------------------------------------
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
        closed_note: str = "",
        writable: bool = False,
        shared: bool = False,
        wait: bool = True,
    ) -> Any:
        """Declare a queue with ``setup(channel) -> name`` and consume it (again after reconnects).

        ``transactional``: the channel is in tx mode; its acks and rejects, and what
        ``stage_publish`` puts there, are committed together at the end of each round.
        ``closed_note``: what becomes of what it held, for the log line when the broker
        closes its channel (it consumes again on a new one). ``writable``: bodies come
        as bytearrays (``consumers``). ``shared``: on the connection's shared channel
        (opened once, not per consumer: no prefetch, no tx; bodies writable); a
        broker's refusal there closes it for all its consumers, which start again on
        a new one. Returns the queue's name, or (``wait=False``) a Future of it: an
        operation queued after this one runs once the broker answered the consume."""
        c = _Consumer(setup, on_message, prefetch, auto_ack, exclusive, transactional)
        c.closed_note = closed_note
        c.writable = writable
        c.shared = shared
        op = lambda: self._consumers.add(c, self._conn, self.generation)  # noqa: E731
        return self.call(op, timeout=timeout) if wait else self.call(op, wait=False)

    def forget_consumer(self, queue: str) -> None:
        """On the I/O thread: never start the consumers of ``queue`` again (the queue is
        about to be deleted, which cancels them)."""
        self._consumers.forget(queue)

    def set_prefetch(self, queue: str, prefetch: int) -> None:
        """Let the consumers of ``queue`` hold ``prefetch`` unacked messages from now on
        (and after reconnects; with quorum queues: from the next reconnect on)."""
        self.call(lambda: self._consumers.set_prefetch(queue, prefetch), wait=False)

    def stop_consuming(self, queues: set[str]) -> Any:
        """Stop the consumers of ``queues`` (their channels stay, for acks); a Future
        done once nothing more can arrive from them."""
        stopped: Future = Future()
        self.call(
            lambda: self._consumers.stop(queues, lambda: stopped.set_result(None)), wait=False
        )
        return stopped

    def pause_consuming(self, queue: str, timeout: float | None = None) -> None:
        """Take no more deliveries from ``queue``; those taken are still settled on
        their channels (``Consumers.pause``)."""
        self.call(lambda: self._consumers.pause(queue), timeout=timeout)

    def unsettled(self, timeout: float | None = None) -> int:
        """How many deliveries of transactional consumers wait to be settled."""
        return self.call(self._consumers.unsettled, timeout=timeout)

    def cancel_consumer(self, tag: str) -> None:
        self.call(lambda: self._consumers.cancel(tag))

    def queue_exists(self, name: str, timeout: float | None = None) -> bool:
        """Whether queue ``name`` exists: a passive declare on a channel of its own (a
        failed one makes the broker close its channel: ``_exists``)."""
        return self._exists(lambda ch: ch.queue_declare(name, passive=True), timeout)

    def exchange_exists(self, name: str, timeout: float | None = None) -> bool:
        """Whether exchange ``name`` exists (as ``queue_exists``)."""
        return self._exists(lambda ch: ch.exchange_declare(name, passive=True), timeout)

    def _exists(self, declare: Callable[[Any], Any], timeout: float | None) -> bool:
        """A passive declare on the connection's probe channel, kept open while the
        answers are yes (a worker asks once per new job: one round trip, not three);
        a no closes it on the broker's side, and the next question opens another."""

        def op() -> bool:
            ch = self._probe
            if ch is None or not ch.is_open:
                ch = self._probe = self._conn.channel()  # type: ignore[union-attr]
            try:
                declare(ch)
                return True
            except pe.ChannelClosedByBroker:
                self._probe = None
                return False

        return self.call(op, timeout=timeout)

    @property
    def max_message(self) -> int:
        """The largest message body the broker takes (bytes): by its version and the
        site's setting, lowered once it refused a message for its size, naming its limit."""
        learned = self.refusals.size_limit
        return min(self._max_message, learned) if learned else self._max_message

    @property
    def channel(self) -> Any:
        """The publishing channel; use only inside ``call``."""
        return self._pub

    @property
    def sub_channel(self) -> Any:
        """A channel for callers' admin operations (delete, bind); only inside ``call``."""
        return self._sub
