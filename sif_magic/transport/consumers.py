"""Consumers of one connection, on channels of their own or a shared one; started again
on every new connection.

A consumer has a channel of its own, or (``shared``: a kernel's result consumers)
the one channel the shared consumers of the connection have in common. A broker
error on a channel closes only that channel: it is logged (which queue, the broker's
reason, what becomes of the deliveries it held) and every consumer that was on it
starts again on a new channel of the same connection (the shared ones on one new
shared channel). A shared consumer being started when the broker closes that channel
for a reason not about its own queue starts once more on a new one (``add``). The
prefetch of a consumer on its own channel is channel-wide (RabbitMQ's "global" QoS:
the consumer is alone there), so it can be changed while consuming; shared ones
have none. Quorum queues refuse a channel-wide
prefetch (RabbitMQ 3.10 closes the whole connection: NOT_IMPLEMENTED): with
``channel_qos=False`` the prefetch is the consumer's own, and a new value takes effect
when the consumer starts again (after a reconnect). Changing it at once would mean
cancelling the consumer, and pika hands back what was on its way with
``requeue=True``: redelivered, those chunks would count as lost by a dead worker. What a consumer hands its callback
is a ``Delivery``: the tag, the connection generation it came on (a delivery of an
older connection is never acked: the broker redelivers it) and, for a transactional
consumer, its channel's ``_Tx``. A ``writable`` consumer gets its bodies as
``bytearray``s, assembled from the frames at the cost pika's ``bytes`` would have
(the arrays a client unpickles from a result body are built on that memory, and
must be writable: ``runner/oob.py``).

Threads: the transport's I/O thread only; it owns ``Consumers`` and every channel.
Callbacks run there too, and must not block on other threads' work. A channel's
close callback runs while pika dispatches: it only logs and queues the restart
(``later``), which runs in the next round of operations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika.channel
import pika.exceptions as pe

from ..errors import BrokerError
from .iothread import LOST_ERRORS
from .topology import refused_queue
from .tx import _Tx

log = logging.getLogger("sif_magic.broker")


@dataclass(frozen=True, eq=False)
class Delivery:
    """One message as a consumer got it. Compared and hashed by identity (each is made
    once, when its message arrives): a worker keys its held chunks by delivery, and a
    field-wise hash cost a microsecond at each of the several look-ups per call."""

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
    channel: Any = None  # its own (a broker error closes only it), or the shared one
    queue: str = ""
    tx: _Tx | None = None  # its channel's transaction (transactional consumers)
    closed_note: str = ""  # what becomes of what it held if the broker closes its channel
    writable: bool = False  # bodies as bytearrays (_WritableAssembler)
    shared: bool = False  # on the connection's shared channel (no prefetch, no tx, writable)


_TIMEOUT_HINT = (
    " (RabbitMQ's consumer_timeout: a delivery was held unacknowledged longer than the "
    "broker allows)"
)


class QueueRefused(BrokerError):
    """The broker refused to consume a queue for a reason about that queue (missing,
    declared with other arguments, locked): its consumer declared nothing."""


def _about(c: _Consumer, e: pe.ChannelClosedByBroker) -> bool:
    """Whether the broker's close ``e`` of ``c``'s channel names ``c``'s own queue."""
    return bool(c.queue) and c.queue in str(e.reply_text)


class _WritableAssembler(pika.channel.ContentFrameAssembler):
    """pika's assembly of a message's frames into its body, into a bytearray."""

    def _finish(self) -> Any:
        content = (self._method_frame, self._header_frame, bytearray().join(self._body_fragments))
        self._reset()
        return content


def _writable_bodies(ch: Any) -> None:
    """Have channel ``ch`` hand its consumer bytearray bodies (where pika lets us)."""
    impl = getattr(ch, "_impl", None)
    if isinstance(getattr(impl, "_content_assembler", None), pika.channel.ContentFrameAssembler):
        impl._content_assembler = _WritableAssembler()


