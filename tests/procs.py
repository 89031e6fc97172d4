"""Process checks for tests, and waiting for a condition (imported by name: two
conftest.py files exist)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def wait_until(cond: Any, timeout: float, what: str, poll: float = 0.2) -> Any:
    """``cond()``'s first true value, polled every ``poll`` s; AssertionError naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie its parent has not reaped yet)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cancel_while_running(ex: Any, pid_dir: Path) -> tuple[Any, float, list[int]]:
    """Map six 60 s calls (chunksize 1), cancel once two run: (job, seconds ``cancel()``
    took, pids of the processes that were running calls)."""
    d = str(pid_dir)

    def slow(x: int) -> int:
        import os
        import time

        open(os.path.join(d, f"pid{x}"), "w").write(str(os.getpid()))
        time.sleep(60)
        return x

    job = ex.map_job(slow, range(6), chunksize=1)
    deadline = time.time() + 20
    while len(list(pid_dir.glob("pid*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.time()
    job.cancel()
    took = time.time() - t0
    return job, took, [int(p.read_text()) for p in pid_dir.glob("pid*")]


def until(what: str, cond: Any, timeout: float = 60.0) -> None:
    """Wait for ``cond()`` to hold (polling), failing after ``timeout`` s with ``what``."""
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, f"waited {timeout:g} s for {what}"
        time.sleep(0.02)


def waits_at(slow: int, go: Path, fail_first: Path | None = None, wait: float = 60.0) -> Any:
    """A function whose call ``slow`` waits for ``go`` (``wait`` seconds at most); each
    returns (x, its pid). With ``fail_first`` (a folder), every call fails its first
    attempt. (The split tests: a slow call among quick ones of one chunk.)"""

    def f(x: int) -> tuple[int, int]:
        import os
        import time

        if fail_first is not None:
            mark = fail_first / str(x)
            if not mark.exists():
                mark.touch()
                raise RuntimeError(f"first attempt of {x}")
        if x == slow:
            for _ in range(int(wait * 100)):
                if go.exists():
                    break
                time.sleep(0.01)
        return x, os.getpid()

    return f
