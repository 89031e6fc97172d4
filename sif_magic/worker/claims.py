"""Claims: chunks a worker holds longer than the broker lets a delivery wait unacked.

RabbitMQ closes a channel that holds a delivery unacked longer than its
``consumer_timeout`` (30 min by default, often less; 3.10 has no per-queue
``x-consumer-timeout``), and a worker acks a chunk only with its results. So a
delivery held ``claim_after`` seconds is settled early, one transaction each:

- not started (it waits for a slot, or is *parked*: a chunk the worker will not
  start now): *handed back*, republished to the queue it came from (re-signed,
  the same ``sif-lost`` count: not marked redelivered) and acked; another worker
  may take it;
- started: *claimed*, its body published to a claim queue of its own
  (``protocol.claim_queue``: durable, one message whose TTL is the lease,
  dead-lettered back to the queue it came from) and the delivery acked. Every
  lease/3 the worker renews it (get + ack + a fresh copy); its last results go
  in one transaction with the get + ack of the claim message, so the results
  and the end of the claim are stored together; the empty queue is deleted.

A worker killed holding a claim stops renewing it: the message expires and comes
back to its queue with an ``x-death`` header naming the claim queue, and the
worker that receives it treats it as a redelivered chunk (``redelivery``: the
loss counted once, the chunk split). Nothing is lost when a worker dies.

The window: a claimed chunk no longer counts against the channel's prefetch, so
the broker would send more than the slots can start. The task consumer's
prefetch shrinks with the slots claimed chunks take (never 0: that means no
limit); what waits anyway is handed back at ``claim_after``. Not basic.cancel:
pika nacks what arrives between a cancel and its answer (requeued, marked
redelivered: counted as a loss). A retry chunk that comes while a claimed retry
chunk runs is parked, so the retry queue stays one suspect call at a time.

Threads: ``hold``, ``settle``, ``hand_back`` and the broker operations on the I/O
thread (consumer callbacks, the outbox's flush, operations queued to it);
``finished`` on the pool's dispatcher thread; ``tick`` on the worker's main
thread. ``_held`` and every ``Held`` are guarded by ``_lock``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..protocol import QUEUED, SKIP, Task
from ..runner.chunk import Chunk

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("sif_magic.worker")

HELD, DECIDING, CLAIMED, SETTLED = "held", "deciding", "claimed", "settled"

# A chunk held this long is claimed or handed back: far below any consumer_timeout a
# site sets (RabbitMQ checks it about once a minute, so a delivery may time out at any
# age above it), and long enough that quick chunks never pay for it. A claim's lease:
# how soon a dead worker's chunk runs again (and how often a claim is renewed: lease/3).
CLAIM_AFTER = 3.0
LEASE = 60.0
# what the log says when the broker closes a task consumer's channel anyway
CHUNKS_HELD = (
    "The chunks it held unacknowledged go back there, marked redelivered (whoever takes "
    "one counts a loss; calls running here finish, and their results go out). Chunks "
    "held longer than --claim-after seconds are claimed, so keep that below the "
    "broker's consumer_timeout"
)


@dataclass(eq=False)
class Held:
    """A delivery this worker holds: the task, where it came from, what became of it."""

    delivery: Any
    task: Task
    body: bytes
    source: str  # the queue it came from (where it goes back)
    chunk: Chunk | None  # None: parked (never given to the pool)
    note: str = ""  # why it is parked (told to the job when it goes back)
    since: float = field(default_factory=time.time)
    state: str = HELD
    claim: str = ""  # its claim queue, while it has one
    renew_at: float = 0.0
    finished: set[int] = field(default_factory=set)  # calls with a final result


def expired_claim(headers: dict | None) -> bool:
    """Whether a message came back from a claim queue whose lease ran out."""
    deaths = (headers or {}).get("x-death") or []
    for d in deaths if isinstance(deaths, list) else ():
        queue = d.get("queue", "") if isinstance(d, dict) else ""
        queue = queue.decode() if isinstance(queue, bytes) else str(queue)
        if protocol.is_claim_queue(queue):
            return True
    return False


class Claims:
    def __init__(self, w: Worker, claim_after: float, lease: float) -> None:
        if claim_after <= 0 or lease <= 0:
            raise ValueError("--claim-after and --lease must be positive")
        self.w = w
        self.claim_after = claim_after
        self.lease = lease
        self.draining = False  # take nothing new (walltime, stop): prefetch 1
        self._held: dict[Any, Held] = {}
        self._lock = threading.Lock()
        self._deleting: list[str] = []
        self._window = 0

    # -- the I/O thread ----------------------------------------------------------
    def hold(self, delivery: Any, task: Task, body: bytes, source: str, chunk: Chunk | None,
             note: str = "") -> None:  # fmt: skip
        with self._lock:
            self._held[delivery] = Held(delivery, task, body, source, chunk, note)

    def claimed(self, delivery: Any) -> bool:
        """Whether ``delivery``'s chunk is claimed (acked: the broker never hands it out
        again, so what is left of it must run here or be handed back)."""
        with self._lock:
            h = self._held.get(delivery)
            return h is not None and h.state == CLAIMED

    def retry_busy(self) -> bool:
        """A claimed chunk of the retry queue runs here (take no second suspect)."""
        retry = protocol.retry_queue(self.w.scope, self.w.runtime)
        with self._lock:
            return any(h.source == retry and h.state == CLAIMED for h in self._held.values())

    def settle(self, delivery: Any) -> None:
        """Every result of ``delivery``'s chunk is staged: ack it, or end its claim
        (get + ack of the claim message, in the transaction of those results)."""
        with self._lock:
            h = self._held.pop(delivery, None)
            claimed = h is not None and h.state == CLAIMED
            if h is not None:
                h.state = SETTLED
        if not claimed:
            self.w.conn.ack(delivery)
            return
        assert h is not None
        if h.claim:
            got = self.w.conn.stage_get(delivery, h.claim)
            if got is not None:
                self.w.conn.ack(got)
            else:
                self._gone(h)
            with self._lock:
                self._deleting.append(h.claim)
        self.window()

    def lost(self, alive: Any) -> None:
        """The connection or a channel died: forget unclaimed deliveries for which
        ``alive(delivery)`` is false (the broker hands them out again)."""
        with self._lock:
            for d, h in list(self._held.items()):
                if h.state != CLAIMED and not alive(d):
                    h.state = SETTLED
                    del self._held[d]

    def hand_back(self, hs: list[Held], note: str = "") -> None:
        """Republish what each of ``hs`` has not finished to the queue it came from,
        not counted as a loss, and ack it (or end its claim): one transaction per
        channel. ``note`` (or the one it was parked with) is told to the job."""
        conn = self.w.conn
        for h in hs:
            with self._lock:
                if h.state == SETTLED:
                    continue
                h.state, claim = SETTLED, h.claim if h.state == CLAIMED else None
                self._held.pop(h.delivery, None)
                if claim:
                    self._deleting.append(claim)
            t = h.task
            positions = [p for p in (t.only or range(len(t.calls))) if t.calls[p] not in h.finished]
            if claim is None:
                target = h.delivery if self._alive(h.delivery) else None
            else:  # "": the claim is gone, the broker has the chunk again
                target = conn.stage_get(h.delivery, claim) if claim else None
            if target is None:  # the broker has it again (its channel died, or the claim)
                continue
            if positions:
                body = h.body
                if t.only is not None or len(positions) < len(t.calls):
                    body = Task(**{**t.__dict__, "only": positions}).encode()
                conn.stage_publish(
                    target, conn.exchange, h.source, body, kind="task", key=self.w.key,
                    headers={protocol.HDR_LOST: t.lost}, bound=True,
                )  # fmt: skip
            conn.ack(target)
            why = h.note or note
            if why and positions:
                now = time.time()
                for p in positions:
                    self.w.events.state(t.job_id, t.calls[p], QUEUED, 0, now)
                    self.w.events.note(t.job_id, t.calls[p], why)
        self.window()

    def hand_back_all(self, note: str) -> int:
        with self._lock:
            hs = list(self._held.values())
        self.hand_back(hs, note)
        return len(hs)

    def window(self) -> None:
        """Set the task consumer's prefetch from the slots claimed chunks leave free."""
        w = self.w
        with self._lock:
            claimed = sum(1 for h in self._held.values() if h.state == CLAIMED)
        base = w.outbox.prefetch.current
        if self.draining:
            want = 1
        elif claimed:
            want = max(1, base * max(0, w.processes - claimed) // w.processes)
        else:
            want = base
        if want != self._window:
            self._window = want
            w.conn.set_prefetch(w.queue, want)

    # -- the pool's dispatcher thread --------------------------------------------
    def finished(self, delivery: Any, indices: Any, status: bytes) -> None:
        with self._lock:
            h = self._held.get(delivery)
            if h is not None:
                h.finished.update(i for i, s in zip(indices, status) if s != SKIP)

    # -- the worker's main thread ------------------------------------------------
    def tick(self) -> None:
        """Claim or hand back what is due, renew leases, delete ended claim queues."""
        now = time.time()
        with self._lock:
            due = [
                h for h in self._held.values()
                if h.state == HELD and now - h.since >= self.claim_after
            ]  # fmt: skip
            for h in due:
                h.state = DECIDING
            renew = [h for h in self._held.values() if h.state == CLAIMED and h.renew_at <= now]
            for h in renew:
                h.renew_at = now + self.lease / 3
            deleting, self._deleting = self._deleting, []
        parked = [h for h in due if h.chunk is None]
        if parked:
            self.w.conn.call(lambda: self.hand_back(parked), wait=False)
        pooled = {id(h.chunk): h for h in due if h.chunk is not None}
        if pooled:
            self.w.pool.drop_queued(
                lambda c: id(c) in pooled and not c.started,
                lambda taken: self._decided(pooled, {id(c) for c in taken}),
            )
        for h in renew:
            self.w.conn.call(lambda h=h: self._renew(h), wait=False)
        for name in deleting:
            self.w.conn.delete_if_empty(name)

    def running(self) -> bool:
        """Whether a chunk this worker holds has started in the pool."""
        with self._lock:
            return any(h.chunk is not None and h.chunk.started for h in self._held.values())

    # -- internals ----------------------------------------------------------------
    def _decided(self, pooled: dict[int, Held], taken: set[int]) -> None:
        """In the dispatcher thread: ``taken`` had not started (they go back), the
        others had (they are claimed)."""
        back = [h for k, h in pooled.items() if k in taken]
        claim = [h for k, h in pooled.items() if k not in taken]
        if back:
            self.w.conn.call(lambda: self.hand_back(back), wait=False)
        for h in claim:
            self.w.conn.call(lambda h=h: self._claim(h), wait=False)

    def _alive(self, d: Any) -> bool:
        return (
            d.generation == self.w.conn.generation and d.channel is not None and (d.channel.is_open)
        )

    def _claim(self, h: Held) -> None:
        conn = self.w.conn
        with self._lock:
            if h.state != DECIDING:
                return  # finished meanwhile
            if not self._alive(h.delivery):  # the broker hands it out again
                h.state = SETTLED
                self._held.pop(h.delivery, None)
                return
        token = uuid.uuid4().hex[:8]
        name = protocol.claim_queue(conn.scope, self.w.runtime, self.w.worker_id, token)
        args = protocol.claim_queue_arguments(conn.scope, self.lease, h.source, conn.queue_type)
        conn.declare_queue(name, args)
        conn.stage_publish(
            h.delivery, conn.exchange, name, h.body, kind="task", key=self.w.key,
            headers={protocol.HDR_LOST: h.task.lost}, bound=True,
        )  # fmt: skip
        conn.ack(h.delivery)
        conn.commit_now()
        with self._lock:
            h.state, h.claim, h.renew_at = CLAIMED, name, time.time() + self.lease / 3
        log.info(
            "job %s chunk %s runs longer than %g s: claimed in %s (lease %g s)",
            h.task.job_id,
            h.task.chunk,
            self.claim_after,
            name,
            self.lease,
        )
        self.window()

    def _renew(self, h: Held) -> None:
        conn = self.w.conn
        with self._lock:
            if h.state != CLAIMED or not h.claim:
                return
        got = conn.stage_get(None, h.claim)
        if got is None:
            self._gone(h)
            return
        conn.stage_publish(
            got, conn.exchange, h.claim, h.body, kind="task", key=self.w.key,
            headers={protocol.HDR_LOST: h.task.lost}, bound=True,
        )  # fmt: skip
        conn.ack(got)
        conn.commit_now()

    def _gone(self, h: Held) -> None:
        log.warning(
            "the claim %s of job %s chunk %s is gone (its lease ran out, e.g. while the "
            "broker was unreachable): the broker has handed the chunk out again, so its "
            "calls may run twice; the first result of each call is kept",
            h.claim,
            h.task.job_id,
            h.task.chunk,
        )
        with self._lock:
            h.claim = ""
