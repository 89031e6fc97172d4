"""Whether a runtime can take a job now: workers that hold this kernel's key,
run a compatible Python and cloudpickle, and consume its task queue.

``wait_for_workers`` asks the broker and waits (or says how to start a worker,
or that the only workers hold another key); ``check_versions`` refuses a runtime
whose every worker is incompatible. Threads: the kernel thread (``start_job``);
they read the backend's registry (under its lock) and ask the broker through
``Connection.call``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ... import protocol
from ..._keys import notebook_key_fix
from ...errors import ConfigError, IncompatibleWorkerError, NoWorkersError
from ...protocol import Heartbeat
from ...runner.versions import incompatibility, versions

if TYPE_CHECKING:
    from .client import RabbitBackend

log = logging.getLogger("sif_magic.rabbitmq")
ANNOUNCE_WAIT = 1.0  # seconds a consumer of the task queue has to answer a ping
FOREIGN_WAIT = 2.0  # seconds a worker with our key has to answer, when one with another did


def key_mismatch(b: RabbitBackend, hb: Heartbeat, theirs: str) -> str:
    """What to tell the user about a worker of this runtime that holds another key."""
    return (
        f"worker {hb.worker} on host {hb.host} (runtime {hb.runtime!r}) holds another "
        f"signing key (key id {theirs}) than this kernel (key id {b.key_id}, from "
        f"{b.key_source}): it cannot run this kernel's calls, and this kernel cannot "
        f"read its messages. Fix: {notebook_key_fix(b.key_source)}."
    )


def consumers(b: RabbitBackend) -> int:
    """How many consumers the runtime's task queue has (asks the broker)."""
    queue = protocol.task_queue(b.runtime)

    def op() -> int:
        ok = b.conn.channel.queue_declare(
            queue, durable=True, arguments=protocol.task_queue_arguments()
        )
        return ok.method.consumer_count

    return b.conn.call(op)


def wait_for_workers(b: RabbitBackend) -> None:
    """Until a worker that holds this kernel's key announces itb. Fails within
    FOREIGN_WAIT (nothing sent) if the runtime's only workers hold another key,
    and after ``no_worker_timeout`` if nobody consumes its queue; consumers that
    do not announce themselves within ANNOUNCE_WAIT of a ping are sent the job.
    A runtime a scaler serves (``protocol.scaler_queue``) is sent the job at once."""
    if b.conn.queue_exists(protocol.scaler_queue(b.runtime), timeout=10):
        log.info("no worker of runtime %s yet: a scaler (slurm adapt) starts them", b.runtime)
        return  # the calls wait in the queue for the workers it submits
    deadline = time.time() + b.config.no_worker_timeout
    b.ping()
    asked, foreign_since = time.time(), 0.0
    while not b.live_workers():
        now = time.time()
        foreign = b.registry.foreign()
        if foreign:
            if not foreign_since:  # give a worker with our key time to answer a ping
                foreign_since = now
                if now - b._pinged > 0.5:
                    b.ping()
            elif now - foreign_since >= FOREIGN_WAIT:
                raise ConfigError(
                    f"no worker of runtime {b.runtime!r} holds this kernel's signing "
                    "key: "
                    + " ".join(key_mismatch(b, hb, kid) for hb, kid in foreign[:3])
                    + " Nothing was sent: run the cell again once the keys match."
                )
        elif consumers(b) > 0:
            if now - asked >= ANNOUNCE_WAIT:
                break
        elif now >= deadline:
            raise NoWorkersError(
                f"no worker consumes {protocol.task_queue(b.runtime)} (waited "
                f"{b.config.no_worker_timeout:g} s). Start one with: sif-magic worker "
                f"--amqp-url-file FILE --runtime {b.runtime}  (or sif-magic workers start / "
                f"sif-magic slurm submit), then run the cell again."
            )
        time.sleep(0.1)
    check_versions(b)


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
