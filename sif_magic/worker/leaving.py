"""How a worker leaves: at its end time (walltime, ``--lifetime``) or when stopped.

Leaving is not dying: the worker stops consuming (``take_nothing_more``: what
still arrives is held unstarted), kills its running calls, and hands back what
it held: each chunk's unfinished calls go back to their queue in the
transaction that acks the chunk (or ends its claim), with the same loss count
and a note for the job ("returned: ..."). A worker with an end time
(``walltime``) leaves once nothing it runs can finish in time, or at its
deadline.

Threads: ``announce``, ``check_end`` and ``give_back`` run on the worker's main
thread; ``take_nothing_more`` there or on the I/O thread (a chunk refused for
time); ``_hand_back_all`` runs on the I/O thread.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .. import protocol

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("sif_magic.worker")


def announce(w: Worker) -> None:
    wt = w.walltime
    if wt.deadline is not None:
        log.info(
            "this worker must be gone by %s (%s): it takes only chunks that can finish "
            "by %s, and hands back what it holds then",
            wt.clock(),
            wt.source,
            time.strftime("%H:%M:%S", time.localtime(wt.deadline)),
        )


def check_end(w: Worker) -> None:
    """Stop at the deadline, or once draining leaves nothing running here."""
    wt = w.walltime
    if wt.due():
        log.warning(
            "the end of %s (%s) is near: handing back what this worker holds, leaving",
            wt.source,
            wt.clock(),
        )
    elif w.claims.draining and not w.claims.running():
        log.info("nothing runs here that can finish before %s: leaving", wt.clock())
    else:
        return
    w.stop_note = wt.cut_note()
    w.stop()


def take_nothing_more(w: Worker) -> Any:
    """Draining: chunks that still arrive are held unstarted and handed back; the task
    consumers stop (a Future, done once nothing more can arrive)."""
    w.claims.draining = True
    return w.conn.stop_consuming({w.queue, protocol.retry_queue(w.scope, w.runtime)})


def give_back(w: Worker) -> None:
    """At shutdown (main thread): stop consuming, kill the running calls, then results
    that came (with their acks) and what is held go out, stored in one round."""
    up = w.conn.connected  # never wait for a broker that is down
    if up:
        try:  # what arrives until the broker stops sending is held, not run
            take_nothing_more(w).result(timeout=5)
        except Exception:  # noqa: BLE001 - what arrives later comes back redelivered
            pass
    w.pool.close()  # running calls die; what they did not finish is handed back
    if not up:
        log.warning(
            "the broker is unreachable: what this worker held comes back from it, counted "
            "as a loss (deliveries at once, claimed chunks when their lease runs out)"
        )
        return
    try:
        w.conn.call(lambda: _hand_back_all(w), timeout=10)
    except Exception as e:  # noqa: BLE001
        log.warning(
            "could not hand back what this worker held (%s): the broker hands it out "
            "again (deliveries when the connection closes, claims when their lease runs "
            "out), each counted as a loss",
            e,
        )


def _hand_back_all(w: Worker) -> None:
    w.outbox._flush()
    n = w.claims.hand_back_all(w.stop_note)
    w.conn.commit_now()
    if n:
        log.info("handed back %d chunks (their unfinished calls) to their queues", n)
