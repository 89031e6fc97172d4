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

VERSION = 3  # 3: the MAC covers the headers, a message id and a timestamp (replay)

# -- headers ----------------------------------------------------------------------

# A ``hold`` control message keeps a worker with --idle-timeout this many seconds more
# (a scaler re-sends it while it wants the worker: when the scaler stops, holds run out)
HOLD_SECONDS = 30.0

HDR_SIG = "sif-sig"
HDR_VERSION = "sif-v"
HDR_KEY_ID = "sif-kid"  # key_id() of the key that signed the message
HDR_ID = "sif-id"  # a message id: 32 hex digits, fresh for every message signed
HDR_TIME = "sif-t"  # when it was signed: integer milliseconds since the epoch
HDR_LOST = "sif-lost"  # how many times the calls of this message lost their worker
# what the MAC covers besides the type and the body, in this order (signing.py)
SIGNED_HEADERS = (HDR_VERSION, HDR_KEY_ID, HDR_ID, HDR_TIME, HDR_LOST)

# States of a call; the byte values are what job state arrays hold. ``retrying``: the
# call failed and runs again (--retries); ``lost``: its worker died (or stopped
# answering) under it, and it waits to be redelivered to a worker; ``finishing``: a
# worker said the call ended, and its result has not arrived yet (only the client
# sets it, from events: a worker never sends it).
QUEUED, RUNNING, DONE, FAILED, CANCELLED, RETRYING, LOST, FINISHING = range(8)
STATE_NAMES = (
    "queued", "running", "done", "failed", "cancelled", "retrying", "lost", "finishing",
)  # fmt: skip
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


def claim_queue(scope: str, runtime: str, worker_id: str, token: str) -> str:
    """A chunk a worker has held longer than its claim time (``worker/claims.py``): its
    one message, with a lease; expired, it is dead-lettered back to the queue it came
    from. ``token`` is unique per claim (a restarted worker reuses no name)."""
    return f"{task_queue(scope, runtime)}{CLAIM_MARK}{worker_id}.{token}"


CLAIM_MARK = ".claim."  # in every claim queue's name, after the task queue's


def is_claim_queue(name: str) -> bool:
    return name.startswith("sif_magic.") and CLAIM_MARK in name


def claim_queue_arguments(
    scope: str, lease_seconds: float, back_to: str, queue_type: str = "classic"
) -> dict[str, Any]:
    """The claim message lives ``lease_seconds`` unless renewed, then goes back to
    ``back_to`` (the task or retry queue, through the scope's direct exchange, with an
    ``x-death`` header); the queue itself goes after four leases unused."""
    lease = max(1, int(lease_seconds * 1000))
    return _typed(
        queue_type,
        {
            "x-message-ttl": lease,
            "x-dead-letter-exchange": direct_exchange(scope),
            "x-dead-letter-routing-key": back_to,
            "x-expires": 4 * lease,
        },
    )


def scaler_queue(scope: str, runtime: str) -> str:
    """Exists while a scaler (``slurm adapt``) starts workers for ``runtime``: it
    consumes it, and the broker deletes it when the scaler's connection goes (a
    client then sends jobs to the runtime before any worker has joined)."""
    return scope_prefix(scope) + f"scaler.{runtime}"


def result_queue(scope: str, job_id: str) -> str:
    """The durable per-job queue results are published to (kept for re-attach)."""
    return scope_prefix(scope) + f"results.{job_id}"


def job_exchange(scope: str, job_id: str) -> str:
    """An exchange that exists while job ``job_id`` may still run calls: its client
    declares it (durable, auto-delete) bound to the result queue, and deletes it when
    the job is done or cancelled; it also goes with the result queue (auto-delete).
    Nothing is published to it: workers run no task of a job whose exchange is gone."""
    return scope_prefix(scope) + f"job.{job_id}"


def private_queue(scope: str, what: str) -> str:
    """An exclusive queue of one consumer (a client's monitor, a worker's control
    queue, ``sif-magic logs``): named, not server-named (``amq.gen-...``), so the
    scope's permissions cover it; a fresh name for every connection (the broker may
    not have noticed yet that the previous one, holding the old name, is gone)."""
    return scope_prefix(scope) + f"{what}.{uuid.uuid4().hex[:12]}"


# -- queue arguments: the only place they are built, keyed by the queue type -------
#
# "classic": one node holds each queue (the default; what a single broker runs).
# "quorum": each queue is replicated on the nodes of a RabbitMQ cluster (Raft), and
# survives losing a minority of them. Quorum queues must be durable, are never
# exclusive or auto-deleted, and take no x-max-priority; per-connection queues
# (monitor, control, logs) stay classic: they die with their connection anyway.
# Classic declarations carry no x-queue-type, as before there was a choice, so queues
# that exist keep matching.

QUEUE_TYPES = ("classic", "quorum")


def _typed(queue_type: str, arguments: dict[str, Any]) -> dict[str, Any]:
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue_type {queue_type!r}: use one of {', '.join(QUEUE_TYPES)}")
    if queue_type != "classic":
        arguments["x-queue-type"] = queue_type
    return arguments


def queue_type_of(arguments: dict[str, Any] | None) -> str:
    """The queue type that declaration ``arguments`` ask for."""
    return str((arguments or {}).get("x-queue-type", "classic"))


def task_queue_arguments(scope: str, queue_type: str = "classic") -> dict[str, Any]:
    """Task and retry queues: a refused task goes to the scope's dead-letter exchange."""
    return _typed(queue_type, {"x-dead-letter-exchange": dead_exchange(scope)})


def result_queue_arguments(
    scope: str, ttl_seconds: float, queue_type: str = "classic"
) -> dict[str, Any]:
    # The queue (and the results in it) disappears after ``ttl_seconds`` unused.
    return _typed(
        queue_type,
        {"x-expires": int(ttl_seconds * 1000), "x-dead-letter-exchange": dead_exchange(scope)},
    )


def dead_queue_arguments(queue_type: str = "classic") -> dict[str, Any]:
    """Bounded: a flood of rejected messages never fills the broker's disk (the
    oldest go first: drop-head, what both queue types do by default)."""
    return _typed(
        queue_type,
        {
            "x-max-length": DEAD_LETTER_MAX,
            "x-max-length-bytes": DEAD_LETTER_MAX_BYTES,
            "x-message-ttl": DEAD_LETTER_TTL * 1000,
        },
    )


def events_key(job_id: str) -> str:
    return f"job.{job_id}.events"


def heartbeat_key(worker_id: str, kind: str = "heartbeat") -> str:
    return f"worker.{worker_id}.{kind}"
