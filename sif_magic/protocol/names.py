"""Names both sides must agree on: protocol version, exchanges, queues, headers, call states.

The one source of these names: workers, clients, the CLI and the docs (docs/protocol.md)
take them from here. The state names and their codes are what job state arrays hold and
what the front-end's ``states.ts`` repeats (a test compares them).

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

from typing import Any

VERSION = 3  # 3: the MAC covers the headers, a message id and a timestamp (replay)

# -- exchanges, queues, headers ----------------------------------------------------

MONITOR_EXCHANGE = "sif_magic.monitor"  # topic
CONTROL_EXCHANGE = "sif_magic.control"  # fanout
DEAD_EXCHANGE = "sif_magic.dead"  # fanout -> DEAD_QUEUE
DEAD_QUEUE = "sif_magic.dead"

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


def task_queue(runtime: str) -> str:
    """The durable queue that workers of ``runtime`` consume."""
    return f"sif_magic.tasks.{runtime}"


def retry_queue(runtime: str) -> str:
    """Calls split off a redelivered chunk: consumed one at a time per worker, so a
    worker that dies only ever counts a loss against the call it was running."""
    return f"sif_magic.tasks.{runtime}.retry"


def claim_queue(runtime: str, worker_id: str, token: str) -> str:
    """A chunk a worker has held longer than its claim time (``worker/claims.py``): its
    one message, with a lease; expired, it is dead-lettered back to the queue it came
    from. ``token`` is unique per claim (a restarted worker reuses no name)."""
    return f"{task_queue(runtime)}{CLAIM_MARK}{worker_id}.{token}"


CLAIM_MARK = ".claim."  # in every claim queue's name, after the task queue's


def is_claim_queue(name: str) -> bool:
    return name.startswith("sif_magic.tasks.") and CLAIM_MARK in name


def claim_queue_arguments(lease_seconds: float, back_to: str) -> dict[str, Any]:
    """The claim message lives ``lease_seconds`` unless renewed, then goes back to
    ``back_to`` (the task or retry queue, through the default exchange, with an
    ``x-death`` header); the queue itself goes after four leases unused."""
    lease = max(1, int(lease_seconds * 1000))
    return {
        "x-message-ttl": lease,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": back_to,
        "x-expires": 4 * lease,
    }


def result_queue(job_id: str) -> str:
    """The durable per-job queue results are published to (kept for re-attach)."""
    return f"sif_magic.results.{job_id}"


def job_exchange(job_id: str) -> str:
    """An exchange that exists while job ``job_id`` may still run calls: its client
    declares it (durable, auto-delete) bound to the result queue, and deletes it when
    the job is done or cancelled; it also goes with the result queue (auto-delete).
    Nothing is published to it: workers run no task of a job whose exchange is gone."""
    return f"sif_magic.job.{job_id}"


# -- queue arguments: the only place they are built, keyed by the queue type -------
#
# "classic": one node holds each queue (the default; what a single broker runs).
# "quorum": each queue is replicated on the nodes of a RabbitMQ cluster (Raft), and
# survives losing a minority of them. Quorum queues must be durable, are never
# exclusive or auto-deleted, and take no x-max-priority; server-named per-connection
# queues (monitor, control, logs) stay classic: they die with their connection anyway.
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


def task_queue_arguments(queue_type: str = "classic") -> dict[str, Any]:
    """Task and retry queues: a refused task goes to the dead-letter exchange."""
    return _typed(queue_type, {"x-dead-letter-exchange": DEAD_EXCHANGE})


def result_queue_arguments(ttl_seconds: float, queue_type: str = "classic") -> dict[str, Any]:
    # The queue (and the results in it) disappears after ``ttl_seconds`` unused.
    return _typed(
        queue_type,
        {"x-expires": int(ttl_seconds * 1000), "x-dead-letter-exchange": DEAD_EXCHANGE},
    )


def dead_queue_arguments(queue_type: str = "classic") -> dict[str, Any]:
    """The dead-letter queue (where refused messages wait to be looked at)."""
    return _typed(queue_type, {})


def events_key(job_id: str) -> str:
    return f"job.{job_id}.events"


def heartbeat_key(worker_id: str, kind: str = "heartbeat") -> str:
    return f"worker.{worker_id}.{kind}"
