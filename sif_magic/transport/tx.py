"""Transactional channel bookkeeping: what waits for a channel's next commit.

Threads: the transport's I/O thread only (it owns every channel and every ``_Tx``).
"""

from __future__ import annotations

import collections
from typing import Any

import pika

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
        self.publishes: list[_Publish] = []
        # publishes that stand or fall with this channel's acks (a split chunk's parts):
        # dropped, not re-sent, if the channel dies before the commit
        self.bound: list[_Publish] = []
        self.acks: list[int] = []
        self.rejects: list[tuple[int, bool]] = []  # (tag, requeue)

    @property
    def staged(self) -> bool:
        return bool(self.publishes or self.bound or self.acks or self.rejects)

    def delivered(self, tag: int) -> None:
        self.unacked.append(tag)
        self.pending.add(tag)

    def settle(self, tag: int, ack: bool = True, requeue: bool = False) -> None:
        if tag not in self.pending:
            return  # settled already (or not ours)
        self.pending.discard(tag)
        if ack:
            self.acks.append(tag)
        else:
            self.rejects.append((tag, requeue))

    def ack_frames(self) -> tuple[int, list[int]]:
        """The staged acks as (tag to ack with ``multiple``, or 0; tags to ack one by one).

        ``multiple`` covers the longest run of the oldest deliveries that are all
        settled or settling now; a finished delivery behind one still running is
        acked alone (``multiple`` would settle the running one too)."""
        finishing = set(self.acks)
        self.acks = []
        multi = 0
        unacked, pending = self.unacked, self.pending
        while unacked and unacked[0] not in pending:
            tag = unacked.popleft()
            if tag in finishing:
                finishing.discard(tag)
                multi = tag
        if len(unacked) > 2 * len(pending) + 64:  # settled ones pile up behind a slow one
            self.unacked = collections.deque(t for t in unacked if t in pending)
        return multi, sorted(finishing)

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
