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

Every body is signed (``signing``). The package's modules, lowest first:

- ``names``: version, exchanges, queue names, headers, call states (the one source);
- ``framing``: the byte layout of a binary body, ``ProtocolError``;
- ``signing``: ``sign`` / ``verify`` / ``headers_for``, key ids, ``ForeignKeyError``;
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
from .framing import MAGIC, ProtocolError, pack, unpack
from .names import (
    CANCELLED,
    CONTROL_EXCHANGE,
    DEAD_EXCHANGE,
    DEAD_QUEUE,
    DONE,
    FAILED,
    HDR_KEY_ID,
    HDR_LOST,
    HDR_SIG,
    HDR_VERSION,
    HOLD_SECONDS,
    LOST,
    MONITOR_EXCHANGE,
    QUEUED,
    RETRYING,
    RUNNING,
    SKIP,
    STATE_CODES,
    STATE_NAMES,
    TERMINAL,
    VERSION,
    events_key,
    heartbeat_key,
    result_queue,
    result_queue_arguments,
    retry_queue,
    scaler_queue,
    task_queue,
    task_queue_arguments,
)
from .results import CallExtra, CallResult, ErrorRecord, ResultBatch, ResultSegment, consecutive
from .signing import ForeignKeyError, header_str, headers_for, key_id, sign, verify
from .tasks import Control, Heartbeat, JobInfo, Task

__all__ = [
    "CANCELLED",
    "CONTROL_EXCHANGE",
    "DEAD_EXCHANGE",
    "DEAD_QUEUE",
    "DONE",
    "FAILED",
    "HDR_KEY_ID",
    "HDR_LOST",
    "HDR_SIG",
    "HOLD_SECONDS",
    "HDR_VERSION",
    "LOST",
    "MAGIC",
    "MONITOR_EXCHANGE",
    "QUEUED",
    "RETRYING",
    "RUNNING",
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
    "ResultBatch",
    "ResultSegment",
    "Task",
    "compress_ranges",
    "consecutive",
    "events_key",
    "expand_ranges",
    "header_str",
    "headers_for",
    "heartbeat_key",
    "key_id",
    "pack",
    "result_queue",
    "result_queue_arguments",
    "retry_queue",
    "scaler_queue",
    "sign",
    "task_queue",
    "task_queue_arguments",
    "unpack",
    "verify",
]
