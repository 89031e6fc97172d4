"""A worker that leaves when it has had no work for a while (``--idle-timeout``).

``IdleClock`` says when: the worker has had nothing to do (no call running or
queued in its pool, no delivery of the task queues unsettled) for
``timeout`` seconds, and no scaler holds it (a ``hold`` control message keeps
a worker ``protocol.HOLD_SECONDS`` longer: how ``slurm adapt`` keeps its MIN
workers; when the scaler stops, its holds run out and the workers leave).
``leave`` says how, never in the middle of a call: stop consuming the task
queues first (``leaving.take_nothing_more``: channels kept), so nothing more is
delivered; a chunk the broker sent in the same instant is held unstarted and
handed back at shutdown (republished and acked, not marked redelivered, so no
worker counts it as a loss); a call that started runs to its end and is settled
on the channel it came from. Then the worker shuts down as after SIGTERM, exit
status 0; in a SLURM job the job script then ends, and the allocation is
released.

Threads: the transport's I/O thread calls ``touch`` (a task taken) and ``hold``
(a control message); the worker's main thread calls ``due`` and ``leave``. The
clock's two times are floats, each replaced whole.

Standard library only (the worker's side).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .. import protocol
from . import leaving

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("sif_magic.worker")


class IdleClock:
    """When the worker last had work, and until when a scaler holds it (0: never idles out)."""

    def __init__(self, timeout: float) -> None:
        if timeout < 0:
            raise ValueError("--idle-timeout must be 0 (never) or more seconds")
        self.timeout = timeout
        self.last = time.time()  # last moment with work (or the start)
        self.held_until = 0.0

    def touch(self) -> None:
        self.last = time.time()

    def hold(self) -> None:
        self.held_until = time.time() + protocol.HOLD_SECONDS

    def due(self, busy: bool, now: float) -> bool:
        """Whether to leave now; ``busy``: the pool runs or holds calls."""
        if busy:
            self.last = now
            return False
        return 0 < self.timeout <= now - self.last and now >= self.held_until


def _pool_busy(w: Worker) -> bool:
    return bool(w.pool.busy or w.pool.queued)


def check(w: Worker) -> bool:
    """Called by the main loop: True when the worker has left its queues for want of work
    (then it shuts down). Cheap unless the clock is due."""
    clock = w.idle
    if not clock.due(_pool_busy(w), time.time()):
        return False
    try:
        # deliveries it still holds, but for tasks it holds only for other workers
        if w.conn.unsettled(timeout=10) > w.foreign.held():
            clock.touch()
            return False
    except Exception:  # noqa: BLE001 - broker unreachable: nothing of ours is held there
        pass
    return leave(w)


def leave(w: Worker) -> bool:
    """Stop consuming, let what was running finish, then say goodbye."""
    idle_for = time.time() - w.idle.last
    w.stop_note = "returned: its worker left, idle (--idle-timeout)"
    try:  # what arrives until the broker stops sending is held unstarted, handed back
        leaving.take_nothing_more(w).result(timeout=10)
    except Exception as e:  # noqa: BLE001 - the broker is gone: so is what it delivered
        log.info("could not stop consuming cleanly (%s); leaving anyway", e)
        return True
    while not w.stopping.is_set() and _pool_busy(w):
        time.sleep(0.1)  # a chunk that started the moment it stopped consuming: its end
    log.info(
        "worker %s: no call for %.0f s (--idle-timeout %g): leaving%s",
        w.worker_id,
        idle_for,
        w.idle.timeout,
        f"; SLURM job {w.slurm_job} ends with it" if w.slurm_job else "",
    )
    return True
