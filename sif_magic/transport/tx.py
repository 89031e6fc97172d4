"""Transactional channel bookkeeping: what waits for a channel's next commit.

A consumer may be *transactional*: its channel is in tx mode, and what a round of
operations staged on it (publishes, acks, rejects) is committed at the end of the
round as one AMQP transaction, so a result and the ack of the task it finishes are
stored together or not at all, in one broker round trip however many calls the
round carries. ``_Tx`` is one such channel; ``Staging`` is every transaction of a
connection with work staged, plus what a lost connection leaves to send again.

Threads: the transport's I/O thread only; it owns every channel, every ``_Tx`` and
the ``Staging``.
"""

from __future__ import annotations

import collections
from typing import Any

import pika
import pika.exceptions as pe

from .refusals import Refusals

_Publish = tuple[str, str, bytes, pika.BasicProperties]  # exchange, routing key, body, properties


def _unflushed(ch: Any) -> Any:
    """The channel under a BlockingChannel, whose publish and ack only queue frames:
    pika's blocking ones each flush the socket (a send per message). The next
    synchronous call (a commit) sends what is queued in one go."""
    return getattr(ch, "_impl", ch)


class _Tx:
    """A channel in tx mode and what waits for its next commit (I/O thread only).

    It also tracks which of its deliveries are not settled yet, so that one
    ``basic.ack`` with ``multiple`` can settle a run of finished deliveries, and
    so that a delivery settled twice is settled once (a second ack of a tag
    would make the broker close the channel)."""

    def __init__(self, channel: Any, generation: int) -> None:
        self.channel = channel
        self.generation = generation
        self.unacked: collections.deque[int] = collections.deque()  # delivered, in tag order
        self.pending: set[int] = set()  # delivered and not settled (nor staged to be)
        # tags of basic.get answers: never the tag of a ``multiple`` ack (see ack_frames)
        self.gets: set[int] = set()
        self.publishes: list[_Publish] = []
        # publishes that stand or fall with this channel's acks (a split chunk's parts):
        # dropped, not re-sent, if the channel dies before the commit
        self.bound: list[_Publish] = []
        self.acks: list[int] = []
        self.rejects: list[tuple[int, bool]] = []  # (tag, requeue)

    def delivered(self, tag: int, got: bool = False) -> None:
        """Delivery ``tag`` arrived (``got``: the answer of a ``basic.get``)."""
        if got:
            self.gets.add(tag)
        self.unacked.append(tag)
        self.pending.add(tag)
        if len(self.unacked) > 1 and tag < self.unacked[-2]:
            # a consumer delivery handed on after a basic.get on this channel got its
            # answer (a later tag): keep tag order, or ``multiple`` would ack it
            self.unacked = collections.deque(sorted(self.unacked))

    def settle(self, tag: int, ack: bool = True, requeue: bool = False) -> None:
        if tag not in self.pending:
            return  # settled already (or not ours)
        self.pending.discard(tag)
        if ack:
            self.acks.append(tag)
        else:
            self.rejects.append((tag, requeue))

    def ack_frames(self) -> tuple[int, list[int]]:
        """The staged acks as (tag to ack with ``multiple``, or 0; tags to ack one by one,
        none of them covered by that ``multiple``).

        ``multiple`` covers the longest run of the oldest deliveries that are all
        settled or settling now; a finished delivery behind one still running is
        acked alone (``multiple`` would settle the running one too). Its tag is
        always a consumer delivery's, never a ``basic.get`` answer's: pika may hold
        consumer deliveries with lower tags that arrived while it waited for the
        get's answer and are not handed on yet, and a ``multiple`` up to the get's
        tag would ack them unseen (their chunk lost, and their own ack later closes
        the channel: "unknown delivery tag"). Consumer deliveries are handed on in
        order, so every tag below a consumer delivery's is known here."""
        finishing = set(self.acks)
        self.acks = []
        multi = 0
        unacked, pending = self.unacked, self.pending
        while unacked and unacked[0] not in pending:
            tag = unacked.popleft()
            if tag in finishing and tag not in self.gets:
                multi = tag
        if len(unacked) > 2 * len(pending) + 64:  # settled ones pile up behind a slow one
            self.unacked = collections.deque(t for t in unacked if t in pending)
        self.gets -= finishing
        return multi, sorted(t for t in finishing if t > multi)

    def commit(self) -> None:
        """Publish, reject, ack and commit what is staged: all of it is stored, or none."""
        ch = _unflushed(self.channel)
        for exchange, routing_key, body, props in self.publishes + self.bound:
            ch.basic_publish(exchange, routing_key, body, props, mandatory=True)
        rejects, self.rejects = self.rejects, []
        multi, singles = self.ack_frames()
        for tag, requeue in rejects:  # before a multiple ack, which would settle them
            ch.basic_reject(tag, requeue=requeue)
        if multi:
            ch.basic_ack(multi, multiple=True)
        for tag in singles:
            ch.basic_ack(tag)
        self.channel.tx_commit()  # sends the lot, then waits for the broker once
        self.publishes, self.bound = [], []


