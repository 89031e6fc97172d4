"""A chunk that comes back redelivered: its worker died holding it.

The loss is counted against the chunk's calls (the ``sif-lost`` header); a
call lost ``max_lost`` times fails with "worker lost N times". Otherwise the
chunk is split into one message per call, each carrying only its own input
and the loss count, so one poison call cannot take its neighbours down with it
next time; a call on its last chance goes to the retry queue, which a worker
consumes one message at a time, so a death is counted only against the call
that was running. The parts and the ack of the original commit in one
transaction: a connection lost first drops both, and the broker hands the
whole chunk out again.

Threads: ``redelivered`` runs in the I/O thread (a consumer callback); the
split runs on a short-lived ``sif-split`` thread (re-packing the inputs
unpickles them, which happens in a helper process), and its publishes are
queued to the I/O thread.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..errors import WorkerLostError, wire_name
from ..protocol import LOST, Task
from ..runner import spill
from ..runner.slotproc import SLOT_SCRIPT

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("sif_magic.worker")


def redelivered(w: Worker, task: Task, delivery: Any, positions: list[int]) -> None:
    """Count the loss of a redelivered task's calls, then split it, or give up."""
    lost = task.lost + 1
    if lost >= task.max_lost:
        why = (
            f"worker lost {lost} times while holding this call (a call that kills its "
            "worker, e.g. by exhausting the node's memory?); not retried again"
        )
        w.outbox.fail(task, positions, wire_name(WorkerLostError), why, delivery)
        return
    now = time.time()
    for pos in positions:  # lost: queued again, until a worker starts it
        idx = task.calls[pos]
        w.events.state(task.job_id, idx, LOST, lost + 1, now)
        w.events.note(task.job_id, idx, f"worker lost {lost} time(s); queued again")
    threading.Thread(
        target=split,
        args=(w, task, delivery, positions, lost),
        name="sif-split",
        daemon=True,
    ).start()


def _repack(task: Task, positions: list[int], cwd: str) -> list[tuple[bytes, list[bytes]]]:
    """Each position's input pickled alone, with its out-of-band buffers (in a helper
    process: it unpickles them); a chunk that came by file (``runner.spill``) has its
    parts written beside it, by the client's rules (``task.env``), not sent inline."""
    buffers = [bytes(b) for b in task.buffers]
    spill_to = os.path.dirname(spill.path_of(task.args))
    env = task.env or {}
    try:
        over = int(env.get(spill.ENV_OVER) or 0) or sys.maxsize
        arrays = int(env.get(spill.ENV_ARRAYS) or 0)
    except ValueError:
        over, arrays = sys.maxsize, 0
    todo = (task.func, bytes(task.args), positions, buffers, spill_to, over, arrays)
    proc = subprocess.run(
        [sys.executable, SLOT_SCRIPT, "split"],
        input=pickle.dumps(todo, protocol=5),
        capture_output=True,
        timeout=600,
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode("utf-8", "replace")[-500:])
    return pickle.loads(proc.stdout)


def split(w: Worker, task: Task, delivery: Any, positions: list[int], lost: int) -> None:
    """Republish a redelivered chunk as one message per call, each with its own input
    only and the loss count, then ack the original."""
    parts: list[Task] = []
    if len(positions) > 1:
        try:
            blobs = _repack(task, positions, w.pool.cwd)
            parts = [
                Task(
                    **{
                        **task.__dict__,
                        "calls": [task.calls[p]],
                        "args": blob,
                        "buffers": bufs,
                        "only": None,
                        "lost": lost,
                    }
                )
                for p, (blob, bufs) in zip(positions, blobs)
            ]
        except Exception as e:  # noqa: BLE001 - fall back to the whole inputs per call
            log.warning(
                "could not re-pack the inputs of job %s chunk %s (%s); each call's "
                "message carries the whole chunk's inputs",
                task.job_id,
                task.chunk,
                e,
            )
    if not parts:
        parts = [Task(**{**task.__dict__, "only": [p], "lost": lost}) for p in positions]
    queue = protocol.retry_queue(w.scope, w.runtime) if lost >= task.max_lost - 1 else w.queue
    bodies = [part.encode_parts() for part in parts]

    def op() -> None:
        for body in bodies:
            w.conn.stage_publish(
                delivery, w.conn.exchange, queue, body, kind="task", key=w.key,
                headers={protocol.HDR_LOST: lost}, bound=True,
            )  # fmt: skip
        w.conn.ack(delivery)

    w.conn.call(op, wait=False)
