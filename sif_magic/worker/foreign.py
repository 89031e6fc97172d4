"""Tasks this worker will not run: signed with another key, or asking for more
than it has. Neither is destroyed.

Every queue is scoped by the key id (``protocol.names``), so a notebook with
another key sends to other queues, and its workers never see ours. A task in
this scope whose ``sif-kid`` names another key was put here by someone holding
our scope's write permission but not our key (a forger, or a hand-made
publish): no worker of this scope can verify it, so none may unpickle it.
Handing it back to the queue (as when keys shared one queue) would only make it
go round our own workers for ever; it is moved, unread and with its sender's
signature, to the scope's dead-letter queue, where it is kept for inspection
(``protocol.DEAD_LETTER_TTL``), and an error names both key ids once per key id.

A task that asks for more GPUs or CPUs than this worker has, or whose inputs are
in a spill file this worker cannot read (``hold_for_others``, ``spill_unseen``),
is held ``HOLD`` seconds (a worker that has them may take the next ones
meanwhile) and handed back to its queue, through the scope's direct exchange,
signed anew (a new message id: the copy it took is in this worker's seen ids, so
one handed back unchanged would be refused here as a replay), with its loss
count, acking the original in the same transaction (a requeue would mark it
redelivered, which the next worker would count as a worker death).

Threads: ``refuse``, ``hold_for_others`` and ``log`` run in the I/O thread
(consumer callbacks); ``hand_back`` in the worker's main thread (and at
shutdown); the held list is guarded by ``_lock``; the operation it queues runs
in the I/O thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from .. import protocol
from .._keys import worker_key_fix
from ..transport import Connection

log = logging.getLogger("sif_magic.worker")
HOLD = 5.0  # seconds a task this worker cannot run is held before it goes back
LOG_EVERY = 600.0  # the error about a key id is logged again after this long


class ForeignTasks:
    def __init__(self, conn: Connection, key: bytes, key_source: str) -> None:
        self.conn = conn
        self.key = key
        self.key_id = protocol.key_id(key)
        self.key_source = key_source
        self.count = 0  # messages signed with another key, so far
        # tasks for other workers, until handed back: (due, delivery, queue, body, lost)
        self._held: list[tuple[float, Any, str, bytes, int]] = []
        self._lock = threading.Lock()
        self._logged: dict[tuple[str, str], float] = {}  # (what, key id) -> last logged

    def refuse(self, theirs: str, delivery: Any, queue: str) -> None:
        """A task of key id ``theirs`` on ``queue``: to the dead-letter queue, unread."""
        self.count += 1
        self.log(theirs, f"Tasks on {queue}")
        self.conn.reject(delivery, requeue=False)

    def hold_for_others(
        self,
        why: str,
        delivery: Any,
        queue: str,
        task: Any,
        body: bytes,
        then: str = "for a worker that has them",
    ) -> None:
        """Keep ``task`` (its ``body``), which this worker cannot run (``why``), until it
        goes back to ``queue`` (``then``: for whom, and what to do; logged once)."""
        now = time.time()
        if now - self._logged.get(("resources", why), -LOG_EVERY) >= LOG_EVERY:
            self._logged[("resources", why)] = now
            log.warning(
                "a task on %s: %s; it goes back to the queue after %g s here, %s",
                queue,
                why,
                HOLD,
                then,
            )
        with self._lock:
            self._held.append((now + HOLD, delivery, queue, body, task.lost))

    def hand_back(self, everything: bool = False) -> Any:
        """Republish held tasks, signed anew with their loss count, and ack them, in one
        transaction per channel; returns the operation's future (None if nothing was
        due)."""
        now = time.time()
        with self._lock:
            due = [h for h in self._held if everything or h[0] <= now]
            self._held = [h for h in self._held if not (everything or h[0] <= now)]
        if not due:
            return None

        def op() -> None:
            for _, delivery, queue, body, lost in due:
                self.conn.stage_publish(
                    delivery, self.conn.exchange, queue, body, kind="task", key=self.key,
                    headers={protocol.HDR_LOST: lost}, bound=True,
                )  # fmt: skip
                self.conn.ack(delivery)

        return self.conn.call(op, wait=False)

    def held(self) -> int:
        """How many tasks wait here to go back to other workers."""
        with self._lock:
            return len(self._held)

    def log(self, theirs: str, what: str) -> None:
        """An error, once per key id and kind of message (again after LOG_EVERY),
        that names both key ids, where the message went and how to share a key."""
        now = time.time()
        if now - self._logged.get((what, theirs), -LOG_EVERY) < LOG_EVERY:
            return
        self._logged[(what, theirs)] = now
        log.error(
            "%s signed with key id %s, but this worker holds key id %s (%s), and these "
            "queues belong to key id %s: someone who can publish here but does not hold this "
            "key sent them (a notebook with key id %s sends to sif_magic.%s.* instead). They "
            "are not run and not dropped: each goes, unread, to the dead-letter queue %s "
            "(kept %g days). If that notebook should use this worker: %s.",
            what,
            theirs,
            self.key_id,
            self.key_source,
            self.key_id,
            theirs,
            theirs,
            protocol.dead_queue(self.key_id),
            protocol.DEAD_LETTER_TTL / 86400,
            worker_key_fix(self.key_source),
        )


def spill_unseen(w: Any, task: Any, delivery: Any, queue: str, body: bytes, path: str) -> None:
    """``task``'s inputs are in ``path`` (the client's spill directory), which worker
    ``w`` cannot read (another filesystem): its calls get a note in the job's view and
    the task goes back to the queue for a worker that sees the directory (the batch's
    ``unseen`` list tells the client: it fails those calls, saying what to set, once
    every live worker has handed back a chunk of the job, ``spillwatch``)."""
    root = os.path.dirname(os.path.dirname(path))
    mine = w.spill_root[0] if w.spill_root else "none usable"
    note = (
        f"worker {w.worker_id} on {w.host} cannot read the job's spill_dir {root}; "
        "handed back for a worker that can"
    )
    w.events.unseen(task.job_id, list(task.calls), note)
    w.foreign.hold_for_others(
        f"job {task.job_id}: its inputs are in {path}, which this worker on {w.host} cannot "
        f"read (its own spill root: {mine})",
        delivery,
        queue,
        task,
        body,
        then=(
            "for a worker that sees it. To let this worker take such calls, start it with "
            f"SIF_MAGIC_SPILL_DIR={root} on a filesystem the notebook shares, or send arrays "
            "through the broker (%sif_config spill_arrays_mb=0 in the notebook)"
        ),
    )
