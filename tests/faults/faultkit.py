"""Helpers of the fault suite: worker processes we can kill, /proc inspection, raw AMQP.

Importable from the tests of this folder as ``faultkit`` (the folder has no
``__init__.py``, so pytest puts it on ``sys.path``). Every process is handled by
pid only; nothing here signals a process it did not start or did not find under
one it started.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import procs
from procs import descendants  # noqa: F401 (the fault tests import it from here)
from queues import take_dead_letters  # noqa: F401 (the fault tests import it from here)
from workers import ROOT, WorkerProcs  # noqa: F401 (ROOT: the fault tests import it from here)

# -- /proc -------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every pid is gone; return those still alive after ``timeout``."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (tells a process from a later one with its pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


# -- workers -------------------------------------------------------------------------


def pika_params(url: str, ca_file: str | Path | None = None) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.socket_timeout = 5
    params.connection_attempts = 1
    if url.startswith("amqps://"):
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        params.ssl_options = pika.SSLOptions(ctx, server_hostname=params.host)
    return params


class FaultWorkers(WorkerProcs):
    """Real ``sif-magic worker`` processes, each in its own session (its own process
    group), so a test can kill one worker's group without touching pytest's; ``stop``
    also kills what they started that outlived them."""

    new_session = True

    def __init__(
        self, url: str, key_file: Path, log_dir: Path, *, admin_url: str | None = None
    ) -> None:
        super().__init__(url, key_file, log_dir, admin_url=admin_url)
        self.seen: dict[int, int] = {}  # pid -> start time of processes of ours (cleanup)

    def wait_joined(self, runtime: str, procs: list[subprocess.Popen], timeout: float = 30) -> None:
        super().wait_joined(runtime, procs, timeout)
        for p in procs:  # wait for the slots too: their pids are what tests check
            self.remember(p)

    def remember(self, proc: subprocess.Popen) -> list[int]:
        kids = descendants(proc.pid)
        self.track(kids)
        return kids

    def track(self, pids: Iterable[int], cmd_prefix: bytes = b"") -> None:
        """Remember live processes of ours (found under our workers, or started by our
        calls) so ``stop()`` can kill any that outlive the test; ``cmd_prefix`` checks
        the command line first."""
        for pid in pids:
            t = start_time(pid)
            if t is None:
                continue
            if cmd_prefix:
                try:
                    if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(cmd_prefix):
                        continue
                except OSError:
                    continue
            self.seen.setdefault(pid, t)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.remember(p)
        super().stop()
        # anything a worker started that outlived it (a test that found a leak still
        # cleans up after itself): only pids we tracked, and only if still the same process
        for pid, t in self.seen.items():
            if alive(pid) and start_time(pid) == t:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# -- watching a job ----------------------------------------------------------------------


class Watcher:
    """Polls a Job in a thread: which calls were ever seen in which state, broker_down."""

    def __init__(self, job: Any, every: float = 0.005, on_tick: Callable | None = None) -> None:
        self.job = job
        self.every = every
        self.on_tick = on_tick
        self.ever: dict[int, set[int]] = {}  # state code -> call indices
        self.broker_down_seen = False
        self.attempts: dict[int, set[int]] = {}  # attempt numbers shown while not finished
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from sif_magic import protocol

        while not self._stop.is_set():
            states = bytes(self.job.states)
            attempts = bytes(self.job.attempts)
            for i, s in enumerate(states):
                self.ever.setdefault(s, set()).add(i)
                if s in (protocol.RUNNING, protocol.RETRYING):
                    self.attempts.setdefault(i, set()).add(attempts[i])
            self.broker_down_seen |= bool(self.job.broker_down)
            if self.on_tick is not None:
                self.on_tick()
            if self.job.done():
                break
            time.sleep(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def seen(self, state: str) -> set[int]:
        from sif_magic import protocol

        return self.ever.get(protocol.STATE_CODES[state], set())


def wait_until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    """``procs.wait_until``, polling more often (fault tests watch quick transitions)."""
    return procs.wait_until(cond, timeout, what, poll=every)


# -- raw AMQP -----------------------------------------------------------------------------


def publish_raw(
    url: str,
    queue: str,
    body: bytes,
    *,
    kind: str | None,
    headers: dict | None,
    arguments: dict | None = None,
) -> None:
    """Publish one persistent message straight to ``queue`` (as a foreign producer)."""
    conn = pika.BlockingConnection(pika_params(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        if arguments is not None:
            ch.queue_declare(queue, durable=True, arguments=arguments)
        ch.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(type=kind, headers=headers, delivery_mode=2),
            mandatory=True,
        )
    finally:
        conn.close()


def runtime_queues(runtime: str) -> list[str]:
    """The queues tasks of ``runtime`` wait in (the task queue, and the retry queue of
    calls split off a redelivered chunk where the protocol has one)."""
    from queues import scope

    from sif_magic import protocol

    return [protocol.task_queue(scope(), runtime), protocol.retry_queue(scope(), runtime)]


def tasks_left(url: str, runtime: str) -> int:
    """Task messages of ``runtime`` still waiting on the broker (0 where no queue)."""
    return sum(n or 0 for n in queue_depths(url, runtime_queues(runtime)).values())


def queue_depths(url: str, queues: Iterable[str]) -> dict[str, int | None]:
    """Messages (ready) in each queue; None where the queue does not exist."""
    out: dict[str, int | None] = {}
    conn = pika.BlockingConnection(pika_params(url))
    try:
        for q in queues:
            ch = conn.channel()
            try:
                out[q] = ch.queue_declare(q, passive=True).method.message_count
                ch.close()
            except pika.exceptions.ChannelClosedByBroker:
                out[q] = None
    finally:
        conn.close()
    return out


# -- calls that count their runs -------------------------------------------------------


def slow_call(runs: str, seconds: float) -> Callable[[int], int]:
    """A call of ``seconds`` that leaves a file per finished run in ``runs``: "exactly
    once" counted by side effect (a result that comes twice is dropped by the client)."""

    def call(x: int) -> int:
        import os
        import time
        import uuid

        time.sleep(seconds)
        with open(os.path.join(runs, f"{x}-{uuid.uuid4().hex}"), "w"):
            pass  # this run finished
        return x * 10

    return call


def runs_of(runs: Path) -> Counter:
    """Finished runs per call index."""
    return Counter(int(p.name.split("-")[0]) for p in runs.iterdir())
