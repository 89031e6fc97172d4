"""Where launched workers are remembered, secret files, and processes addressed by pid."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def home() -> Path:
    """``$SIF_MAGIC_HOME`` or ``~/.sif_magic`` (mode 700), created on first use."""
    path = Path(os.environ.get("SIF_MAGIC_HOME", Path.home() / ".sif_magic")).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_secret(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (created 600, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)
    return path


class StateFile:
    """A JSON list of records, read and rewritten under an exclusive lock."""

    def __init__(self, name: str) -> None:
        self.path = home() / name

    def read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            bad = self.path.with_name(self.path.name + ".corrupt")
            os.replace(self.path, bad)
            raise RuntimeError(
                f"{self.path} was not valid JSON; moved it to {bad}. Workers it listed keep "
                "running: find them with `ps` and stop them by pid"
            ) from None
        return data if isinstance(data, list) else []

    @contextlib.contextmanager
    def update(self) -> Iterator[list[dict[str, Any]]]:
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                records = self.read()
                yield records
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text(json.dumps(records, indent=1) + "\n")
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)


# -- processes, by pid ---------------------------------------------------------


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` ('' if unknown): tells a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, started: str = "") -> bool:
    """Is ``pid`` running, and still the process that was started (not a reused pid)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not running; reap it if it is our child
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    if Path(f"/proc/{pid}/stat").exists():
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return not started or start_time(pid) in ("", started)


def terminate(pid: int, started: str = "", timeout: float = 10.0) -> str:
    """SIGTERM ``pid`` (a worker requeues unfinished tasks), SIGKILL after ``timeout``.

    Returns what happened: ``gone``, ``terminated`` or ``killed``.
    """
    if not alive(pid, started):
        return "gone"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, started):
            return "terminated"
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not alive(pid, started):
            break
        time.sleep(0.02)
    return "killed"