class Consumers:
    """The consumers of one connection (``on_return``: the callback of a channel in tx
    mode for a message the broker could not route; ``later``: queue an operation for
    the next round; ``on_closed(queue, channel)``: the broker closed a consumer's
    channel, whose unacked deliveries it hands out again)."""

    def __init__(
        self,
        on_return: Callable[[Any, Any, Any, bytes], None],
        later: Callable[[Callable[[], Any]], None] | None = None,
        on_closed: Callable[[str, Any], None] | None = None,
        channel_qos: bool = True,
    ) -> None:
        self.on_return = on_return
        self.later = later
        self.on_closed = on_closed
        self.channel_qos = channel_qos  # prefetch per channel (classic), else per consumer
        self.consumers: list[_Consumer] = []
        self._shared: Any = None  # the channel of the shared consumers, on this connection
        # stopped with ``pause``: no new deliveries, channel kept until its own are settled
        self.paused: list[_Consumer] = []

    def add(self, c: _Consumer, conn: Any, generation: int) -> str:
        """Start ``c`` on ``conn`` and keep it (started again on the next connections).

        A shared consumer whose channel the broker closed for a reason not about its
        own queue (another consumer's refused operation, a delivery of another job held
        past RabbitMQ's consumer_timeout) starts once more on a new shared channel; a
        refusal about its queue raises ``QueueRefused`` (nothing of it was declared),
        any other a BrokerError (what its setup declared may be there)."""
        for attempt in (1, 2):
            try:
                queue = self.start(c, conn, generation)
                break
            except pe.ChannelClosedByBroker as e:  # refused (queue missing, other arguments)
                own = _about(c, e)
                if c.shared and not own and attempt == 1:
                    log.info("consuming %s on a new shared channel (%s)", c.queue, e.reply_text)
                    continue
                why = refused_queue(c.queue, e)  # a declare not waited for is refused here
                text = str(why) if isinstance(why, BrokerError) else (
                    f"the broker refused to consume {c.queue}: {e.reply_text}"
                )  # fmt: skip
                raise (QueueRefused(text) if own else BrokerError(text)) from None
        self.consumers.append(c)
        return queue

    def restart(self, conn: Any, generation: int) -> None:
        """Start every consumer again on the new connection ``conn``."""
        self.paused = []  # their channels died with the old connection
        self._shared = None
        for c in list(self.consumers):
            try:
                self.start(c, conn, generation)
            except pe.ChannelClosedByBroker as e:  # its queue is gone or changed: drop it alone
                log.error("stopped consuming: the broker refused it after a reconnect (%s)", e)
                self.consumers.remove(c)

    def set_prefetch(self, queue: str, prefetch: int) -> None:
        for c in self.consumers:
            if c.queue == queue and c.prefetch != prefetch:
                c.prefetch = prefetch
                if self.channel_qos and c.channel is not None and c.channel.is_open:
                    c.channel.basic_qos(prefetch_count=prefetch, global_qos=True)

    def stop(self, queues: set[str], done: Callable[[], None]) -> None:
        """Stop consuming ``queues`` for good, keeping the channels (what they hold is
        still acked there); ``done()`` once the broker confirmed every cancel, after
        which nothing more arrives. What arrives before that goes to the consumer's
        callback as usual: pika would reject it (requeued, it would come back marked
        redelivered, which a worker counts as a loss), so its bookkeeping is undone."""
        stopping = [c for c in self.consumers if c.queue in queues]
        # a consumer the broker cancelled (its queue was deleted) gets no cancel-ok:
        # pika drops a cancel of a tag it no longer has, and we would wait for nothing
        live = [
            c
            for c in stopping
            if c.channel is not None and c.channel.is_open and c.tag in c.channel._impl._consumers
        ]
        for c in stopping:
            self.consumers.remove(c)  # not started again after a reconnect
        left = [len(live)]

        def ok(_frame: Any) -> None:
            left[0] -= 1
            if left[0] == 0:
                done()

        for c in live:
            impl = c.channel._impl
            impl.basic_cancel(c.tag, callback=ok)
            getattr(impl, "_cancelled", set()).discard(c.tag)  # see the docstring
        if not live:
            done()

    def cancel(self, tag: str) -> None:
        for c in [c for c in self.consumers if c.tag == tag]:
            self.consumers.remove(c)
            try:
                if c.shared:
                    c.channel._impl.basic_cancel(c.tag)  # not waited for
                else:
                    c.channel.close()
            except Exception:  # noqa: BLE001
                pass

    def forget(self, queue: str) -> None:
        """Not to start the consumers of ``queue`` again (its queue is being deleted,
        which cancels them on the broker)."""
        self.consumers = [c for c in self.consumers if c.queue != queue]

    def _closed(self, ch: Any, conn: Any, generation: int, reason: Any) -> None:
        """In pika's dispatch: a consumer's channel closed (the shared one: every
        consumer on it). Only the broker's closes matter here (ours are cancels; a
        lost connection restarts every consumer)."""
        if not isinstance(reason, pe.ChannelClosedByBroker):
            return
        text = f"{reason.reply_code} {reason.reply_text}"
        hint = _TIMEOUT_HINT if "acknowledgement" in text and "timed out" in text else ""
        for c in [c for c in self.consumers if c.channel is ch]:
            log.warning(
                "the broker closed the channel of the consumer of %s: %s%s. %s; consuming %s "
                "again on a new channel",
                c.queue,
                text,
                hint,
                c.closed_note or "What it held unacknowledged goes back there, marked redelivered",
                c.queue,
            )
            if self.on_closed is not None:
                self.on_closed(c.queue, ch)
            if self.later is not None:
                self.later(lambda c=c: self._again(c, conn, generation))

    def _again(self, c: _Consumer, conn: Any, generation: int) -> None:
        if c not in self.consumers or not conn.is_open or (c.channel and c.channel.is_open):
            return  # cancelled, or that connection is gone (its successor starts c)
        try:
            self.start(c, conn, generation)
        except pe.ChannelClosedByBroker as e:
            if c.shared and not _about(c, e):
                return  # another's refusal: that close queued this again (``_closed``)
            log.error("stopped consuming %s: the broker refused it again (%s)", c.queue, e)
            self.consumers.remove(c)

    def pause(self, queue: str) -> None:
        """Stop the consumers of ``queue`` (``basic.cancel``) but keep their channels, so
        what they delivered is still settled there (a closed channel would hand it back
        marked redelivered: a worker death to the next worker); not restarted after a
        reconnect. Deliveries pika holds but has not dispatched yet go back unsettled."""
        for c in [c for c in self.consumers if c.queue == queue]:
            self.consumers.remove(c)
            self.paused.append(c)
            if c.channel is not None and c.channel.is_open:
                c.channel.basic_cancel(c.tag)

    def unsettled(self) -> int:
        """Deliveries of the transactional consumers (running or paused) on open
        channels that are neither settled nor staged to be."""
        return sum(
            len(c.tx.pending)
            for c in (*self.consumers, *self.paused)
            if c.tx is not None and c.channel is not None and c.channel.is_open
        )

    def _channel(self, c: _Consumer, conn: Any, generation: int) -> Any:
        """A new channel for ``c``, or the shared one (opened once per connection, and
        again after the broker closed it)."""
        if c.shared and self._shared is not None and self._shared.is_open:
            return self._shared
        ch = conn.channel()
        ch._impl.add_on_close_callback(  # pika's own channel: BlockingChannel offers none
            lambda _ch, reason: self._closed(ch, conn, generation, reason)
        )
        if c.writable or c.shared:
            _writable_bodies(ch)
        if c.shared:
            self._shared = ch
        return ch

    def start(self, c: _Consumer, conn: Any, generation: int) -> str:
        ch = c.channel = self._channel(c, conn, generation)
        queue = c.queue = c.setup(ch)
        # one consumer per channel: a channel-wide limit (RabbitMQ's "global") is the
        # consumer's, and unlike a per-consumer one it can be changed while consuming
        if c.prefetch and not c.shared:  # (0, no limit, is what a new channel has)
            ch.basic_qos(prefetch_count=c.prefetch, global_qos=self.channel_qos)
        tx = None
        if c.transactional and not c.shared:
            ch.tx_select()
            ch.add_on_return_callback(self.on_return)
            tx = _Tx(ch, generation)
        c.tx = tx

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            tag = method.delivery_tag
            if tx is not None:
                tx.delivered(tag)
            delivery = Delivery(generation, tag, method.redelivered, ch, tx)
            try:
                c.on_message(props, delivery, method, body)
            except LOST_ERRORS:
                raise
            except Exception:  # a bug of ours must not stop the connection's thread
                log.exception("error handling a message from %s", queue)

        c.tag = ch.basic_consume(queue, on_message, auto_ack=c.auto_ack, exclusive=c.exclusive)
        return queue
