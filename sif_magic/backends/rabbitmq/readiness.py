"""Whether a runtime can take a job now: workers that hold this kernel's key,
run a compatible Python and cloudpickle, and consume its task queue.

``wait_for_workers`` asks the broker and waits (or says how to start a worker,
or that the only workers hold another key); ``check_versions`` refuses a runtime
whose every worker is incompatible; ``check_resources`` a job whose calls ask for
more GPUs or CPUs than any live worker has (workers say what they have in their
heartbeats). Threads: the kernel thread (``start_job``);
they read the backend's registry (under its lock) and ask the broker through
``Connection.call``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ... import protocol
from ..._keys import notebook_key_fix
from ...errors import ConfigError, IncompatibleWorkerError, NoWorkersError, ResourcesError
from ...protocol import Heartbeat
from ...runner.resources import Need, can_run, unsatisfiable
from ...runner.versions import incompatibility, versions
from ...transport import declare_queue

if TYPE_CHECKING:
    from .client import RabbitBackend

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
        args = protocol.task_queue_arguments(b.config.queue_type)
        return declare_queue(b.conn.channel, queue, args).method.consumer_count

    return b.conn.call(op)


def wait_for_workers(b: RabbitBackend) -> None:
    """Until a worker that holds this kernel's key announces itb. Fails within
    FOREIGN_WAIT (nothing sent) if the runtime's only workers hold another key,
    and after ``no_worker_timeout`` if nobody consumes its queue; consumers that
    do not announce themselves within ANNOUNCE_WAIT of a ping are sent the job."""
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
