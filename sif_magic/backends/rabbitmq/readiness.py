"""Whether a runtime can take a job now: workers that hold this kernel's key,
run a compatible Python and cloudpickle, and consume its task queue.

Queues are scoped by the key id, so "a worker consumes our task queue" means "a
worker that holds this kernel's key serves this runtime": a worker started with
another key file consumes another queue, and is never seen here.
``wait_for_workers`` asks the broker and waits (or says how to start a worker,
naming this kernel's key id, which a worker logs when it starts);
``check_versions`` refuses a runtime whose every worker is incompatible;
``check_resources`` a job whose calls ask for more GPUs or CPUs than any live
worker has (workers say what they have in their heartbeats).
Threads: the kernel thread (``start_job``); they read the backend's registry
(under its lock) and ask the broker through ``Connection.call``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ... import protocol
from ..._keys import notebook_key_fix
from ...errors import IncompatibleWorkerError, NoWorkersError, ResourcesError
from ...runner.resources import Need, can_run, unsatisfiable
from ...runner.versions import incompatibility, versions
from ...transport import declare_routed_queue

if TYPE_CHECKING:
    from .client import RabbitBackend

log = logging.getLogger("sif_magic.rabbitmq")
ANNOUNCE_WAIT = 1.0  # seconds a consumer of the task queue has to answer a ping


def consumers(b: RabbitBackend) -> int:
    """How many consumers the runtime's task queue has (asks the broker)."""

    def op() -> int:
        queue = protocol.task_queue(b.scope, b.runtime)
        args = protocol.task_queue_arguments(b.scope, b.config.queue_type)
        return declare_routed_queue(b.conn.channel, b.scope, queue, args).method.consumer_count

    return b.conn.call(op)


def wait_for_workers(b: RabbitBackend) -> None:
    """Until a worker that holds this kernel's key announces itself. Fails after
    ``no_worker_timeout`` (nothing sent) if nobody consumes the runtime's queue of
    this key; consumers that do not announce themselves within ANNOUNCE_WAIT of a
    ping are sent the job. A runtime a scaler serves (``protocol.scaler_queue``) is
    sent the job at once."""
    if b.conn.queue_exists(protocol.scaler_queue(b.scope, b.runtime), timeout=10):
        log.info("no worker of runtime %s yet: a scaler (slurm adapt) starts them", b.runtime)
        return  # the calls wait in the queue for the workers it submits
    deadline = time.time() + b.config.no_worker_timeout
    b.ping()
    asked = time.time()
    while not b.live_workers():
        now = time.time()
        if consumers(b) > 0:
            if now - asked >= ANNOUNCE_WAIT:
                break
        elif now >= deadline:
            raise NoWorkersError(no_worker_message(b))
        time.sleep(0.1)
    check_versions(b)


def no_worker_message(b: RabbitBackend) -> str:
    queue = protocol.task_queue(b.scope, b.runtime)
    return (
        f"no worker of runtime {b.runtime!r} holds this kernel's signing key (key id "
        f"{b.key_id}, from {b.key_source}): nobody consumes {queue} (waited "
        f"{b.config.no_worker_timeout:g} s). Nothing was sent. Start one with: sif-magic worker "
        f"--amqp-url-file FILE --runtime {b.runtime}  (or sif-magic workers start / sif-magic "
        "slurm submit), then run the cell again. A worker started with another key file "
        "serves that key's queues, not this one (its log says 'signing key: ... (key id "
        f"...)'); to give it this kernel's key: {notebook_key_fix(b.key_source)}."
    )


def check_versions(b: RabbitBackend) -> None:
    """IncompatibleWorkerError if every live worker of the runtime is incompatible."""
    if not b.live_workers():
        b.ping()
        time.sleep(0.2)
    live = b.live_workers()
    why = [
        incompatibility(versions(), (str(w.get("python", "")), str(w.get("cloudpickle", ""))))
        for w in live
    ]
    if live and all(why):
        raise IncompatibleWorkerError(
            f"every worker of runtime {b.runtime!r} is incompatible with this kernel: "
            f"worker {live[0]['worker']}: {why[0]}"
        )


def _able(need: Need, w: dict) -> bool:
    cpus = int(w.get("cpus") or 0)  # 0: a worker that does not say (older): not counted
    return can_run(need, len(w.get("gpus") or []), cpus or need.cpus)


def check_resources(b: RabbitBackend, need: Need) -> None:
    """ResourcesError, before anything is sent, if no live worker of the runtime
    could run a call asking for ``need`` (after giving the others a ping to answer)."""
    live = b.live_workers()
    if not live or any(_able(need, w) for w in live):
        return  # nobody announced yet (a consumer that did not answer): cannot tell
    b.ping()
    deadline = time.time() + ANNOUNCE_WAIT
    while time.time() < deadline:
        time.sleep(0.1)
        live = b.live_workers()
        if any(_able(need, w) for w in live):
            return
    raise ResourcesError(unsatisfiable(need, f"runtime {b.runtime!r}", live) + " Nothing was sent.")
