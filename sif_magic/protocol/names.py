"""Names both sides must agree on: protocol version, exchanges, queues, headers, call states.

The one source of these names: workers, clients, the CLI and the docs (docs/protocol.md)
take them from here. The state names and their codes are what job state arrays hold and
what the front-end's ``states.ts`` repeats (a test compares them).

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

from typing import Any

VERSION = 2

# -- exchanges, queues, headers ----------------------------------------------------

MONITOR_EXCHANGE = "sif_magic.monitor"  # topic
CONTROL_EXCHANGE = "sif_magic.control"  # fanout
DEAD_EXCHANGE = "sif_magic.dead"  # fanout -> DEAD_QUEUE
DEAD_QUEUE = "sif_magic.dead"

# A ``hold`` control message keeps a worker with --idle-timeout this many seconds more
# (a scaler re-sends it while it wants the worker: when the scaler stops, holds run out)
HOLD_SECONDS = 30.0

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


def task_queue(runtime: str) -> str:
    """The durable queue that workers of ``runtime`` consume."""
    return f"sif_magic.tasks.{runtime}"


def retry_queue(runtime: str) -> str:
    """Calls split off a redelivered chunk: consumed one at a time per worker, so a
    worker that dies only ever counts a loss against the call it was running."""
    return f"sif_magic.tasks.{runtime}.retry"


def scaler_queue(runtime: str) -> str:
    """Exists while a scaler (``slurm adapt``) starts workers for ``runtime``: it
    consumes it, and the broker deletes it when the scaler's connection goes (a
    client then sends jobs to the runtime before any worker has joined)."""
    return f"sif_magic.scaler.{runtime}"


def result_queue(job_id: str) -> str:
    """The durable per-job queue results are published to (kept for re-attach)."""
    return f"sif_magic.results.{job_id}"


def task_queue_arguments() -> dict[str, Any]:
    return {"x-dead-letter-exchange": DEAD_EXCHANGE}


def result_queue_arguments(ttl_seconds: float) -> dict[str, Any]:
    # The queue (and the results in it) disappears after ``ttl_seconds`` unused.
    return {"x-expires": int(ttl_seconds * 1000), "x-dead-letter-exchange": DEAD_EXCHANGE}


def events_key(job_id: str) -> str:
    return f"job.{job_id}.events"


def heartbeat_key(worker_id: str, kind: str = "heartbeat") -> str:
    return f"worker.{worker_id}.{kind}"
