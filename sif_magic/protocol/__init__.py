"""The sif_magic wire format: every name, field and byte layout in one place.

This package imports nothing else of sif_magic and nothing outside the standard
library, so a worker in a slim container image can use it; cloudpickle appears
only as opaque bytes here. ``docs/protocol.md`` describes the same format for
someone writing a compatible worker.

Messages (AMQP ``type`` property):

- ``task``: a chunk of calls of one job, published to the runtime's task queue.
- ``jobinfo``: what a job is, the first message of its result queue.
- ``result``: results of some calls of a chunk, published to the job's result queue.
- ``events``: a batch of call-state changes and log lines of one job, from one
  worker, published to the monitoring exchange at most every ~100 ms.
- ``heartbeat`` / ``bye``: a worker's presence and description.
- ``control``: cancel / ping / shutdown / hold, fanned out to every worker.

Every message is signed, with its headers, an id and a time (``signing``). The package's modules, lowest first:

- ``names``: version, key-scoped exchange and queue names, headers, call states (the
  one source);
- ``framing``: the byte layout of a binary body, ``ProtocolError``;
- ``signing``: ``sign`` / ``verify`` / ``headers_for`` (ids and times minted there),
  ``Signed``, key ids, ``ForeignKeyError``, ``VersionError``;
- ``replay``: how old a message may be (``fresh``, ``CLOCK_SKEW``), ids seen (``SeenIds``);
- ``taskmeta``: a task's JSON metadata, written and read without the codec where plain;
- ``tasks``: ``Task``, ``JobInfo``, ``Heartbeat``, ``Control``;
- ``results``: ``CallResult``, ``ResultSegment`` (with ``CallExtra``), ``ResultBatch``,
  ``ErrorRecord``;
- ``events``: ``EventBatch`` and its index ranges.

Every public name is re-exported here: ``from sif_magic import protocol; protocol.Task``
and ``from sif_magic.protocol import Task`` are the ways to use them.

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

from .events import EventBatch, compress_ranges, expand_ranges
from .framing import MAGIC, ProtocolError, pack, pack_parts, unpack
from .names import (
    CANCELLED,
    CLAIM_MARK,
    DEAD_LETTER_MAX,
    DEAD_LETTER_MAX_BYTES,
    DEAD_LETTER_TTL,
    DONE,
    FAILED,
    FINISHING,
    HDR_ID,
    HDR_KEY_ID,
    HDR_LOST,
    HDR_SIG,
    HDR_TIME,
    HDR_VERSION,
    HOLD_SECONDS,
    LOST,
    QUEUE_TYPES,
    QUEUED,
    RETRYING,
    RUNNING,
    SIGNED_HEADERS,
    SKIP,
    STATE_CODES,
    STATE_NAMES,
    TERMINAL,
    VERSION,
    claim_queue,
    claim_queue_arguments,
    control_exchange,
    dead_exchange,
    dead_queue,
    dead_queue_arguments,
    direct_exchange,
    events_key,
    heartbeat_key,
    is_claim_queue,
    job_exchange,
    monitor_exchange,
    private_queue,
    queue_type_of,
    result_queue,
    result_queue_arguments,
    retry_queue,
    scaler_queue,
    scope_prefix,
    task_queue,
    task_queue_arguments,
)
from .replay import (
    CLOCK_FIX,
    CLOCK_SKEW,
    CONTROL_MAX_AGE,
    ReplayedMessage,
    SeenIds,
    StaleMessage,
    deaths,
    fresh,
    seen_key,
)
from .results import CallExtra, CallResult, ErrorRecord, ResultBatch, ResultSegment, consecutive
from .signing import (
    ForeignKeyError,
    Signed,
    VersionError,
    header_str,
    headers_for,
    key_id,
    sign,
    verify,
)
from .tasks import Control, Heartbeat, JobInfo, Task

__all__ = [
    "CANCELLED",
    "CLAIM_MARK",
    "CLOCK_FIX",
    "CLOCK_SKEW",
    "CONTROL_MAX_AGE",
    "DEAD_LETTER_MAX",
    "DEAD_LETTER_MAX_BYTES",
    "DEAD_LETTER_TTL",
    "DONE",
    "FAILED",
    "FINISHING",
    "HDR_ID",
    "HDR_KEY_ID",
    "HDR_LOST",
    "HDR_SIG",
    "HDR_TIME",
    "HOLD_SECONDS",
    "HDR_VERSION",
    "LOST",
    "MAGIC",
    "QUEUE_TYPES",
    "QUEUED",
    "RETRYING",
    "RUNNING",
    "SIGNED_HEADERS",
    "SKIP",
    "STATE_CODES",
    "STATE_NAMES",
    "TERMINAL",
    "VERSION",
    "CallExtra",
    "CallResult",
    "Control",
    "ErrorRecord",
    "EventBatch",
    "ForeignKeyError",
    "Heartbeat",
    "JobInfo",
    "ProtocolError",
    "ReplayedMessage",
    "ResultBatch",
    "ResultSegment",
    "SeenIds",
    "Signed",
    "StaleMessage",
    "Task",
    "VersionError",
    "claim_queue",
    "claim_queue_arguments",
    "compress_ranges",
    "control_exchange",
    "dead_exchange",
    "dead_queue",
    "dead_queue_arguments",
    "direct_exchange",
    "consecutive",
    "deaths",
    "dead_queue_arguments",
    "events_key",
    "expand_ranges",
    "fresh",
    "header_str",
    "headers_for",
    "heartbeat_key",
    "is_claim_queue",
    "job_exchange",
    "key_id",
    "monitor_exchange",
    "pack",
    "pack_parts",
    "private_queue",
    "queue_type_of",
    "result_queue",
    "result_queue_arguments",
    "retry_queue",
    "scaler_queue",
    "scope_prefix",
    "seen_key",
    "sign",
    "task_queue",
    "task_queue_arguments",
    "unpack",
    "verify",
]
