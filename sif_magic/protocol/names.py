"""Names both sides must agree on: protocol version, key-scoped exchanges and queues,
headers, call states.

The one source of these names: workers, clients, the CLI and the docs (docs/protocol.md)
take them from here. The state names and their codes are what job state arrays hold and
what the front-end's ``states.ts`` repeats (a test compares them).

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

import uuid
from typing import Any

VERSION = 2

# -- headers ----------------------------------------------------------------------

HDR_SIG = "sif-sig"
HDR_VERSION = "sif-v"
HDR_KEY_ID = "sif-kid"  # key_id() of the key that signed the message (not covered by the MAC)
HDR_LOST = "sif-lost"  # how many times the calls of this message lost their worker

# States of a call; the byte values are what job state arrays hold. ``retrying``: the
# call failed and runs again (--retries); ``lost``: its worker died (or stopped
# answering) under it, and it waits to be redelivered to a worker.
QUEUED, RUNNING, DONE, FAILED, CANCELLED, RETRYING, LOST = range(7)
STATE_NAMES = ("queued", "running", "done", "failed", "cancelled", "retrying", "lost")
STATE_CODES = {name: code for code, name in enumerate(STATE_NAMES)}
TERMINAL = frozenset((DONE, FAILED, CANCELLED))
SKIP = 255  # in a result segment's status column: no outcome here (the call runs again)


# -- key-scoped exchanges and queues --------------------------------------------------
#
# Every exchange and queue sif_magic declares is named ``sif_magic.<scope>.<what>``,
# where ``scope`` is the key id of the signing key (``protocol.key_id(key)``: 12 hex
# digits). Users (keys) never share a queue, and RabbitMQ's per-user permissions
# (configure / write / read regular expressions ``^sif_magic\.<scope>\.``) can keep
# them apart on one vhost (docs/security.md). Tasks and results travel through the
# scope's own direct exchange (routing key: the queue's name), never the default
# exchange, so a site can refuse everyone write access to ``amq.default``.

DEAD_LETTER_MAX = 10_000  # messages the dead-letter queue keeps at most (oldest go first)
DEAD_LETTER_MAX_BYTES = 512 * 1024 * 1024
DEAD_LETTER_TTL = 7 * 86400  # seconds a dead-lettered message is kept for inspection


def scope_prefix(scope: str) -> str:
    """``sif_magic.<scope>.``: what every name of the key with id ``scope`` starts with."""
    if len(scope) != 12 or any(c not in "0123456789abcdef" for c in scope):
        raise ValueError(f"a key scope is a key id (12 hex digits), not {scope!r}")
    return f"sif_magic.{scope}."


def direct_exchange(scope: str) -> str:
    """The scope's direct exchange: tasks to task queues, results to result queues
    (each queue is bound under its own name)."""
    return scope_prefix(scope) + "direct"


def monitor_exchange(scope: str) -> str:
    """Topic exchange: events (``job.<id>.events``) and heartbeats (``worker.<id>.*``)."""
    return scope_prefix(scope) + "monitor"


def control_exchange(scope: str) -> str:
    """Fanout exchange: cancel / ping / shutdown to every worker of the scope."""
    return scope_prefix(scope) + "control"


def dead_exchange(scope: str) -> str:
    """Fanout exchange into ``dead_queue``: what a queue of the scope rejects."""
    return scope_prefix(scope) + "dead"


def dead_queue(scope: str) -> str:
    """Messages rejected unread (unsigned, forged, malformed, signed with another key),
    kept ``DEAD_LETTER_TTL`` for inspection, at most ``DEAD_LETTER_MAX`` of them."""
    return scope_prefix(scope) + "dead"


def task_queue(scope: str, runtime: str) -> str:
    """The durable queue that workers of ``runtime`` consume."""
    return scope_prefix(scope) + f"tasks.{runtime}"


def retry_queue(scope: str, runtime: str) -> str:
    """Calls split off a redelivered chunk: consumed one at a time per worker, so a
    worker that dies only ever counts a loss against the call it was running."""
    return scope_prefix(scope) + f"tasks.{runtime}.retry"


def result_queue(scope: str, job_id: str) -> str:
    """The durable per-job queue results are published to (kept for re-attach)."""
    return scope_prefix(scope) + f"results.{job_id}"


def private_queue(scope: str, what: str) -> str:
    """An exclusive queue of one consumer (a client's monitor, a worker's control
    queue, ``sif-magic logs``): named, not server-named (``amq.gen-...``), so the
    scope's permissions cover it; a fresh name for every connection (the broker may
    not have noticed yet that the previous one, holding the old name, is gone)."""
    return scope_prefix(scope) + f"{what}.{uuid.uuid4().hex[:12]}"


def task_queue_arguments(scope: str) -> dict[str, Any]:
    return {"x-dead-letter-exchange": dead_exchange(scope)}


def result_queue_arguments(scope: str, ttl_seconds: float) -> dict[str, Any]:
    # The queue (and the results in it) disappears after ``ttl_seconds`` unused.
    return {"x-expires": int(ttl_seconds * 1000), "x-dead-letter-exchange": dead_exchange(scope)}


def dead_queue_arguments() -> dict[str, Any]:
    """Bounded: a flood of rejected messages never fills the broker's disk."""
    return {
        "x-max-length": DEAD_LETTER_MAX,
        "x-max-length-bytes": DEAD_LETTER_MAX_BYTES,
        "x-message-ttl": DEAD_LETTER_TTL * 1000,
    }


def events_key(job_id: str) -> str:
    return f"job.{job_id}.events"


def heartbeat_key(worker_id: str, kind: str = "heartbeat") -> str:
    return f"worker.{worker_id}.{kind}"