class Staging:
    """What the transactions of one connection commit at the end of this round.

    Owns ``fallback`` (the connection's own tx channel: publishes whose consumer
    channel is gone go out there, without an ack), ``dirty`` (the transactions with
    staged work, in staging order) and ``orphans`` (publishes staged on a connection
    that was lost before its commit: they go out on the next connection; their acks
    die with the old one, and the broker redelivers those deliveries)."""

    def __init__(self, refusals: Refusals | None = None) -> None:
        self.refusals = refusals or Refusals()  # a message the broker keeps refusing: dropped
        self.fallback: _Tx | None = None
        self.dirty: dict[_Tx, None] = {}
        self.orphans: list[_Publish] = []

    def opened(self, channel: Any, generation: int) -> None:
        """A new connection, whose own tx channel is ``channel``: the orphans go there."""
        self.fallback = _Tx(channel, generation)
        if self.orphans:
            self.fallback.publishes, self.orphans = self.orphans, []
            self.dirty[self.fallback] = None

    def lost(self) -> None:
        """The connection is gone: acks die with its channels; publishes go out on the next."""
        for tx in self.dirty:
            self.orphans.extend(tx.publishes)
        self.dirty.clear()

    def target(self, tx: _Tx | None, generation: int) -> _Tx | None:
        """``tx`` if its channel lives, else the fallback (None: not connected)."""
        if tx is None or tx.generation != generation or not tx.channel.is_open:
            return self.fallback
        return tx

    def publish(self, tx: _Tx | None, generation: int, message: _Publish) -> None:
        """Stage ``message`` in ``tx`` (a delivery's transaction), or, if that channel is
        gone, on the fallback channel (or, not connected yet, for the next connection)."""
        tx = self.target(tx, generation)
        if tx is None:
            self.orphans.append(message)
            return
        tx.publishes.append(message)
        self.dirty[tx] = None

    def bind(self, tx: _Tx | None, generation: int, message: _Publish) -> None:
        """Stage ``message`` in ``tx`` bound to its acks: dropped if ``tx`` is gone, or
        dies before the commit (never sent without them)."""
        if tx is not None and tx.generation == generation and tx.channel.is_open:
            tx.bound.append(message)
            self.dirty[tx] = None

    def settle(self, tx: _Tx, tag: int, ack: bool, requeue: bool) -> None:
        tx.settle(tag, ack, requeue)
        self.dirty[tx] = None

    def commit(self) -> None:
        """Commit every transaction with staged work (one broker round trip each)."""
        while self.dirty:
            tx = next(iter(self.dirty))
            if not tx.channel.is_open and tx is not self.fallback:
                # its consumer was cancelled: the broker requeued its deliveries
                if self.fallback is not None and tx.publishes:
                    self.fallback.publishes.extend(tx.publishes)
                    self.dirty[self.fallback] = None
                tx.publishes, tx.bound, tx.acks, tx.rejects = [], [], [], []
            else:
                sent = tx.publishes + tx.bound
                try:
                    tx.commit()
                except pe.ChannelClosedByBroker as e:  # refused: the connection reconnects
                    tx.publishes = self.refusals.messages_refused(tx.publishes, e)
                    tx.bound = self.refusals.messages_refused(tx.bound, e)
                    raise
                if sent:
                    self.refusals.committed(sent)
            del self.dirty[tx]
