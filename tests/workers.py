"""Real ``sif-magic worker`` processes for tests (imported by name: two conftest.py files
exist). The fault suite's FaultWorkers builds on WorkerProcs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from queues import consumers, task_queue

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcs:
    """``sif-magic worker`` processes, stopped by pid at the end (``stop``)."""

    new_session = False  # its own process group (a test may kill a worker's group)

    def __init__(
        self,
        url: str,
        key_file: Path | None,
        log_dir: Path,
        *,
        admin_url: str | None = None,
        queue_type: str = "",
    ) -> None:
        self.url = url
        self.admin_url = admin_url or url  # plain amqp URL to count consumers with
        self.queue_type = queue_type  # --queue-type of the workers ("": their default)
        self.key_file = key_file  # None: the worker's default (SIF_MAGIC_HOME/key)
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(
        self,
        runtime: str,
        processes: int = 2,
        count: int = 1,
        *,
        wait: bool = True,
        ca_file: str | Path | None = None,
        url: str | None = None,
        heartbeat: float = 0.5,
        args: tuple[str, ...] = (),
        options: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> list[subprocess.Popen]:
        """``args`` / ``options``: more ``sif-magic worker`` flags (``--gpus 0,1``,
        ``("--lifetime", "10")``)."""
        url_file = self.log_dir / f"amqp_url-{len(self.procs)}"
        url_file.write_text(url or self.url)
        url_file.chmod(0o600)
        started = []
        for _ in range(count):
            cmd = [
                sys.executable, "-m", "sif_magic", "worker",
                "--amqp-url-file", str(url_file), "--runtime", runtime,
                "--processes", str(processes), "--heartbeat", str(heartbeat), *options,
            ]  # fmt: skip
            if self.key_file is not None:
                cmd += ["--key-file", str(self.key_file)]
            if ca_file:
                cmd += ["--ca-file", str(ca_file)]
            cmd += [*args, *extra]
            if self.queue_type:
                cmd += ["--queue-type", self.queue_type]
            with open(self.log_dir / f"worker-{runtime}-{len(self.procs)}.log", "wb") as log:
                proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ, PYTHONPATH=str(ROOT)),
                    cwd=str(ROOT),
                    start_new_session=self.new_session,
                )
            proc.log_path = log.name  # type: ignore[attr-defined]
            self.procs.append(proc)
            started.append(proc)
        if wait:
            self.wait_joined(runtime, started)
        return started

    def wait_joined(self, runtime: str, procs: list[subprocess.Popen], timeout: float = 30) -> None:
        """Until every live one of ``procs`` consumes the runtime's task queue."""
        from sif_magic._keys import default_key_file

        deadline = time.time() + timeout
        key_file = self.key_file or default_key_file()  # made by a worker, if missing
        queue_type = self.queue_type or "classic"

        def joined() -> int:
            if not key_file.exists():
                return 0
            queue = task_queue(runtime, key_file)
            return consumers(queue, self.admin_url, declare=True, queue_type=queue_type) or 0

        while joined() < sum(1 for p in procs if p.poll() is None):
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers did not join: {self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        out = []
        for p in self.procs:
            try:
                out.append(Path(p.log_path).read_text(errors="replace"))  # type: ignore[attr-defined]
            except OSError:
                pass
        return "\n".join(out)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
