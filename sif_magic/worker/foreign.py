"""Tasks signed with another key than the worker's: neither run nor destroyed.

Every queue is scoped by the key id (``protocol.names``), so a notebook with
another key sends to other queues, and its workers never see ours. A task in
this scope whose ``sif-kid`` names another key was put here by someone holding
our scope's write permission but not our key (a forger, or a hand-made
publish): no worker of this scope can verify it, so none may unpickle it.
Handing it back to the queue (as when keys shared one queue) would only make it
go round our own workers for ever; it is moved, unread and with its sender's
signature, to the scope's dead-letter queue, where it is kept for inspection
(``protocol.DEAD_LETTER_TTL``), and an error names both key ids once per key id.

Threads: ``refuse`` and ``log`` run in the I/O thread (consumer callbacks);
``count`` and the logged times are written only there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import protocol
from .._keys import worker_key_fix
from ..transport import Connection

log = logging.getLogger("sif_magic.worker")
LOG_EVERY = 600.0  # the error about a key id is logged again after this long


class ForeignTasks:
    def __init__(self, conn: Connection, key_id: str, key_source: str) -> None:
        self.conn = conn
        self.key_id = key_id
        self.key_source = key_source
        self.count = 0  # messages signed with another key, so far
        self._logged: dict[tuple[str, str], float] = {}  # (what, key id) -> last logged

    def refuse(self, theirs: str, delivery: Any, queue: str) -> None:
        """A task of key id ``theirs`` on ``queue``: to the dead-letter queue, unread."""
        self.count += 1
        self.log(theirs, f"Tasks on {queue}")
        self.conn.reject(delivery, requeue=False)

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
